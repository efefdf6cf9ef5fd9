"""TensorFlow's DataType enum and how each type is stored in a tensor bundle.

Numeric types map to numpy dtypes (ml_dtypes supplies bfloat16, the float8
family and the sub-byte integers, which TensorFlow stores one element per
byte). Quantized types (qint8, ...) are read as their underlying integers.
"""

import ml_dtypes
import numpy as np

from .errors import UnsupportedError


class DType:
    """One TensorFlow dtype: `name` ("float32"), `enum` (1), `as_numpy_dtype`."""

    __slots__ = ("name", "enum", "as_numpy_dtype")

    def __init__(self, name, enum, numpy_dtype):
        self.name = name
        self.enum = enum
        self.as_numpy_dtype = numpy_dtype

    @property
    def itemsize(self):
        """Bytes per element in a bundle; None for variable-length types."""
        return None if self.as_numpy_dtype is None or self.is_string else self.as_numpy_dtype.itemsize

    @property
    def is_string(self):
        return self.enum == STRING_ENUM

    def __repr__(self):
        return f"tfformats.{self.name}"

    def __eq__(self, other):
        if isinstance(other, DType):
            return self.enum == other.enum
        if isinstance(other, str):
            return self.name == other
        return NotImplemented

    def __hash__(self):
        return hash(self.enum)


STRING_ENUM = 7
_TABLE = [
    # name, enum, numpy dtype (None: not readable as an array)
    ("float32", 1, np.float32), ("float64", 2, np.float64), ("int32", 3, np.int32),
    ("uint8", 4, np.uint8), ("int16", 5, np.int16), ("int8", 6, np.int8),
    ("string", 7, object), ("complex64", 8, np.complex64), ("int64", 9, np.int64),
    ("bool", 10, np.bool_), ("qint8", 11, np.int8), ("quint8", 12, np.uint8),
    ("qint32", 13, np.int32), ("bfloat16", 14, ml_dtypes.bfloat16),
    ("qint16", 15, np.int16), ("quint16", 16, np.uint16), ("uint16", 17, np.uint16),
    ("complex128", 18, np.complex128), ("float16", 19, np.float16),
    ("resource", 20, None), ("variant", 21, None), ("uint32", 22, np.uint32),
    ("uint64", 23, np.uint64), ("float8_e5m2", 24, ml_dtypes.float8_e5m2),
    ("float8_e4m3fn", 25, ml_dtypes.float8_e4m3fn),
    ("float8_e4m3fnuz", 26, ml_dtypes.float8_e4m3fnuz),
    ("float8_e4m3b11fnuz", 27, ml_dtypes.float8_e4m3b11fnuz),
    ("float8_e5m2fnuz", 28, ml_dtypes.float8_e5m2fnuz),
    ("int4", 29, ml_dtypes.int4), ("uint4", 30, ml_dtypes.uint4),
    ("int2", 31, ml_dtypes.int2), ("uint2", 32, ml_dtypes.uint2),
    ("float4_e2m1fn", 33, ml_dtypes.float4_e2m1fn),
]
BY_ENUM = {e: DType(n, e, None if t is None else np.dtype(t)) for n, e, t in _TABLE}
BY_NAME = {d.name: d for d in BY_ENUM.values()}
BY_NAME.update(half=BY_NAME["float16"], float=BY_NAME["float32"], double=BY_NAME["float64"])

# numpy dtype -> the DType a writer stores it as (the plain, non-quantized one).
_FROM_NUMPY = {}
for _d in BY_ENUM.values():
    if _d.as_numpy_dtype is not None and not _d.name.startswith("q"):
        _FROM_NUMPY.setdefault(_d.as_numpy_dtype, _d)


def from_enum(enum, tensor=None):
    """The DType for a DataType enum value; unknown values raise UnsupportedError."""
    try:
        return BY_ENUM[enum]
    except KeyError:
        where = f" of tensor {tensor!r}" if tensor is not None else ""
        raise UnsupportedError(f"unknown DataType enum {enum}{where}") from None


def as_dtype(value):
    """A DType from a DType, a name ("bfloat16"), an enum value or a numpy dtype."""
    if isinstance(value, DType):
        return value
    if isinstance(value, str) and value in BY_NAME:
        return BY_NAME[value]
    if isinstance(value, int) and value in BY_ENUM:
        return BY_ENUM[value]
    try:
        npd = np.dtype(value)
    except TypeError:
        raise UnsupportedError(f"not a TensorFlow dtype: {value!r}") from None
    if npd.kind in "SUO":
        return BY_ENUM[STRING_ENUM]
    npd = npd.newbyteorder("=") if npd.byteorder not in "=|" else npd
    if npd in _FROM_NUMPY:
        return _FROM_NUMPY[npd]
    raise UnsupportedError(f"numpy dtype {npd} has no TensorFlow equivalent")
