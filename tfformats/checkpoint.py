"""Checkpoints: path forms, the `checkpoint` state file, the reader.

`CheckpointReader` is the user-facing reader: a Mapping of tensor name to
numpy array with TensorFlow's familiar method names on top.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from . import commit, fileio, v1
from .bundle import DATA_SUFFIX, BundleReader
from .bundle import Entry, TensorStore
from .dtypes import DType
from .errors import (CheckpointNotFoundError, DeviceError, FormatError, NoCheckpointError,
                     TensorNotFoundError, UnsupportedError)
from .objgraph import (OBJECT_GRAPH_KEY, VARIABLE_VALUE, object_variables, parse_graph,
                       saveable_keys)
from .objgraph import ObjectVariable
from .progress import bar

if TYPE_CHECKING:
    import numpy as np

    from .graph import GraphReader   # what open_checkpoint returns for a graph file
    from .keras import KerasReader   # ... and for a Keras file
    from .names import Names
else:   # imported on first use (tfformats/_lazy.py): reading an index needs no numpy
    from ._lazy import numpy as np

STATE_FILENAME = "checkpoint"

# A reader scans its whole index once single lookups have cost about as much:
# one lookup decodes about as much as a scan does per this many index bytes.
_BYTES_PER_LOOKUP = 4096

# `device=` is served by the GPU front end (tfformats.cuda), which sits above
# the readers: the package installs a loader for it (tfformats/__init__.py)
# so that this module never imports it.
_device_front_end = None


def set_device_front_end(loader: Callable[[], Any]) -> None:
    """Serve `device=` with the module `loader()` returns (its `to_device` and
    `load`); called once by the package."""
    global _device_front_end
    _device_front_end = loader


def _devices():
    if _device_front_end is None:
        raise DeviceError("no device support is installed (tfformats.cuda)")
    return _device_front_end()


# --- the `checkpoint` state file ------------------------------------------------

def read_state(directory: str | os.PathLike, filename: str = STATE_FILENAME,
               unparsable: Callable[[str], None] | None = None) -> Any:
    """The parsed CheckpointState of `directory`, or None if it has none.

    A file that is no CheckpointState text proto raises FormatError, or is
    passed to `unparsable(message)` and read as no state (None) when that is
    given (TensorFlow's `get_checkpoint_state` ignores such a file)."""
    path = os.path.join(directory, filename)
    data = fileio.read_file_if_present(path)
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not a UTF-8 text CheckpointState ({exc})") from None
    if "\0" in text:   # no path holds one; os calls would raise ValueError on it
        raise FormatError(f"{path}: a NUL byte at offset {text.index(chr(0))}")
    from google.protobuf import text_format

    from . import protos   # here, so that reading tensors never imports protobuf
    state = protos.CheckpointState()
    try:
        text_format.Merge(text, state)
    except text_format.ParseError as exc:
        message = f"{path}: not a CheckpointState text proto ({exc})"
        if unparsable is not None:
            unparsable(message)
            return None
        raise FormatError(message) from None
    if not state.model_checkpoint_path:
        raise FormatError(f"{path}: model_checkpoint_path is empty")
    if any("\0" in p for p in [state.model_checkpoint_path, *state.all_model_checkpoint_paths]):
        raise FormatError(f"{path}: a NUL byte in a checkpoint path")
    return state


def listed_prefix(directory: str, listed: str) -> str | None:
    """Where a prefix named in a state file is, or None.

    As written (a relative path is relative to the directory); failing that,
    the same name in the directory itself: TF1 savers record absolute paths,
    which break when a checkpoint directory is moved or copied from another
    machine (TensorFlow then gives up; the checkpoint is plainly right here).
    A V1 checkpoint is listed as its file, or as a shard pattern.
    """
    for prefix in (os.path.join(directory, listed),
                   os.path.join(directory, re.split(r"[\\/]", listed)[-1])):
        if commit.has_index(prefix) or v1.is_v1(prefix):
            return prefix
    return None


def is_v1_prefix(prefix: str) -> bool:
    """Whether a prefix from `resolve_prefix` is a TF1 V1 checkpoint: a V2
    bundle wherever there is an index, else a V1 table file (or shard set)."""
    return not fileio.isfile(prefix + ".index") and v1.is_v1(prefix)


def is_saved_model_dir(path: str | os.PathLike) -> bool:
    """Whether directory `path` holds a saved_model.pb, .pbtxt or .cpb (which
    one TensorFlow reads is graph.saved_model_file's to say; this module
    lists the names itself so that `ls` need not import protobuf)."""
    return any(fileio.exists(os.path.join(path, n))
               for n in ("saved_model.pb", "saved_model.pbtxt", "saved_model.cpb"))


def resolve_prefix(path: str | os.PathLike) -> str:
    """The bundle prefix a user path stands for.

    Accepts a prefix, a `.index` or `.data-XXXXX-of-YYYYY` file, a directory
    with a `checkpoint` state file (its latest checkpoint) or a single
    bundle, and a SavedModel directory (its `variables/variables`). A TF1 V1
    checkpoint is its own "prefix": its file, or one shard or the shard
    pattern of a sharded one (see `tfformats.v1`).
    """
    path = os.fspath(path)
    if fileio.isdir(path):
        if is_saved_model_dir(path) or fileio.isfile(os.path.join(path, "variables", "variables.index")):
            prefix = os.path.join(path, "variables", "variables")
            if not fileio.isfile(prefix + ".index"):
                raise NoCheckpointError(f"{path}: SavedModel directory without variables "
                                        f"(no {prefix}.index)")
            return prefix
        state = read_state(path)
        if state is not None:
            listed = listed_prefix(path, state.model_checkpoint_path)
            if listed is None:
                raise NoCheckpointError(
                    f"{path}/{STATE_FILENAME} names {state.model_checkpoint_path!r} but "
                    f"neither {os.path.join(path, state.model_checkpoint_path)}.index nor a "
                    "V1 checkpoint of that name exists")
            return listed
        indexes = sorted(n for n in fileio.listdir(path) if n.endswith(".index"))
        if len(indexes) == 1:
            return os.path.join(path, indexes[0][:-len(".index")])
        found = ", ".join(indexes[:5]) if indexes else "no .index file"
        raise NoCheckpointError(
            f"{path}: directory has no '{STATE_FILENAME}' state file and no SavedModel; "
            f"expected one of those or exactly one .index file, found {found} (a TF1 V1 "
            "checkpoint: pass its file)")
    if path.endswith(".index") and fileio.isfile(path):
        return path[:-len(".index")]
    if DATA_SUFFIX.search(path) and fileio.isfile(path):
        return DATA_SUFFIX.sub("", path)
    if commit.has_index(path):
        return path
    if v1.is_v1(path):
        return path
    if fileio.isfile(path):
        raise CheckpointNotFoundError(
            f"{path}: a file, but not a checkpoint (expected a prefix, a .index file, a "
            ".data-XXXXX-of-YYYYY file or a TF1 V1 checkpoint file)")
    raise CheckpointNotFoundError(
        f"{path}: no checkpoint here (expected a prefix with a {os.path.basename(path)}.index "
        "file, a .index or .data file, a checkpoint directory or a SavedModel directory)")


# --- the reader -------------------------------------------------------------------

@fileio.keeps_storage
class CheckpointReader(Mapping):
    """A checkpoint as a Mapping of tensor name -> numpy array.

    Arrays are read-only (numeric ones are views over the data files, which
    are mapped copy-on-write, so a consumer writing anyway is safe; see
    docs/dlpack.md); pass `copy=True` to `get_tensor` for a private array.
    CRC-32C of index blocks and tensors is verified unless `verify=False`.
    `bundle` is the format's own reader (a `bundle.TensorStore`): entries,
    the parts of partitioned tensors and stored bytes, for V2 and V1 alike.

    Every lookup (`[]`, `get_tensor`, `shape`, `dtype`, `entry`,
    `get_slice`) takes a checkpoint key, an object path or a TF1/Keras
    variable name, with or without `:0` (`key()`, tfformats/names.py).
    Iteration, `in` and `has_tensor` are about checkpoint keys only, as in
    TensorFlow's reader.
    """

    bundle: TensorStore
    _objects: dict[str, ObjectVariable] | None
    _names: Names | None

    def __init__(self, path: str | os.PathLike, verify: bool = True,
                 opener: Callable[[str], fileio.Source] = fileio.open_file) -> None:
        self.path = os.fspath(path)
        self.prefix = resolve_prefix(self.path)
        if is_v1_prefix(self.prefix):
            self.bundle = v1.V1Reader(self.prefix, verify=verify, opener=opener)
        else:
            self.bundle = BundleReader(self.prefix, verify=verify, opener=opener)
        self._objects = None
        self._names = None
        self._spare_listing = None  # (shapes or None, dtypes or None), see _listing
        # name -> (DType, shape) or None: bundle.tensor_info(), once something
        # needs every name, or once enough single lookups were made that one
        # scan of the index costs less than looking up the rest one by one.
        self._info: dict = {}     # empty until scanned: every lookup misses to `_entry`
        self._scanned = False
        self._lookups = 0
        self._scan_after = max(64, self.bundle.index_size() // _BYTES_PER_LOOKUP)

    # names
    def names(self) -> Names:
        """The `names.Names` of this checkpoint (built on first use)."""
        if self._names is None:
            from .names import Names, same_tensor
            self._names = Names.of_reader(self, same=lambda keys: same_tensor(self, keys))
        return self._names

    def key(self, name: str) -> str:
        """The checkpoint key `name` stands for: a key, an object path or a
        variable name (with or without `:0`). TensorNotFoundError when it names
        nothing (with the closest names), AmbiguousNameError when it names
        several different tensors. TypeError for a name that is no str, as in
        TensorFlow (and whichever format's reader is underneath)."""
        if not isinstance(name, str):
            raise TypeError(f"{self.prefix}: tensor names are str, not {type(name).__name__}")
        try:
            self.bundle.entry(name)   # exact keys: one lookup, no name index built
            return name
        except TensorNotFoundError:
            pass
        return self.names().resolve(name)

    # Mapping
    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.bundle.read(name)
        except TensorNotFoundError:
            if self.has_tensor(name):
                raise   # the key exists; something it needs (a part) does not
        # resolved outside the handler, so that its errors come without this one attached
        return self.bundle.read(self.key(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensor_info())  # in key order

    def __len__(self) -> int:
        return len(self._tensor_info())

    def __contains__(self, name: object) -> bool:
        try:
            if self._info[name] is not None:
                return True
        except (KeyError, TypeError):   # not scanned (yet), not a plain tensor, or unhashable
            pass
        return self.has_tensor(name)

    # cheap, index-only information. The fast path is a plain dict lookup of
    # the exact key; everything else takes `_entry`, the path that checks.
    # Only that path reads files, so only it serves the storage (fileio.storage_free).
    @fileio.storage_free
    def shape(self, name: str) -> list[int]:
        try:
            return list(self._info[name][1])
        except (KeyError, TypeError):
            return list(self._named_entry(name).shape)

    @fileio.storage_free
    def dtype(self, name: str) -> DType:
        try:
            return self._info[name][0]
        except (KeyError, TypeError):
            return self._named_entry(name).dtype

    def _tensor_info(self) -> dict:
        if not self._scanned:
            self._info = self.bundle.tensor_info()
            self._scanned = True
        return self._info

    def _entry(self, name: str) -> Entry:
        """bundle.entry(name) of an exact key, counting lookups until the index is scanned."""
        if not self._scanned:
            self._lookups += 1
            if self._lookups > self._scan_after:
                self._tensor_info()
        return self.bundle.entry(name)

    @fileio.bound_method
    def _named_entry(self, name: str) -> Entry:
        """_entry, or the entry of the key that another form of name stands for."""
        try:
            return self._entry(name)
        except TensorNotFoundError:
            pass
        return self.bundle.entry(self.key(name))

    def entry(self, name: str) -> Entry:
        try:
            return self.bundle.entry(name)
        except TensorNotFoundError:
            pass
        return self.bundle.entry(self.key(name))

    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        return self._listing(0)

    def get_variable_to_dtype_map(self) -> dict[str, DType]:
        return self._listing(1)

    def _listing(self, which):
        """One of the two listing maps. One pass over the index builds both; the
        other is kept and handed out by the next call that asks for it, so every
        caller still gets dicts of its own."""
        spare = self._spare_listing
        if spare is not None and spare[which] is not None:
            self._spare_listing = None
            return spare[which]
        maps = self.bundle.listing()
        self._spare_listing = (None, maps[1]) if which == 0 else (maps[0], None)
        return maps[which]

    def has_tensor(self, name: object) -> bool:
        """Whether `name` is a checkpoint key (exactly, as TensorFlow's reader
        answers; `key()` says what other names stand for)."""
        if not isinstance(name, str):
            return False
        try:
            self._entry(name)
        except KeyError:
            return False
        return True

    # data
    def get_tensor(self, name: str, copy: bool = False, device: str | None = None) -> Any:
        """The tensor `name` as numpy, or with `device="cuda:0"` as a CuPy array."""
        if device is not None:
            return _devices().to_device(self, self.key(name), device, verify=self.bundle.verify)
        try:
            return self.bundle.read(name, copy=copy)
        except TensorNotFoundError:
            if self.has_tensor(name):
                raise
        return self.bundle.read(self.key(name), copy=copy)

    def get_slice(self, name: str) -> TensorSlice:
        """A lazy handle: `reader.get_slice(name)[10:20]` reads only those bytes.
        It has numpy's `shape`, `dtype`, `ndim` and `size`, and `np.asarray(handle)`
        reads the whole tensor, so dask.array.from_array takes it as it is."""
        return TensorSlice(self.bundle, self.key(name))

    # object graph
    def object_graph(self) -> Any:
        """The TrackableObjectGraph proto, or None for a name-based checkpoint."""
        if OBJECT_GRAPH_KEY not in self:
            return None
        return parse_graph(self.bundle.read(OBJECT_GRAPH_KEY).item(), self.prefix)

    def object_variables(self) -> dict[str, ObjectVariable]:
        """key -> ObjectVariable for every key the object graph names, and for
        the suffixed keys of saveables with several tensors (`saveable_keys`)."""
        if self._objects is None:
            graph = self.object_graph()
            objects = {} if graph is None else object_variables(graph)
            if objects:
                names = list(self)   # in key order
                present = set(names)
                for key, var in list(objects.items()):
                    if key not in present:
                        for name in saveable_keys(key, names):
                            objects.setdefault(name, var._replace(key=name))
            self._objects = objects
        return self._objects

    def object_paths(self) -> dict[str, str]:
        """Object path (`model/layer_with_weights-0/kernel`) -> checkpoint key."""
        return {v.path: k for k, v in self.object_variables().items()
                if v.path is not None and v.attribute == VARIABLE_VALUE}

    def close(self) -> None:
        self.bundle.close()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self):
        return f"<CheckpointReader {self.prefix!r}>"


class TensorSlice:
    """Returned by `get_slice`: index it to read part of a tensor.

    An array-like for numpy and dask: `shape` (a tuple), `dtype` (a numpy
    dtype), `ndim`, `size`, `len()`, and `__array__` reading the whole
    tensor. `tf_dtype` is the tensor's TensorFlow dtype (a tfformats DType).
    """

    def __init__(self, bundle: TensorStore, name: str) -> None:
        self._bundle = bundle
        self.name = name

    @property
    def _entry(self) -> Entry:
        return self._bundle.entry(self.name)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._entry.shape)

    @property
    def tf_dtype(self) -> DType:
        return self._entry.dtype

    @property
    def dtype(self) -> np.dtype:
        tf_dtype = self._entry.dtype
        if tf_dtype.is_string:
            return np.dtype(object)
        if tf_dtype.as_numpy_dtype is None:
            raise UnsupportedError(f"{self._bundle.prefix}: tensor {self.name!r} has dtype "
                                   f"{tf_dtype.name}, which has no array form")
        return np.dtype(tf_dtype.as_numpy_dtype)

    @property
    def ndim(self) -> int:
        return len(self._entry.shape)

    @property
    def size(self) -> int:
        return math.prod(self._entry.shape)

    def __len__(self) -> int:
        shape = self._entry.shape
        if not shape:
            raise TypeError("len() of a scalar tensor")
        return shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        return self._bundle.read_region(self.name, index)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self._bundle.read(self.name, copy=bool(copy))   # a view unless asked
        return array if dtype is None else array.astype(dtype, copy=False)

    def __repr__(self) -> str:
        entry = self._entry
        return (f"<TensorSlice {self.name!r} shape={list(entry.shape)} "
                f"dtype={entry.dtype.name}>")


# The file names that hold a GraphDef for tfformats.graph.GraphReader (and the command line):
# frozen graphs, text graphs and MetaGraphDefs. The SavedModel's own files are
# SavedModels, not graph files.
_GRAPH_SUFFIXES = (".pb", ".pbtxt", ".meta", ".graphdef", ".prototxt")
_NOT_GRAPHS = ("saved_model.pb", "saved_model.pbtxt", "fingerprint.pb", "keras_metadata.pb")


def is_graph_path(path: str | os.PathLike) -> bool:
    """Whether `path` names a graph file by its name: `.pb`, `.pbtxt`, `.meta`, ...
    other than a SavedModel's own files."""
    name = os.path.basename(os.fspath(path)).lower()
    return name.endswith(_GRAPH_SUFFIXES) and name not in _NOT_GRAPHS


@fileio.with_storage
def open_checkpoint(path: str | os.PathLike, verify: bool = True
                    ) -> CheckpointReader | KerasReader | GraphReader:
    """Open any checkpoint path form; see `resolve_prefix`. A Keras file
    (`.keras`, `.weights.h5`, `.h5`) opens as a `tfformats.keras.KerasReader`,
    a graph file (a frozen GraphDef `.pb`/`.pbtxt`, a MetaGraphDef `.meta`) as
    a `tfformats.graph.GraphReader` of its constants."""
    from . import keras
    if keras.is_keras_path(path) and fileio.isfile(path):
        return keras.KerasReader(path, verify=verify)
    if is_graph_path(path) and fileio.isfile(path):
        from .graph import GraphReader   # protobuf: imported only for a graph
        return GraphReader(path, verify=verify)
    return CheckpointReader(path, verify=verify)


@fileio.with_storage
def load_tensors(path: str | os.PathLike, names: str | Iterable[str] | None = None,
                 verify: bool = True, copy: bool = True, device: str | None = None,
                 skip_unsupported: bool = False, include_object_graph: bool = False,
                 progress: bool | Callable[..., Any] = False) -> dict[str, Any]:
    """Tensors of a checkpoint as a dict of numpy arrays: private and writable
    by default (`copy=True`; without copying a local file's bytes up front,
    see docs/dlpack.md), read-only views with `copy=False`.

    (`tfformats.load_checkpoint` is TensorFlow's: it returns a reader; see
    tfformats/train.py.) `names` picks tensors by checkpoint key, object
    path or variable name (tfformats/names.py); the dict is keyed by what
    was asked for. Without `names`, every tensor, keyed by checkpoint key,
    except `_CHECKPOINTABLE_OBJECT_GRAPH` (serialized proto bytes, no
    weight) unless `include_object_graph=True`.
    Tensors no numpy array can hold (DT_VARIANT, e.g. a tf.data iterator's
    state; DT_RESOURCE) raise UnsupportedError, or are left out with
    `skip_unsupported=True`. With `device="cuda:0"` numeric tensors are CuPy
    arrays on that GPU (string tensors stay numpy); see `tfformats.cuda.load`.
    `progress` (False, True or a callable; see tfformats.progress) counts the
    bytes read, on the host.
    """
    if device is not None:
        return _devices().load(path, device, verify=verify, skip_unsupported=skip_unsupported,
                               names=names, include_object_graph=include_object_graph)
    with CheckpointReader(path, verify=verify) as reader:
        wanted = selected_tensors(reader, names, include_object_graph)
        skip = unsupported_tensors(reader, skip_unsupported, set(wanted.values()))
        wanted = {asked: key for asked, key in wanted.items() if key not in skip}
        sizes = [tensor_nbytes(reader, key) for key in wanted.values()]
        tensors = {}
        # This reader is ours alone, and so are its copy-on-write maps: private
        # writable arrays can be views of them, pages copied only when written
        # (docs/dlpack.md). V1 values live inside protos: copied.
        private = getattr(reader.bundle, "read_private", None) if copy else None
        with bar(progress, sum(sizes), f"loading {os.path.basename(reader.prefix)}") as shown:
            keys = prefetched(reader, list(wanted.values()))   # remote: fetched ahead
            for (asked, key), _, size in zip(wanted.items(), keys, sizes):
                tensors[asked] = (private(key) if private is not None
                                  else reader.get_tensor(key, copy=copy))
                shown.update(size)
        return tensors


# A remote checkpoint read whole fetches the next tensors this many bytes at a time.
PREFETCH_BYTES = 64 << 20


def prefetched(reader: CheckpointReader, names: list[str],
               window: int = PREFETCH_BYTES) -> Iterator[str]:
    """`names`, in order; before handing out each window of up to `window`
    bytes of a remote checkpoint, its tensors' bytes are fetched together
    (concurrent coalesced ranges), so reading them costs one round trip, not
    one each, and the next window's fetch starts, so that it arrives while
    the caller checks and decodes this one (two windows at a time: see
    tfformats/remote.py). Local checkpoints (memory maps) need nothing of
    the kind."""
    prefetch = getattr(getattr(reader, "bundle", None), "prefetch", None)   # Keras: none
    if prefetch is None or not fileio.is_url(reader.prefix):
        yield from names
        return
    start = 0
    fetched: list[str] = []   # the window whose fetch started before the last one
    while start < len(names):
        end, total = start, 0
        entries: list = []
        while end < len(names):
            entry = reader.entry(names[end])
            if entries and total + entry.size > window:
                break
            entries.append(entry)
            total += entry.size
            end += 1
        prefetch(entries)
        yield from fetched
        fetched = names[start:end]
        start = end
    yield from fetched


def selected_tensors(reader: CheckpointReader, names: str | Iterable[str] | None = None,
                     include_object_graph: bool = False) -> dict[str, str]:
    """{name as asked: checkpoint key} for `load_tensors` and the converters:
    `names` resolved (a str is one name), or every key, the object graph only
    when `include_object_graph`."""
    if names is None:
        return {key: key for key in reader
                if include_object_graph or key != OBJECT_GRAPH_KEY}
    if isinstance(names, str):
        names = [names]
    return {name: reader.key(name) for name in names}


def tensor_nbytes(reader: CheckpointReader, name: str) -> int:
    """The bytes a tensor's values take as an array, from the index alone (0 for
    strings and variants, whose size the index does not say): what progress counts."""
    itemsize = reader.dtype(name).itemsize
    return math.prod(reader.shape(name)) * itemsize if itemsize else 0


def unsupported_tensors(reader: CheckpointReader, skip: bool,
                        among: set[str] | None = None) -> set[str]:
    """Names of the tensors with no array form (variant, resource), of all or
    of the keys `among`: returned when `skip` is true, else UnsupportedError
    naming the first."""
    names = {name: dtype for name, dtype in reader.get_variable_to_dtype_map().items()
             if dtype.as_numpy_dtype is None and (among is None or name in among)}
    if names and not skip:
        name = min(names)
        raise UnsupportedError(
            f"{reader.prefix}: tensor {name!r} has dtype {names[name].name}, which has "
            "no array form (TensorFlow's reader cannot return it either); pass "
            "skip_unsupported=True to load the other tensors")
    return set(names)
