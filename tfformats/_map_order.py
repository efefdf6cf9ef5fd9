"""Putting the entries of protobuf map fields into C++ deterministic order,
in place: the pure-Python twin of `native/map_order.pxi` (the same functions,
results and exceptions). `tfformats._pure` re-exports it, so the selected
implementation (`tfformats._impl.hot`) offers it either way.
"""

import re

from .errors import FormatError

# TensorFlow hashes C++ deterministic serializations; Python's upb backend
# orders map entries differently, so tfformats.fingerprint serializes with
# protobuf and then this walker sorts each map's entries in place.

# Map key kinds: how a key's raw wire value (varint or little-endian fixed)
# sorts as C++ sorts it.
KEY_BYTES, KEY_UNSIGNED, KEY_SIGNED32, KEY_SIGNED64, KEY_ZIGZAG = range(5)
MESSAGE_ACTION = 0  # plan action: recurse into a sub-message
MAP_ACTION = 1      # plan action: put the entries of a map field in C++ order


def _signed32(v):
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


_INT_ORDER = {
    KEY_UNSIGNED: lambda v: v,
    KEY_SIGNED32: _signed32,
    KEY_SIGNED64: lambda v: v - (1 << 64) if v >> 63 else v,
    KEY_ZIGZAG: lambda v: (v >> 1) ^ -(v & 1),
}


def _walk_skip(buf, pos, wire):
    """Position after a field value of wire type `wire` starting at `pos`."""
    if wire == 0:
        while buf[pos] & 0x80:
            pos += 1
        return pos + 1
    if wire == 2:
        n, pos = _varint(buf, pos)
        return pos + n
    if wire == 1:
        return pos + 8
    if wire == 5:
        return pos + 4
    if wire == 3:  # group: skip fields up to the matching end-group tag
        while True:
            tag, pos = _varint(buf, pos)
            if tag & 7 == 4:
                return pos
            pos = _walk_skip(buf, pos, tag & 7)
    raise FormatError(f"bad wire type {wire} at offset {pos} while serializing")


def reorder_map_entries(buf, plan):
    """Sort, in place, every map's entries in `buf` (a serialized message in a
    bytearray) into C++ deterministic order, visiting the fields `plan` names
    (built by tfformats.fingerprint._plan). Moving whole entries keeps every
    length prefix valid."""
    _fix(buf, 0, len(buf), plan)


# plan id -> (plan, `search` of a regex for the bytes of _signs(plan)). The
# plan is kept with its regex, so its id cannot be reused while cached.
_finders: dict = {}


def _finder(plan):
    """`search` for the bytes that any map entry inside a message of `plan`
    implies (_signs): a sub-message without them has nothing to fix, and one
    scan in C skips it instead of walking its fields in Python (most values
    of a NodeDef's attr map: types, shapes, lists of shapes)."""
    cached = _finders.get(id(plan))
    if cached is not None and cached[0] is plan:
        return cached[1]
    if len(_finders) > 4096:   # plans built by callers, not fingerprint's cache
        _finders.clear()
    signs = sorted(_signs(plan, set()), key=len, reverse=True)
    search = re.compile(b"|".join(re.escape(t) for t in signs)).search
    _finders[id(plan)] = (plan, search)
    return search


def _signs(plan, visiting):
    """Tag encodings of which at least one occurs in any message of `plan`
    that holds a map entry somewhere inside: a map's own tag, or for a
    sub-message either its tag or (recursively) its signs, whichever set has
    the larger smallest byte (large bytes are rarer as lengths and values,
    so the scan finds fewer false alarms). Tags in protobuf's own output are
    in their one canonical encoding, so a tag that is there is found."""
    visiting = visiting | {id(plan)}
    out = set()
    for tag, action in plan.items():
        own = encode_varint(tag)
        if action[0] == MESSAGE_ACTION and id(action[1]) not in visiting:
            inner = _signs(action[1], visiting)
            if min(min(t) for t in inner) > min(own):
                out |= inner
                continue
        out.add(own)
    return out


