"""TF1 V1 checkpoints (one table file per shard) against what TensorFlow read
back from the files it wrote (fixtures/tf1_v1), plus damaged and hostile ones."""

import base64
import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfformats as tff
from tfformats import cuda, fileio, protos, slices, sstable, v1
from tfformats.bundle import TensorStore

from conftest import FIXTURES, HAVE_TF, assert_same_tensor, expected_array, requires_tf
from test_cli import one_error_line, run, run_json

V1_DIR = FIXTURES / "tf1_v1"
V1_FILE = V1_DIR / "model.ckpt-7"
SHARDED = V1_DIR / "sharded"
EXPECTED = json.loads((V1_DIR / "expected_v1.json").read_text())
EXPECTED_SHARDED = json.loads((SHARDED / "expected_v1.json").read_text())


def tf_values(expected, key):
    """What TF read: `tf.train.load_checkpoint` where it could, else the Restore op."""
    return {**expected[key], **expected["restored_by_op"]}


VALUES = tf_values(EXPECTED, "model.ckpt-7")
SHARDED_VALUES = tf_values(EXPECTED_SHARDED, "model.ckpt-?????-of-00002")


def assert_values(reader, values):
    assert sorted(reader) == sorted(values)
    for name, spec in values.items():
        assert_same_tensor(reader[name], expected_array(spec))
        assert reader.dtype(name).name == spec["dtype"]
        assert reader.shape(name) == spec["shape"]


# --- reading what TensorFlow wrote -----------------------------------------------------

@pytest.mark.parametrize("path", [V1_FILE, str(V1_FILE), V1_DIR], ids=["file", "str", "state-file-dir"])
def test_values_are_what_tensorflow_read(path):
    with tff.open_checkpoint(path) as reader:
        assert reader.prefix == str(V1_FILE)
        assert reader.bundle.num_shards == 1
        assert_values(reader, VALUES)


def test_tensorflow_itself_refuses_some_of_them():
    """Why some values come from the Restore op: TF's V1 reader in load_checkpoint
    has no float16/complex and no partitioned tensors; tfformats reads them all."""
    assert sorted(EXPECTED["load_checkpoint_refuses"]) == ["complex64", "float16", "part"]


def test_listing_is_tensorflows():
    assert tff.list_variables(V1_DIR) == [tuple(x) for x in EXPECTED["list_variables"]]
    with tff.open_checkpoint(V1_DIR) as reader:
        assert reader.get_variable_to_shape_map() == {k: s for k, s in EXPECTED["list_variables"]}
        assert {k: d.name for k, d in reader.get_variable_to_dtype_map().items()} == {
            k: v["dtype"] for k, v in VALUES.items()}
        assert reader.has_tensor("part") and not reader.has_tensor("nope") and "nope" not in reader
        assert len(reader) == len(VALUES) and list(reader) == sorted(VALUES)
        assert reader.object_graph() is None and reader.object_variables() == {}
        with pytest.raises(tff.TensorNotFoundError, match="no tensor, object path or variable name 'nope'"):
            reader.get_tensor("nope")


def test_latest_checkpoint_and_state_file():
    assert os.path.basename(tff.latest_checkpoint(V1_DIR)) == EXPECTED["latest_checkpoint"]
    assert tff.latest_checkpoint(SHARDED) == str(SHARDED / EXPECTED_SHARDED["latest_checkpoint"])


def test_moved_directory_with_absolute_state_path(tmp_path):
    shutil.copytree(V1_DIR, tmp_path / "moved")
    (tmp_path / "moved" / "checkpoint").write_text(
        'model_checkpoint_path: "/gone/elsewhere/model.ckpt-7"\n')
    with tff.open_checkpoint(tmp_path / "moved") as reader:
        assert_values(reader, VALUES)


def test_arrays_are_read_only_unless_copied():
    with tff.open_checkpoint(V1_FILE) as reader:
        assert not reader["layer/big"].flags.writeable
        assert not reader["part"].flags.writeable
        copy = reader.get_tensor("layer/big", copy=True)
        copy[0, 0] = 1
        assert reader["layer/big"][0, 0] == expected_array(VALUES["layer/big"])[0, 0] != 1
        assert reader["string"].dtype == object


def test_load_checkpoint():
    weights = tff.load_tensors(V1_DIR)
    assert sorted(weights) == sorted(VALUES)
    for name, spec in VALUES.items():
        assert_same_tensor(weights[name], expected_array(spec))
        assert weights[name].flags.writeable


