"""Keras weight files (tfformats.keras): the fixtures Keras 3 and tf-keras wrote
(tests/fixtures/keras_files, see its README entry), read by HDF5 path and by
Keras variable name; conversions checked live against TensorFlow, tf-keras
and Keras 3; damaged archives and HDF5 files."""

import importlib.util
import io
import json
import os
import shutil
import struct
import sys
import zipfile

import numpy as np
import pytest

import tfformats
from tfformats import keras as tk
from tfformats.cli import main
from tfformats.errors import FormatError, TensorNotFoundError, TFFormatsError, UnsupportedError

from conftest import FIXTURES, expected_array, requires_tf

DIR = FIXTURES / "keras_files"
EXPECTED = json.loads((DIR / "expected_keras.json").read_text())
FILES = sorted(name for name in EXPECTED if "/" not in name and name != "k3_cnn_npz.keras")
WITH_HDF5_LISTING = [name for name in FILES if "hdf5" in EXPECTED[name]]
KERAS3 = ["k3_cnn.keras", "k3_cnn.weights.h5", "k3_seq.keras", "k3_seq.weights.h5"]
TF_KERAS_KEYS = {"cnn": set(EXPECTED["tk_cnn_tf/ckpt"]["keys"]),
                 "seq": set(EXPECTED["tk_seq_tf/ckpt"]["keys"])}


def _model_of(name):
    return "cnn" if "cnn" in name else "seq"


