"""Putting the entries of protobuf map fields into C++ deterministic order,
in place: the pure-Python twin of `native/map_order.pxi` (the same functions,
results and exceptions). `tfformats._pure` re-exports it, so the selected
implementation (`tfformats._impl.hot`) offers it either way.
"""

from bisect import bisect_left

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


_U64 = (1 << 64) - 1
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
    """Sort, in place, every map's entries in `buf` (protobuf's serialization
    of a message, in a bytearray) into C++ deterministic order, visiting the
    fields `plan` names (built by tfformats.fingerprint._plan). Moving whole
    entries keeps every length prefix valid.

    A run of entries is sorted only when each is plain (field 1, field 2,
    both in that order, or neither), as protobuf writes entries; a run with
    another entry (only protobuf's unknown fields, from damaged input) keeps
    its order. The key is field 1 when it has the key's wire type, else the
    default.
    """
    tags = _map_tags(plan)
    if not tags or not buf:
        return
    # The walker visits only sub-messages holding a suspect offset; below
    # _FILTER_FROM bytes numpy's per-call cost outweighs what the filter
    # saves, so every offset is one.
    suspects = range(len(buf)) if len(buf) < _FILTER_FROM else _suspects(buf, tags)
    _fix(buf, 0, len(buf), plan, suspects)


# plan id -> (plan, its _map_tags). The plan is kept with its tags, so its id
# cannot be reused while cached.
_tag_cache: dict = {}


def _map_tags(plan):
    """{encoded tag: set of key kinds} for every map field reachable from `plan`."""
    cached = _tag_cache.get(id(plan))
    if cached is not None and cached[0] is plan:
        return cached[1]
    if len(_tag_cache) > 4096:   # plans built by callers, not fingerprint's cache
        _tag_cache.clear()
    tags: dict = {}
    seen = set()
    todo = [plan]
    while todo:
        p = todo.pop()
        if p is None or id(p) in seen:
            continue
        seen.add(id(p))
        for tag, action in p.items():
            if action[0] == MESSAGE_ACTION:
                todo.append(action[1])
            else:
                tags.setdefault(encode_varint(tag), set()).add(action[1])
                todo.append(action[2])
    _tag_cache[id(plan)] = (plan, tags)
    return tags


# --- finding the few places that need sorting, with numpy --------------------
# Walking every map entry in Python costs ~30 ms per MiB, yet in what upb
# writes only a few maps are out of C++ order (integer keys, and a string
# key before the keys it is a prefix of: "config_proto" before "config").
# One vectorized pass finds every adjacent pair of entries of one map tag
# whose keys are out of order; the walker then skips each sub-message (and
# map run) that holds none of them. Bytes inside values and repeated fields
# of a map's tag can look like such pairs, so this is a superset: it costs
# walking, never a missed sort (tests/test_map_order.py).

_FILTER_FROM = 32768   # bytes
_GLANCE_COLUMNS = 4   # key bytes compared for every pair, vectorized
_COLUMNS = 48         # ... and for the pairs left, before the rest one pair at a time
_PAD = 64           # zeros after the buffer: reads just past its end stay in bounds
_WINDOW = 1 << 22   # bytes whose candidate offsets are judged together
_SIGN = 1 << 63
_KINDS = (KEY_BYTES, KEY_UNSIGNED, KEY_SIGNED32, KEY_SIGNED64, KEY_ZIGZAG)


