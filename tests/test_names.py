"""One way to name a tensor (tfformats/names.py): keys, object paths and TF1/Keras
variable names, with or without `:0`, everywhere a tensor is looked up."""

import json
import os

import numpy as np
import pytest

import tfformats
from tfformats import convert
from tfformats.names import Names

from conftest import FIXTURES, requires_tf
from test_cli import one_error_line, run, run_json

KERAS3 = FIXTURES / "keras3_export"
KERAS = FIXTURES / "keras_adam" / "ckpt-2"
KERNEL_KEY = "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
EXPECTED = json.loads((FIXTURES / "keras_adam" / "expected.json").read_text())["ckpt-2"]


def expected_kernel():
    spec = EXPECTED[KERNEL_KEY]
    return np.frombuffer(bytes.fromhex(spec["hex"]), np.float32).reshape(spec["shape"])


def lookups(reader, name):
    """What every lookup of the reader says about `name`."""
    return {"[]": reader[name], "get_tensor": reader.get_tensor(name),
            "slice": reader.get_slice(name)[...], "shape": reader.shape(name),
            "dtype": reader.dtype(name).name, "key": reader.key(name)}


@pytest.mark.parametrize("name", [
    KERNEL_KEY, KERNEL_KEY + ":0", "model/layer_with_weights-0/kernel",
    "model/layer_with_weights-0/kernel:0", "model/layer_with_weights-0/kernel/",
    "dense/kernel", "dense/kernel:0"])
def test_every_lookup_takes_every_form(name):
    with tfformats.open_checkpoint(KERAS) as reader:
        found = lookups(reader, name)
    assert found["key"] == KERNEL_KEY
    assert found["shape"] == [4, 3] and found["dtype"] == "float32"
    for what in ("[]", "get_tensor", "slice"):
        np.testing.assert_array_equal(found[what], expected_kernel(), err_msg=what)


def test_exact_keys_do_not_build_the_name_index():
    with tfformats.open_checkpoint(KERAS) as reader:
        reader[KERNEL_KEY], reader.get_tensor(KERNEL_KEY), reader.shape(KERNEL_KEY)
        reader.get_slice(KERNEL_KEY)[0]
        assert reader._names is None          # a key costs one lookup, as before
        reader["dense/kernel"]
        assert reader._names is not None      # built on the first miss


@pytest.mark.parametrize("prefix", [KERAS, FIXTURES / "tf1_v1" / "model.ckpt-7"])
def test_a_name_that_is_no_str_is_a_type_error(prefix):
    with tfformats.open_checkpoint(prefix) as reader:
        for lookup in (reader.__getitem__, reader.get_tensor, reader.shape, reader.get_slice,
                       reader.key):
            with pytest.raises(TypeError):
                lookup(5)
        assert not reader.has_tensor(5) and 5 not in reader


def test_in_and_has_tensor_stay_about_keys_as_in_tensorflow():
    with tfformats.open_checkpoint(KERAS) as reader:
        assert KERNEL_KEY in reader and "dense/kernel" not in reader
        assert not reader.has_tensor(KERNEL_KEY + ":0")


def test_keras3_export_names_each_variable_twice_but_unambiguously():
    """`variables/N` and `_all_variables/M` hold one variable: its Keras name is not ambiguous."""
    with tfformats.open_checkpoint(KERAS3) as reader:
        assert reader.key("hidden/kernel") == "variables/0/.ATTRIBUTES/VARIABLE_VALUE"
        assert reader.key("head/bias:0") == "variables/3/.ATTRIBUTES/VARIABLE_VALUE"
        assert reader.key("_all_variables/1") == "_all_variables/1/.ATTRIBUTES/VARIABLE_VALUE"
        np.testing.assert_array_equal(reader["hidden/kernel"], reader["_all_variables/0"])
        assert reader.shape("head/kernel") == [3, 2]


def test_missing_name_suggests_the_closest():
    with tfformats.open_checkpoint(KERAS3) as reader:
        for lookup in (reader.__getitem__, reader.get_tensor, reader.shape, reader.dtype,
                       reader.get_slice):
            with pytest.raises(tfformats.TensorNotFoundError,
                               match=r"no tensor, object path or variable name 'hiden/kernal'; "
                                     r"closest: 'hidden/kernel'") as info:
                lookup("hiden/kernal")
            assert isinstance(info.value, KeyError)
            assert not isinstance(info.value, tfformats.AmbiguousNameError)


