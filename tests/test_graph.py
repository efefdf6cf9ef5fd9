"""Frozen GraphDef files and their Const nodes, against what TensorFlow read back."""

import base64
import json

import numpy as np
import pytest
from google.protobuf import text_format

from tfformats import protos
from tfformats.errors import CheckpointNotFoundError, FormatError
from tfformats.graph import graph_constants, load_graph_def

from conftest import FIXTURES, assert_same_tensor, expected_array, requires_tf

FROZEN = FIXTURES / "frozen_graph" / "frozen.pb"
EXPECTED = json.loads((FIXTURES / "frozen_graph" / "expected.json").read_text())
# A tf.function graph: outer's body at the top level, middle and inner (nested
# tf.functions) in its library, each with a Const named "c".
FUNCTION_GRAPH = FIXTURES / "function_graph" / "graph.pb"
FUNCTION_EXPECTED = json.loads(
    (FIXTURES / "function_graph" / "expected_constants.json").read_text())


def expected_key(spec):
    return spec["node"] if spec["function"] is None else f"{spec['function']}/{spec['node']}"


def check_against_expected(consts):
    assert set(consts) == {c["name"] for c in EXPECTED["consts"]}
    for spec in EXPECTED["consts"]:
        array = consts[spec["name"]]
        assert list(array.shape) == spec["shape"], spec["name"]
        if spec["dtype"] == "string":
            assert array.dtype == object
            assert list(array.ravel()) == [base64.b64decode(s) for s in spec["strings"]]
        else:
            assert array.dtype.name == spec["dtype"], spec["name"]
            assert array.tobytes().hex() == spec["hex"], spec["name"]


def test_constants_match_tf():
    check_against_expected(graph_constants(FROZEN))


def test_every_value_encoding_is_covered():
    fields = {f for c in EXPECTED["consts"] for f in c["fields"]}
    assert {"tensor_content", "float_val", "half_val", "string_val", "int64_val",
            "bool_val", "int_val"} <= fields


def test_graph_def_nodes():
    graph = load_graph_def(FROZEN)
    assert [(n.name, n.op) for n in graph.node] == [(n["name"], n["op"]) for n in EXPECTED["nodes"]]


def test_text_format(tmp_path):
    graph = load_graph_def(FROZEN)
    path = tmp_path / "frozen.pbtxt"
    path.write_text(text_format.MessageToString(graph))
    check_against_expected(graph_constants(path))
    # A text file under a binary-looking name is recognised too.
    other = tmp_path / "graph.pb"
    other.write_text(text_format.MessageToString(graph))
    assert load_graph_def(other) == graph


def test_accepts_a_message():
    check_against_expected(graph_constants(load_graph_def(FROZEN)))


@requires_tf
def test_accepts_tensorflow_graph_def():
    from tensorflow.core.framework import graph_pb2

    theirs = graph_pb2.GraphDef.FromString(FROZEN.read_bytes())
    check_against_expected(graph_constants(theirs))


def test_bad_files(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="missing.pb"):
        load_graph_def(tmp_path / "missing.pb")
    bad = tmp_path / "bad.pb"
    bad.write_bytes(FROZEN.read_bytes()[:100])
    with pytest.raises(FormatError, match="bad.pb"):
        load_graph_def(bad)
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(FormatError, match="bad.pb"):
        load_graph_def(bad)
    with pytest.raises(CheckpointNotFoundError, match="frozen.pb"):
        load_graph_def(bad / "frozen.pb")   # a file where a directory should be
    txt = tmp_path / "bad.pbtxt"
    txt.write_text("node { name: ")
    with pytest.raises(FormatError, match="bad.pbtxt"):
        load_graph_def(txt)


def test_bad_constant_names_node(tmp_path):
    graph = protos.GraphDef()
    node = graph.node.add(name="broken", op="Const")
    node.attr["value"].tensor.dtype = 1
    node.attr["value"].tensor.tensor_shape.dim.add(size=3)
    node.attr["value"].tensor.tensor_content = b"\0" * 5
    with pytest.raises(FormatError, match="broken"):
        graph_constants(graph)


def _graph_with_function(top_name, top_value, function_value):
    """A GraphDef with Const `top_name` and function "f" holding Const "c"."""
    graph = protos.GraphDef()
    graph.node.add(name=top_name, op="Const").attr["value"].tensor.CopyFrom(top_value)
    function = graph.library.function.add()
    function.signature.name = "f"
    function.node_def.add(name="c", op="Const").attr["value"].tensor.CopyFrom(function_value)
    return graph


def test_functions_false_reads_only_top_level():
    graph = _graph_with_function("c", protos.TensorProto(dtype=1, float_val=[1.0]),
                                 protos.TensorProto(dtype=3, int_val=[2]))
    assert graph_constants(graph, functions=False) == {"c": np.float32(1.0)}
    assert graph_constants(graph) == {"c": np.float32(1.0), "f/c": np.int32(2)}


def check_function_graph(consts):
    assert list(consts) == [expected_key(spec) for spec in FUNCTION_EXPECTED["consts"]]
    for spec in FUNCTION_EXPECTED["consts"]:
        assert_same_tensor(consts[expected_key(spec)], expected_array(spec))


def test_function_constants_match_tf():
    check_function_graph(graph_constants(FUNCTION_GRAPH))
    check_function_graph(graph_constants(load_graph_def(FUNCTION_GRAPH)))


@requires_tf
def test_function_constants_of_tensorflow_graph_def():
    from tensorflow.core.framework import graph_pb2

    check_function_graph(graph_constants(graph_pb2.GraphDef.FromString(
        FUNCTION_GRAPH.read_bytes())))


