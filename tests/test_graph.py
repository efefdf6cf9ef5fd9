"""Frozen GraphDef files and their Const nodes, against what TensorFlow read back."""

import base64
import json

import numpy as np
import pytest
from google.protobuf import text_format

from tfformats import protos
from tfformats.errors import CheckpointNotFoundError, FormatError
from tfformats.graph import graph_constants, load_graph_def

from conftest import FIXTURES, requires_tf

FROZEN = FIXTURES / "frozen_graph" / "frozen.pb"
EXPECTED = json.loads((FIXTURES / "frozen_graph" / "expected.json").read_text())


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


def test_only_top_level_constants():
    graph = protos.GraphDef()
    graph.node.add(name="c", op="Const").attr["value"].tensor.CopyFrom(
        protos.TensorProto(dtype=1, float_val=[1.0]))
    function = graph.library.function.add()
    function.node_def.add(name="inner", op="Const")
    assert list(graph_constants(graph)) == ["c"]
    assert graph_constants(graph)["c"] == np.float32(1.0)


def test_ops_may_be_one_name():
    graph = protos.GraphDef()
    graph.node.add(name="c", op="Const").attr["value"].tensor.CopyFrom(
        protos.TensorProto(dtype=1, float_val=[1.0]))
    graph.node.add(name="h", op="HostConst").attr["value"].tensor.CopyFrom(
        protos.TensorProto(dtype=1, float_val=[2.0]))
    assert list(graph_constants(graph, ops="HostConst")) == ["h"]
    assert list(graph_constants(graph, ops=("Const", "HostConst"))) == ["c", "h"]
