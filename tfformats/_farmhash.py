"""FarmHash `Fingerprint64` and TensorFlow's `FingerprintCat64` in pure Python.

`Fingerprint64` is FarmHash's stable fingerprint (the "na" variant of
Hash64), which TensorFlow uses for SavedModel fingerprints. It is *not* the
same function as FarmHash's `Hash64` for inputs of 33 bytes and more.
Written from the algorithm description of google/farmhash `src/farmhash.cc`
(docs/formats.md, "Fingerprint"); the native
twin lives in `native/farmhash.pxi`. All arithmetic is modulo 2**64.
"""

import struct

try:
    # FarmHash in C from the `cityhash` package (the `farmhash` extra), the
    # same function as fingerprint64_python below, hundreds of times faster on
    # long inputs. pyfarmhash installs a module of the same name that lacks
    # Fingerprint64; it is not used.
    from farmhash import Fingerprint64 as _fingerprint64_c
except ImportError:
    _fingerprint64_c = None


_M = 0xFFFFFFFFFFFFFFFF
K0 = 0xC3A5C85C97CB3127
K1 = 0xB492B66FBE98F273
K2 = 0x9AE16A3B2F90404F
_CAT_MUL = 0xC6A4A7935BD1E995
_SEED = 81

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_BLOCK = struct.Struct("<8Q")  # one 64-byte stride of the long-input loop


def _rot(v, s):
    return ((v >> s) | (v << (64 - s))) & _M


def _len16(u, v, mul):
    a = ((u ^ v) * mul) & _M
    a ^= a >> 47
    b = ((v ^ a) * mul) & _M
    b ^= b >> 47
    return (b * mul) & _M


def _len0to16(s, n):
    if n >= 8:
        mul = K2 + 2 * n
        a = (_U64.unpack_from(s, 0)[0] + K2) & _M
        b = _U64.unpack_from(s, n - 8)[0]
        c = (_rot(b, 37) * mul + a) & _M
        d = ((_rot(a, 25) + b) * mul) & _M
        return _len16(c, d, mul)
    if n >= 4:
        mul = K2 + 2 * n
        a = _U32.unpack_from(s, 0)[0]
        return _len16(n + (a << 3), _U32.unpack_from(s, n - 4)[0], mul)
    if n > 0:
        y = s[0] + (s[n >> 1] << 8)
        z = n + (s[n - 1] << 2)
        v = ((y * K2) ^ (z * K0)) & _M
        return ((v ^ (v >> 47)) * K2) & _M
    return K2


def _len17to32(s, n):
    mul = K2 + 2 * n
    a = (_U64.unpack_from(s, 0)[0] * K1) & _M
    b = _U64.unpack_from(s, 8)[0]
    c = (_U64.unpack_from(s, n - 8)[0] * mul) & _M
    d = (_U64.unpack_from(s, n - 16)[0] * K2) & _M
    return _len16((_rot((a + b) & _M, 43) + _rot(c, 30) + d) & _M,
                  (a + _rot((b + K2) & _M, 18) + c) & _M, mul)


def _len33to64(s, n):
    mul = K2 + 2 * n
    a = (_U64.unpack_from(s, 0)[0] * K2) & _M
    b = _U64.unpack_from(s, 8)[0]
    c = (_U64.unpack_from(s, n - 8)[0] * mul) & _M
    d = (_U64.unpack_from(s, n - 16)[0] * K2) & _M
    y = (_rot((a + b) & _M, 43) + _rot(c, 30) + d) & _M
    z = _len16(y, (a + _rot((b + K2) & _M, 18) + c) & _M, mul)
    e = (_U64.unpack_from(s, 16)[0] * mul) & _M
    f = _U64.unpack_from(s, 24)[0]
    g = ((y + _U64.unpack_from(s, n - 32)[0]) * mul) & _M
    h = ((z + _U64.unpack_from(s, n - 24)[0]) * mul) & _M
    return _len16((_rot((e + f) & _M, 43) + _rot(g, 30) + h) & _M,
                  (e + _rot((f + a) & _M, 18) + g) & _M, mul)


