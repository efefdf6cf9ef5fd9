"""The hot paths: known answers for both implementations, and parity of the
compiled module `tfformats._native` with its pure-Python twin `tfformats._pure`.

Parity means: for the same input both return equal results, or both raise an
exception of the same type (and, for tfformats' own errors, the same message).
Inputs include real index blocks written by TensorFlow, blocks built here,
hypothesis-generated data and deliberately damaged bytes.
"""

import bisect
import pathlib
import mmap
import random
import struct
import types

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tfformats import _pure
from tfformats.errors import ChecksumError, FormatError, LimitError

from conftest import FIXTURES

try:
    from tfformats import _native
except ImportError:
    _native = None

needs_native = pytest.mark.skipif(_native is None, reason="native extension not built")
IMPLEMENTATIONS = [pytest.param(_pure, id="python"),
                   pytest.param(_native, id="native", marks=needs_native)]
PARITY = settings(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- helpers -------------------------------------------------------------------------


def outcome(function, *args):
    """What a call did: ("ok", result) or ("raised", type, message)."""
    try:
        return ("ok", function(*args))
    except FormatError as exc:      # ours: the message is part of the contract
        return ("raised", type(exc), str(exc))
    except Exception as exc:        # built-in errors: the type is
        return ("raised", type(exc), None)


def assert_parity(name, *args):
    """Both implementations of `name` do the same thing with `args`; returns it."""
    expected = outcome(getattr(_pure, name), *args)
    actual = outcome(getattr(_native, name), *args)
    assert actual == expected, f"{name}: native {actual!r} != python {expected!r}"
    return expected


varint = _pure.encode_varint


def build_block(items, restart_interval=16):
    """A table block as TensorFlow's BlockBuilder writes it, from sorted (key, value)."""
    body = bytearray()
    restarts = []
    previous = b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(body))
        else:
            limit = min(len(previous), len(key))
            while shared < limit and previous[shared] == key[shared]:
                shared += 1
        body += varint(shared) + varint(len(key) - shared) + varint(len(value))
        body += key[shared:] + value
        previous = key
    restarts = restarts or [0]
    return bytes(body) + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))


def tag(field, wire):
    return varint(field << 3 | wire)


def int_field(field, value):
    return tag(field, 0) + varint(value & 0xFFFFFFFFFFFFFFFF)


def message_field(field, payload):
    return tag(field, 2) + varint(len(payload)) + payload


def bundle_entry(dtype=1, shape=(), shard_id=0, offset=0, size=0, crc=0, slices=(),
                 unknown_rank=False, extra=b""):
    """A serialized BundleEntryProto; `slices` holds tuples of (start, length or -1)."""
    dims = b"".join(message_field(2, int_field(1, d) if d else b"") for d in shape)
    if unknown_rank:
        dims += int_field(3, 1)
    out = int_field(1, dtype) + message_field(2, dims)
    if shard_id:
        out += int_field(3, shard_id)
    out += int_field(4, offset) + int_field(5, size) + tag(6, 5) + struct.pack("<I", crc)
    for extents in slices:
        out += message_field(7, b"".join(
            message_field(1, int_field(1, s) + (int_field(2, n) if n >= 0 else b""))
            for s, n in extents))
    return out + extra


def table_blocks(data):
    """Every block (index block first, then data blocks) of a table file."""
    view = memoryview(data)
    footer = data[-48:]
    _, pos = _pure.decode_varint(footer, 0, "footer")
    _, pos = _pure.decode_varint(footer, pos, "footer")
    offset, pos = _pure.decode_varint(footer, pos, "footer")
    size, _ = _pure.decode_varint(footer, pos, "footer")
    index = bytes(view[offset:offset + size])
    blocks = [index]
    for _, handle in _pure.block_entries(index, "index"):
        offset, pos = _pure.decode_varint(handle, 0, "handle")
        size, _ = _pure.decode_varint(handle, pos, "handle")
        blocks.append(bytes(view[offset:offset + size]))
    return blocks


REAL_BLOCKS = [block for path in sorted(FIXTURES.glob("**/*.index"))
               for block in table_blocks(path.read_bytes())]


def names(count, seed=0):
    """Sorted, unique, prefix-sharing keys like a checkpoint's."""
    rng = random.Random(seed)
    keys = {b""}
    while len(keys) < count:
        layer = rng.randrange(count)
        keys.add(f"model/layer_with_weights-{layer}/{rng.choice(['kernel', 'bias'])}"
                 f"/.ATTRIBUTES/VARIABLE_VALUE".encode())
    return sorted(keys)


def checkpoint_block(count=200, seed=0, restart_interval=16):
    rng = random.Random(seed)
    items = []
    for key in names(count, seed):
        if not key:
            items.append((key, b"\x08\x01\x1a\x02\x08\x01"))     # the bundle header
        else:
            shape = tuple(rng.randrange(1, 5000) for _ in range(rng.randrange(0, 4)))
            items.append((key, bundle_entry(rng.choice([1, 2, 3, 7, 9]), shape, 0,
                                            rng.randrange(1 << 40), rng.randrange(1 << 30),
                                            rng.getrandbits(32))))
    return items, build_block(items, restart_interval)


def damaged(data, rng, edits=3):
    """`data` with a few random byte flips, truncations, insertions and deletions."""
    data = bytearray(data)
    for _ in range(edits):
        kind = rng.randrange(5)
        at = rng.randrange(len(data) + 1)
        if kind == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1 and data:
            data[min(at, len(data) - 1)] = rng.choice([0x00, 0x7F, 0x80, 0xFF])
        elif kind == 2:
            del data[at:]
        elif kind == 3:
            data[at:at] = bytes(rng.choice([0x80, 0xFF, 0x01]) for _ in range(rng.randrange(1, 12)))
        else:
            del data[at:at + rng.randrange(1, 8)]
    return bytes(data)


# --- the module surface ------------------------------------------------------------------


@needs_native
def test_native_exports_every_function_of_the_twin_with_its_signature():
    import inspect
    for name in dir(_pure):
        value = getattr(_pure, name)
        if name.startswith("_") or inspect.ismodule(value) or inspect.isclass(value):
            continue
        assert hasattr(_native, name), name
        if callable(value):
            assert (inspect.signature(getattr(_native, name)) == inspect.signature(value)), name
        else:
            assert getattr(_native, name) == value, name


@needs_native
def test_the_errors_are_shared():
    assert _native.FormatError is FormatError and _native.ChecksumError is ChecksumError