def test_names_unit():
    names = Names({"a/.ATTRIBUTES/VARIABLE_VALUE", "b/.ATTRIBUTES/VARIABLE_VALUE", "c"},
                  paths={"a": "a/.ATTRIBUTES/VARIABLE_VALUE", "b": "b/.ATTRIBUTES/VARIABLE_VALUE"},
                  full_names={"dense/kernel": ["a/.ATTRIBUTES/VARIABLE_VALUE",
                                               "b/.ATTRIBUTES/VARIABLE_VALUE"],
                              "c": ["a/.ATTRIBUTES/VARIABLE_VALUE"]},
                  where="ckpt")
    assert names.resolve("a") == "a/.ATTRIBUTES/VARIABLE_VALUE"
    assert names.resolve("c:0") == "c"                      # an exact key beats a variable name
    with pytest.raises(tfformats.AmbiguousNameError) as info:
        names.resolve("dense/kernel:0")
    assert info.value.candidates == ["a/.ATTRIBUTES/VARIABLE_VALUE", "b/.ATTRIBUTES/VARIABLE_VALUE"]
    assert "a/.ATTRIBUTES/VARIABLE_VALUE, b/.ATTRIBUTES/VARIABLE_VALUE" in str(info.value)
    assert isinstance(info.value, KeyError)
    same = Names(names.keys, names.paths, names.full_names, same=lambda keys: True)
    assert same.resolve("dense/kernel") == "a/.ATTRIBUTES/VARIABLE_VALUE"
    with pytest.raises(tfformats.TensorNotFoundError, match="closest: 'c'"):
        names.resolve("cc")
    with pytest.raises(tfformats.TensorNotFoundError, match="names are str"):
        names.resolve(3)


@pytest.fixture(scope="module")
def duplicate_names(tmp_path_factory):
    """A TF2 checkpoint with two different variables both named `dup`."""
    import tensorflow as tf
    prefix = str(tmp_path_factory.mktemp("dup") / "ckpt")
    tf.train.Checkpoint(a=tf.Variable([1.0, 2.0], name="dup"),
                        b=tf.Variable([3.0, 4.0], name="dup"),
                        c=tf.Variable(5.0, name="solo")).write(prefix)
    return prefix


@requires_tf
def test_ambiguous_name_lists_the_candidates(duplicate_names):
    with tfformats.open_checkpoint(duplicate_names) as reader:
        for lookup in (reader.__getitem__, reader.get_tensor, reader.shape, reader.get_slice):
            with pytest.raises(tfformats.AmbiguousNameError,
                               match=r"'dup:0' is the variable name of 2 different tensors: "
                                     r"a/.ATTRIBUTES/VARIABLE_VALUE, b/.ATTRIBUTES/VARIABLE_VALUE"):
                lookup("dup:0")
        assert reader["a"].tolist() == [1.0, 2.0] and reader["solo"] == 5.0
    proc = run("dump", duplicate_names, "dup", check=3)
    assert "a/.ATTRIBUTES/VARIABLE_VALUE, b/.ATTRIBUTES/VARIABLE_VALUE" in one_error_line(proc)
    with pytest.raises(tfformats.AmbiguousNameError):
        tfformats.load_tensors(duplicate_names, names=["dup"])


def test_saved_model_variables_use_the_same_resolver():
    sm = tfformats.load_saved_model(KERAS3)
    variables = sm.variables
    assert variables.key("hidden/kernel:0") == "variables/0/.ATTRIBUTES/VARIABLE_VALUE"
    assert isinstance(variables._names, Names)
    with pytest.raises(tfformats.TensorNotFoundError, match="closest: 'hidden/kernel'"):
        variables["hiden/kernel"]
    with tfformats.open_checkpoint(KERAS3) as reader:
        for name in ("hidden/kernel", "variables/2", "head/bias:0"):
            assert variables.key(name) == reader.key(name)
    sm.close()


