"""Writing checkpoints that TensorFlow reads: bundles, object graphs, state files.

`BundleWriter` writes a tensor bundle byte for byte as TensorFlow's own
writer does for the same tensors in the same order. `save_checkpoint` adds
the object graph that lets `tf.train.Checkpoint.restore` and tf_keras'
`load_weights` find the values, and `CheckpointManager` numbers, lists and
rotates checkpoints like `tf.train.CheckpointManager`.

Files are always written little-endian (the header says so), whatever the
host, so a bundle is portable.
"""

from __future__ import annotations

import math
import os
import re
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from google.protobuf import text_format

from . import commit, fileio, protos, slices
from ._impl import hot
from .bundle import BUNDLE_VERSION, DATA_SUFFIX, HEADER_KEY, data_filename
from .checkpoint import STATE_FILENAME, read_state
from .crc import crc32c_in_background
from .dtypes import as_dtype
from .errors import CheckpointNotFoundError, FormatError, UnsupportedError
from .fileio import remove_if_present, temp_name, write_atomically
from .objgraph import OBJECT_GRAPH_KEY, VARIABLE_SUFFIX, build_object_graph, parse_graph
from .progress import bar
from .sstable import TableBuilder

# Big arrays are converted, checksummed and written in pieces of this size.
_PIECE = 16 << 20
# Small on purpose: writes bigger than the buffer go straight to the file, so
# tensor bytes are not copied through it first.
_FILE_BUFFER = 64 << 10
# Pieces at least this big are checksummed on a helper thread while they are
# written (both release the GIL), so the CRC costs no wall time.
_OVERLAP_MIN = 1 << 20
# Sub-byte integer types keep one element per byte, value in the low bits.
_LOW_BITS = {"int4": 0x0F, "uint4": 0x0F, "int2": 0x03, "uint2": 0x03, "float4_e2m1fn": 0x0F}


def _make_dirs(prefix):
    """Create the checkpoint's directory if needed, like tf.train.Checkpoint.write."""
    directory = os.path.dirname(fileio.abspath(prefix))
    try:
        fileio.makedirs(directory)
    except OSError as exc:
        raise CheckpointNotFoundError(
            f"{prefix}: cannot create the checkpoint directory {directory!r} ({exc})") from None
    return directory


# --- turning values into stored bytes -------------------------------------------

def _array(value, dtype, name):
    """`value` as an ndarray and the DType to store it as (conversion comes later)."""
    if dtype is not None:
        dtype = as_dtype(dtype)
        if dtype.is_string:
            return np.asarray(value, dtype=object), dtype
        if dtype.as_numpy_dtype is None:
            raise UnsupportedError(f"tensor {name!r}: dtype {dtype.name} cannot be written")
        if not isinstance(value, np.ndarray):
            value = np.asarray(value, dtype=dtype.as_numpy_dtype)
        return value, dtype
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.dtype.kind in "SU" and not isinstance(value, np.ndarray):
        # numpy's fixed-width bytes drop trailing NULs; keep the objects as given
        array = np.asarray(value, dtype=object)
    try:
        dtype = as_dtype(array.dtype)
    except UnsupportedError:
        raise UnsupportedError(f"tensor {name!r}: numpy dtype {array.dtype} has no TensorFlow "
                               "equivalent") from None
    return array, dtype


def stored_pieces(array: Any, dtype: Any) -> Iterator[Any]:
    """The stored bytes of `array` as `dtype`: row-major, little-endian, in pieces.

    Byte-order and dtype conversions happen piece by piece, so a converted
    copy never exceeds _PIECE bytes (only a non-contiguous array is first
    copied whole). Contiguous arrays that need no conversion are not copied.
    """
    target = dtype.as_numpy_dtype.newbyteorder("<")
    flat = np.ascontiguousarray(array).reshape(-1)
    mask = _LOW_BITS.get(dtype.name)
    step = _PIECE // target.itemsize
    for start in range(0, flat.size, step):
        piece = flat[start:start + step]
        if piece.dtype != target:
            piece = piece.astype(target)
        piece = piece.view(np.uint8)
        yield piece if mask is None else piece & mask