def encode_varint(value):
    """`value` (>= 0) as a protobuf varint."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fix(buf, pos, end, plan):
    """Reorder, in place, the map entries inside buf[pos:end] (one message)."""
    if _finder(plan)(buf, pos, end) is None:
        return
    while pos < end:
        tag = buf[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(buf, pos)
        if tag & 7 != 2:
            pos = _walk_skip(buf, pos, tag & 7)
            continue
        start = pos
        n = buf[pos]
        if n < 0x80:
            pos += 1
        else:
            n, pos = _varint(buf, pos)
        stop = pos + n
        action = plan.get(tag)
        if action is None:
            pos = stop
        elif action[0] == MESSAGE_ACTION:
            _fix(buf, pos, stop, action[1])
            pos = stop
        else:
            pos = _fix_map(buf, start, end, tag, _INT_ORDER.get(action[1]), action[2])


def _fix_map(buf, pos, end, tag, key_order, value_plan):
    """Sort the run of `tag` map entries whose first length prefix is at `pos`.

    Entries of one map field are contiguous in any serializer's output. Sorting
    moves whole entries, so lengths (and every enclosing length) stay valid.
    Returns the position after the run.
    """
    entries = []
    keys = []
    run_start = entry_start = pos - _tag_size(tag)
    find = None if value_plan is None else _finder(value_plan)
    while True:
        n = buf[pos]
        if n < 0x80:
            body = pos + 1
        else:
            n, body = _varint(buf, pos)
        stop = body + n
        key = b"" if key_order is None else 0
        p = body
        if (key_order is None and n >= 2 and buf[p] == 0x0A and buf[p + 1] < 0x80
                and p + 2 + buf[p + 1] <= stop):
            # What protobuf writes for a string key: the key, then the value
            # if any; the loop below takes the rest (and anything else).
            p += 2
            key = buf[p:p + buf[p - 1]]   # a bytearray: compares as bytes do
            p += len(key)
            if p < stop and buf[p] == 0x12 and buf[p + 1] < 0x80 and p + 2 + buf[p + 1] == stop:
                if find is not None and find(buf, p + 2, stop) is not None:
                    _fix(buf, p + 2, stop, value_plan)
                p = stop
        while p < stop:
            ftag = buf[p]
            if ftag < 0x80:
                p += 1
            else:
                ftag, p = _varint(buf, p)
            wire = ftag & 7
            # A key of the wrong wire type for the map (only in entries
            # protobuf kept as unknown fields, i.e. damaged input) is skipped
            # like any unknown field, as the native twin does: the entry
            # keeps the default key, and keys stay comparable.
            if ftag == 0x0A and key_order is None:
                kn = buf[p]
                if kn < 0x80:
                    p += 1
                else:
                    kn, p = _varint(buf, p)
                key = buf[p:p + kn]   # a bytearray: compares as bytes do
                p += kn
            elif ftag >> 3 == 1 and wire in (0, 1, 5) and key_order is not None:
                if wire == 0:
                    key, p = _varint(buf, p)
                else:
                    width = 8 if wire == 1 else 4
                    if p + width > stop:
                        raise ValueError(f"truncated map key at offset {p}")
                    key = int.from_bytes(buf[p:p + width], "little")
                    p += width
            elif ftag == 0x12 and find is not None:
                vn = buf[p]
                if vn < 0x80:
                    p += 1
                else:
                    vn, p = _varint(buf, p)
                if find(buf, p, p + vn) is not None:
                    _fix(buf, p, p + vn, value_plan)
                p += vn
            else:
                p = _walk_skip(buf, p, wire)
        if key_order is not None:
            key = key_order(key)
        keys.append(key)
        entries.append((key, entry_start, stop))
        pos = stop
        if pos >= end:
            break
        t = buf[pos]
        if t < 0x80:
            after = pos + 1
        else:
            t, after = _varint(buf, pos)
        if t != tag:
            break
        entry_start = pos
        pos = after
    if len(keys) > 1 and keys != sorted(keys):
        entries.sort(key=lambda e: e[0])
        run_end = pos
        chunks = b"".join([bytes(buf[s:e]) for _, s, e in entries])
        buf[run_start:run_end] = chunks
    return pos


def _tag_size(tag):
    size = 1
    while tag >= 0x80:
        tag >>= 7
        size += 1
    return size


def _varint(buf, pos):
    """(value, position after it) of the varint at `buf[pos:]`. The buffer is
    protobuf's own serialization, so a bad varint is a bug, not bad input."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError(f"truncated varint at offset {pos} while reordering map entries")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