def test_load_tensors_names_and_object_graph():
    tensors = tfformats.load_tensors(KERAS, names=["dense/kernel", "model/layer_with_weights-0/bias",
                                                   "save_counter/.ATTRIBUTES/VARIABLE_VALUE:0"])
    assert list(tensors) == ["dense/kernel", "model/layer_with_weights-0/bias",
                             "save_counter/.ATTRIBUTES/VARIABLE_VALUE:0"]
    np.testing.assert_array_equal(tensors["dense/kernel"], expected_kernel())
    everything = tfformats.load_tensors(KERAS)
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" not in everything
    assert all(a.dtype != object for a in everything.values())   # ready for torch.from_numpy
    with_graph = tfformats.load_tensors(KERAS, include_object_graph=True)
    assert sorted(with_graph) == sorted(list(everything) + ["_CHECKPOINTABLE_OBJECT_GRAPH"])
    assert list(tfformats.load_tensors(KERAS, names="dense/kernel")) == ["dense/kernel"]


def test_converters_take_names(tmp_path):
    out = tmp_path / "w.npz"
    convert.checkpoint_to_npz(KERAS, out, names=["dense/kernel", "model/layer_with_weights-1/bias"])
    with np.load(out) as npz:
        members = sorted(n for n in npz.files if not n.startswith("__"))
        assert members == [KERNEL_KEY, "model/layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE"]
        np.testing.assert_array_equal(npz[KERNEL_KEY], expected_kernel())
    convert.checkpoint_to_safetensors(KERAS, tmp_path / "w.safetensors", names=["dense/kernel:0"])
    from safetensors.numpy import load_file
    assert list(load_file(str(tmp_path / "w.safetensors"))) == [KERNEL_KEY]
    convert.checkpoint_to_checkpoint(KERAS3, tmp_path / "c", names=["hidden/kernel"])
    assert tfformats.list_variables(tmp_path / "c") == [   # with an object graph of its own
        ("_CHECKPOINTABLE_OBJECT_GRAPH", []), ("variables/0/.ATTRIBUTES/VARIABLE_VALUE", [4, 3])]


# --- the command ---------------------------------------------------------------------

def test_ls_shows_full_names_of_a_keras3_export():
    out = run("ls", KERAS3, check=0).stdout.splitlines()
    assert out[0].split()[:5] == ["NAME", "OBJECT", "PATH", "FULL", "NAME"]
    row = next(line for line in out if line.startswith("variables/0/"))
    assert row.split()[:3] == ["variables/0/.ATTRIBUTES/VARIABLE_VALUE", "variables/0",
                               "hidden/kernel"]
    doc = run_json("ls", KERAS3)
    names = {t["name"]: t["full_name"] for t in doc["tensors"]}
    assert names["variables/2/.ATTRIBUTES/VARIABLE_VALUE"] == "head/kernel"
    assert names["_CHECKPOINTABLE_OBJECT_GRAPH"] is None
    globbed = run_json("ls", KERAS3, "--glob", "hidden/*")
    assert len(globbed["tensors"]) == 4


def test_ls_without_full_names_has_no_column():
    out = run("ls", FIXTURES / "dtypes" / "ckpt", check=0).stdout.splitlines()
    assert "FULL" not in out[0]


def test_dump_a_keras3_name():
    doc = run_json("dump", KERAS3, "hidden/kernel")
    assert doc["name"] == "variables/0/.ATTRIBUTES/VARIABLE_VALUE" and doc["shape"] == [4, 3]
    proc = run("dump", KERAS3, "hiden/kernel", check=3)
    assert "closest: 'hidden/kernel'" in one_error_line(proc)


def test_diff_named_tensors(tmp_path):
    a, b = FIXTURES / "keras_adam" / "ckpt-1", FIXTURES / "keras_adam" / "ckpt-2"
    doc = run_json("diff", a, b, "dense/kernel", "save_counter:0", check=1)
    assert doc["compared"] == 2 and doc["only_in_a"] == doc["only_in_b"] == []
    assert {c["name"]: c["change"] for c in doc["changed"]} == {"dense/kernel": "values",
                                                                "save_counter:0": "values"}
    convert.checkpoint_to_npz(b, tmp_path / "b.npz")
    same = run_json("diff", b, tmp_path / "b.npz", "model/layer_with_weights-0/kernel")
    assert same["same"] and same["compared"] == 1
    proc = run("diff", a, b, "no/such/thing", check=3)
    assert "no tensor, object path or variable name 'no/such/thing'" in one_error_line(proc)


def test_save_counter_is_an_object_path():
    with tfformats.open_checkpoint(KERAS) as reader:
        assert reader.key("save_counter") == "save_counter/.ATTRIBUTES/VARIABLE_VALUE"
