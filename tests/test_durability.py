"""Crash consistency of bundle writes (tfformats/commit.py, docs/durability.md).

A crash is injected before every file-system step a rewrite takes (rename,
fsync, remove), in a forked child that dies with os._exit, as a real crash
would: no cleanup runs. The parent then checks what readers see at the
prefix: the old checkpoint or the new one, whole and value for value, for
tfformats and for TensorFlow. The order of those steps is asserted from the
recorded sequence of calls, not from their count.
"""

import glob
import os

import numpy as np
import pytest

import tfformats as tff
from tfformats import fileio
from tfformats.checkpoint import read_state
from tfformats.errors import CheckpointNotFoundError
from tfformats.writer import BundleWriter, CheckpointManager, save_checkpoint

from conftest import HAVE_TF

OLD = {"a": np.arange(6, dtype=np.float32), "b": np.array([b"old", b"values"], dtype=object),
       "c": np.full((3, 2), 7, dtype=np.int64)}
NEW = {"a": np.arange(6, dtype=np.float32) + 100, "b": np.array([b"new"], dtype=object),
       "c": np.full((3, 2), -1, dtype=np.int64), "d": np.ones(4, np.int8)}


class Recorder:
    """Records the file layer's renames, fsyncs and deletes (tfformats/fileio.py)
    as ("rename", src, dst), ("fsync", path), ("remove", path);
    `before(step, op)` runs before each."""

    def __init__(self, monkeypatch, before=None):
        self.ops = []
        self._before = before
        local = fileio.LocalFileSystem
        replace, remove, fsync, fsync_dir = local.replace, local.remove, local.fsync, local.fsync_dir
        monkeypatch.setattr(local, "replace", staticmethod(
            lambda src, dst: self._do(("rename", str(src), str(dst)), replace, src, dst)))
        monkeypatch.setattr(local, "remove", staticmethod(
            lambda path: self._do(("remove", str(path)), remove, path)))
        monkeypatch.setattr(local, "fsync", lambda fs, file: self._do(
            ("fsync", file.name), fsync, fs, file))
        monkeypatch.setattr(local, "fsync_dir", lambda fs, path: self._do(
            ("fsync", str(path)), fsync_dir, fs, path))

    def _do(self, op, real, *args):
        self.ops.append(op)
        if self._before is not None:
            self._before(len(self.ops) - 1, op)
        return real(*args)


def _write(prefix, tensors, num_shards, sync=None):
    save_checkpoint(prefix, tensors, object_graph=False, num_shards=num_shards, sync=sync)


def _same(values, expected):
    return sorted(values) == sorted(expected) and all(
        values[k].dtype == expected[k].dtype and values[k].shape == expected[k].shape
        and values[k].tolist() == expected[k].tolist() for k in expected)


def _what_tfformats_reads(prefix):
    try:
        values = tff.load_tensors(prefix)
    except CheckpointNotFoundError:
        return "nothing"
    return "old" if _same(values, OLD) else "new" if _same(values, NEW) else "a mix"


def _what_tensorflow_reads(prefix):
    import tensorflow as tf
    try:
        reader = tf.train.load_checkpoint(prefix)
        values = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}
    except (tf.errors.NotFoundError, ValueError):
        return "nothing"
    return "old" if _same(values, OLD) else "new" if _same(values, NEW) else "a mix"


def _rewrite_with_crash_before(prefix, step, new_shards):
    """Rewrite `prefix` with NEW in a child that dies before step `step`."""
    pid = os.fork()
    if pid == 0:   # the child: never returns into pytest
        try:
            def before(i, op):
                if i == step:
                    os._exit(17)
            Recorder(pytest.MonkeyPatch(), before)
            _write(prefix, NEW, new_shards)
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("old_shards, new_shards", [(1, 1), (2, 3)])
def test_a_crash_at_every_step_leaves_old_or_new_whole(tmp_path, monkeypatch, old_shards,
                                                         new_shards):
    prefix = str(tmp_path / "ckpt")
    _write(prefix, OLD, old_shards)
    with monkeypatch.context() as m:
        steps = Recorder(m).ops
        _write(prefix, NEW, new_shards)
    assert _what_tfformats_reads(prefix) == "new"
    commit = steps.index(("rename", *[s for s in steps if s[0] == "rename"
                                      and s[2] == prefix + ".index"][0][1:]))
    seen = []
    for step in range(len(steps) + 1):
        _write(prefix, OLD, old_shards)
        code = _rewrite_with_crash_before(prefix, step, new_shards)
        assert code == (0 if step == len(steps) else 17)
        expected = "old" if step <= commit else "new"
        assert _what_tfformats_reads(prefix) == expected, (step, steps[step:step + 1])
        if HAVE_TF:
            # Until the recovery, TF finds the old checkpoint or none, never a mix.
            assert _what_tensorflow_reads(prefix) in (expected, "nothing"), step
        seen.append(expected)
        # The next write recovers: the files of the crashed one are gone.
        _write(prefix, NEW, new_shards)
        assert _what_tfformats_reads(prefix) == "new"
        assert sorted(os.listdir(tmp_path)) == sorted(
            ["ckpt.index"] + [f"ckpt.data-{i:05d}-of-{new_shards:05d}" for i in range(new_shards)])
    assert "old" in seen and "new" in seen