# --- known answers, both implementations ---------------------------------------------------


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_crc32c_known_answers(hot):
    assert hot.crc32c(b"123456789") == 0xE3069283
    assert hot.crc32c(b"") == 0
    assert hot.crc32c(b"6789", hot.crc32c(b"12345")) == 0xE3069283
    assert hot.mask_crc(0) == hot.MASK_DELTA == 0xA282EAD8
    assert hot.unmask_crc(0xA282EAD8) == 0
    assert hot.unmask_crc(hot.mask_crc(0xE3069283)) == 0xE3069283


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_string_tensor_known_bytes(hot):
    data, crc = hot.encode_strings([b"ab", b"", b"xyz"])
    assert data == bytes.fromhex("020003" "1b428bca" "616278797a")
    values, unmasked = hot.decode_strings(data, 3, False, True, "t")
    assert values == [b"ab", b"", b"xyz"]
    assert hot.mask_crc(unmasked) == crc == hot.mask_crc(hot.crc32c(bytes.fromhex(
        "02000000" "00000000" "03000000" "1b428bca" "6162" "78797a")))
    assert hot.encode_strings([]) == (bytes.fromhex("d8ea82a2"), hot.mask_crc(
        hot.crc32c(bytes.fromhex("d8ea82a2"))))


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_varint_known_answers(hot):
    assert hot.encode_varint(300) == b"\xac\x02"
    assert hot.decode_varint(b"\x00\xac\x02", 1, "v") == (300, 3)
    assert hot.decode_varint(b"\xff" * 9 + b"\x01", 0, "v") == ((1 << 64) - 1, 10)
    with pytest.raises(FormatError, match=r"^v: varint runs past the end .* offset 1$"):
        hot.decode_varint(b"\x80", 0, "v")
    with pytest.raises(FormatError, match="longer than 10 bytes at offset 10"):
        hot.decode_varint(b"\x80" * 11, 0, "v")


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_block_round_trip(hot):
    items, block = checkpoint_block(300, seed=3)
    assert hot.block_entries(block, "b") == items
    for key, value in items:
        assert hot.block_seek(block, key, "b") == (key, value)
        assert hot.block_seek(block, key + b"\x00", "b") == next(
            ((k, v) for k, v in items if k > key), None)
    assert hot.block_seek(block, b"\xff", "b") is None
    entries = hot.decode_entries(block, "b")
    assert [k.encode() for k, _ in entries] == [k for k, _ in items if k]
    assert all(entry == hot.decode_entry(dict(items)[k.encode()], "e") for k, entry in entries)


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_decode_entry_fields(hot):
    raw = bundle_entry(dtype=7, shape=(2, 0, 5), shard_id=2, offset=1 << 40, size=12,
                       crc=0xDEADBEEF, slices=[((0, 1), (0, -1), (3, 2))],
                       extra=message_field(15, b"junk") + int_field(16, 5))
    assert hot.decode_entry(raw, "e") == (7, (2, 0, 5), 2, 1 << 40, 12, 0xDEADBEEF,
                                          (((0, 1), (0, -1), (3, 2)),))
    assert hot.decode_entry(bundle_entry(shape=(3,), unknown_rank=True), "e")[1] is None
    assert hot.decode_entry(bundle_entry(offset=-5), "e")[3] == -5
    assert hot.decode_entry(b"", "e") == (0, (), 0, 0, 0, 0, ())


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_decode_entries_skips_header_and_slices_and_names_the_entry(hot):
    items = [(b"", b"\x08\x01"), (b"\x00slice", b"\xff\xff"), (b"a", bundle_entry(shape=(4,))),
             (b"b\xff", bundle_entry() + b"\x0b")]          # wire type 3: unsupported
    with pytest.raises(FormatError, match=r"^blk: entry 'b\\udcff': unsupported protobuf wire type 3$"):
        hot.decode_entries(build_block(items), "blk")
    assert hot.decode_entries(build_block(items[:3]), "blk") == [
        ("a", hot.decode_entry(items[2][1], ""))]


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_real_index_blocks(hot):
    assert REAL_BLOCKS, "no .index fixtures found"
    for block in REAL_BLOCKS:
        items = hot.block_entries(block, "real")
        keys = [k for k, _ in items]
        assert keys == sorted(set(keys))
        for key, value in items[::7]:
            assert hot.block_seek(memoryview(block), key, "real") == (key, value)


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_string_checksum_mismatch(hot):
    data = bytearray(hot.encode_strings([b"ab", b"cd"])[0])
    data[0] = 3                       # lengths now 3 + 2: still fits, checksum is wrong
    data += b"\x00"
    with pytest.raises(ChecksumError, match="at offset 2$"):
        hot.decode_strings(bytes(data), 2, False, True, "s")
    # Without verification the (wrong) lengths are taken as they are.
    assert hot.decode_strings(bytes(data), 2, False, False, "s") == ([b"abc", b"d\x00"], 0)


# --- parity: CRC ---------------------------------------------------------------------------


@needs_native
@pytest.mark.parametrize("hardware", [True, False], ids=["best", "table"])
def test_crc32c_parity_all_sizes_and_alignments(hardware):
    """Every size and alignment around the stream and block boundaries of the C code."""
    data = random.Random(1).randbytes(2 * 98304 + 12288 + 1000)
    tiers = (768, 12288, 98304)   # 3 streams x 256 B, 4 KiB, 32 KiB in native/crc32c.h
    sizes = set(range(0, 80)) | {len(data) - 8, 98304 + 12288 + 768 + 7}
    for tier in tiers:
        sizes |= {tier - 1, tier, tier + 1, 2 * tier + 5, tier + 767}
    try:
        _native._crc32c_use_hardware(hardware)
        for size in sorted(sizes):
            for offset in (0, 1, 5, 7):
                chunk = data[offset:offset + size]
                for value in (0, 1, 0xFFFFFFFF, 0x12345678):
                    assert _native.crc32c(chunk, value) == _pure.crc32c(chunk, value), (size, offset)
    finally:
        _native._crc32c_use_hardware(True)


@needs_native
def test_crc32c_parity_buffer_kinds_and_values(tmp_path):
    import numpy as np
    data = bytes(range(256)) * 1000
    path = tmp_path / "blob"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        kinds = [data, bytearray(data), memoryview(data), memoryview(data)[3:-5],
                 memoryview(mapped), memoryview(mapped)[100:70000], mapped,
                 np.frombuffer(data, dtype=np.uint32), b""]
        for buf in kinds:
            for value in (0, 7, (1 << 32) + 5, -1, 1 << 64, True):
                assert_parity("crc32c", buf, value)
        del kinds
    for bad in ("text", memoryview(data)[::2], 5, None):
        assert_parity("crc32c", bad)
    assert_parity("crc32c", b"x", 1.5)
    assert_parity("crc32c", b"x", None)


