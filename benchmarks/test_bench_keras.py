"""Keras weight files: every tensor of a ~450 MiB .weights.h5, vs h5py and Keras."""

import os

import keras_bench


def test_keras_read(benchmark, bench, bench_root):
    data = keras_bench.generate_keras(os.path.join(bench_root, "keras"))
    bench(benchmark, lambda: keras_bench.keras_read(data))


def test_keras_read_copies(benchmark, bench, bench_root):
    data = keras_bench.generate_keras(os.path.join(bench_root, "keras"))
    bench(benchmark, lambda: keras_bench.keras_read(data, copy=True))
