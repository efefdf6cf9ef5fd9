"""tfformats.train against tf.train, live, on every checkpoint fixture.

Each function is called the same way on both modules and must give the same
result (type included: numpy scalars, bytes for scalar strings, writable
arrays), or raise where TensorFlow raises, with a tfformats exception that
is the matching built-in (tfformats/train.py lists them).
"""

import os
import shutil
import threading
import time

import numpy as np
import pytest

import tfformats
from tfformats import train

from conftest import FIXTURES, requires_tf

pytestmark = requires_tf

# Every checkpoint under fixtures/: V2 prefixes (SavedModel variables too),
# TF1 V1 files, and every directory with a `checkpoint` state file.
PREFIXES = sorted({str(p)[:-len(".index")] for p in FIXTURES.glob("**/*.index")}
                  | {str(FIXTURES / "tf1_v1" / "model.ckpt-7"),
                     str(FIXTURES / "tf1_v1" / "sharded" / "model.ckpt-?????-of-00002")})
STATE_DIRS = sorted({str(p.parent) for p in FIXTURES.glob("**/checkpoint")})
ALL_DIRS = sorted({str(p) for p in FIXTURES.glob("**/") if p.is_dir()})
PATHS = PREFIXES + STATE_DIRS


def ids(paths):
    return [os.path.relpath(p, FIXTURES) for p in paths]


@pytest.fixture(scope="module")
def tf():
    import tensorflow
    return tensorflow


def outcome(call):
    """("ok", value) or ("raised", exception)."""
    try:
        return "ok", call()
    except Exception as exc:   # noqa: BLE001 - the point is to compare what was raised
        return "raised", exc


def assert_same_value(ours, theirs, where):
    assert type(ours) is type(theirs), where   # ndarray / np.float32 / bytes ...
    if isinstance(theirs, np.ndarray):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, where
        assert ours.flags.writeable == theirs.flags.writeable, where
        if theirs.dtype == object:
            assert ours.tolist() == theirs.tolist(), where
        else:
            assert ours.tobytes() == theirs.tobytes(), where
    elif isinstance(theirs, np.generic):
        assert ours.dtype == theirs.dtype and ours.tobytes() == theirs.tobytes(), where
    else:
        assert ours == theirs, where


# Where TF raises one of its own classes, which built-in ours must be.
_BUILTIN_FOR = {"NotFoundError": (FileNotFoundError, KeyError), "ValueError": (ValueError,),
                "TypeError": (TypeError,), "InternalError": (NotImplementedError,)}


def assert_same_outcome(ours, theirs, where):
    if theirs[0] == "raised":
        assert ours[0] == "raised", f"{where}: TF raised {theirs[1]!r}, tfformats returned"
        assert isinstance(ours[1], tfformats.TFFormatsError) or isinstance(ours[1], TypeError)
        assert isinstance(ours[1], _BUILTIN_FOR[type(theirs[1]).__name__]), (where, ours[1])
    else:
        assert ours[0] == "ok", f"{where}: TF returned, tfformats raised {ours[1]!r}"


@pytest.mark.parametrize("path", PATHS, ids=ids(PATHS))
def test_list_variables_and_load_checkpoint(tf, path):
    theirs = outcome(lambda: tf.train.list_variables(path))
    ours = outcome(lambda: train.list_variables(path))
    assert_same_outcome(ours, theirs, path)
    if theirs[0] == "ok":
        assert ours[1] == theirs[1]
        assert all(isinstance(shape, list) for _, shape in ours[1])
        reader, tf_reader = train.load_checkpoint(path), tf.train.load_checkpoint(path)
        assert isinstance(reader, tfformats.CheckpointReader)
        assert reader.get_variable_to_shape_map() == tf_reader.get_variable_to_shape_map()
        assert ({k: v.name for k, v in reader.get_variable_to_dtype_map().items()}
                == {k: v.name for k, v in tf_reader.get_variable_to_dtype_map().items()})
        for name in tf_reader.get_variable_to_shape_map():
            assert reader.has_tensor(name) and not reader.has_tensor(name + ":0")
        reader.close()


