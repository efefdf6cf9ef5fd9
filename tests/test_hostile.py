"""Hostile input built to hang, bloat or crash: FIFOs and other non-files,
inputs that exceed a limit (tfformats/limits.py), and shapes, bytes and
archives that numpy, protobuf or zipfile would fail on in their own words."""

import os
import shutil
import threading

import numpy as np
import pytest

import tfformats as tff
from tfformats import fileio

from conftest import FIXTURES, copy_fixture

DTYPES = FIXTURES / "dtypes" / "ckpt"
KERAS_MODEL = FIXTURES / "tf_keras_savedmodel"


def _finishes(fifo, call, timeout=10):
    """Run `call` in a thread; a call still blocked after `timeout` seconds
    (in open() of the FIFO, waiting for a writer) is released by opening the
    FIFO for writing, and the test fails instead of hanging. Returns what
    the call raised or returned."""
    result = {}

    def run():
        try:
            result["value"] = call()
        except BaseException as exc:   # noqa: B902 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)   # a writer: open() returns
        os.close(fd)
        thread.join(timeout)
        pytest.fail(f"blocked on the FIFO {fifo}")
    return result


def _fifo_in_place_of(path):
    os.remove(path) if os.path.lexists(path) else None
    os.mkfifo(path)
    return str(path)


def _copy_model(tmp_path):
    return shutil.copytree(KERAS_MODEL, tmp_path / "model")


# (what is replaced by a FIFO, how it is read)
FIFO_CASES = {
    "data shard": (lambda t: copy_fixture(DTYPES, t / "c").parent / "ckpt.data-00000-of-00001",
                   lambda t: tff.open_checkpoint(t / "c" / "ckpt")),
    "index": (lambda t: copy_fixture(DTYPES, t / "c").parent / "ckpt.index",
              lambda t: tff.open_checkpoint(t / "c" / "ckpt")),
    "state file": (lambda t: copy_fixture(DTYPES, t / "c").parent / "checkpoint",
                   lambda t: tff.latest_checkpoint(t / "c")),
    "saved_model.pb": (lambda t: _copy_model(t) / "saved_model.pb",
                       lambda t: tff.load_saved_model(t / "model")),
    "fingerprint.pb": (lambda t: _copy_model(t) / "fingerprint.pb",
                       lambda t: __import__("tfformats.fingerprint").fingerprint
                       .read_fingerprint(t / "model")),
    "keras_metadata.pb": (lambda t: _copy_model(t) / "keras_metadata.pb",
                          lambda t: tff.load_saved_model(t / "model").keras_metadata),
    "the path itself": (lambda t: t / "ckpt", lambda t: tff.open_checkpoint(t / "ckpt")),
    "graph file": (lambda t: t / "graph.pb", lambda t: tff.load_graph_def(t / "graph.pb")),
}


@pytest.mark.parametrize("case", sorted(FIFO_CASES))
def test_a_fifo_is_refused_not_waited_on(tmp_path, case):
    place, read = FIFO_CASES[case]
    fifo = _fifo_in_place_of(place(tmp_path))
    result = _finishes(fifo, lambda: read(tmp_path))
    error = result.get("error")
    assert isinstance(error, tff.TFFormatsError), result
    assert "FIFO" in str(error) or "no such" in str(error) or "not" in str(error), error


def test_fileio_refuses_every_kind_of_non_file(tmp_path):
    fifo = _fifo_in_place_of(tmp_path / "fifo")
    for opener in (fileio.open_file, fileio.read_file, lambda p: fileio.read_at(p, 0, 4)):
        error = _finishes(fifo, lambda: opener(fifo)).get("error")
        assert isinstance(error, tff.FormatError) and "is a FIFO, expected a regular file" in str(error)
        with pytest.raises(tff.FormatError, match="is a directory"):
            opener(tmp_path)
        with pytest.raises(tff.FormatError, match="is a device"):
            opener("/dev/zero")   # would read forever
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(tff.FormatError, match="loop of symbolic links"):
        fileio.open_file(tmp_path / "loop")
    with pytest.raises(tff.FormatError, match="loop of symbolic links"):
        fileio.read_file(tmp_path / "loop")


