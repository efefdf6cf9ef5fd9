"""SavedModel fingerprints against what TensorFlow 2.21 computed and wrote."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tfformats import _pure
from tfformats import fingerprint as fpmod
from tfformats import protos, wire
from tfformats.errors import CheckpointNotFoundError, FormatError

try:
    import tensorflow  # noqa: F401
    HAVE_TF = True
except ImportError:
    HAVE_TF = False

try:
    from tfformats import _native
    native_built = True
except ImportError:
    _native = None
    native_built = False

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SAVED_MODELS = ["saved_model_module", "keras3_export", "tf_keras_savedmodel", "tf1_builder",
                "tf1_builder_pbtxt", "tf1_builder_partitioned", "saved_model_composite"]
FunctionDef = protos.message_class("tfformats.FunctionDef")
GraphDef = protos.GraphDef


def expected(name):
    return json.loads((FIXTURES / name / "expected_saved_model.json").read_text())


def hashes(fp):
    return {k: str(getattr(fp, k)) for k in fpmod.HASH_FIELDS}


def fields(data):
    """Top-level (field number, value) pairs of a serialized message: ints for
    varint fields, bytes for length-delimited ones."""
    return [(number, value) for number, _, value in wire.fields(data, "test")]


# --- golden fixtures ----------------------------------------------------------

@pytest.mark.parametrize("name", SAVED_MODELS)
def test_hashes_match_tensorflow(name):
    want = expected(name)["computed_fingerprint"]
    fp = fpmod.compute_fingerprint(FIXTURES / name)
    assert hashes(fp) == {k: want[k] for k in fpmod.HASH_FIELDS}
    assert fp.version.producer == want["version_producer"]
    assert fp.uuid.isdigit() and len(fp.uuid) >= 20


@pytest.mark.parametrize("name", [n for n in SAVED_MODELS if (FIXTURES / n / "fingerprint.pb").exists()])
def test_stored_fingerprint_checks_out(name):
    assert fpmod.check_fingerprint(FIXTURES / name) == []
    stored = fpmod.read_fingerprint(FIXTURES / name)
    assert fpmod.singleprint(stored) == expected(name)["singleprint"]
    assert hashes(stored) == {k: expected(name)["fingerprint_pb"][k] for k in fpmod.HASH_FIELDS}


def test_pbtxt_only_gets_what_tensorflow_gives():
    fp = fpmod.compute_fingerprint(FIXTURES / "tf1_builder_pbtxt")
    assert set(hashes(fp).values()) == {"0"}
    assert fp.version.producer == 5
    # The text model itself still parses and can be hashed on request.
    sm = fpmod.read_saved_model(FIXTURES / "tf1_builder_pbtxt")
    assert fpmod.fingerprint_saved_model(sm).signature_def_hash != 0


@pytest.fixture
def module_copy(tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(FIXTURES / "saved_model_module", dst)
    return dst


def test_flipped_checkpoint_byte_is_found(module_copy):
    index = module_copy / "variables" / "variables.index"
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0x01
    index.write_bytes(bytes(data))
    findings = fpmod.check_fingerprint(module_copy)
    assert len(findings) == 1 and "checkpoint_hash" in findings[0]
    assert str(fpmod.read_fingerprint(module_copy).checkpoint_hash) in findings[0]


def test_edited_signature_is_found(module_copy):
    path = module_copy / "saved_model.pb"
    sm = protos.SavedModel.FromString(path.read_bytes())
    sig = sm.meta_graphs[0].signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/classify"
    path.write_bytes(sm.SerializeToString(deterministic=True))
    findings = " ".join(fpmod.check_fingerprint(module_copy))
    assert "signature_def_hash" in findings and "saved_model_checksum" in findings
    assert "graph_def_program_hash" not in findings and "checkpoint_hash" not in findings


def test_missing_checkpoint_hashes_to_zero(module_copy):
    shutil.rmtree(module_copy / "variables")
    assert fpmod.compute_fingerprint(module_copy).checkpoint_hash == 0


def test_write_then_read(module_copy):
    (module_copy / "fingerprint.pb").unlink()
    assert "fingerprint.pb" in fpmod.check_fingerprint(module_copy)[0]
    written = fpmod.write_fingerprint(module_copy)
    assert fpmod.read_fingerprint(module_copy) == written
    assert fpmod.check_fingerprint(module_copy) == []
    assert sorted(os.listdir(module_copy)) == sorted(os.listdir(FIXTURES / "saved_model_module"))


# --- errors ---------------------------------------------------------------------

def test_missing_saved_model(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="saved_model.pb"):
        fpmod.compute_fingerprint(tmp_path)
    with pytest.raises(CheckpointNotFoundError):
        fpmod.compute_fingerprint(tmp_path / "nope")
    with pytest.raises(CheckpointNotFoundError, match="fingerprint.pb"):
        fpmod.read_fingerprint(tmp_path)


def test_corrupt_files(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\x0a\xff\xff\xff\x0f garbage")
    with pytest.raises(FormatError, match="saved_model.pb"):
        fpmod.compute_fingerprint(tmp_path)
    (tmp_path / "fingerprint.pb").write_bytes(b"\xff\xff\xff")
    with pytest.raises(FormatError, match="fingerprint.pb"):
        fpmod.read_fingerprint(tmp_path)


def test_files_and_directories_in_the_wrong_places(tmp_path, module_copy):
    a_file = tmp_path / "a_file"
    a_file.write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError, match="no SavedModel"):
        fpmod.compute_fingerprint(a_file)
    with pytest.raises(CheckpointNotFoundError, match="fingerprint.pb"):
        fpmod.read_fingerprint(a_file)
    (module_copy / "fingerprint.pb").unlink()
    (module_copy / "fingerprint.pb").mkdir()
    with pytest.raises(FormatError, match="is a directory"):
        fpmod.read_fingerprint(module_copy)
    findings = fpmod.check_fingerprint(module_copy)
    assert len(findings) == 1 and "fingerprint.pb: is a directory" in findings[0]
    (module_copy / "saved_model.pb").unlink()
    (module_copy / "saved_model.pb").mkdir()
    with pytest.raises(FormatError, match="saved_model.pb: is a directory"):
        fpmod.compute_fingerprint(module_copy)


def test_text_saved_model_errors(tmp_path):
    (tmp_path / "saved_model.pbtxt").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(FormatError, match="saved_model.pbtxt"):
        fpmod.read_saved_model(tmp_path)
    (tmp_path / "saved_model.pbtxt").write_text("meta_graphs { nonsense: 1 }")
    with pytest.raises(FormatError, match="saved_model.pbtxt"):
        fpmod.read_saved_model(tmp_path)


def test_written_fingerprint_is_readable_as_the_umask_allows(module_copy):
    umask = os.umask(0o022)
    try:
        (module_copy / "fingerprint.pb").unlink()
        fpmod.write_fingerprint(module_copy)
    finally:
        os.umask(umask)
    assert (module_copy / "fingerprint.pb").stat().st_mode & 0o777 == 0o644
    assert [n for n in os.listdir(module_copy) if ".tempstate" in n] == []


def test_garbage_fingerprint_is_a_finding(module_copy):
    (module_copy / "fingerprint.pb").write_bytes(b"\xff\xff\xff")
    findings = fpmod.check_fingerprint(module_copy)
    assert len(findings) == 1 and "fingerprint.pb" in findings[0]


def test_an_empty_chunked_saved_model_is_a_format_error(tmp_path):
    (tmp_path / "saved_model.cpb").write_bytes(b"")   # real ones: tests/test_chunked.py
    with pytest.raises(FormatError, match="saved_model.cpb: not a Riegeli/records file"):
        fpmod.compute_fingerprint(tmp_path)


def test_function_name_without_uid(module_copy):
    path = module_copy / "saved_model.pb"
    sm = protos.SavedModel.FromString(path.read_bytes())
    sm.meta_graphs[0].object_graph_def.concrete_functions["no_uid_here"].SetInParent()
    path.write_bytes(sm.SerializeToString())
    with pytest.raises(FormatError, match="no_uid_here"):
        fpmod.compute_fingerprint(module_copy)


# --- canonical serialization ------------------------------------------------------

def function_with_int_maps():
    f = FunctionDef()
    f.signature.name = "f"
    for key in (2, 0, 1):
        f.arg_attr[key].attr["_user_specified_name"].s = b"x%d" % key
        f.resource_arg_unique_id[key] = 10 + key
    f.attr["T"].type = 1
    f.attr["Tidx"].type = 3
    f.attr["_input_shapes"].list.SetInParent()
    return f


def test_int_map_keys_ascending():
    data = fpmod.canonical_serialize(function_with_int_maps())
    numbers = [n for n, _ in fields(data)]
    assert numbers == sorted(numbers)

    def int_keys(number):
        out = []
        for num, entry in fields(data):
            if num == number:
                key = [v for n, v in fields(entry) if n == 1]
                out.append(key[0])
        return out

    assert int_keys(7) == [0, 1, 2]
    assert int_keys(8) == [0, 1, 2]


def test_string_map_keys_bytewise():
    data = fpmod.canonical_serialize(function_with_int_maps())
    keys = [[v for n, v in fields(entry) if n == 1][0] for num, entry in fields(data) if num == 5]
    assert keys == [b"T", b"Tidx", b"_input_shapes"]


def test_same_bytes_as_pure_python_protobuf():
    # The pure-python protobuf backend sorts map keys as C++ does.
    f = function_with_int_maps()
    code = ("import sys; from tfformats import protos; "
            "m = protos.message_class('tfformats.FunctionDef').FromString(sys.stdin.buffer.read()); "
            "sys.stdout.buffer.write(m.SerializeToString(deterministic=True))")
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python",
               PYTHONPATH=os.pathsep.join([str(pathlib.Path(fpmod.__file__).parent.parent),
                                           os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], input=f.SerializeToString(), env=env,
                         capture_output=True, check=True).stdout
    assert fpmod.canonical_serialize(f) == out


def test_canonical_is_idempotent_and_parses_back():
    f = function_with_int_maps()
    data = fpmod.canonical_serialize(f)
    assert FunctionDef.FromString(data) == f
    assert fpmod.canonical_serialize(FunctionDef.FromString(data)) == data


@pytest.mark.skipif(not native_built or not hasattr(_native, "reorder_map_entries"),
                    reason="tfformats._native is not built")
def test_native_reorder_matches_pure():
    import random
    rng = random.Random(5)
    info = protos.message_class("tfformats.GraphDebugInfo")
    for _ in range(200):
        f = FunctionDef()
        g = info()
        for _ in range(rng.randrange(6)):
            f.resource_arg_unique_id[rng.getrandbits(32)] = 1
            f.arg_attr[rng.getrandbits(rng.choice([2, 32]))].attr[
                rng.choice(["T", "Tidx", "", "a", "ab", "\u00e9"])].s = b"v"
            g.frames_by_id[rng.getrandbits(64)].line = 1
            g.name_to_trace_id[rng.choice(["x", "xy", "y"])] = rng.getrandbits(64)
        for msg in (f, g):
            plan = fpmod._plan(msg.DESCRIPTOR)
            a = bytearray(msg.SerializeToString(deterministic=True))
            b = bytearray(a)
            _pure.reorder_map_entries(a, plan)
            _native.reorder_map_entries(b, plan)
            assert a == b


# --- regularization ----------------------------------------------------------------

def test_regularize_graph_def():
    g = GraphDef()
    call = g.node.add(name="call", op="StatefulPartitionedCall")
    call.attr["f"].func.name = "__inference_f_11"
    call.attr["config_proto"].s = b"\x0a\x07\x0a\x03CPU\x10\x01"
    other = g.node.add(name="call2", op="PartitionedCall")
    other.attr["f"].func.name = "no_uid"
    const = g.node.add(name="c", op="Const")
    const.attr["dtype"].type = 7  # DT_STRING
    const.attr["value"].tensor.string_val.append(b"secret")
    fconst = g.node.add(name="d", op="Const")
    fconst.attr["dtype"].type = 1
    fconst.attr["value"].tensor.float_val.append(1.0)
    g.library.function.add().signature.name = "__inference_f_11"
    g.versions.producer = 2474
    original = GraphDef.FromString(g.SerializeToString())

    r = fpmod.regularize_graph_def(g)
    assert g == original  # the argument is left alone
    assert r.node[0].attr["f"].func.name == "__inference_f_"
    assert r.node[0].attr["config_proto"].WhichOneof("value") == "s"
    assert r.node[0].attr["config_proto"].s == b""
    assert r.node[1].attr["f"].func.name == "no_uid"
    assert r.node[2].attr["value"].WhichOneof("value") is None
    assert r.node[3].attr["value"] == original.node[3].attr["value"]
    assert r.HasField("library") and r.HasField("versions")
    assert r.library.ByteSize() == 0 and r.versions.ByteSize() == 0
    data = fpmod.canonical_serialize(r)
    assert data.endswith(b"\x12\x00\x22\x00")


# --- live cross-check with TensorFlow ------------------------------------------------

@pytest.mark.skipif(not HAVE_TF, reason="TensorFlow is not installed (CI installs it)")
def test_fresh_saved_model_matches_tensorflow(tmp_path):
    import tensorflow as tf
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

    class Model(tf.Module):
        def __init__(self):
            self.w = tf.Variable([[1.0, 2.0], [3.0, 4.0]])
            self.b = tf.Variable([0.5, -0.5])
            self.table_keys = tf.Variable(["a", "b"])

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32),
                                      tf.TensorSpec([], tf.string)])
        def __call__(self, x, tag):
            y = tf.matmul(x, self.w) + self.b
            return {"y": tf.reduce_sum(y, axis=1), "tag": tf.strings.join([tag, "!"]),
                    "k": self.table_keys}

        @tf.function(input_signature=[tf.TensorSpec([3], tf.int32)])
        def count(self, i):
            return tf.reduce_sum(i) + tf.cast(tf.reduce_sum(self.b), tf.int32)

    m = Model()
    export = str(tmp_path / "export")
    tf.saved_model.save(m, export, signatures={"serving_default": m.__call__, "count": m.count})
    theirs = protos.FingerprintDef.FromString(fingerprinting.CreateFingerprintDef(export))
    ours = fpmod.compute_fingerprint(export)
    assert hashes(ours) == hashes(theirs)
    assert fpmod.check_fingerprint(export) == []
