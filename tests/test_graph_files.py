"""Graph files (frozen GraphDefs, text graphs, MetaGraphDefs) as readers of their
constants (tfformats.graph.GraphReader) and on the command line, against the
values TensorFlow wrote (tests/fixtures/frozen_graph) or reads live."""

import json

import numpy as np
import pytest

import tfformats
from tfformats import convert
from tfformats.errors import FormatError, TensorNotFoundError
from tfformats.checkpoint import is_graph_path
from tfformats.graph import GraphReader, graph_constants, summarize_graph

from conftest import FIXTURES, assert_same_tensor, requires_tf
from test_cli import run, run_json
from test_graph import EXPECTED, FROZEN, FUNCTION_GRAPH, check_against_expected

META = FIXTURES / "tf1_partitioned" / "model.ckpt.meta"


def test_open_checkpoint_reads_a_frozen_graph_as_tensorflow_wrote_it():
    with tfformats.open_checkpoint(FROZEN) as reader:
        assert isinstance(reader, GraphReader) and reader.kind == "graph"
        check_against_expected(dict(reader.items()))
        specs = {c["name"]: c for c in EXPECTED["consts"]}
        assert list(reader) == sorted(specs) and len(reader) == len(specs)
        for name, spec in specs.items():
            assert reader.shape(name) == spec["shape"]
            assert reader.dtype(name).name == spec["dtype"]
            assert reader.entry(name).shape == tuple(spec["shape"])
        assert reader.get_variable_to_shape_map() == {n: s["shape"] for n, s in specs.items()}
        assert reader.nbytes("weights") == 24


def test_graph_reader_lookups_arrays_and_errors():
    with GraphReader(FROZEN) as reader:
        assert reader.key("weights:0") == "weights"   # a TensorFlow tensor name
        np.testing.assert_array_equal(reader["weights:0"], reader.get_tensor("weights"))
        assert "weights" in reader and reader.has_tensor("weights") and "weights:0" not in reader
        view = reader.get_tensor("weights")
        with pytest.raises(ValueError):
            view[0, 0] = 1   # read-only, as every checkpoint reader's arrays
        mine = reader.get_tensor("weights", copy=True)
        mine[0, 0] = 1
        assert reader.get_tensor("weights")[0, 0] != 1
        with pytest.raises(TensorNotFoundError, match="closest: 'weights'"):
            reader.get_tensor("weight")


def test_graph_paths_and_saved_model_files_are_told_apart(tmp_path):
    assert is_graph_path("a/frozen.pb") and is_graph_path("m.ckpt.meta") and is_graph_path("g.pbtxt")
    for name in ("saved_model.pb", "saved_model.pbtxt", "fingerprint.pb", "keras_metadata.pb",
                 "ckpt.index", "w.safetensors"):
        assert not is_graph_path(f"x/{name}")
    # a SavedModel's own file still opens as what it is, not as a graph of constants
    with pytest.raises(tfformats.errors.TFFormatsError):
        tfformats.open_checkpoint(FIXTURES / "tf1_builder" / "saved_model.pb")
    bad = tmp_path / "broken.pb"
    bad.write_bytes(b"\x0a\xff\xff\xff")
    with pytest.raises(FormatError, match="broken.pb"):
        tfformats.open_checkpoint(bad)


@requires_tf
def test_meta_graph_and_function_constants_match_tensorflow():
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2
    graph_def = meta_graph_pb2.MetaGraphDef.FromString(META.read_bytes()).graph_def
    theirs = {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in graph_def.node if n.op == "Const"}
    with tfformats.open_checkpoint(META) as reader:
        assert set(reader) == set(theirs)
        for name, value in theirs.items():
            assert_same_tensor(reader[name], value)
    with tfformats.open_checkpoint(FUNCTION_GRAPH) as reader:
        assert dict(reader.get_variable_to_shape_map()) == {
            k: list(v.shape) for k, v in graph_constants(FUNCTION_GRAPH).items()}


@requires_tf
def test_converted_graph_constants_are_what_tensorflow_reads(tmp_path):
    import tensorflow as tf
    prefix = tmp_path / "ckpt"
    assert convert.checkpoint_to_checkpoint(FROZEN, prefix) == []
    theirs = tf.train.load_checkpoint(str(prefix))
    ours = graph_constants(FROZEN)
    assert set(theirs.get_variable_to_shape_map()) == set(ours)
    for name, value in ours.items():
        got = theirs.get_tensor(name)
        assert_same_tensor(np.asarray(got, dtype=object) if value.dtype == object else got, value)
    skipped = convert.checkpoint_to_safetensors(FROZEN, tmp_path / "w.safetensors", skip_unsupported=True)
    assert sorted(skipped) == sorted(n for n, v in ours.items() if v.dtype == object)
    from safetensors.numpy import load_file
    for name, value in load_file(tmp_path / "w.safetensors").items():
        assert_same_tensor(value, ours[name])