def _generator():
    """tests/fixtures/generate.py as a module: the models the fixtures hold."""
    spec = importlib.util.spec_from_file_location("generate", FIXTURES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli(capsys, *argv):
    """(exit status, stdout) of the command run in this process."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().out


# --- reading: what Keras and h5py read back ----------------------------------------------

@pytest.mark.parametrize("name", WITH_HDF5_LISTING)
def test_every_dataset_is_what_h5py_reads(name):
    with tk.KerasReader(DIR / name) as reader:
        hdf5 = EXPECTED[name]["hdf5"]
        assert sorted(reader) == sorted(hdf5)
        for path, spec in hdf5.items():
            array = reader[path]
            assert reader.shape(path) == spec["shape"] and reader.dtype(path).name == spec["dtype"]
            assert array.dtype == expected_array(spec).dtype
            assert array.tobytes() == expected_array(spec).tobytes()


@pytest.mark.parametrize("name", FILES)
def test_keras_variable_names_give_what_keras_loaded(name):
    """Every variable Keras holds after loading the file, by the name Keras shows
    (`conv/kernel`; tf-keras adds `:0`, which lookups accept)."""
    with tk.KerasReader(DIR / name) as reader:
        for var, spec in EXPECTED[name]["variables"].items():
            assert reader.has_tensor(var), var
            assert reader.get_tensor(var).tobytes() == expected_array(spec).tobytes(), var
            assert reader.keras_name(var) == var.removesuffix(":0")
        if name.startswith("k3_") and name.endswith(".keras"):  # optimizer named from config.json
            for var, spec in EXPECTED[name]["optimizer"].items():
                assert reader.get_tensor(var).tobytes() == expected_array(spec).tobytes(), var


@pytest.mark.parametrize("name", FILES)
def test_checkpoint_keys_are_the_ones_tf_keras_writes(name):
    """The keys tf-keras' own TF-format save_weights gave the same model."""
    with tk.KerasReader(DIR / name) as reader:
        keys = set(reader.checkpoint_keys().values())
    want = TF_KERAS_KEYS[_model_of(name)] - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    if "weights" in name and name.startswith("tk_"):   # weights only: no optimizer state
        want = {k for k in want if not k.startswith("optimizer/")}
    if name.startswith("tk_"):   # tf-keras files do not store the learning rate
        want.discard("optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE")
    assert keys == want


def test_kinds_config_and_metadata():
    kinds = {name: tk.KerasReader(DIR / name).kind for name in FILES}
    assert kinds == {"k3_cnn.keras": "keras", "k3_seq.keras": "keras", "tk_cnn.keras": "keras",
                     "k3_cnn.weights.h5": "keras3_h5", "k3_seq.weights.h5": "keras3_h5",
                     "tk_cnn.h5": "legacy_h5", "tk_seq.h5": "legacy_h5",
                     "tk_cnn_weights.h5": "legacy_h5", "tk_seq_weights.h5": "legacy_h5"}
    with tk.KerasReader(DIR / "k3_cnn.keras") as reader:
        assert reader.metadata["keras_version"] == json.loads(
            (FIXTURES / "versions.json").read_text())["keras"]
        assert reader.config["config"]["name"] == "cnn"
    with tk.KerasReader(DIR / "tk_cnn.h5") as reader:
        assert reader.config["config"]["name"] == "cnn"   # model_config


def test_reader_api_like_a_checkpoint():
    with tfformats.open_checkpoint(DIR / "k3_seq.keras") as reader:
        assert isinstance(reader, tk.KerasReader)
        assert len(reader) == len(list(reader)) == len(EXPECTED["k3_seq.keras"]["hdf5"])
        assert "lstm/lstm_cell/kernel" in reader and "layers/lstm/cell/vars/0" in reader
        assert "nothing/here" not in reader and 3 not in reader
        assert reader.shape("lstm/lstm_cell/kernel") == [4, 12]
        assert reader.dtype("optimizer/vars/0") == tfformats.as_dtype("int64")
        assert reader.get_variable_to_shape_map()["layers/embedding/vars/0"] == [10, 4]
        assert reader.variable_names()["embed/embeddings"] == "layers/embedding/vars/0"
        with pytest.raises(TensorNotFoundError) as exc:
            reader.get_tensor("embed/nothing")
        assert isinstance(exc.value, KeyError) and "embed/nothing" in str(exc.value)
        full = reader["embed/embeddings"]
        part = reader.get_slice("embed/embeddings")
        assert part.shape == [10, 4] and part.dtype.name == "float32"
        np.testing.assert_array_equal(part[2:5, 1:], full[2:5, 1:])


@pytest.mark.parametrize("name", ["k3_cnn.keras", "k3_cnn.weights.h5", "tk_cnn.h5"])
def test_contiguous_datasets_are_zero_copy_views(name):
    """Views of the file's memory map (through the stored zip member too)."""
    with tk.KerasReader(DIR / name) as reader:
        for path in reader:
            array = reader.get_tensor(path)
            assert not array.flags.owndata and not array.flags.writeable, path
            own = reader.get_tensor(path, copy=True)
            assert own.flags.owndata and own.flags.writeable
            np.testing.assert_array_equal(own, array)


def test_chunked_and_compressed_datasets_go_through_h5py(tmp_path):
    import h5py
    path = tmp_path / "w.weights.h5"
    values = np.arange(600, dtype=np.float32).reshape(20, 30)
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=values, chunks=(5, 30), compression="gzip")
        f.create_dataset("layers/dense/vars/1", data=np.ones(30, ">f4"))   # big-endian
    with tk.KerasReader(path) as reader:
        assert reader.kind == "keras3_h5"
        np.testing.assert_array_equal(reader["dense/kernel"], values)
        assert not reader["dense/kernel"].flags.writeable
        assert reader.get_tensor("dense/kernel", copy=True).flags.writeable
        np.testing.assert_array_equal(reader.get_slice("dense/kernel")[3:7, ::2], values[3:7, ::2])
        assert reader["dense/bias"].tolist() == [1.0] * 30


# --- conversions, checked live -------------------------------------------------------------

@requires_tf
@pytest.mark.parametrize("name", ["k3_cnn.keras", "k3_seq.weights.h5", "tk_cnn.h5",
                                  "tk_seq_weights.h5"])
def test_checkpoint_tensorflow_reads_with_identical_values(tmp_path, name):
    import tensorflow as tf
    prefix = str(tmp_path / "ckpt")
    assert tk.keras_to_checkpoint(DIR / name, prefix) == []
    tf_reader = tf.train.load_checkpoint(prefix)
    with tk.KerasReader(DIR / name) as reader:
        keys = reader.checkpoint_keys()
        assert set(tf_reader.get_variable_to_shape_map()) == set(keys.values()) | {
            "_CHECKPOINTABLE_OBJECT_GRAPH"}
        for path, key in keys.items():
            value = tf_reader.get_tensor(key)
            assert value.dtype == reader[path].dtype and value.tobytes() == reader[path].tobytes()


def _tf_keras_model(which):
    import tf_keras
    cnn, seq = _generator()._keras_models(tf_keras)
    return cnn if which == "cnn" else seq


