"""TensorFlow's DataType enum and how each type is stored in a tensor bundle.

Numeric types map to numpy dtypes (ml_dtypes supplies bfloat16, the float8
family and the sub-byte integers, which TensorFlow stores one element per
byte). Quantized types (qint8, ...) are read as their underlying integers.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

from .errors import UnsupportedError

if TYPE_CHECKING:
    import numpy as np
else:   # imported on first use (tfformats/_lazy.py): listing an index needs no numpy
    from ._lazy import numpy as np


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
        if isinstance(self._numpy, str):  # numpy (and ml_dtypes) load on first use
            if self._numpy.startswith("ml_dtypes."):
                import ml_dtypes
                self._numpy = np.dtype(getattr(ml_dtypes, self._numpy[len("ml_dtypes."):]))
            else:
                self._numpy = np.dtype(self._numpy)
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
_TABLE: "list[tuple[str, int, str | None]]" = [
    # name, enum, numpy type name (None: not readable as an array; "ml_dtypes.": from ml_dtypes)
    ("float32", 1, "float32"), ("float64", 2, "float64"), ("int32", 3, "int32"),
    ("uint8", 4, "uint8"), ("int16", 5, "int16"), ("int8", 6, "int8"),
    ("string", 7, "object"), ("complex64", 8, "complex64"), ("int64", 9, "int64"),
    ("bool", 10, "bool"), ("qint8", 11, "int8"), ("quint8", 12, "uint8"),
    ("qint32", 13, "int32"), ("bfloat16", 14, "ml_dtypes.bfloat16"),
    ("qint16", 15, "int16"), ("quint16", 16, "uint16"), ("uint16", 17, "uint16"),
    ("complex128", 18, "complex128"), ("float16", 19, "float16"),
    ("resource", 20, None), ("variant", 21, None), ("uint32", 22, "uint32"),
    ("uint64", 23, "uint64"), ("float8_e5m2", 24, "ml_dtypes.float8_e5m2"),
    ("float8_e4m3fn", 25, "ml_dtypes.float8_e4m3fn"),
    ("float8_e4m3fnuz", 26, "ml_dtypes.float8_e4m3fnuz"),
    ("float8_e4m3b11fnuz", 27, "ml_dtypes.float8_e4m3b11fnuz"),
    ("float8_e5m2fnuz", 28, "ml_dtypes.float8_e5m2fnuz"),
    ("int4", 29, "ml_dtypes.int4"), ("uint4", 30, "ml_dtypes.uint4"),
    ("int2", 31, "ml_dtypes.int2"), ("uint2", 32, "ml_dtypes.uint2"),
    ("float4_e2m1fn", 33, "ml_dtypes.float4_e2m1fn"),
]
# numpy is imported when a numpy dtype is first asked for (see tfformats/_lazy.py).
BY_ENUM = {e: DType(n, e, t) for n, e, t in _TABLE}
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
