"""Read scenarios: bulk read, index listing, one lookup (vs TensorFlow, safetensors)."""

import pytest

import benchlib


def test_bulk_read(benchmark, bench, bulk_data):
    bench(benchmark, lambda: benchlib.bulk_read(bulk_data))


def test_bulk_read_vs_floor(benchmark, bench, bulk_data):
    bench(benchmark, lambda: benchlib.bulk_floor(bulk_data))


def test_writable_load(benchmark, bench, bulk_data):
    bench(benchmark, lambda: benchlib.writable_load(bulk_data))


def test_index_listing(benchmark, bench, index_data):
    bench(benchmark, lambda: benchlib.index_listing(index_data))


def test_one_lookup(benchmark, bench, index_data):
    bench(benchmark, lambda: benchlib.one_lookup(index_data))


@pytest.mark.parametrize("row", range(6))
def test_per_key(benchmark, bench, index_data, row):
    bench(benchmark, lambda: benchlib.per_key(index_data)[row])


def test_list_variables(benchmark, bench, index_data):
    bench(benchmark, lambda: benchlib.list_variables(index_data))


def test_two_threads(benchmark, bench, bulk_data):
    bench(benchmark, lambda: benchlib.two_threads(bulk_data))