def _long(s, n):
    # The rotations and the 32-byte "weak hash" helper are written inline:
    # this loop runs once per 64 bytes and function calls dominate otherwise.
    M = _M
    unpack = _BLOCK.unpack_from
    x = _SEED
    y = (_SEED * K1 + 113) & M
    z = ((y * K2 + 113) & M)
    z = ((z ^ (z >> 47)) * K2) & M
    v0 = v1 = w0 = w1 = 0
    x = (x * K2 + _U64.unpack_from(s, 0)[0]) & M
    end = ((n - 1) // 64) * 64
    # Bits above 64 move only upwards under +, * and ^, so a value needs
    # reducing mod 2**64 only before a right shift (of a rotation) or before
    # it is carried on (v1, w1 feed products and sums that would grow without
    # bound); v0 and w0 are reduced once after the loop.
    for off in range(0, end, 64):
        p0, p1, p2, p3, p4, p5, p6, p7 = unpack(s, off)
        t = (x + y + v0 + p1) & M
        x = ((t >> 37) | (t << 27)) * K1 & M
        t = (y + v1 + p6) & M
        y = (((t >> 42) | (t << 22)) * K1 + v0 + p5) & M
        x ^= w1
        t = (z + w0) & M
        z = ((t >> 33) | (t << 31)) * K1 & M
        # v = WeakHashLen32WithSeeds(p0..p3, v1 * K1, x + w0)
        c = v1 * K1 + p0
        b = (x + w0 + c + p3) & M
        a = (c + p1 + p2) & M
        b = ((b >> 21) | (b << 43)) + ((a >> 44) | (a << 20))
        v0 = a + p3
        v1 = (b + c) & M
        # w = WeakHashLen32WithSeeds(p4..p7, z + w1, y + p2)
        c = z + w1 + p4
        b = (y + p2 + c + p7) & M
        a = (c + p5 + p6) & M
        b = ((b >> 21) | (b << 43)) + ((a >> 44) | (a << 20))
        w0 = a + p7
        w1 = (b + c) & M
        x, z = z, x
    v0 &= M
    w0 &= M
    mul = K1 + ((z & 0xFF) << 1)
    p0, p1, p2, p3, p4, p5, p6, p7 = unpack(s, n - 64)
    w0 = (w0 + ((n - 1) & 63)) & M
    v0 = (v0 + w0) & M
    w0 = (w0 + v0) & M
    x = (_rot((x + y + v0 + p1) & M, 37) * mul) & M
    y = (_rot((y + v1 + p6) & M, 42) * mul) & M
    x ^= (w1 * 9) & M
    y = (y + v0 * 9 + p5) & M
    z = (_rot((z + w0) & M, 33) * mul) & M
    v0, v1 = _weak32(p0, p1, p2, p3, (v1 * mul) & M, (x + w0) & M)
    w0, w1 = _weak32(p4, p5, p6, p7, (z + w1) & M, (y + p2) & M)
    x, z = z, x
    return _len16((_len16(v0, w0, mul) + (y ^ (y >> 47)) * K0 + z) & M,
                  (_len16(v1, w1, mul) + x) & M, mul)


def _weak32(w, x, y, z, a, b):
    a = (a + w) & _M
    b = _rot((b + a + z) & _M, 21)
    c = a
    a = (a + x + y) & _M
    b = (b + _rot(a, 44)) & _M
    return (a + z) & _M, (b + c) & _M


def fingerprint64(data):
    """FarmHash Fingerprint64 of a bytes-like object, as an int in [0, 2**64)."""
    if not isinstance(data, (bytes, bytearray)):
        data = memoryview(data).cast("B")
    if _fingerprint64_c is not None:
        return _fingerprint64_c(data)
    return fingerprint64_python(data)


def fingerprint64_python(data):
    """fingerprint64 in Python alone, for `data` of type bytes, bytearray or
    a one-byte-format memoryview."""
    n = len(data)
    if n <= 16:
        return _len0to16(data, n)
    if n <= 32:
        return _len17to32(data, n)
    if n <= 64:
        return _len33to64(data, n)
    return _long(data, n)


def fingerprint_cat64(a, b):
    """TensorFlow's FingerprintCat64: combine two 64-bit fingerprints (order matters)."""
    a &= _M
    b &= _M
    t = (b * _CAT_MUL) & _M
    r = a ^ _CAT_MUL
    r ^= ((t ^ (t >> 47)) * _CAT_MUL) & _M
    r = (r * _CAT_MUL) & _M
    r = ((r ^ (r >> 47)) * _CAT_MUL) & _M
    return r ^ (r >> 47)
