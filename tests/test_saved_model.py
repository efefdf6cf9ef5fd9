"""SavedModel reading, editing and saving, checked against TensorFlow's fixtures and loader."""

import json
import os
import shutil

import numpy as np
import pytest

import tfformats
from tfformats import fileio, fingerprint
from tfformats import saved_model as sm_module
from tfformats.errors import CheckpointNotFoundError, FormatError, TensorNotFoundError
from tfformats.cli.show import _function_lines, show_all_lines
from tfformats.saved_model import load_saved_model, parse_keras_metadata

from conftest import FIXTURES, HAVE_TF, requires_tf

if HAVE_TF:
    import tensorflow as tf

MODELS = ["saved_model_module", "keras3_export", "tf_keras_savedmodel", "tf1_builder",
          "tf1_builder_pbtxt", "tf1_builder_partitioned", "saved_model_composite"]
CLI_MODELS = [m for m in MODELS if (FIXTURES / m / "saved_model_cli_show_all.txt").exists()]


def expected(name):
    path = FIXTURES / name / "expected_saved_model.json"
    if not path.exists():  # the pbtxt twin shares the binary one's description
        path = FIXTURES / name.replace("_pbtxt", "") / "expected_saved_model.json"
    return json.loads(path.read_text())


# --- reading ------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_matches_what_tf_described(name, store):
    sm = load_saved_model(store.path(FIXTURES / name))
    want = expected(name)
    assert sm.format == ("pbtxt" if name.endswith("pbtxt") else "pb")
    assert len(sm.meta_graphs) == len(want["meta_graphs"])
    for meta, spec in zip(sm.meta_graphs, want["meta_graphs"]):
        assert meta.tags == spec["tags"]
        assert meta.tensorflow_version == spec["tensorflow_version"]
        assert meta.is_tf2 == spec["has_object_graph_def"]
        assert len(meta.graph_def.node) == spec["num_graph_nodes"]
        assert len(meta.graph_def.library.function) == spec["num_library_functions"]
        assert [(a.filename, a.tensor_name) for a in meta.assets()] == [
            (a["filename"], a["tensor_name"]) for a in spec["asset_file_defs"]]
        assert list(meta.signatures) == sorted(spec["signatures"])
        for key, sig_spec in spec["signatures"].items():
            sig = meta.signatures[key]
            assert sig.name == key
            assert sig.method_name == sig_spec["method_name"]
            for side in ("inputs", "outputs"):
                infos = getattr(sig, side)
                assert set(infos) == set(sig_spec[side])
                for k, t in sig_spec[side].items():
                    info = infos[k]
                    assert info.encoding == t["encoding"]
                    assert info.tensor_name == t["name"]
                    assert info.dtype_enum == t["dtype_enum"]
                    assert (info.dtype.name if info.dtype else None) == t["dtype"]
                    want_shape = None if t["shape"] is None else [
                        None if d == -1 else d for d in t["shape"]]
                    assert info.shape == want_shape


@pytest.mark.parametrize("name", ["saved_model_module", "keras3_export", "tf_keras_savedmodel"])
def test_fingerprint_pb(name, store):
    fp = load_saved_model(store.path(FIXTURES / name)).fingerprint
    want = expected(name)["fingerprint_pb"]
    for field in fingerprint.HASH_FIELDS:
        assert str(getattr(fp, field)) == want[field]
    assert fp.version.producer == want["version_producer"]


def test_no_fingerprint_is_none():
    assert load_saved_model(FIXTURES / "tf1_builder").fingerprint is None


@pytest.mark.parametrize("name", CLI_MODELS)
def test_api_covers_saved_model_cli_show_all(name):
    sm = load_saved_model(FIXTURES / name)
    text = (FIXTURES / name / "saved_model_cli_show_all.txt").read_text()
    ops_line = next(line for line in text.splitlines() if "contains the following ops:" in line)
    ops = ops_line.split("ops: ", 1)[1]
    assert sorted(eval(ops)) == sm.ops()  # a Python set literal, in hash order
    in_order = "{" + ", ".join(repr(o) for o in sm.ops()) + "}"
    # The CLI's layout over this API; it prints the ops sorted.
    assert "\n".join(show_all_lines(sm)).strip() == text.replace(ops, in_order).strip()