@requires_tf
@pytest.mark.parametrize("name", ["k3_cnn.keras", "k3_seq.keras", "k3_cnn.weights.h5", "tk_seq.h5"])
def test_tf_keras_load_weights_and_tf_train_checkpoint_restore_it(tmp_path, name):
    """A tf-keras model of the same architecture gets exactly the values Keras read,
    through load_weights and through tf.train.Checkpoint(model).restore."""
    import tensorflow as tf
    prefix = str(tmp_path / "ckpt")
    tk.keras_to_checkpoint(DIR / name, prefix)
    expected = EXPECTED[name]["variables"]

    def check(model):
        values = {w.name.removesuffix(":0"): w.numpy() for w in model.weights}
        assert sorted(values) == sorted(v.removesuffix(":0") for v in expected)
        for var, spec in expected.items():
            assert values[var.removesuffix(":0")].tobytes() == expected_array(spec).tobytes(), var

    model = _tf_keras_model(_model_of(name))
    # The optimizer state has no optimizer to go to in an uncompiled model.
    model.load_weights(prefix).assert_existing_objects_matched().expect_partial()
    check(model)
    model = _tf_keras_model(_model_of(name))
    # The checkpoint has no save_counter (tf-keras' save_weights writes none either).
    tf.train.Checkpoint(model).restore(prefix).expect_partial()
    check(model)


@requires_tf
def test_sequential_model_and_layer_options(tmp_path):
    """A Keras 3 Sequential model names its variables inside its own scope
    (`seq/a/kernel`); BatchNormalization without beta, a frozen layer,
    LayerNormalization, SGD momentum slots. tf-keras restores the conversion."""
    import keras
    import tf_keras

    def build(k):
        return k.Sequential([k.Input((5,)), k.layers.Dense(4, name="a"),
                             k.layers.BatchNormalization(name="b", center=False),
                             k.layers.Dropout(0.1), k.layers.Dense(3, name="c", trainable=False),
                             k.layers.LayerNormalization(name="ln"), k.layers.Dense(2, name="d")],
                            name="seq")
    model = build(keras)
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), loss="mse")
    model.fit(np.ones((4, 5), np.float32), np.ones((4, 2), np.float32), verbose=0)
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    config = tk.KerasReader(tmp_path / "m.keras").config
    for path, given in ((tmp_path / "m.keras", None), (tmp_path / "m.weights.h5", config)):
        with tk.KerasReader(path, config=given) as reader:
            for w in model.weights + model.optimizer.variables:
                np.testing.assert_array_equal(reader[w.path], w.numpy())
    prefix = str(tmp_path / "ckpt")
    tk.keras_to_checkpoint(tmp_path / "m.keras", prefix)
    restored = build(tf_keras)
    restored.load_weights(prefix).assert_existing_objects_matched().expect_partial()
    for w in restored.weights:
        np.testing.assert_array_equal(w.numpy(), {v.path: v for v in model.weights}[
            "seq/" + w.name.removesuffix(":0")].numpy())
    # Without the config, the three BatchNormalization variables cannot be told apart.
    with tk.KerasReader(tmp_path / "m.weights.h5") as bare:
        assert bare.keras_name("layers/batch_normalization/vars/0") is None
        assert bare.keras_name("layers/dense/vars/0") == "a/kernel"


@requires_tf
def test_keras3_load_weights_refuses_tf_checkpoints(tmp_path):
    """As docs/keras.md says: Keras 3 reads only its own formats."""
    import keras
    prefix = str(tmp_path / "ckpt")
    tk.keras_to_checkpoint(DIR / "k3_cnn.keras", prefix)
    model = keras.saving.load_model(DIR / "k3_cnn.keras")
    with pytest.raises(ValueError):
        model.load_weights(prefix)


@requires_tf
@pytest.mark.parametrize("via", ["ckpt", "x.safetensors", "x.npz"])
def test_back_to_weights_h5_keras3_loads(tmp_path, via):
    """.keras -> checkpoint / safetensors / npz -> .weights.h5 that Keras 3's own
    load_weights takes, with the same values."""
    import keras
    middle = str(tmp_path / via)
    src = DIR / "k3_cnn.keras"
    if via == "ckpt":
        tk.keras_to_checkpoint(src, middle)
    elif via.endswith(".safetensors"):
        tfformats.checkpoint_to_safetensors(src, middle)
    else:
        tfformats.checkpoint_to_npz(src, middle)
    out = tmp_path / "back.weights.h5"
    if via == "ckpt":
        tk.to_weights_h5(middle, out, like=src)
    else:   # the command reads them through a checkpoint
        assert main(["convert", middle, str(out), "--like", str(src)]) == 0
    model = keras.saving.load_model(src)
    for w in model.weights:
        w.assign(np.zeros(w.shape, w.dtype))
    model.load_weights(out)
    for var, spec in EXPECTED["k3_cnn.keras"]["variables"].items():
        got = {w.path: w for w in model.weights}[var]
        assert np.asarray(got.numpy()).tobytes() == expected_array(spec).tobytes(), var


