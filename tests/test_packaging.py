"""The wheel's type marker and the checks tests/run.sh adds to the suite:
the import layers (`lint-imports`) and the types (`mypy`)."""

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_py_typed_ships_in_the_wheel():
    # PEP 561: without the marker, type checkers ignore the annotations.
    assert (ROOT / "tfformats" / "py.typed").is_file()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["tfformats"]


def test_ci_checks_layers_and_types():
    project = _pyproject()
    test_extra = " ".join(project["project"]["optional-dependencies"]["test"])
    assert "import-linter" in test_extra and "mypy" in test_extra
    contract, = project["tool"]["importlinter"]["contracts"]
    assert contract["type"] == "layers" and "cli | cuda" in contract["layers"]
    script = (ROOT / "tests" / "run.sh").read_text()
    checks = script.index("lint-imports"), script.index("-m mypy tfformats")
    # Before the suite runs, so that a broken layer or type fails CI at once.
    assert max(checks) < script.index("-m pytest")
