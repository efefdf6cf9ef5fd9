"""TensorFlow's DataType enum and how each type is stored in a tensor bundle.

Numeric types map to numpy dtypes (ml_dtypes supplies bfloat16, the float8
family and the sub-byte integers, which TensorFlow stores one element per
byte). Quantized types (qint8, ...) are read as their underlying integers.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from .errors import UnsupportedError


class DType:
    """One TensorFlow dtype: `name` ("float32"), `enum` (1), `as_numpy_dtype`."""

    __slots__ = ("name", "enum", "_numpy")

    def __init__(self, name: str, enum: int, numpy_type: Any) -> None:
        self.name = name
        self.enum = enum
        self._numpy = numpy_type

    @property
    def as_numpy_dtype(self) -> np.dtype | None:
        """The numpy dtype (None for resource/variant; object for strings)."""
        if isinstance(self._numpy, str):  # an ml_dtypes type, imported on first use
            import ml_dtypes
            self._numpy = np.dtype(getattr(ml_dtypes, self._numpy))
        return self._numpy

    @property
    def itemsize(self) -> int | None:
        """Bytes per element in a bundle; None for variable-length types."""
        return None if self.as_numpy_dtype is None or self.is_string else self.as_numpy_dtype.itemsize

    @property
    def is_string(self) -> bool:
        return self.enum == STRING_ENUM

    def __repr__(self):
        return f"tfformats.{self.name}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DType):
            return self.enum == other.enum
        if isinstance(other, str):
            return self.name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.enum)


STRING_ENUM = 7
_TABLE: "list[tuple[str, int, Any]]" = [
    # name, enum, numpy type (None: not readable as an array; a string: from ml_dtypes)
    ("float32", 1, np.float32), ("float64", 2, np.float64), ("int32", 3, np.int32),
    ("uint8", 4, np.uint8), ("int16", 5, np.int16), ("int8", 6, np.int8),
    ("string", 7, object), ("complex64", 8, np.complex64), ("int64", 9, np.int64),
    ("bool", 10, np.bool_), ("qint8", 11, np.int8), ("quint8", 12, np.uint8),
    ("qint32", 13, np.int32), ("bfloat16", 14, "bfloat16"),
    ("qint16", 15, np.int16), ("quint16", 16, np.uint16), ("uint16", 17, np.uint16),
    ("complex128", 18, np.complex128), ("float16", 19, np.float16),
    ("resource", 20, None), ("variant", 21, None), ("uint32", 22, np.uint32),
    ("uint64", 23, np.uint64), ("float8_e5m2", 24, "float8_e5m2"),
    ("float8_e4m3fn", 25, "float8_e4m3fn"),
    ("float8_e4m3fnuz", 26, "float8_e4m3fnuz"),
    ("float8_e4m3b11fnuz", 27, "float8_e4m3b11fnuz"),
    ("float8_e5m2fnuz", 28, "float8_e5m2fnuz"),
    ("int4", 29, "int4"), ("uint4", 30, "uint4"),
    ("int2", 31, "int2"), ("uint2", 32, "uint2"),
    ("float4_e2m1fn", 33, "float4_e2m1fn"),
]
BY_ENUM = {e: DType(n, e, t if t is None or isinstance(t, str) else np.dtype(t))
           for n, e, t in _TABLE}
BY_NAME = {d.name: d for d in BY_ENUM.values()}
BY_NAME.update(half=BY_NAME["float16"], float=BY_NAME["float32"], double=BY_NAME["float64"])

# numpy dtype -> the DType a writer stores it as (not the quantized one)
_FROM_NUMPY: "dict[np.dtype, DType]" = {}


def _from_numpy():
    if not _FROM_NUMPY:
        for d in BY_ENUM.values():
            if d.as_numpy_dtype is not None and not d.name.startswith("q"):
                _FROM_NUMPY.setdefault(d.as_numpy_dtype, d)
    return _FROM_NUMPY


def from_enum(enum: int, tensor: str | None = None) -> DType:
    """The DType for a DataType enum value; unknown values raise UnsupportedError."""
    try:
        return BY_ENUM[enum]
    except KeyError:
        where = f" of tensor {tensor!r}" if tensor is not None else ""
        raise UnsupportedError(f"unknown DataType enum {enum}{where}") from None


def as_dtype(value: Any) -> DType:
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
    if npd in _from_numpy():
        return _FROM_NUMPY[npd]
    raise UnsupportedError(f"numpy dtype {npd} has no TensorFlow equivalent")


# numpy's limit on the number of dimensions (TensorFlow allows up to 254).
MAX_NUMPY_RANK = 64


def check_numpy_shape(shape: tuple[int, ...] | list[int], itemsize: int | None,
                      where: str) -> None:
    """UnsupportedError unless numpy can make an array of `shape` with items of
    `itemsize` bytes: at most 64 dimensions and, for an empty array, the
    product of the other dimensions within numpy's limit (numpy checks it even
    then; a non-empty one needs bytes the file must hold, checked elsewhere)."""
    if len(shape) > MAX_NUMPY_RANK:
        raise UnsupportedError(f"{where}: rank {len(shape)} is more than numpy's "
                               f"{MAX_NUMPY_RANK} dimensions")
    if 0 in shape and math.prod(d for d in shape if d) * max(itemsize or 8, 1) > sys.maxsize:
        raise UnsupportedError(f"{where}: numpy cannot represent an array of shape "
                               f"{list(shape)}")
