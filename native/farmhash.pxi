# FarmHash Fingerprint64 (the "na" Hash64 variant) and TensorFlow's
# FingerprintCat64, in C arithmetic. Included by native/_native.pyx; the
# pure-Python twin is tfformats/_farmhash.py. Written from the algorithm of
# google/farmhash src/farmhash.cc (docs/formats.md, "Fingerprint"). uint64_t
# wraps modulo 2**64, which is exactly the arithmetic the algorithm wants.

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

cdef extern from *:
    """
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define _FH_BIG_ENDIAN 1
    #else
    #define _FH_BIG_ENDIAN 0
    #endif
    """
    const int _FH_BIG_ENDIAN

cdef enum:
    _FH_SEED = 81

cdef uint64_t _FH_K0 = 0xc3a5c85c97cb3127ULL
cdef uint64_t _FH_K1 = 0xb492b66fbe98f273ULL
cdef uint64_t _FH_K2 = 0x9ae16a3b2f90404fULL
cdef uint64_t _FH_CAT_MUL = 0xc6a4a7935bd1e995ULL


cdef inline uint64_t _fh_fetch64(const unsigned char* p) noexcept nogil:
    # Unaligned little-endian load; memcpy compiles to one instruction.
    cdef uint64_t v
    memcpy(&v, p, 8)
    if _FH_BIG_ENDIAN:
        v = ((v >> 56) | ((v >> 40) & 0xff00ULL) | ((v >> 24) & 0xff0000ULL)
             | ((v >> 8) & 0xff000000ULL) | ((v << 8) & 0xff00000000ULL)
             | ((v << 24) & 0xff0000000000ULL) | ((v << 40) & 0xff000000000000ULL)
             | (v << 56))
    return v


cdef inline uint64_t _fh_fetch32(const unsigned char* p) noexcept nogil:
    return (<uint64_t>p[0] | (<uint64_t>p[1] << 8) | (<uint64_t>p[2] << 16)
            | (<uint64_t>p[3] << 24))


cdef inline uint64_t _fh_rot(uint64_t v, int s) noexcept nogil:
    return v if s == 0 else (v >> s) | (v << (64 - s))


cdef inline uint64_t _fh_shift_mix(uint64_t v) noexcept nogil:
    return v ^ (v >> 47)


cdef inline uint64_t _fh_len16(uint64_t u, uint64_t v, uint64_t mul) noexcept nogil:
    cdef uint64_t a = (u ^ v) * mul
    a ^= a >> 47
    cdef uint64_t b = (v ^ a) * mul
    b ^= b >> 47
    return b * mul


cdef inline uint64_t _fh_len0to16(const unsigned char* s, size_t n) noexcept nogil:
    cdef uint64_t mul, a, b, c, d
    if n >= 8:
        mul = _FH_K2 + 2 * n
        a = _fh_fetch64(s) + _FH_K2
        b = _fh_fetch64(s + n - 8)
        c = _fh_rot(b, 37) * mul + a
        d = (_fh_rot(a, 25) + b) * mul
        return _fh_len16(c, d, mul)
    if n >= 4:
        mul = _FH_K2 + 2 * n
        a = _fh_fetch32(s)
        return _fh_len16(n + (a << 3), _fh_fetch32(s + n - 4), mul)
    if n > 0:
        a = s[0]
        b = s[n >> 1]
        c = s[n - 1]
        return _fh_shift_mix((a + (b << 8)) * _FH_K2 ^ (n + (c << 2)) * _FH_K0) * _FH_K2
    return _FH_K2


cdef inline uint64_t _fh_len17to32(const unsigned char* s, size_t n) noexcept nogil:
    cdef uint64_t mul = _FH_K2 + 2 * n
    cdef uint64_t a = _fh_fetch64(s) * _FH_K1
    cdef uint64_t b = _fh_fetch64(s + 8)
    cdef uint64_t c = _fh_fetch64(s + n - 8) * mul
    cdef uint64_t d = _fh_fetch64(s + n - 16) * _FH_K2
    return _fh_len16(_fh_rot(a + b, 43) + _fh_rot(c, 30) + d,
                     a + _fh_rot(b + _FH_K2, 18) + c, mul)


cdef inline uint64_t _fh_len33to64(const unsigned char* s, size_t n) noexcept nogil:
    cdef uint64_t mul = _FH_K2 + 2 * n
    cdef uint64_t a = _fh_fetch64(s) * _FH_K2
    cdef uint64_t b = _fh_fetch64(s + 8)
    cdef uint64_t c = _fh_fetch64(s + n - 8) * mul
    cdef uint64_t d = _fh_fetch64(s + n - 16) * _FH_K2
    cdef uint64_t y = _fh_rot(a + b, 43) + _fh_rot(c, 30) + d
    cdef uint64_t z = _fh_len16(y, a + _fh_rot(b + _FH_K2, 18) + c, mul)
    cdef uint64_t e = _fh_fetch64(s + 16) * mul
    cdef uint64_t f = _fh_fetch64(s + 24)
    cdef uint64_t g = (y + _fh_fetch64(s + n - 32)) * mul
    cdef uint64_t h = (z + _fh_fetch64(s + n - 24)) * mul
    return _fh_len16(_fh_rot(e + f, 43) + _fh_rot(g, 30) + h,
                     e + _fh_rot(f + a, 18) + g, mul)