def test_show_all_prints_keyword_arguments_by_name():
    """saved_model_cli iterates the kwargs dict: its keys are what it prints (checked with TF 2.21)."""
    f32 = tfformats.as_dtype("float32")
    fn = sm_module.ConcreteFunction("__inference_f_1", [sm_module.TensorSpec("x", [2], f32), False],
                                    {"scale": sm_module.TensorSpec("scale", [], f32)}, None, [])
    bounded = sm_module.BoundedTensorSpec("b", [None], f32)
    shape = sm_module.TensorShape([None, 3])
    lines = _function_lines({"f": [fn, fn._replace(args=[bounded, shape], kwargs={})]})
    assert lines[2:] == [
        "  Function Name: 'f'", "    Option #1", "      Callable with:",
        "        Argument #1", "          x: TensorSpec(shape=(2,), dtype=tf.float32, name='x')",
        "        Argument #2", "          DType: bool", "          Value: False",
        "        Named Argument #1", "          scale",
        "    Option #2", "      Callable with:",
        "        Argument #1", "          b: BoundedTensorSpec(shape=(None,), dtype=tf.float32, name='b')",
        "        Argument #2", "          DType: TensorShape", "          Value: [None, 3, \b\b]"]


def test_variables_by_tf_name_path_and_key(store):
    sm = load_saved_model(store.path(FIXTURES / "tf_keras_savedmodel"))
    by_name = sm.variables["dense/kernel"]
    assert by_name.shape == (4, 3)
    np.testing.assert_array_equal(sm.variables["layer_with_weights-0/kernel"], by_name)
    np.testing.assert_array_equal(
        sm.variables["layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"], by_name)
    assert "dense_1/bias" in sm.variables and "nope" not in sm.variables
    assert list(sm.variables) == sorted(sm.variables)
    assert "layer_with_weights-1/bias" in list(sm.variables)
    assert sm.variables.shape("dense_1/kernel") == [3, 2]
    assert sm.variables.dtype("iteration").name == "int64"
    assert sm.variables.names()["dense/kernel"] == (
        "layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE",)
    with pytest.raises(TensorNotFoundError, match="no tensor, object path or variable name 'nope'"):
        sm.variables["nope"]


def test_module_variables_match_checkpoint_values():
    sm = load_saved_model(FIXTURES / "saved_model_module")
    ckpt = json.loads((FIXTURES / "saved_model_module" / "expected.json").read_text())
    w = ckpt["variables/variables"]["w/.ATTRIBUTES/VARIABLE_VALUE"]
    assert sm.variables["w"].tobytes().hex() == w["hex"]


def test_keras3_variables_tracked_twice():
    """Keras 3 exports list each variable under two object paths; a TF name covers both."""
    sm = load_saved_model(FIXTURES / "keras3_export")
    keys = sm.variables.keys_for("hidden/kernel")
    assert len(keys) == 2
    np.testing.assert_array_equal(sm.variables.reader[keys[0]], sm.variables.reader[keys[1]])
    assert sm.variables["hidden/kernel"].shape == (4, 3)


@pytest.mark.parametrize("name", ["tf1_builder", "tf1_builder_pbtxt"])
def test_tf1_variables(name):
    sm = load_saved_model(FIXTURES / name)
    infos = {v.name: v for v in sm.variable_infos()}
    assert set(infos) == {"w", "b"}
    assert infos["w"].shape == [3, 2] and infos["w"].trainable and infos["w"].path is None
    assert sm.variables["w"].tolist() == [[1, 2], [3, 4], [5, 6]]
    assert sm.variables["b:0"].tolist() == [0.5, -0.5]
    assert sorted(sm.variables) == ["b", "w"]
    assert sm.object_graph is None and sm.functions() == {}
    assert sm.meta_graph().saver_def.version == 2
    assert "variables" in sm.meta_graph().collections