def _suspects(buf, tags):
    """Sorted list of the offsets of the first entry of every adjacent pair
    of plain entries with one of `tags` whose keys may sort the wrong way
    round, and of every pair these vectorized reads cannot judge."""
    import numpy as np   # noqa: PLC0415 (the listing path never needs numpy)

    n = len(buf)
    a = np.zeros(n + _PAD, np.uint8)
    a[:n] = np.frombuffer(buf, np.uint8)   # a copy (buf stays resizable), padded
    # All one-byte tags (every TensorFlow map field's) at once, with the key
    # kinds of each as bits; each longer tag on its own. Window by window, so
    # the arrays of offsets stay small whatever the buffer's size.
    kinds_of = np.zeros(256, np.uint8)
    longer = []
    for tag, kinds in tags.items():
        bits = sum(1 << kind for kind in kinds)
        if len(tag) == 1:
            kinds_of[tag[0]] |= bits
        else:
            longer.append((tag, np.uint8(bits)))
    is_tag = kinds_of.astype(bool)
    found = [np.zeros(0, np.int64)]
    for start in range(0, n, _WINDOW):
        window = a[start:min(start + _WINDOW, n)]
        if is_tag.any():
            at = np.flatnonzero(is_tag.take(window)) + start
            found.append(_suspect_pairs(np, a, n, at, 1, kinds_of))
        for tag, bits in longer:
            at = np.flatnonzero(window == tag[0]) + start
            for k in range(1, len(tag)):
                at = at[a[at + k] == tag[k]]
            found.append(_suspect_pairs(np, a, n, at, len(tag), bits))
    return np.unique(np.concatenate(found)).tolist()


def _suspect_pairs(np, a, n, at, tl, kinds_of):
    """The offsets among `at` (tags of `tl` bytes, key kinds as bits:
    kinds_of, or kinds_of[first tag byte]) that start a suspect pair."""
    at, body, size, body_b, size_b = _adjacent_pairs(np, a, n, at, tl)
    bits = kinds_of if kinds_of.ndim == 0 else kinds_of[a[at]]
    kinds = [kind for kind in _KINDS if np.any(bits & (1 << kind))]
    # Most pairs are settled by their first bytes: keys in order.
    fine = np.ones(len(at), bool)
    for kind in kinds:
        fine &= ~((bits >> kind) & 1).astype(bool) | _in_order_at_a_glance(
            np, a, body, size, body_b, size_b, kind)
    at, body, size, body_b, size_b, bits = (
        x[~fine] for x in (at, body, size, body_b, size_b, np.broadcast_to(bits, at.shape)))
    first = _entries(np, a, body, size)
    second = _entries(np, a, body_b, size_b)
    # A run holding an entry that is not plain is never sorted; of the rest,
    # suspect a pair this reading cannot judge, or one out of order.
    settled = (first[0] & ~first[1]) | (second[0] & ~second[1])
    judged = np.flatnonzero(~settled & first[0] & second[0])
    suspect = ~settled
    suspect[judged] = False
    first = [field[judged] for field in first]
    second = [field[judged] for field in second]
    bits = bits[judged]
    for kind in kinds:
        if kind == KEY_BYTES:
            descends = _strings_descend(np, a, first, second)
        else:
            descends = _int_keys(np, a, first, kind) > _int_keys(np, a, second, kind)
        suspect[judged[descends & ((bits >> kind) & 1).astype(bool)]] = True
    return at[suspect]


def _adjacent_pairs(np, a, n, at, tl):
    """(offset, body, size of the first; body, size of the second) of the
    offsets `at` of a[:n] that read as two adjacent length-delimited fields
    of one `tl`-byte tag."""
    size, width, ended = _varints(np, a, at + tl)
    body = at + tl + width
    size = np.minimum(size, np.uint64(n)).astype(np.int64)
    nxt = body + size                 # where a next entry of the run starts
    keep = ended & (nxt + tl < n)
    for k in range(tl):
        keep[keep] = a[nxt[keep] + k] == a[at[keep] + k]
    at, body, size, nxt = at[keep], body[keep], size[keep], nxt[keep]
    size_b, width_b, ended = _varints(np, a, nxt + tl)
    body_b = nxt + tl + width_b
    size_b = np.minimum(size_b, np.uint64(n)).astype(np.int64)
    keep = ended & (body_b + size_b <= n)    # a real entry lies inside the buffer
    return at[keep], body[keep], size[keep], body_b[keep], size_b[keep]


