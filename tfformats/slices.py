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
    """Whether no two boxes (((start, stop), ...) per dimension) share an element.

    A sweep along the dimension where the boxes start at the most places:
    linear for parts split along one axis (sorted, each box meets only the
    next), and what `tiles` falls back on for parts split along many axes.
    """
    order = [b for b in boxes if all(a < e for a, e in b)]  # empty boxes hold nothing
    if order and not order[0]:  # rank 0: every box is the one element
        return len(order) == 1
    if not order:
        return True
    axis = max(range(len(order[0])), key=lambda k: len({b[k][0] for b in order}))
    order.sort(key=lambda b: b[axis])
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            if b[axis][0] >= a[axis][1]:
                break
            if all(bs < ae and as_ < be for (as_, ae), (bs, be) in zip(a, b)):
                return False
    return True


# Up to this many split dimensions, `tiles` counts corners (2**d per box).
_MAX_CORNER_DIMS = 8


def tiles(boxes, full_shape):
    """Whether `boxes` (each inside `full_shape`) hold every element exactly
    once: no gap a reader would hand out uninitialised, no overlap.

    Counting corners decides it in one pass: a box [a, b) is the signed sum of
    the orthants at its 2**d corners (+ at a, - at b, alternating), orthants at
    distinct points are independent, so the boxes' indicators add up to the
    whole tensor's exactly when their signed corner counts add up to its
    corners. Dimensions no box splits are left out of the corners (they are
    factors every box shares); with more split dimensions than
    _MAX_CORNER_DIMS, sizes and a sweep (`disjoint`) decide instead.
    """
    boxes = list(boxes)
    split = [k for k, n in enumerate(full_shape) if any(box[k] != (0, n) for box in boxes)]
    if len(split) > _MAX_CORNER_DIMS:
        covered = sum(math.prod(b - a for a, b in box) for box in boxes)
        return covered == math.prod(full_shape) and disjoint(boxes)
    if not all(full_shape[k] for k in range(len(full_shape)) if k not in split):
        return True   # an empty tensor: every box is empty too, nothing to cover
    counts = {}
    for box in boxes:
        for corner, sign in _corners([box[k] for k in split]):
            counts[corner] = counts.get(corner, 0) + sign
    counts = {corner: n for corner, n in counts.items() if n}
    return counts == dict(_corners([(0, full_shape[k]) for k in split]))


def _corners(bounds):
    """(corner, sign) of a box: sign -1 for each dimension at its stop."""
    out = [((), 1)]
    for start, stop in bounds:
        out = [(c + (start,), s) for c, s in out] + [(c + (stop,), -s) for c, s in out]
    return out


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