def test_a_failure_at_every_step_rolls_back_or_keeps_the_new(tmp_path, monkeypatch):
    """An exception (a full disk, EIO) instead of a crash: the writer itself
    rolls back before the commit point and keeps the new checkpoint after it,
    leaving no temporary file (aside files only where deleting them failed,
    and the next write deletes those)."""
    prefix = str(tmp_path / "ckpt")
    _write(prefix, OLD, 2)
    with monkeypatch.context() as m:
        steps = Recorder(m).ops
        _write(prefix, NEW, 1)
    commit = [i for i, s in enumerate(steps) if s[0] == "rename" and s[2] == prefix + ".index"][0]
    for step, op in enumerate(steps):
        _write(prefix, OLD, 2)

        def before(i, op, step=step):
            if i == step:
                raise OSError(5, "injected I/O error")
        with monkeypatch.context() as m:
            Recorder(m, before)
            try:
                _write(prefix, NEW, 1)
                raised = False
            except OSError:
                raised = True
        # Past the commit point, deleting the old files is best effort; a failed
        # fsync of the directory is still reported (the commit may not be durable).
        assert raised == (step <= commit or op[0] == "fsync"), (step, op)
        assert _what_tfformats_reads(prefix) == ("old" if step <= commit else "new"), (step, op)
        assert not glob.glob(str(tmp_path / "*.tempstate*"))
        if step <= commit:
            assert not glob.glob(str(tmp_path / "*.aside-*")), (step, op)
    _write(prefix, NEW, 1)
    assert not glob.glob(str(tmp_path / "*.aside-*"))


def test_fsync_order_of_a_rewrite(tmp_path, monkeypatch):
    prefix = str(tmp_path / "ckpt")
    _write(prefix, OLD, 1)
    with monkeypatch.context() as m:
        ops = Recorder(m).ops
        _write(prefix, NEW, 2)   # replaces a checkpoint: synced by default
    directory = str(tmp_path)
    renames = [i for i, op in enumerate(ops) if op[0] == "rename"]
    for i in renames:
        src = ops[i][1]
        if ".tempstate" in src:   # each new file reaches the disk before its name changes
            assert ("fsync", src) in ops[:i], f"{src} renamed before it was fsynced"
    first_new = min(i for i in renames if ".tempstate" in ops[i][1])
    asides = [i for i in renames if ".aside-" in ops[i][2]]
    assert len(asides) == 2 and max(asides) < first_new
    # the old files are aside on disk before any new one takes a final name
    assert ("fsync", directory) in ops[max(asides):first_new]
    commit = [i for i in renames if ops[i][2] == prefix + ".index"]
    assert commit == [max(renames)]   # the index is renamed last: the commit point
    # the commit is on disk before the old checkpoint's files are deleted
    removes = [i for i, op in enumerate(ops) if op[0] == "remove" and ".aside-" in op[1]]
    assert len(removes) == 2
    assert ("fsync", directory) in ops[commit[0]:min(removes)]
    # the aside index goes first: while it exists, the old data it describes does too
    assert ops[min(removes)][1].startswith(prefix + ".index.aside-")


def test_state_file_is_fsynced_before_its_rename(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, max_to_keep=2)
    with monkeypatch.context() as m:
        ops = Recorder(m).ops
        manager.save({"w": np.zeros(2)})
    state = str(tmp_path / "checkpoint")
    renames = [i for i, op in enumerate(ops) if op[0] == "rename" and op[2] == state]
    assert len(renames) == 1
    assert ("fsync", ops[renames[0]][1]) in ops[:renames[0]]


def test_stale_temporary_files_are_removed_by_the_next_write(tmp_path):
    prefix = str(tmp_path / "ckpt")
    _write(prefix, OLD, 1)
    pid = os.fork()
    if pid == 0:   # a writer killed before finishing
        try:
            writer = BundleWriter(prefix, num_shards=2)
            writer.add("a", np.zeros(1000))
            os._exit(17)
        except BaseException:
            os._exit(3)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 17
    (tmp_path / "ckpt.index.tempstate123").write_bytes(b"x" * 100)   # a killed finish()
    assert len(glob.glob(str(tmp_path / "*.tempstate*"))) == 3
    other = tmp_path / "other.data-00000.tempstate5"   # another prefix's: not ours to touch
    other.write_bytes(b"")
    _write(prefix, NEW, 1)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.data-00000-of-00001", "ckpt.index",
                                            other.name]
    assert _what_tfformats_reads(prefix) == "new"