# --- partitioned tensors: the tiling check grows as N log N, not N**2 -----------

def _counted(name):
    def op(self, other):
        _Counted.ops += 1
        return getattr(int, name)(self, other)
    return op


class _Counted(int):
    """An int that counts the comparisons and hashes made of it."""
    ops = 0
    __lt__, __le__, __gt__, __ge__ = map(_counted, ("__lt__", "__le__", "__gt__", "__ge__"))
    __eq__, __ne__ = _counted("__eq__"), _counted("__ne__")

    def __hash__(self):
        _Counted.ops += 1
        return int.__hash__(self)


def _tiling_ops(n, axis):
    """Comparisons the tiling check makes for n parts split along `axis` of (n, 3)."""
    from tfformats import slices
    c = _Counted
    boxes = [((c(i), c(i + 1)), (c(0), c(3))) if axis == 0 else ((c(0), c(3)), (c(i), c(i + 1)))
             for i in range(n)]
    shape = (c(n), c(3)) if axis == 0 else (c(3), c(n))
    _Counted.ops = 0
    assert slices.tiles(boxes, shape)
    return _Counted.ops


@pytest.mark.parametrize("axis", [0, 1])
def test_tiling_check_is_not_quadratic(axis):
    # 4x the parts: about 4x the work for N log N, 16x for N**2.
    assert _tiling_ops(8000, axis) < 8 * _tiling_ops(2000, axis)


def test_twelve_thousand_parts_read(tmp_path):
    from tfformats import slices
    from test_bad_input import make_entry, write_index
    n = 12000
    full = make_entry(shape=(2, n), size=0)
    entries = {}
    for i in range(n):
        part = full.slices.add()
        part.extent.add()
        part.extent.add(start=i, length=1)
        entries[slices.slice_key("p", ((0, -1), (i, 1)))] = make_entry(shape=(2, 1), offset=8 * i,
                                                                        size=8)
    entries["p"] = full
    # Part i holds column i: elements 2i and 2i + 1.
    prefix = write_index(tmp_path, entries, data=np.arange(2 * n, dtype=np.float32).tobytes())
    with tff.open_checkpoint(prefix, verify=False) as reader:
        value = reader["p"]
    assert value.shape == (2, n)
    assert value[1, n - 1] == 2 * n - 1 and value[0, 5] == 10 and value[1, 5] == 11


# --- shapes numpy cannot make: tfformats errors, not numpy's ValueError -----------

def _bundle_with(tmp_path, shape, size=0):
    from test_bad_input import make_entry, write_index
    return write_index(tmp_path, {"t": make_entry(shape=shape, size=size)})


NUMPY_SHAPES = [((0, 2**62, 2**62), "numpy cannot represent"), ((0, 2**62), "numpy cannot"),
                ((1,) * 65, "rank 65 is more than numpy's 64")]


@pytest.mark.parametrize("shape,message", NUMPY_SHAPES)
def test_bundle_shape_numpy_cannot_make(tmp_path, shape, message):
    prefix = _bundle_with(tmp_path, shape, size=4 if 0 not in shape else 0)
    with tff.open_checkpoint(prefix, verify=False) as reader:
        for read in (lambda: reader["t"], lambda: reader.get_slice("t")[0]):
            with pytest.raises(tff.UnsupportedError, match=f"b.index: tensor 't': {message}"):
                read()


@pytest.mark.parametrize("shape,message", NUMPY_SHAPES)
def test_v1_shape_numpy_cannot_make(tmp_path, shape, message):
    from test_v1 import FLOAT, meta_of, record, write_v1
    full = tuple((0, -1) for _ in shape)
    path = write_v1(tmp_path / "v1", meta_of(("t", FLOAT, list(shape), [full])),
                    {("t", full): record("t", "float_val", [1.0])})
    with tff.open_checkpoint(path) as reader:
        with pytest.raises(tff.UnsupportedError, match=f"v1: tensor 't'.*{message}"):
            reader["t"]