@needs_native
def test_crc32c_from_threads():
    """Large buffers are checksummed without the GIL; results must not mix up."""
    from concurrent.futures import ThreadPoolExecutor
    rng = random.Random(2)
    buffers = [bytearray(rng.randbytes(1 << 20)) for _ in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: [_native.crc32c(b) for _ in range(5)], buffers))
    assert results == [[_pure.crc32c(b)] * 5 for b in buffers]


@needs_native
@given(st.binary(max_size=5000), st.integers(0, 0xFFFFFFFF))
@PARITY
def test_crc32c_parity_random(data, value):
    assert _native.crc32c(data, value) == _pure.crc32c(data, value)


@needs_native
@given(st.integers(-(1 << 70), 1 << 70))
@PARITY
def test_mask_parity(value):
    assert_parity("mask_crc", value)
    assert_parity("unmask_crc", value)
    assert_parity("mask_crc", value & 0xFFFFFFFF)
    assert_parity("unmask_crc", value & 0xFFFFFFFF)


# --- parity: varints ------------------------------------------------------------------------


VARINT_CASES = [b"", b"\x00", b"\x7f", b"\x80", b"\x80\x01", b"\xff" * 9 + b"\x01",
                b"\xff" * 9 + b"\x7f", b"\xff" * 10 + b"\x01", b"\x80" * 10 + b"\x00",
                b"\x80" * 11, b"\xff" * 20, b"\x01\x02\x03"]


@needs_native
@pytest.mark.parametrize("buf", VARINT_CASES)
def test_decode_varint_parity_edges(buf):
    for pos in (0, 1, 2, 9, 10, 11, 50, -1, -2, -len(buf) or -1, -len(buf) - 1, 1 << 70, -(1 << 70)):
        for kind in (bytes, bytearray, memoryview):
            assert_parity("decode_varint", kind(buf), pos, "where")


@needs_native
@given(st.binary(max_size=30), st.integers(-40, 40))
@PARITY
def test_decode_varint_parity_random(buf, pos):
    assert_parity("decode_varint", buf, pos, "w")


@needs_native
@given(st.one_of(st.integers(0, 1 << 80), st.integers(-5, 300),
                 st.sampled_from([(1 << 64) - 1, 1 << 64, True, 1.5, -1])))
@PARITY
def test_encode_varint_parity(value):
    result = assert_parity("encode_varint", value)
    if result[0] == "ok" and type(value) is int and 0 <= value < 1 << 70:   # fits 10 bytes
        assert _native.decode_varint(result[1], 0, "w") == (value, len(result[1]))


# --- parity: blocks --------------------------------------------------------------------------


def block_parity(block, targets=(), where="tbl.index: data block at offset 9"):
    assert_parity("block_entries", block, where)
    assert_parity("decode_entries", block, where)
    for target in targets:
        assert_parity("block_seek", block, target, where)
    for after, upto in [(None, None), *zip((None, *targets), (*targets, None))]:
        assert_parity("check_block_keys", block, where, after, upto)


@needs_native
def test_block_parity_real_blocks_intact_and_damaged():
    rng = random.Random(7)
    for block in REAL_BLOCKS:
        keys = [k for k, _ in _pure.block_entries(block, "b")]
        targets = [b"", b"\xff"] + rng.sample(keys, min(5, len(keys))) + [k + b"!" for k in keys[:3]]
        block_parity(block, targets)
        block_parity(memoryview(block), targets[:3])
        for _ in range(60):
            block_parity(damaged(block, rng, rng.randrange(1, 4)), targets[:4])


@needs_native
def test_block_parity_built_blocks_damaged():
    rng = random.Random(11)
    for seed, interval in ((1, 16), (2, 1), (3, 4)):
        items, block = checkpoint_block(120, seed=seed, restart_interval=interval)
        keys = [k for k, _ in items]
        targets = [b"", b"m", b"\xff"] + rng.sample(keys, 6)
        block_parity(block, targets)
        block_parity(bytearray(block), targets)
        for _ in range(250):
            block_parity(damaged(block, rng, rng.randrange(1, 5)), targets[:5])


def restarts_tail(*offsets, count=None):
    return struct.pack(f"<{len(offsets)}I", *offsets) + struct.pack(
        "<I", len(offsets) if count is None else count)


HOSTILE_BLOCKS = [
    b"", b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x00",
    restarts_tail(count=0xFFFFFFFF),                        # restart count too big
    b"\x00" * 8 + restarts_tail(0, count=3),                # count > what fits
    restarts_tail(0),                                       # empty block
    restarts_tail(0, 0),
    b"\x00\x01\x01ab" + restarts_tail(5),                   # restart past the entries
    b"\x00\x01\x01ab" + restarts_tail(4),                   # restart inside an entry
    b"\x00\x01\x01ab" + restarts_tail(0, 3),
    b"\x05\x01\x01ab" + restarts_tail(0),                   # shared > previous key
    b"\x00\x01\x01ab\x02\x01\x01cd" + restarts_tail(0),     # shared > previous key (1 byte)
    b"\x00\x01\x01ab\x01\x01\x01cd" + restarts_tail(0),     # valid prefix sharing
    b"\x00\x01\x09ab" + restarts_tail(0),                   # value past the end
    b"\x00\x09\x01ab" + restarts_tail(0),                   # key past the end
    b"\x00\xff\xff\xff\xff\x0f\x01ab" + restarts_tail(0),   # huge non-shared length
    b"\x00\x01" + b"\xff" * 9 + b"\x7fab" + restarts_tail(0),   # value length >= 2**64
    b"\xff" * 9 + b"\x7f\x01\x01ab" + restarts_tail(0),     # shared >= 2**64
    b"\x80" * 11 + restarts_tail(0),                        # varint too long
    b"\x00\x80" + restarts_tail(0),                         # varint cut by the restarts
    b"\x00\x00\x00" * 3 + restarts_tail(0, 3, 6),           # empty keys
]


@needs_native
@pytest.mark.parametrize("block", HOSTILE_BLOCKS)
def test_block_parity_hostile(block):
    block_parity(block, [b"", b"a", b"ab", b"b", b"\xff"])


@needs_native
@given(st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=20)), max_size=60),
       st.integers(1, 20), st.lists(st.binary(max_size=12), max_size=5))
@PARITY
def test_block_parity_random_round_trip(pairs, interval, targets):
    items = sorted(dict(pairs).items())
    block = build_block(items, interval)
    assert _native.block_entries(block, "b") == items
    keys = [k for k, _ in items]
    for target in targets + keys[:3]:
        i = bisect.bisect_left(keys, target)
        expected = items[i] if i < len(items) else None
        assert _native.block_seek(block, target, "b") == expected
        assert_parity("block_seek", block, target, "b")
    assert_parity("decode_entries", block, "b")