@pytest.mark.parametrize("path", PREFIXES, ids=ids(PREFIXES))
def test_load_variable_every_name(tf, path):
    """Values, their types, `:0`, missing names; the reader's get_tensor too."""
    if outcome(lambda: tf.train.load_checkpoint(path))[0] == "raised":
        # TF reads no SavedModel-only path forms; every prefix here is one it reads
        pytest.fail(f"TensorFlow cannot open {path}")
    tf_reader = tf.train.load_checkpoint(path)
    reader = train.NewCheckpointReader(path)
    compared = 0
    for name in sorted(tf_reader.get_variable_to_shape_map()):
        theirs = outcome(lambda: tf.train.load_variable(path, name))
        ours = outcome(lambda: train.load_variable(path, name))
        if theirs[0] == "raised" and ("tf1_v1" in path or reader.entry(name).slices):
            # TF's V1 reader refuses float16, complex and partitioned tensors, and its
            # V2 reader partitioned strings; tfformats reads them (tests/test_v1.py and
            # tests/test_reader.py check them against TF's Restore op)
            assert ours[0] == "ok", ours
            compared += 1
            continue
        assert_same_outcome(ours, theirs, f"{path}: {name}")
        if theirs[0] == "raised":   # a DT_VARIANT: no array form in either
            continue
        assert_same_value(ours[1], theirs[1], f"{path}: {name}")
        assert_same_value(train.load_variable(path, name + ":0"), theirs[1], f"{name}:0")
        assert_same_value(reader.get_tensor(name), tf_reader.get_tensor(name), name)
        compared += 1
    assert compared
    for missing in ("no/such/variable", "no/such/variable:0"):
        assert_same_outcome(outcome(lambda: train.load_variable(path, missing)),
                            outcome(lambda: tf.train.load_variable(path, missing)), missing)
        assert_same_outcome(outcome(lambda: reader.get_tensor(missing)),
                            outcome(lambda: tf_reader.get_tensor(missing)), missing)
    assert_same_outcome(outcome(lambda: reader.get_tensor(5)),
                        outcome(lambda: tf_reader.get_tensor(5)), "a number as a name")
    reader.close()


def test_new_checkpoint_reader_is_tf1s(tf):
    prefix = str(FIXTURES / "keras_adam" / "ckpt-1")
    with train.NewCheckpointReader(prefix) as reader:
        theirs = tf.compat.v1.train.NewCheckpointReader(prefix)
        assert reader.get_variable_to_shape_map() == theirs.get_variable_to_shape_map()
    missing = str(FIXTURES / "keras_adam" / "ckpt-9")
    assert_same_outcome(outcome(lambda: train.NewCheckpointReader(missing)),
                        outcome(lambda: tf.compat.v1.train.NewCheckpointReader(missing)), missing)


@pytest.mark.parametrize("path", ["/nonexistent/ckpt", str(FIXTURES / "keras_adam" / "ckpt-9"),
                                  str(FIXTURES), str(FIXTURES / "frozen_graph")])
def test_missing_checkpoints_raise_what_tf_raises(tf, path):
    for name in ("load_checkpoint", "list_variables"):
        assert_same_outcome(outcome(lambda: getattr(train, name)(path)),
                            outcome(lambda: getattr(tf.train, name)(path)), f"{name}({path})")
    assert_same_outcome(outcome(lambda: train.load_variable(path, "x")),
                        outcome(lambda: tf.train.load_variable(path, "x")), path)


def test_directory_without_checkpoint_is_a_value_error_as_in_tf():
    with pytest.raises(ValueError):
        train.load_checkpoint(FIXTURES)
    with pytest.raises(tfformats.NoCheckpointError):
        train.load_checkpoint(FIXTURES)
    with pytest.raises(FileNotFoundError):
        train.load_checkpoint("/nonexistent/ckpt")
    with pytest.raises(tfformats.TensorNotFoundError):
        train.load_variable(FIXTURES / "keras_adam", "nope")