@pytest.mark.parametrize("name, index", [
    ("part", np.s_[2:6]), ("part", np.s_[3]), ("part", np.s_[::3, 1:]), ("layer/big", np.s_[10:20, ::7]),
    ("scalar", ()), ("string", np.s_[1:3]), ("global_step", ...), ("empty", np.s_[:, 1])])
def test_get_slice(name, index):
    with tff.open_checkpoint(V1_FILE) as reader:
        part = reader.get_slice(name)
        assert part.shape == tuple(VALUES[name]["shape"])
        assert part.tf_dtype.name == VALUES[name]["dtype"]
        assert_same_tensor(np.asarray(part[index]), np.asarray(expected_array(VALUES[name])[index]))


def test_entries_say_where_the_records_are():
    with tff.open_checkpoint(V1_FILE) as reader:
        entry = reader.entry("part")
        assert entry.slices == (((0, 4), (0, 3)), ((4, 3), (0, 3)), ((7, 3), (0, 3)))
        assert entry.size == 120 and entry.crc32c == 0 and entry.shard_id == 0
        plain = reader.entry("layer/big")
        assert plain.slices == () and plain.size == 64 * 64 * 4
        assert reader.bundle.part_entry("part", ((4, 3), (0, 3))).shape == (3, 3)


V2_PARTITIONED = FIXTURES / "tf1_partitioned"
V2_VALUES = json.loads((V2_PARTITIONED / "expected.json").read_text())["model.ckpt"]


@pytest.mark.parametrize("path, values", [(V1_FILE, VALUES),
                                          (V2_PARTITIONED / "model.ckpt", V2_VALUES)])
def test_v1_and_v2_readers_offer_one_interface(path, values):
    """Both formats' readers are TensorStores: the parts of a partitioned
    tensor read back to what TensorFlow stored, and stored bytes are there
    only where the format has them."""
    with tff.open_checkpoint(path) as reader:
        store = reader.bundle
        assert isinstance(store, TensorStore)
        entry = store.entry("part")
        whole = expected_array(values["part"])
        for bounds, part in store.parts(entry):
            assert_same_tensor(store.read_entry(part), whole[slices.index(bounds)])
        if store.raw_bytes:
            assert len(store.raw(store.parts(entry)[0][1])[1]) > 0
        else:
            with pytest.raises(tff.UnsupportedError):
                store.raw(entry)


# --- sharded: Saver(sharded=True) -----------------------------------------------------

@pytest.mark.parametrize("path", [SHARDED, SHARDED / "model.ckpt-?????-of-00002",
                                  SHARDED / "model.ckpt-00000-of-00002",
                                  SHARDED / "model.ckpt-00001-of-00002"])
def test_sharded(path):
    with tff.open_checkpoint(path) as reader:
        assert reader.bundle.num_shards == 2
        assert_values(reader, SHARDED_VALUES)
        # The partitions of `spread` went to both devices, so to both files.
        shards = {reader.bundle.part_entry("spread", ext).shard_id
                  for ext in reader.entry("spread").slices}
        assert shards == {0, 1}


def test_missing_shard(tmp_path):
    shutil.copytree(SHARDED, tmp_path / "s")
    (tmp_path / "s" / "model.ckpt-00001-of-00002").unlink()
    with pytest.raises(tff.CheckpointNotFoundError, match="shard 1 of 2 of a V1 checkpoint is missing"):
        tff.open_checkpoint(tmp_path / "s")


# --- several blocks, Snappy: TF cuts V1 tables at 256 KiB, too big to ship -------------

def reblock(src, dst, block_size, compression=sstable.NO_COMPRESSION):
    """Copy a V1 table record by record into a table with other blocks."""
    table = sstable.Table(fileio.open_file(src))
    with open(dst, "wb") as f:
        builder = sstable.TableBuilder(f, block_size=block_size, compression=compression)
        for key, value in table.items():
            builder.add(bytes(key), bytes(value))
        builder.finish()
    table.source.close()
    return sstable.Table(fileio.open_file(dst))


@pytest.mark.parametrize("snappy", [False, True])
def test_reblocked_copy_reads_the_same(tmp_path, snappy):
    path = tmp_path / "model.ckpt"
    table = reblock(V1_FILE, path, 64, sstable.SNAPPY_COMPRESSION if snappy else 0)
    assert table.block_count() > 5
    kinds = {table.source.read(offset + size, 1)[0] for offset, size in table._handles}
    assert (sstable.SNAPPY_COMPRESSION in kinds) == snappy
    table.source.close()
    with tff.open_checkpoint(path) as reader:
        assert_values(reader, VALUES)
        offsets = {reader.entry(n).offset for n in reader}
        assert len(offsets) > 5
    if HAVE_TF:   # TensorFlow reads the copy too: it is a V1 checkpoint like any other
        import tensorflow as tf
        assert tf.train.load_checkpoint(str(path)).get_tensor("layer/big").tobytes() == \
            expected_array(VALUES["layer/big"]).tobytes()