cdef inline void _fh_weak32(const unsigned char* p, uint64_t a, uint64_t b,
                            uint64_t* first, uint64_t* second) noexcept nogil:
    cdef uint64_t w = _fh_fetch64(p)
    cdef uint64_t x = _fh_fetch64(p + 8)
    cdef uint64_t y = _fh_fetch64(p + 16)
    cdef uint64_t z = _fh_fetch64(p + 24)
    a += w
    b = _fh_rot(b + a + z, 21)
    cdef uint64_t c = a
    a += x
    a += y
    b += _fh_rot(a, 44)
    first[0] = a + z
    second[0] = b + c


cdef uint64_t _fh_long(const unsigned char* s, size_t n) noexcept nogil:
    cdef uint64_t x = _FH_SEED
    cdef uint64_t y = <uint64_t>_FH_SEED * _FH_K1 + 113
    cdef uint64_t z = _fh_shift_mix(y * _FH_K2 + 113) * _FH_K2
    cdef uint64_t v0 = 0, v1 = 0, w0 = 0, w1 = 0, t, mul
    x = x * _FH_K2 + _fh_fetch64(s)
    cdef const unsigned char* end = s + ((n - 1) // 64) * 64
    cdef const unsigned char* last64 = s + n - 64
    while True:
        x = _fh_rot(x + y + v0 + _fh_fetch64(s + 8), 37) * _FH_K1
        y = _fh_rot(y + v1 + _fh_fetch64(s + 48), 42) * _FH_K1
        x ^= w1
        y += v0 + _fh_fetch64(s + 40)
        z = _fh_rot(z + w0, 33) * _FH_K1
        _fh_weak32(s, v1 * _FH_K1, x + w0, &v0, &v1)
        _fh_weak32(s + 32, z + w1, y + _fh_fetch64(s + 16), &w0, &w1)
        t = z
        z = x
        x = t
        s += 64
        if s == end:
            break
    mul = _FH_K1 + ((z & 0xff) << 1)
    s = last64
    w0 += (n - 1) & 63
    v0 += w0
    w0 += v0
    x = _fh_rot(x + y + v0 + _fh_fetch64(s + 8), 37) * mul
    y = _fh_rot(y + v1 + _fh_fetch64(s + 48), 42) * mul
    x ^= w1 * 9
    y += v0 * 9 + _fh_fetch64(s + 40)
    z = _fh_rot(z + w0, 33) * mul
    _fh_weak32(s, v1 * mul, x + w0, &v0, &v1)
    _fh_weak32(s + 32, z + w1, y + _fh_fetch64(s + 16), &w0, &w1)
    t = z
    z = x
    x = t
    return _fh_len16(_fh_len16(v0, w0, mul) + _fh_shift_mix(y) * _FH_K0 + z,
                     _fh_len16(v1, w1, mul) + x, mul)


cdef uint64_t _fh_fingerprint64(const unsigned char* s, size_t n) noexcept nogil:
    if n <= 16:
        return _fh_len0to16(s, n)
    if n <= 32:
        return _fh_len17to32(s, n)
    if n <= 64:
        return _fh_len33to64(s, n)
    return _fh_long(s, n)


# Below this many bytes, dropping and re-taking the GIL costs more than hashing.
cdef enum:
    _FH_NOGIL_MIN = 4096


def fingerprint64(data):
    """FarmHash Fingerprint64 of a bytes-like object, as an int in [0, 2**64)."""
    cdef const unsigned char[::1] view
    cdef const unsigned char* p
    cdef size_t n
    cdef uint64_t h
    if isinstance(data, bytes):
        # bytes is the common case; skip the buffer-protocol round trip.
        p = <const unsigned char*><const char*>data
        n = len(<bytes>data)
        if n < _FH_NOGIL_MIN:
            return _fh_fingerprint64(p, n)
        with nogil:
            h = _fh_fingerprint64(p, n)
        return h
    view = memoryview(data).cast("B")
    n = view.shape[0]
    if n == 0:
        return _FH_K2
    p = &view[0]
    if n < _FH_NOGIL_MIN:
        return _fh_fingerprint64(p, n)
    with nogil:
        h = _fh_fingerprint64(p, n)
    return h


def fingerprint_cat64(a, b):
    """TensorFlow's FingerprintCat64: combine two 64-bit fingerprints (order matters)."""
    cdef uint64_t x = <uint64_t>(a & 0xFFFFFFFFFFFFFFFF)
    cdef uint64_t y = <uint64_t>(b & 0xFFFFFFFFFFFFFFFF)
    cdef uint64_t r = x ^ _FH_CAT_MUL
    r ^= _fh_shift_mix(y * _FH_CAT_MUL) * _FH_CAT_MUL
    r *= _FH_CAT_MUL
    r = _fh_shift_mix(r) * _FH_CAT_MUL
    return _fh_shift_mix(r)
