# FarmHash Fingerprint64 (the "na" Hash64 variant) and TensorFlow's
# FingerprintCat64, in C arithmetic. Included by native/_native.pyx; the
# pure-Python twin is tfformats/_farmhash.py. Written from the algorithm
# description in FORMATS.md section 6. uint64_t wraps modulo 2**64, which is
# exactly the arithmetic the algorithm wants.

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


# --- putting map entries into C++ deterministic order ---------------------------
# tfformats/fingerprint.py hashes C++ "deterministic" serializations. Python's
# upb backend orders map entries differently (integer keys descending, a
# string before the strings it is a prefix of), so fingerprint.py serializes
# with protobuf and then this walker sorts each map's entries in place. Its
# pure-Python twin is tfformats._pure.reorder_map_entries; `plan` and the key
# kinds are built there (fingerprint._plan). Moving whole entries keeps every
# length prefix valid, so the buffer never changes size.

cdef enum:
    _KEY_BYTES = 0      # string / bytes: bytewise, a prefix first
    _KEY_UNSIGNED = 1   # uint32, uint64, fixed32, fixed64, bool
    _KEY_SIGNED32 = 2   # int32, sfixed32
    _KEY_SIGNED64 = 3   # int64, sfixed64
    _KEY_ZIGZAG = 4     # sint32, sint64
    _MESSAGE_ACTION = 0  # plan action: recurse into a sub-message
    _MAP_ACTION = 1      # plan action: sort the entries of a map field

# The same codes as Python names, as tfformats._pure exports them.
KEY_BYTES, KEY_UNSIGNED, KEY_SIGNED32, KEY_SIGNED64, KEY_ZIGZAG = (
    _KEY_BYTES, _KEY_UNSIGNED, _KEY_SIGNED32, _KEY_SIGNED64, _KEY_ZIGZAG)
MESSAGE_ACTION, MAP_ACTION = _MESSAGE_ACTION, _MAP_ACTION


cdef inline Py_ssize_t _mw_varint(const unsigned char* b, Py_ssize_t pos, Py_ssize_t end,
                                  uint64_t* out) except -1:
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef unsigned char byte
    while True:
        if pos >= end or shift > 63:
            raise ValueError(f"truncated varint at offset {pos} while reordering map entries")
        byte = b[pos]
        pos += 1
        result |= (<uint64_t>(byte & 0x7F)) << shift
        if byte < 0x80:
            out[0] = result
            return pos
        shift += 7


cdef Py_ssize_t _mw_skip(const unsigned char* b, Py_ssize_t pos, Py_ssize_t end,
                         int wire) except -1:
    cdef uint64_t v
    if wire == 0:
        return _mw_varint(b, pos, end, &v)
    if wire == 2:
        pos = _mw_varint(b, pos, end, &v)
        if v > <uint64_t>(end - pos):
            raise ValueError(f"length {v} at offset {pos} runs past the message")
        return pos + <Py_ssize_t>v
    if wire == 1:
        pos += 8
    elif wire == 5:
        pos += 4
    elif wire == 3:
        while True:
            pos = _mw_varint(b, pos, end, &v)
            if (v & 7) == 4:
                return pos
            pos = _mw_skip(b, pos, end, <int>(v & 7))
    else:
        raise ValueError(f"bad wire type {wire} at offset {pos}")
    if pos > end:
        raise ValueError(f"fixed-size field runs past the message at offset {pos}")
    return pos


cdef inline uint64_t _mw_int_order(uint64_t raw, int kind) noexcept nogil:
    # Map an integer key's wire value to a uint64 that sorts like the key type.
    cdef int64_t s
    if kind == _KEY_SIGNED32:
        s = <int64_t>(<int32_t>(<uint32_t>raw))
    elif kind == _KEY_SIGNED64:
        s = <int64_t>raw
    elif kind == _KEY_ZIGZAG:
        s = <int64_t>(raw >> 1) ^ -(<int64_t>(raw & 1))
    else:
        return raw
    return (<uint64_t>s) ^ 0x8000000000000000ULL


cdef Py_ssize_t _mw_fix(unsigned char* b, Py_ssize_t pos, Py_ssize_t end, dict plan) except -1:
    cdef uint64_t tag, n
    cdef Py_ssize_t start, stop
    cdef object action
    while pos < end:
        pos = _mw_varint(b, pos, end, &tag)
        if (tag & 7) != 2:
            pos = _mw_skip(b, pos, end, <int>(tag & 7))
            continue
        start = pos
        pos = _mw_varint(b, pos, end, &n)
        if n > <uint64_t>(end - pos):
            raise ValueError(f"length {n} at offset {pos} runs past the message")
        stop = pos + <Py_ssize_t>n
        action = plan.get(tag)
        if action is None:
            pos = stop
        elif action[0] == _MESSAGE_ACTION:
            _mw_fix(b, pos, stop, <dict>action[1])
            pos = stop
        else:
            pos = _mw_fix_map(b, start, end, tag, action[1], action[2])
    return pos