def _require_str(name):
    if not isinstance(name, str):
        raise TypeError(f"tensor names must be str, got {type(name).__name__} {name!r}")


def _string_values(array, name):
    out = []
    for i, v in enumerate(array.flat):
        if isinstance(v, bytes):
            out.append(v)
        elif isinstance(v, str):
            out.append(v.encode("utf-8"))
        else:
            raise UnsupportedError(f"tensor {name!r}: element {i} of a string tensor is "
                                   f"{type(v).__name__}, expected bytes or str")
    return out


class _Shard:
    """One data file being written under a temporary name."""

    def __init__(self, prefix, index):
        self.temp = temp_name(f"{prefix}.data-{index:05d}")
        self.file = fileio.create(self.temp, buffering=_FILE_BUFFER)
        self.position = 0

    def write(self, data):
        self.file.write(data)
        self.position += len(data)

    def rewind(self, position):
        """Forget everything written after `position` (a failed tensor)."""
        self.file.flush()
        self.file.truncate(position)
        if self.file.tell() != position:   # a local file stays put; an upload is at its end
            self.file.seek(position)
        self.position = position

    def close(self, sync):
        if not self.file.closed:
            if sync:
                fileio.fsync(self.file, self.temp)
            self.file.close()


# --- the bundle writer ------------------------------------------------------------