@needs_native
@given(st.binary(max_size=200), st.lists(st.binary(max_size=6), max_size=3))
@PARITY
def test_block_parity_random_bytes(body, targets):
    for tail in (b"", restarts_tail(0), restarts_tail(0, len(body) // 2), restarts_tail(len(body))):
        block_parity(body + tail, targets)


@needs_native
@given(st.data())
@PARITY
def test_block_parity_random_damage(data):
    items, block = checkpoint_block(40, seed=data.draw(st.integers(0, 5)))
    rng = random.Random(data.draw(st.integers(0, 1 << 32)))
    block_parity(damaged(block, rng, data.draw(st.integers(1, 6))), [b"", b"model/layer_with_weights-3"])


@needs_native
def test_block_seek_target_types():
    items, block = checkpoint_block(30)
    for target in (b"model/", bytearray(b"model/"), "model/", memoryview(b"model/"), None):
        if isinstance(target, (bytes, bytearray)):
            assert_parity("block_seek", block, target, "b")
        else:   # both refuse to compare keys with it
            with pytest.raises(TypeError):
                _native.block_seek(block, target, "b")
            with pytest.raises(TypeError):
                _pure.block_seek(block, target, "b")


# --- parity: entries --------------------------------------------------------------------------


dims = st.integers(-(1 << 63), (1 << 63) - 1)
entries = st.builds(
    bundle_entry, dtype=st.integers(0, 1 << 40), shape=st.lists(dims, max_size=10).map(tuple),
    shard_id=dims, offset=dims, size=dims, crc=st.integers(0, 0xFFFFFFFF),
    slices=st.lists(st.lists(st.tuples(dims, st.integers(-1, 1 << 40)), max_size=4), max_size=3),
    unknown_rank=st.booleans(), extra=st.binary(max_size=8))


@needs_native
@given(entries)
@PARITY
def test_decode_entry_parity_random(raw):
    assert_parity("decode_entry", raw, "e")
    assert_parity("decode_entry", memoryview(raw), "e")
    assert_parity("decode_entry", raw[:-1], "e")


@needs_native
@given(entries, st.data())
@PARITY
def test_decode_entry_parity_damaged(raw, data):
    rng = random.Random(data.draw(st.integers(0, 1 << 32)))
    assert_parity("decode_entry", damaged(raw, rng, data.draw(st.integers(1, 5))), "e")


@needs_native
@given(st.binary(max_size=60))
@PARITY
def test_decode_entry_parity_random_bytes(raw):
    assert_parity("decode_entry", raw, "e")


HOSTILE_ENTRIES = [
    b"\x08",                                   # varint cut off
    b"\x08" + b"\xff" * 9 + b"\x7f",           # dtype over 64 bits
    b"\x18" + b"\xff" * 9 + b"\x7f",           # shard id over 64 bits
    b"\x20" + b"\xff" * 9 + b"\x03",           # offset over 64 bits
    b"\x28" + b"\x80" * 10 + b"\x01",          # varint longer than 10 bytes
    b"\xff" * 9 + b"\x7f" + b"\x00",           # tag over 64 bits (wire 0)
    b"\x8f" + b"\x80" * 8 + b"\x02" + b"\x00",  # tag over 64 bits whose low bits say field 1
    b"\x12\x05\x12\x03\x08",                   # dim runs past its message
    b"\x12\x04\x12\x05\x08\x01",               # dim longer than the shape
    b"\x12\x0c\x12\x0a\x08" + b"\xff" * 9 + b"\x7f",  # dim over 64 bits
    b"\x12\x02\x18\x02", b"\x12\x02\x18\x00",  # unknown_rank true / false
    b"\x12\x03\x18\x80\x00",
    b"\x12\x0b\x18" + b"\x80" * 9 + b"\x02",   # unknown_rank, only bits over 64 set
    b"\x12\x02\x12\x00" * 3,                   # repeated shape: the last wins
    b"\x3a\x04\x0a\x02\x10\x05", b"\x3a\x04\x0a\x05\x10\x05",
    b"\x3a\x0d\x0a\x0b\x08" + b"\xff" * 9 + b"\x7f",
    b"\x35\x01\x02\x03",                       # crc32c cut off
    b"\x35\x01\x02\x03\x04",
    b"\x32\x01", b"\x32\x80",                  # crc32c with the wrong wire type
    b"\x09" + b"\x00" * 7, b"\x09" + b"\x00" * 8,
    b"\x0d\x00\x00\x00", b"\x0d\x00\x00\x00\x00",
    b"\x0b", b"\x0c", b"\x0e", b"\x0f", b"\x12\x01\x0b",
    b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x7a\x05abc", b"\x7a" + b"\xff" * 9 + b"\x7f",
    b"\x3a\x00" * 4,
]


@needs_native
@pytest.mark.parametrize("raw", HOSTILE_ENTRIES)
def test_decode_entry_parity_hostile(raw):
    assert_parity("decode_entry", raw, "ckpt.index: entry 'w'")
    assert_parity("decode_entries", build_block([(b"k", raw)]), "blk")


@needs_native
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=8), entries), max_size=20), st.data())
@PARITY
def test_decode_entries_parity(pairs, data):
    items = sorted(dict(pairs).items())
    block = build_block(items, data.draw(st.integers(1, 16)))
    assert_parity("decode_entries", block, "blk")
    rng = random.Random(data.draw(st.integers(0, 1 << 32)))
    assert_parity("decode_entries", damaged(block, rng, data.draw(st.integers(1, 4))), "blk")


# --- parity: string tensors -----------------------------------------------------------------


def big_endian_tensor(values):
    """A DT_STRING tensor as a big-endian host writes it (lengths CRC'd byte-reversed)."""
    crc = 0
    for v in values:
        crc = _pure.crc32c(struct.pack(">I", len(v)), crc)
    return (b"".join(varint(len(v)) for v in values) + struct.pack(">I", _pure.mask_crc(crc))
            + b"".join(values))


def strings_parity(buf, count, where="ckpt.data-00000-of-00001: tensor 's' at offset 10"):
    for big_endian in (False, True):
        for verify in (True, False):
            assert_parity("decode_strings", buf, count, big_endian, verify, where)


@needs_native
@given(st.lists(st.binary(max_size=300), max_size=40))
@PARITY
def test_string_tensor_parity_round_trip(values):
    encoded = assert_parity("encode_strings", values)[1]
    assert _native.encode_strings(tuple(bytearray(v) for v in values)) == encoded
    data, masked = encoded
    decoded, crc = _native.decode_strings(data, len(values), False, True, "s")
    assert decoded == values and _native.mask_crc(crc) == masked
    assert _native.decode_strings(memoryview(data), len(values), False, False, "s") == (values, 0)
    strings_parity(data, len(values))
    be = big_endian_tensor(values)
    assert _native.decode_strings(be, len(values), True, True, "s")[0] == values
    strings_parity(be, len(values))