@requires_tf
def test_summarize_graph_inputs_and_outputs_match_tensorflow():
    import tensorflow as tf
    graph_def = tf.compat.v1.GraphDef.FromString(FROZEN.read_bytes())
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
    ops = graph.get_operations()
    consumed = {t.op.name for op in ops for t in op.inputs}
    summary = summarize_graph(FROZEN)
    assert summary["kind"] == "GraphDef" and summary["nodes"] == len(ops)
    assert summary["inputs"] == [{"name": op.name, "dtype": op.outputs[0].dtype.name,
                                  "shape": [-1 if d is None else d for d in op.outputs[0].shape.as_list()]}
                                 for op in ops if op.type == "Placeholder"]
    assert [o["name"] for o in summary["outputs"]] == [
        op.name for op in ops if op.name not in consumed and op.type not in ("Const", "Placeholder")]
    assert summary["constants"] == sum(op.type == "Const" for op in ops)
    meta = summarize_graph(META)
    assert meta["kind"] == "MetaGraphDef" and meta["signatures"] == []


# --- the command line -------------------------------------------------------------------

def test_cli_ls_dump_validate_and_show_a_frozen_graph():
    specs = {c["name"]: c for c in EXPECTED["consts"]}
    doc = run_json("ls", FROZEN)
    assert doc["format"] == "graph"
    assert {t["name"]: (t["dtype"], t["shape"]) for t in doc["tensors"]} == {
        n: (s["dtype"], s["shape"]) for n, s in specs.items()}
    dumped = run_json("dump", FROZEN, "weights:0")
    assert dumped["name"] == "weights" and dumped["shape"] == specs["weights"]["shape"]
    assert np.array(dumped["values"], np.float32).tobytes().hex() == specs["weights"]["hex"]
    doc = run_json("validate", FROZEN, META, FUNCTION_GRAPH, "--expect", "graph")
    assert doc["findings"] == [] and {p["kind"] for p in doc["paths"]} == {"graph"}
    assert doc["paths"][0]["tensors"] == len(specs)
    shown = run_json("show", FROZEN)
    assert shown["constants"] == len(specs) and shown["kind"] == "GraphDef"
    text = run("show", FROZEN, check=0).stdout
    assert f"{len(shown['inputs'])} inputs:" in text and f"{len(specs)} constants" in text


def test_cli_convert_and_diff_a_graph(tmp_path):
    run("convert", FROZEN, tmp_path / "ckpt", check=0)
    doc = run_json("diff", FROZEN, tmp_path / "ckpt", check=0)
    assert doc["same"] and doc["changed"] == [] and doc["compared"] == len(EXPECTED["consts"])
    proc = run("convert", tmp_path / "ckpt", tmp_path / "out.pb", check=2)
    assert "writes no graph files" in proc.stderr


def test_cli_validate_reports_a_constant_that_cannot_decode(tmp_path):
    from tfformats import protos
    graph = protos.GraphDef()
    node = graph.node.add(name="huge", op="Const")
    tensor = node.attr["value"].tensor
    tensor.dtype = 1
    tensor.tensor_shape.dim.add(size=3)
    tensor.tensor_content = b"\x00" * 5   # 3 float32 need 12 bytes
    path = tmp_path / "bad.pb"
    path.write_bytes(graph.SerializeToString())
    doc = run_json("validate", path, check=1)
    assert [(f["check"], f["tensor"]) for f in doc["findings"]] == [("tensor", "huge")]
    assert run_json("ls", path)["tensors"][0]["shape"] == [3]   # listing needs no values


@requires_tf
def test_cli_on_a_saved_model_that_stores_no_variables(tmp_path):
    import tensorflow as tf
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), tf1.Session(graph=graph) as session:
        x = tf1.placeholder(tf.float32, [None, 2], name="x")
        y = tf.identity(x * tf.constant([1.0, 2.0]), name="y")
        builder = tf1.saved_model.Builder(str(tmp_path / "sm"))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
            "serving_default": tf1.saved_model.predict_signature_def({"x": x}, {"y": y})})
        builder.save()
    assert not (tmp_path / "sm" / "variables" / "variables.index").exists()   # TF writes none
    assert run_json("ls", tmp_path / "sm")["tensors"] == []
    assert run_json("validate", tmp_path / "sm")["findings"] == []
    assert "serving_default" in run("show", tmp_path / "sm", "--all", check=0).stdout
