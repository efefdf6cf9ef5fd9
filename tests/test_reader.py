"""The checkpoint reader against checkpoints and values written by real TensorFlow."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfformats as tff
from tfformats import fileio

from conftest import (FIXTURES, assert_same_tensor, copy_fixture, expected_array,
                      expected_checkpoints, requires_tf)

CHECKPOINTS = expected_checkpoints()
DTYPES = FIXTURES / "dtypes" / "ckpt"
KERAS = FIXTURES / "keras_adam"
PARTITIONED = FIXTURES / "tf1_partitioned" / "model.ckpt"


@pytest.mark.parametrize("prefix,expected", CHECKPOINTS,
                         ids=[str(p.relative_to(FIXTURES)) for p, _ in CHECKPOINTS])
def test_values_match_what_tensorflow_read(prefix, expected, store):
    with tff.open_checkpoint(store.path(prefix)) as reader:
        assert sorted(reader) == sorted(expected)
        for name, spec in expected.items():
            assert reader.shape(name) == spec["shape"]
            assert reader.dtype(name).name == spec["dtype"]
            assert_same_tensor(reader[name], expected_array(spec))


def test_every_bundle_dtype_is_covered():
    names = {spec["dtype"] for _, exp in CHECKPOINTS for spec in exp.values()}
    for dtype in ("float16", "float32", "float64", "bfloat16", "float8_e5m2", "float8_e4m3fn",
                  "int4", "uint4", "int8", "int16", "int32", "int64", "uint8", "uint16",
                  "uint32", "uint64", "bool", "complex64", "complex128", "qint8", "quint8",
                  "qint16", "quint16", "qint32", "string"):
        assert dtype in names


def test_implementation_is_reported_and_can_be_forced():
    assert tff.implementation() in ("native", "python")
    env = dict(os.environ, TFFORMATS_PUREPYTHON="1")
    out = subprocess.run([sys.executable, "-c", "import tfformats; print(tfformats.implementation())"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "python"


# --- path forms ---------------------------------------------------------------

@pytest.mark.parametrize("path,prefix", [
    (KERAS, KERAS / "ckpt-2"),                                  # directory: latest
    (KERAS / "ckpt-1", KERAS / "ckpt-1"),                       # prefix
    (KERAS / "ckpt-1.index", KERAS / "ckpt-1"),                 # index file
    (KERAS / "ckpt-1.data-00000-of-00001", KERAS / "ckpt-1"),   # data file
    (FIXTURES / "saved_model_module", FIXTURES / "saved_model_module" / "variables" / "variables"),
    (FIXTURES / "dtypes", DTYPES),                              # directory with one bundle
])
def test_path_forms(path, prefix, store):
    with tff.open_checkpoint(store.path(path)) as reader:
        assert reader.prefix == store.path(prefix)
    assert tff.latest_checkpoint(store.path(KERAS)) == store.path(KERAS / "ckpt-2")


@pytest.mark.parametrize("path", ["does/not/exist", "tests", "README.md"])
def test_bad_paths_say_what_was_expected(path, tmp_path):
    target = FIXTURES.parent.parent / path if path != "tests" else tmp_path
    with pytest.raises(tff.CheckpointNotFoundError, match="expected"):
        tff.open_checkpoint(target)


def test_state_file_naming_a_missing_checkpoint(tmp_path):
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-9"\n')
    with pytest.raises(tff.CheckpointNotFoundError, match="ckpt-9"):
        tff.open_checkpoint(tmp_path)


@pytest.mark.parametrize("listed", ["/home/someone/train/ckpt-1", "C:\\train\\ckpt-1",
                                    "../elsewhere/ckpt-1"])
def test_state_file_of_a_moved_directory(tmp_path, listed):
    # TF1 savers write absolute paths; after a move or copy the checkpoint is
    # still found next to the state file (TensorFlow gives up here).
    copy_fixture(KERAS / "ckpt-1", tmp_path)
    (tmp_path / "checkpoint").write_text(f"model_checkpoint_path: {json.dumps(listed)}\n")
    with tff.open_checkpoint(tmp_path) as reader:
        assert reader.prefix == str(tmp_path / "ckpt-1")
    assert tff.latest_checkpoint(tmp_path) == str(tmp_path / "ckpt-1")


# --- the reader API -------------------------------------------------------------

def test_file_systems_that_cannot_map_files(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(19, "No such device")   # what mmap gives on such mounts
    monkeypatch.setattr(fileio.mmap, "mmap", refuse)
    tensors = dict(CHECKPOINTS)[DTYPES]
    with tff.open_checkpoint(DTYPES) as reader:   # read into memory instead, same values
        for name, spec in tensors.items():
            assert_same_tensor(reader[name], expected_array(spec))
        assert not reader["float32"].flags.writeable


def test_mapping_and_tensorflow_names(store):
    with tff.open_checkpoint(store.path(DTYPES)) as reader:
        names = list(reader)
        assert names == sorted(names) and len(reader) == len(names)
        assert "float32" in reader and "nope" not in reader and 5 not in reader
        assert reader.has_tensor("int64") and not reader.has_tensor("nope")
        shapes = reader.get_variable_to_shape_map()
        assert shapes["float32_3d"] == [2, 3, 4] and shapes["float32_scalar"] == []
        dtypes = reader.get_variable_to_dtype_map()
        assert dtypes["bfloat16"] == "bfloat16" and dtypes["string_mixed"].is_string
        assert dict(reader.items()).keys() == set(names)
        with pytest.raises(KeyError, match="nope"):
            reader["nope"]
        with pytest.raises(tff.TensorNotFoundError):
            reader.get_tensor("nope")


def test_numeric_tensors_are_read_only_views_unless_copied():
    with tff.open_checkpoint(DTYPES) as reader:
        view = reader.get_tensor("float32")
        assert not view.flags.writeable and not view.flags.owndata
        copy = reader.get_tensor("float32", copy=True)
        assert copy.flags.writeable
        np.testing.assert_array_equal(view, copy)
    # Arrays handed out stay valid after the reader is closed.
    assert view.sum() == copy.sum()


def test_list_variables_and_load_checkpoint(store):
    listed = tff.list_variables(store.path(DTYPES))
    assert listed == sorted(listed)
    assert ("float32_3d", [2, 3, 4]) in listed
    loaded = tff.load_tensors(store.path(DTYPES))
    assert set(loaded) == {n for n, _ in listed}
    assert loaded["float32"].flags.writeable


def test_verify_can_be_switched_off(tmp_path):
    from conftest import copy_fixture
    prefix = copy_fixture(DTYPES, tmp_path / "c")
    with tff.open_checkpoint(prefix) as reader:
        entry = reader.entry("int32")
    data = prefix.parent / "ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[entry.offset] ^= 0xFF
    data.write_bytes(bytes(raw))
    with tff.open_checkpoint(prefix) as reader:
        with pytest.raises(tff.ChecksumError, match="'int32'.*offset"):
            reader["int32"]
    with tff.open_checkpoint(prefix, verify=False) as reader:
        assert reader["int32"].ravel()[0] != -2147483648


# --- partitioned and sharded -------------------------------------------------------

def test_partitioned_variable_is_assembled(store):
    with tff.open_checkpoint(store.path(PARTITIONED)) as reader:
        entry = reader.entry("part")
        assert len(entry.slices) == 3
        assert reader.shape("part") == [10, 3]
        full = reader["part"]
        assert full.shape == (10, 3) and not full.flags.writeable   # like every tensor


class CountingOpener:
    """Records the byte ranges the reader asks of the data files."""

    def __init__(self):
        self.views = []

    def __call__(self, path):
        source = fileio.open_file(path)
        outer = self

        class Spy:
            def __getattr__(self, name):
                return getattr(source, name)

            def view(self, offset, n, what="read"):
                if ".data-" in source.path:
                    outer.views.append((offset, n))
                return source.view(offset, n, what)

        return Spy()


@pytest.mark.parametrize("index", [
    np.s_[2:7], np.s_[4], np.s_[-1], np.s_[::3], np.s_[1:9:2, 1:], np.s_[..., 2],
    np.s_[3:4, 0], np.s_[[1, 5]], np.s_[::-1], np.s_[7:2],
    # numpy reads a bool as a new axis (with a mask of one value), not as 0 or 1
    True, False, np.True_, np.False_, np.s_[True, 2:5], np.s_[1, False], np.s_[..., True],
    np.s_[np.True_, ..., 1], np.s_[[True] * 10],
])
def test_get_slice_of_partitioned_variable(index):
    with tff.open_checkpoint(PARTITIONED) as reader:
        full = reader["part"]
        part = reader.get_slice("part")[index]
        np.testing.assert_array_equal(part, full[index])
        assert part.shape == full[index].shape


def test_get_slice_reads_only_the_parts_it_needs(store):
    opener = CountingOpener()
    reader = tff.CheckpointReader(store.path(PARTITIONED), opener=opener)
    slice_ = reader.get_slice("part")
    assert slice_.shape == (10, 3)
    np.testing.assert_array_equal(slice_[0:2], reader["part"][0:2])
    opener.views.clear()
    slice_[0:2]
    assert len(opener.views) == 1 and opener.views[0][1] < 10 * 3 * 4


def test_get_slice_of_plain_tensor():
    with tff.open_checkpoint(DTYPES) as reader:
        full = reader["float32_3d"]
        np.testing.assert_array_equal(reader.get_slice("float32_3d")[1, :, 2:], full[1, :, 2:])
        for index in (True, np.False_, np.s_[True, 1], np.s_[1, ..., np.True_]):
            part = reader.get_slice("float32_3d")[index]
            assert part.shape == full[index].shape
            np.testing.assert_array_equal(part, full[index])
        assert list(reader.get_slice("string_mixed")[1:3]) == list(reader["string_mixed"][1:3])


def test_sharded_checkpoints_read_every_data_file(store):
    for prefix in (FIXTURES / "sharded" / "ckpt", FIXTURES / "tf1_partitioned" / "sharded" / "model.ckpt"):
        with tff.open_checkpoint(store.path(prefix)) as reader:
            shards = {reader.entry(n).shard_id for n in reader if not reader.entry(n).slices}
            assert len(shards) > 1
            for name in reader:
                reader[name]


# --- the object graph ------------------------------------------------------------

def test_object_paths_and_slot_variables():
    with tff.open_checkpoint(KERAS) as reader:
        paths = reader.object_paths()
        key = "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
        assert paths["model/layer_with_weights-0/kernel"] == key
        info = reader.object_variables()[key]
        assert info.full_name == "dense/kernel" and info.slot_of is None
        slot_key = "model/layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE"
        slot = reader.object_variables()[slot_key]
        assert slot.slot_of == "model/layer_with_weights-0/kernel" and slot.slot_name == "m"
        assert slot.path == "model/layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/m"
        # Every key of the object graph is a tensor of the bundle, and vice versa.
        assert set(reader.object_variables()) == set(reader) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}


def test_name_based_checkpoint_has_no_object_graph():
    with tff.open_checkpoint(PARTITIONED) as reader:
        assert reader.object_graph() is None and reader.object_paths() == {}


@requires_tf
def test_object_paths_match_tensorflow():
    import tensorflow as tf
    for prefix in (KERAS / "ckpt-2", FIXTURES / "keras_adam_new" / "ckpt-2", FIXTURES / "sharded" / "ckpt"):
        tf_graph = tf.train.load_checkpoint(str(prefix)).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
        with tff.open_checkpoint(prefix) as reader:
            assert reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH").item() == tf_graph
            for key, info in reader.object_variables().items():
                # TF builds keys as "<object path>/.ATTRIBUTES/<attribute>".
                assert key == f"{info.path}/.ATTRIBUTES/{info.attribute}"



@requires_tf
def test_live_tensorflow_checkpoint_reads_back_identically(tmp_path):
    """TensorFlow writes fresh random tensors of many dtypes; we read what its reader reads."""
    import tensorflow as tf
    rng = np.random.default_rng(7)
    values = {
        "f32": rng.standard_normal((17, 5)).astype(np.float32),
        "f64": rng.standard_normal(3),
        "bf16": tf.cast(rng.standard_normal((4, 4)), tf.bfloat16),
        "i8": rng.integers(-128, 127, 9, dtype=np.int8),
        "u64": rng.integers(0, 2**63, 4, dtype=np.uint64),
        "c128": rng.standard_normal(3) + 1j * rng.standard_normal(3),
        "b": rng.random(7) > 0.5,
        "s": np.array([b"", b"\x00\xff", "\u2603".encode() * 60], dtype=object),
        "scalar": np.float16(1.5),
        "empty": np.zeros((0, 4), np.int32),
        "big": rng.standard_normal(300_000).astype(np.float32),   # several MiB: parallel CRC
    }
    prefix = str(tmp_path / "live")
    names = list(values)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(v) for v in values.values()])
    tf_reader = tf.train.load_checkpoint(prefix)
    with tff.open_checkpoint(prefix) as reader:
        assert reader.get_variable_to_shape_map() == tf_reader.get_variable_to_shape_map()
        assert {n: d.name for n, d in reader.get_variable_to_dtype_map().items()} == {
            n: d.name for n, d in tf_reader.get_variable_to_dtype_map().items()}
        for name in names:
            expected = tf_reader.get_tensor(name)
            if isinstance(expected, bytes) or getattr(expected, "dtype", None) == object:
                assert list(np.ravel(reader[name])) == list(np.ravel(expected))
            else:
                assert reader[name].tobytes() == np.asarray(expected).tobytes()


def test_listing_maps_are_the_callers_own():
    with tff.open_checkpoint(DTYPES) as reader:
        shapes = reader.get_variable_to_shape_map()
        shapes["float32"].append(99)
        shapes.clear()
        dtypes = reader.get_variable_to_dtype_map()
        again = reader.get_variable_to_shape_map()
        assert again["float32"] == [2, 3] and again is not shapes
        assert reader.get_variable_to_dtype_map() == dtypes
        assert reader.get_variable_to_dtype_map() is not dtypes


# --- partitioned string tensors ---------------------------------------------------------

PARTITIONED_STRINGS = FIXTURES / "tf1_partitioned_strings"


def _tf_parts():
    """(name, bounds, values) of each partition, as TensorFlow's RestoreV2 read it."""
    recorded = json.loads((PARTITIONED_STRINGS / "expected_parts.json").read_text())
    for name, parts in recorded["parts"].items():
        for part in parts:
            *dims, spec = part["spec"].split(" ")   # "4 3 0,2:0,3": full shape, then extents
            bounds = [(int(a), int(a) + int(n)) for a, n in (e.split(",") for e in spec.split(":"))]
            yield name, [int(d) for d in dims], bounds, expected_array(part)


