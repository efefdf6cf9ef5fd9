"""Writing bundles, object graphs and checkpoint directories.

The strongest checks compare bytes with TensorFlow's own writer: rewriting
the TF-written fixtures reproduces them exactly, and (when TensorFlow is
installed) so does `tf.raw_ops.SaveV2` for every dtype. TensorFlow must also
restore what we write into real objects.
"""

import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tfformats
from tfformats import fileio, protos
from tfformats.bundle import BundleReader
from tfformats.checkpoint import OBJECT_GRAPH_KEY, read_state
from tfformats.errors import CheckpointNotFoundError, FormatError, UnsupportedError
from tfformats.fileio import open_file
from tfformats.sstable import Table, TableBuilder, _short_successor, _shortest_separator
from tfformats.objgraph import build_object_graph
from tfformats.writer import BundleWriter, CheckpointManager, save_checkpoint

try:
    import tensorflow as tf
    HAVE_TF = True
except ImportError:
    HAVE_TF = False
needs_tf = pytest.mark.skipif(not HAVE_TF, reason="TensorFlow not installed; CI installs it")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MASK_0 = 0xA282EAD8


def files_of(prefix, num_shards=1):
    names = [f"{prefix}.index"] + [f"{prefix}.data-{i:05d}-of-{num_shards:05d}"
                                   for i in range(num_shards)]
    return [Path(n).read_bytes() for n in names]


def raw_entries(prefix):
    return dict(Table(open_file(f"{prefix}.index")).items())


def sample_tensors():
    """One tensor of every writable dtype, plus the awkward shapes."""
    rng = np.random.default_rng(7)
    out = {}
    for name in ["float32", "float64", "float16", "bfloat16", "int8", "int16", "int32",
                 "int64", "uint8", "uint16", "uint32", "uint64", "complex64", "complex128",
                 "float8_e5m2", "float8_e4m3fn"]:
        dtype = tfformats.as_dtype(name).as_numpy_dtype
        if dtype.kind == "c":
            values = rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))
        elif dtype.kind in "iu":
            values = rng.integers(0, 100, (2, 3))
        else:
            values = rng.standard_normal((2, 3))
        out[name] = values.astype(dtype)
    out["bool"] = np.array([[True, False, True]])
    out["int4"] = np.array([1, -2, 7, -8], dtype=ml_dtypes.int4)
    out["uint4"] = np.array([1, 2, 15], dtype=ml_dtypes.uint4)
    out["string"] = np.array([b"ab", b"", b"xyz"], dtype=object)
    out["string_2d"] = np.array([["\u00e9t\u00e9", "a"], ["", "b\x00"]], dtype=object)
    out["string_scalar"] = np.array(b"hello", dtype=object)
    out["string_empty"] = np.zeros((0, 2), dtype=object)
    out["scalar"] = np.float32(2.5)
    out["empty"] = np.zeros((0, 3), np.float32)
    out["empty_int"] = np.zeros((4, 0), np.int64)
    return out


def assert_same(read, value):
    value = np.asarray(value)
    if value.dtype == object:
        want = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v,
                            otypes=[object])(value) if value.size else value
        assert read.shape == want.shape and read.tolist() == want.tolist()
    else:
        assert read.dtype == value.dtype.newbyteorder("=") and read.shape == value.shape
        np.testing.assert_array_equal(read, value)


# --- the table builder --------------------------------------------------------------

def test_short_keys():
    assert _shortest_separator(b"abc1", b"abe") == b"abd"
    assert _shortest_separator(b"abc", b"abd") == b"abc"       # no room between c and d
    assert _shortest_separator(b"ab", b"abc") == b"ab"         # prefix: unchanged
    assert _shortest_separator(b"a\xff", b"b") == b"a\xff"
    assert _short_successor(b"model/x") == b"n"
    assert _short_successor(b"\xff\xffa") == b"\xff\xffb"
    assert _short_successor(b"\xff") == b"\xff"


def test_table_round_trip(tmp_path):
    keys = sorted({f"key/{i * 7919 % 5000:05d}/{'x' * (i % 40)}".encode() for i in range(3000)})
    items = [(k, bytes([len(k) % 251]) * (len(k) * 3)) for k in keys]
    path = tmp_path / "t.index"
    with open(path, "wb") as f:
        table = TableBuilder(f, block_size=4096)
        for k, v in items:
            table.add(k, v)
        size = table.finish()
    assert size == path.stat().st_size
    read = Table(open_file(path))
    assert read.block_count() > 10
    assert list(read.items()) == items
    assert read.get(keys[1234]) == items[1234][1] and read.get(b"key/zzz") is None


def test_table_empty_and_footer(tmp_path):
    path = tmp_path / "empty.index"
    with open(path, "wb") as f:
        TableBuilder(f).finish()
    data = path.read_bytes()
    assert data[-8:] == bytes.fromhex("57fb808b247547db")
    assert data[:8] == bytes.fromhex("0000000001000000")  # the empty metaindex block
    assert list(Table(open_file(path)).items()) == []


def test_table_keys_must_increase(tmp_path):
    with open(tmp_path / "t", "wb") as f:
        table = TableBuilder(f)
        table.add(b"b", b"1")
        with pytest.raises(FormatError, match="strictly increasing"):
            table.add(b"b", b"2")
        with pytest.raises(FormatError, match="strictly increasing"):
            table.add(b"a", b"2")


