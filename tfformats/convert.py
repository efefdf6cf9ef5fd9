"""Converting checkpoints to and from safetensors and `.npz`, keeping names and dtypes,
and rewriting any checkpoint (a TF1 V1 one included) as a V2 tensor bundle.

The object graph is carried along (safetensors metadata, an extra `.npz`
member), so a checkpoint converted there and back still restores in
TensorFlow. String tensors have no place in either format: they raise
`UnsupportedError` naming the tensor, or are skipped and reported with
`skip_unsupported=True`. Every converter takes `progress` (False, True or
a callable; see tfformats.progress), counting the tensor bytes read.

The safetensors layout (8-byte little-endian header length, JSON header,
packed data) is written and read here directly: that keeps bfloat16 and
float8 independent of the installed `safetensors` release, streams tensors
of any size without holding them in memory, and needs no extra package.
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import tokenize
import zipfile
import zlib
from typing import Any, Callable, Iterable

import numpy as np

from . import dtypes, fileio, slices
from .checkpoint import CheckpointReader, is_graph_path, prefetched, selected_tensors, tensor_nbytes
from .errors import CheckpointNotFoundError, FormatError, UnsupportedError
from .fileio import replaced_atomically
from .objgraph import ATTRIBUTES, OBJECT_GRAPH_KEY, build_object_graph
from .progress import bar
from .writer import BundleWriter, save_checkpoint, stored_pieces

# TensorFlow dtype name <-> safetensors dtype string (same bit layout).
_SAFETENSORS = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
    "float8_e5m2": "F8_E5M2", "float8_e4m3fn": "F8_E4M3", "complex64": "C64",
}
_FROM_SAFETENSORS = {v: k for k, v in _SAFETENSORS.items()}
_GRAPH_METADATA = "tfformats.object_graph"   # base64 TrackableObjectGraph
_NPZ_DTYPES = "__tfformats_dtypes__"         # JSON name -> TF dtype name
_NPZ_GRAPH = "__tfformats_object_graph__"    # uint8 TrackableObjectGraph bytes
_METADATA = "__metadata__"                   # safetensors' reserved header key
_MAX_HEADER = 100_000_000                    # safetensors' own limit
# Deflate expands data at most about 1032 times: a zip member claiming more
# than that over its stored bytes is lying about its size.
_MAX_ZIP_RATIO = 1032
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}


def _unsupported(name, why, skip, skipped):
    if not skip:
        raise UnsupportedError(f"tensor {name!r}: {why}; pass skip_unsupported=True to "
                               "leave it out")
    skipped.append(name)


def _open_reader(src, keras_names=True):
    """The reader of `src`: a checkpoint, a graph file's constants
    (tfformats.graph), or a Keras file by its variable names (tfformats.keras,
    which also converts Keras files to checkpoints: without `keras_names`, a
    Keras file is opened as a checkpoint, which it is not, and refused)."""
    from . import graph, keras
    if keras_names and keras.is_keras_path(src) and fileio.isfile(src):
        return keras.by_variable_name(src)
    if is_graph_path(src) and fileio.isfile(src):
        return graph.GraphReader(src)
    return CheckpointReader(src)


def _reading(reader, src, progress, keys=None):
    """A progress bar over the bytes of the tensors `keys` (all) of `reader`."""
    total = sum(tensor_nbytes(reader, name) for name in (reader if keys is None else keys))
    return bar(progress, total, f"converting {os.path.basename(os.fspath(src))}")


def _write_back(dst_prefix, tensors, graph, kinds=None, progress=False):
    """save_checkpoint, building an object graph only if the names are object keys."""
    object_keys = bool(tensors) and all(ATTRIBUTES in n for n in tensors)
    if graph is not None:
        tensors[OBJECT_GRAPH_KEY] = graph
    return save_checkpoint(dst_prefix, tensors, object_graph=object_keys, dtypes=kinds,
                           progress=progress)


# --- checkpoint -> V2 checkpoint ----------------------------------------------------

def selected_keys(reader: CheckpointReader, names: str | Iterable[str] | None) -> list[str]:
    """The checkpoint keys to convert, in key order: all of them (the object
    graph included, to be carried along), or those `names` stand for (keys,
    object paths or variable names, see tfformats/names.py)."""
    if names is None:
        return list(reader)
    return sorted(set(selected_tensors(reader, names).values()))


@fileio.with_storage
def checkpoint_to_checkpoint(src: str | os.PathLike, dst_prefix: str | os.PathLike, *,
                             names: str | Iterable[str] | None = None,
                             skip_unsupported: bool = False,
                             progress: bool | Callable[..., Any] = False) -> list[str]:
    """Rewrite checkpoint `src` (any form tfformats reads, a TF1 V1 file too)
    as the V2 bundle `dst_prefix`: same keys, dtypes and values, partitioned
    tensors stored as the same parts, the object graph carried as it is.
    `names` keeps only the tensors named; unless it names the object graph,
    a selection of object-based variables gets a graph of its own (of their
    object paths, with their TF1 names), so that TensorFlow restores it.
    Tensors with no values to copy (DT_VARIANT) raise UnsupportedError or are
    skipped with `skip_unsupported=True`; returns the names skipped.
    """
    skipped: list[str] = []
    with _open_reader(src, keras_names=False) as reader:
        keys = selected_keys(reader, names)
        with BundleWriter(dst_prefix) as writer, _reading(reader, src, progress, keys) as shown:
            _copy_tensors(reader, writer, keys, skip_unsupported, skipped, shown)
            if names is not None:
                add_selection_graph(writer, reader, [k for k in keys if k not in skipped])
    return skipped


def add_selection_graph(writer: BundleWriter, reader: CheckpointReader, keys: list[str]) -> None:
    """Write the object graph of a checkpoint holding only `keys` of `reader`
    (their object paths, with their TF1 names); nothing when the keys name
    the graph themselves, are not all object-based, or `reader` has none."""
    if (not keys or OBJECT_GRAPH_KEY in keys or not all(ATTRIBUTES in k for k in keys)
            or OBJECT_GRAPH_KEY not in reader):
        return
    variables = reader.object_variables()
    full_names = {k: variables[k].full_name for k in keys
                  if k in variables and variables[k].full_name}
    graph = build_object_graph(keys, full_names)[0]
    writer.add(OBJECT_GRAPH_KEY, np.array(graph.SerializeToString(), dtype=object))


def _copy_tensors(reader, writer, keys, skip_unsupported, skipped, shown):
    for name in prefetched(reader, keys):
        entry = reader.entry(name)
        if not copyable(name, entry, skip_unsupported, skipped):
            continue
        put_tensor(writer, name, entry, reader.get_tensor(name))
        shown.update(tensor_nbytes(reader, name))


def copyable(name: str, entry: Any, skip_unsupported: bool, skipped: list[str]) -> bool:
    """Whether tensor `name` (its index `entry`) has values to copy into a
    bundle; a DT_VARIANT one raises UnsupportedError, or is added to `skipped`."""
    if entry.dtype.as_numpy_dtype is None:
        _unsupported(name, f"{entry.dtype.name} tensors have no values tfformats "
                     "can copy", skip_unsupported, skipped)
        return False
    return True


def put_tensor(writer: BundleWriter, name: str, entry: Any, value: Any) -> None:
    """Write `value`, tensor `name` of a checkpoint, as its index `entry` stored
    it: one tensor, or the same parts of a partitioned one."""
    if not entry.slices:
        writer.add(name, value, dtype=entry.dtype)
    for extents in entry.slices:
        part = value[slices.index(slices.resolve(extents, entry.shape))]
        writer.add_slice(name, entry.shape, extents, part, dtype=entry.dtype)


# --- safetensors ------------------------------------------------------------------

@fileio.with_storage
def checkpoint_to_safetensors(src: str | os.PathLike, dst: str | os.PathLike, *,
                              names: str | Iterable[str] | None = None,
                              skip_unsupported: bool = False,
                              progress: bool | Callable[..., Any] = False) -> list[str]:
    """Write every tensor of checkpoint `src` (or those `names` stand for: keys,
    object paths or variable names) into the safetensors file `dst`, keyed by
    checkpoint key. The object graph goes into the metadata, not among the tensors.

    Returns the names skipped (only with `skip_unsupported=True`).
    """
    skipped: list[str] = []
    with _open_reader(src) as reader:
        header, names = safetensors_layout(reader, selected_keys(reader, names), src,
                                           skip_unsupported, skipped)
        with _reading(reader, src, progress, names) as shown:
            def pieces():
                for name in prefetched(reader, names):
                    # little-endian on any host, one bounded piece at a time
                    yield from stored_pieces(reader[name], reader.dtype(name))
                    shown.update(tensor_nbytes(reader, name))
            write_safetensors(dst, header, pieces())
    return skipped


def safetensors_layout(reader: Any, keys: list[str], src: str | os.PathLike,
                       skip_unsupported: bool, skipped: list[str]) -> tuple[bytes, list[str]]:
    """(the encoded header, the names whose data follows it, in order) of the
    safetensors file holding tensors `keys` of `reader`; names safetensors
    cannot hold raise UnsupportedError or go to `skipped`. Only the object
    graph (for the metadata) is read, the rest comes from the index."""
    header: dict[str, Any] = {}
    names: list[str] = []
    offset = 0
    metadata = {}
    for name in keys:
        dtype = reader.dtype(name)
        if name == OBJECT_GRAPH_KEY:
            metadata[_GRAPH_METADATA] = base64.b64encode(reader[name].item()).decode()
            continue
        if name == _METADATA:
            _unsupported(name, "safetensors reserves that name for its metadata",
                         skip_unsupported, skipped)
            continue
        if dtype.name not in _SAFETENSORS:
            _unsupported(name, f"safetensors has no {dtype.name} dtype", skip_unsupported,
                         skipped)
            continue
        if not _encodable(name):   # a key of bytes that are not UTF-8
            _unsupported(name, f"{src}: safetensors names are UTF-8 text, this is not",
                         skip_unsupported, skipped)
            continue
        shape = reader.shape(name)
        size = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": _SAFETENSORS[dtype.name], "shape": shape,
                        "data_offsets": [offset, offset + size]}
        names.append(name)
        offset += size
    if metadata:
        header[_METADATA] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned
    return encoded, names


def write_safetensors(dst: str | os.PathLike, header: bytes, pieces: Iterable[Any]) -> None:
    """Write the safetensors file `dst`: the `header` of `safetensors_layout`,
    then the tensors' stored bytes as `pieces` yields them. The file appears
    only once complete (an error leaves no file, and an older one untouched)."""
    with replaced_atomically(os.fspath(dst)) as temp, fileio.create(temp) as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for piece in pieces:
            f.write(piece)


def _safetensors_header(path, buf):
    """(tensor entries, metadata, where the data starts) of a safetensors file."""
    where = f"{path}: safetensors header"
    if len(buf) < 8:
        raise FormatError(f"{where}: file of {len(buf)} bytes is too short")
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > _MAX_HEADER:
        raise FormatError(f"{where}: claims {n} bytes, more than the limit of {_MAX_HEADER}")
    if n > len(buf) - 8:
        raise FormatError(f"{where}: claims {n} bytes, the file has {len(buf) - 8} after it")
    try:
        header = json.loads(bytes(buf[8:8 + n]))
    except (ValueError, RecursionError) as exc:  # deep nesting raises RecursionError
        raise FormatError(f"{where}: not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{where}: not a JSON object")
    metadata = header.pop(_METADATA, None) or {}
    if not isinstance(metadata, dict):
        raise FormatError(f"{where}: {_METADATA} is not a JSON object")
    return header, metadata, 8 + n


def _encodable(name):
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_offsets(path, header, data_size):
    """The tensors' bytes follow each other with no overlap and no gap and fill
    the file, as the reference loader requires (it refuses other files): two
    names over the same bytes would alias each other."""
    end = 0
    for name, (begin, stop) in sorted(((n, tuple(i["data_offsets"])) for n, i in header.items()),
                                      key=lambda item: item[1]):
        if begin != end:
            raise FormatError(f"{path}: tensor {name!r}: its bytes {begin}..{stop} "
                              f"{'overlap those before' if begin < end else 'leave a gap after'}"
                              f" byte {end}")
        end = stop
    if end != data_size:
        raise FormatError(f"{path}: the tensors end at byte {end} of the {data_size} data bytes")


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _safetensors_tensor(buf, start, info, where):
    """The tensor a header entry describes: a view of `buf`, its bounds checked."""
    try:
        kind, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    except (KeyError, TypeError):
        raise FormatError(f"{where}: header entry {info!r:.200} needs dtype, shape and "
                          "data_offsets") from None
    if not isinstance(kind, str) or kind not in _FROM_SAFETENSORS:
        raise FormatError(f"{where}: dtype {kind!r:.100} is not one of "
                          f"{', '.join(_FROM_SAFETENSORS)}")
    if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
        raise FormatError(f"{where}: shape {shape!r:.200} is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
        raise FormatError(f"{where}: data_offsets {offsets!r:.200} is not a [begin, end] pair")
    dtype = dtypes.BY_NAME[_FROM_SAFETENSORS[kind]]
    begin, end = offsets
    count = math.prod(shape)
    if not 0 <= begin <= end <= len(buf) - start or end - begin != count * dtype.itemsize:
        raise FormatError(f"{where}: {dtype.name}{shape!s:.200} does not match bytes "
                          f"{begin}..{end} of {len(buf) - start}")
    numpy_dtype = dtype.as_numpy_dtype.newbyteorder("<")
    try:
        flat = np.frombuffer(buf, numpy_dtype, count, start + begin) if count else \
            np.empty(0, numpy_dtype)
        return flat.reshape(shape)
    except ValueError as exc:  # e.g. an empty shape numpy cannot represent
        raise FormatError(f"{where}: shape {shape!s:.200}: {exc}") from None


@fileio.with_storage
def safetensors_to_checkpoint(src: str | os.PathLike, dst_prefix: str | os.PathLike, *,
                              progress: bool | Callable[..., Any] = False) -> str:
    """Write every tensor of the safetensors file `src` as a checkpoint at `dst_prefix`.

    The object graph recorded by `checkpoint_to_safetensors` is restored;
    otherwise one is built when all names are object keys (".../.ATTRIBUTES/...").
    """
    path = os.fspath(src)
    source = fileio.open_file(path)
    buf = source.view(0, source.size())
    header, metadata, start = _safetensors_header(path, buf)
    for name in header:
        if not _encodable(name):   # JSON can escape a lone surrogate; a key cannot hold it
            raise FormatError(f"{path}: tensor name {name!r:.200} is not valid UTF-8")
    tensors = {name: _safetensors_tensor(buf, start, info, f"{path}: tensor {name!r}")
               for name, info in header.items()}
    _check_offsets(path, header, len(buf) - start)
    graph = metadata.get(_GRAPH_METADATA)
    if graph is not None:
        try:
            graph = base64.b64decode(graph, validate=True)
        except (TypeError, ValueError):  # binascii.Error is a ValueError
            raise FormatError(f"{path}: metadata {_GRAPH_METADATA!r} is not base64") from None
    return _write_back(dst_prefix, tensors, graph, progress=progress)


# --- npz --------------------------------------------------------------------------

def _write_npz(dst, arrays):
    """np.savez(dst, **arrays), written under a temporary name and renamed.

    np.savez itself cannot store tensors named "file" or "allow_pickle"
    (they collide with its own arguments).
    """
    dst = os.fspath(dst)
    if not dst.endswith(".npz"):
        dst += ".npz"  # as np.savez does
    with replaced_atomically(dst) as temp, fileio.create(temp) as file:
        with zipfile.ZipFile(file, "w", allowZip64=True) as archive:
            for name, array in arrays.items():
                with archive.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, array, allow_pickle=False)


@fileio.with_storage
def checkpoint_to_npz(src: str | os.PathLike, dst: str | os.PathLike, *,
                      names: str | Iterable[str] | None = None,
                      skip_unsupported: bool = False,
                      progress: bool | Callable[..., Any] = False) -> list[str]:
    """Write every tensor of checkpoint `src` (or those `names` stand for: keys,
    object paths or variable names) into the `.npz` file `dst`, keyed by
    checkpoint key; the object graph is kept in a member of its own.

    numpy cannot name bfloat16, float8 or int4 in `.npy` headers, and knows
    no qint types, so each tensor's TensorFlow dtype is recorded alongside.
    Returns the names skipped (only with `skip_unsupported=True`).
    """
    skipped: list[str] = []
    with _open_reader(src) as reader:
        keys = selected_keys(reader, names)
        with _reading(reader, src, progress, keys) as shown:
            _npz_members(reader, keys, dst, skip_unsupported, skipped, shown)
    return skipped


def _npz_members(reader, keys, dst, skip_unsupported, skipped, shown):
    arrays, kinds = {}, {}
    for name in prefetched(reader, keys):
        dtype = reader.dtype(name)
        if name == OBJECT_GRAPH_KEY:
            arrays[_NPZ_GRAPH] = np.frombuffer(reader[name].item(), np.uint8)
        elif dtype.is_string or dtype.as_numpy_dtype is None:
            _unsupported(name, f"{dtype.name} tensors cannot be stored in .npz without "
                         "pickle", skip_unsupported, skipped)
        else:
            array = reader[name]
            kinds[name] = dtype.name
            # ml_dtypes types are user-defined (isbuiltin 2), and .npy
            # cannot name them: store their bit patterns.
            if array.dtype.isbuiltin != 1:
                array = array.view(f"u{array.itemsize}")
            arrays[name] = array
            shown.update(tensor_nbytes(reader, name))
    arrays[_NPZ_DTYPES] = np.array(json.dumps(kinds))
    _write_npz(dst, arrays)


# What zipfile (and zlib under it) raise for a damaged or unsupported archive,
# besides BadZipFile: NotImplementedError (unknown compression method or zip
# version), RuntimeError (an encrypted member), zlib.error (corrupt deflate
# data), OSError (a member offset before the start of the file: seek fails),
# EOFError and ValueError (truncated data). Found by fuzzing (docs/fuzzing.md).
_ZIP_ERRORS = (zipfile.BadZipFile, ValueError, EOFError, OSError, RuntimeError, zlib.error)
# ... and numpy, for a `.npy` header it cannot tokenize (a TokenError, which
# is no ValueError, after the SyntaxError its first attempt hit).
_NPY_ERRORS = _ZIP_ERRORS + (tokenize.TokenError, SyntaxError)


def _npz_arrays(path):
    """name -> array for each member of the `.npz` at `path`.

    Each member's `.npy` header is checked against the member's size before
    the array is allocated, so a small file cannot ask for a huge one.
    """
    try:
        file = fileio.open_input(path)
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: no such file") from None
    try:
        archive = zipfile.ZipFile(file)
    except _ZIP_ERRORS as exc:
        file.close()
        raise FormatError(f"{path}: not a .npz file ({exc})") from None
    file_size = fileio.size(path)
    arrays = {}
    with file, archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise FormatError(f"{path}: member {info.filename!r:.200} is not a .npy array")
            name = info.filename[:-len(".npy")]
            where = f"{path}: array {name!r}"
            if info.flag_bits & 0x1:   # zipfile would ask for a password (RuntimeError)
                raise UnsupportedError(f"{where}: the member is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                # np.savez writes these two; others may lack a decoder (NotImplementedError)
                raise UnsupportedError(f"{where}: zip compression method {info.compress_type}")
            try:
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in _NPY_HEADER_READERS:
                        raise UnsupportedError(f"{where}: .npy format version {version}")
                    shape, _, dtype = _NPY_HEADER_READERS[version](f)
            except UnsupportedError:
                raise
            except _NPY_ERRORS as exc:
                raise FormatError(f"{where}: bad .npy header ({exc})") from None
            nbytes = math.prod(shape) * dtype.itemsize
            if (nbytes > info.file_size or info.compress_size > file_size
                    or info.file_size > _MAX_ZIP_RATIO * info.compress_size):
                raise FormatError(f"{where}: {dtype}{list(shape)} needs {nbytes} bytes; the "
                                  f"member claims {info.file_size} from {info.compress_size}")
            try:
                with archive.open(info) as f:
                    arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
            except _NPY_ERRORS as exc:  # pickles included (ValueError)
                raise FormatError(f"{where}: {exc}") from None
    return arrays


def _recorded_dtypes(path, record):
    """The name -> TensorFlow dtype name map that checkpoint_to_npz stores."""
    kinds = None
    if record.dtype.kind == "U" and record.shape == ():
        try:
            kinds = json.loads(record.item())
        except (ValueError, RecursionError):
            pass
    if not (isinstance(kinds, dict) and all(isinstance(k, str) for k in kinds.values())):
        raise FormatError(f"{path}: {_NPZ_DTYPES} is not a JSON object of dtype names")
    return kinds


def _as_recorded(array, kind, where):
    """`array` as the TensorFlow dtype `kind` that checkpoint_to_npz recorded for it."""
    try:
        want = dtypes.as_dtype(kind).as_numpy_dtype
    except UnsupportedError:
        raise FormatError(f"{where}: recorded dtype {kind!r:.100} is not a TensorFlow "
                          "dtype") from None
    if want is None or want.hasobject:
        raise FormatError(f"{where}: recorded dtype {kind} cannot come from a .npz file")
    if not array.dtype.isnative:  # a view below must not reinterpret swapped bytes
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype == want:
        return array
    if want.isbuiltin != 1 and array.dtype == np.dtype(f"u{want.itemsize}"):
        return array.view(want)  # the bit patterns of an ml_dtypes type
    raise FormatError(f"{where}: an array of {array.dtype} cannot hold {kind} values")


@fileio.with_storage
def npz_to_checkpoint(src: str | os.PathLike, dst_prefix: str | os.PathLike, *,
                      progress: bool | Callable[..., Any] = False) -> str:
    """Write every array of the `.npz` file `src` as a checkpoint at `dst_prefix`.

    Dtypes recorded by `checkpoint_to_npz` are restored; other arrays keep
    the dtype numpy reports. Object graphs are handled as for safetensors.
    """
    path = os.fspath(src)
    tensors = _npz_arrays(path)
    record = tensors.pop(_NPZ_DTYPES, None)
    kinds = {} if record is None else _recorded_dtypes(path, record)
    graph = tensors.pop(_NPZ_GRAPH, None)
    graph = None if graph is None else graph.tobytes()
    for name, kind in kinds.items():
        if name in tensors:
            tensors[name] = _as_recorded(tensors[name], kind, f"{path}: array {name!r}")
    return _write_back(dst_prefix, tensors, graph, kinds, progress)