cdef Py_ssize_t _mw_fix_map(unsigned char* b, Py_ssize_t pos, Py_ssize_t end, uint64_t tag,
                            int kind, object value_plan) except -1:
    cdef Py_ssize_t run_start = pos - 1, entry_start, body, stop, p, after
    cdef uint64_t n, ftag, raw, okey = 0, prev_okey = 0, t
    cdef const unsigned char* skey = NULL
    cdef const unsigned char* prev_skey = NULL
    cdef Py_ssize_t sklen = 0, prev_sklen = 0
    cdef int c, wire
    cdef bint sorted_so_far = True, first = True
    cdef list entries
    t = tag >> 7
    while t:  # the tag's own size in bytes
        run_start -= 1
        t >>= 7
    entry_start = run_start
    while True:
        body = _mw_varint(b, pos, end, &n)
        if n > <uint64_t>(end - body):
            raise ValueError(f"map entry length {n} at offset {body} runs past the message")
        stop = body + <Py_ssize_t>n
        raw = 0
        skey = b + body
        sklen = 0
        p = body
        while p < stop:
            p = _mw_varint(b, p, stop, &ftag)
            wire = <int>(ftag & 7)
            if (ftag >> 3) == 1:
                if wire == 2:
                    p = _mw_varint(b, p, stop, &n)
                    if n > <uint64_t>(stop - p):
                        raise ValueError(f"map key length {n} at offset {p} runs past the entry")
                    skey = b + p
                    sklen = <Py_ssize_t>n
                    p += sklen
                elif wire == 0:
                    p = _mw_varint(b, p, stop, &raw)
                elif wire == 1:
                    if p + 8 > stop:
                        raise ValueError(f"truncated map key at offset {p}")
                    raw = _fh_fetch64(b + p)
                    p += 8
                elif wire == 5:
                    if p + 4 > stop:
                        raise ValueError(f"truncated map key at offset {p}")
                    raw = _fh_fetch32(b + p)
                    p += 4
                else:
                    p = _mw_skip(b, p, stop, wire)
            elif (ftag >> 3) == 2 and wire == 2 and value_plan is not None:
                p = _mw_varint(b, p, stop, &n)
                if n > <uint64_t>(stop - p):
                    raise ValueError(f"map value length {n} at offset {p} runs past the entry")
                _mw_fix(b, p, p + <Py_ssize_t>n, <dict>value_plan)
                p += <Py_ssize_t>n
            else:
                p = _mw_skip(b, p, stop, wire)
        if kind == _KEY_BYTES:
            if not first and sorted_so_far:
                c = memcmp(prev_skey, skey, prev_sklen if prev_sklen < sklen else sklen)
                if c > 0 or (c == 0 and prev_sklen > sklen):
                    sorted_so_far = False
            prev_skey = skey
            prev_sklen = sklen
        else:
            okey = _mw_int_order(raw, kind)
            if not first and prev_okey > okey:
                sorted_so_far = False
            prev_okey = okey
        first = False
        pos = stop
        if pos >= end:
            break
        after = _mw_varint(b, pos, end, &ftag)
        if ftag != tag:
            break
        entry_start = pos
        pos = after
    if not sorted_so_far:  # rare enough that a second, Python-object pass is fine
        entries = _mw_collect(b, run_start, pos, kind)
        entries.sort(key=_mw_first)
        chunks = b"".join([b[s:e] for _, s, e in entries])
        memcpy(b + run_start, <const char*>chunks, pos - run_start)
    return pos


cdef list _mw_collect(const unsigned char* b, Py_ssize_t pos, Py_ssize_t end, int kind):
    # (sort key, start, stop) of each entry of the (already checked) run b[pos:end].
    cdef list entries = []
    cdef uint64_t t, n, ftag, raw
    cdef Py_ssize_t start, body, stop, p
    cdef object key
    while pos < end:
        start = pos
        pos = _mw_varint(b, pos, end, &t)
        body = _mw_varint(b, pos, end, &n)
        stop = body + <Py_ssize_t>n
        key = b"" if kind == _KEY_BYTES else _mw_int_order(0, kind)
        p = body
        while p < stop:
            p = _mw_varint(b, p, stop, &ftag)
            if (ftag >> 3) == 1 and (ftag & 7) == 2:
                p = _mw_varint(b, p, stop, &n)
                key = b[p:p + <Py_ssize_t>n]
                p += <Py_ssize_t>n
            elif (ftag >> 3) == 1 and (ftag & 7) == 0:
                p = _mw_varint(b, p, stop, &raw)
                key = _mw_int_order(raw, kind)
            elif (ftag >> 3) == 1 and (ftag & 7) == 1:
                key = _mw_int_order(_fh_fetch64(b + p), kind)
                p += 8
            elif (ftag >> 3) == 1 and (ftag & 7) == 5:
                key = _mw_int_order(_fh_fetch32(b + p), kind)
                p += 4
            else:
                p = _mw_skip(b, p, stop, <int>(ftag & 7))
        entries.append((key, start, stop))
        pos = stop
    return entries


def _mw_first(entry):
    return entry[0]


def reorder_map_entries(bytearray buf, dict plan):
    """Sort, in place, every map's entries in `buf` (a serialized message) into
    C++ deterministic order, visiting the fields `plan` names (see
    tfformats.fingerprint._plan). Raises ValueError on malformed input."""
    cdef unsigned char* b = <unsigned char*>(<char*>buf)
    _mw_fix(b, 0, len(buf), plan)
