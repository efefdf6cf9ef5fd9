"""Object graphs: names, paths and slots as TensorFlow writes them."""

import numpy as np
import pytest

from conftest import FIXTURES
from tfformats import CheckpointReader, FormatError, objgraph


def _tf_checkpoint(tmp_path):
    """A TF checkpoint whose local names need escaping ("." and "/")."""
    import tensorflow as tf
    root = tf.Module()
    inner = tf.Module()
    setattr(inner, "w.1/x", tf.Variable(np.arange(3, dtype=np.float32)))
    setattr(root, "a.b", inner)
    root.plain = tf.Variable(2.0)
    return tf.train.Checkpoint(model=root).write(str(tmp_path / "ckpt"))


def test_escaped_paths_are_the_keys_tensorflow_wrote(tmp_path):
    with CheckpointReader(_tf_checkpoint(tmp_path)) as reader:
        graph = reader.object_graph()
        keys = set(reader) - {objgraph.OBJECT_GRAPH_KEY}
    variables = objgraph.object_variables(graph)
    assert set(variables) == keys
    assert "model/a..b/w..1.Sx/.ATTRIBUTES/VARIABLE_VALUE" in keys   # TF's own escaping
    for key, var in variables.items():
        assert key == f"{var.path}{objgraph.ATTRIBUTES}{var.attribute}"
    assert objgraph.escape("w.1/x") == "w..1.Sx"
    assert objgraph.unescape("w..1.Sx", "t") == "w.1/x"


def test_slot_paths_name_variable_and_optimizer():
    with CheckpointReader(FIXTURES / "keras_adam" / "ckpt-2") as reader:
        variables = objgraph.object_variables(reader.object_graph())
        keys = set(reader)
    slots = [v for v in variables.values() if v.slot_of is not None]
    assert slots and all(v.key in keys for v in slots)
    for v in slots:   # TF keys a slot by the same path the graph gives it
        assert v.path == f"{v.slot_of}/{objgraph.OPTIMIZER_SLOT}/optimizer/{v.slot_name}"
        assert v.key == v.path + objgraph.VARIABLE_SUFFIX


@pytest.mark.parametrize("prefix", [FIXTURES / "keras_adam" / "ckpt-2", None])
def test_building_a_graph_from_tf_keys_gives_tf_names_back(prefix, tmp_path):
    with CheckpointReader(prefix or _tf_checkpoint(tmp_path)) as reader:
        theirs = objgraph.object_variables(reader.object_graph())
    ours, keys = objgraph.build_object_graph(list(theirs))
    assert keys == {k: k for k in theirs}
    rebuilt = objgraph.object_variables(ours)
    assert {k: (v.path, v.slot_of, v.slot_name) for k, v in rebuilt.items()} == \
        {k: (v.path, v.slot_of, v.slot_name) for k, v in theirs.items()}


def test_node_paths_are_shortest_and_skip_unreachable():
    graph, _ = objgraph.build_object_graph(["a/b/c", "d"])
    # a shorter way to c (node 3), through d, and a node no one reaches
    graph.nodes[graph.nodes[0].children[1].node_id].children.add(node_id=3, local_name="c2")
    graph.nodes.add()
    paths = objgraph.node_paths(graph.nodes)
    assert paths == {0: "", 1: "a", 2: "a/b", 3: "d/c2", 4: "d"}
    assert len(graph.nodes) - 1 not in paths


def test_bad_names_are_refused():
    with pytest.raises(FormatError, match="not an escaped object-path component"):
        objgraph.build_object_graph(["a.x/b"])
    with pytest.raises(FormatError, match="another name also stands for"):
        objgraph.build_object_graph(["m/w", "m/w/.ATTRIBUTES/VARIABLE_VALUE"])
    with pytest.raises(FormatError, match="is not a TrackableObjectGraph"):
        objgraph.parse_graph(b"\xff\xff", "somewhere")