def _in_order_at_a_glance(np, a, body, size, body_b, size_b, kind):
    """True where the first bytes show that the keys (of `kind`) of a pair do
    not descend, whether or not the entries are plain."""
    first_a = np.where(size > 0, a[body], 0)
    if kind == KEY_BYTES:
        # The first key is empty, or both are short and in order early on.
        first_b = np.where(size_b > 0, a[body_b], 0)
        len_a, len_b = a[body + 1].astype(np.int64), a[body_b + 1].astype(np.int64)
        short = ((first_a == 0x0A) & (first_b == 0x0A) & (len_a < 0x80) & (len_b < 0x80)
                 & (len_a + 2 <= size) & (len_b + 2 <= size_b))
        fine = (first_a < 0x80) & (first_a != 0x0A)
        i = np.flatnonzero(short)
        descends, undecided = _compare_keys(np, a, body[i] + 2, len_a[i], body_b[i] + 2, len_b[i],
                                            _GLANCE_COLUMNS)
        descends[undecided] = True
        fine[i] = ~descends
        return fine
    # Both keys are one-byte varints or absent, and in order.
    known_a, key_a = _small_int_keys(np, a, first_a, body, size)
    known_b, key_b = _small_int_keys(np, a, np.where(size_b > 0, a[body_b], 0), body_b, size_b)
    return known_a & known_b & (_int_order(np, key_a, kind) <= _int_order(np, key_b, kind))


def _small_int_keys(np, a, first, body, size):
    value = a[body + 1]
    varint = (first == 0x08) & (value < 0x80) & (size >= 2)
    absent = (first < 0x80) & (first != 0x08) & (first != 0x09) & (first != 0x0D)
    return varint | absent, np.where(varint, value, 0).astype(np.uint64)


def _compare_keys(np, a, start_a, len_a, start_b, len_b, columns):
    """(B sorts before A, indices not decided by the first `columns` bytes)
    for byte strings a[start:start + len], compared a column at a time."""
    descends = np.zeros(len(start_a), bool)
    undecided = np.arange(len(start_a))
    for j in range(columns):
        if not undecided.size:
            break
        ka, kb = len_a[undecided], len_b[undecided]
        a_ended, b_ended = ka <= j, kb <= j
        ca = a[np.where(a_ended, 0, start_a[undecided] + j)]
        cb = a[np.where(b_ended, 0, start_b[undecided] + j)]
        # Equal keys keep their order (the sort is stable): only B < A counts.
        bad = ~a_ended & (b_ended | (ca > cb))     # B is a proper prefix of A, or smaller
        good = a_ended | (ca < cb)
        descends[undecided[bad]] = True
        undecided = undecided[~bad & ~good]
    return descends, undecided


def _varints(np, a, at):
    """(uint64 values, byte counts, ended within 10 bytes) of the varints at
    offsets `at`; bits above 64 drop, as the native walker's do."""
    b = a[at]
    value = (b & 0x7F).astype(np.uint64)
    width = np.ones(len(at), np.int64)
    live = np.flatnonzero(b >= 0x80)
    for k in range(1, 10):
        if not live.size:
            break
        b = a[at[live] + k]
        value[live] |= (b & 0x7F).astype(np.uint64) << np.uint64(7 * k)
        width[live] += 1
        live = live[b >= 0x80]
    ended = np.ones(len(at), bool)
    ended[live] = False
    return value, width, ended


def _field(np, a, at, stop):
    """The field at each offset `at` of a message ending at `stop`: (number,
    wire type, value offset, varint value (a wire 0 value, a wire 2 length),
    offset after it, readable). Readable: of wire type 0, 1, 2 or 5 and
    ending by `stop` (groups and the like are left to the walker)."""
    tag, tag_width, tag_ended = _varints(np, a, at)
    number = (tag >> np.uint64(3)).astype(np.int64)
    wire = (tag & np.uint64(7)).astype(np.int64)
    at = at + tag_width
    value, width, ended = _varints(np, a, at)
    length = np.minimum(value, np.uint64(len(a))).astype(np.int64)
    start = at + np.where(wire == 2, width, 0)
    after = np.select([wire == 0, wire == 1, wire == 2, wire == 5],
                      [at + width, at + 8, start + length, at + 4], stop + 1)
    readable = tag_ended & (ended | ((wire != 0) & (wire != 2))) & (after <= stop)
    return number, wire, start, value, after, readable