def test_object_graph_tree():
    sm = load_saved_model(FIXTURES / "saved_model_module")
    root = sm.object_graph
    assert root.kind == "user_object" and root.path == ""
    assert set(root.children) == {"w", "b", "table", "lookup", "serve", "signatures"}
    w = root["w"]
    assert w.kind == "variable"
    assert (w.variable.name, w.variable.shape, w.variable.trainable) == ("w", [3, 2], True)
    assert w.variable.dtype.name == "float32"
    assert root["serve"].kind == "function"
    assert root["serve"].concrete_functions[0].startswith("__inference_serve_")
    assert root["signatures"].identifier == "signature_map"
    kinds = {node.kind for _, node in root.walk()}
    assert {"asset", "resource", "bare_concrete_function", "variable"} <= kinds
    asset = next(n for _, n in root.walk() if n.kind == "asset")
    assert asset.proto.asset.asset_file_def_index == 0


def test_concrete_functions():
    sm = load_saved_model(FIXTURES / "saved_model_module")
    functions = sm.functions()
    assert list(functions) == ["lookup", "serve"]
    serve = functions["serve"][0]
    assert serve.args == [sm_module.TensorSpec("x", [None, 3], tfformats.as_dtype("float32"))]
    assert repr(serve.args[0]) == "TensorSpec(shape=(None, 3), dtype=tf.float32, name='x')"
    assert serve.kwargs == {}
    assert serve.outputs["y"].shape == [None, 2]
    assert serve.name in sm.concrete_functions
    assert set(serve.bound_inputs) == {sm.object_graph["w"].node_id, sm.object_graph["b"].node_id}


def test_assets():
    sm = load_saved_model(FIXTURES / "saved_model_module")
    (asset,) = sm.assets
    assert asset.filename == "vocab.txt" and asset.exists
    assert asset.path == os.path.join(str(FIXTURES / "saved_model_module"), "assets", "vocab.txt")
    assert sm.assets_extra == []


def test_assets_extra(tmp_path):
    d = shutil.copytree(FIXTURES / "saved_model_module", tmp_path / "m")
    (d / "assets.extra" / "sub").mkdir(parents=True)
    (d / "assets.extra" / "sub" / "warmup.tfrecord").write_bytes(b"x")
    sm = load_saved_model(d)
    assert sm.assets_extra == [os.path.join("sub", "warmup.tfrecord")]
    out = sm.save(tmp_path / "out")
    assert out.assets_extra == sm.assets_extra


def test_keras_metadata_current_layout():
    meta = load_saved_model(FIXTURES / "tf_keras_savedmodel").keras_metadata
    nodes = {n.node_path: n for n in meta.nodes}
    assert nodes["root"].identifier == "_tf_keras_sequential"
    assert nodes["root.layer_with_weights-0"].identifier == "_tf_keras_layer"
    assert (nodes["root"].version.producer, nodes["root"].version.min_consumer) == (2, 1)
    assert json.loads(nodes["root"].metadata)["class_name"] == "Sequential"
    assert load_saved_model(FIXTURES / "keras3_export").keras_metadata is None


def _old_layout_node(node_id, path, producer):
    """A keras SavedObject as the older proto wrote it: VersionDef in field 1."""
    def ld(field, payload):
        return bytes([field << 3 | 2, len(payload)]) + payload
    version = bytes([0x08, producer, 0x10, 1])  # producer, min_consumer=1
    return ld(1, version) + bytes([0x10, node_id]) + ld(3, path.encode()) + ld(4, b"_tf_keras_layer")


def test_keras_metadata_old_layout():
    data = b"".join(bytes([0x0A, len(n)]) + n for n in
                    (_old_layout_node(0, "root", 1), _old_layout_node(1, "root.layer-0", 1)))
    meta = parse_keras_metadata(data)
    assert [n.node_path for n in meta.nodes] == ["root", "root.layer-0"]
    assert [n.node_id for n in meta.nodes] == [0, 1]
    assert all(n.version.producer == 1 and n.version.min_consumer == 1 for n in meta.nodes)
    with pytest.raises(FormatError, match="keras_metadata.pb"):
        parse_keras_metadata(b"\x0a\x05\x0a\x09")