def test_table_overly_large_entry_gets_its_own_block(tmp_path):
    path = tmp_path / "t"
    with open(path, "wb") as f:
        table = TableBuilder(f, block_size=100)
        table.add(b"a", b"1")
        table.add(b"b", b"x" * 200)   # >= 2 * block_size: "a" is flushed first
        table.add(b"c", b"2")
        table.finish()
    read = Table(open_file(path))
    assert read.block_count() == 3
    assert list(read.items()) == [(b"a", b"1"), (b"b", b"x" * 200), (b"c", b"2")]


# --- byte-identical with TensorFlow ------------------------------------------------

def _single_shard_fixtures():
    out = []
    for index in sorted(FIXTURES.rglob("*.index")):
        prefix = str(index)[:-len(".index")]
        if not Path(prefix + ".data-00000-of-00001").exists():
            continue
        reader = BundleReader(prefix)
        variant = any(e.dtype.name == "variant" for e in reader.entries().values())
        reader.close()
        if variant:   # tfformats hands out no variant values to add
            continue
        out.append(pytest.param(prefix, id=os.path.relpath(prefix, FIXTURES)))
    return out


@pytest.mark.parametrize("prefix", _single_shard_fixtures())
def test_rewriting_tf_fixtures_reproduces_their_bytes(prefix, tmp_path):
    """Adding a TF checkpoint's tensors in its data order gives TF's exact files."""
    reader = BundleReader(prefix)
    adds = []
    for name, entry in reader.entries().items():
        for extents in entry.slices or [None]:
            part = entry if extents is None else reader.part_entry(name, extents)
            # an empty tensor sits at the offset where it was added: before its neighbour
            adds.append(((part.offset, part.size > 0), name, entry, extents, part))
    adds.sort(key=lambda a: a[0])
    out = str(tmp_path / "ckpt")
    with BundleWriter(out) as writer:
        for _, name, entry, extents, part in adds:
            value = reader.read_entry(part)
            if extents is None:
                writer.add(name, value, dtype=part.dtype)
            else:
                writer.add_slice(name, entry.shape, extents, value, dtype=part.dtype)
    assert files_of(out) == files_of(prefix)


def test_header_and_entry_bytes(tmp_path):
    prefix = str(tmp_path / "c")
    with BundleWriter(prefix) as w:
        w.add("v", np.zeros((2, 3), np.float32))
        w.add("scalar", np.int32(1))
        w.add("empty", np.zeros(0, np.float32))
        w.add("s", [b"ab", b"", b"xyz"])
    entries = raw_entries(prefix)
    assert entries[b""] == bytes.fromhex("08011a020801")
    # dtype, shape [2,3], size 24, fixed32 crc: shard_id and offset 0 are omitted
    assert entries[b"v"][:14] == bytes.fromhex("0801120812020802120208032818")
    assert entries[b"scalar"][:4] == bytes.fromhex("08031200")       # scalars: empty shape
    empty = protos.BundleEntryProto.FromString(entries[b"empty"])
    assert (empty.offset, empty.size, empty.crc32c) == (28, 0, MASK_0)
    s = protos.BundleEntryProto.FromString(entries[b"s"])
    data = Path(prefix + ".data-00000-of-00001").read_bytes()
    assert data[s.offset:s.offset + s.size] == bytes.fromhex("020003 1b428bca 6162 78797a")


def test_sharded_header(tmp_path):
    prefix = str(tmp_path / "c")
    with BundleWriter(prefix, num_shards=3) as w:
        for i in range(5):
            w.add(f"t{i}", np.full(10, i, np.float32))
    assert raw_entries(prefix)[b""] == bytes.fromhex("08031a020801")
    reader = BundleReader(prefix)
    assert sorted({e.shard_id for e in reader.entries().values()}) == [0, 1, 2]
    for i in range(5):
        np.testing.assert_array_equal(reader.read(f"t{i}"), np.full(10, i, np.float32))


def test_max_shard_size(store):
    prefix = store.join("c")
    with BundleWriter(prefix, max_shard_size=1000) as w:
        w.add("big", np.ones(400, np.float32))     # 1600 bytes: alone in shard 0
        w.add("a", np.ones(100, np.float32))       # 400
        w.add("b", np.ones(100, np.float32))       # 400: still fits shard 1
        w.add("c", np.ones(100, np.float32))       # would make 1200: shard 2
    names = sorted(store.listdir(store.tmp))
    assert names == ["c.data-00000-of-00003", "c.data-00001-of-00003",
                     "c.data-00002-of-00003", "c.index"]
    entries = BundleReader(prefix).entries()
    assert [entries[n].shard_id for n in ["big", "a", "b", "c"]] == [0, 1, 1, 2]
    assert tfformats.load_tensors(prefix)["c"].sum() == 100


