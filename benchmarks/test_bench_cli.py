"""CLI scenarios: wall time of `python -m tfformats ls` / `show --all` as subprocesses."""

import benchlib


def test_cli_ls(benchmark, bench, index_data, saved_model_data):
    bench(benchmark, lambda: benchlib.cli(index_data, saved_model_data)[0])


def test_cli_show_all(benchmark, bench, index_data, saved_model_data):
    bench(benchmark, lambda: benchlib.cli(index_data, saved_model_data)[1])