def test_loading_is_lazy(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("variables opened too early")

    monkeypatch.setattr(sm_module.model, "CheckpointReader", refuse)
    sm = load_saved_model(FIXTURES / "tf_keras_savedmodel")
    sm.signatures, sm.ops(), sm.functions(), sm.object_graph, sm.variable_infos()
    with pytest.raises(AssertionError):
        sm.variables["dense/kernel"]


# --- bad input ------------------------------------------------------------------------

def test_not_a_saved_model(tmp_path):
    with pytest.raises(CheckpointNotFoundError) as info:
        load_saved_model(tmp_path)
    assert str(tmp_path) in str(info.value) and "saved_model.pb" in str(info.value)
    assert "saved_model.pbtxt" in str(info.value)
    with pytest.raises(CheckpointNotFoundError):
        load_saved_model(tmp_path / "missing")


def test_path_of_the_pb_file():
    sm = load_saved_model(FIXTURES / "tf1_builder" / "saved_model.pb")
    assert sm.path == str(FIXTURES / "tf1_builder")


def test_an_empty_chunked_saved_model_is_a_format_error(tmp_path):
    (tmp_path / "saved_model.cpb").write_bytes(b"")   # real ones: tests/test_chunked.py
    with pytest.raises(FormatError, match="saved_model.cpb: not a Riegeli/records file"):
        load_saved_model(tmp_path)


@pytest.mark.parametrize("cut", [1, 100, 1000, -1])
def test_truncated(tmp_path, cut):
    data = (FIXTURES / "saved_model_module" / "saved_model.pb").read_bytes()
    (tmp_path / "saved_model.pb").write_bytes(data[:cut])
    with pytest.raises(FormatError, match="saved_model.pb"):
        load_saved_model(tmp_path)


def test_garbage_text(tmp_path):
    (tmp_path / "saved_model.pbtxt").write_bytes(b"meta_graphs { \xff")
    with pytest.raises(FormatError, match="saved_model.pbtxt"):
        load_saved_model(tmp_path)


def _nested_structure(depth):
    """A SavedModel whose function signature nests `depth` list values."""
    def ld(field, payload):
        return _key(field) + _varint(len(payload)) + payload
    value = b""
    for _ in range(depth):  # StructuredValue.list_value(51) -> ListValue.values(1)
        value = ld(51, ld(1, value))
    function = ld(3, value)                                  # canonicalized_input_signature
    entry = ld(1, b"__inference_f_1") + ld(2, function)      # map entry
    object_graph = ld(2, entry)                              # concrete_functions
    meta = ld(7, object_graph)                               # object_graph_def
    return ld(2, meta)                                       # meta_graphs


def _key(field):
    return _varint(field << 3 | 2)


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_nested_too_deep(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(_nested_structure(400))
    with pytest.raises(FormatError, match="saved_model.pb"):
        load_saved_model(tmp_path)
    (tmp_path / "saved_model.pb").write_bytes(_nested_structure(20))
    sm = load_saved_model(tmp_path)
    cf = sm.concrete_functions["__inference_f_1"]
    want = None
    for _ in range(20):  # the outermost list becomes the argument list
        want = [want]
    assert cf.args == want


def test_validate_missing_tensor(tmp_path):
    d = shutil.copytree(FIXTURES / "tf1_builder", tmp_path / "m")
    sm = load_saved_model(d)
    assert sm.validate() == []
    sm.proto.meta_graphs[0].signature_def["serving_default"].outputs["y"].name = "gone:0"
    sm.proto.meta_graphs[0].signature_def["serving_default"].inputs["x"].name = "x:0"
    sm.meta_graphs[0]._signatures = None
    findings = sm.validate()
    assert len(findings) == 1 and "'gone:0'" in findings[0] and "serving_default" in findings[0]


def test_findings_dangling_object_graph_references(tmp_path):
    d = shutil.copytree(FIXTURES / "saved_model_module", tmp_path / "m")
    os.remove(d / "fingerprint.pb")
    sm = load_saved_model(d)
    graph = sm.proto.meta_graphs[0].object_graph_def
    graph.nodes[0].children.add(node_id=999, local_name="ghost")
    graph.nodes[0].dependencies.add(node_id=998, local_name="gone")
    next(iter(graph.concrete_functions.values())).bound_inputs.append(997)
    (d / "saved_model.pb").write_bytes(sm.serialize())
    findings = load_saved_model(d).findings()
    assert {f.check for f in findings} == {"object-graph"}
    text = " | ".join(f.message for f in findings)
    assert "'ghost' points to node 999" in text and "'gone' points to node 998" in text
    assert "captures node 997" in text
    assert all(m.startswith(f"{d}: meta graph ['serve']: ") for m in load_saved_model(d).validate())


def test_validate_missing_asset_and_variables(tmp_path):
    d = shutil.copytree(FIXTURES / "saved_model_module", tmp_path / "m")
    os.remove(d / "assets" / "vocab.txt")
    findings = load_saved_model(d).validate()
    assert any("vocab.txt" in f for f in findings)
    shutil.rmtree(d / "variables")
    assert any("no variables" in f for f in load_saved_model(d).validate())


def test_validate_fingerprint_mismatch(tmp_path):
    d = shutil.copytree(FIXTURES / "saved_model_module", tmp_path / "m")
    sm = load_saved_model(d)
    sm.remove_signature("lookup")
    (d / "saved_model.pb").write_bytes(sm.serialize())  # edited behind fingerprint.pb's back
    findings = load_saved_model(d).validate()
    assert any("signature_def_hash" in f for f in findings)


# --- editing and saving ----------------------------------------------------------------

def test_save_without_edits_is_identical(store):
    src = FIXTURES / "saved_model_module"
    out = load_saved_model(store.path(src)).save(store.join("out"))
    for name in ("saved_model.pb", "variables/variables.index",
                 "variables/variables.data-00000-of-00001", "assets/vocab.txt"):
        assert fileio.read_file(store.join("out", *name.split("/"))) == (src / name).read_bytes()
    assert out.validate() == []
    assert [n for n in store.listdir(store.tmp) if n != "out"] == []  # no temp dirs left


def test_save_with_edits_keeps_every_key(tmp_path):
    src = load_saved_model(FIXTURES / "tf_keras_savedmodel")
    new = np.full((4, 3), 0.5, np.float32)
    src.variables["dense/kernel"] = new
    out = src.save(tmp_path / "out")
    old_reader, new_reader = src.variables.reader, out.variables.reader
    assert list(new_reader) == list(old_reader)
    for key in old_reader:
        if key == "layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE":
            np.testing.assert_array_equal(new_reader[key], new)
        elif old_reader.dtype(key).is_string:
            assert new_reader[key].tolist() == old_reader[key].tolist()
        else:
            assert new_reader[key].tobytes() == old_reader[key].tobytes()
            assert new_reader.dtype(key) == old_reader.dtype(key)
    assert (tmp_path / "out" / "keras_metadata.pb").exists()
    assert out.validate() == []
    # The source files are untouched.
    untouched = load_saved_model(FIXTURES / "tf_keras_savedmodel").variables["dense/kernel"]
    assert not np.array_equal(untouched, new)


def test_set_variable_errors():
    sm = load_saved_model(FIXTURES / "saved_model_module")
    with pytest.raises(FormatError, match="shape"):
        sm.variables["w"] = np.zeros((2, 3), np.float32)
    with pytest.raises(FormatError, match="float64"):
        sm.variables["w"] = np.zeros((3, 2), np.float64)
    with pytest.raises(KeyError):
        sm.variables["nope"] = 1.0
    sm.variables["b"] = [1, 2]  # plain values are converted
    assert sm.variables["b"].dtype == np.float32 and sm.variables["b"].tolist() == [1, 2]


def test_save_refuses_existing_and_overwrites(tmp_path):
    sm = load_saved_model(FIXTURES / "saved_model_module")
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        sm.save(tmp_path / "out")
    sm.variables["b"] = [5, 6]
    out = sm.save(tmp_path / "out", overwrite=True)
    assert out.variables["b"].tolist() == [5, 6]
    # Overwrite a model with an edit of itself.
    out.variables["b"] = [7, 8]
    again = out.save(tmp_path / "out", overwrite=True)
    assert again.variables["b"].tolist() == [7, 8]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    sm = load_saved_model(FIXTURES / "saved_model_module")
    sm.variables["b"] = [5, 6]

    def boom(self):
        raise OSError("disk full")

    monkeypatch.setattr(tfformats.saved_model.SavedModel, "serialize", boom)
    with pytest.raises(OSError, match="disk full"):
        sm.save(tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_rename_and_remove_signature():
    sm = load_saved_model(FIXTURES / "saved_model_module")
    sm.rename_signature("lookup", "find")
    assert list(sm.signatures) == ["__saved_model_init_op", "find", "serving_default"]
    assert set(sm.object_graph["signatures"].children) == {"find", "serving_default"}
    with pytest.raises(ValueError, match="already exists"):
        sm.rename_signature("find", "serving_default")
    with pytest.raises(KeyError):
        sm.rename_signature("nope", "x")
    sm.remove_signature("find")
    assert set(sm.object_graph["signatures"].children) == {"serving_default"}
    sm.set_tags(["serve", "tpu"])
    assert sm.tag_sets == [["serve", "tpu"]]
    assert sm.meta_graph(["tpu", "serve"]) is sm.meta_graphs[0]
    with pytest.raises(KeyError):
        sm.meta_graph("serve")


def test_pbtxt_saved_as_pbtxt(tmp_path):
    sm = load_saved_model(FIXTURES / "tf1_builder_pbtxt")
    sm.variables["w"] = np.ones((3, 2), np.float32)
    out = sm.save(tmp_path / "out")
    assert out.format == "pbtxt" and not (tmp_path / "out" / "fingerprint.pb").exists()
    assert out.variables["w"].tolist() == [[1, 1]] * 3


PARTITIONED = "tf1_builder_partitioned"


def partitioned_manifest():
    """What the generator recorded: the partitions and what TF's loader restored."""
    return json.loads((FIXTURES / "manifest.json").read_text())[PARTITIONED]


def partitioned_edits():
    """Values for `part` [7, 4] and `b` [4], exact in float32 arithmetic."""
    return {"part": (np.arange(28, dtype=np.float32).reshape(7, 4) % 5 - 2) / 4,
            "b": np.array([-3, 0.5, 1, 8], np.float32)}


def test_tf1_partitioned_variable_is_read_whole():
    sm = load_saved_model(FIXTURES / PARTITIONED)
    check = partitioned_manifest()["load_check"]
    assert sorted(sm.variables) == ["b", "part"]
    assert sm.variables["part"].tolist() == check["part"]
    assert sm.variables["b"].tolist() == check["b"]
    entry = sm.variables.reader.bundle.entry("part")
    assert entry.slices == (((0, 3), (0, 4)), ((3, 2), (0, 4)), ((5, 2), (0, 4)))
    # each partition's VariableDef points at the full tensor it is a slice of
    infos = sm.meta_graph().variable_infos()
    assert {i.name: i.key for i in infos} == {
        "part/part_0": "part", "part/part_1": "part", "part/part_2": "part", "b": "b"}
    assert sm.validate() == []


def test_partitioned_edit_checks():
    """An edit names the whole tensor, as the reader lists it, and must match it."""
    sm = load_saved_model(FIXTURES / PARTITIONED)
    with pytest.raises(FormatError, match=r"shape \[7, 4\]"):
        sm.variables["part"] = np.zeros((3, 4), np.float32)
    with pytest.raises(FormatError, match="float64"):
        sm.variables["part"] = np.zeros((7, 4))
    with pytest.raises(KeyError):  # a partition is not a tensor of the bundle
        sm.variables["part/part_0"] = np.zeros((3, 4), np.float32)
    sm.variables["part:0"] = partitioned_edits()["part"].tolist()
    assert sm.variables["part"].dtype == np.float32


def _stored_order(bundle):
    """Names of the stored pieces (plain tensors, parts by extents) in data-file order."""
    pieces = []
    for name, entry in bundle.entries().items():
        if entry.slices:
            pieces += [(p.shard_id, p.offset, (name, ext))
                       for ext, (_, p) in zip(entry.slices, bundle.parts(entry))]
        else:
            pieces.append((entry.shard_id, entry.offset, (name, None)))
    return [piece for _, _, piece in sorted(pieces)]


@pytest.mark.parametrize("edit", ["part", "b"])
def test_edit_keeps_partitioning(tmp_path, edit):
    src = load_saved_model(FIXTURES / PARTITIONED)
    check = partitioned_manifest()["load_check"]
    want = {name: np.array(check[name], np.float32) for name in ("part", "b")}
    want[edit] = partitioned_edits()[edit]
    src.variables[edit] = want[edit]
    out = src.save(tmp_path / "out")
    old, new = src.variables.reader.bundle, out.variables.reader.bundle
    old_entries, new_entries = old.entries(), new.entries()
    assert list(new_entries) == list(old_entries)
    for name, entry in old_entries.items():
        assert new_entries[name].slices == entry.slices
        assert (new_entries[name].dtype, new_entries[name].shape) == (entry.dtype, entry.shape)
        np.testing.assert_array_equal(out.variables[name], want[name])
    assert _stored_order(new) == _stored_order(old)
    # Each part holds its own slice of the value.
    entry = new_entries["part"]
    for bounds, part in new.parts(entry):
        np.testing.assert_array_equal(new.read_entry(part),
                                      want["part"][tuple(slice(a, b) for a, b in bounds)])


# --- TensorFlow loads what we write --------------------------------------------------

@requires_tf
def test_tf_runs_edited_module(tmp_path):
    sm = load_saved_model(FIXTURES / "saved_model_module")
    w = np.array([[2, 0], [0, 3], [1, 1]], np.float32)
    b = np.array([10, -10], np.float32)
    sm.variables["w"] = w
    sm.variables["b/.ATTRIBUTES/VARIABLE_VALUE"] = b
    sm.save(tmp_path / "out")
    loaded = tf.saved_model.load(str(tmp_path / "out"))
    x = np.array([[1, 2, 3], [-1, 0, 4]], np.float32)
    y = loaded.signatures["serving_default"](x=tf.constant(x))["y"].numpy()
    np.testing.assert_allclose(y, x @ w + b)
    ids = loaded.signatures["lookup"](words=tf.constant(["cherry", "apple", "zzz"]))["ids"]
    assert ids.numpy().tolist() == [2, 0, -1]
    assert fingerprint.check_fingerprint(tmp_path / "out") == []


@requires_tf
def test_tf_sees_renamed_and_removed_signatures(tmp_path):
    sm = load_saved_model(FIXTURES / "saved_model_module")
    sm.rename_signature("serving_default", "predict")
    sm.save(tmp_path / "renamed")
    loaded = tf.saved_model.load(str(tmp_path / "renamed"))
    assert sorted(loaded.signatures) == ["lookup", "predict"]
    y = loaded.signatures["predict"](x=tf.constant([[1.0, 2.0, 3.0]]))["y"]
    want = json.loads((FIXTURES / "manifest.json").read_text())["saved_model_module"]["load_check"]
    np.testing.assert_allclose(y.numpy(), want["y"], rtol=1e-6)

    sm = load_saved_model(FIXTURES / "saved_model_module")
    sm.remove_signature("lookup")
    sm.set_tags(["serve", "edited"])
    sm.save(tmp_path / "removed")
    loaded = tf.saved_model.load(str(tmp_path / "removed"), tags=["serve", "edited"])
    assert list(loaded.signatures) == ["serving_default"]


@requires_tf
@pytest.mark.parametrize("name, tf_name, model_input", [
    ("keras3_export", "hidden/kernel", "features"),
    ("tf_keras_savedmodel", "dense/kernel", "input_1"),
])
def test_tf_runs_edited_keras_models(tmp_path, name, tf_name, model_input):
    # Dense(3, relu) then Dense(2): every weight gets a new value of its own,
    # and TensorFlow's answer must be the one numpy computes from them, so an
    # edit that does not reach the saved model (any one of them) shows.
    rng = np.random.default_rng(11)
    new = {(4, 3): rng.uniform(0.1, 1, (4, 3)), (3,): rng.uniform(-0.2, 0.2, 3),
           (3, 2): rng.uniform(-1, 1, (3, 2)), (2,): rng.uniform(-1, 1, 2)}
    new = {shape: value.astype(np.float32) for shape, value in new.items()}
    sm = load_saved_model(FIXTURES / name)
    edited = set()
    for var in sm.variable_infos():
        if var.dtype.name == "float32" and var.trainable:
            sm.variables[var.path] = new[tuple(var.shape)]
            edited.add(tuple(var.shape))
    assert edited == set(new)
    assert sm.variables[tf_name].tolist() == new[(4, 3)].tolist()
    sm.save(tmp_path / "out")

    def run(path):
        loaded = tf.saved_model.load(str(path))
        (y,) = loaded.signatures["serving_default"](**{model_input: x}).values()
        return y.numpy()
    x = np.array([[1.0, -0.5, 2.0, 0.25]], np.float32)
    hidden = np.maximum(x @ new[(4, 3)] + new[(3,)], 0)
    assert (hidden > 0).all()   # every unit passes: each weight counts
    want = hidden @ new[(3, 2)] + new[(2,)]
    np.testing.assert_allclose(run(tmp_path / "out"), want, rtol=1e-5, atol=1e-6)
    assert np.abs(run(FIXTURES / name) - want).max() > 1e-3   # not what it answered before


@requires_tf
@pytest.mark.parametrize("name", ["tf1_builder", "tf1_builder_pbtxt"])
def test_tf1_loader_runs_edited_model(tmp_path, name):
    sm = load_saved_model(FIXTURES / name)
    sm.variables["w"] = np.eye(3, 2, dtype=np.float32)
    sm.variables["b"] = np.array([1, 2], np.float32)
    sm.save(tmp_path / "out")
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        tf.compat.v1.saved_model.loader.load(session, ["serve"], str(tmp_path / "out"))
        y = session.run("y:0", {"x:0": [[3.0, 4.0, 5.0]]})
    assert y.tolist() == [[4.0, 6.0]]


@requires_tf
@pytest.mark.parametrize("edit", ["part", "b"])
def test_tf1_loader_runs_edited_partitioned_model(tmp_path, edit):
    manifest = partitioned_manifest()
    check = manifest["load_check"]
    want = {name: np.array(check[name], np.float32) for name in ("part", "b")}
    want[edit] = partitioned_edits()[edit]
    sm = load_saved_model(FIXTURES / PARTITIONED)
    sm.variables[edit] = want[edit]
    sm.save(tmp_path / "out")
    x = np.array(check["x"], np.float32)
    v1 = tf.compat.v1
    with v1.Session(graph=tf.Graph()) as session:
        v1.saved_model.loader.load(session, ["serve"], str(tmp_path / "out"))
        restored = {v.name: session.run(v) for v in v1.global_variables()}
        y = session.run("y:0", {"x:0": x})
    parts = [restored.pop(p["name"]) for p in manifest["part_partitions"]]
    assert list(restored) == ["b:0"]
    assert [list(p.shape) for p in parts] == [p["shape"] for p in manifest["part_partitions"]]
    np.testing.assert_array_equal(np.concatenate(parts), want["part"])
    np.testing.assert_array_equal(restored["b:0"], want["b"])
    np.testing.assert_allclose(y, x @ want["part"] + want["b"], rtol=1e-6)
    assert not np.allclose(y, check["y"])  # the edit shows in the signature's output
    whole = tf.train.load_checkpoint(str(tmp_path / "out" / "variables" / "variables"))
    np.testing.assert_array_equal(whole.get_tensor("part"), want["part"])


def test_tf1_local_variables_have_no_checkpoint_key():
    # TF1 savers store global variables only: the metric accumulators of an eval graph are
    # local variables, listed without a key (TensorFlow loads the model; see manifest.json).
    manifest = json.loads((FIXTURES / "manifest.json").read_text())["tf1_eval_model"]
    sm = load_saved_model(FIXTURES / "tf1_eval_model")
    infos = {v.name: v for v in sm.variable_infos()}
    assert sorted(n for n, v in infos.items() if v.key is None) == manifest["loaded_local_variables"]
    assert infos["w"].key == "w" and sm.findings() == []


def test_tf_transform_style_model_assets(tmp_path):
    # TF1's builder keeps AssetFileDefs in the "saved_model_assets" collection (twice, here).
    sm = load_saved_model(FIXTURES / "tft_assets")
    (asset,) = sm.assets
    assert (asset.filename, asset.tensor_name, asset.exists) == ("vocab.txt", "vocab_filename:0", True)
    assert sm.variable_infos() == [] and sm.findings() == []
    model = shutil.copytree(FIXTURES / "tft_assets", tmp_path / "m")
    (model / "assets" / "vocab.txt").unlink()
    assert [f.check for f in load_saved_model(model).findings()] == ["assets"]
