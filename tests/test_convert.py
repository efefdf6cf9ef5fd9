"""Checkpoint <-> safetensors / .npz conversions keep names, dtypes and values."""

import io
import json
import struct
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import tfformats
from tfformats import (checkpoint_to_npz, checkpoint_to_safetensors, npz_to_checkpoint,
                       safetensors_to_checkpoint, save_checkpoint)
from tfformats.checkpoint import OBJECT_GRAPH_KEY
from tfformats.errors import FormatError, UnsupportedError

try:
    import safetensors
    import safetensors.numpy
    HAVE_SAFETENSORS = True
except ImportError:
    HAVE_SAFETENSORS = False
needs_safetensors = pytest.mark.skipif(not HAVE_SAFETENSORS,
                                       reason="safetensors not installed; CI installs it")

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def numeric_tensors():
    rng = np.random.default_rng(5)
    values = rng.standard_normal((3, 4))
    return {
        "dense/kernel": values.astype(np.float32),
        "dense/bias": values[0].astype(np.float64),
        "bf16": values.astype(ml_dtypes.bfloat16),
        "half": values.astype(np.float16),
        "f8": values.astype(ml_dtypes.float8_e4m3fn),
        "f8_e5m2": values.astype(ml_dtypes.float8_e5m2),
        "ints": np.arange(12, dtype=np.int64).reshape(3, 4),
        "u8": np.arange(5, dtype=np.uint8),
        "flags": np.array([True, False]),
        "c64": (values + 2j).astype(np.complex64),
        "scalar": np.int32(7),
        "empty": np.zeros((0, 4), np.float32),
    }


def assert_same_checkpoints(a, b):
    with tfformats.open_checkpoint(a) as ra, tfformats.open_checkpoint(b) as rb:
        assert sorted(ra) == sorted(rb)
        for name in ra:
            assert ra.dtype(name) == rb.dtype(name), name
            if ra.dtype(name).is_string:
                assert ra[name].tolist() == rb[name].tolist()
            else:
                np.testing.assert_array_equal(ra[name], rb[name])


def test_safetensors_round_trip(tmp_path):
    src = save_checkpoint(tmp_path / "src", numeric_tensors(), object_graph=False)
    assert checkpoint_to_safetensors(src, tmp_path / "m.safetensors") == []
    safetensors_to_checkpoint(tmp_path / "m.safetensors", tmp_path / "back")
    assert_same_checkpoints(src, tmp_path / "back")
    with tfformats.open_checkpoint(tmp_path / "back") as r:
        assert r.object_graph() is None   # plain names stay plain


def test_safetensors_layout(tmp_path):
    src = save_checkpoint(tmp_path / "src", {"b": np.ones(3, ml_dtypes.bfloat16),
                                             "a": np.zeros((1, 2), np.float32)},
                          object_graph=False)
    checkpoint_to_safetensors(src, tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (n,) = struct.unpack_from("<Q", data)
    assert n % 8 == 0
    header = json.loads(data[8:8 + n])
    assert header == {"a": {"dtype": "F32", "shape": [1, 2], "data_offsets": [0, 8]},
                      "b": {"dtype": "BF16", "shape": [3], "data_offsets": [8, 14]}}
    assert data[8 + n:] == bytes(8) + bytes.fromhex("803f803f803f")


@needs_safetensors
def test_safetensors_package_agrees(tmp_path):
    tensors = {k: v for k, v in numeric_tensors().items() if not k.startswith("f8")}
    src = save_checkpoint(tmp_path / "src", tensors, object_graph=False)
    checkpoint_to_safetensors(src, tmp_path / "ours.safetensors")
    with safetensors.safe_open(tmp_path / "ours.safetensors", framework="numpy") as f:
        assert sorted(f.keys()) == sorted(tensors)
        for name in f.keys():
            np.testing.assert_array_equal(f.get_tensor(name), tensors[name])
    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                                str(tmp_path / "theirs.safetensors"))
    safetensors_to_checkpoint(tmp_path / "theirs.safetensors", tmp_path / "back")
    back = tfformats.load_tensors(tmp_path / "back")
    for name, value in tensors.items():
        np.testing.assert_array_equal(back[name], value)
        assert back[name].dtype == np.asarray(value).dtype