@pytest.mark.parametrize("directory", ALL_DIRS, ids=ids(ALL_DIRS))
def test_latest_checkpoint_and_state(tf, directory):
    assert train.latest_checkpoint(directory) == tf.train.latest_checkpoint(directory)
    ours, theirs = train.get_checkpoint_state(directory), tf.train.get_checkpoint_state(directory)
    assert (ours is None) == (theirs is None)
    if theirs is not None:
        assert str(ours) == str(theirs)   # text format: same fields, same values
        assert ours.model_checkpoint_path == theirs.model_checkpoint_path


@pytest.mark.parametrize("text", ["garbage {{{", 'model_checkpoint_path: ""\n',
                                  'model_checkpoint_path: "x"\nall_model_checkpoint_paths: "/abs/y"\n'])
def test_state_files_tf_ignores_or_refuses(tf, tmp_path, text):
    (tmp_path / "checkpoint").write_text(text)
    for name in ("get_checkpoint_state", "latest_checkpoint"):
        ours = outcome(lambda: getattr(train, name)(str(tmp_path)))
        theirs = outcome(lambda: getattr(tf.train, name)(str(tmp_path)))
        assert_same_outcome(ours, theirs, f"{name}: {text!r}")
        if theirs[0] == "ok":
            assert str(ours[1]) == str(theirs[1])