@fileio.keeps_storage
class BundleWriter:
    """Streams tensors into `<prefix>.data-*` and writes `<prefix>.index` at `finish()`.

    Data goes to temporary files next to the final ones; `finish()` syncs
    them and puts them in place so that a crash at any instant leaves the
    earlier checkpoint at `prefix` or the new one whole (`tfformats.commit`,
    docs/durability.md); `abort()` leaves the earlier one untouched.
    Use it as a context manager to finish on success and abort on error.

    `num_shards=N` spreads tensors over N data files (each tensor goes to the
    one with the fewest bytes so far); `max_shard_size` starts a new data file
    before a tensor that would push the current one past that many bytes.
    `sync=None` (the default) fsyncs the files only when they replace those of
    an existing checkpoint at `prefix`, so a power cut can never lose that
    one; a new prefix is written as TensorFlow writes it, without fsync (a
    power cut may lose the new checkpoint, never an older one). `sync=True`
    always fsyncs, `sync=False` never does.
    """

    _entries: dict[bytes, Any]
    _index_temp: str | None

    def __init__(self, prefix: str | os.PathLike, *, num_shards: int | None = None,
                 max_shard_size: int | None = None, sync: bool | None = None) -> None:
        if num_shards is not None and max_shard_size is not None:
            raise ValueError("give num_shards or max_shard_size, not both")
        if num_shards is not None and not 1 <= num_shards <= 99999:
            raise ValueError(f"num_shards must be 1..99999, got {num_shards}")
        if max_shard_size is not None and max_shard_size < 1:
            raise ValueError(f"max_shard_size must be positive, got {max_shard_size}")
        self.prefix = os.fspath(prefix)
        _make_dirs(self.prefix)
        self._max_shard_size = max_shard_size
        self._sync = sync
        self._entries = {}  # key bytes -> BundleEntryProto
        self._shards = []
        self._index_temp = None
        self._closed = False
        try:
            for i in range(num_shards or 1):
                self._shards.append(_Shard(self.prefix, i))
        except BaseException:
            self.abort()
            raise

    # names and entries

    def _check_open(self):
        if self._closed:
            raise FormatError(f"{self.prefix}: the writer is already finished or aborted")

    def _new_key(self, name):
        _require_str(name)
        self._check_open()
        if not name:
            raise FormatError("the empty tensor name is reserved for the bundle header")
        key = name.encode("utf-8", "surrogateescape")
        if key[0] == 0:
            raise FormatError(f"tensor name {name!r}: names starting with NUL are reserved "
                              "for the parts of partitioned tensors")
        if key in self._entries:
            raise FormatError(f"{self.prefix}: duplicate tensor name {name!r}")
        return key

    @staticmethod
    def _entry(dtype, shape, shard_id=0, offset=0, size=0, crc=0):
        entry = protos.BundleEntryProto(dtype=dtype.enum, shard_id=shard_id, offset=offset,
                                        size=size, crc32c=crc)
        entry.shape.SetInParent()  # scalars still carry an (empty) shape
        for dim in shape:
            entry.shape.dim.add(size=dim)
        return entry

    def _shard_for(self, nbytes):
        """The index of the data file the next tensor of `nbytes` goes to."""
        if self._max_shard_size is not None:
            current = self._shards[-1]
            if current.position and current.position + nbytes > self._max_shard_size:
                self._shards.append(_Shard(self.prefix, len(self._shards)))
            return len(self._shards) - 1
        return min(range(len(self._shards)), key=lambda i: self._shards[i].position)

    def _store(self, key, dtype, shape, size, pieces, name, crc=None):
        """Append `pieces` (`size` bytes in all) to a data file and record the entry.

        The CRC is computed on the pieces as they go out unless `crc` (masked)
        is given. On any failure the data file is cut back, so a bad tensor
        leaves no trace and the writer stays usable.
        """
        shard_id = self._shard_for(size)
        shard = self._shards[shard_id]
        offset = shard.position
        running = 0
        try:
            for piece in pieces:
                if shard.position - offset + len(piece) > size:
                    raise FormatError(f"tensor {name!r}: chunks hold more than the "
                                      f"{size} bytes of {dtype.name}{list(shape)}")
                if crc is not None:
                    shard.write(piece)
                elif len(piece) >= _OVERLAP_MIN:
                    job = crc32c_in_background(piece, running)
                    shard.write(piece)
                    running = job.result()
                else:
                    running = hot.crc32c(piece, running)
                    shard.write(piece)
            if shard.position - offset != size:
                raise FormatError(f"tensor {name!r}: chunks hold {shard.position - offset} "
                                  f"bytes, {dtype.name}{list(shape)} needs {size}")
        except BaseException:
            try:
                shard.rewind(offset)
            except (OSError, ValueError):
                # Where the data file ends is unknown now (e.g. a full disk),
                # so later tensors could be recorded at wrong offsets.
                self.abort()
            raise
        crc = hot.mask_crc(running) if crc is None else crc
        self._entries[key] = self._entry(dtype, shape, shard_id, offset, size, crc)

    def _write(self, key, array, dtype, name):
        if dtype.is_string:
            data, crc = hot.encode_strings(_string_values(array, name))
            self._store(key, dtype, array.shape, len(data), [data], name, crc)
        else:
            size = array.size * dtype.itemsize
            self._store(key, dtype, array.shape, size, stored_pieces(array, dtype), name)

    # public API

    def add(self, name: str, value: Any, dtype: Any = None) -> None:
        """Write one tensor: an array, a scalar, nested lists, or bytes/str values.

        `dtype` (a name such as "bfloat16" or "qint8", a DType or a numpy
        dtype) overrides the type numpy infers and converts the values.
        """
        key = self._new_key(name)
        array, dtype = _array(value, dtype, name)
        self._write(key, array, dtype, name)

    def add_chunks(self, name: str, dtype: Any, shape: Sequence[int],
                   chunks: Iterable[Any]) -> None:
        """Write one numeric tensor from an iterable of pieces of its bytes.

        Pieces are bytes-like objects (uint8 arrays included) holding
        consecutive little-endian bytes of the row-major tensor; numpy arrays
        of the tensor's own dtype are converted to that form, arrays of other
        dtypes are refused. Memory use is one piece at a time. If the pieces
        do not add up to exactly the tensor's size, nothing is kept.
        """
        key = self._new_key(name)
        dtype = as_dtype(dtype)
        if dtype.is_string or dtype.itemsize is None:
            raise UnsupportedError(f"tensor {name!r}: add_chunks needs a fixed-size dtype, "
                                   f"not {dtype.name}; use add()")
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise FormatError(f"tensor {name!r}: negative dimension in shape {list(shape)}")
        size = math.prod(shape) * dtype.itemsize
        pieces = (piece for chunk in chunks for piece in self._chunk_pieces(chunk, dtype, name))
        self._store(key, dtype, shape, size, pieces, name)

    @staticmethod
    def _chunk_pieces(chunk, dtype, name):
        if isinstance(chunk, np.ndarray):
            if chunk.dtype.newbyteorder("<") == dtype.as_numpy_dtype.newbyteorder("<"):
                return stored_pieces(chunk, dtype)
            if chunk.dtype != np.uint8:
                # taking a float64 array's bytes as float32 values would store garbage
                raise UnsupportedError(f"tensor {name!r}: a chunk of {chunk.dtype} for a "
                                       f"{dtype.name} tensor; pass {dtype.name} arrays or bytes")
            raw = np.ascontiguousarray(chunk).reshape(-1)
        else:
            raw = np.frombuffer(memoryview(chunk).cast("B"), np.uint8)
        mask = _LOW_BITS.get(dtype.name)
        return [raw if mask is None else raw & mask]

    def add_slice(self, full_name: str, full_shape: Sequence[int], extents: Sequence[Any],
                  value: Any, dtype: Any = None) -> None:
        """Write one part of a partitioned tensor, as TF1 partitioned variables do.

        `extents` holds a (start, length) pair per dimension, length -1 for the
        whole dimension. The tensor `full_name` lists its parts; each part is
        stored under its own ordered-code key. A part covering everything is
        written as a plain tensor.
        """
        _require_str(full_name)
        self._check_open()
        full_shape = tuple(int(d) for d in full_shape)
        extents = tuple((int(s), int(n)) for s, n in extents)
        if len(extents) != len(full_shape) or any(
                s < 0 or n < -1 or (n >= 0 and s + n > d) or (n < 0 and s != 0)
                for (s, n), d in zip(extents, full_shape)):
            raise FormatError(f"tensor {full_name!r}: slice {list(extents)} does not fit shape "
                              f"{list(full_shape)}")
        array, dtype = _array(value, dtype, full_name)
        want = tuple(d if n < 0 else n for (_, n), d in zip(extents, full_shape))
        if array.shape != want:
            raise FormatError(f"tensor {full_name!r}: slice {list(extents)} needs shape "
                              f"{list(want)}, got {list(array.shape)}")
        if slices.covers_all(extents, full_shape):
            return self.add(full_name, array, dtype)
        key = full_name.encode("utf-8", "surrogateescape")
        full = self._entries.get(key)
        if full is None:
            self._new_key(full_name)
            full = self._entry(dtype, full_shape)
        elif not full.slices:
            raise FormatError(f"{self.prefix}: duplicate tensor name {full_name!r}")
        elif full.dtype != dtype.enum or tuple(d.size for d in full.shape.dim) != full_shape:
            raise FormatError(f"tensor {full_name!r}: a slice of {dtype.name}{list(full_shape)} "
                              "does not match the slices written before")
        part_key = slices.slice_key(full_name, extents)
        if part_key in self._entries:
            raise FormatError(f"tensor {full_name!r}: slice {list(extents)} written twice")
        self._write(part_key, array, dtype, full_name)
        part = full.slices.add()
        for start, length in extents:
            extent = part.extent.add()
            if length >= 0:  # a whole dimension stays an empty Extent
                extent.start = start
                extent.length = length
        self._entries[key] = full

    def finish(self) -> str:
        """Sync the data files, write the index, then put them in place.

        Everything is complete on disk before any final name changes, so a
        failure while writing (a full disk) leaves the old checkpoint whole;
        the files then replace the old ones by the crash-consistent protocol
        of `tfformats.commit`, index last.
        """
        self._check_open()
        try:
            count = len(self._shards)
            index_path = self.prefix + ".index"
            sync = self._sync
            if sync is None:   # is there an older checkpoint here to protect?
                sync = bool(fileio.exists(index_path) or commit.data_files(self.prefix)
                            or commit.aside_files(self.prefix))
            for shard in self._shards:
                shard.close(sync)
            header = protos.BundleHeaderProto(num_shards=count,
                                              endianness=protos.BundleHeaderProto.LITTLE)
            header.version.producer = BUNDLE_VERSION
            self._index_temp = temp_name(index_path)
            with fileio.create(self._index_temp, buffering=_FILE_BUFFER) as f:
                table = TableBuilder(f)
                table.add(HEADER_KEY, header.SerializeToString())
                for key in sorted(self._entries):
                    table.add(key, self._entries[key].SerializeToString())
                table.finish()
                if sync:
                    fileio.fsync(f, self._index_temp)
            commit.commit(self.prefix, [(shard.temp, data_filename(self.prefix, i, count))
                                        for i, shard in enumerate(self._shards)],
                          self._index_temp, sync)
            self._index_temp = None
            for shard in self._shards:
                shard.temp = None
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.prefix

    def abort(self) -> None:
        """Stop writing and delete the temporary files; nothing final changes."""
        self._closed = True
        for shard in self._shards:
            try:
                shard.file.close()
            except OSError:  # flushing data that is being thrown away anyway
                pass
        for temp in [self._index_temp] + [shard.temp for shard in self._shards]:
            if temp is not None:
                remove_if_present(temp)

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._closed:  # finish() or abort() was called inside the block
            return
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    def __repr__(self):
        return f"<BundleWriter {self.prefix!r}, {len(self._entries)} entries>"


