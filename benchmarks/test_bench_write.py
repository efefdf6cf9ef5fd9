"""Write scenario: tfformats.writer.save_checkpoint vs tf.train.Checkpoint.write."""

import benchlib


def test_write(benchmark, bench, bulk_data, workdir):
    bench(benchmark, lambda: benchlib.write(bulk_data, workdir))
