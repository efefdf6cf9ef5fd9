# Putting the entries of protobuf map fields into C++ deterministic order,
# in place. Included by native/_native.pyx; the pure-Python twin is
# tfformats/_map_order.py (same functions, results and exceptions).

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

# tfformats/fingerprint.py hashes C++ "deterministic" serializations. Python's
# upb backend orders map entries differently (integer keys descending, a
# string before the strings it is a prefix of), so fingerprint.py serializes
# with protobuf and then this walker sorts each map's entries in place. Its
# pure-Python twin is tfformats/_map_order.py; `plan` and the key
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
    cdef uint64_t field, last_field
    cdef bint sorted_so_far = True, first = True, all_plain = True
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
        last_field = 0
        while p < stop:
            p = _mw_varint(b, p, stop, &ftag)
            wire = <int>(ftag & 7)
            field = ftag >> 3
            # Plain: field 1, field 2, both in that order, or neither.
            all_plain = all_plain and last_field < field <= 2
            last_field = field
            if field == 1:
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
    # A run holding an entry that is not plain (damaged input that protobuf
    # kept as an unknown field) stays in protobuf's order.
    if not sorted_so_far and all_plain:  # rare: a second, Python-object pass is fine
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
            # A key of the wrong wire type for the map (damaged input kept by
            # protobuf as an unknown field) is skipped, as _mw_fix_map's
            # check does: the entry keeps the default key, keys stay comparable.
            if (ftag >> 3) == 1 and (ftag & 7) == 2 and kind == _KEY_BYTES:
                p = _mw_varint(b, p, stop, &n)
                key = b[p:p + <Py_ssize_t>n]
                p += <Py_ssize_t>n
            elif (ftag >> 3) == 1 and kind == _KEY_BYTES:
                p = _mw_skip(b, p, stop, <int>(ftag & 7))
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
    tfformats.fingerprint._plan). A run of entries is sorted only when each
    is plain (field 1, field 2, both in that order, or neither); the key is
    field 1 when it has the key's wire type, else the default. Raises
    ValueError on malformed input."""
    cdef unsigned char* b = <unsigned char*>(<char*>buf)
    _mw_fix(b, 0, len(buf), plan)