def test_function_constant_keys():
    consts = graph_constants(FUNCTION_GRAPH)
    middle, inner = FUNCTION_EXPECTED["functions"]
    assert middle.startswith("__inference_middle_") and inner.startswith("__inference_inner_")
    # The three constants named "c" stay apart.
    assert {"c", f"{middle}/c", f"{inner}/c"} <= set(consts)
    assert consts["c"].shape == (2,) and consts[f"{middle}/c"].shape == ()
    assert consts[f"{inner}/c"].shape == (2, 3, 2)
    assert list(consts[f"{inner}/tag"]) == [b"in", "ïnner".encode()]
    assert set(graph_constants(FUNCTION_GRAPH, functions=False)) == {"c", "label"}
    fields = {f for c in FUNCTION_EXPECTED["consts"] if c["function"] for f in c["fields"]}
    assert {"tensor_content", "float_val", "int64_val", "string_val"} <= fields


def test_bad_function_constant_names_function_and_node(tmp_path):
    graph = load_graph_def(FUNCTION_GRAPH)
    inner = FUNCTION_EXPECTED["functions"][1]
    function = next(f for f in graph.library.function if f.signature.name == inner)
    node = next(n for n in function.node_def if n.name == "ids")
    node.attr["value"].tensor.tensor_content = b"\0" * 5
    path = tmp_path / "broken.pb"
    path.write_bytes(graph.SerializeToString())
    with pytest.raises(FormatError, match=rf"broken\.pb: Const node 'ids' of function '{inner}'"):
        graph_constants(path)
    with pytest.raises(FormatError, match=rf"^Const node 'ids' of function '{inner}'"):
        graph_constants(graph)
    assert "c" in graph_constants(path, functions=False)


def test_function_key_clash_raises():
    graph = _graph_with_function("f/c", protos.TensorProto(dtype=1, float_val=[1.0]),
                                 protos.TensorProto(dtype=1, float_val=[2.0]))
    with pytest.raises(FormatError, match="'f/c' is already taken"):
        graph_constants(graph)


def test_placeholder_value_is_skipped():
    graph = protos.GraphDef()
    function = graph.library.function.add()
    function.signature.name = "f"
    function.node_def.add(name="c", op="Const").attr["value"].placeholder = "value"
    assert graph_constants(graph) == {}


@requires_tf
def test_saved_model_function_constants_match_tf():
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    from tfformats import load_saved_model

    path = FIXTURES / "saved_model_module"
    consts = graph_constants(load_saved_model(path).meta_graph().graph_def)
    graph = saved_model_pb2.SavedModel.FromString(
        (path / "saved_model.pb").read_bytes()).meta_graphs[0].graph_def
    want = {n.name: n for n in graph.node if n.op == "Const"}
    want.update((f"{f.signature.name}/{n.name}", n)
                for f in graph.library.function for n in f.node_def if n.op == "Const")
    assert list(consts) == list(want)
    assert any("/" in key for key in want)
    for key, node in want.items():
        assert_same_tensor(consts[key], tf.make_ndarray(node.attr["value"].tensor))


def test_ops_may_be_one_name():
    graph = protos.GraphDef()
    graph.node.add(name="c", op="Const").attr["value"].tensor.CopyFrom(
        protos.TensorProto(dtype=1, float_val=[1.0]))
    graph.node.add(name="h", op="HostConst").attr["value"].tensor.CopyFrom(
        protos.TensorProto(dtype=1, float_val=[2.0]))
    assert list(graph_constants(graph, ops="HostConst")) == ["h"]
    assert list(graph_constants(graph, ops=("Const", "HostConst"))) == ["c", "h"]


def _tf_constants(graph_def):
    """name -> array of every top-level Const node, decoded by TensorFlow."""
    import tensorflow as tf
    return {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in graph_def.node if n.op == "Const"}


@requires_tf
def test_meta_graph_file_constants_match_tf():
    from tensorflow.core.protobuf import meta_graph_pb2
    meta = FIXTURES / "tf1_partitioned" / "model.ckpt.meta"
    theirs = _tf_constants(meta_graph_pb2.MetaGraphDef.FromString(meta.read_bytes()).graph_def)
    ours = graph_constants(meta)
    assert set(ours) == set(theirs) and theirs
    for name, value in theirs.items():
        assert_same_tensor(ours[name], value)


@requires_tf
def test_saved_model_constants_of_every_meta_graph_match_tf():
    from tensorflow.core.protobuf import saved_model_pb2
    model = FIXTURES / "tf1_multi_tags"
    theirs = {}
    for meta in saved_model_pb2.SavedModel.FromString((model / "saved_model.pb").read_bytes()).meta_graphs:
        tags = ",".join(sorted(meta.meta_info_def.tags))
        theirs.update((f"{tags}:{k}", v) for k, v in _tf_constants(meta.graph_def).items())
    assert {k.split(":")[0] for k in theirs} == {"serve", "gpu,train"}
    for path in (model, model / "saved_model.pb"):
        ours = graph_constants(path)
        assert set(ours) == set(theirs)
        for name, value in theirs.items():
            assert_same_tensor(ours[name], value)
    # One meta graph: plain node names, as for a GraphDef file.
    one = graph_constants(FIXTURES / "tf1_builder_pbtxt" / "saved_model.pbtxt")
    assert one.keys() == graph_constants(FIXTURES / "tf1_builder").keys() and ":" not in "".join(one)


def test_a_checkpoint_file_is_named_not_misread():
    with pytest.raises(FormatError, match="a tensor file .*not a graph"):
        graph_constants(FIXTURES / "sharded" / "ckpt.index")