# --- checkpoints with an object graph ---------------------------------------------

SAVE_COUNTER_KEY = "save_counter" + VARIABLE_SUFFIX


def _numeric_bytes(value):
    """What a progress bar counts for `value`: the bytes of numeric arrays (as
    the readers count them), nothing for strings and serialized protos."""
    value = np.asarray(value) if not isinstance(value, (bytes, str)) else None
    return 0 if value is None or value.dtype.kind in "OSU" else value.nbytes


@fileio.with_storage
def save_checkpoint(prefix: str | os.PathLike, tensors: Mapping[str, Any], *,
                    object_graph: bool = True, dtypes: Mapping[str, Any] | None = None,
                    full_names: Mapping[str, str] | None = None, save_counter: int | None = None,
                    num_shards: int | None = None, max_shard_size: int | None = None,
                    sync: bool | None = None, progress: bool | Callable[..., Any] = False) -> str:
    """Write `tensors` (name -> array) as a TF2 checkpoint at `prefix`; returns `prefix`.

    With `object_graph=True` names are object paths as `CheckpointReader.object_paths()`
    reports them ("model/layer_with_weights-0/kernel", optimizer slots as
    "<variable path>/.OPTIMIZER_SLOT/optimizer/m") or full checkpoint keys
    ("…/.ATTRIBUTES/VARIABLE_VALUE"), and a `_CHECKPOINTABLE_OBJECT_GRAPH`
    is written so that `tf.train.Checkpoint(...).restore(prefix)` finds them.
    A graph already in `tensors` (as `load_tensors(..., include_object_graph=True)`
    returns it) is kept when it names exactly the other tensors; otherwise the graph is rebuilt,
    keeping its recorded full names. `save_counter=N` stores N as
    tf.train.Checkpoint's counter. With `object_graph=False` names are
    written unchanged. `dtypes` maps names to the dtype to store instead of
    the one numpy reports (needed for qint types).

    Tensors are written in the mapping's order, the object graph last.
    `progress` (False, True or a callable, see tfformats.progress) counts the
    tensor bytes written.
    """
    tensors = dict(tensors)
    dtypes = dict(dtypes or {})
    if save_counter is not None:
        tensors.pop("save_counter", None)
        tensors[SAVE_COUNTER_KEY] = np.int64(save_counter)
    graph = None
    if object_graph:
        given = tensors.pop(OBJECT_GRAPH_KEY, None)
        if given is not None:
            given = parse_graph(given.item() if isinstance(given, np.ndarray) else given,
                                os.fspath(prefix))
        names = {} if given is None else {
            a.checkpoint_key: a.full_name for n in given.nodes for a in n.attributes}
        if given is not None and set(names) == set(tensors):
            graph = given
        else:
            graph, keys = build_object_graph(tensors, {**names, **(full_names or {})})
            tensors = {keys[name]: value for name, value in tensors.items()}
            dtypes = {keys.get(name, name): dtype for name, dtype in dtypes.items()}
    total = sum(map(_numeric_bytes, tensors.values()))
    with BundleWriter(prefix, num_shards=num_shards, max_shard_size=max_shard_size,
                      sync=sync) as writer, \
            bar(progress, total, f"writing {os.path.basename(os.fspath(prefix))}") as shown:
        for name, value in tensors.items():
            writer.add(name, value, dtypes.get(name))
            shown.update(_numeric_bytes(value))
        if graph is not None:
            writer.add(OBJECT_GRAPH_KEY, np.array(graph.SerializeToString(), dtype=object))
    return os.fspath(prefix)