@pytest.mark.parametrize("shape,message", NUMPY_SHAPES)
def test_const_shape_numpy_cannot_make(tmp_path, shape, message):
    from tfformats import protos
    graph = protos.GraphDef()
    node = graph.node.add(name="c", op="Const")
    tensor = node.attr["value"].tensor
    tensor.dtype = 1
    for d in shape:
        tensor.tensor_shape.dim.add(size=d)
    (tmp_path / "g.pb").write_bytes(graph.SerializeToString())
    with pytest.raises(tff.UnsupportedError, match=f"g.pb: Const node 'c'.*{message}"):
        tff.graph_constants(tmp_path / "g.pb")


def test_partitioned_shape_is_checked_before_allocating(tmp_path, monkeypatch):
    """2**31 float32 elements (8 GiB) from a 4-byte part: refused before np.empty."""
    from tfformats import slices
    from test_bad_input import make_entry, write_index
    full = make_entry(shape=(2**31,), size=0)
    full.slices.add().extent.add(start=0, length=2**31)
    prefix = write_index(tmp_path, {"t": full, slices.slice_key("t", ((0, 2**31),)):
                                    make_entry(shape=(2**31,), size=4)})
    real_empty = np.empty
    monkeypatch.setattr(np, "empty", lambda shape, *a, **k: pytest.fail(f"np.empty({shape})")
                        if np.prod(shape, dtype=object) > 2**20 else real_empty(shape, *a, **k))
    with tff.open_checkpoint(prefix, verify=False) as reader:
        for read in (lambda: reader["t"], lambda: reader.get_slice("t")[:2**30]):
            with pytest.raises(tff.LimitError, match="'t' of 8589934592 bytes from 64 bytes.*"
                               "max_tensor_file_ratio"):
                read()
    with tff.limits.override(max_tensor_file_ratio=2**28):   # raised: the part's size is wrong
        with tff.open_checkpoint(prefix, verify=False) as reader:
            with pytest.raises(tff.FormatError, match="needs 8589934592 bytes"):
                reader.get_slice("t")[:4]


def test_parts_per_tensor_limit(tmp_path):
    from tfformats import slices
    from test_bad_input import make_entry, write_index
    full = make_entry(shape=(4,), size=0)
    entries = {}
    for i in range(4):
        full.slices.add().extent.add(start=i, length=1)
        entries[slices.slice_key("p", ((i, 1),))] = make_entry(shape=(1,), offset=4 * i, size=4)
    entries["p"] = full
    prefix = write_index(tmp_path, entries, data=np.arange(4, dtype=np.float32).tobytes())
    with tff.open_checkpoint(prefix, verify=False) as reader:
        assert reader["p"].tolist() == [0, 1, 2, 3]
        with tff.limits.override(max_parts=3):
            with pytest.raises(tff.LimitError, match="'p': its parts: 4 exceeds the limit "
                               r"max_parts=3; .*tfformats.limits.override\(max_parts=...\)"):
                reader["p"]


# --- prefix-compressed keys: what a block may make the reader build ---------------

def _shared_prefix_block(prefix_len, count):
    """A block whose keys all share one `prefix_len`-byte prefix, stored once:
    a few bytes per entry, `prefix_len` bytes per key once expanded."""
    from tfformats._pure import encode_varint as varint
    body = bytearray(varint(0) + varint(prefix_len + 3) + varint(1) + b"k" * prefix_len
                     + (0).to_bytes(3, "big") + b"v")
    for i in range(1, count):
        body += varint(prefix_len) + varint(3) + varint(1) + i.to_bytes(3, "big") + b"v"
    return bytes(body) + (0).to_bytes(4, "little") + (1).to_bytes(4, "little"), \
        b"k" * prefix_len + (count - 1).to_bytes(3, "big")


def _table_of(path, block, last_key):
    """A table file holding the one data block `block`."""
    from tfformats.sstable import TableBuilder

    class Raw:
        def finish(self):
            return block

        def reset(self):
            pass

    with open(path, "wb") as f:
        builder = TableBuilder(f)
        builder._pending_handle = builder._write_block(Raw())
        builder._last_key, builder._entries = last_key, 1
        builder.finish()
    return path