@requires_tf
def test_tensorflow_written_multi_block_file(tmp_path):
    """A V1 file past TF's 256 KiB block size, written and read back by TF here."""
    import tensorflow as tf
    v1_api = tf.compat.v1
    rng = np.random.default_rng(5)
    values = {"a_big": rng.standard_normal((300, 300)).astype(np.float32),   # 351 KiB
              "b_after": np.arange(5, dtype=np.int64), "c_str": np.array([b"x", b"yz"], object)}
    graph = tf.Graph()
    with graph.as_default():
        for name, value in values.items():
            v1_api.get_variable(name, initializer=tf.constant(value))
        saver = v1_api.train.Saver(write_version=v1_api.train.SaverDef.V1)
        with v1_api.Session(graph=graph) as sess:
            sess.run(v1_api.global_variables_initializer())
            path = saver.save(sess, str(tmp_path / "model.ckpt"), write_meta_graph=False)
    table = sstable.Table(fileio.open_file(path))
    assert table.block_count() >= 2
    table.source.close()
    theirs = tf.train.load_checkpoint(path)
    with tff.open_checkpoint(tmp_path) as reader:
        assert reader.get_variable_to_shape_map() == theirs.get_variable_to_shape_map()
        for name in values:
            assert_same_tensor(reader[name], np.asarray(theirs.get_tensor(name)))


# --- command line ---------------------------------------------------------------------

def test_cli_ls():
    doc = run_json("ls", V1_DIR)
    assert doc["prefix"].endswith("tf1_v1/model.ckpt-7") and doc["num_shards"] == 1
    by_name = {t["name"]: t for t in doc["tensors"]}
    assert sorted(by_name) == sorted(VALUES)
    assert by_name["layer/big"]["bytes"] == 16384 and by_name["layer/big"]["shape"] == [64, 64]
    assert [p["slice"] for p in by_name["part"]["parts"]] == [[[0, 4], [0, 3]], [[4, 3], [0, 3]],
                                                              [[7, 3], [0, 3]]]
    text = run("ls", SHARDED, check=0).stdout
    assert "spread" in text and "0,1" in text and "3 tensors" in text


def test_cli_dump():
    doc = run_json("dump", V1_FILE, "part")
    assert np.array(doc["values"], np.float32).tobytes() == expected_array(VALUES["part"]).tobytes()
    doc = run_json("dump", V1_DIR, "string")
    assert doc["values"][:3] == ["alpha", "", "\u00fcber"]
    assert base64.b64decode(doc["values"][3]["base64"]) == b"\xff\x00\x01"


def test_cli_convert_and_diff(tmp_path):
    run("convert", "--skip-unsupported", V1_DIR, tmp_path / "w.npz", check=0)
    run("convert", tmp_path / "w.npz", tmp_path / "ckpt" / "ckpt", check=0)
    with tff.open_checkpoint(tmp_path / "ckpt" / "ckpt") as reader:
        assert sorted(reader) == sorted(set(VALUES) - {"string"})
        for name in reader:
            assert_same_tensor(reader[name], expected_array(VALUES[name]))
    doc = run_json("diff", V1_DIR, tmp_path / "ckpt" / "ckpt", check=1)
    assert doc["only_in_a"] == ["string"] and not doc["changed"]


