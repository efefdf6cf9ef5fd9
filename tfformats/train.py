"""A drop-in for TensorFlow's checkpoint utilities (`tf.train`).

Code written against `tf.train` runs with only the import changed:

    from tfformats import train      # instead of: import tensorflow as tf; tf.train
    for name, shape in train.list_variables(path):
        value = train.load_variable(path, name)

Same names, arguments and return types as TensorFlow 2.21:

* `load_checkpoint(ckpt_dir_or_file)` and `NewCheckpointReader(filepattern)`
  return a reader (a `CheckpointReader`, tfformats/checkpoint.py) whose
  `get_tensor` returns what TensorFlow's does: a private, writable numpy
  array; a numpy scalar for a 0-d tensor; `bytes` for a scalar string
  (object arrays of `bytes` for string tensors).
* `load_variable(ckpt_dir_or_file, name)` (`:0` is accepted, as in TF),
  `list_variables(ckpt_dir_or_file)` (sorted `(name, shape list)` pairs,
  `_CHECKPOINTABLE_OBJECT_GRAPH` included, as in TF).
* `latest_checkpoint(checkpoint_dir, latest_filename=None)` and
  `get_checkpoint_state(checkpoint_dir, latest_filename=None)` (a
  CheckpointState proto, relative paths joined to the directory as TF does;
  None without a state file, or with one that does not parse).
* `checkpoints_iterator(checkpoint_dir, min_interval_secs=0, timeout=None,
  timeout_fn=None)`: yields each new checkpoint path as it appears.

Every function also takes `filesystem=` / `storage_options=` for paths that
are URLs (docs/remote.md); `checkpoints_iterator` keeps them for as long as
it is iterated.

Errors, where TensorFlow raises its own classes, are tfformats exceptions
that are also the built-in a caller would catch (tfformats/errors.py):

  situation                          TensorFlow            tfformats
  no checkpoint at the path          NotFoundError         CheckpointNotFoundError (FileNotFoundError)
  a directory without checkpoints    ValueError            NoCheckpointError (FileNotFoundError, ValueError)
  no tensor of that name             NotFoundError         TensorNotFoundError (KeyError)
  empty model_checkpoint_path        ValueError            FormatError (ValueError)

Where TensorFlow is stricter, tfformats reads more: a SavedModel directory,
a directory with a single checkpoint, TF1 paths recorded as absolute in a
state file that has moved, and any name tfformats/names.py resolves (object
paths, Keras variable names) where TF only takes checkpoint keys.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterator

from . import fileio
from .bundle import BundleReader, gc_paused
from .checkpoint import STATE_FILENAME, CheckpointReader, listed_prefix, read_state

__all__ = ["NewCheckpointReader", "checkpoints_iterator", "get_checkpoint_state",
           "latest_checkpoint", "list_variables", "load_checkpoint", "load_variable"]


def _warn_unparsable(message: str) -> None:
    import logging   # imported here: `tfformats ls` starts without logging
    logging.getLogger("tfformats").warning("%s; ignored", message)


# How often checkpoints_iterator looks for a new checkpoint (TF: 1 second).
POLL_SECONDS = 1.0


class TFCheckpointReader(CheckpointReader):
    """A CheckpointReader whose `get_tensor` returns what TensorFlow's does."""

    def get_tensor(self, name: str, copy: bool = True, device: str | None = None) -> Any:
        """The tensor `name`: a writable array by default (as TensorFlow's, a copy
        of the stored bytes; `copy=False` gives the zero-copy read-only view), a
        numpy scalar for a 0-d tensor, `bytes` for a scalar string."""
        if not isinstance(name, str):   # TF's error for a name of another type
            raise TypeError(f"tensor names are str, not {type(name).__name__}")
        value = super().get_tensor(name, copy=copy, device=device)
        if device is None and value.ndim == 0:
            return value[()]
        return value


@fileio.with_storage
def load_checkpoint(ckpt_dir_or_file: str | os.PathLike) -> TFCheckpointReader:
    """A reader for the checkpoint at `ckpt_dir_or_file` (a prefix, or a directory
    whose `checkpoint` file names the latest), like `tf.train.load_checkpoint`."""
    return TFCheckpointReader(ckpt_dir_or_file)


@fileio.with_storage
def NewCheckpointReader(filepattern: str | os.PathLike) -> TFCheckpointReader:  # noqa: N802
    """Like `tf.compat.v1.train.NewCheckpointReader`: a reader for a checkpoint prefix."""
    return TFCheckpointReader(filepattern)


