"""Partitioned variables: slice specs and the ordered-code keys of their parts.

A slice is a tuple of (start, length) per dimension, length -1 meaning the
whole dimension. The data of each part is stored under a key built with
TensorFlow's "ordered code": byte strings that sort like the values.
"""

import math

FULL = -1


def _num_increasing(v):
    """Unsigned ordered code: a length byte, then the big-endian bytes."""
    body = v.to_bytes((v.bit_length() + 7) // 8, "big")
    return bytes([len(body)]) + body


# (first byte, second byte) XOR masks by encoded length, for signed numbers.
_SIGNED_HEADERS = {2: (0xC0, 0), 3: (0xE0, 0), 4: (0xF0, 0), 5: (0xF8, 0), 6: (0xFC, 0),
                   7: (0xFE, 0), 8: (0xFF, 0), 9: (0xFF, 0x80), 10: (0xFF, 0xC0)}


def _signed_num_increasing(v):
    x = ~v if v < 0 else v
    if x < 64:
        return bytes([(0x80 ^ v) & 0xFF])
    length = (x.bit_length() + 7) // 7  # 7-13 bits -> 2 bytes, ..., 63 bits -> 10
    raw = (b"\xff\xff" if v < 0 else b"\x00\x00") + (v & (2**64 - 1)).to_bytes(8, "big")
    out = bytearray(raw[-length:])
    h0, h1 = _SIGNED_HEADERS[length]
    out[0] ^= h0
    out[1] ^= h1
    return bytes(out)


def _string_increasing(s):
    return s.replace(b"\xff", b"\xff\x00").replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def slice_key(name, extents):
    """The bundle key of one stored part of the partitioned tensor `name`."""
    if isinstance(name, str):
        name = name.encode("utf-8", "surrogateescape")
    out = [b"\x00", _string_increasing(name), _num_increasing(len(extents))]
    for start, length in extents:
        out.append(_signed_num_increasing(start))
        out.append(_signed_num_increasing(length))
    return b"".join(out)


def is_slice_key(key):
    """Slice keys start with the ordered code of 0, which names never do."""
    return key[:1] == b"\x00"


def resolve(extents, full_shape):
    """Concrete ((start, stop), ...) of a slice within `full_shape`."""
    return tuple((0, dim) if length < 0 else (start, start + length)
                 for (start, length), dim in zip(extents, full_shape))


def disjoint(boxes):
    """Whether no two boxes (((start, stop), ...) per dimension) share an element."""
    order = sorted(b for b in boxes if all(a < e for a, e in b))  # empty boxes hold nothing
    if order and not order[0]:  # rank 0: every box is the one element
        return len(order) == 1
    # Sorted by first-dimension start, so the inner sweep can stop early.
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            if b[0][0] >= a[0][1]:
                break
            if all(bs < ae and as_ < be for (as_, ae), (bs, be) in zip(a, b)):
                return False
    return True


def tiles(boxes, full_shape):
    """Whether `boxes` (each inside `full_shape`) hold every element exactly
    once: no gap a reader would hand out uninitialised, no overlap."""
    covered = sum(math.prod(b - a for a, b in box) for box in boxes)
    return covered == math.prod(full_shape) and disjoint(boxes)


def index(bounds):
    """The numpy index of a box ((start, stop), ...): a tuple of slices."""
    return tuple(slice(a, b) for a, b in bounds)


def covers_all(extents, full_shape):
    return all(length < 0 or (start == 0 and length == dim)
               for (start, length), dim in zip(extents, full_shape))


def spec_string(extents, full_shape):
    """TF1's `SaveSliceInfo.spec` text, e.g. "10 3 0,4:-"."""
    dims = " ".join(str(d) for d in full_shape)
    parts = ":".join("-" if length < 0 else f"{start},{length}" for start, length in extents)
    return f"{dims} {parts}"