def _entries(np, a, body, size):
    """What the walker sees in the map entries a[body:body + size]:
    (readable, plain, wire type of field 1 (-1 if none), its value offset, its
    varint value) of each. Plain: field 1, field 2, both in that order, or
    neither (what protobuf writes); the walker sorts only runs of plain
    entries. Readable: plain or not is certain, and so is the key."""
    stop = body + size
    has_first = size > 0
    number, wire, start, value, after, readable = _field(np, a, body, stop)
    readable |= ~has_first | ((number != 1) & (number != 2))
    has_second = has_first & (number == 1) & (after < stop)
    number_2, _, _, _, after_2, readable_2 = _field(
        np, a, np.where(has_second, after, body), stop)
    readable &= ~has_second | (number_2 != 2) | readable_2
    plain = ~has_first | np.where(has_second, (number_2 == 2) & (after_2 == stop),
                                  ((number == 1) | (number == 2)) & (after == stop))
    keyed = has_first & (number == 1)
    return readable, plain, np.where(keyed, wire, -1), start, value


def _strings_descend(np, a, first, second):
    """True where the string key of the second entry of a pair sorts before
    the first's: the key is field 1 of wire type 2, else empty."""
    start_a, len_a = _string_keys(np, first)
    start_b, len_b = _string_keys(np, second)
    descends, undecided = _compare_keys(np, a, start_a, len_a, start_b, len_b, _COLUMNS)
    for i in undecided.tolist():   # long common prefixes: a few, compared whole
        sa, sb = start_a[i], start_b[i]
        descends[i] = a[sb:sb + len_b[i]].tobytes() < a[sa:sa + len_a[i]].tobytes()
    return descends


def _string_keys(np, entries):
    _, _, wire, start, value = entries
    return start, np.where(wire == 2, value, 0).astype(np.int64)


def _int_keys(np, a, entries, kind):
    """A uint64 for each entry's key that sorts as the key does: field 1 of
    wire type 0, 1 or 5, else 0."""
    _, _, wire, start, value = entries
    raw = np.where(wire == 0, value, np.uint64(0))
    for fixed_wire, nbytes in ((1, 8), (5, 4)):
        fixed = np.zeros(len(start), np.uint64)
        for i in range(nbytes):
            fixed |= a[start + i].astype(np.uint64) << np.uint64(8 * i)
        raw = np.where(wire == fixed_wire, fixed, raw)
    return _int_order(np, raw, kind)


def _int_order(np, raw, kind):
    """Raw uint64 key values mapped to uint64s that sort as keys of `kind` do."""
    if kind == KEY_SIGNED32:
        low = raw & np.uint64(0xFFFFFFFF)
        raw = np.where(low >> np.uint64(31), low | np.uint64(0xFFFFFFFF00000000), low)
    elif kind == KEY_ZIGZAG:
        raw = (raw >> np.uint64(1)) ^ (np.uint64(0) - (raw & np.uint64(1)))
    if kind != KEY_UNSIGNED:
        raw = raw ^ np.uint64(_SIGN)
    return raw


