"""The map-entry reordering behind fingerprints: the pure twin's numpy filter
(tfformats/_map_order.py `_suspects`) against a full walk and the native walker.

The filter lets the pure walker skip every sub-message without an adjacent
pair of map entries that may be out of order. If it ever missed such a pair,
the skipped map would stay in upb's order and the fingerprint would be wrong,
so these tests compare, on buffers above the filter's size threshold, the
filtered walk with an unfiltered one and with the native walker.
"""

import random

import pytest

from tfformats import _map_order, _pure, protos
from tfformats import fingerprint as fpmod
from tfformats._map_order import (KEY_BYTES, KEY_SIGNED32, KEY_SIGNED64, KEY_UNSIGNED,
                                  KEY_ZIGZAG, MAP_ACTION, encode_varint)

try:
    from tfformats import _native
except ImportError:   # tests/run.sh checks that it is built before the suites run
    _native = None

FunctionDef = protos.message_class("tfformats.FunctionDef")
GraphDebugInfo = protos.message_class("tfformats.GraphDebugInfo")

# Keys with prefix relations (upb writes "Tidx" before "T"), empty, non-ASCII
# and long ones (two-byte key lengths, equal for their first 150 bytes).
KEYS = ["T", "Tidx", "Targs", "Tindices", "_output_shapes", "_user_specified_name",
        "config", "config_proto", "dtype", "value", "", "a", "ab", "\u00e9", "\u00e9t\u00e9",
        "k" * 150 + "a", "k" * 150, "k" * 150 + "b" * 30]


def reorder_unfiltered(data, plan):
    """The pure walker visiting everything: what the filter must not change."""
    buf = bytearray(data)
    _map_order._fix(buf, 0, len(buf), plan, range(len(buf)))
    return buf


def reorder_all_ways(data, plan):
    filtered = bytearray(data)
    _pure.reorder_map_entries(filtered, plan)
    assert filtered == reorder_unfiltered(data, plan)
    if _native is not None:
        native = bytearray(data)
        _native.reorder_map_entries(native, plan)
        assert filtered == native
    return filtered


def junk(rng):
    # Bytes that look like tags and lengths of map entries (0x0A, 0x12, 0x2A,
    # 0x3A ...), so the filter meets false pairs inside values.
    alphabet = bytes([0x0A, 0x12, 0x22, 0x2A, 0x3A, 0x42, 0x08, 0x02, 0x03, 0x80, 0x7F])
    return bytes(rng.choice(alphabet) for _ in range(rng.randrange(60)))


def big_function(rng, nodes=300):
    f = FunctionDef()
    f.signature.name = "f"
    for i in range(rng.randrange(8)):
        f.signature.input_arg.add(name=rng.choice(KEYS) + str(i))
        f.arg_attr[rng.getrandbits(rng.choice([2, 32]))].attr[rng.choice(KEYS)].s = junk(rng)
        f.resource_arg_unique_id[rng.getrandbits(32)] = rng.getrandbits(32)
        f.ret[rng.choice(KEYS)] = rng.choice(KEYS)
    for i in range(nodes):
        node = f.node_def.add(name=f"n{i}", op=rng.choice(["Const", "Sum", "Call"]))
        for key in rng.sample(KEYS, rng.randrange(5)):
            value = node.attr[key]
            kind = rng.randrange(4)
            if kind == 0:
                value.s = junk(rng)
            elif kind == 1:
                value.type = rng.randrange(1, 20)
            elif kind == 2:   # a nested map: AttrValue.func.attr
                value.func.name = "g"
                for inner in rng.sample(KEYS, rng.randrange(4)):
                    value.func.attr[inner].i = rng.getrandbits(40) - (1 << 39)
            else:
                for _ in range(rng.randrange(3)):
                    shape = value.list.shape.add()
                    for _ in range(rng.randrange(4)):
                        shape.dim.add(size=rng.randrange(-1, 300))
    return f


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("window", [None, 777])   # the default, or offsets judged 777 at a time
def test_filtered_walk_sorts_what_a_full_walk_sorts(seed, window, monkeypatch):
    if window is not None:
        monkeypatch.setattr(_map_order, "_WINDOW", window)
    rng = random.Random(seed)
    f = big_function(rng)
    data = f.SerializeToString(deterministic=True)
    assert len(data) >= _map_order._FILTER_FROM   # the filter runs
    plan = fpmod._plan(f.DESCRIPTOR)
    out = reorder_all_ways(data, plan)
    assert FunctionDef.FromString(bytes(out)) == f