def test_keys_sharing_a_long_prefix_are_capped(tmp_path):
    """40,000 entries sharing one 256 KiB key: 10 GiB of keys from a 622 KB block."""
    from tfformats import sstable
    block, last = _shared_prefix_block(256 << 10, 40000)
    assert len(block) < 700_000
    path = _table_of(tmp_path / "t.index", block, last)
    table = sstable.Table(fileio.open_file(path))
    with pytest.raises(tff.LimitError, match="max_key_bytes=65536"):   # one key is too long
        table.get(last)
    with tff.limits.override(max_key_bytes=1 << 20):   # so is their sum
        with pytest.raises(tff.LimitError, match=r"t.index: data block at offset 0: bytes of its "
                           r"keys \(shared prefixes expanded\) up to offset \d+: \d+ exceeds "
                           r"the limit max_block_key_bytes=67108864"):
            table.get(last)
        with pytest.raises(tff.LimitError, match="max_block_key_bytes"):
            list(table.items())


def test_key_limits_can_be_raised(tmp_path):
    from tfformats import sstable
    block, last = _shared_prefix_block(100 << 10, 50)
    path = _table_of(tmp_path / "t.index", block, last)
    with pytest.raises(tff.LimitError, match=r"bytes of the key at offset 0: 102403 exceeds the "
                       r"limit max_key_bytes=65536; .*override\(max_key_bytes=...\)"):
        sstable.Table(fileio.open_file(path)).get(last)
    with tff.limits.override(max_key_bytes=1 << 20):
        assert sstable.Table(fileio.open_file(path)).get(last) == b"v"
        with tff.limits.override(max_block_key_bytes=4 << 20):
            with pytest.raises(tff.LimitError, match="max_block_key_bytes=4194304"):
                sstable.Table(fileio.open_file(path)).get(last)
    assert tff.limits.current() == tff.limits.DEFAULTS


@pytest.mark.parametrize("limit,value", [("max_index_bytes", 1000), ("max_block_bytes", 100),
                                         ("max_index_entries", 5)])
def test_index_limits(limit, value):
    from tfformats import sstable
    with tff.limits.override(**{limit: value}):
        with pytest.raises(tff.LimitError, match=f"ckpt.index.*exceeds the limit {limit}={value}"):
            with tff.open_checkpoint(DTYPES) as reader:
                reader.get_variable_to_shape_map()
    with tff.open_checkpoint(DTYPES) as reader:
        assert len(reader.get_variable_to_shape_map()) > 5


def test_unknown_limit_is_a_type_error():
    with pytest.raises(TypeError):
        with tff.limits.override(max_everything=1):
            pass


# --- graph_constants: a cap on all constants together --------------------------

def _fill_graph(count, size):
    """`count` Const nodes of shape [size] holding one float each."""
    from tfformats import protos
    graph = protos.GraphDef()
    for i in range(count):
        tensor = graph.node.add(name=f"c{i}", op="Const").attr["value"].tensor
        tensor.dtype = 1
        tensor.tensor_shape.dim.add(size=size)
        tensor.float_val.append(1.0)
    return graph


def test_graph_constants_total_is_capped(tmp_path):
    """Eight nodes of shape [2**29 - 1] holding one float each: 352 bytes of
    GraphDef for 16 GiB of arrays, each node under the per-node cap. The same
    graph scaled down to 1 MiB nodes against a 2.5 MiB limit."""
    attack = _fill_graph(8, 2**29 - 1).SerializeToString()
    assert len(attack) < 400
    assert 8 * (2**29 - 1) * 4 > tff.limits.DEFAULTS.max_graph_constants_bytes
    (tmp_path / "g.pb").write_bytes(_fill_graph(8, 2**18).SerializeToString())
    with tff.limits.override(max_graph_constants_bytes=5 << 19):
        with pytest.raises(tff.LimitError, match=r"g.pb: Const node 'c2': bytes of all "
                           r"constants read so far: 3145728 exceeds the limit "
                           r"max_graph_constants_bytes=2621440"):
            tff.graph_constants(tmp_path / "g.pb")
    assert len(tff.graph_constants(tmp_path / "g.pb")) == 8


# --- object graphs and nested structures ------------------------------------------

