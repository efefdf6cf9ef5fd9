"""Write scenario: tfformats.writer.save_checkpoint vs tf.train.Checkpoint.write."""

import benchlib


def test_write(benchmark, bench, bulk_data, workdir):
    """save_checkpoint with its defaults (fsyncs the files)."""
    bench(benchmark, lambda: benchlib.write(bulk_data, workdir)[0])


def test_write_nosync(benchmark, bench, bulk_data, workdir):
    """save_checkpoint(sync=False): like TF, which does not fsync."""
    bench(benchmark, lambda: benchlib.write(bulk_data, workdir)[1])