def test_checkpoints_iterator_sees_a_checkpoint_appear(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "POLL_SECONDS", 0.05)
    src = FIXTURES / "keras_adam"

    def write_later():
        time.sleep(0.3)
        for name in ("ckpt-1.index", "ckpt-1.data-00000-of-00001"):
            shutil.copy(src / name, tmp_path / name)
        (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')

    writer = threading.Thread(target=write_later)
    started = time.monotonic()
    writer.start()
    try:
        seen = list(train.checkpoints_iterator(str(tmp_path), timeout=1.5))
    finally:
        writer.join()
    assert seen == [str(tmp_path / "ckpt-1")]
    assert time.monotonic() - started >= 1.5   # then waited out the timeout for another


def test_checkpoints_iterator_timeout_fn(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "POLL_SECONDS", 0.01)
    calls = []

    def timeout_fn():
        calls.append(1)
        return len(calls) == 3   # keep waiting twice, then stop

    assert list(train.checkpoints_iterator(str(tmp_path), timeout=0.05, timeout_fn=timeout_fn)) == []
    assert len(calls) == 3


def test_train_serves_urls_from_storage_options_while_iterating(s3, s3_endpoint, monkeypatch):
    """checkpoints_iterator is a generator: the storage it is given must serve
    every step of the iteration (not only its creation), and never leak into
    the consumer between steps. No filesystem is registered here, and fsspec's
    default for s3:// is refused, so only the given options can reach the server."""
    from tfformats import fileio, remote

    def unbound(scheme):
        raise AssertionError(f"{scheme}:// served without the storage given")
    monkeypatch.setattr(remote, "for_scheme", unbound)
    monkeypatch.setattr(train, "POLL_SECONDS", 0.02)
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    directory = f"s3://scratch/train-{os.getpid()}-{time.monotonic_ns()}"
    manager = tfformats.CheckpointManager(directory, storage_options=options)
    manager.save({"x": np.arange(3)}, object_graph=False)
    found = train.checkpoints_iterator(directory, timeout=0.2, storage_options=options)
    assert next(found) == f"{directory}/ckpt-1"
    assert fileio.current_storage() == (None, None)   # nothing leaked into this frame
    manager.save({"x": np.arange(4)}, object_graph=False)
    assert next(found) == f"{directory}/ckpt-2"
    assert list(found) == []   # then the timeout passed without another
    with pytest.raises(AssertionError, match="without the storage"):
        next(train.checkpoints_iterator(directory, timeout=0))
    assert train.wait_for_new_checkpoint(directory, f"{directory}/ckpt-1", timeout=0,
                                         storage_options=options) == f"{directory}/ckpt-2"
    with train.NewCheckpointReader(f"{directory}/ckpt-2", storage_options=options) as reader:
        assert reader.get_tensor("x").tolist() == [0, 1, 2, 3]
    closing = train.checkpoints_iterator(directory, storage_options=options)
    assert next(closing) == f"{directory}/ckpt-2"
    closing.close()   # a consumer stopping early ends the generator inside the storage


def test_checkpoints_iterator_matches_tf_on_a_fixture(tf):
    directory = str(FIXTURES / "keras_adam")
    ours = list(train.checkpoints_iterator(directory, timeout=0))
    theirs = list(tf.train.checkpoints_iterator(directory, timeout=0))
    assert ours == theirs == [str(FIXTURES / "keras_adam" / "ckpt-2")]


# --- a ported script: BERT's TF-to-PyTorch conversion loop -------------------------

def _bert_like_checkpoint(tf, prefix):
    """A TF1 checkpoint named as BERT's are: layers, adam_m/adam_v slots, global_step."""
    graph = tf.Graph()
    with graph.as_default():
        v1 = tf.compat.v1
        rng = np.random.default_rng(0)
        for name, shape in [("bert/embeddings/word_embeddings", [11, 4]),
                            ("bert/encoder/layer_0/attention/self/query/kernel", [4, 4]),
                            ("bert/encoder/layer_0/attention/self/query/bias", [4]),
                            ("bert/pooler/dense/kernel", [4, 3]),
                            ("cls/predictions/output_bias", [11])]:
            init = rng.standard_normal(shape).astype(np.float32)
            v1.get_variable(name, initializer=init)
            v1.get_variable(name + "/adam_m", initializer=np.zeros_like(init))
            v1.get_variable(name + "/adam_v", initializer=np.ones_like(init))
        v1.train.create_global_step()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            v1.train.Saver().save(sess, prefix)


def _convert_bert(tf_train, path):
    """The loop of the usual convert_tf_checkpoint_to_pytorch scripts, with the
    module passed in as the only change: list, skip optimizer state, load,
    transpose kernels."""
    init_vars = tf_train.list_variables(path)
    names, arrays = [], []
    for name, shape in init_vars:
        array = tf_train.load_variable(path, name)
        names.append(name)
        arrays.append(array)
    weights = {}
    for name, array in zip(names, arrays):
        parts = name.split("/")
        if any(n in ["adam_v", "adam_m", "AdamWeightDecayOptimizer",
                     "AdamWeightDecayOptimizer_1", "global_step"] for n in parts):
            continue
        if parts[-1] == "kernel":
            array = np.transpose(array)
        array[...] = array   # scripts write into what they load (pointer.data = ...)
        weights[name] = array
    return weights


def test_bert_conversion_loop_gives_what_tensorflow_gives(tf, tmp_path):
    prefix = str(tmp_path / "bert_model.ckpt")
    _bert_like_checkpoint(tf, prefix)
    ours, theirs = _convert_bert(train, prefix), _convert_bert(tf.train, prefix)
    assert sorted(ours) == sorted(theirs) and len(ours) == 5
    for name in theirs:
        assert_same_value(ours[name], theirs[name], name)
    kernel = "bert/pooler/dense/kernel"
    assert ours[kernel].shape == (3, 4)


def test_top_level_load_checkpoint_is_tfs():
    """tfformats.load_checkpoint is tf.train.load_checkpoint; load_tensors gives the dict."""
    prefix = FIXTURES / "keras_adam" / "ckpt-2"
    reader = tfformats.load_checkpoint(prefix)
    assert isinstance(reader, tfformats.CheckpointReader)
    counter = reader.get_tensor("save_counter/.ATTRIBUTES/VARIABLE_VALUE")
    assert isinstance(counter, np.int64) and counter == 2
    assert tfformats.load_variable(prefix, "save_counter/.ATTRIBUTES/VARIABLE_VALUE:0") == 2
    assert isinstance(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"), bytes)
    kernel = reader.get_tensor("model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    assert kernel.flags.writeable
    reader.close()
    tensors = tfformats.load_tensors(prefix)
    assert isinstance(tensors, dict) and "_CHECKPOINTABLE_OBJECT_GRAPH" not in tensors
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in tfformats.load_tensors(prefix, include_object_graph=True)
    assert tfformats.list_variables is train.list_variables
    assert tfformats.latest_checkpoint is train.latest_checkpoint
