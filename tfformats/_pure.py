"""Pure-Python twin of the native hot paths (`native/_native.pyx`).

Twins pair by name, one pure module per native file: this module and
`native/_native.pyx` (CRC-32C, varints, table blocks, bundle entries, string
tensors), `_farmhash.py` and `native/farmhash.pxi`, `_map_order.py` and
`native/map_order.pxi`. Like the compiled module, this one exports them all.

Both modules expose the same functions with the same behaviour and raise the
same exceptions; `tfformats._impl` picks one. Every length, offset and count
read from a file is checked against the bytes that are really there before it
is used. `where` arguments only feed error messages (file, tensor, offset).
"""

import operator
import re
import struct

import crc32c as _crc32c

# The other hot-path families, each with its native twin of the same name
# (native/farmhash.pxi, native/map_order.pxi), exported from here as well.
from ._farmhash import fingerprint64, fingerprint_cat64  # noqa: F401
from ._highwayhash import RIEGELI_KEY, highway_hash64  # noqa: F401
from ._map_order import (KEY_BYTES, KEY_SIGNED32, KEY_SIGNED64, KEY_UNSIGNED,  # noqa: F401
                         KEY_ZIGZAG, MAP_ACTION, MESSAGE_ACTION, encode_varint,
                         reorder_map_entries)
from .errors import ChecksumError, FormatError
from .limits import exceeded

MASK_DELTA = 0xA282EAD8
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


# --- CRC-32C --------------------------------------------------------------

def crc32c(data, value=0):
    """CRC-32C of `data`, continuing from `value` (0 starts a new checksum)."""
    return _crc32c.crc32c(data, value)