# --- checkpoint directories -------------------------------------------------------

def _delete_checkpoint(prefix):
    """Delete a checkpoint's files, the index first: a crash in between leaves
    data files without an index, which `_delete_orphans` finds later (an index
    without its data would look like a checkpoint)."""
    for path in [prefix + ".index"] + commit.data_files(prefix):
        remove_if_present(path)


@fileio.keeps_storage
class CheckpointManager:
    """Numbered checkpoints in a directory, like `tf.train.CheckpointManager`.

    `save(tensors)` writes `<directory>/<checkpoint_name>-<N>`, records it in
    the `checkpoint` state file (which `tf.train.latest_checkpoint` reads)
    and deletes the oldest checkpoints beyond `max_to_keep` (None keeps all).
    With `keep_checkpoint_every_n_hours`, a checkpoint leaving that window is
    kept on disk instead when it is at least that many hours newer than the
    last one so kept; kept ones are no longer listed (as in TensorFlow, so
    the state file does not grow forever). None or 0 keeps none this way.
    An existing state file is picked up: numbering and rotation continue.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int | None = 5,
                 keep_checkpoint_every_n_hours: float | None = None,
                 checkpoint_name: str = "ckpt") -> None:
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be positive or None, got {max_to_keep}")
        # TensorFlow does not check this; a negative value would silently keep
        # every checkpoint, so it is refused here. 0 means off, as in TF.
        if keep_checkpoint_every_n_hours is not None and not keep_checkpoint_every_n_hours >= 0:
            raise ValueError("keep_checkpoint_every_n_hours must be >= 0 or None, "
                             f"got {keep_checkpoint_every_n_hours}")
        self.directory = os.fspath(directory)
        self.max_to_keep = max_to_keep
        self.keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self.checkpoint_name = checkpoint_name
        self._checkpoints = {}  # prefix -> timestamp, oldest first
        now = time.time()
        state = read_state(self.directory) if fileio.isdir(self.directory) else None
        if state is None:
            # One second back, as TF does, so the hours are counted from the
            # same moment and the state file records the same value.
            self._last_preserved = now - 1.0
            self._latest = None
        else:
            self._last_preserved = min(state.last_preserved_timestamp, now)
            self._latest = self._prefix_of(state.model_checkpoint_path)
            paths = state.all_model_checkpoint_paths
            stamps = list(state.all_model_checkpoint_timestamps)
            if len(stamps) != len(paths):  # older writers leave them out
                stamps = [self._last_preserved] * len(paths)
            for path, stamp in zip(paths, stamps):
                self._checkpoints[self._prefix_of(path)] = min(stamp, now)

    def _prefix_of(self, path):
        """A path from the state file, spelt as save() spells the prefixes it makes.

        TF1 savers record absolute paths; unless those match the prefix of a
        new save, re-saving a number would list one checkpoint twice and
        rotation would later delete files that are still listed.
        """
        prefix = os.path.join(self.directory, path)
        if os.path.dirname(fileio.abspath(prefix)) == fileio.abspath(self.directory):
            return os.path.join(self.directory, os.path.basename(prefix))
        return prefix

    @property
    def checkpoints(self) -> list[str]:
        """Prefixes of the kept checkpoints, oldest first."""
        return list(self._checkpoints)

    @property
    def latest_checkpoint(self) -> str | None:
        return self._latest

    def _next_number(self):
        numbers = [int(m.group(1)) for p in [self._latest, *self._checkpoints] if p
                   for m in [re.search(r"-(\d+)$", p)] if m]
        return max(numbers, default=0) + 1

    def save(self, tensors: Mapping[str, Any], checkpoint_number: int | None = None,
             **save_options: Any) -> str:
        """Write the next checkpoint and update the state file; returns its prefix.

        `save_options` go to `save_checkpoint`; with an object graph the
        checkpoint number is also stored as tf.train.Checkpoint's save_counter.
        The manager's list changes only once the state file is written, so it
        always says what the state file on disk says.
        """
        number = self._next_number() if checkpoint_number is None else int(checkpoint_number)
        prefix = os.path.join(self.directory, f"{self.checkpoint_name}-{number}")
        if save_options.get("object_graph", True):
            save_options.setdefault("save_counter", number)
        save_checkpoint(prefix, tensors, **save_options)
        checkpoints = dict(self._checkpoints)
        checkpoints.pop(prefix, None)  # re-saving a number makes it the newest
        checkpoints[prefix] = time.time()
        last_preserved = self._last_preserved
        dropped = []
        hours = self.keep_checkpoint_every_n_hours
        while self.max_to_keep is not None and len(checkpoints) > self.max_to_keep:
            oldest = next(iter(checkpoints))
            stamp = checkpoints.pop(oldest)
            # Written as TF's test is (stamp minus the interval, >=) so that
            # float rounding at the boundary decides the same way.
            if hours and stamp - hours * 3600.0 >= last_preserved:
                last_preserved = stamp  # kept on disk, no longer listed
            else:
                dropped.append(oldest)
        # The state file stops listing a checkpoint (and records a new
        # last_preserved_timestamp) before any files go, so a crash in
        # between never leaves it naming a deleted checkpoint.
        self._write_state(prefix, checkpoints, last_preserved)
        self._checkpoints, self._latest, self._last_preserved = checkpoints, prefix, last_preserved
        for oldest in dropped:
            if self._owns(oldest):
                _delete_checkpoint(oldest)
        self._delete_orphans(number)
        return prefix

    def _owns(self, prefix):
        """Whether `prefix` names files directly in this manager's directory.
        A state file can name any path (`../elsewhere/x`, `/abs/x`): those are
        dropped from the list when they rotate out, and never deleted."""
        directory = fileio.realpath(self.directory)
        return os.path.dirname(fileio.realpath(prefix)) == directory

    def _delete_orphans(self, below):
        """Delete data files of this manager's numbering (below `below`, so not
        a checkpoint being written now) that have no index: what a rotation
        killed between deleting an index and its data left."""
        pattern = re.escape(self.checkpoint_name) + r"-(\d+)" + DATA_SUFFIX.pattern
        for name in fileio.listdir(self.directory):
            match = re.fullmatch(pattern, name)
            if match and int(match.group(1)) < below:
                prefix = os.path.join(self.directory, name[:-len(".data-00000-of-00000")])
                if not commit.has_index(prefix):
                    remove_if_present(os.path.join(self.directory, name))

    def _write_state(self, latest, checkpoints, last_preserved):
        state = protos.CheckpointState(
            model_checkpoint_path=os.path.relpath(latest, self.directory),
            all_model_checkpoint_paths=[os.path.relpath(p, self.directory) for p in checkpoints],
            all_model_checkpoint_timestamps=list(checkpoints.values()),
            last_preserved_timestamp=last_preserved)
        path = os.path.join(self.directory, STATE_FILENAME)
        write_atomically(path, text_format.MessageToString(state).encode("utf-8"), sync=True)
        for name in fileio.listdir(self.directory):   # of killed writers
            if re.fullmatch(re.escape(STATE_FILENAME) + r"\.tempstate\d+", name):
                remove_if_present(os.path.join(self.directory, name))