@needs_native
@given(st.lists(st.binary(max_size=40), max_size=12), st.data())
@PARITY
def test_string_tensor_parity_damaged(values, data):
    raw = _pure.encode_strings(values)[0]
    rng = random.Random(data.draw(st.integers(0, 1 << 32)))
    count = len(values) + data.draw(st.sampled_from([0, 0, 0, 1, -1, 5, -len(values) - 1]))
    strings_parity(damaged(raw, rng, data.draw(st.integers(1, 4))), count)


STRING_EDGES = [
    (b"", 0), (b"", 1), (b"\xd8\xea\x82\xa2", 0), (b"\xd8\xea\x82", 0),
    (b"\x02\x00\x03\x1b\x42\x8b\xca\x61\x62\x78\x79\x7a", 3),
    (b"\x02\x00\x03\x1b\x42\x8b\xca\x61\x62\x78\x79", 3),         # strings cut short
    (b"\x02\x00\x03\x1b\x42\x8b", 3),                             # checksum cut short
    (b"\x02\x00\x03\x1b\x42\x8b\xca\x61\x62\x78\x79\x7a", 2),     # wrong count
    (b"\x02\x00\x03\x1b\x42\x8b\xca\x61\x62\x78\x79\x7a", 13),    # more strings than bytes
    (b"\x02\x00\x03\x1b\x42\x8b\xca\x61\x62\x78\x79\x7a", -1),
    (b"\x02\x00\x03\x1b\x42\x8b\xca\x61\x62\x78\x79\x7a", 1 << 70),
    (b"\xff" * 9 + b"\x7f" + b"\x00" * 4, 1),                     # a length over 64 bits
    (b"\xff" * 9 + b"\x7f" + b"\xff" * 9 + b"\x7f" + b"\x00" * 4, 2),
    (b"\xff\xff\xff\xff\x0f" + b"\x00" * 8, 1),                   # 2**32 - 1 bytes claimed
    (b"\x80\x80\x80\x80\x10" + b"\x00" * 8, 1),                   # 2**32: the 8-byte CRC rule
    (b"\x80" * 11 + b"\x00" * 4, 1),
]


@needs_native
@pytest.mark.parametrize("buf, count", STRING_EDGES)
def test_string_tensor_parity_edges(buf, count):
    strings_parity(buf, count)
    strings_parity(bytearray(buf), count)


@needs_native
def test_string_tensor_large_parity():
    rng = random.Random(5)
    values = [rng.randbytes(rng.choice([0, 1, 100, 3000, 200_000])) for _ in range(60)]
    values.append(b"x" * (1 << 20))
    data, masked = assert_parity("encode_strings", values)[1]
    strings_parity(data, len(values))
    strings_parity(memoryview(data)[:-1], len(values))


@needs_native
def test_encode_strings_parity_bad_items():
    for values in ([b"a", "text"], [b"a", 5], [None]):
        assert assert_parity("encode_strings", values)[0] == "raised"
    assert assert_parity("encode_strings", [memoryview(b"abc"), b"d"])[0] == "ok"


# --- the whole listing path on a bigger index -------------------------------------------------


@needs_native
def test_listing_many_entries_parity():
    """A 4096-entry data block, as TF writes them (256 KiB blocks, restarts every 16)."""
    items, block = checkpoint_block(4096, seed=9)
    assert len(block) > 100_000
    assert _native.block_entries(block, "b") == _pure.block_entries(block, "b") == items
    assert _native.decode_entries(block, "b") == _pure.decode_entries(block, "b")
    for key, value in items[::97]:
        assert _native.block_seek(block, key, "b") == (key, value)


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_index_listing_matches_decode_entries(hot):
    table = {e: f"dtype{e}" for e in range(40)}
    for block in REAL_BLOCKS:
        shapes, kinds = {}, {}
        hot.index_listing(block, "b", shapes, kinds, table)
        decoded = hot.decode_entries(block, "b")
        assert list(shapes) == [n for n, _ in decoded] == list(kinds)
        assert shapes == {n: list(d[1]) for n, d in decoded}
        assert all(type(s) is list for s in shapes.values())
        assert kinds == {n: table[d[0]] for n, d in decoded}
    with pytest.raises(KeyError):
        hot.index_listing(REAL_BLOCKS[0], "b", {}, {}, {})
    unknown_rank = build_block([(b"u", bundle_entry(shape=(3,), unknown_rank=True))])
    shapes = {}
    hot.index_listing(unknown_rank, "b", shapes, {}, table)
    assert shapes == {"u": None}


@needs_native
@PARITY
@given(pairs=st.lists(st.tuples(st.binary(min_size=1, max_size=12), st.binary(max_size=40)),
                      max_size=30), data=st.data())
def test_index_listing_parity(pairs, data):
    """Same maps or the same exception as the twin, on damaged blocks too (after
    an exception the maps' contents are unspecified: callers drop them)."""
    block = build_block(sorted(dict(pairs).items()))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for candidate in (block, damaged(block, rng, data.draw(st.integers(1, 4)))):
        results = []
        for hot in (_pure, _native):
            shapes, kinds = {}, {}
            result = outcome(hot.index_listing, candidate, "blk", shapes, kinds,
                             {e: e for e in range(64)})
            results.append((result, shapes, kinds) if result[0] == "ok" else result)
        assert results[0] == results[1]


# --- the pure twin's fast paths for blocks as TensorFlow writes them -----------------------


def entries_one_by_one(block, where):
    """decode_entries the general way: block_entries, then decode_entry each."""
    return [(key.decode("utf-8", "surrogateescape"),
             _pure.decode_entry(value, f"{where}: entry {key.decode('utf-8', 'surrogateescape')!r}"))
            for key, value in _pure.block_entries(block, where) if key[:1] not in (b"", b"\x00")]


def listing_by_decode_entries(block, where, table):
    """index_listing's maps built the general way, one decoded entry at a time."""
    shapes, kinds = {}, {}
    for name, entry in _pure.decode_entries(block, where):
        shapes[name] = None if entry[1] is None else list(entry[1])
        kinds[name] = table[entry[0]]
    return shapes, kinds