@requires_tf
def test_back_to_legacy_h5_tf_keras_loads(tmp_path):
    prefix = str(tmp_path / "ckpt")
    tk.keras_to_checkpoint(DIR / "tk_seq.h5", prefix)
    out = tmp_path / "w.h5"
    tk.to_weights_h5(prefix, out, like=DIR / "tk_seq_weights.h5")
    model = _tf_keras_model("seq")
    model.load_weights(str(out))
    values = {w.name: w.numpy() for w in model.weights}
    for var, spec in EXPECTED["tk_seq.h5"]["variables"].items():
        assert values[var].tobytes() == expected_array(spec).tobytes(), var


def test_safetensors_and_npz_by_keras_name(tmp_path):
    tfformats.checkpoint_to_safetensors(DIR / "k3_seq.weights.h5", tmp_path / "w.safetensors")
    from safetensors.numpy import load_file
    loaded = load_file(tmp_path / "w.safetensors")
    expected = EXPECTED["k3_seq.weights.h5"]["variables"]
    for var, spec in expected.items():
        assert loaded[var].tobytes() == expected_array(spec).tobytes()
    # Without config.json the optimizer's class is unknown: its slots keep their HDF5 paths.
    assert loaded["adam_1/iteration"] == 1 and "optimizer/vars/2" in loaded
    tfformats.checkpoint_to_npz(DIR / "k3_seq.keras", tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as npz:
        assert npz["adam_1/iteration"] == 1
        assert npz["lstm/lstm_cell/kernel"].tobytes() == expected_array(
            EXPECTED["k3_seq.keras"]["variables"]["lstm/lstm_cell/kernel"]).tobytes()


def test_back_from_a_mapping_of_arrays(tmp_path):
    with tk.KerasReader(DIR / "k3_seq.keras") as reader:
        tensors = {reader.keras_name(p) or p: reader.get_tensor(p, copy=True) for p in reader}
    tensors["out/kernel"] = tensors["out/kernel"] + 1
    tk.to_weights_h5(tensors, tmp_path / "w.weights.h5", like=DIR / "k3_seq.keras")
    with tk.KerasReader(tmp_path / "w.weights.h5") as back:
        assert back.kind == "keras3_h5" and sorted(back) == sorted(EXPECTED["k3_seq.weights.h5"]["hdf5"])
        np.testing.assert_array_equal(back["out/kernel"], tensors["out/kernel"])
        np.testing.assert_array_equal(back["lstm/lstm_cell/kernel"], tensors["lstm/lstm_cell/kernel"])


def test_template_mismatch_and_missing_tensors(tmp_path):
    prefix = str(tmp_path / "ckpt")
    tk.keras_to_checkpoint(DIR / "k3_seq.keras", prefix)
    with pytest.raises(FormatError, match=r"is float32\[3, 2\]; .* has float32\[32, 3\]"):
        tk.to_weights_h5(prefix, tmp_path / "x.weights.h5", like=DIR / "k3_cnn.keras")
    weights_only = str(tmp_path / "weights_only")
    tk.keras_to_checkpoint(DIR / "tk_seq_weights.h5", weights_only)
    with pytest.raises(TensorNotFoundError, match="no tensor for 12 dataset"):
        tk.to_weights_h5(weights_only, tmp_path / "x.weights.h5", like=DIR / "k3_seq.keras")
    assert not (tmp_path / "x.weights.h5").exists()


# --- the command line ------------------------------------------------------------------

def test_cli_ls_dump_validate(capsys, tmp_path):
    status, out = cli(capsys, "ls", DIR / "k3_cnn.keras", "--json")
    doc = json.loads(out)
    by_name = {t["name"]: t for t in doc["tensors"]}
    assert status == 0 and doc["format"] == "keras" and len(by_name) == 28
    assert by_name["layers/batch_normalization/vars/2"]["keras_name"] == "bn/moving_mean"
    assert by_name["layers/conv2d/vars/0"]["checkpoint_key"] == \
        "layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    status, out = cli(capsys, "ls", DIR / "tk_seq.h5", "--glob", "lstm/*")
    assert status == 0 and "3 tensors" in out and "lstm/lstm_cell/recurrent_kernel" in out
    status, out = cli(capsys, "dump", DIR / "k3_seq.weights.h5", "out/kernel", "--json")
    doc = json.loads(out)
    spec = EXPECTED["k3_seq.weights.h5"]["variables"]["out/kernel"]
    assert status == 0 and np.array(doc["values"], np.float32).tobytes() == \
        expected_array(spec).tobytes()
    status, out = cli(capsys, "validate", *(DIR / n for n in FILES), "--expect", "keras", "--json")
    doc = json.loads(out)
    assert status == 0 and doc["ok"] and {p["kind"] for p in doc["paths"]} == {"keras"}
    status, out = cli(capsys, "validate", DIR / "k3_cnn_npz.keras", "--json")
    assert status == 1 and "pickled" in json.loads(out)["findings"][0]["message"]


def test_cli_convert_and_diff(capsys, tmp_path):
    src = DIR / "k3_cnn.keras"
    assert cli(capsys, "convert", src, tmp_path / "ckpt")[0] == 0
    status, out = cli(capsys, "diff", src, tmp_path / "ckpt", "--json")
    doc = json.loads(out)
    assert status == 0 and doc["same"] and doc["compared"] == 28
    assert cli(capsys, "convert", src, tmp_path / "w.safetensors")[0] == 0
    assert cli(capsys, "convert", tmp_path / "w.safetensors", tmp_path / "b.weights.h5",
               "--like", src)[0] == 0
    status, out = cli(capsys, "diff", DIR / "k3_cnn.weights.h5", tmp_path / "b.weights.h5")
    assert status == 0 and "28 tensors compared" in out
    # Another model: every variable differs or is missing.
    status, out = cli(capsys, "diff", src, DIR / "k3_seq.keras", "--json")
    assert status == 1 and json.loads(out)["compared"] == 0
    # Writing a Keras file needs a layout to follow.
    assert cli(capsys, "convert", tmp_path / "ckpt", tmp_path / "x.weights.h5")[0] == 2


@requires_tf
def test_cli_diff_keras_file_with_its_savedmodel(capsys, tmp_path):
    """model.export() of the model a .keras holds: same variables by name; the
    optimizer state is only in the .keras file."""
    import keras
    model = keras.saving.load_model(DIR / "k3_seq.keras")
    model.export(str(tmp_path / "export"), verbose=False)
    status, out = cli(capsys, "diff", DIR / "k3_seq.keras", tmp_path / "export", "--json")
    doc = json.loads(out)
    assert doc["compared"] == len(EXPECTED["k3_seq.keras"]["variables"]) and doc["changed"] == []
    assert all(n.startswith("adam_1/") for n in doc["only_in_a"])
    # model.export() also saves the state of the LSTM's seed generator, which .keras does not.
    # (named seed_generator_N, N counting generators made in this process so far)
    (state,) = doc["only_in_b"]
    assert state.startswith("seed_generator") and state.endswith("/seed_generator_state")
    assert status == 1


# --- bad input ---------------------------------------------------------------------------

def _zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


CONFIG = json.dumps({"class_name": "Functional", "config": {"layers": []}})


def test_not_what_it_claims(tmp_path):
    (tmp_path / "a.keras").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    (tmp_path / "b.h5").write_bytes(b"PK\x03\x04 not a zip")
    (tmp_path / "c.weights.h5").write_bytes(b"plain text")
    (tmp_path / "d.keras").write_bytes(b"PK\x03\x04 not a zip")
    truncated = tmp_path / "e.weights.h5"
    truncated.write_bytes((DIR / "k3_cnn.weights.h5").read_bytes()[:5000])
    for name, match in (("a.keras", "unreadable HDF5"), ("b.h5", "not a .keras archive"),
                        ("c.weights.h5", "not an HDF5 file"), ("d.keras", "not a .keras archive"),
                        ("e.weights.h5", "unreadable HDF5")):
        with pytest.raises(FormatError, match=match) as exc:
            tk.KerasReader(tmp_path / name)
        assert str(tmp_path / name) in str(exc.value)


@pytest.mark.parametrize("member", ["../escape.txt", "/abs/path", "a/../../b", "C:/windows"])
def test_zip_member_names_that_escape(tmp_path, member):
    path = _zip(tmp_path / "m.keras", {"config.json": CONFIG, member: b"x"})
    with pytest.raises(FormatError, match="escapes the archive"):
        tk.KerasReader(path)


def test_zip_member_sizes_are_checked_before_reading(tmp_path):
    weights = (DIR / "k3_cnn.weights.h5").read_bytes()
    path = _zip(tmp_path / "m.keras", {"config.json": CONFIG, "model.weights.h5": weights},
                zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    # The central directory's uncompressed size of the last member: a claimed bomb.
    central = data.rindex(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 0xFFFF0000)
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="not what compression does"):
        tk.KerasReader(path)


def test_zip_without_weights_or_config(tmp_path):
    with pytest.raises(FormatError, match="without model.weights.h5"):
        tk.KerasReader(_zip(tmp_path / "a.keras", {"config.json": CONFIG}))
    weights = (DIR / "k3_cnn.weights.h5").read_bytes()
    with pytest.raises(FormatError, match="without config.json"):
        tk.KerasReader(_zip(tmp_path / "b.keras", {"model.weights.h5": weights}))
    with pytest.raises(FormatError, match="config.json"):
        tk.KerasReader(_zip(tmp_path / "c.keras", {"config.json": "[1, ", "model.weights.h5": weights}))


@pytest.mark.parametrize("config", [
    {"class_name": "Functional", "config": []},
    {"class_name": 7, "config": {"layers": "not a list", "name": ["x"]}},
    {"config": {"layers": [1, None, {"class_name": {"a": 1}, "config": 3}]}},
    {"class_name": "Sequential", "config": {"name": 5, "layers": [{"class_name": "Dense"}]},
     "compile_config": {"optimizer": {"class_name": "Adam", "config": []}}},
])
def test_odd_config_json_never_crashes(tmp_path, config):
    """config.json only helps naming: whatever it holds, the datasets read by path."""
    weights = (DIR / "k3_cnn.weights.h5").read_bytes()
    path = _zip(tmp_path / "m.keras", {"config.json": json.dumps(config),
                                       "model.weights.h5": weights})
    try:
        reader = tk.KerasReader(path)
    except FormatError:
        return
    with reader:
        assert sorted(reader) == sorted(EXPECTED["k3_cnn.weights.h5"]["hdf5"])
        for name in reader:
            reader.get_tensor(name)


def test_deflated_member_is_read_in_memory(tmp_path):
    weights = (DIR / "k3_seq.weights.h5").read_bytes()
    config = zipfile.ZipFile(DIR / "k3_seq.keras").read("config.json")
    path = _zip(tmp_path / "m.keras", {"config.json": config, "model.weights.h5": weights},
                zipfile.ZIP_DEFLATED)
    with tk.KerasReader(path) as reader, tk.KerasReader(DIR / "k3_seq.keras") as stored:
        assert reader.variable_names() == stored.variable_names()
        for name in stored:
            assert reader[name].tobytes() == stored[name].tobytes()


def test_npz_weights_are_never_unpickled(monkeypatch):
    import pickle
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(UnsupportedError, match="pickled"):
        tk.KerasReader(DIR / "k3_cnn_npz.keras")


def test_dataset_claiming_more_than_its_bytes(tmp_path):
    """A fill-value dataset with no stored bytes cannot make the reader allocate."""
    import h5py
    path = tmp_path / "big.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/dense/vars/0", shape=(1 << 20, 1 << 10), dtype="f4",
                         chunks=(1024, 1024))
    assert path.stat().st_size < 100_000
    with tk.KerasReader(path) as reader:
        assert reader.shape("dense/kernel") == [1 << 20, 1 << 10]
        with pytest.raises(FormatError, match="claims 4294967296 bytes"):
            reader["dense/kernel"]


def test_missing_h5py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(UnsupportedError, match=r"tfformats\[keras\]"):
        tk.KerasReader(DIR / "k3_cnn.keras")


def test_damaged_bytes_never_crash(tmp_path):
    """Flipped bytes all over a .keras file: a tfformats error or a readable file."""
    data = (DIR / "k3_seq.keras").read_bytes()
    rng = np.random.default_rng(0)
    for i in range(40):
        damaged = bytearray(data)
        for where in rng.integers(0, len(data), 8):
            damaged[where] ^= 0xFF
        path = tmp_path / f"d{i}.keras"
        path.write_bytes(bytes(damaged))
        try:
            with tk.KerasReader(path) as reader:
                for name in reader:
                    reader.get_tensor(name)
        except TFFormatsError:
            pass