# --- readers and rewrites -------------------------------------------------------

@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("new_shards", [1, 2])
def test_open_reader_keeps_reading_what_it_opened(tmp_path, verify, new_shards):
    prefix = str(tmp_path / "ckpt")
    _write(prefix, OLD, 1)
    with tff.open_checkpoint(prefix, verify=verify) as reader:
        _write(prefix, NEW, new_shards)
        assert _same({k: reader[k] for k in reader}, OLD)
    assert _what_tfformats_reads(prefix) == "new"


def test_rewrite_while_the_reader_opens_is_noticed(tmp_path):
    """A rewrite between opening the index and opening the data files: the
    reader starts over and reads the new checkpoint, not old index + new data."""
    prefix = str(tmp_path / "ckpt")
    _write(prefix, OLD, 1)
    opened = []

    def opener(path):
        source = fileio.open_file(path)
        opened.append(path)
        if len(opened) == 1:   # the old index is open: now a writer replaces everything
            _write(prefix, NEW, 1)
        return source
    with tff.CheckpointReader(prefix, verify=False, opener=opener) as reader:
        assert _same({k: reader[k] for k in reader}, NEW)
    assert opened.count(prefix + ".index") == 2


def test_rewrite_in_a_loop_while_opening_is_an_error(tmp_path):
    from tfformats.errors import FormatError
    prefix = str(tmp_path / "ckpt")
    _write(prefix, OLD, 1)

    def opener(path):
        source = fileio.open_file(path)
        if path.endswith(".index"):
            _write(prefix, NEW, 1)
        return source
    with pytest.raises(FormatError, match="replaced 3 times while it was being opened"):
        tff.CheckpointReader(prefix, opener=opener)



# --- CheckpointManager ------------------------------------------------------------

@pytest.mark.parametrize("listed", ["../victim/x", "ABSOLUTE", "sub/../../victim/x"])
def test_rotation_never_deletes_outside_its_directory(tmp_path, listed):
    victim = tmp_path / "victim"
    save_checkpoint(str(victim / "x"), {"w": np.zeros(2)}, object_graph=False)
    before = sorted(os.listdir(victim))
    run = tmp_path / "run"
    manager = CheckpointManager(run, max_to_keep=1)
    manager.save({"w": np.zeros(2)})
    listed = str(victim / "x") if listed == "ABSOLUTE" else listed
    state = read_state(run)
    state.all_model_checkpoint_paths.insert(0, listed)
    state.all_model_checkpoint_timestamps.insert(0, state.all_model_checkpoint_timestamps[0])
    (run / "checkpoint").write_text(str(state))
    manager = CheckpointManager(run, max_to_keep=1)
    manager.save({"w": np.ones(2)})
    manager.save({"w": np.ones(2)})
    assert sorted(os.listdir(victim)) == before
    assert list(read_state(run).all_model_checkpoint_paths) == ["ckpt-3"]   # dropped all the same
    assert not (run / "ckpt-1.index").exists()   # its own files still go


def test_failed_state_write_keeps_the_list_as_on_disk(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, max_to_keep=2)
    manager.save({"w": np.zeros(2)})
    manager.save({"w": np.zeros(2)})
    listed = (manager.checkpoints, manager.latest_checkpoint)

    def failing(path, data, sync):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("tfformats.writer.write_atomically", failing)
    with pytest.raises(OSError):
        manager.save({"w": np.ones(2)})
    assert (manager.checkpoints, manager.latest_checkpoint) == listed
    state = read_state(tmp_path)
    assert [os.path.join(str(tmp_path), p) for p in state.all_model_checkpoint_paths] == listed[0]
    assert (tmp_path / "ckpt-1.index").exists()   # nothing rotated out
    monkeypatch.undo()
    assert manager.save({"w": np.ones(2)}).endswith("ckpt-3")
    assert list(read_state(tmp_path).all_model_checkpoint_paths) == ["ckpt-2", "ckpt-3"]


def test_data_orphaned_by_a_killed_rotation_is_deleted_later(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, max_to_keep=1)
    manager.save({"w": np.zeros(2)})
    def killed_after_the_index(i, op):
        if op[0] == "remove" and op[1].endswith(".index"):
            os.remove(op[1])
            raise KeyboardInterrupt
    with monkeypatch.context() as m:
        Recorder(m, killed_after_the_index)
        with pytest.raises(KeyboardInterrupt):
            manager.save({"w": np.zeros(2)})
    assert (tmp_path / "ckpt-1.data-00000-of-00001").exists()   # the orphan
    (tmp_path / "checkpoint.tempstate99").write_text("a killed state write")
    manager = CheckpointManager(tmp_path, max_to_keep=1)
    manager.save({"w": np.ones(2)})
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-3.data-00000-of-00001",
                                            "ckpt-3.index"]