def test_pure_fast_paths_take_tensorflow_blocks():
    """Blocks TensorFlow wrote take _pure's fast paths (else they would not pay),
    and give what the general decoders give: all but those with partitioned
    tensors (slices) or keys and entries of 128 bytes or more. (Some fixtures
    are tables of other kinds: their entries do not start with a dtype.)"""
    plain = [b for b in REAL_BLOCKS if _pure.decode_entries(b, "b")
             and all(v[:1] == b"\x08" and not d[6] for (_, d), (_, v) in zip(
                 _pure.decode_entries(b, "b"),
                 [(k, v) for k, v in _pure.block_entries(b, "b") if k[:1] not in (b"", b"\x00")]))
             and all(len(k) < 128 and len(v) < 128 for k, v in _pure.block_entries(b, "b"))]
    assert len(plain) >= 5
    for block in plain:
        end, _ = _pure._restarts(block, "b")
        records = _pure._framed_fast(block, end, None, None, None, None)
        assert [(k, bytes(block[v:e])) for k, v, e in records] == _pure.block_entries(block, "b")
        names, heads = _pure._tensor_heads_fast(block, "b")
        assert list(zip(names, heads)) == [(n, d[:2]) for n, d in _pure.decode_entries(block, "b")]
        names, whole = _pure._tensor_heads_fast(block, "b", whole=True)   # decode_entries' own
        assert list(zip(names, whole)) == entries_one_by_one(block, "b")
        if all(d[2] == 0 for _, d in _pure.decode_entries(block, "b")):   # index_entries' too
            assert _pure._tensor_heads_fast(block, "b", _pure._SHARD0_CLASSES,
                                            _pure._SHARD0_NUMBERS) is not None


def test_pure_entry_numbers_are_matched_by_byte_class():
    """The listing's fast path matches the numbers after an entry's shape as a
    string of byte classes: the same verdict as the grammar on the bytes."""
    import re
    grammar = re.compile(rb"(?:[\x18\x20\x28][\x80-\xff]{0,9}[\x00-\x7f]|\x35[\x00-\xff]{4})*")
    rng = random.Random(11)
    alphabet = [0x18, 0x20, 0x28, 0x35, 0x00, 0x08, 0x12, 0x7F, 0x80, 0x93, 0xFF]
    verdicts = set()
    for _ in range(20_000):
        numbers = bytes(rng.choice(alphabet) for _ in range(rng.randrange(16)))
        expected = grammar.fullmatch(numbers) is not None
        verdicts.add(expected)
        assert (_pure._NUMBERS_BY_CLASS.fullmatch(numbers.translate(_pure._NUMBER_CLASSES))
                is not None) == expected, numbers
    assert verdicts == {True, False}


def entry_variants(rng, odd):
    """Bundle entries as TensorFlow writes them or, with `odd`, near the fast
    path's edges: two-byte varints, unknown rank, negative and huge dims,
    slices, fields out of order or repeated."""
    if not odd:
        return bundle_entry(rng.choice([1, 2, 19]), tuple(rng.randrange(1, 300) for _ in range(
            rng.randrange(4))), 0, rng.randrange(1 << 40), rng.randrange(1 << 30), rng.getrandbits(32))
    dims = tuple(rng.choice([0, 1, 127, 128, 5000, -1, 1 << 62]) for _ in range(rng.randrange(4)))
    entry = bundle_entry(rng.choice([1, 2, 19, 127, 128, 300]), dims,
                         rng.choice([0, 0, 1, -1]), rng.randrange(1 << rng.choice([7, 40, 64])),
                         rng.randrange(1 << 30), rng.getrandbits(32),
                         slices=rng.choice([(), (), [((0, 2),)]]),
                         unknown_rank=rng.random() < 0.1,
                         extra=rng.choice([b"", b"", int_field(1, 3), message_field(2, b""),
                                           int_field(9, 1), tag(6, 5) + b"\x01\x02"]))
    return entry


@PARITY
@given(seed=st.integers(0, 2**32), count=st.integers(1, 60), edits=st.integers(0, 3))
def test_pure_fast_listing_matches_the_general_decoders(seed, count, edits):
    """Same maps, or the same exception, as decoding entry by entry; on
    blocks near the fast path's edges (long keys, odd entries) and damaged ones."""
    rng = random.Random(seed)
    odd = rng.random() < 0.01 * count   # one odd entry sends the whole block the general way
    keys = sorted({rng.choice([b"", b"\x00s", b"w/"]) + bytes(rng.randrange(97, 123)
                   for _ in range(rng.choice([1, 5, 20, 130] if odd else [1, 5, 20])))
                   for _ in range(count)})
    block = build_block([(k, entry_variants(rng, odd and rng.random() < 0.2)) for k in keys])
    block = bytes(damaged(block, rng, edits)) if edits else block
    table = {e: f"dtype{e}" for e in range(200)}
    assert outcome(_pure.decode_entries, block, "blk") == outcome(entries_one_by_one, block, "blk")
    expected = outcome(listing_by_decode_entries, block, "blk", table)
    shapes, kinds = {}, {}
    result = outcome(_pure.index_listing, block, "blk", shapes, kinds, table)
    assert (result if result[0] == "raised" else ("ok", (shapes, kinds))) == expected
    pairs = []
    result = outcome(_pure.index_shapes, block, "blk", pairs)
    if expected[0] == "ok":
        assert pairs == list(expected[1][0].items())
    elif expected[1] is not KeyError:   # index_shapes does not look dtypes up
        assert result == expected
    for shards in (0, 1, 2):   # the per-name map: its own fast path (shard 0 only)
        infos = {}
        result = outcome(_pure.index_entries, block, "blk", infos, table, shards)
        want = outcome(reference_infos, block, table, shards)
        assert (result if result[0] == "raised" else ("ok", infos)) == want
    if _native is not None:
        for args in [(None, None), (None, None, 64, 1000), (b"a", b"w")]:
            assert_parity("check_block_keys", block, "blk", *args)
            # the listing right after its block passed check_block_keys (the table's order)
            results = []
            for hot in (_pure, _native):
                shapes, kinds = {}, {}
                r = outcome(hot.index_listing, block, "blk", shapes, kinds, table)
                results.append(r if r[0] == "raised" else (shapes, kinds))
            assert results[0] == results[1]


# --- the twins pair file by file -------------------------------------------------------

def test_every_native_file_has_a_pure_twin_of_the_same_name():
    root = pathlib.Path(__file__).resolve().parent.parent
    included = sorted(p.stem for p in (root / "native").glob("*.pxi"))
    assert included == ["farmhash", "highwayhash", "map_order"]
    for stem in included:
        assert (root / "tfformats" / f"_{stem}.py").is_file()
        assert f'include "{stem}.pxi"' in (root / "native" / "_native.pyx").read_text()


@needs_native
def test_both_implementations_export_the_same_names():
    def public(module):   # functions and constants, not the modules they use
        return {n for n in dir(module) if not n.startswith("_")
                and not isinstance(getattr(module, n), types.ModuleType)}
    assert public(_pure) == public(_native)