@pytest.mark.parametrize("seed", range(6))
def test_integer_keys_of_every_kind(seed):
    # GraphDebugInfo's maps have fixed64 keys only, so the other kinds run on
    # hand-built maps: a varint, fixed64 or fixed32 key per entry, with
    # negative values (ten-byte varints), entries with no key at all, and
    # values that are groups (which the filter leaves to the walker).
    rng = random.Random(seed)
    plans = {}
    for kind in (KEY_UNSIGNED, KEY_SIGNED32, KEY_SIGNED64, KEY_ZIGZAG, KEY_BYTES):
        field = rng.choice([f for f in range(1, 40) if f != 20])   # one- and two-byte tags
        tag = (field << 3) | 2
        plans[kind] = {tag: (MAP_ACTION, kind, None)}
        out = bytearray()
        for _ in range(4000):
            key_field = rng.choice([b"\x08" + encode_varint(rng.getrandbits(rng.choice([3, 31, 64]))),
                                    b"\x09" + rng.randbytes(8), b"\x0d" + rng.randbytes(4),
                                    b"\x0a\x01" + rng.randbytes(1), b""])
            entry = key_field + rng.choice([b"\x12\x01x", b"\x13\x08\x01\x14"])
            out += encode_varint(tag) + encode_varint(len(entry)) + entry
            if rng.random() < 0.2:   # other fields between runs: a varint, or a
                # repeated length-delimited field with a two-byte tag (field 20)
                out += rng.choice([b"\x98\x06\x01", b"\xa2\x01\x02ab\xa2\x01\x03cde"])
        reorder_all_ways(bytes(out), plans[kind])


def test_graph_debug_info_fixed64_and_string_keys():
    rng = random.Random(7)
    info = GraphDebugInfo()
    for _ in range(3000):
        info.frames_by_id[rng.getrandbits(64)].line = rng.randrange(100)
        info.name_to_trace_id[rng.choice(KEYS) + str(rng.randrange(50))] = rng.getrandbits(64)
    data = info.SerializeToString(deterministic=True)
    out = reorder_all_ways(data, fpmod._plan(info.DESCRIPTOR))
    assert out != data   # upb writes integer keys descending


def test_only_out_of_order_pairs_are_suspects():
    # Everything in C++ order except one NodeDef's attr map ("Tidx" before
    # "T", as upb writes it): that pair alone is suspect, so the walker skips
    # the other 999 nodes.
    f = FunctionDef()
    for i in range(1000):
        node = f.node_def.add(name=f"n{i}", op="Sum")
        node.attr["dtype"].type = 1
        node.attr["value"].s = b"\x2a\x03\x0a\x01z" * 3   # looks like entries, in order
        node.attr["_output_shapes"].list.shape.add().dim.add(size=3)
    f.node_def[500].attr["T"].type = 1
    f.node_def[500].attr["Tidx"].type = 3
    data = f.SerializeToString(deterministic=True)
    plan = fpmod._plan(f.DESCRIPTOR)
    suspects = _map_order._suspects(bytearray(data), _map_order._map_tags(plan))
    assert suspects == [data.index(b"\x2a\x0a\x0a\x04Tidx")]
    out = reorder_all_ways(data, plan)
    assert out.find(b"\x0a\x01T\x12") < out.find(b"\x0a\x04Tidx")


@pytest.mark.parametrize("name", ["saved_model_module", "keras3_export", "tf_keras_savedmodel",
                                  "tf1_builder", "tf1_builder_partitioned",
                                  "saved_model_composite", "tf1_eval_model"])
def test_filtered_pure_walk_gives_tensorflows_hashes(name, monkeypatch):
    # The fixtures' fingerprints as TensorFlow 2.21 computed them, from the
    # pure twin with the filter on for every buffer, however small.
    import json
    import pathlib
    fixture = pathlib.Path(__file__).parent / "fixtures" / name
    want = json.loads((fixture / "expected_saved_model.json").read_text())["computed_fingerprint"]
    monkeypatch.setattr(_map_order, "_FILTER_FROM", 0)
    monkeypatch.setattr(fpmod, "hot", _pure)
    fp = fpmod.compute_fingerprint(fixture)
    assert {k: str(getattr(fp, k)) for k in fpmod.HASH_FIELDS} == {k: want[k] for k in fpmod.HASH_FIELDS}