def test_partitioned_string_tensors_are_assembled():
    # TensorFlow writes them but reads only one partition at a time; the parts it
    # read back are the judge of the assembled tensor.
    with tff.open_checkpoint(PARTITIONED_STRINGS / "model.ckpt") as reader:
        seen = set()
        for name, shape, bounds, values in _tf_parts():
            whole = reader[name]
            assert whole.dtype == object and list(whole.shape) == shape == reader.shape(name)
            index = tuple(slice(a, b) for a, b in bounds)
            assert whole[index].tolist() == values.tolist()
            assert reader.get_slice(name)[index].tolist() == values.tolist()
            seen.add(name)
        assert seen == {"table", "words"} and len(reader.entry("words").slices) == 3
        crossing = reader.get_slice("words")[1:5]   # spans three partitions
        assert crossing.tolist() == reader["words"][1:5].tolist()


@requires_tf
def test_every_key_of_a_tensorflow_index_with_several_blocks_looked_up_cold(tmp_path):
    """TensorFlow cuts index blocks at 256 KiB: 600 keys of ~1 KB that share no
    prefix give several blocks. Each key is looked up by a fresh reader that
    has not scanned the index (the lookup bisects the index block)."""
    import tensorflow as tf
    rng = np.random.default_rng(3)
    names = sorted({rng.bytes(500).hex() for _ in range(600)})
    prefix = str(tmp_path / "ckpt")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant([i, -i], tf.int32) for i in range(len(names))])
    with tff.open_checkpoint(prefix) as reader:
        assert reader.bundle.table.block_count() >= 3
    for i, name in enumerate(names):
        with tff.open_checkpoint(prefix) as reader:
            assert reader.bundle._decoded is None
            assert reader[name].tolist() == [i, -i]
    with tff.open_checkpoint(prefix) as reader:
        assert list(reader) == names and name[:-1] not in reader and name + "0" not in reader


