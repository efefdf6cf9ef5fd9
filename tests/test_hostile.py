"""Hostile input built to hang, bloat or crash: FIFOs and other non-files,
inputs that exceed a limit (tfformats/limits.py), and shapes, bytes and
archives that numpy, protobuf or zipfile would fail on in their own words."""

import os
import shutil
import threading

import numpy as np
import pytest

import tfformats as tff
from tfformats import fileio

from conftest import FIXTURES, copy_fixture

DTYPES = FIXTURES / "dtypes" / "ckpt"
KERAS_MODEL = FIXTURES / "tf_keras_savedmodel"


def _finishes(fifo, call, timeout=10):
    """Run `call` in a thread; a call still blocked after `timeout` seconds
    (in open() of the FIFO, waiting for a writer) is released by opening the
    FIFO for writing, and the test fails instead of hanging. Returns what
    the call raised or returned."""
    result = {}

    def run():
        try:
            result["value"] = call()
        except BaseException as exc:   # noqa: B902 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)   # a writer: open() returns
        os.close(fd)
        thread.join(timeout)
        pytest.fail(f"blocked on the FIFO {fifo}")
    return result


def _fifo_in_place_of(path):
    os.remove(path) if os.path.lexists(path) else None
    os.mkfifo(path)
    return str(path)


def _copy_model(tmp_path):
    return shutil.copytree(KERAS_MODEL, tmp_path / "model")


# (what is replaced by a FIFO, how it is read)
FIFO_CASES = {
    "data shard": (lambda t: copy_fixture(DTYPES, t / "c").parent / "ckpt.data-00000-of-00001",
                   lambda t: tff.open_checkpoint(t / "c" / "ckpt")),
    "index": (lambda t: copy_fixture(DTYPES, t / "c").parent / "ckpt.index",
              lambda t: tff.open_checkpoint(t / "c" / "ckpt")),
    "state file": (lambda t: copy_fixture(DTYPES, t / "c").parent / "checkpoint",
                   lambda t: tff.latest_checkpoint(t / "c")),
    "saved_model.pb": (lambda t: _copy_model(t) / "saved_model.pb",
                       lambda t: tff.load_saved_model(t / "model")),
    "fingerprint.pb": (lambda t: _copy_model(t) / "fingerprint.pb",
                       lambda t: __import__("tfformats.fingerprint").fingerprint
                       .read_fingerprint(t / "model")),
    "keras_metadata.pb": (lambda t: _copy_model(t) / "keras_metadata.pb",
                          lambda t: tff.load_saved_model(t / "model").keras_metadata),
    "the path itself": (lambda t: t / "ckpt", lambda t: tff.open_checkpoint(t / "ckpt")),
    "graph file": (lambda t: t / "graph.pb", lambda t: tff.load_graph_def(t / "graph.pb")),
}


@pytest.mark.parametrize("case", sorted(FIFO_CASES))
def test_a_fifo_is_refused_not_waited_on(tmp_path, case):
    place, read = FIFO_CASES[case]
    fifo = _fifo_in_place_of(place(tmp_path))
    result = _finishes(fifo, lambda: read(tmp_path))
    error = result.get("error")
    assert isinstance(error, tff.TFFormatsError), result
    assert "FIFO" in str(error) or "no such" in str(error) or "not" in str(error), error


def test_fileio_refuses_every_kind_of_non_file(tmp_path):
    fifo = _fifo_in_place_of(tmp_path / "fifo")
    for opener in (fileio.open_file, fileio.read_file, lambda p: fileio.read_at(p, 0, 4)):
        error = _finishes(fifo, lambda: opener(fifo)).get("error")
        assert isinstance(error, tff.FormatError) and "is a FIFO, expected a regular file" in str(error)
        with pytest.raises(tff.FormatError, match="is a directory"):
            opener(tmp_path)
        with pytest.raises(tff.FormatError, match="is a device"):
            opener("/dev/zero")   # would read forever
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(tff.FormatError, match="loop of symbolic links"):
        fileio.open_file(tmp_path / "loop")
    with pytest.raises(tff.FormatError, match="loop of symbolic links"):
        fileio.read_file(tmp_path / "loop")
