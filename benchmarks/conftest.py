"""Fixtures of the tfformats benchmarks: data written by real TensorFlow at session start.

    python -m pytest benchmarks                          # full size (~450 MiB, 100k tensors)
    TFFORMATS_BENCH_SCALE=0.1 python -m pytest benchmarks   # quick
    TFFORMATS_BENCH_DATA=/tmp/tffb python -m pytest benchmarks   # keep/reuse the data

Everything is skipped, with the reason, when TensorFlow or pytest-benchmark is
missing. TFFORMATS_PUREPYTHON=1 measures the pure-Python implementation.
"""

import importlib.util
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def _missing():
    if importlib.util.find_spec("tensorflow") is None:
        return ("TensorFlow is not installed; the benchmarks need it to write their data and as "
                "the reference side (pip install tensorflow-cpu)")
    if importlib.util.find_spec("pytest_benchmark") is None:
        return "pytest-benchmark is not installed (pip install pytest-benchmark)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _missing()
    if reason:
        here = os.path.dirname(os.path.abspath(__file__))
        for item in items:
            if str(item.fspath).startswith(here):
                item.add_marker(pytest.mark.skip(reason=reason))


if _missing() is not None and importlib.util.find_spec("pytest_benchmark") is None:
    @pytest.fixture
    def benchmark():  # only so that collection works; every test is skipped anyway
        pytest.skip(_missing())


def pytest_report_header(config):
    if _missing():
        return None
    import tfformats  # noqa: PLC0415
    return (f"tfformats benchmarks: implementation={tfformats.implementation()}, "
            f"scale={benchlib.scale()}")


@pytest.fixture(scope="session")
def bench_root(tmp_path_factory):
    root = os.environ.get("TFFORMATS_BENCH_DATA")
    if root:
        os.makedirs(root, exist_ok=True)
        return root
    return str(tmp_path_factory.mktemp("tfformats-bench-data"))


def _data(root, kind):
    # Generated in a child process so TensorFlow's generation memory never stays here.
    return benchlib.generate_in_subprocess(root, [kind])[kind]


@pytest.fixture(scope="session")
def bulk_data(bench_root):
    return _data(bench_root, "bulk")


@pytest.fixture(scope="session")
def index_data(bench_root):
    return _data(bench_root, "index")


@pytest.fixture(scope="session")
def saved_model_data(bench_root):
    return _data(bench_root, "saved_model")


@pytest.fixture
def workdir(tmp_path):
    return str(tmp_path)


@pytest.fixture
def bench():
    """bench(benchmark, scenario_or_NotReady_callable) -> measured, or skipped with the reason."""
    def run(benchmark, build):
        try:
            scenario = build()
        except benchlib.NotReady as exc:
            pytest.skip(f"not measurable yet: {exc}")
        benchlib.run_pytest_benchmark(benchmark, scenario)
    return run


def pytest_terminal_summary(terminalreporter):
    if not benchlib.PYTEST_RESULTS:
        return
    import tfformats  # noqa: PLC0415
    terminalreporter.section("tfformats vs references (alternating rounds, medians)")
    terminalreporter.write_line(benchlib.markdown_table({tfformats.implementation():
                                                         benchlib.PYTEST_RESULTS}))
