"""Write scenario: tfformats.writer.save_checkpoint vs tf.train.Checkpoint.write."""

import benchlib


def test_write(benchmark, bench, bulk_data, workdir):
    """save_checkpoint with its defaults (a new prefix: no fsync, like TensorFlow)."""
    bench(benchmark, lambda: benchlib.write(bulk_data, workdir)[0])


def test_write_synced(benchmark, bench, bulk_data, workdir):
    """save_checkpoint(sync=True): what fsyncing data, index and directory costs."""
    bench(benchmark, lambda: benchlib.write(bulk_data, workdir)[1])