@needs_native
def test_block_key_limits_parity():
    """Both twins stop at the same key, with the same LimitError, whichever limit."""
    items = [(b"k" * 300 + bytes([i]), b"v") for i in range(40)]
    block = build_block(items)
    for max_key, max_total in [(None, None), (299, None), (300, None), (301, None),
                               (None, 301 * 7), (None, 301 * 40), (None, 301 * 40 - 1), (0, 0)]:
        result = assert_parity("check_block_keys", block, "b", None, None, max_key, max_total)
        fits = ((max_key is None or max_key >= 301)
                and (max_total is None or max_total >= 301 * 40))
        assert (result[0] == "ok") == fits
        if result[0] == "raised":
            assert result[1] is LimitError


# --- index_entries: what a reader's per-name calls answer from ----------------------------


def reference_infos(block, table, num_shards):
    """index_entries' map rebuilt from decode_entries and BundleReader's checks."""
    out = {}
    for name, (enum, shape, shard, offset, size, _, parts) in _pure.decode_entries(block, "blk"):
        plain = (not parts and shape is not None and all(d >= 0 for d in shape)
                 and 0 <= shard < num_shards and offset >= 0 and size >= 0 and enum in table)
        out[name] = (table[enum], shape) if plain else None
    return out


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_index_entries_known_answers(hot):
    table = {1: "float32", 7: "string"}
    items = [
        (b"", b"\x08\x01"),                                              # header: skipped
        (b"a_plain", bundle_entry(1, (2, 3), 0, 8, 24)),
        (b"b_same", bundle_entry(1, (2, 3), 0, 32, 24)),
        (b"c_scalar", bundle_entry(7, (), 1, 0, 5)),
        (b"d_parts", bundle_entry(1, (4,), slices=[((0, 2),), ((2, 2),)])),
        (b"e_negative_offset", bundle_entry(1, (1,), 0, -8, 4)),
        (b"f_negative_size", bundle_entry(1, (1,), 0, 0, -4)),
        (b"g_shard_too_big", bundle_entry(1, (1,), 2, 0, 4)),
        (b"h_negative_shard", bundle_entry(1, (1,), -1, 0, 4)),
        (b"i_unknown_rank", bundle_entry(1, (3,), unknown_rank=True)),
        (b"j_unknown_dtype", bundle_entry(99, (3,))),
        (b"k_negative_dim", bundle_entry(1, (-1, 2))),
        # shard id with bits above 64: _signed gives 2**64 + 1 - 2**64 = 1
        (b"l_wide_shard", bundle_entry(1, (1,), 0, 0, 4, extra=tag(3, 0) + varint((1 << 64) + 1))),
        (b"m_wide_offset", bundle_entry(1, (1,), 0, 0, 4, extra=tag(4, 0) + varint((1 << 64) - 1))),
    ]
    infos = {"zz_before": "kept"}
    hot.index_entries(build_block(items), "blk", infos, table, 2)
    assert infos == {"zz_before": "kept",
                     "a_plain": ("float32", (2, 3)), "b_same": ("float32", (2, 3)),
                     "c_scalar": ("string", ()), "d_parts": None, "e_negative_offset": None,
                     "f_negative_size": None, "g_shard_too_big": None, "h_negative_shard": None,
                     "i_unknown_rank": None, "j_unknown_dtype": None, "k_negative_dim": None,
                     "l_wide_shard": ("float32", (1,)), "m_wide_offset": None}
    assert list(infos)[1:] == [k.decode() for k, _ in items[1:]]    # key order
    assert infos["a_plain"] is infos["b_same"]      # runs share one tuple
    assert hot.index_entries(build_block(items), "blk", {}, table, 2) is None
    with pytest.raises(TypeError):
        hot.index_entries(build_block(items), "blk", {}, table, "2")


@pytest.mark.parametrize("odd, answer", [
    (b"", ("float32", (4,))),
    (bundle_entry(1, (4,), 0, -8, 4), None),                  # negative offset
    (bundle_entry(1, (4,), 0, 8, -4), None),                  # negative size
    (bundle_entry(1, (4,), 1, 8, 4), "shard"),                # in range for 2 shards only
    (bundle_entry(1, (4,), 0, 8, 4, extra=int_field(3, 0)), ("float32", (4,))),  # shard 0 written
    (bundle_entry(1, (-1,), 0, 8, 4), None),                  # negative dimension
    (bundle_entry(99, (4,), 0, 8, 4), None),                  # dtype not in the table
])
def test_pure_index_entries_fast_path_keeps_the_checks(odd, answer):
    """A block of entries as TensorFlow writes them takes the pure twin's fast
    path for the per-name map; one odd entry gets BundleReader's verdict,
    whichever path the block then takes."""
    items = [(b"k%03d" % i, bundle_entry(1, (4,), 0, 8 * i, 4)) for i in range(20)]
    if odd:
        items[7] = (items[7][0], odd)
    block = build_block(items)
    table = {1: "float32"}
    for shards in (1, 2):
        infos = {}
        _pure.index_entries(block, "blk", infos, table, shards)
        assert infos == reference_infos(block, table, shards)
        expected = ("float32", (4,)) if answer == "shard" and shards == 2 else \
            None if answer == "shard" else answer
        assert infos["k007"] == expected
    if not odd:
        assert _pure._tensor_heads_fast(block, "blk", _pure._SHARD0_CLASSES,
                                        _pure._SHARD0_NUMBERS) is not None


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_index_entries_matches_decode_entries_on_real_blocks(hot):
    from tfformats import dtypes
    for block in REAL_BLOCKS:
        for shards in (1, 2):
            infos = {}
            hot.index_entries(block, "blk", infos, dtypes.BY_ENUM, shards)
            assert infos == reference_infos(block, dtypes.BY_ENUM, shards)


@needs_native
def test_index_entries_many_entries_parity():
    _, block = checkpoint_block(4096, seed=11)
    table = {e: f"dtype{e}" for e in range(10)}
    results = []
    for hot in (_pure, _native):
        infos = {}
        hot.index_entries(block, "b", infos, table, 1)
        results.append(infos)
    assert results[0] == results[1] == reference_infos(block, table, 1)
    assert len(results[0]) == 4095


@needs_native
@PARITY
@given(entries=st.lists(st.tuples(
    st.binary(min_size=1, max_size=12), st.integers(0, 40),
    st.lists(st.integers(-3, 1 << 40), max_size=3), st.integers(-2, 3),
    st.integers(-(1 << 63), 1 << 40), st.integers(-5, 1 << 40), st.booleans(),
    st.lists(st.lists(st.tuples(st.integers(0, 9), st.integers(-1, 9)), max_size=2), max_size=2)),
    max_size=25), shards=st.integers(0, 3), data=st.data())
