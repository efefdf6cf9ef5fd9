"""TensorProto <-> numpy, for every dtype TensorFlow can put in a TensorProto.

A TensorProto holds its values either as `tensor_content` (the raw
little-endian buffer) or in the typed repeated field of its dtype. Reading
follows TensorFlow's C++ `Tensor::FromProto`, which is what a running graph
sees: only the dtype's own field counts, fewer values than elements repeat the
last value (no values at all means zeros), surplus values are ignored.

Which typed field holds which dtype (checked against TF 2.21):

    float_val      float32
    double_val     float64
    int_val        int32, int16, int8, uint8, uint16, the q* types, int4, uint4, int2, uint2
    int64_val      int64
    uint32_val     uint32
    uint64_val     uint64
    bool_val       bool
    scomplex_val   complex64 as (real, imag) pairs
    dcomplex_val   complex128 as (real, imag) pairs
    half_val       float16 and bfloat16, the 16-bit patterns in an int32 field
    float8_val     the float8 family and float4_e2m1fn, one byte per element
    string_val     string

`from_numpy` makes the proto `tf.make_tensor_proto` makes for the same array.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import dtypes, protos
from .errors import FormatError, UnsupportedError

_MAX_PROTO_BYTES = (1 << 31) - 1

# A proto may legitimately describe a big tensor with one repeated value (a
# "fill" constant), so broadcasting cannot be refused outright; but a few
# bytes must not make us allocate gigabytes. A fill may grow to what a proto
# at protobuf's 2 GiB limit could have held itself, no further; counted in
# bytes, since 2**31 elements would be 32 GiB of complex128.
MAX_BROADCAST_BYTES = _MAX_PROTO_BYTES

_INT_VAL = frozenset(["int32", "int16", "int8", "uint8", "uint16", "qint8", "quint8", "qint16",
                      "quint16", "qint32", "int4", "uint4", "int2", "uint2"])
_FLOAT8_VAL = frozenset(["float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz",
                         "float8_e4m3b11fnuz", "float8_e5m2fnuz", "float4_e2m1fn"])
_SIMPLE_FIELD = {"float32": "float_val", "float64": "double_val", "int64": "int64_val",
                 "uint32": "uint32_val", "uint64": "uint64_val", "bool": "bool_val"}

# The dtypes `tf.make_tensor_proto` writes as tensor_content when there is
# more than one element (bool, complex, uint16 and the sub-byte integers
# always go to their typed field).
_CONTENT_TYPES = frozenset([
    "float16", "float32", "float64", "int32", "uint8", "int16", "int8", "int64", "qint8",
    "quint8", "qint16", "quint16", "qint32", "uint32", "uint64", "bfloat16",
]) | _FLOAT8_VAL
_SUB_BYTE_BITS = {"int4": 4, "uint4": 4, "int2": 2, "uint2": 2}


def value_field(dtype: Any) -> str:
    """The name of the typed TensorProto field that holds values of `dtype`."""
    name = dtypes.as_dtype(dtype).name
    if name in _SIMPLE_FIELD:
        return _SIMPLE_FIELD[name]
    if name in _INT_VAL:
        return "int_val"
    if name in _FLOAT8_VAL:
        return "float8_val"
    if name in ("float16", "bfloat16"):
        return "half_val"
    if name == "complex64":
        return "scomplex_val"
    if name == "complex128":
        return "dcomplex_val"
    if name == "string":
        return "string_val"
    raise UnsupportedError(f"TensorProto values of dtype {name} cannot be converted")


def shape_of(shape_proto: Any, what: str = "TensorProto") -> list[int]:
    """A TensorShapeProto as a list of ints; unknown rank or dims are an error here."""
    if shape_proto.unknown_rank:
        raise FormatError(f"{what}: shape of unknown rank")
    shape = [d.size for d in shape_proto.dim]
    if any(d < 0 for d in shape):
        raise FormatError(f"{what}: negative dimension in shape {shape}")
    return shape


def to_numpy(tensor_proto: Any, what: str = "TensorProto",
             max_broadcast_bytes: int = MAX_BROADCAST_BYTES) -> np.ndarray:
    """The value of a TensorProto as a new numpy array.

    Strings come back as an object array of bytes. Raises FormatError for a
    proto whose shape and data disagree or whose few values would have to be
    repeated into more than `max_broadcast_bytes`, and UnsupportedError for
    dtypes (resource, variant) or empty shapes that numpy cannot represent.
    """
    if tensor_proto.dtype == 0:
        raise FormatError(f"{what}: dtype is DT_INVALID")
    dtype = dtypes.from_enum(tensor_proto.dtype, what)
    shape = shape_of(tensor_proto.tensor_shape, what)
    count = math.prod(shape)
    if dtype.as_numpy_dtype is None:
        raise UnsupportedError(f"{what}: dtype {dtype.name} has no numpy form")
    npd = dtype.as_numpy_dtype
    # An empty tensor's other dimensions can be anything in a proto, but numpy
    # limits their product, and the rank of any array.
    dtypes.check_numpy_shape(shape, npd.itemsize, what)
    content = tensor_proto.tensor_content
    if content and not dtype.is_string:
        if len(content) != count * npd.itemsize:
            raise FormatError(f"{what}: tensor_content has {len(content)} bytes but shape "
                              f"{shape} of {dtype.name} needs {count * npd.itemsize}")
        return np.frombuffer(content, dtype=npd.newbyteorder("<")).astype(npd).reshape(shape)
    field = value_field(dtype)
    values = getattr(tensor_proto, field)
    n = len(values) // 2 if field in ("scomplex_val", "dcomplex_val") else len(values)
    if n < count and count * npd.itemsize > max_broadcast_bytes:
        raise FormatError(f"{what}: shape {shape} has {count} elements but the proto holds "
                          f"only {n} values; refusing to broadcast them into more than "
                          f"{max_broadcast_bytes} bytes")
    if dtype.is_string:
        out = np.empty(count, dtype=object)
        given = list(values[:count])
        out[:len(given)] = given
        out[len(given):] = given[-1] if given else b""
        return out.reshape(shape)
    flat = typed_values(values, field, n, count, npd)
    if n >= count:
        return flat[:count].reshape(shape)
    if n == 0:
        return np.zeros(shape, dtype=npd)
    out = np.empty(count, dtype=npd)
    out[:n] = flat
    out[n:] = flat[-1]
    return out.reshape(shape)


def typed_values(values: Any, field: str, n: int, count: int, npd: np.dtype) -> np.ndarray:
    """The first min(n, count) values of a typed field, as `npd`."""
    k = min(n, count)
    width = 2 * k if field in ("scomplex_val", "dcomplex_val") else k
    if width < len(values):
        # Slicing a repeated field builds a list of Python objects; numpy reads
        # the field itself ~100x faster, so only slice when there is surplus.
        values = values[:width]
    if field == "float8_val":
        return np.frombuffer(values, dtype=np.uint8).view(npd)
    if field == "half_val":
        return np.array(values, dtype=np.int64).astype(np.uint16).view(npd)
    if field in ("scomplex_val", "dcomplex_val"):
        part = np.float32 if field == "scomplex_val" else np.float64
        return np.array(values, dtype=part).view(npd)
    if field == "int_val":
        # Like C++'s static_cast from int32: out-of-range values wrap.
        raw = np.array(values, dtype=np.int64)
        bits = _SUB_BYTE_BITS.get(npd.name)
        if bits is None:
            return raw.astype(npd)
        # ml_dtypes' sub-byte ints: keep the low bits here rather than trust its casts.
        low = raw & ((1 << bits) - 1)
        if npd.name.startswith("int"):
            low = np.where(low >> (bits - 1), low - (1 << bits), low)
        return low.astype(np.int8).astype(npd)
    return np.array(values, dtype=npd)


def from_numpy(array: Any, dtype: Any = None) -> Any:
    """A TensorProto holding `array`, the way `tf.make_tensor_proto` encodes it.

    `dtype` (a DType, a name or an enum) overrides the stored dtype, e.g. to
    store an int8 array as qint8. Strings (str, bytes, object arrays of them)
    become DT_STRING with UTF-8 encoded str values.
    """
    array = np.asarray(array)
    target = dtypes.as_dtype(dtype if dtype is not None else array.dtype)
    proto = protos.TensorProto()
    proto.dtype = target.enum
    proto.tensor_shape.SetInParent()  # TF writes the (empty) shape of a scalar too
    for d in array.shape:
        proto.tensor_shape.dim.add(size=d)
    if target.is_string:
        proto.string_val.extend(_as_bytes(v) for v in array.ravel().tolist())
        return proto
    if target.as_numpy_dtype is None:
        raise UnsupportedError(f"cannot build a TensorProto of dtype {target.name} from numpy")
    if array.dtype.kind in "SUO":
        raise FormatError(f"cannot store a {array.dtype} array as {target.name}")
    values = array.astype(target.as_numpy_dtype.newbyteorder("<"), copy=False)
    if target.name in _CONTENT_TYPES and values.size > 1:
        if values.nbytes > _MAX_PROTO_BYTES:
            raise FormatError(f"a TensorProto cannot hold {values.nbytes} bytes (limit 2 GiB)")
        proto.tensor_content = values.tobytes()
        return proto
    field = value_field(target)
    flat = values.ravel()
    if field == "float8_val":
        proto.float8_val = flat.view(np.uint8).tobytes()
    elif field == "half_val":
        proto.half_val.extend(flat.view(np.uint16).tolist())
    elif field in ("scomplex_val", "dcomplex_val"):
        part = np.float32 if field == "scomplex_val" else np.float64
        getattr(proto, field).extend(flat.view(part).tolist())
    elif field == "int_val" and target.name in _SUB_BYTE_BITS:
        proto.int_val.extend(flat.astype(np.int32).tolist())
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto


def _as_bytes(value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview, np.bytes_)):
        return bytes(value)
    raise FormatError(f"string tensors hold bytes or str, not {type(value).__name__}")