def encode_varint(value):
    """`value` (>= 0) as a protobuf varint."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fix(buf, pos, end, plan, suspects):
    """Reorder, in place, the map entries inside buf[pos:end] (one message)."""
    i = bisect_left(suspects, pos)
    following = suspects[i] if i < len(suspects) else end   # the next suspect offset
    while pos < end and following < end:   # else nothing is left to sort here
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
        if action is None or (action[0] == MESSAGE_ACTION and following >= stop):
            pos = stop   # nothing to sort inside; nor, often, in the rest of its run
            while tag < 0x80 and pos < end and buf[pos] == tag:   # one-byte tags, tightly
                n = buf[pos + 1]
                if n < 0x80:
                    stop = pos + 2 + n
                elif buf[pos + 2] < 0x80:
                    stop = pos + 3 + (n & 0x7F) + (buf[pos + 2] << 7)
                else:
                    break
                if stop > following:
                    break
                pos = stop
            continue
        if action[0] == MESSAGE_ACTION:
            _fix(buf, pos, stop, action[1], suspects)
            pos = stop
        else:
            pos = _fix_map(buf, start, end, tag, _INT_ORDER.get(action[1]), action[2],
                           suspects)
        i = bisect_left(suspects, pos, i)
        following = suspects[i] if i < len(suspects) else end


def _fix_map(buf, pos, end, tag, key_order, value_plan, suspects):
    """Sort the run of `tag` map entries whose first length prefix is at `pos`.

    Entries of one map field are contiguous in any serializer's output. Sorting
    moves whole entries, so lengths (and every enclosing length) stay valid.
    A run holding an entry that is not plain (damaged input that protobuf kept
    as an unknown field) is left in protobuf's order. Returns the position
    after the run.
    """
    bounds = []   # (start, body, stop) of each entry
    run_start = entry_start = pos - _tag_size(tag)
    while True:
        n = buf[pos]
        if n < 0x80:
            body = pos + 1
        else:
            n, body = _varint(buf, pos)
        pos = body + n
        bounds.append((entry_start, body, pos))
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
    i = bisect_left(suspects, run_start)
    if i == len(suspects) or suspects[i] >= pos:
        return pos   # nothing to sort in the run, nor in its values
    entries = []
    all_plain = True
    for start, body, stop in bounds:
        key, plain = _entry(buf, body, stop, key_order, value_plan, suspects)
        all_plain = all_plain and plain
        entries.append((key, start, stop))
    keys = [key for key, _, _ in entries]
    if all_plain and keys != sorted(keys):
        entries.sort(key=lambda e: e[0])
        chunks = b"".join([bytes(buf[s:e]) for _, s, e in entries])
        buf[run_start:pos] = chunks
    return pos


def _entry(buf, body, stop, key_order, value_plan, suspects):
    """(key, plain) of the map entry buf[body:stop], sorting its value's own
    maps. Plain: field 1, field 2, both in that order, or neither, as protobuf
    writes an entry. The key is field 1 when it has the key's wire type
    (bytes when key_order is None), else the default."""
    key = b"" if key_order is None else key_order(0)
    plain = True
    last = 0
    p = body
    while p < stop:
        ftag, p = _varint(buf, p)
        field, wire = ftag >> 3, ftag & 7
        plain = plain and last < field <= 2
        last = field
        if field == 1 and key_order is None and wire == 2:
            kn, p = _varint(buf, p)
            if kn > stop - p:
                raise ValueError(f"map key length {kn} at offset {p} runs past the entry")
            key = bytes(buf[p:p + kn])
            p += kn
        elif field == 1 and key_order is not None and wire == 0:
            raw, p = _varint(buf, p)
            key = key_order(raw & _U64)
        elif field == 1 and key_order is not None and wire in (1, 5):
            width = 8 if wire == 1 else 4
            if p + width > stop:
                raise ValueError(f"truncated map key at offset {p}")
            key = key_order(int.from_bytes(buf[p:p + width], "little"))
            p += width
        elif field == 2 and wire == 2 and value_plan is not None:
            vn, p = _varint(buf, p)
            _fix(buf, p, p + vn, value_plan, suspects)
            p += vn
        else:
            p = _walk_skip(buf, p, wire)
    if p > stop:
        raise ValueError(f"map entry field runs past the entry at offset {stop}")
    return key, plain


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