def mask_crc(crc):
    """TensorFlow's masked form of a CRC, as stored in files."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(masked):
    rot = (masked - MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# --- varints ----------------------------------------------------------------

def _varint(buf, pos, end, where):
    """Decode a varint64 at buf[pos:end]; returns (value, new_pos)."""
    if pos < end:
        b = buf[pos]
        if b < 0x80:   # most tags, lengths and small values: one byte
            return b, pos + 1
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise FormatError(f"{where}: varint runs past the end of its data at offset {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise FormatError(f"{where}: varint longer than 10 bytes at offset {pos}")


def decode_varint(buf, pos, where):
    """Decode the varint64 at `buf[pos:]`; returns (value, position after it)."""
    return _varint(buf, pos, len(buf), where)


# --- SSTable blocks --------------------------------------------------------

def _restarts(block, where):
    """Validate the restart array of a block; returns (entries_end, restarts)."""
    n = len(block)
    if n < 4:
        raise FormatError(f"{where}: block of {n} bytes is too short for its restart count")
    count = _U32.unpack_from(block, n - 4)[0]
    if count == 0 or count > (n - 4) // 4:
        raise FormatError(f"{where}: block of {n} bytes claims {count} restart points")
    end = n - 4 - 4 * count
    restarts = struct.unpack_from(f"<{count}I", block, end)
    for r in restarts:
        if r >= end and not (r == 0 and end == 0):
            raise FormatError(f"{where}: restart offset {r} is outside the block's {end} entry bytes")
    return end, restarts


def _entry_at(block, pos, end, prev_key, where):
    """Decode one block entry at `pos`; returns (key, value_start, value_end, next_pos)."""
    shared, pos = _varint(block, pos, end, where)
    non_shared, pos = _varint(block, pos, end, where)
    value_len, pos = _varint(block, pos, end, where)
    if shared > len(prev_key):
        raise FormatError(f"{where}: entry at offset {pos} shares {shared} bytes with a "
                          f"{len(prev_key)}-byte key")
    if non_shared + value_len > end - pos:
        raise FormatError(f"{where}: entry at offset {pos} runs past the block's entry bytes")
    key = prev_key[:shared] + bytes(block[pos:pos + non_shared])
    pos += non_shared
    return key, pos, pos + value_len, pos + value_len


def _short(key):
    return repr(key[:64]) + ("..." if len(key) > 64 else "")


def _check_after(key, before, at, where):
    if key <= before:
        raise FormatError(f"{where}: key {_short(key)} at offset {at} does not sort after the "
                          f"key before it, {_short(before)} (keys duplicated or out of order)")


def block_entries(block, where):
    """Every (key, value) of a block, in order; values are bytes."""
    end, _ = _restarts(block, where)
    out = []
    pos = 0
    key = b""
    while pos < end:
        key, vstart, vend, pos = _entry_at(block, pos, end, key, where)
        out.append((key, bytes(block[vstart:vend])))
    return out


def check_block_keys(block, where, after, upto, max_key_bytes=None, max_block_key_bytes=None):
    """FormatError unless the keys of a block increase strictly, the first
    sorts after `after` and the last is at most `upto` (None: no bound);
    LimitError if a key is longer than `max_key_bytes` or all keys, their
    shared prefixes expanded, take more than `max_block_key_bytes` (None: no
    limit), checked as each key is reached, before anything is built of them."""
    global _last_framed
    end, _ = _restarts(block, where)
    if end <= _FRAMED_MAX:
        b = block if type(block) is bytes else bytes(block)
        records = _framed_fast(b, end, after, upto, max_key_bytes, max_block_key_bytes)
        if records is not None:
            _last_framed = (b, records)
            return
    pos = total = 0
    key = before = b""
    while pos < end:
        start = pos
        key, _, _, pos = _entry_at(block, pos, end, key, where)
        total += len(key)
        if max_key_bytes is not None and len(key) > max_key_bytes:
            raise exceeded("max_key_bytes", len(key), f"{where}: bytes of the key at offset {start}")
        if max_block_key_bytes is not None and total > max_block_key_bytes:
            raise exceeded("max_block_key_bytes", total,
                           f"{where}: bytes of its keys (shared prefixes expanded) up to offset "
                           f"{start}")
        if start or after is not None:
            _check_after(key, before if start else after, start, where)
        before = key
    if end and upto is not None and key > upto:
        raise FormatError(f"{where}: its last key {_short(key)} sorts after the index "
                          f"block's bound for it, {_short(upto)} (keys out of order)")


# --- fast paths for blocks as TensorFlow writes them ---------------------------
# The decoders above handle every input, one varint at a time. A block written
# by TensorFlow has one-byte framing varints (keys and values under 128 bytes)
# and entries of one form: dtype, shape, then numbers. The functions below
# handle exactly that case with far fewer Python operations, and say so by
# their result; anything else (long keys, partitioned tensors, damage) goes to
# the general decoders, so results and errors are always theirs.

# The fields of a BundleEntryProto after its dtype and shape, as TensorFlow
# writes them: shard id, offset, size (varints of at most 10 bytes, what
# _varint accepts) and the crc32c (fixed32); none changes dtype or shape.
# As bytes: (?:[\x18\x20\x28][\x80-\xff]{0,9}[\x00-\x7f]|\x35[\x00-\xff]{4})*.
# Whether bytes match that depends only on each byte's class: a varint tag
# (V), the crc32c's tag (F), another byte under 0x80 (e) or one from 0x80
# (c). Entries' numbers differ, their strings of classes mostly not, so the
# listing matches each distinct class string once.
_NUMBER_CLASSES = b"".join(b"V" if i in (0x18, 0x20, 0x28) else b"F" if i == 0x35
                           else b"e" if i < 0x80 else b"c" for i in range(256))
_NUMBERS_BY_CLASS = re.compile(rb"(?:Vc{0,9}[VFe]|F[VFec]{4})*")
# For index_entries, numbers that pass BundleReader's checks at a glance: no
# shard id (so shard 0; the tag 0x18 gets a class of its own, S) and no
# ten-byte varint (the only way to a negative offset or size).
_SHARD0_CLASSES = _NUMBER_CLASSES[:0x18] + b"S" + _NUMBER_CLASSES[0x19:]
_SHARD0_NUMBERS = re.compile(rb"(?:Vc{0,8}[SVFe]|F[SVFec]{4})*")


# Blocks up to this size keep their framing for the listing that follows
# (`_last_framed`); bigger ones are framed again, not held twice.
_FRAMED_MAX = 1 << 20
# (bytes, _framed_fast's records) of the block check_block_keys passed last:
# the table checks every block before a listing reads it, so the listing can
# skip framing it again. Bytes, not the block: a view would keep the file's
# map alive after its reader is closed.
_last_framed = (None, None)


def _framed_fast(b, end, after, upto, max_key_bytes, max_block_key_bytes):
    """[(key, value start, value end)] of every entry of `b` (bytes; `end`
    from _restarts) when check_block_keys would pass it; None when this loop
    cannot tell (then the general one decides).

    With one-byte varints a key has at most 254 bytes, and an entry at least
    3, so the limits on keys cannot be reached unless they are set below what
    the block's size allows; then the general loop checks them key by key."""
    if ((max_key_bytes is not None and max_key_bytes < 254)
            or (max_block_key_bytes is not None and end // 3 * 254 > max_block_key_bytes)):
        return None
    pos = 0
    key = b""
    before = b"" if after is None else after
    records = []
    add = records.append
    while pos < end:
        shared = b[pos]
        non_shared = b[pos + 1]
        value_len = b[pos + 2]
        if (shared | non_shared | value_len) >= 0x80 or shared > len(key):
            return None
        start = pos + 3
        value = start + non_shared
        pos = value + value_len
        if pos > end:
            return None
        key = key[:shared] + b[start:value]
        # The first key may be b"" (the header) unless it must follow `after`.
        if key <= before and (start != 3 or after is not None):
            return None
        before = key
        add((key, value, pos))
    if end and upto is not None and key > upto:
        return None
    return records


def _tensor_heads_fast(block, where, classes=_NUMBER_CLASSES, numbers_form=_NUMBERS_BY_CLASS,
                       whole=False):
    """(names, [(dtype enum, shape)]) of a block's tensor entries, as
    decode_entries would give them; None when it cannot tell, or when an
    entry's numbers (as `classes`) do not match `numbers_form`. With `whole`,
    each entry's whole decode_entry tuple instead of its first two items."""
    b = block if type(block) is bytes else bytes(block)
    framed, records = _last_framed
    if framed is not b and framed != b:
        end, _ = _restarts(b, where)
        records = _framed_fast(b, end, None, None, None, None)
        if records is None:
            return None
    classes = b.translate(classes)
    numbers = {}   # class string of an entry's numbers -> _number_fields, or False: no parse
    heads = {}   # dtype and shape bytes -> decoded; tensors share a few shapes
    names, found = [], []
    for key, value, end in records:
        if not key or key[0] == 0:   # the header, a slice key: not listed
            continue
        # dtype (field 1) and shape (field 2) with one-byte varints, then
        # numbers. If the entry has that form, its byte 3 is the shape's
        # length; each distinct head is checked for the form once.
        shape_end = value + 4 + b[value + 3]
        if shape_end > end:
            return None
        head = b[value:shape_end]
        decoded = heads.get(head)
        if decoded is None:
            if head[0] != 0x08 or head[2] != 0x12 or (head[1] | head[3]) >= 0x80:
                return None
            try:
                decoded = heads[head] = decode_entry(head, where)[:2]
            except FormatError:
                return None
        form = classes[shape_end:end]
        fields = numbers.get(form, numbers)   # (the dict itself: not seen yet)
        if fields is numbers:
            fields = numbers[form] = (_number_fields(form) if numbers_form.fullmatch(form)
                                      else False)
        if fields is False:
            return None
        names.append(key)
        if not whole:
            found.append(decoded)
        elif fields is not None:   # an entry with its numbers as TensorFlow writes them
            found.append(decoded + _numbers(b, shape_end, fields) + ((),))
        else:   # a ten-byte varint: decode_entry says what it means
            name = key.decode("utf-8", "surrogateescape")
            found.append(decode_entry(b[value:end], f"{where}: entry {name!r}"))
    return [k.decode("utf-8", "surrogateescape") for k in names], found


def _number_fields(form):
    """[(offset, bytes)] of the fields in an entry's numbers of class string
    `form` (one that _NUMBERS_BY_CLASS matches): a tag byte, then 4 bytes of
    crc32c or a varint. None (decode the entry the general way) when a
    varint has ten bytes, the only ones that can go past 2**63."""
    fields = []
    pos = 0
    while pos < len(form):
        if form[pos] == ord("F"):
            width = 4
        else:
            width = 1
            while form[pos + width] == ord("c"):
                width += 1
            if width == 10:
                return None
        fields.append((pos, width))
        pos += 1 + width
    return fields


def _numbers(b, at, fields):
    """(shard id, offset, size, crc32c) from the fields `_number_fields` found
    at b[at:]: the last of a repeated field wins, as in decode_entry."""
    shard = offset = size = crc = 0
    for pos, width in fields:
        pos += at
        tag = b[pos]
        if tag == 0x35:
            crc = _U32.unpack_from(b, pos + 1)[0]
            continue
        value = 0
        for k in range(width):
            value |= (b[pos + 1 + k] & 0x7F) << (7 * k)
        if tag == 0x18:
            shard = value
        elif tag == 0x20:
            offset = value
        else:
            size = value
    return shard, offset, size, crc


def block_seek(block, target, where):
    """(key, value) of the first entry whose key is >= `target`, or None."""
    end, restarts = _restarts(block, where)
    if end == 0:
        return None
    # Binary search over restart points (their keys are stored whole).
    lo, hi = 0, len(restarts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        key, _, _, _ = _entry_at(block, restarts[mid], end, b"", where)
        if key < target:
            lo = mid
        else:
            hi = mid - 1
    pos = restarts[lo]
    key = b""
    while pos < end:
        key, vstart, vend, pos = _entry_at(block, pos, end, key, where)
        if key >= target:
            return key, bytes(block[vstart:vend])
    return None


# --- BundleEntryProto --------------------------------------------------------

def _skip_field(buf, pos, end, wire, where):
    if wire == 0:
        return _varint(buf, pos, end, where)[1]
    if wire == 1:
        pos += 8
    elif wire == 2:
        n, pos = _varint(buf, pos, end, where)
        pos += n
    elif wire == 5:
        pos += 4
    else:
        raise FormatError(f"{where}: unsupported protobuf wire type {wire}")
    if pos > end:
        raise FormatError(f"{where}: protobuf field runs past the end of its message")
    return pos


def _signed64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _decode_shape(buf, pos, end, where):
    """TensorShapeProto -> tuple of dims, or None for unknown rank."""
    dims = []
    unknown = False
    while pos < end:
        tag, pos = _varint(buf, pos, end, where)
        field, wire = tag >> 3, tag & 7
        if field == 2 and wire == 2:
            n, pos = _varint(buf, pos, end, where)
            dend = pos + n
            if dend > end:
                raise FormatError(f"{where}: shape dimension runs past its message")
            size = 0
            while pos < dend:
                t, pos = _varint(buf, pos, dend, where)
                if t == 8:
                    v, pos = _varint(buf, pos, dend, where)
                    size = _signed64(v)
                else:
                    pos = _skip_field(buf, pos, dend, t & 7, where)
            dims.append(size)
        elif field == 3 and wire == 0:
            v, pos = _varint(buf, pos, end, where)
            unknown = bool(v)
        else:
            pos = _skip_field(buf, pos, end, wire, where)
    return None if unknown else tuple(dims)


def _decode_slice(buf, pos, end, where):
    """TensorSliceProto -> tuple of (start, length); length -1 means full."""
    extents = []
    while pos < end:
        tag, pos = _varint(buf, pos, end, where)
        if tag == 0x0A:
            n, pos = _varint(buf, pos, end, where)
            eend = pos + n
            if eend > end:
                raise FormatError(f"{where}: slice extent runs past its message")
            start, length = 0, -1
            while pos < eend:
                t, pos = _varint(buf, pos, eend, where)
                if t == 8:
                    v, pos = _varint(buf, pos, eend, where)
                    start = _signed64(v)
                elif t == 16:
                    v, pos = _varint(buf, pos, eend, where)
                    length = _signed64(v)
                else:
                    pos = _skip_field(buf, pos, eend, t & 7, where)
            extents.append((start, length))
        else:
            pos = _skip_field(buf, pos, end, tag & 7, where)
    return tuple(extents)


def decode_entry(buf, where):
    """BundleEntryProto bytes -> (dtype, shape, shard_id, offset, size, crc32c, slices).

    `shape` is a tuple (None for unknown rank); `slices` a tuple of slice
    tuples as returned for TensorSliceProto. Numbers are not range-checked
    here; the bundle layer checks them against the files.
    """
    dtype = shard_id = offset = size = crc = 0
    shape = ()
    slices = []
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos, end, where)
        field, wire = tag >> 3, tag & 7
        if wire == 0 and field in (1, 3, 4, 5):
            v, pos = _varint(buf, pos, end, where)
            if field == 1:
                dtype = v & 0xFFFFFFFF
            elif field == 3:
                shard_id = _signed64(v)
            elif field == 4:
                offset = _signed64(v)
            else:
                size = _signed64(v)
        elif wire == 5 and field == 6:
            if pos + 4 > end:
                raise FormatError(f"{where}: crc32c field runs past the end of the entry")
            crc = _U32.unpack_from(buf, pos)[0]
            pos += 4
        elif wire == 2 and field in (2, 7):
            n, pos = _varint(buf, pos, end, where)
            if pos + n > end:
                raise FormatError(f"{where}: field {field} runs past the end of the entry")
            if field == 2:
                shape = _decode_shape(buf, pos, pos + n, where)
            else:
                slices.append(_decode_slice(buf, pos, pos + n, where))
            pos += n
        else:
            pos = _skip_field(buf, pos, end, wire, where)
    return dtype, shape, shard_id, offset, size, crc, tuple(slices)


def decode_entries(block, where):
    """decode_entry of every tensor entry of a block: a list of (name, entry tuple).

    Names are str (UTF-8, undecodable bytes kept by surrogateescape). The
    header entry (key b"") and slice keys (first byte 0) are skipped; errors
    in an entry name it after `where`.
    """
    fast = _tensor_heads_fast(block, where, whole=True)
    if fast is not None:   # a block as TensorFlow writes it
        return list(zip(*fast))
    return _decode_entries_general(block, where)


def _decode_entries_general(block, where):
    """decode_entries for any block, one entry at a time."""
    out = []
    for key, value in block_entries(block, where):
        if key[:1] != b"" and key[:1] != b"\x00":
            name = key.decode("utf-8", "surrogateescape")
            out.append((name, decode_entry(value, f"{where}: entry {name!r}")))
    return out


def index_listing(block, where, shapes, dtypes, table):
    """Add every tensor entry of a block to the listing maps: `shapes[name]` =
    list(shape) (None for unknown rank), `dtypes[name]` = table[dtype enum].

    What decode_entries would give, with the same checks and errors, without
    building the rest of each entry; KeyError when an enum is not in `table`.
    After an exception the maps may hold some of the block's entries.
    """
    fast = _tensor_heads_fast(block, where)
    if fast is not None:
        for name, (enum, shape) in zip(*fast):
            shapes[name] = None if shape is None else list(shape)
            dtypes[name] = table[enum]
        return
    for name, entry in _decode_entries_general(block, where):   # the fast path failed
        shapes[name] = None if entry[1] is None else list(entry[1])
        dtypes[name] = table[entry[0]]


def entry_map(decoded, cls, table):
    """{name: cls(name, table[dtype enum], shape, shard_id, offset, size, crc32c,
    slices)} of decode_entries' pairs, unchecked (`BundleReader.entries`); `cls`
    is a tuple subclass such as `bundle.Entry`. KeyError for an enum not in `table`."""
    make = tuple.__new__   # cheaper than calling the namedtuple
    return {name: make(cls, (name, table[enum], shape, shard, offset, size, crc, parts))
            for name, (enum, shape, shard, offset, size, crc, parts) in decoded}


def index_entries(block, where, infos, table, num_shards):
    """Add every tensor entry of a block to `infos`, in key order: name ->
    (table[dtype enum], shape tuple) for a plain tensor whose entry passes
    `BundleReader`'s checks (known dtype, known rank, no negative dimension,
    offset or size, shard id in 0..num_shards-1), else None (a partitioned or
    damaged entry: lookups of it take the path that builds and checks the
    whole entry). Decoding errors are decode_entries'.

    What a reader's per-name calls (`shape`, `dtype`, `in`, iteration, `len`)
    answer from, filled in one pass instead of one lookup per name.
    """
    num_shards = operator.index(num_shards)
    fast = num_shards > 0 and _tensor_heads_fast(block, where, _SHARD0_CLASSES, _SHARD0_NUMBERS)
    if fast:   # every entry as TensorFlow writes it, in shard 0, offset and size >= 0
        heads = ((name, enum, shape, True) for name, (enum, shape) in zip(*fast))
    else:
        heads = ((name, enum, shape, not parts and 0 <= shard < num_shards and offset >= 0
                  and size >= 0)
                 for name, (enum, shape, shard, offset, size, _, parts)
                 in decode_entries(block, where))
    last = None
    for name, enum, shape, numbers_pass in heads:
        info = None
        if numbers_pass and shape is not None and min(shape, default=0) >= 0:
            kind = table.get(enum)
            if kind is not None:
                # Runs of one dtype and shape share a tuple (as the native twin does).
                info = last if last is not None and last[0] is kind and last[1] == shape \
                    else (kind, shape)
                last = info
        infos[name] = info


def index_shapes(block, where, pairs):
    """Append (name, list(shape), None for unknown rank) of every tensor entry
    of a block to `pairs`, in key order; the checks and errors are
    decode_entries'. Returns whether every name was ASCII: then the pairs are
    in the order `sorted()` gives them too (what `list_variables` returns).
    """
    ascii = True
    fast = _tensor_heads_fast(block, where)
    if fast is not None:
        names, heads = fast
        pairs += [(name, None if shape is None else list(shape))
                  for name, (_, shape) in zip(names, heads)]
        return "".join(names).isascii()
    for name, entry in _decode_entries_general(block, where):   # the fast path failed
        pairs.append((name, None if entry[1] is None else list(entry[1])))
        ascii = ascii and name.isascii()
    return ascii


# --- DT_STRING tensors --------------------------------------------------------

def _length_crc_bytes(length):
    return _U32.pack(length) if length <= 0xFFFFFFFF else _U64.pack(length)


def decode_strings(buf, count, big_endian, verify, where):
    """Decode a DT_STRING tensor's bytes into a list of `count` bytes objects.

    Returns (values, crc) where crc is the unmasked CRC-32C TensorFlow stores
    for the whole tensor (0 when `verify` is false). The length checksum is
    verified when `verify` is true.
    """
    end = len(buf)
    if count > end:
        raise FormatError(f"{where}: {count} strings cannot fit in {end} bytes")
    lengths = []
    pos = 0
    for _ in range(count):
        n, pos = _varint(buf, pos, end, where)
        lengths.append(n)
    if pos + 4 > end:
        raise FormatError(f"{where}: string tensor ends before its length checksum at offset {pos}")
    stored = bytes(buf[pos:pos + 4])
    pos += 4
    total = sum(lengths)
    if total > end - pos:
        raise FormatError(f"{where}: string lengths add up to {total} bytes but only "
                          f"{end - pos} remain at offset {pos}")
    crc = 0
    if verify:
        for n in lengths:
            # The CRC covers each length as fixed-width host-order bytes.
            raw = _length_crc_bytes(n)
            crc = crc32c(raw[::-1] if big_endian else raw, crc)
        stored_value = struct.unpack(">I" if big_endian else "<I", stored)[0]
        if unmask_crc(stored_value) != crc:
            raise ChecksumError(f"{where}: string length checksum mismatch at offset {pos - 4}")
        crc = crc32c(stored, crc)
    values = []
    for n in lengths:
        values.append(bytes(buf[pos:pos + n]))
        pos += n
    if verify:
        crc = crc32c(buf[pos - total:pos], crc)
    return values, crc


def encode_strings(values):
    """DT_STRING tensor bytes for `values` (bytes objects), and their masked CRC."""
    lengths = b"".join(encode_varint(len(v)) for v in values)
    crc = 0
    for v in values:
        crc = crc32c(_length_crc_bytes(len(v)), crc)
    checksum = _U32.pack(mask_crc(crc))
    body = b"".join(values)
    crc = crc32c(body, crc32c(checksum, crc))
    return lengths + checksum + body, mask_crc(crc)