def test_object_graph_node_limit(tmp_path):
    assert len(tff.load_saved_model(KERAS_MODEL).meta_graphs[0].object_nodes) > 3
    with tff.limits.override(max_object_graph_nodes=3):
        with pytest.raises(tff.LimitError, match="SavedObjectGraph: nodes of the object graph: "
                           r"\d+ exceeds the limit max_object_graph_nodes=3"):
            tff.load_saved_model(KERAS_MODEL).meta_graphs[0].object_nodes
        with pytest.raises(tff.LimitError, match="ckpt-1: .*nodes of the object graph: "
                           r"\d+ exceeds the limit max_object_graph_nodes=3"):
            with tff.open_checkpoint(FIXTURES / "keras_adam" / "ckpt-1") as reader:
                reader.object_graph()


def test_structure_depth_limit():
    from tfformats import protos
    from tfformats.saved_model import decode_structure
    value = root = protos.message_class("tfformats.StructuredValue")()
    for _ in range(150):
        value = value.list_value.values.add()
    value.int64_value = 7
    with pytest.raises(tff.LimitError, match="nesting depth: 101 exceeds the limit "
                       "max_proto_depth=100"):
        decode_structure(root)
    with tff.limits.override(max_proto_depth=200):
        inner = decode_structure(root)
        for _ in range(150):
            (inner,) = inner
        assert inner == 7


# --- foreign exceptions: each a tfformats error naming the file --------------------

@pytest.mark.parametrize("content,message", [
    (b'model_checkpoint_path: "\xff\xfe"\n', "not a UTF-8 text CheckpointState"),
    (b'model_checkpoint_path: "ck\x00pt"\n', "a NUL byte at offset 26"),
    (b'model_checkpoint_path: "ck\\000pt"\n', "a NUL byte"),   # escaped in the text proto
])
def test_state_file_bytes(tmp_path, content, message):
    (tmp_path / "checkpoint").write_bytes(content)
    for call in (tff.latest_checkpoint, tff.open_checkpoint):
        with pytest.raises(tff.FormatError, match=f"checkpoint: {message}"):
            call(tmp_path)


@pytest.mark.parametrize("where", ["checkpoint", "ckpt.index", "ckpt.data-00000-of-00001"])
@pytest.mark.parametrize("kind", ["directory", "symlink loop"])
def test_a_directory_or_symlink_loop_where_a_file_is_expected(tmp_path, where, kind):
    prefix = copy_fixture(DTYPES, tmp_path / "c")
    if where == "checkpoint":
        (tmp_path / "c" / "checkpoint").write_text('model_checkpoint_path: "ckpt"\n')
    path = tmp_path / "c" / where
    path.unlink()
    if kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(path)
    with pytest.raises(tff.TFFormatsError, match=str(path) if where != "ckpt.index" else "c"):
        with tff.open_checkpoint(tmp_path / "c" if where == "checkpoint" else prefix) as reader:
            reader.get_tensor(next(iter(reader)))


def test_garbage_keras_metadata(tmp_path):
    from tfformats import protos
    model = _copy_model(tmp_path)
    # A node whose field 1 (the old layout's version) is not a VersionDef.
    node = b"\x0a\x03\xff\xff\xff"
    (model / "keras_metadata.pb").write_bytes(b"\x0a" + bytes([len(node)]) + node)
    with pytest.raises(tff.FormatError, match="keras_metadata.pb: not a valid"):
        tff.load_saved_model(model).keras_metadata
    (model / "keras_metadata.pb").write_bytes(b"\xff\xff\xff")
    with pytest.raises(tff.FormatError, match="keras_metadata.pb: not a valid SavedMetadata"):
        tff.load_saved_model(model).keras_metadata
    assert protos.SavedMetadata   # the message the file must hold


@pytest.mark.parametrize("collection", ["trainable_variables", "variables"])
def test_garbage_tf1_collection_bytes(tmp_path, collection):
    from tfformats import protos
    model = shutil.copytree(FIXTURES / "tf1_builder", tmp_path / "m")
    proto = protos.SavedModel.FromString((model / "saved_model.pb").read_bytes())
    values = proto.meta_graphs[0].collection_def[collection].bytes_list.value
    assert len(values)
    values[0] = b"\x0a\xff\xff"
    (model / "saved_model.pb").write_bytes(proto.SerializeToString())
    with pytest.raises(tff.FormatError, match=f"m: collection '{collection}'"):
        tff.load_saved_model(model).meta_graphs[0].variable_infos()


