#!/usr/bin/env bash
# The test command (README, .ci/run): installs tfformats with its test
# dependencies (TensorFlow included, for the cross-checks) into a virtual
# environment, builds the native extension, and runs the whole suite twice:
# once on the compiled hot paths and once on their pure-Python twin. Before
# that, tests/package_smoke.sh checks that the sdist and the wheel install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TFFORMATS_TEST_VENV:-.venv-test}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
# The editable install compiles the extension into the source tree (and again
# on every run, so edits to native/ are picked up).
"$PY" -m pip install -q -e ".[test]"

# Once, not per implementation (and first, so that pytest's summary closes
# the output): the sdist and the wheel install into fresh venvs and work.
echo "== packaging =="
bash tests/package_smoke.sh "$PY"

export TF_CPP_MIN_LOG_LEVEL=3
# The layers of docs/architecture.md ([tool.importlinter] in pyproject.toml)
# and the annotations of the public API ([tool.mypy]); either failing fails CI.
echo "== import layers and types =="
"$VENV/bin/lint-imports"
"$PY" -m mypy tfformats
echo "== native implementation =="
"$PY" -c 'import tfformats, sys; sys.exit(tfformats.implementation() != "native")' \
  || { echo "the native extension did not build" >&2; exit 1; }
# -n auto: one pytest worker per core (pytest-xdist); the tests share no state.
"$PY" -m pytest -p no:cacheprovider -n auto tests "$@"
echo "== pure-Python implementation =="
TFFORMATS_PUREPYTHON=1 "$PY" -m pytest -p no:cacheprovider -n auto tests "$@"