def test_index_entries_parity(entries, shards, data):
    """The same map or the same exception as the twin (and as decode_entries plus
    BundleReader's checks), on blocks of odd entries and on damaged blocks."""
    items = sorted({key: bundle_entry(dtype, shape, shard, offset, size, 0, parts, unknown)
                    for key, dtype, shape, shard, offset, size, unknown, parts in entries}.items())
    block = build_block(items)
    table = {e: e for e in range(32)}
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for i, candidate in enumerate((block, damaged(block, rng, data.draw(st.integers(1, 4))))):
        results = []
        for hot in (_pure, _native):
            infos = {}
            result = outcome(hot.index_entries, candidate, "blk", infos, table, shards)
            results.append((result, infos) if result[0] == "ok" else result)
        assert results[0] == results[1]
        if i == 0:
            assert results[0][1] == reference_infos(block, table, shards)


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_index_shapes_known_answers(hot):
    for block in REAL_BLOCKS:
        pairs = [("kept", [1])]
        ascii = hot.index_shapes(block, "b", pairs)
        decoded = hot.decode_entries(block, "b")
        assert pairs == [("kept", [1])] + [(n, None if d[1] is None else list(d[1]))
                                           for n, d in decoded]
        assert ascii is all(n.isascii() for n, _ in decoded)
    items = [(b"a", bundle_entry(1, (2,))), (b"b\xee\x80\x80", bundle_entry(1, (3, 1))),
             (b"b\xff", bundle_entry(1, (5,), unknown_rank=True))]
    pairs = []
    assert hot.index_shapes(build_block(items), "b", pairs) is False
    assert pairs == [("a", [2]), ("b\ue000", [3, 1]), ("b\udcff", None)]


@needs_native
@PARITY
@given(pairs=st.lists(st.tuples(st.binary(min_size=1, max_size=12), st.binary(max_size=40)),
                      max_size=30), data=st.data())
def test_index_shapes_parity(pairs, data):
    block = build_block(sorted(dict(pairs).items()))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for candidate in (block, damaged(block, rng, data.draw(st.integers(1, 4)))):
        results = []
        for hot in (_pure, _native):
            out = []
            result = outcome(hot.index_shapes, candidate, "blk", out)
            results.append((result, out) if result[0] == "ok" else result)
        assert results[0] == results[1]


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_index_listing_reports_damage_before_an_unknown_dtype(hot):
    """As _pure decodes a whole block before filling the maps, an entry damaged
    further on is reported rather than an earlier entry's unknown dtype."""
    block = build_block([(b"a", bundle_entry(99, (2,))), (b"b", b"\x08\x01\x12\x05\x12")])
    with pytest.raises(FormatError, match="entry 'b'"):
        hot.index_listing(block, "blk", {}, {}, {1: "float32"})
    with pytest.raises(KeyError):
        hot.index_listing(build_block([(b"a", bundle_entry(99, (2,)))]), "blk", {}, {}, {})


def wide_dims_entry(dims, dtype=1):
    """A BundleEntryProto whose shape dims are written as given, even beyond 64 bits."""
    shape = b"".join(message_field(2, tag(1, 0) + varint(d)) for d in dims)
    return int_field(1, dtype) + message_field(2, shape) + int_field(5, 4)


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_listings_of_shapes_past_the_fast_form(hot):
    """Ranks above 8 and dims with bits above 64 (kept as Python ints, not in the
    native twin's fixed form) list, check and share tuples as small shapes do."""
    nine = (1, 2, 3, 4, 5, 6, 7, 8, 9)
    items = [(b"a_rank9", bundle_entry(1, nine)), (b"b_rank9_again", bundle_entry(1, nine)),
             (b"c_rank9_negative", bundle_entry(1, nine[:8] + (-1,))),
             (b"d_wide", wide_dims_entry([(1 << 64) + 5, 3])),
             (b"e_wide_again", wide_dims_entry([(1 << 64) + 5, 3])),
             (b"f_rank8", bundle_entry(1, nine[:8])), (b"g_rank8_other", bundle_entry(2, nine[:8])),
             (b"h_scalar", bundle_entry(2, ())), (b"i_scalar", bundle_entry(2, ()))]
    block = build_block(items)
    table = {1: "float32", 2: "int32"}
    decoded = dict(_pure.decode_entries(block, "blk"))
    assert decoded["a_rank9"][1] == nine and decoded["d_wide"][1][1] == 3
    infos = {}
    hot.index_entries(block, "blk", infos, table, 1)
    assert infos == reference_infos(block, table, 1)
    assert infos["a_rank9"] == ("float32", nine) and infos["c_rank9_negative"] is None
    assert infos["a_rank9"] is infos["b_rank9_again"]
    assert infos["d_wide"] is infos["e_wide_again"]
    assert infos["f_rank8"] == ("float32", nine[:8]) and infos["g_rank8_other"][0] == "int32"
    assert infos["h_scalar"] is infos["i_scalar"] == ("int32", ())
    pairs, shapes, kinds = [], {}, {}
    hot.index_shapes(block, "blk", pairs)
    hot.index_listing(block, "blk", shapes, kinds, table)
    assert pairs == [(n, list(d[1])) for n, d in decoded.items()] == list(shapes.items())
    assert all(type(s) is list for _, s in pairs)
    assert kinds == {n: table[d[0]] for n, d in decoded.items()}


@pytest.mark.parametrize("hot", IMPLEMENTATIONS)
def test_entry_map_builds_unchecked_entries(hot):
    from tfformats.bundle import Entry
    table = {e: f"dtype{e}" for e in range(40)}
    for block in REAL_BLOCKS:
        decoded = hot.decode_entries(block, "b")
        entries = hot.entry_map(decoded, Entry, table)
        assert list(entries) == [n for n, _ in decoded]
        assert all(type(e) is Entry for e in entries.values())
        assert entries == {n: Entry(n, table[d[0]], *d[1:]) for n, d in decoded}
    odd = [("a", (1, None, -3, 2**70, -1, 7, ((0, -1),)))]   # unchecked: kept as decoded
    assert hot.entry_map(odd, Entry, {1: "f"}) == {"a": Entry("a", "f", None, -3, 2**70, -1, 7,
                                                               ((0, -1),))}
    with pytest.raises(KeyError):
        hot.entry_map(odd, Entry, {})
    for bad in ([("a", (1, ()))], [("a",)]):   # not decode_entries' pairs
        with pytest.raises(ValueError):
            hot.entry_map(bad, Entry, {1: "f"})
