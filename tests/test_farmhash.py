"""FarmHash Fingerprint64 / FingerprintCat64: frozen TF vectors, reference values, parity."""

import array
import json
import pathlib
import random

import pytest

from tfformats import _farmhash
from tfformats._impl import hot

try:
    from tfformats import _native
    native_built = True
except ImportError:
    _native = None
    native_built = False

VECTORS = json.loads((pathlib.Path(__file__).parent / "data" / "farmhash_vectors.json").read_text())


@pytest.fixture(params=["pure", "pure-python-loop", "native"])
def impl(request, monkeypatch):
    """The pure twin with cityhash's FarmHash (the `farmhash` extra, which the
    test extra installs), the pure twin without it, and the native module."""
    if request.param == "native":
        if not native_built:
            pytest.skip("tfformats._native is not built")
        return _native
    if request.param == "pure-python-loop":
        monkeypatch.setattr(_farmhash, "_fingerprint64_c", None)
    return _farmhash


def vector_input(n):
    """Same inputs as tools/gen_farmhash_vectors.py."""
    state = (n * 2654435761 + 1) & 0xFFFFFFFF
    out = bytearray(n)
    for i in range(n):
        state = (state * 1103515245 + 12345) & 0xFFFFFFFF
        out[i] = state >> 24
    return bytes(out)


def test_tensorflow_frozen_vectors(impl):
    # tsl/platform/fingerprint_test.cc
    hello, world = impl.fingerprint64(b"Hello"), impl.fingerprint64(b"World")
    assert hello == 15404698994557526151
    assert world == 18308117990299812472
    assert impl.fingerprint_cat64(hello, world) == 16877292868973613377
    assert impl.fingerprint_cat64(world, hello) == 7158413233176775252
    assert impl.fingerprint64(b"") == 0x9AE16A3B2F90404F == 11160318154034397263


def test_reference_values(impl):
    for n, want in VECTORS["fingerprint64"].items():
        assert impl.fingerprint64(vector_input(int(n))) == int(want), f"length {n}"


def test_any_bytes_like(impl):
    data = vector_input(100)
    want = impl.fingerprint64(data)
    assert impl.fingerprint64(bytearray(data)) == want
    assert impl.fingerprint64(memoryview(data)) == want
    assert impl.fingerprint64(memoryview(b"xx" + data + b"yy")[2:-2]) == want
    ints = array.array("I", range(10))
    assert impl.fingerprint64(ints) == impl.fingerprint64(ints.tobytes())
    assert impl.fingerprint64(bytearray()) == impl.fingerprint64(b"")
    with pytest.raises(TypeError):
        impl.fingerprint64("not bytes")


def test_cat64_takes_any_64_bit_value(impl):
    # The extremes, where a signed or unmasked intermediate would go wrong.
    assert impl.fingerprint_cat64(0, 0) == 6351753276682545529
    assert impl.fingerprint_cat64(2**64 - 1, 2**64 - 1) == 1387612160115015436


def test_cityhash_farmhash_is_used_when_installed():
    import farmhash   # the test extra installs cityhash, which provides it
    assert _farmhash._fingerprint64_c is farmhash.Fingerprint64


def test_active_implementation_is_one_of_them():
    assert hot.fingerprint64(b"Hello") == 15404698994557526151


@pytest.mark.skipif(not native_built, reason="tfformats._native is not built")
def test_native_matches_pure_for_every_length():
    rng = random.Random(1234)
    lengths = list(range(0, 301)) + [511, 512, 513, 4095, 4096, 4097, 65536, 1_000_003]
    for n in lengths:
        for _ in range(2 if n < 1000 else 1):
            data = rng.randbytes(n)
            want = _native.fingerprint64(data)
            assert _farmhash.fingerprint64_python(data) == want, f"length {n}"
            assert _farmhash.fingerprint64(data) == want, f"length {n}"
    for _ in range(500):
        a, b = rng.getrandbits(64), rng.getrandbits(64)
        assert _native.fingerprint_cat64(a, b) == _farmhash.fingerprint_cat64(a, b)