def test_cli_validate_reads_every_tensor(tmp_path):
    doc = run_json("validate", V1_DIR, SHARDED / "model.ckpt-00001-of-00002")
    assert doc["ok"] and [p["tensors"] for p in doc["paths"]] == [len(VALUES), len(SHARDED_VALUES)]
    data = bytearray(DATA)
    data[len(DATA) // 2] ^= 0x10   # inside the one data block, which holds the metadata too
    doc = run_json("validate", write(tmp_path, bytes(data)), check=1)
    assert {f["check"] for f in doc["findings"]} == {"index-crc"}
    assert all("block checksum" in f["message"] for f in doc["findings"])
    path = write_v1(tmp_path / "hostile", meta_of(("w", FLOAT, [4], [FULL1])), {})
    doc = run_json("validate", path, check=1)
    assert [(f["check"], f["tensor"]) for f in doc["findings"]] == [("tensor", "w")]
    blocks = tmp_path / "blocks" / "model.ckpt"   # the last block holds tensor records only
    blocks.parent.mkdir()
    table = reblock(V1_FILE, blocks, 64)
    offset, size = table._handles[-1]
    table.source.close()
    data = bytearray(blocks.read_bytes())
    data[offset + size // 2] ^= 0x10
    blocks.write_bytes(bytes(data))
    doc = run_json("validate", blocks, check=1)
    assert doc["findings"] and all(f["check"] == "crc" and f["tensor"] for f in doc["findings"])


def test_gpu_upload_is_a_clear_error():
    with pytest.raises(tff.UnsupportedError, match="TF1 V1 checkpoint; GPU upload"):
        cuda.load(V1_DIR, "cuda", backend="host")


# --- damaged files --------------------------------------------------------------------

DATA = V1_FILE.read_bytes()


def read_everything(path, verify=True):
    with tff.CheckpointReader(path, verify=verify) as reader:
        reader.get_variable_to_shape_map()
        for name in reader:
            reader.entry(name)
            reader.get_tensor(name)
            reader.get_slice(name)[...]


def write(tmp_path, data, name="model.ckpt"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("cut", [0, 10, 47, 48, len(DATA) // 2, len(DATA) - 48, len(DATA) - 1])
def test_truncated_file(tmp_path, cut):
    path = write(tmp_path, DATA[:cut])
    # Cut short, it has no table footer left: not recognisably a checkpoint at all.
    with pytest.raises(tff.CheckpointNotFoundError, match=f"{path}: a file, but not a checkpoint"):
        read_everything(path)
    with pytest.raises(tff.FormatError, match=str(path)):
        v1.V1Reader(path)


def test_corrupt_block_is_a_checksum_error(tmp_path):
    data = bytearray(DATA)
    data[len(DATA) // 2] ^= 0x10   # inside the one data block
    path = write(tmp_path, bytes(data))
    with pytest.raises(tff.ChecksumError, match=f"{path}: data block at offset 0: block checksum"):
        read_everything(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), verify=st.booleans(), block_size=st.sampled_from([0, 300]))
def test_random_damage_never_escapes_as_another_error(tmp_path_factory, data, verify, block_size):
    directory = tmp_path_factory.mktemp("fuzz")
    source = DATA
    if block_size:   # several blocks, so the index block matters too
        reblock(V1_FILE, directory / "blocks", block_size).source.close()
        source = (directory / "blocks").read_bytes()
    blob = bytearray(source)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(max(0, len(blob) - 400) if data.draw(st.booleans()) else 0,
                                    len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del blob[data.draw(st.integers(0, len(blob))):]
    try:
        read_everything(write(directory, bytes(blob)), verify=verify)
    except tff.TFFormatsError:
        pass


# --- hostile metadata and records, written with our own table builder ----------------

def record(name, values_field=None, values=(), extents=None, content=b""):
    out = protos.SavedTensorSlices()
    out.data.name = name
    if extents is not None:
        for start, length in extents:
            ext = out.data.slice.extent.add(start=start)
            if length >= 0:
                ext.length = length
    if values_field:
        getattr(out.data.data, values_field).extend(values)
    out.data.data.tensor_content = content
    return out.SerializeToString()


def meta_of(*tensors, producer=1, min_consumer=0):
    """tensors: (name, DataType enum, shape, [extents, ...])."""
    out = protos.SavedTensorSlices()
    out.meta.versions.producer = producer
    out.meta.versions.min_consumer = min_consumer
    for name, dtype, shape, extents_list in tensors:
        t = out.meta.tensor.add(name=name, type=dtype)
        for d in shape:
            t.shape.dim.add(size=d)
        for extents in extents_list:
            s = t.slice.add()
            for start, length in extents:
                ext = s.extent.add(start=start)
                if length >= 0:
                    ext.length = length
    return out.SerializeToString()


def write_v1(path, meta, records):
    """records: {(name, extents): value bytes}."""
    items = [(b"", meta)] + [(slices.slice_key(n, e), v) for (n, e), v in records.items()]
    with open(path, "wb") as f:
        builder = sstable.TableBuilder(f)
        for key, value in sorted(items):
            builder.add(key, value)
        builder.finish()
    return path


FLOAT = 1
FULL1 = ((0, -1),)


def test_hand_written_table_reads(tmp_path):
    """The helpers above write what TF writes: sanity for the hostile cases below."""
    path = write_v1(tmp_path / "ok", meta_of(("w", FLOAT, [3], [FULL1])),
                    {("w", FULL1): record("w", "float_val", [1, 2, 3], FULL1)})
    assert tff.load_tensors(path)["w"].tolist() == [1, 2, 3]


@pytest.mark.parametrize("meta, records, error, message", [
    # A huge claimed shape backed by one value: refused before anything that size exists.
    (meta_of(("w", FLOAT, [1 << 40, 1 << 20], [((0, -1), (0, -1))])),
     {("w", ((0, -1), (0, -1))): record("w", "float_val", [1.0])},
     tff.FormatError, r"tensor 'w', slice .*holds 1 float_val values; float32\[1099511627776, 1048576\]"),
    (meta_of(("w", FLOAT, [4], [FULL1])), {},
     tff.FormatError, r"tensor 'w', slice \[\(0, -1\)\].*the table has no record"),
    (meta_of(("w", FLOAT, [4], [((0, 2),), ((1, 3),)])),
     {("w", ((0, 2),)): record("w", "float_val", [1, 2]), ("w", ((1, 3),)): record("w", "float_val", [3, 4, 5])},
     tff.FormatError, "do not tile its shape"),
    (meta_of(("w", FLOAT, [4], [((0, 2),)])),
     {("w", ((0, 2),)): record("w", "float_val", [1, 2])},
     tff.FormatError, "do not tile its shape"),
    (meta_of(("w", FLOAT, [4], [((2, 3),)])), {},
     tff.FormatError, r"slice \[\(2, 3\)\] does not fit its shape \[4\]"),
    (meta_of(("w", FLOAT, [4], [((1, -1),)])), {},
     tff.FormatError, "does not fit"),
    (meta_of(("w", FLOAT, [4], [FULL1])), {("w", FULL1): b"\xff\xff\xff"},
     tff.FormatError, "not a SavedTensorSlices record"),
    (meta_of(("w", FLOAT, [2], [FULL1])), {("w", FULL1): record("w", content=bytes(8))},
     tff.FormatError, "holds 0 float_val values"),
    (meta_of(("w", FLOAT, [4], [FULL1]), min_consumer=2), {},
     tff.UnsupportedError, "min consumer 2"),
    (meta_of(("w", 9999, [4], [FULL1])), {}, tff.UnsupportedError, "unknown DataType enum 9999"),
    (meta_of(("w", 20, [4], [FULL1])), {}, tff.UnsupportedError, "resource"),
    (meta_of(("w", FLOAT, [0, 1 << 62], [((0, -1), (0, -1))])),
     {("w", ((0, -1), (0, -1))): record("w")}, tff.UnsupportedError, "numpy cannot represent"),
    (b"\x0a\x03\x0a\x01", {}, tff.FormatError, "not a SavedTensorSlices record"),
    (record("w"), {}, tff.FormatError, "holds no metadata"),
])
def test_hostile_tables(tmp_path, meta, records, error, message):
    path = write_v1(tmp_path / "model.ckpt", meta, records)
    with pytest.raises(error, match=message) as info:
        read_everything(path)
    assert str(path) in str(info.value)


def test_table_without_metadata(tmp_path):
    path = tmp_path / "model.ckpt"
    with open(path, "wb") as f:
        builder = sstable.TableBuilder(f)
        builder.add(b"x", b"y")
        builder.finish()
    with pytest.raises(tff.FormatError, match=f"{path}: a table without the \"\" metadata entry"):
        tff.open_checkpoint(path)


def test_shards_that_disagree(tmp_path):
    write_v1(tmp_path / "m-00000-of-00002", meta_of(("w", FLOAT, [4], [((0, 2),)])), {})
    write_v1(tmp_path / "m-00001-of-00002", meta_of(("w", 2, [4], [((2, 2),)])), {})
    with pytest.raises(tff.FormatError, match=r"m-00001-of-00002: .*'w': float64\[4\] here, but "
                                              r"float32\[4\] in another shard"):
        tff.open_checkpoint(tmp_path / "m-?????-of-00002")


@requires_tf
@pytest.mark.parametrize("src, values", [(V1_FILE, VALUES),
                                         (SHARDED / "model.ckpt-00001-of-00002", SHARDED_VALUES)])
def test_converted_to_v2_tensorflow_reads_every_tensor(tmp_path, src, values):
    """`tfformats convert` upgrades a V1 checkpoint to a V2 bundle; TF's V2
    reader then reads even what its V1 reader refuses (float16, complex, parts)."""
    import tensorflow as tf
    run("convert", src, tmp_path / "ckpt", check=0)
    theirs = tf.train.load_checkpoint(str(tmp_path / "ckpt"))
    assert sorted(theirs.get_variable_to_shape_map()) == sorted(values)
    for name, spec in values.items():
        value = theirs.get_tensor(name)
        if spec["dtype"] == "string":
            assert np.asarray(value, dtype=object).tolist() == expected_array(spec).tolist()
        else:
            assert_same_tensor(value, expected_array(spec))