@needs_tf
def test_save_v2_byte_identical(tmp_path):
    tensors = dict(sample_tensors())
    for i in range(4000):  # enough entries for several index data blocks
        tensors[f"many/{i:04d}/{'w' * (i % 150)}"] = np.full(i % 5, i, np.int32)
    tensors["x" * 600_000] = np.float32(1)   # an "overly large" key gets a block of its own
    names = list(tensors)
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "tf")
    with BundleWriter(ours) as w:
        for n in names:
            w.add(n, tensors[n])
    tf.raw_ops.SaveV2(prefix=theirs, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    assert Table(open_file(theirs + ".index")).block_count() >= 3
    assert files_of(ours) == files_of(theirs)


@needs_tf
def test_save_v2_slices_byte_identical(tmp_path):
    full = np.arange(30, dtype=np.float32).reshape(10, 3)
    other = np.arange(24, dtype=np.int64).reshape(4, 6)
    parts = [("part", "10 3 0,4:-", (10, 3), [(0, 4), (0, -1)], full[0:4]),
             ("plain", "", None, None, np.float32(7)),
             ("part", "10 3 4,6:-", (10, 3), [(4, 6), (0, -1)], full[4:10]),
             ("grid", "4 6 2,2:0,3", (4, 6), [(2, 2), (0, 3)], other[2:4, 0:3]),
             ("grid", "4 6 0,2:0,6", (4, 6), [(0, 2), (0, 6)], other[0:2]),
             ("grid", "4 6 2,2:3,3", (4, 6), [(2, 2), (3, 3)], other[2:4, 3:6]),
             ("whole", "2 2 -:-", (2, 2), [(0, -1), (0, -1)], np.eye(2))]
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "tf")
    with BundleWriter(ours) as w:
        for name, _, shape, extents, value in parts:
            if shape is None:
                w.add(name, value)
            else:
                w.add_slice(name, shape, extents, value)
    tf.raw_ops.SaveV2(prefix=theirs, tensor_names=[p[0] for p in parts],
                      shape_and_slices=[p[1] for p in parts],
                      tensors=[tf.constant(p[4]) for p in parts])
    assert files_of(ours) == files_of(theirs)
    reader = tf.train.load_checkpoint(ours)
    np.testing.assert_array_equal(reader.get_tensor("part"), full)
    np.testing.assert_array_equal(reader.get_tensor("grid")[:, :3], other[:, :3])
    np.testing.assert_array_equal(tfformats.load_tensors(ours)["grid"], other)


@needs_tf
def test_tf_reads_every_dtype_and_shards(tmp_path):
    tensors = sample_tensors()
    prefix = str(tmp_path / "c")
    with BundleWriter(prefix, num_shards=4) as w:
        for n, v in tensors.items():
            w.add(n, v)
    reader = tf.train.load_checkpoint(prefix)
    for n, v in tensors.items():
        got = reader.get_tensor(n)
        if np.asarray(v).dtype == object:
            assert_same(np.asarray(got, dtype=object), v)
        else:
            np.testing.assert_array_equal(np.asarray(got).view(np.asarray(v).dtype), v)


# --- the bundle writer: values and bad input --------------------------------------

def test_round_trip_every_dtype(store):
    tensors = sample_tensors()
    prefix = store.join("c")
    with BundleWriter(prefix) as w:
        for n, v in tensors.items():
            w.add(n, v)
        w.add("qint8", np.array([-1, 2], np.int8), dtype="qint8")
        w.add("quint16", [1, 2], dtype="quint16")
        w.add("int2", np.array([1, -2], ml_dtypes.int2))
    with tfformats.open_checkpoint(prefix) as r:
        for n, v in tensors.items():
            assert_same(r[n], v)
        assert r.dtype("qint8").name == "qint8" and r["qint8"].tolist() == [-1, 2]
        assert r.dtype("quint16").name == "quint16" and r["quint16"].tolist() == [1, 2]
        assert r["int2"].tolist() == [1, -2]


def test_sub_byte_integers_keep_only_their_bits(tmp_path):
    prefix = str(tmp_path / "c")
    with BundleWriter(prefix) as w:
        w.add("i4", np.array([1, -2, 7, -8], ml_dtypes.int4))
        w.add("u4", np.array([1, 2, 15], ml_dtypes.uint4))
        # bytes with junk high bits: the stored bytes keep the low nibble only
        w.add_chunks("junk", "int4", [2], [b"\xf1\x3e"])
    data = Path(prefix + ".data-00000-of-00001").read_bytes()
    assert data == bytes.fromhex("010e0708 01020f 010e")


def test_python_values_and_scalars(tmp_path):
    prefix = str(tmp_path / "c")
    with BundleWriter(prefix) as w:
        w.add("floats", [[1.5, 2.0]])
        w.add("int", 3)
        w.add("bool", True)
        w.add("text", "h\u00e9")
        w.add("bytes_nul", [b"a\x00", b"\x00"])       # trailing NULs survive
        w.add("as_f32", [1, 2], dtype="float32")
        w.add("bf16", [1.5, -2.0], dtype=tfformats.as_dtype("bfloat16"))
    r = tfformats.load_tensors(prefix)
    assert r["floats"].dtype == np.float64 and r["floats"].tolist() == [[1.5, 2.0]]
    assert r["int"].shape == () and r["int"] == 3 and r["bool"].dtype == np.bool_
    assert r["text"].item() == "h\u00e9".encode()
    assert r["bytes_nul"].tolist() == [b"a\x00", b"\x00"]
    assert r["as_f32"].dtype == np.float32 and r["bf16"].dtype == ml_dtypes.bfloat16