def test_assets_symlink_loop_on_save(tmp_path):
    model = shutil.copytree(FIXTURES / "tft_assets", tmp_path / "m")
    (model / "assets" / "loop").symlink_to(model / "assets" / "loop")
    loaded = tff.load_saved_model(model)
    with pytest.raises(tff.FormatError, match="m/assets: cannot be copied"):
        loaded.save(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]   # no temporary left


def _npz_with(path, info_changes):
    """A valid one-array .npz whose member header is then altered."""
    import zipfile
    np.savez(path, a=np.arange(4.0))
    data = bytearray(path.read_bytes())
    for offset_of, value in info_changes:
        for at in offset_of(data):
            data[at:at + 2] = value.to_bytes(2, "little")
    path.write_bytes(bytes(data))
    return zipfile


def _headers(data, signature, field):
    at, out = 0, []
    while (at := data.find(signature, at)) >= 0:
        out.append(at + field)
        at += 4
    return out


@pytest.mark.parametrize("change,message", [
    ((6, 8, 0x1), "encrypted"),         # general-purpose flag bit 0 (both headers)
    ((8, 10, 99), "compression method 99"),   # AES/unknown method
])
def test_npz_members_zipfile_cannot_read(tmp_path, change, message):
    local, central, value = change
    path = tmp_path / "a.npz"
    _npz_with(path, [(lambda d: _headers(d, b"PK\x03\x04", local), value),
                     (lambda d: _headers(d, b"PK\x01\x02", central), value)])
    with pytest.raises(tff.UnsupportedError, match=f"a.npz: array 'a': .*{message}"):
        tff.npz_to_checkpoint(path, tmp_path / "out" / "ckpt")


def _safetensors(path, header, data):
    import json
    import struct
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


def test_safetensors_overlapping_offsets_refused(tmp_path):
    data = np.arange(4, dtype=np.float32).tobytes()
    path = _safetensors(tmp_path / "o.safetensors", {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, data)
    with pytest.raises(tff.FormatError, match="o.safetensors: tensor 'b': its bytes 8..16 "
                       "overlap those before byte 16"):
        tff.safetensors_to_checkpoint(path, tmp_path / "out" / "ckpt")
    path = _safetensors(tmp_path / "g.safetensors", {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}}, data)
    with pytest.raises(tff.FormatError, match="tensor 'b': its bytes 12..16 leave a gap"):
        tff.safetensors_to_checkpoint(path, tmp_path / "out" / "ckpt")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_safetensors_reference_loader_agrees_on_overlap(tmp_path):
    import safetensors.numpy
    path = _safetensors(tmp_path / "o.safetensors", {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}},
        np.arange(4, dtype=np.float32).tobytes())
    with pytest.raises(Exception):
        safetensors.numpy.load_file(str(path))