@pytest.mark.parametrize("prefix,expected", CHECKPOINTS,
                         ids=[str(p.relative_to(FIXTURES)) for p, _ in CHECKPOINTS])
def test_per_name_calls_before_and_after_the_index_scan(prefix, expected):
    """shape/dtype/in answer from single lookups on a fresh reader and from one
    scan of the index once iteration, len or enough lookups asked for every
    name: the same answers, TensorFlow's, either way."""
    want = {name: (spec["shape"], spec["dtype"]) for name, spec in expected.items()}
    missing = ["no/such/tensor", "", b"bytes", 3, ("t",)]
    for scan_first in (False, True):
        with tff.open_checkpoint(prefix) as reader:
            if scan_first:
                assert len(reader) == len(want)
            got = {name: (reader.shape(name), reader.dtype(name).name) for name in want}
            assert got == want
            assert all(name in reader for name in want)
            assert not any(name in reader for name in missing)
            with pytest.raises(tff.TensorNotFoundError):
                reader.shape("no/such/tensor")
            with pytest.raises(tff.TensorNotFoundError):
                reader.dtype("no/such/tensor")
            shape = reader.shape(next(iter(want)))
            shape.append(99)   # a list of the caller's own
            assert reader.shape(next(iter(want))) == want[next(iter(want))][0]
            assert list(reader) == sorted(want, key=lambda n: n.encode("utf-8", "surrogateescape"))


def test_many_single_lookups_end_in_one_scan(monkeypatch):
    """After enough lookups a reader scans its index once: answers stay the same."""
    from tfformats import checkpoint
    monkeypatch.setattr(checkpoint, "_BYTES_PER_LOOKUP", 1 << 40)   # scan after 64 lookups
    prefix, expected = next((p, e) for p, e in CHECKPOINTS if len(e) >= 20)
    names = sorted(expected)
    with tff.open_checkpoint(prefix) as reader:
        for round_ in range(70 // len(names) + 2):
            for name in names:
                assert reader.shape(name) == expected[name]["shape"]
                assert name in reader
        assert "no/such/tensor" not in reader