def test_non_contiguous_and_foreign_byte_order(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    values = {"strided": base[:, ::2], "transposed": base.T, "big_f4": base.astype(">f4"),
              "big_i8": base.astype(">i8")[::-1], "big_c8": (base + 1j).astype(">c8"),
              "fortran": np.asfortranarray(base)}
    prefix = str(tmp_path / "c")
    with BundleWriter(prefix) as w:
        for n, v in values.items():
            w.add(n, v)
    r = tfformats.load_tensors(prefix)
    for n, v in values.items():
        assert_same(r[n], v)
    if HAVE_TF:
        tr = tf.train.load_checkpoint(prefix)
        for n, v in values.items():
            np.testing.assert_array_equal(tr.get_tensor(n), v)


def test_bad_names(tmp_path):
    with BundleWriter(str(tmp_path / "c")) as w:
        for bad in [b"bytes", 3, None]:
            with pytest.raises(TypeError, match="must be str"):
                w.add(bad, 1.0)
        with pytest.raises(FormatError, match="reserved for the bundle header"):
            w.add("", 1.0)
        with pytest.raises(FormatError, match="reserved"):
            w.add("\x00x", 1.0)
        w.add("a", 1.0)
        with pytest.raises(FormatError, match="duplicate tensor name 'a'"):
            w.add("a", 2.0)
    assert tfformats.load_tensors(str(tmp_path / "c"))["a"] == 1.0


@pytest.mark.parametrize("value", [
    np.array(["2020-01-01"], dtype="datetime64[D]"),
    np.zeros(2, dtype=[("a", "i4"), ("b", "f4")]),
    np.array([1, "x"], dtype=object),
    np.array([None], dtype=object),
])
def test_unsupported_values(tmp_path, value):
    with BundleWriter(str(tmp_path / "c")) as w:
        with pytest.raises(UnsupportedError, match="'bad'"):
            w.add("bad", value)
        w.add("good", 1)  # the writer is still usable
    assert tfformats.list_variables(str(tmp_path / "c")) == [("good", [])]


def test_add_chunks(store):
    values = np.random.default_rng(1).standard_normal((100, 7)).astype(np.float32)
    raw = values.tobytes()
    prefix = store.join("c")
    with BundleWriter(prefix) as w:
        w.add_chunks("bytes", "float32", values.shape, (raw[i:i + 333] for i in range(0, len(raw), 333)))
        w.add_chunks("arrays", np.float32, values.shape, [values[:10], values[10:].astype(">f4")])
        w.add_chunks("memoryviews", "float32", values.shape, [memoryview(raw)])
        with pytest.raises(FormatError, match="needs 2800"):
            w.add_chunks("short", "float32", values.shape, [raw[:100]])
        with pytest.raises(FormatError, match="more than"):
            w.add_chunks("long", "float32", values.shape, [raw, b"x"])
        with pytest.raises(ZeroDivisionError):
            w.add_chunks("failing", "float32", values.shape, (raw[:8], 1 / 0))
        with pytest.raises(UnsupportedError):
            w.add_chunks("strings", "string", [1], [b"x"])
        w.add("after", np.float32(5))
    r = tfformats.open_checkpoint(prefix)
    assert sorted(r) == ["after", "arrays", "bytes", "memoryviews"]
    for n in ["bytes", "arrays", "memoryviews"]:
        np.testing.assert_array_equal(r[n], values)
    assert r.entry("after").offset == 3 * len(raw)  # failed tensors left nothing behind
    assert r["after"] == 5


def test_add_chunks_from_memmap(tmp_path):
    source = np.lib.format.open_memmap(tmp_path / "big.npy", "w+", np.float32, (1000, 1000))
    source[:] = np.arange(1000, dtype=np.float32)
    source.flush()
    prefix = str(tmp_path / "c")
    with BundleWriter(prefix) as w:
        w.add("memmap", source)
        w.add_chunks("rows", "float32", source.shape, (source[i:i + 100] for i in range(0, 1000, 100)))
    r = tfformats.open_checkpoint(prefix)
    np.testing.assert_array_equal(r["memmap"], source)
    np.testing.assert_array_equal(r["rows"], source)


def test_add_slice_checks(tmp_path):
    with BundleWriter(str(tmp_path / "c")) as w:
        w.add_slice("p", [4, 2], [(0, 2), (0, -1)], np.zeros((2, 2), np.float32))
        with pytest.raises(FormatError, match="needs shape"):
            w.add_slice("p", [4, 2], [(2, 2), (0, -1)], np.zeros((3, 2), np.float32))
        with pytest.raises(FormatError, match="does not fit"):
            w.add_slice("p", [4, 2], [(3, 2), (0, -1)], np.zeros((2, 2), np.float32))
        with pytest.raises(FormatError, match="does not match"):
            w.add_slice("p", [4, 2], [(2, 2), (0, -1)], np.zeros((2, 2), np.int32))
        with pytest.raises(FormatError, match="written twice"):
            w.add_slice("p", [4, 2], [(0, 2), (0, -1)], np.zeros((2, 2), np.float32))
        with pytest.raises(FormatError, match="duplicate"):
            w.add("p", 1.0)
        w.add_slice("p", [4, 2], [(2, 2), (0, -1)], np.ones((2, 2), np.float32))
        w.add_slice("whole", [2], [(0, 2)], np.ones(2))   # covers all: a plain tensor
    r = tfformats.open_checkpoint(str(tmp_path / "c"))
    np.testing.assert_array_equal(r["p"], [[0, 0], [0, 0], [1, 1], [1, 1]])
    assert r.entry("whole").slices == ()


# --- atomic writes -------------------------------------------------------------------

def test_missing_directories_are_created(tmp_path):
    prefix = tmp_path / "a" / "b" / "ckpt"
    save_checkpoint(prefix, {"w": np.ones(2)}, object_graph=False)
    assert tfformats.load_tensors(prefix)["w"].tolist() == [1, 1]
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointNotFoundError, match="cannot create the checkpoint directory"):
        save_checkpoint(tmp_path / "file" / "sub" / "ckpt", {"w": np.ones(2)})