def test_safetensors_names_that_are_not_utf8(tmp_path):
    from test_bad_input import make_entry, write_index
    path = tmp_path / "s.safetensors"
    with open(path, "wb") as f:   # json.dumps escapes the lone surrogate as \ud800
        header = b'{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
        f.write(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(tff.FormatError, match="s.safetensors: tensor name .* is not valid UTF-8"):
        tff.safetensors_to_checkpoint(path, tmp_path / "out" / "ckpt")
    # A checkpoint key that is not UTF-8: no safetensors name can hold it.
    prefix = write_index(tmp_path, {b"w\xff": make_entry(size=16)},
                         data=np.zeros(4, np.float32).tobytes())
    with pytest.raises(tff.UnsupportedError, match="b: safetensors names are UTF-8 text"):
        tff.checkpoint_to_safetensors(prefix, tmp_path / "x.safetensors")
    assert tff.checkpoint_to_safetensors(prefix, tmp_path / "x.safetensors",
                                         skip_unsupported=True) == ["w\udcff"]


def test_full_disk_is_a_storage_error(tmp_path):
    """A file size limit (RLIMIT_FSIZE) makes writes fail with EFBIG, as a full
    file system or quota fails with ENOSPC/EDQUOT: a StorageError naming the
    file, and nothing left behind."""
    import errno
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    big = {"w": np.zeros(1 << 20, np.float32)}   # 4 MiB
    source = tff.save_checkpoint(str(tmp_path / "src" / "ckpt"), big)
    out = tmp_path / "out"
    out.mkdir()
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with pytest.raises(tff.StorageError, match=r"out/ckpt\.data-00000.*cannot write") as e:
            tff.save_checkpoint(str(out / "ckpt"), big)
        with pytest.raises(tff.StorageError, match=r"out/x\.npz.*cannot write"):
            tff.checkpoint_to_npz(source, out / "x.npz")
        with pytest.raises(tff.StorageError, match=r"out/x\.safetensors.*cannot write"):
            tff.checkpoint_to_safetensors(source, out / "x.safetensors")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert e.value.errno == errno.EFBIG and isinstance(e.value, OSError)
    assert list(out.iterdir()) == []


# --- a conversion that fails leaves nothing behind --------------------------------

@pytest.mark.parametrize("convert,dst", [
    ("checkpoint_to_checkpoint", "out/ckpt"), ("checkpoint_to_npz", "out/x.npz"),
    ("checkpoint_to_safetensors", "out/x.safetensors"),
])
def test_failed_conversion_leaves_no_temporary_files(tmp_path, convert, dst):
    """The last tensor is damaged: its ChecksumError comes after the other
    tensors were written to temporary files, which must all go."""
    src = tff.save_checkpoint(str(tmp_path / "src" / "ckpt"),
                              {"a": np.arange(1000, dtype=np.float32),
                               "z": np.arange(1000, dtype=np.float32)}, object_graph=False)
    data = tmp_path / "src" / "ckpt.data-00000-of-00001"
    damaged = bytearray(data.read_bytes())
    with tff.open_checkpoint(src) as reader:
        z = reader.entry("z")
    damaged[z.offset + z.size - 1] ^= 1
    data.write_bytes(bytes(damaged))
    (tmp_path / "out").mkdir()
    with pytest.raises(tff.ChecksumError, match="'z'"):
        getattr(tff, convert)(src, tmp_path / dst)
    assert list((tmp_path / "out").iterdir()) == []


def test_readme_lists_every_limit_with_its_default():
    import dataclasses
    import pathlib
    import re
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(max_\w+)` \| ([^|]+) \|", readme, re.M))
    fields = {f.name: f.default for f in dataclasses.fields(tff.limits.Limits)}
    assert set(rows) == set(fields)
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for name, text in rows.items():
        number, _, unit = text.strip().partition(" ")
        assert int(number.replace(",", "")) * units.get(unit, 1) == fields[name], name


def test_validate_reports_hostile_files_as_findings_not_errors(tmp_path):
    """Each case above, through `validate`: a finding of what is wrong, not an
    "error" finding of a check that broke on an exception nobody foresaw."""
    from tfformats import slices
    from tfformats.validate import validate
    from test_bad_input import make_entry, write_index
    cases = {}
    for name in ("s0", "s1", "p"):
        (tmp_path / name).mkdir()
    for i, shape in enumerate([(1,) * 65, (0, 2**62, 2**62)]):
        cases[f"shape {i}"] = write_index(tmp_path / f"s{i}", {"t": make_entry(shape=shape, size=0)})
    full = make_entry(shape=(2**31,), size=0)
    full.slices.add().extent.add(start=0, length=2**31)
    cases["partitioned"] = write_index(tmp_path / "p", {"t": full, slices.slice_key(
        "t", ((0, 2**31),)): make_entry(shape=(2**31,), size=4)})
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "checkpoint").write_bytes(b'model_checkpoint_path: "a\x00"\n')
    cases["state file"] = tmp_path / "state"
    fifo_dir = copy_fixture(DTYPES, tmp_path / "f").parent
    _fifo_in_place_of(fifo_dir / "ckpt.data-00000-of-00001")
    cases["fifo"] = fifo_dir
    for case, path in cases.items():
        report = _finishes(fifo_dir / "ckpt.data-00000-of-00001", lambda: validate(path))["value"]
        assert report.findings, case
        assert [f for f in report.findings if f.check == "error"] == [], (case, report.findings)
