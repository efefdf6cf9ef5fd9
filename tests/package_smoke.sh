#!/usr/bin/env bash
# Packaging smoke test (run once by tests/run.sh): builds the sdist and the
# wheel, installs each into a fresh virtual environment, (a) the wheel,
# (b) the sdist with the C compiler, (c) the sdist with CC=/bin/false, and
# from outside the source tree runs `tfformats ls` on a fixture shipped in
# the sdist, checking which implementation each install uses and that (c)
# says loudly that it fell back to pure Python.
#
# Usage: tests/package_smoke.sh [PYTHON]   (PYTHON needs pip >= 22.3 and build)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${1:-python3}
START=$SECONDS
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tfformats-smoke.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
unset PYTHONPATH TFFORMATS_PUREPYTHON   # the installed package, nothing else
WARNING="native extension was not built"

fail() { echo "package_smoke: FAILED: $*" >&2; exit 1; }
step() { echo "package_smoke: $* ($((SECONDS - START)) s)"; }

# Builds run isolated, with the build-system requirements of pyproject.toml.
step "building the sdist and the wheel"
"$PY" -m build --sdist --wheel --outdir "$TMP/dist" "$ROOT" > "$TMP/build.log" 2>&1 \
  || { tail -30 "$TMP/build.log" >&2; fail "python -m build"; }
SDIST=$(ls "$TMP"/dist/*.tar.gz)
WHEEL=$(ls "$TMP"/dist/*.whl)
[ "$(echo "$SDIST" | wc -l)" = 1 ] && [ "$(echo "$WHEEL" | wc -l)" = 1 ] || fail "expected one sdist and one wheel"

# The fixture comes out of the sdist: it must ship them.
tar -xzf "$SDIST" -C "$TMP"
SRC=$(ls -d "$TMP"/tfformats-*/)
FIXTURE="$SRC/tests/fixtures/dtypes/ckpt"
for f in LICENSE README.md native/_native.pyx native/farmhash.pxi native/crc32c.h \
         proto/tensor_bundle.proto docs/dlpack.md tests/run.sh tests/fixtures/dtypes/ckpt.index; do
  [ -e "$SRC/$f" ] || fail "the sdist lacks $f"
done
SO=$("$PY" -c '
import sys, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
names = [n for n in wheel.namelist() if n.startswith("tfformats/_native") and n.endswith(".so")]
print(wheel.extract(names[0], sys.argv[2]) if names else "")' "$WHEEL" "$TMP/so")
[ -n "$SO" ] || fail "the wheel has no native extension"
if readelf -S "$SO" | grep -q '\.debug_'; then
  fail "the wheel's extension carries debug sections"
fi
step "the wheel's extension: $(wc -c < "$SO") bytes, no debug sections"

# install KIND IMPLEMENTATION ARTIFACT [ENV...]: a fresh venv (pip run from
# outside it: faster than bootstrapping pip into each; no .pyc compiling), dependencies from
# pip's cache; no pip cache for the sdist builds, where a wheel cached by one
# install would be reused by the other.
install() {
  local kind=$1 want=$2 artifact=$3; shift 3
  local venv="$TMP/venv-$kind"
  step "($kind) installing $(basename "$artifact") into a fresh venv"
  local began=$SECONDS
  "$PY" -m venv --without-pip "$venv"
  local cache=()
  [[ $artifact == *.tar.gz ]] && cache=(--no-cache-dir)
  env "$@" "$PY" -m pip --python "$venv/bin/python" install -v --no-compile "${cache[@]}" "$artifact" \
    > "$TMP/install-$kind.log" 2>&1 || { tail -30 "$TMP/install-$kind.log" >&2; fail "($kind) pip install"; }
  mkdir -p "$TMP/elsewhere"
  (cd "$TMP/elsewhere" && "$venv/bin/tfformats" ls "$FIXTURE") > "$TMP/ls-$kind.out" 2> "$TMP/ls-$kind.err" \
    || { cat "$TMP/ls-$kind.err" >&2; fail "($kind) tfformats ls"; }
  grep -q "float32_3d" "$TMP/ls-$kind.out" || fail "($kind) tfformats ls did not list the fixture"
  local got
  got=$(cd "$TMP/elsewhere" && "$venv/bin/python" -W ignore -c \
    'import tfformats, sys; assert tfformats.__file__.startswith(sys.prefix), tfformats.__file__; print(tfformats.implementation())')
  [ "$got" = "$want" ] || fail "($kind) implementation is $got, expected $want"
  if [ "$want" = python ]; then
    grep -q "$WARNING" "$TMP/install-$kind.log" || fail "($kind) the build printed no warning"
    grep -q "$WARNING" "$TMP/ls-$kind.err" || fail "($kind) tfformats ls printed no warning"
    echo "package_smoke: ($kind) warned: $(grep -m1 "$WARNING" "$TMP/ls-$kind.err")"
  elif grep -q "$WARNING" "$TMP/ls-$kind.err"; then
    fail "($kind) a native install warned that it is not native"
  fi
  step "($kind) ok: tfformats ls works, implementation $got, install took $((SECONDS - began)) s"
}

# In parallel: the sdist build with a compiler leaves a core idle.
pids=()
install wheel native "$WHEEL" & pids+=($!)
install sdist native "$SDIST" & pids+=($!)
install sdist-no-compiler python "$SDIST" CC=/bin/false & pids+=($!)
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" = 0 ] || fail "see above"
step "all three installs work"