def test_object_graph_survives_safetensors(tmp_path):
    src = FIXTURES / "keras_adam" / "ckpt-2"
    checkpoint_to_safetensors(src, tmp_path / "m.safetensors")
    safetensors_to_checkpoint(tmp_path / "m.safetensors", tmp_path / "back")
    assert_same_checkpoints(src, tmp_path / "back")


def test_strings_are_refused_or_skipped(tmp_path):
    src = save_checkpoint(tmp_path / "src", {"w": np.ones(2), "vocab": ["a", "b"]},
                          object_graph=False)
    for convert, dst in [(checkpoint_to_safetensors, "m.safetensors"),
                         (checkpoint_to_npz, "m.npz")]:
        with pytest.raises(UnsupportedError, match="'vocab'.*skip_unsupported"):
            convert(src, tmp_path / dst)
        assert not (tmp_path / dst).exists()
        assert convert(src, tmp_path / dst, skip_unsupported=True) == ["vocab"]
    safetensors_to_checkpoint(tmp_path / "m.safetensors", tmp_path / "back")
    assert tfformats.list_variables(tmp_path / "back") == [("w", [2])]


def test_safetensors_dtypes_it_lacks(tmp_path):
    src = save_checkpoint(tmp_path / "src", {"q": np.int8([1])}, dtypes={"q": "qint8"},
                          object_graph=False)
    with pytest.raises(UnsupportedError, match="no qint8 dtype"):
        checkpoint_to_safetensors(src, tmp_path / "m.safetensors")


@pytest.mark.parametrize("damage", [
    lambda d: d[:4],
    lambda d: struct.pack("<Q", 1 << 40) + d[8:],
    lambda d: d[:8] + b"[" + d[9:],
    lambda d: d.replace(b'"F32"', b'"X32"'),
    lambda d: d.replace(b"[0,8]", b"[0,9]"),
    lambda d: d[:-1],
])
def test_damaged_safetensors(tmp_path, damage):
    src = save_checkpoint(tmp_path / "src", {"a": np.zeros(2, np.float32)}, object_graph=False)
    checkpoint_to_safetensors(src, tmp_path / "m.safetensors")
    path = tmp_path / "m.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(FormatError, match="m.safetensors"):
        safetensors_to_checkpoint(path, tmp_path / "back")


def _safetensors_file(path, header, data=b""):
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


