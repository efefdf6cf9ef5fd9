"""Converting checkpoints to and from safetensors and `.npz`, keeping names and dtypes.

The object graph is carried along (safetensors metadata, an extra `.npz`
member), so a checkpoint converted there and back still restores in
TensorFlow. String tensors have no place in either format: they raise
`UnsupportedError` naming the tensor, or are skipped and reported with
`skip_unsupported=True`.

The safetensors layout (8-byte little-endian header length, JSON header,
packed data) is written and read here directly: that keeps bfloat16 and
float8 independent of the installed `safetensors` release, streams tensors
of any size without holding them in memory, and needs no extra package.
"""

import base64
import json
import math
import mmap
import os
import struct

import numpy as np

from . import dtypes
from .checkpoint import OBJECT_GRAPH_KEY, CheckpointReader
from .errors import CheckpointNotFoundError, FormatError, UnsupportedError
from .writer import save_checkpoint

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
_MAX_HEADER = 100_000_000                    # safetensors' own limit


def _unsupported(name, why, skip, skipped):
    if not skip:
        raise UnsupportedError(f"tensor {name!r}: {why}; pass skip_unsupported=True to "
                               "leave it out")
    skipped.append(name)


def _write_back(dst_prefix, tensors, graph, kinds=None):
    """save_checkpoint, building an object graph only if the names are object keys."""
    object_keys = bool(tensors) and all("/.ATTRIBUTES/" in n for n in tensors)
    if graph is not None:
        tensors[OBJECT_GRAPH_KEY] = graph
    return save_checkpoint(dst_prefix, tensors, object_graph=object_keys, dtypes=kinds)


# --- safetensors ------------------------------------------------------------------

def checkpoint_to_safetensors(src, dst, *, skip_unsupported=False):
    """Write every tensor of checkpoint `src` into the safetensors file `dst`.

    Returns the names skipped (only with `skip_unsupported=True`).
    """
    skipped = []
    with CheckpointReader(src) as reader:
        header, names, offset = {}, [], 0
        metadata = {}
        for name in sorted(reader):
            dtype = reader.dtype(name)
            if name == OBJECT_GRAPH_KEY:
                metadata[_GRAPH_METADATA] = base64.b64encode(reader[name].item()).decode()
                continue
            if dtype.name not in _SAFETENSORS:
                _unsupported(name, f"safetensors has no {dtype.name} dtype", skip_unsupported,
                             skipped)
                continue
            shape = reader.shape(name)
            size = math.prod(shape) * dtype.itemsize
            header[name] = {"dtype": _SAFETENSORS[dtype.name], "shape": shape,
                            "data_offsets": [offset, offset + size]}
            names.append(name)
            offset += size
        if metadata:
            header["__metadata__"] = metadata
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned
        temp = f"{dst}.tmp{os.getpid()}"
        try:
            with open(temp, "wb") as f:
                f.write(struct.pack("<Q", len(encoded)))
                f.write(encoded)
                for name in names:
                    f.write(np.ascontiguousarray(reader[name]).reshape(-1).view(np.uint8))
            os.replace(temp, dst)
        except BaseException:
            if os.path.exists(temp):
                os.remove(temp)
            raise
    return skipped


def _safetensors_header(path, buf):
    where = f"{path}: safetensors header"
    if len(buf) < 8:
        raise FormatError(f"{where}: file of {len(buf)} bytes is too short")
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > min(_MAX_HEADER, len(buf) - 8):
        raise FormatError(f"{where}: claims {n} bytes, the file has {len(buf) - 8} after it")
    try:
        header = json.loads(bytes(buf[8:8 + n]))
    except ValueError as exc:
        raise FormatError(f"{where}: not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{where}: not a JSON object")
    return header, 8 + n


def safetensors_to_checkpoint(src, dst_prefix):
    """Write every tensor of the safetensors file `src` as a checkpoint at `dst_prefix`.

    The object graph recorded by `checkpoint_to_safetensors` is restored;
    otherwise one is built when all names are object keys (".../.ATTRIBUTES/...").
    """
    path = os.fspath(src)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: no such file") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    header, start = _safetensors_header(path, buf)
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        where = f"{path}: tensor {name!r}"
        try:
            dtype = dtypes.BY_NAME[_FROM_SAFETENSORS[info["dtype"]]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{where}: unsupported or malformed header entry {info!r}") from None
        count = math.prod(shape)
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= len(buf) - start or \
                end - begin != count * dtype.itemsize:
            raise FormatError(f"{where}: {dtype.name}{shape} does not match bytes "
                              f"{begin}..{end} of {len(buf) - start}")
        tensors[name] = np.frombuffer(buf, dtype.as_numpy_dtype, count, start + begin
                                      ).reshape(shape) if count else np.empty(shape, dtype.as_numpy_dtype)
    graph = metadata.get(_GRAPH_METADATA)
    graph = None if graph is None else base64.b64decode(graph)
    return _write_back(dst_prefix, tensors, graph)


# --- npz --------------------------------------------------------------------------

def checkpoint_to_npz(src, dst, *, skip_unsupported=False):
    """Write every tensor of checkpoint `src` into the `.npz` file `dst`.

    numpy cannot name bfloat16, float8 or int4 in `.npy` headers, and knows
    no qint types, so each tensor's TensorFlow dtype is recorded alongside.
    Returns the names skipped (only with `skip_unsupported=True`).
    """
    skipped = []
    with CheckpointReader(src) as reader:
        arrays, kinds = {}, {}
        for name in reader:
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
                arrays[name] = array if array.dtype.isbuiltin == 1 else array.view(f"u{array.itemsize}")
        arrays[_NPZ_DTYPES] = np.array(json.dumps(kinds))
        np.savez(dst, **arrays)
    return skipped


def npz_to_checkpoint(src, dst_prefix):
    """Write every array of the `.npz` file `src` as a checkpoint at `dst_prefix`.

    Dtypes recorded by `checkpoint_to_npz` are restored; other arrays keep
    the dtype numpy reports. Object graphs are handled as for safetensors.
    """
    with np.load(os.fspath(src), allow_pickle=False) as npz:
        kinds = json.loads(str(npz[_NPZ_DTYPES])) if _NPZ_DTYPES in npz.files else {}
        graph = npz[_NPZ_GRAPH].tobytes() if _NPZ_GRAPH in npz.files else None
        tensors = {}
        for name in npz.files:
            if name in (_NPZ_DTYPES, _NPZ_GRAPH):
                continue
            array = npz[name]
            if name in kinds:
                want = dtypes.as_dtype(kinds[name]).as_numpy_dtype
                if array.dtype != want:  # bit patterns of an ml_dtypes type
                    if array.dtype.itemsize != want.itemsize:
                        raise FormatError(f"{src}: array {name!r} of {array.dtype} cannot hold "
                                          f"{kinds[name]} values")
                    array = array.view(want)
            tensors[name] = array
    return _write_back(dst_prefix, tensors, graph, kinds)
