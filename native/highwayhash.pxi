# HighwayHash-64 in C arithmetic, included by native/_native.pyx; the
# pure-Python twin is tfformats/_highwayhash.py (which explains the state and
# its use: Riegeli/records hashes, docs/formats.md "Chunked SavedModels").
# uint64_t wraps modulo 2**64, the arithmetic the algorithm is defined in.

from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memset

cdef uint64_t _HH_INIT0[4]
cdef uint64_t _HH_INIT1[4]
_HH_INIT0[:] = [0xdbe6d5d5fe4cce2fULL, 0xa4093822299f31d0ULL, 0x13198a2e03707344ULL,
                0x243f6a8885a308d3ULL]
_HH_INIT1[:] = [0x3bd39e10cb0ef593ULL, 0xc0acf169b5f18a8cULL, 0xbe5466cf34e90c6cULL,
                0x452821e638d01377ULL]

RIEGELI_KEY = (0x2F696C6567656952, 0x0A7364726F636572, 0x2F696C6567656952, 0x0A7364726F636572)

cdef enum:
    _HH_NOGIL_MIN = 65536

ctypedef struct _HHState:
    uint64_t v0[4]
    uint64_t v1[4]
    uint64_t mul0[4]
    uint64_t mul1[4]


cdef inline void _hh_zipper(uint64_t v1, uint64_t v0, uint64_t* add1, uint64_t* add0) noexcept nogil:
    add0[0] += ((((v0 & 0xff000000ULL) | (v1 & 0xff00000000ULL)) >> 24)
                | (((v0 & 0xff0000000000ULL) | (v1 & 0xff000000000000ULL)) >> 16)
                | (v0 & 0xff0000ULL) | ((v0 & 0xff00ULL) << 32)
                | ((v1 & 0xff00000000000000ULL) >> 8) | (v0 << 56))
    add1[0] += ((((v1 & 0xff000000ULL) | (v0 & 0xff00000000ULL)) >> 24)
                | (v1 & 0xff0000ULL) | ((v1 & 0xff0000000000ULL) >> 16)
                | ((v1 & 0xff00ULL) << 24) | ((v0 & 0xff000000000000ULL) >> 8)
                | ((v1 & 0xffULL) << 48) | (v0 & 0xff00000000000000ULL))


cdef inline void _hh_update(_HHState* s, const uint64_t* lanes) noexcept nogil:
    cdef int i
    for i in range(4):
        s.v1[i] += s.mul0[i] + lanes[i]
        s.mul0[i] ^= (s.v1[i] & 0xffffffffULL) * (s.v0[i] >> 32)
        s.v0[i] += s.mul1[i]
        s.mul1[i] ^= (s.v0[i] & 0xffffffffULL) * (s.v1[i] >> 32)
    _hh_zipper(s.v1[1], s.v1[0], &s.v0[1], &s.v0[0])
    _hh_zipper(s.v1[3], s.v1[2], &s.v0[3], &s.v0[2])
    _hh_zipper(s.v0[1], s.v0[0], &s.v1[1], &s.v1[0])
    _hh_zipper(s.v0[3], s.v0[2], &s.v1[3], &s.v1[2])


cdef inline uint64_t _hh_load(const unsigned char* p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):   # little-endian whatever the host; compilers fold this to one load
        v |= (<uint64_t>p[i]) << (8 * i)
    return v


cdef inline uint32_t _hh_rotl32(uint32_t x, unsigned n) noexcept nogil:
    return (x << n) | (x >> (32 - n)) if n else x


cdef inline uint64_t _hh_swap(uint64_t x) noexcept nogil:
    return (x >> 32) | (x << 32)


cdef uint64_t _highway_hash64(const unsigned char* p, size_t n, const uint64_t* key) noexcept nogil:
    cdef _HHState s
    cdef uint64_t lanes[4]
    cdef unsigned char packet[32]
    cdef size_t whole = n & ~(<size_t>31), i, k
    cdef unsigned tail = n & 31
    cdef int j
    for j in range(4):
        s.mul0[j] = _HH_INIT0[j]
        s.mul1[j] = _HH_INIT1[j]
        s.v0[j] = _HH_INIT0[j] ^ key[j]
        s.v1[j] = _HH_INIT1[j] ^ _hh_swap(key[j])
    i = 0
    while i < whole:
        for j in range(4):
            lanes[j] = _hh_load(p + i + 8 * j)
        _hh_update(&s, lanes)
        i += 32
    if tail:
        for j in range(4):
            s.v0[j] += ((<uint64_t>tail) << 32) + tail
            s.v1[j] = (<uint64_t>_hh_rotl32(<uint32_t>s.v1[j], tail)
                       | ((<uint64_t>_hh_rotl32(<uint32_t>(s.v1[j] >> 32), tail)) << 32))
        memset(packet, 0, 32)
        k = tail & ~(<unsigned>3)
        memcpy(packet, p + whole, k)
        if tail & 16:
            memcpy(packet + 28, p + whole + tail - 4, 4)
        elif tail & 3:
            packet[16] = p[whole + k]
            packet[17] = p[whole + k + ((tail & 3) >> 1)]
            packet[18] = p[whole + tail - 1]
        for j in range(4):
            lanes[j] = _hh_load(packet + 8 * j)
        _hh_update(&s, lanes)
    for k in range(4):
        lanes[0] = _hh_swap(s.v0[2])
        lanes[1] = _hh_swap(s.v0[3])
        lanes[2] = _hh_swap(s.v0[0])
        lanes[3] = _hh_swap(s.v0[1])
        _hh_update(&s, lanes)
    return s.v0[0] + s.v1[0] + s.mul0[0] + s.mul1[0]


def highway_hash64(data, key=RIEGELI_KEY):
    """HighwayHash-64 of `data` (any bytes-like object) under `key` (four ints)."""
    cdef uint64_t k[4]
    cdef const unsigned char[::1] view = memoryview(data).cast("B")
    cdef size_t n = view.shape[0]
    cdef const unsigned char* p = &view[0] if n else <const unsigned char*>b""
    cdef uint64_t h
    if len(key) != 4:
        raise ValueError("a HighwayHash key is four 64-bit integers")
    for j in range(4):
        k[j] = key[j]
    if n < _HH_NOGIL_MIN:
        return _highway_hash64(p, n, k)
    with nogil:
        h = _highway_hash64(p, n, k)
    return h