@fileio.with_storage
def load_variable(ckpt_dir_or_file: str | os.PathLike, name: str) -> Any:
    """The value of variable `name` (`:0` allowed), like `tf.train.load_variable`."""
    if name.endswith(":0"):
        name = name[:-2]
    with load_checkpoint(ckpt_dir_or_file) as reader:
        return reader.get_tensor(name)


@fileio.with_storage
def list_variables(ckpt_dir_or_file: str | os.PathLike) -> list[tuple[str, list[int]]]:
    """Sorted `(name, shape)` pairs of every tensor, like `tf.train.list_variables`."""
    # A bundle's pairs come in key order straight from its index; the collector
    # stays off, as it would only rescan the 100,000s of new lists returned.
    with gc_paused(), load_checkpoint(ckpt_dir_or_file) as reader:
        if isinstance(reader.bundle, BundleReader):
            return reader.bundle.shape_pairs()
        return sorted(reader.get_variable_to_shape_map().items())


@fileio.with_storage
def get_checkpoint_state(checkpoint_dir: str | os.PathLike,
                         latest_filename: str | None = None) -> Any:
    """The CheckpointState in `checkpoint_dir`, like `tf.train.get_checkpoint_state`:
    None when there is no state file or it does not parse (logged), ValueError
    (FormatError) when it names no checkpoint. Relative paths are joined to
    `checkpoint_dir`, as TensorFlow does."""
    checkpoint_dir = os.fspath(checkpoint_dir)
    state = read_state(checkpoint_dir, latest_filename or STATE_FILENAME,
                       unparsable=_warn_unparsable)
    if state is None:
        return None
    if not os.path.isabs(state.model_checkpoint_path):
        state.model_checkpoint_path = os.path.join(checkpoint_dir, state.model_checkpoint_path)
    for i, path in enumerate(state.all_model_checkpoint_paths):
        if not os.path.isabs(path):
            state.all_model_checkpoint_paths[i] = os.path.join(checkpoint_dir, path)
    return state


@fileio.with_storage
def latest_checkpoint(checkpoint_dir: str | os.PathLike,
                      latest_filename: str | None = None) -> str | None:
    """The newest checkpoint's prefix, like `tf.train.latest_checkpoint`; None when
    there is none. A prefix recorded as an absolute path that no longer exists is
    also looked for in `checkpoint_dir` itself (a moved directory), where TF gives up."""
    checkpoint_dir = os.fspath(checkpoint_dir)
    state = read_state(checkpoint_dir, latest_filename or STATE_FILENAME,
                       unparsable=_warn_unparsable)
    if state is None:
        return None
    return listed_prefix(checkpoint_dir, state.model_checkpoint_path)


@fileio.with_storage
def wait_for_new_checkpoint(checkpoint_dir: str | os.PathLike,
                            last_checkpoint: str | None = None,
                            seconds_to_sleep: float | None = None,
                            timeout: float | None = None) -> str | None:
    """The first checkpoint path in `checkpoint_dir` other than `last_checkpoint`,
    polling every `seconds_to_sleep` (POLL_SECONDS); None after `timeout` seconds."""
    interval = POLL_SECONDS if seconds_to_sleep is None else seconds_to_sleep
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        path = latest_checkpoint(checkpoint_dir)
        if path is not None and path != last_checkpoint:
            return path
        if deadline is not None and time.monotonic() + interval > deadline:
            return None
        time.sleep(interval)


@fileio.with_storage
def checkpoints_iterator(checkpoint_dir: str | os.PathLike, min_interval_secs: float = 0,
                         timeout: float | None = None,
                         timeout_fn: Callable[[], bool] | None = None) -> Iterator[str]:
    """Yield each new checkpoint path of `checkpoint_dir` as it appears, like
    `tf.train.checkpoints_iterator`. After `timeout` seconds without one, stop,
    or, when `timeout_fn` is given, stop if it returns True and wait again if not.
    Consecutive paths are at least `min_interval_secs` apart. `filesystem=` /
    `storage_options=` serve URLs for as long as the iteration runs."""
    last = None
    while True:
        path = wait_for_new_checkpoint(checkpoint_dir, last, timeout=timeout)
        if path is None:
            if timeout_fn is None or timeout_fn():
                return
            continue
        started = time.monotonic()
        last = path
        yield path
        pause = started + min_interval_secs - time.monotonic()
        if pause > 0:
            time.sleep(pause)