@pytest.mark.parametrize("header", [
    b"[" * 100_000,                                                  # nesting, not size
    {"a": {"dtype": "F32", "shape": "12", "data_offsets": [0, 8]}},  # a string is no shape
    {"a": {"dtype": "F32", "shape": [1.9], "data_offsets": [0, 4]}},
    {"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}},
    {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}},
    {"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}},
    {"a": {"dtype": "F32", "shape": [0, 1 << 62, 1 << 62], "data_offsets": [0, 0]}},
    {"a": [1]},
    {"__metadata__": [1], "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
    {"__metadata__": {"tfformats.object_graph": "!!"},
     "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
])
def test_malformed_safetensors_headers(tmp_path, header):
    path = _safetensors_file(tmp_path / "bad.safetensors", header, bytes(8))
    with pytest.raises(FormatError, match="bad.safetensors"):
        safetensors_to_checkpoint(path, tmp_path / "back")
    assert not (tmp_path / "back.index").exists()


def test_safetensors_metadata_name_is_reserved(tmp_path):
    src = save_checkpoint(tmp_path / "src", {"__metadata__": np.ones(2), "a": np.zeros(1)},
                          object_graph=False)
    with pytest.raises(UnsupportedError, match="'__metadata__'.*reserves"):
        checkpoint_to_safetensors(src, tmp_path / "m.safetensors")
    assert checkpoint_to_safetensors(src, tmp_path / "m.safetensors",
                                     skip_unsupported=True) == ["__metadata__"]


def test_npz_round_trip_keeps_tf_dtypes(tmp_path):
    tensors = numeric_tensors()
    tensors["i4"] = np.array([1, -2, 7], ml_dtypes.int4)
    tensors["q"] = np.array([-3, 4], np.int8)
    src = save_checkpoint(tmp_path / "src", tensors, dtypes={"q": "qint8"}, object_graph=False)
    assert checkpoint_to_npz(src, tmp_path / "m.npz") == []
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:   # no pickle needed
        np.testing.assert_array_equal(npz["dense/kernel"], tensors["dense/kernel"])
    npz_to_checkpoint(tmp_path / "m.npz", tmp_path / "back")
    assert_same_checkpoints(src, tmp_path / "back")
    with tfformats.open_checkpoint(tmp_path / "back") as r:
        assert r.dtype("q").name == "qint8" and r.dtype("bf16").name == "bfloat16"


def test_npz_from_elsewhere_and_object_keys(tmp_path):
    key = "model/w/.ATTRIBUTES/VARIABLE_VALUE"
    np.savez(tmp_path / "plain.npz", **{key: np.arange(3.0), "model/b/.ATTRIBUTES/VARIABLE_VALUE": np.ones(2)})
    npz_to_checkpoint(tmp_path / "plain.npz", tmp_path / "back")
    with tfformats.open_checkpoint(tmp_path / "back") as r:   # object keys get a graph
        assert r.object_paths()["model/w"] == key
        np.testing.assert_array_equal(r[key], np.arange(3.0))


def test_npz_keeps_object_graph(tmp_path):
    src = FIXTURES / "keras_adam" / "ckpt-1"
    checkpoint_to_npz(src, tmp_path / "m.npz")
    npz_to_checkpoint(tmp_path / "m.npz", tmp_path / "back")
    assert_same_checkpoints(src, tmp_path / "back")
    with tfformats.open_checkpoint(src) as a, tfformats.open_checkpoint(tmp_path / "back") as b:
        assert a[OBJECT_GRAPH_KEY] == b[OBJECT_GRAPH_KEY]


def test_npz_names_that_np_savez_takes_as_arguments(tmp_path):
    src = save_checkpoint(tmp_path / "src", {"file": np.ones(2), "allow_pickle": np.int8(1)},
                          object_graph=False)
    checkpoint_to_npz(src, tmp_path / "m")   # the .npz suffix is added, as np.savez does
    npz_to_checkpoint(tmp_path / "m.npz", tmp_path / "back")
    assert_same_checkpoints(src, tmp_path / "back")


def _npy(array):
    out = io.BytesIO()
    np.lib.format.write_array(out, array, allow_pickle=True)
    return out.getvalue()


def _npz_file(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _dtypes_record(kinds):
    return _npy(np.array(json.dumps(kinds)))


def test_npz_big_endian_arrays_with_recorded_dtypes(tmp_path):
    path = _npz_file(tmp_path / "be.npz", {
        "x.npy": _npy(np.array([1.5, -2.0], ">f4")),
        "bf.npy": _npy(np.array([1.5, -2.0], ml_dtypes.bfloat16).view("<u2").astype(">u2")),
        "__tfformats_dtypes__.npy": _dtypes_record({"x": "float32", "bf": "bfloat16"})})
    npz_to_checkpoint(path, tmp_path / "back")
    back = tfformats.load_tensors(tmp_path / "back")
    assert back["x"].tolist() == [1.5, -2.0] and back["bf"].dtype == ml_dtypes.bfloat16
    assert back["bf"].astype(np.float32).tolist() == [1.5, -2.0]


@pytest.mark.parametrize("members", [
    {"x.npy": _npy(np.array([1, "a"], object))},                     # would need pickle
    {"x.npy": _npy(np.zeros(1)).replace(b"(1,)", b"(10000000000,)")},  # 80 GB from a tiny file
    {"x.npy": b"\x93NUMPY\x01\x00"},                                # truncated header
    {"notes.txt": b"hello"},
    {"x.npy": _npy(np.zeros(2)), "__tfformats_dtypes__.npy": _dtypes_record(["x"])},
    {"x.npy": _npy(np.zeros(2)), "__tfformats_dtypes__.npy": _npy(np.zeros(2))},
    {"x.npy": _npy(np.zeros(2)), "__tfformats_dtypes__.npy": _dtypes_record({"x": "nonsense"})},
    {"x.npy": _npy(np.zeros(2)), "__tfformats_dtypes__.npy": _dtypes_record({"x": "string"})},
    {"x.npy": _npy(np.zeros(2, np.float32)),       # same size, other type: no reinterpreting
     "__tfformats_dtypes__.npy": _dtypes_record({"x": "int32"})},
])
def test_malformed_npz(tmp_path, members):
    path = _npz_file(tmp_path / "bad.npz", members)
    with pytest.raises(FormatError, match="bad.npz"):
        npz_to_checkpoint(path, tmp_path / "back")
    assert not (tmp_path / "back.index").exists()


def test_npz_that_is_not_a_zip(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros(2))
    with pytest.raises(FormatError, match="plain.npy: not a .npz file"):
        npz_to_checkpoint(tmp_path / "plain.npy", tmp_path / "back")
    with pytest.raises(tfformats.errors.CheckpointNotFoundError, match="no such file"):
        npz_to_checkpoint(tmp_path / "missing.npz", tmp_path / "back")


# --- checkpoint -> V2 checkpoint -----------------------------------------------------------

@pytest.mark.parametrize("src", ["sharded/ckpt", "tf1_partitioned/model.ckpt", "dtypes/ckpt",
                                 "keras_adam/ckpt-1", "tf1_v1/model.ckpt-7",
                                 "tf1_v1/sharded/model.ckpt-00000-of-00002"])
def test_checkpoint_to_checkpoint_keeps_keys_dtypes_values_and_parts(tmp_path, src):
    out = tmp_path / "out"
    assert tfformats.checkpoint_to_checkpoint(FIXTURES / src, out) == []
    with tfformats.open_checkpoint(FIXTURES / src) as a, tfformats.open_checkpoint(out) as b:
        assert b.bundle.num_shards == 1 and (tmp_path / "out.index").exists()
        assert list(a) == list(b)
        for name in a:
            ea, eb = a.entry(name), b.entry(name)
            assert (ea.dtype, ea.shape, ea.slices) == (eb.dtype, eb.shape, eb.slices), name
            va, vb = a[name], b[name]
            assert va.dtype == vb.dtype and va.shape == vb.shape
            assert (va.tolist() if va.dtype == object else va.tobytes()) == \
                (vb.tolist() if vb.dtype == object else vb.tobytes()), name


def test_a_selection_gets_an_object_graph_tensorflow_restores(tmp_path):
    # The model's weights of a Keras training checkpoint, without the optimizer.
    import tensorflow as tf
    import tf_keras
    src = FIXTURES / "keras_adam" / "ckpt-2"
    with tfformats.open_checkpoint(src) as reader:
        weights = [k for k in reader if k.startswith("model/") and "OPTIMIZER_SLOT" not in k]
        assert len(weights) == 4
        tfformats.checkpoint_to_checkpoint(src, tmp_path / "w", names=weights)
        with tfformats.open_checkpoint(tmp_path / "w") as out:
            assert sorted(out) == sorted(weights + [OBJECT_GRAPH_KEY])
            assert {k: v.full_name for k, v in out.object_variables().items()} == {
                k: reader.object_variables()[k].full_name for k in weights}
        model = tf_keras.Sequential([tf_keras.Input(shape=(4,)), tf_keras.layers.Dense(3),
                                     tf_keras.layers.Dense(2)])
        tf.train.Checkpoint(model=model).restore(str(tmp_path / "w")).expect_partial()
        for i, layer in enumerate(model.layers):   # the values came from the checkpoint
            for name in ("kernel", "bias"):
                want = reader.get_tensor(f"model/layer_with_weights-{i}/{name}/.ATTRIBUTES/VARIABLE_VALUE")
                np.testing.assert_array_equal(getattr(layer, name).numpy(), want)
    # Naming the object graph copies it as it is; keys of no object graph get none.
    tfformats.checkpoint_to_checkpoint(src, tmp_path / "g", names=weights + [OBJECT_GRAPH_KEY])
    with tfformats.open_checkpoint(src) as a, tfformats.open_checkpoint(tmp_path / "g") as b:
        assert a[OBJECT_GRAPH_KEY].tolist() == b[OBJECT_GRAPH_KEY].tolist()
    v1 = FIXTURES / "tf1_v1" / "model.ckpt-7"
    with tfformats.open_checkpoint(v1) as reader:
        some = sorted(reader)[:2]
    tfformats.checkpoint_to_checkpoint(v1, tmp_path / "v1", names=some)
    assert sorted(tfformats.open_checkpoint(tmp_path / "v1")) == some


def test_checkpoint_to_checkpoint_variants(tmp_path):
    src = FIXTURES / "saveables" / "ckpt"
    with pytest.raises(UnsupportedError, match="ITERATOR_STATE.*skip_unsupported=True"):
        tfformats.checkpoint_to_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out.index").exists()   # nothing half-written is left
    skipped = tfformats.checkpoint_to_checkpoint(src, tmp_path / "out", skip_unsupported=True)
    assert skipped == ["it/.ATTRIBUTES/ITERATOR_STATE"]
    with tfformats.open_checkpoint(tmp_path / "out") as reader:
        assert "table/.ATTRIBUTES/table-keys" in reader and skipped[0] not in reader


# --- failed conversions leave nothing behind -------------------------------------------

def _damaged_source(tmp_path):
    """A checkpoint whose last tensor (in every order a converter uses) fails its CRC."""
    src = save_checkpoint(tmp_path / "src" / "ckpt", {"a": np.ones(64, np.float32),
                                                      "z": np.arange(64, dtype=np.float32)},
                          object_graph=False)
    with tfformats.open_checkpoint(src) as reader:
        entry = reader.entry("z")
    data = Path(f"{src}.data-00000-of-00001")
    blob = bytearray(data.read_bytes())
    blob[entry.offset] ^= 1
    data.write_bytes(bytes(blob))
    return src


@pytest.mark.parametrize("convert, dst", [
    (checkpoint_to_safetensors, "out/m.safetensors"),
    (checkpoint_to_npz, "out/m.npz"),
    (tfformats.checkpoint_to_checkpoint, "out/ckpt"),
])
def test_failed_conversion_leaves_no_file(tmp_path, convert, dst):
    src = _damaged_source(tmp_path)
    (tmp_path / "out").mkdir()
    with pytest.raises(tfformats.ChecksumError, match="'z'"):
        convert(src, tmp_path / dst)
    assert list((tmp_path / "out").iterdir()) == []   # no temporary file, no partial output


@pytest.mark.parametrize("make, convert", [
    (lambda src, p: checkpoint_to_safetensors(src, p / "m.safetensors"), safetensors_to_checkpoint),
    (lambda src, p: checkpoint_to_npz(src, p / "m.npz"), npz_to_checkpoint),
])
def test_failed_conversion_to_a_checkpoint_leaves_no_file(tmp_path, make, convert, monkeypatch):
    src = save_checkpoint(tmp_path / "src", {"a": np.ones(4), "z": np.zeros(4)},
                          object_graph=False)
    (tmp_path / "in").mkdir()
    make(src, tmp_path / "in")
    (path,) = (tmp_path / "in").iterdir()
    (tmp_path / "out").mkdir()
    from tfformats import writer
    real_add = writer.BundleWriter.add

    def add(self, name, value, dtype=None):   # the disk fills up at the second tensor
        if self._entries:
            raise OSError(28, "No space left on device")
        return real_add(self, name, value, dtype)
    monkeypatch.setattr(writer.BundleWriter, "add", add)
    with pytest.raises(OSError):
        convert(path, tmp_path / "out" / "ckpt")
    assert list((tmp_path / "out").iterdir()) == []