def test_abort_keeps_the_old_checkpoint(tmp_path):
    prefix = str(tmp_path / "ckpt")
    save_checkpoint(prefix, {"w": np.arange(3)}, object_graph=False)
    before = files_of(prefix)
    with pytest.raises(RuntimeError):
        with BundleWriter(prefix) as w:
            w.add("w", np.zeros(5))
            raise RuntimeError("stop")
    w = BundleWriter(prefix)
    w.add("w", np.zeros(5))
    w.abort()
    assert files_of(prefix) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.data-00000-of-00001", "ckpt.index"]
    with pytest.raises(FormatError, match="already finished"):
        w.add("x", 1)


def test_killed_writer_leaves_old_checkpoint_intact(tmp_path):
    prefix = str(tmp_path / "ckpt")
    save_checkpoint(prefix, {"w": np.arange(1000.0)}, object_graph=False)
    before = files_of(prefix)
    child = textwrap.dedent(f"""
        import sys, time
        from tfformats import BundleWriter
        def chunks():
            for i in range(1 << 20):
                if i == 12:  # past the 8 MiB file buffer
                    print("ready", flush=True)
                    time.sleep(60)
                yield bytes(1 << 20)
        w = BundleWriter({prefix!r})
        w.add_chunks("huge", "float32", [1 << 38], chunks())
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline() == b"ready\n"
        temps = [p.name for p in tmp_path.iterdir() if ".tempstate" in p.name]
        assert len(temps) == 1 and (tmp_path / temps[0]).stat().st_size >= 8 << 20
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finals = sorted(p.name for p in tmp_path.iterdir() if ".tempstate" not in p.name)
    assert finals == ["ckpt.data-00000-of-00001", "ckpt.index"]
    assert files_of(prefix) == before
    np.testing.assert_array_equal(tfformats.load_tensors(prefix)["w"], np.arange(1000.0))


# --- object graphs ---------------------------------------------------------------------

def test_object_graph_matches_reader_paths(tmp_path):
    tensors = {
        "model/layer_with_weights-0/kernel": np.ones((2, 3), np.float32),
        "model/layer_with_weights-0/bias": np.zeros(3, np.float32),
        "model/layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/m": np.full((2, 3), 0.5),
        "optimizer/iter": np.int64(3),
        "model/dict/a..b": np.float32(1),             # local name "a.b"
        "model/dict/c.Sd": np.float32(2),             # local name "c/d"
        "model/other/.ATTRIBUTES/VARIABLE_VALUE": np.float32(3),   # full key form
    }
    prefix = str(tmp_path / "c")
    save_checkpoint(prefix, tensors, save_counter=4)
    r = tfformats.open_checkpoint(prefix)
    paths = r.object_paths()
    want = {n.partition("/.ATTRIBUTES/")[0] for n in tensors} | {"save_counter"}
    assert set(paths) == want
    assert r[paths["save_counter"]] == 4 and r[paths["model/dict/a..b"]] == 1
    graph = r.object_graph()
    assert all(n.has_checkpoint_values.value for n in graph.nodes)
    slot = r.object_variables()[paths["model/layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/m"]]
    assert (slot.slot_of, slot.slot_name) == ("model/layer_with_weights-0/kernel", "m")
    local_names = {c.local_name for n in graph.nodes for c in n.children}
    assert {"a.b", "c/d", "layer_with_weights-0"} <= local_names
    assert BundleReader(prefix).entry(OBJECT_GRAPH_KEY).offset == max(
        e.offset for e in BundleReader(prefix).entries().values())  # written last


@pytest.mark.parametrize("name", ["a//b", "/a", "a/", "a/b.c", "x/.OPTIMIZER_SLOT/m"])
def test_names_that_are_not_object_paths(tmp_path, name):
    with pytest.raises(FormatError, match="object|OPTIMIZER_SLOT"):
        save_checkpoint(tmp_path / "c", {name: 1.0})
    save_checkpoint(tmp_path / "c", {name: 1.0}, object_graph=False)
    assert tfformats.load_tensors(tmp_path / "c") == {name: 1.0}


def test_two_names_for_one_key(tmp_path):
    with pytest.raises(FormatError, match="also stands for"):
        build_object_graph(["m/w", "m/w/.ATTRIBUTES/VARIABLE_VALUE"])


def test_read_edit_write_keeps_the_given_graph(tmp_path):
    src = FIXTURES / "keras_adam" / "ckpt-2"
    tensors = tfformats.load_tensors(src, include_object_graph=True)
    kernel = "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    tensors[kernel] = tensors[kernel] * 2
    out = str(tmp_path / "edited")
    save_checkpoint(out, tensors)
    with tfformats.open_checkpoint(src) as a, tfformats.open_checkpoint(out) as b:
        assert a[OBJECT_GRAPH_KEY] == b[OBJECT_GRAPH_KEY]   # kept byte for byte
        np.testing.assert_array_equal(b[kernel], a[kernel] * 2)
    del tensors["optimizer/decay/.ATTRIBUTES/VARIABLE_VALUE"]  # now the graph is rebuilt
    save_checkpoint(out, tensors)
    with tfformats.open_checkpoint(out) as b:
        assert "optimizer/decay" not in b.object_paths()
        assert b.object_variables()[kernel].full_name == "dense/kernel"   # names kept


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8),
    st.tuples(st.sampled_from(["float32", "int8", "bfloat16", "complex128", "string"]),
              st.lists(st.integers(0, 3), max_size=3)),
    max_size=6))
def test_round_trip_property(tmp_path_factory, spec):
    rng = np.random.default_rng(0)
    tensors = {}
    for name, (dtype, shape) in spec.items():
        if dtype == "string":
            tensors[name] = np.array([bytes(rng.integers(0, 256, i % 4, dtype=np.uint8))
                                      for i in range(int(np.prod(shape)))],
                                     dtype=object).reshape(shape)
        else:
            tensors[name] = rng.standard_normal(shape).astype(tfformats.as_dtype(dtype).as_numpy_dtype)
    prefix = tmp_path_factory.mktemp("prop") / "c"
    save_checkpoint(prefix, tensors, object_graph=False)
    read = tfformats.load_tensors(prefix)
    assert sorted(read) == sorted(tensors)
    for n, v in tensors.items():
        assert_same(read[n], v)


# --- checkpoint directories -----------------------------------------------------------

def test_checkpoint_manager_rotates(store):
    tmp = store.tmp
    manager = CheckpointManager(tmp, max_to_keep=2)
    for i in range(4):
        assert manager.save({"model/w": np.full(2, i, np.float32)}) == store.join(f"ckpt-{i + 1}")
    assert manager.checkpoints == [store.join("ckpt-3"), store.join("ckpt-4")]
    assert sorted(store.listdir(tmp)) == [
        "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index",
        "ckpt-4.data-00000-of-00001", "ckpt-4.index"]
    state = read_state(tmp)
    assert state.model_checkpoint_path == "ckpt-4"
    assert list(state.all_model_checkpoint_paths) == ["ckpt-3", "ckpt-4"]
    assert len(state.all_model_checkpoint_timestamps) == 2 and state.last_preserved_timestamp > 0
    assert tfformats.latest_checkpoint(tmp) == store.join("ckpt-4")
    with tfformats.open_checkpoint(tmp) as r:
        assert r[r.object_paths()["save_counter"]] == 4
    again = CheckpointManager(tmp, max_to_keep=2, checkpoint_name="ckpt")
    assert again.latest_checkpoint == store.join("ckpt-4")
    assert again.save({"model/w": np.zeros(2)}) == store.join("ckpt-5")
    assert again.checkpoints == [store.join("ckpt-4"), store.join("ckpt-5")]
    assert not fileio.exists(store.join("ckpt-3.index"))


@needs_tf
def test_tf_accepts_checkpoint_manager_state(tmp_path):
    manager = CheckpointManager(tmp_path, max_to_keep=3)
    for i in range(4):
        manager.save({"model/w": np.full(2, i, np.float32)})
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-4")
    module = tf.Module()
    module.w = tf.Variable(np.zeros(2, np.float32))
    ckpt = tf.train.Checkpoint(model=module)
    tf_manager = tf.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=3)
    assert tf_manager.checkpoints == [str(tmp_path / f"ckpt-{i}") for i in (2, 3, 4)]
    ckpt.restore(tf_manager.latest_checkpoint).assert_consumed()
    assert module.w.numpy().tolist() == [3, 3] and int(ckpt.save_counter) == 4
    assert tf_manager.save() == str(tmp_path / "ckpt-5")   # TF continues the numbering


class _Clock:
    """Stands in for the `time` module; the test sets `now`, so both managers
    see the same timestamps however often each reads the clock."""

    def __init__(self, now):
        self.now = now

    def time(self):
        return self.now


def test_keep_checkpoint_every_n_hours_is_checked(tmp_path, monkeypatch):
    for bad in (-1, -0.5, float("nan")):
        with pytest.raises(ValueError, match="keep_checkpoint_every_n_hours"):
            CheckpointManager(tmp_path, max_to_keep=1, keep_checkpoint_every_n_hours=bad)
    clock = _Clock(1.7e9)
    monkeypatch.setattr("tfformats.writer.time", clock)
    manager = CheckpointManager(tmp_path, 1, 0)   # 0 is off, as in TensorFlow
    for _ in range(3):
        clock.now += 7200
        manager.save({"w": np.zeros(2)})
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["ckpt-3.index"]
    assert read_state(tmp_path).last_preserved_timestamp == 1.7e9 - 1


@needs_tf
@pytest.mark.parametrize("max_to_keep, hours", [(2, 1), (2, 0.5), (3, 1), (None, 1)])
def test_keep_checkpoint_every_n_hours_matches_tf(tmp_path, monkeypatch, max_to_keep, hours):
    from tensorflow.python.checkpoint import checkpoint_management

    clock = _Clock(1.7e9)
    monkeypatch.setattr(checkpoint_management, "time", clock)
    monkeypatch.setattr("tfformats.writer.time", clock)
    ours_dir, tf_dir = tmp_path / "ours", tmp_path / "tf"
    ckpt = tf.train.Checkpoint(v=tf.Variable(np.zeros(2, np.float32)))

    def managers():
        return (CheckpointManager(ours_dir, max_to_keep, keep_checkpoint_every_n_hours=hours),
                tf.train.CheckpointManager(ckpt, str(tf_dir), max_to_keep,
                                           keep_checkpoint_every_n_hours=hours))

    def compare():
        assert sorted(p.name for p in ours_dir.iterdir()) == sorted(p.name for p in tf_dir.iterdir())
        ours_state, tf_state = read_state(ours_dir), read_state(tf_dir)
        assert ours_state.model_checkpoint_path == os.path.basename(tf_state.model_checkpoint_path)
        assert (list(ours_state.all_model_checkpoint_paths)
                == [os.path.basename(p) for p in tf_state.all_model_checkpoint_paths])
        assert (list(ours_state.all_model_checkpoint_timestamps)
                == list(tf_state.all_model_checkpoint_timestamps))
        assert ours_state.last_preserved_timestamp == tf_state.last_preserved_timestamp
        assert ([os.path.basename(p) for p in ours.checkpoints]
                == [os.path.basename(p) for p in theirs.checkpoints])

    ours, theirs = managers()
    for i in range(8):
        clock.now += 1200   # 20 minutes: with 1 hour, every third one is kept, exactly on time
        ours.save({"v": np.full(2, i, np.float32)})
        theirs.save()
        compare()
    on_disk = sorted(p.name for p in ours_dir.glob("*.index"))
    if max_to_keep == 2 and hours == 1:
        assert on_disk == ["ckpt-3.index", "ckpt-6.index", "ckpt-7.index", "ckpt-8.index"]
    clock.now += 600
    ours, theirs = managers()   # both pick up the state file and carry on
    for i in range(5):
        clock.now += 1200
        ours.save({"v": np.full(2, i, np.float32)})
        theirs.save()
        compare()
    assert ours.latest_checkpoint == str(ours_dir / "ckpt-13")


# --- TensorFlow restores what we write --------------------------------------------------

def _tf_keras_model():
    import tf_keras
    model = tf_keras.Sequential([tf_keras.Input(shape=(4,)),
                                 tf_keras.layers.Dense(3, activation="relu"),
                                 tf_keras.layers.Dense(2)])
    return model


@needs_tf
@pytest.mark.parametrize("form", ["object_paths", "checkpoint_keys"])
def test_keras_adam_read_edit_write_restores_in_tf(tmp_path, form):
    import tf_keras
    src = FIXTURES / "keras_adam" / "ckpt-2"
    with tfformats.open_checkpoint(src) as reader:
        if form == "object_paths":
            tensors = {path: reader[key] for path, key in reader.object_paths().items()}
            kernel = "model/layer_with_weights-0/kernel"
        else:
            tensors = {key: reader[key] for key in reader}
            kernel = "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
        original = {p: reader[k] for p, k in reader.object_paths().items()}
    tensors[kernel] = tensors[kernel] + 1
    prefix = save_checkpoint(tmp_path / "edited", tensors)

    model = _tf_keras_model()
    optimizer = tf_keras.optimizers.legacy.Adam(learning_rate=0.01)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    status = ckpt.restore(prefix)
    status.assert_existing_objects_matched()
    for i, layer in enumerate(model.layers):
        for weight in ("kernel", "bias"):
            path = f"model/layer_with_weights-{i}/{weight}"
            want = original[path] + (1 if path == "model/layer_with_weights-0/kernel" else 0)
            variable = getattr(layer, weight)
            np.testing.assert_array_equal(variable.numpy(), want)
            for slot in ("m", "v"):
                np.testing.assert_array_equal(
                    optimizer.get_slot(variable, slot).numpy(),
                    original[f"{path}/.OPTIMIZER_SLOT/optimizer/{slot}"])
    assert int(optimizer.iterations) == original["optimizer/iter"]
    assert int(ckpt.save_counter) == original["save_counter"]


@needs_tf
def test_tf_keras_load_weights(tmp_path):
    rng = np.random.default_rng(3)
    weights = {"layer_with_weights-0/kernel": rng.standard_normal((4, 3)).astype(np.float32),
               "layer_with_weights-0/bias": rng.standard_normal(3).astype(np.float32),
               "layer_with_weights-1/kernel": rng.standard_normal((3, 2)).astype(np.float32),
               "layer_with_weights-1/bias": rng.standard_normal(2).astype(np.float32)}
    prefix = save_checkpoint(tmp_path / "weights", weights)
    model = _tf_keras_model()
    model.load_weights(prefix).assert_consumed()
    got = model.get_weights()
    for i, name in enumerate(weights):
        np.testing.assert_array_equal(got[i], weights[name])


@needs_tf
def test_tf_module_restore(tmp_path):
    values = {"model/w": np.arange(6, dtype=np.float32).reshape(2, 3),
              "model/sub/b": np.array([1.0, 2.0]),
              "model/items/0": np.array([b"x", b"yz"], dtype=object),
              "model/table/a..b": np.int32(5),
              "model/table/c.Sd": np.array(1.5, ml_dtypes.bfloat16)}
    prefix = save_checkpoint(tmp_path / "m", values, save_counter=1)
    module = tf.Module()
    module.w = tf.Variable(tf.zeros([2, 3]))
    module.sub = tf.Module()
    module.sub.b = tf.Variable(tf.zeros([2], tf.float64))
    module.items = [tf.Variable([b"", b""])]
    module.table = {"a.b": tf.Variable(0), "c/d": tf.Variable(tf.zeros([], tf.bfloat16))}
    tf.train.Checkpoint(model=module).restore(prefix).assert_consumed()
    np.testing.assert_array_equal(module.w.numpy(), values["model/w"])
    assert module.sub.b.numpy().tolist() == [1.0, 2.0]
    assert module.items[0].numpy().tolist() == [b"x", b"yz"]
    assert int(module.table["a.b"]) == 5 and float(module.table["c/d"]) == 1.5


def test_header_bytes_on_disk_are_little_endian(tmp_path):
    prefix = str(tmp_path / "c")
    save_checkpoint(prefix, {"x": np.array([1.5], ">f8")}, object_graph=False)
    data = Path(prefix + ".data-00000-of-00001").read_bytes()
    assert struct.unpack("<d", data) == (1.5,)


# --- failure paths --------------------------------------------------------------------

def test_finish_or_abort_inside_the_with_block(tmp_path):
    with BundleWriter(str(tmp_path / "a")) as w:
        w.add("x", 1.0)
        assert w.finish() == str(tmp_path / "a")   # the block's end must not finish again
    with BundleWriter(str(tmp_path / "b")) as w:
        w.add("x", 1.0)
        w.abort()
    assert tfformats.load_tensors(tmp_path / "a") == {"x": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.data-00000-of-00001", "a.index"]
    with pytest.raises(FormatError, match="already finished"):
        w.add_slice("p", [4], [(0, 2)], np.zeros(2))


def test_add_chunks_refuses_arrays_of_another_dtype(tmp_path):
    prefix = str(tmp_path / "c")
    with BundleWriter(prefix) as w:
        with pytest.raises(UnsupportedError, match="chunk of float64 for a float32 tensor"):
            w.add_chunks("f64", "float32", [4], [np.arange(2.0)])
        w.add_chunks("raw", "float32", [2], [np.ones(2, np.float32).view(np.uint8)])
        w.add_chunks("strided", "int4", [3], [np.array([1, 0, 0xF2, 0, 3], np.uint8)[::2]])
    r = tfformats.load_tensors(prefix)
    assert r["raw"].tolist() == [1.0, 1.0] and r["strided"].tolist() == [1, 2, 3]


def test_failed_index_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    prefix = str(tmp_path / "ckpt")
    save_checkpoint(prefix, {"w": np.arange(3)}, object_graph=False)
    before = files_of(prefix)

    def disk_full(self):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(TableBuilder, "finish", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(prefix, {"w": np.zeros(5)}, object_graph=False)
    assert files_of(prefix) == before   # the new data file was never renamed over the old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.data-00000-of-00001", "ckpt.index"]


class _FullDisk:
    """A data file on a full disk: writes, flushes and close all fail."""

    def __init__(self, file):
        self._file = file
        self.closed = False

    def _fail(self, *args):
        raise OSError(28, "No space left on device")

    write = flush = seek = truncate = _fail

    def close(self):
        self.closed = True
        self._file.close()
        self._fail()


def test_write_error_that_cannot_be_undone_aborts_the_writer(tmp_path):
    w = BundleWriter(str(tmp_path / "c"))
    w.add("a", np.ones(3))
    w._shards[0].file = _FullDisk(w._shards[0].file)
    with pytest.raises(OSError, match="No space"):
        w.add("b", np.ones(3))
    assert list(tmp_path.iterdir()) == []   # the temporary data file is gone
    with pytest.raises(FormatError, match="already finished or aborted"):
        w.add("c", np.ones(3))   # the file's end is unknown: no more tensors


def test_checkpoint_manager_with_absolute_paths_in_the_state(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manager = CheckpointManager("run", max_to_keep=2)
    manager.save({"w": np.zeros(2)})
    manager.save({"w": np.ones(2)})
    state = (tmp_path / "run" / "checkpoint").read_text()
    (tmp_path / "run" / "checkpoint").write_text(state.replace('"ckpt', f'"{tmp_path}/run/ckpt'))
    manager = CheckpointManager("run", max_to_keep=2)
    assert manager.save({"w": np.full(2, 7.0)}, checkpoint_number=2) == os.path.join("run", "ckpt-2")
    manager.save({"w": np.full(2, 3.0)})   # rotates out ckpt-2's old entry only
    assert list(read_state("run").all_model_checkpoint_paths) == ["ckpt-2", "ckpt-3"]
    with tfformats.open_checkpoint("run/ckpt-2") as r:
        assert r[r.object_paths()["w"]].tolist() == [7, 7]


def test_checkpoint_manager_state_with_too_few_timestamps(tmp_path):
    manager = CheckpointManager(tmp_path, max_to_keep=None)
    for _ in range(3):
        manager.save({"w": np.zeros(2)})
    state = read_state(tmp_path)
    del state.all_model_checkpoint_timestamps[1:]
    (tmp_path / "checkpoint").write_text(str(state))
    again = CheckpointManager(tmp_path, max_to_keep=2)
    assert len(again.checkpoints) == 3   # none is forgotten (and left undeleted)
    again.save({"w": np.zeros(2)})
    assert list(read_state(tmp_path).all_model_checkpoint_paths) == ["ckpt-3", "ckpt-4"]
    assert not (tmp_path / "ckpt-2.index").exists()


def test_checkpoint_manager_records_state_before_deleting(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, max_to_keep=1)
    manager.save({"w": np.zeros(2)})

    def crash(prefix):
        raise KeyboardInterrupt
    monkeypatch.setattr("tfformats.writer._delete_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        manager.save({"w": np.zeros(2)})
    assert list(read_state(tmp_path).all_model_checkpoint_paths) == ["ckpt-2"]


@pytest.mark.parametrize("sync, existing, synced", [
    (None, False, False),   # a new checkpoint: written like TensorFlow, no fsync
    (None, True, True),     # replacing one: fsync first, so the old one is never lost
    (True, False, True),
    (False, True, False),
])
def test_sync_policy(tmp_path, monkeypatch, sync, existing, synced):
    prefix = str(tmp_path / "ckpt")
    if existing:
        save_checkpoint(prefix, {"x": np.zeros(3)}, object_graph=False)
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    save_checkpoint(prefix, {"x": np.ones(3)}, object_graph=False, sync=sync)
    assert bool(calls) == synced
    with tfformats.open_checkpoint(prefix) as reader:
        assert reader["x"].tolist() == [1.0, 1.0, 1.0]
