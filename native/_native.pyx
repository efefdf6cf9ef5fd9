# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled hot paths of tfformats (built as `tfformats._native`).

The behaviour twin of `tfformats/_pure.py`: the same functions, the same
results, the same exceptions with the same messages. `tfformats._impl` picks
one of the two. Inputs are any C-contiguous buffer (bytes, bytearray,
memoryview, mmap, numpy arrays); every length and offset read from the data
is checked against the bytes that are really there before it is used.

Varints can encode more than 64 bits (the tenth byte carries 7 bits at bit
63), and `_pure` keeps those extra bits in a Python int. Here a varint is read
as the low 64 bits plus the bits above them (`hi`), so comparisons, results
and messages agree with `_pure` even for such values.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject, PyTypeObject, newfunc
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from operator import index as _index

from tfformats.errors import ChecksumError, FormatError
from tfformats.limits import exceeded

include "farmhash.pxi"
include "map_order.pxi"
include "highwayhash.pxi"

cdef extern from "crc32c.h" nogil:
    void tff_crc32c_init()
    int tff_crc32c_hardware()
    int tff_crc32c_use_hardware(int on)
    uint32_t tff_crc32c_extend(uint32_t crc, const unsigned char* data, size_t n)
    uint32_t tff_crc32c_mask(uint32_t crc)
    uint32_t tff_crc32c_unmask(uint32_t masked)

tff_crc32c_init()

MASK_DELTA = 0xA282EAD8

cdef enum:
    # Below this many bytes, releasing and re-taking the GIL costs more than the CRC.
    _NOGIL_MIN = 65536

# A tag whose varint needed more than 64 bits: keep its wire type, make its
# field number one no message uses.
cdef uint64_t _HUGE_TAG = 0xFFFFFFFFFFFFFFF8ULL


# --- small helpers --------------------------------------------------------------

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void* op)


cdef inline tuple _atomic(tuple t):
    """Take a tuple that holds only ints, bytes, None and such tuples out of the
    garbage collector's view and return it.

    Such a tuple can never be part of a reference cycle; CPython untracks it
    itself at its first collection. Doing it at once keeps the collections
    that a listing of 100,000 entries triggers from scanning every entry again
    and again (that cost more than the parsing itself).
    """
    PyObject_GC_UnTrack(<void*>t)
    return t

cdef inline uint32_t _le32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)
            | (<uint32_t>p[3] << 24))


cdef object _pyint(uint64_t lo, uint64_t hi):
    """The Python int of a varint split into its low 64 bits and the rest."""
    if hi == 0:
        return lo
    return lo + ((<object>hi) << 64)


cdef inline object _signed(uint64_t lo, uint64_t hi):
    """`_pure._signed64` of a varint: two's complement of the low 64 bits."""
    if hi == 0:
        return <int64_t>lo
    return lo + ((<object>hi - 1) << 64)   # v - 2**64 for v >= 2**64


cdef inline uint32_t _crc(uint32_t crc, const unsigned char* p, Py_ssize_t n) noexcept:
    if n >= _NOGIL_MIN:
        with nogil:
            crc = tff_crc32c_extend(crc, p, <size_t>n)
        return crc
    return tff_crc32c_extend(crc, p, <size_t>n)


# --- CRC-32C ----------------------------------------------------------------------

def crc32c(data, value=0):
    """CRC-32C of `data`, continuing from `value` (0 starts a new checksum)."""
    cdef Py_buffer view
    cdef uint32_t crc
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if type(value) is int and 0 <= value <= 0xFFFFFFFF:
            crc = value
        else:   # the crc32c package reduces any integer modulo 2**32
            crc = _index(value) & 0xFFFFFFFF
        return _crc(crc, <const unsigned char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


def mask_crc(crc):
    """TensorFlow's masked form of a CRC, as stored in files."""
    if type(crc) is int and 0 <= crc <= 0xFFFFFFFF:
        return tff_crc32c_mask(<uint32_t>crc)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(masked):
    if type(masked) is int and 0 <= masked <= 0xFFFFFFFF:
        return tff_crc32c_unmask(<uint32_t>masked)
    rot = (masked - MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _crc32c_hardware():
    """True when the CRC uses a hardware instruction (diagnostics and tests)."""
    return bool(tff_crc32c_hardware())


def _crc32c_use_hardware(on):
    """Tests only: `False` forces the portable table code, `True` restores the
    best available one. Returns whether hardware is in use afterwards."""
    return bool(tff_crc32c_use_hardware(1 if on else 0))


# --- varints ------------------------------------------------------------------------

cdef Py_ssize_t _varint_slow(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end,
                             uint64_t* out, uint64_t* hi, object where) except -1:
    cdef uint64_t result = 0
    cdef uint64_t b
    cdef int shift = 0
    hi[0] = 0
    while True:
        if pos >= end:
            raise FormatError(f"{where}: varint runs past the end of its data at offset {pos}")
        b = p[pos]
        pos += 1
        if shift < 63:
            result |= (b & 0x7F) << shift
        else:   # tenth byte: one bit fits, the other six go above bit 63
            result |= (b & 1) << 63
            hi[0] = (b & 0x7F) >> 1
        if b < 0x80:
            out[0] = result
            return pos
        shift += 7
        if shift > 63:
            raise FormatError(f"{where}: varint longer than 10 bytes at offset {pos}")


cdef inline Py_ssize_t _varint(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end,
                               uint64_t* out, uint64_t* hi, object where) except -1:
    """Decode the varint at p[pos:end]; returns the position after it."""
    if pos < end and p[pos] < 0x80:
        out[0] = p[pos]
        hi[0] = 0
        return pos + 1
    return _varint_slow(p, pos, end, out, hi, where)


def decode_varint(buf, pos, where):
    """Decode the varint64 at `buf[pos:]`; returns (value, position after it)."""
    cdef Py_buffer view
    cdef uint64_t lo, hi, b
    cdef Py_ssize_t n, i, start, idx
    cdef int shift = 0
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        n = view.len
        if pos >= n:
            raise FormatError(f"{where}: varint runs past the end of its data at offset {pos}")
        if pos < -n:
            raise IndexError("index out of range")
        start = pos
        if start >= 0:
            i = _varint(<const unsigned char*>view.buf, start, n, &lo, &hi, where)
            return _pyint(lo, hi), i
        # A negative position indexes from the end, as Python indexing does.
        lo = hi = 0
        i = start
        while True:
            if i >= n:
                raise FormatError(f"{where}: varint runs past the end of its data at offset {i}")
            idx = i + n if i < 0 else i
            if idx < 0:
                raise IndexError("index out of range")
            b = (<const unsigned char*>view.buf)[idx]
            i += 1
            if shift < 63:
                lo |= (b & 0x7F) << shift
            else:
                lo |= (b & 1) << 63
                hi = (b & 0x7F) >> 1
            if b < 0x80:
                return _pyint(lo, hi), i
            shift += 7
            if shift > 63:
                raise FormatError(f"{where}: varint longer than 10 bytes at offset {i}")
    finally:
        PyBuffer_Release(&view)


def encode_varint(value):
    cdef unsigned char out[10]
    cdef int n = 0
    cdef uint64_t v
    if type(value) is int and 0 <= value <= 0xFFFFFFFFFFFFFFFF:
        v = value
        while v >= 0x80:
            out[n] = <unsigned char>((v & 0x7F) | 0x80)
            n += 1
            v >>= 7
        out[n] = <unsigned char>v
        return PyBytes_FromStringAndSize(<char*>out, n + 1)
    # Larger, negative or non-int values: the same steps on Python objects.
    res = bytearray()
    while value >= 0x80:
        res.append((value & 0x7F) | 0x80)
        value >>= 7
    res.append(value)
    return bytes(res)


# --- SSTable blocks ---------------------------------------------------------------

cdef Py_ssize_t _restarts(const unsigned char* p, Py_ssize_t n, object where,
                          Py_ssize_t* count_out) except -1:
    """Validate the restart array of a block; returns the end of its entries."""
    cdef uint32_t count, r
    cdef Py_ssize_t end, i
    if n < 4:
        raise FormatError(f"{where}: block of {n} bytes is too short for its restart count")
    count = _le32(p + n - 4)
    if count == 0 or count > (n - 4) // 4:
        raise FormatError(f"{where}: block of {n} bytes claims {count} restart points")
    end = n - 4 - 4 * <Py_ssize_t>count
    for i in range(count):
        r = _le32(p + end + 4 * i)
        if r >= end and not (r == 0 and end == 0):
            raise FormatError(f"{where}: restart offset {r} is outside the block's "
                              f"{end} entry bytes")
    count_out[0] = count
    return end


cdef inline Py_ssize_t _entry(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end,
                              Py_ssize_t prev_len, Py_ssize_t* shared,
                              Py_ssize_t* non_shared, Py_ssize_t* value_len,
                              object where) except -1:
    """Decode one entry header at `pos`; returns where its key suffix starts.

    On return the key suffix and the value are known to lie inside p[:end].
    """
    cdef uint64_t s, ns, vl, sh, nh, vh, avail
    if pos + 3 <= end and (p[pos] | p[pos + 1] | p[pos + 2]) < 0x80:
        s = p[pos]
        ns = p[pos + 1]
        vl = p[pos + 2]
        sh = nh = vh = 0
        pos += 3
    else:
        pos = _varint(p, pos, end, &s, &sh, where)
        pos = _varint(p, pos, end, &ns, &nh, where)
        pos = _varint(p, pos, end, &vl, &vh, where)
    if sh != 0 or s > <uint64_t>prev_len:
        raise FormatError(f"{where}: entry at offset {pos} shares {_pyint(s, sh)} bytes with a "
                          f"{prev_len}-byte key")
    avail = <uint64_t>(end - pos)
    if nh != 0 or vh != 0 or ns > avail or vl > avail - ns:
        raise FormatError(f"{where}: entry at offset {pos} runs past the block's entry bytes")
    shared[0] = <Py_ssize_t>s
    non_shared[0] = <Py_ssize_t>ns
    value_len[0] = <Py_ssize_t>vl
    return pos


cdef struct _KeyBuf:
    unsigned char* data
    Py_ssize_t len
    Py_ssize_t cap


cdef int _key_set(_KeyBuf* k, Py_ssize_t shared, const unsigned char* suffix,
                  Py_ssize_t n) except -1:
    """key = key[:shared] + suffix[:n] (shared <= current length, checked by _entry)."""
    cdef Py_ssize_t need = shared + n
    cdef Py_ssize_t cap
    cdef unsigned char* grown
    if need > k.cap:
        cap = k.cap * 2 if k.cap else 256
        if cap < need:
            cap = need
        grown = <unsigned char*>PyMem_Realloc(k.data, cap)
        if grown == NULL:
            raise MemoryError()
        k.data = grown
        k.cap = cap
    if n:
        memcpy(k.data + shared, suffix, n)
    k.len = need
    return 0


cdef inline int _compare(const unsigned char* a, Py_ssize_t na,
                         const unsigned char* b, Py_ssize_t nb) noexcept nogil:
    """Bytewise comparison, like bytes' ordering: <0, 0 or >0."""
    cdef Py_ssize_t m = na if na < nb else nb
    cdef int c = memcmp(a, b, <size_t>m) if m > 0 else 0
    if c != 0:
        return c
    return (na > nb) - (na < nb)


cdef object _short(bytes key):
    return repr(key[:64]) + ("..." if len(key) > 64 else "")


cdef int _check_after(_KeyBuf* key, Py_ssize_t shared, const unsigned char* suffix,
                      Py_ssize_t n, Py_ssize_t at, object where) except -1:
    """FormatError unless key[:shared] + suffix[:n] sorts after `key` (the
    previous key of the block, `key.len` > 0 or not the first entry)."""
    if _compare(suffix, n, key.data + shared, key.len - shared) > 0:
        return 0
    before = PyBytes_FromStringAndSize(<char*>key.data, key.len)
    raise FormatError(f"{where}: key {_short(before[:shared] + suffix[:n])} at offset {at} "
                      f"does not sort after the key before it, {_short(before)} "
                      "(keys duplicated or out of order)")


cdef list _block_entries(const unsigned char* p, Py_ssize_t n, object where):
    cdef Py_ssize_t count, end, pos = 0, shared, non_shared, value_len
    cdef _KeyBuf key
    cdef list out = []
    end = _restarts(p, n, where, &count)
    key.data = NULL
    key.len = key.cap = 0
    try:
        while pos < end:
            pos = _entry(p, pos, end, key.len, &shared, &non_shared, &value_len, where)
            _key_set(&key, shared, p + pos, non_shared)
            pos += non_shared
            out.append(_atomic((PyBytes_FromStringAndSize(<char*>key.data, key.len),
                                PyBytes_FromStringAndSize(<const char*>(p + pos), value_len))))
            pos += value_len
    finally:
        PyMem_Free(key.data)
    return out


def block_entries(block, where):
    """Every (key, value) of a block, in order; values are bytes."""
    cdef Py_buffer view
    if type(block) is bytes:   # the common case: no buffer request needed
        return _block_entries(<const unsigned char*>PyBytes_AS_STRING(block),
                              PyBytes_GET_SIZE(block), where)
    PyObject_GetBuffer(block, &view, PyBUF_SIMPLE)
    try:
        return _block_entries(<const unsigned char*>view.buf, view.len, where)
    finally:
        PyBuffer_Release(&view)


def check_block_keys(block, where, bytes after, bytes upto, max_key_bytes=None,
                     max_block_key_bytes=None):
    """FormatError unless the keys of a block increase strictly, the first
    sorts after `after` and the last is at most `upto` (None: no bound);
    LimitError if a key is longer than `max_key_bytes` or all keys, their
    shared prefixes expanded, take more than `max_block_key_bytes` (None: no
    limit), checked as each key is reached, before anything is built of them."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t count, end, pos = 0, start, shared, non_shared, value_len, length
    cdef Py_ssize_t max_key = -1, max_total = -1, total = 0
    cdef _KeyBuf key
    if max_key_bytes is not None:
        max_key = min(max_key_bytes, PY_SSIZE_T_MAX)
    if max_block_key_bytes is not None:
        max_total = min(max_block_key_bytes, PY_SSIZE_T_MAX)
    PyObject_GetBuffer(block, &view, PyBUF_SIMPLE)
    key.data = NULL
    key.len = key.cap = 0
    try:
        p = <const unsigned char*>view.buf
        end = _restarts(p, view.len, where, &count)
        if after is not None:
            _key_set(&key, 0, <const unsigned char*>PyBytes_AS_STRING(after),
                     PyBytes_GET_SIZE(after))
        while pos < end:
            start = pos
            pos = _entry(p, pos, end, key.len if start else 0, &shared, &non_shared,
                         &value_len, where)
            length = (shared if start else 0) + non_shared
            total += length    # no overflow: each key is at most the block's bytes longer
            if max_key >= 0 and length > max_key:
                raise exceeded("max_key_bytes", length,
                               f"{where}: bytes of the key at offset {start}")
            if max_total >= 0 and total > max_total:
                raise exceeded("max_block_key_bytes", total,
                               f"{where}: bytes of its keys (shared prefixes expanded) up to "
                               f"offset {start}")
            if start or after is not None:
                _check_after(&key, shared if start else 0, p + pos, non_shared, start, where)
            _key_set(&key, shared if start else 0, p + pos, non_shared)
            pos += non_shared + value_len
        if (end and upto is not None and _compare(key.data, key.len,
                <const unsigned char*>PyBytes_AS_STRING(upto), PyBytes_GET_SIZE(upto)) > 0):
            last = PyBytes_FromStringAndSize(<char*>key.data, key.len)
            raise FormatError(f"{where}: its last key {_short(last)} sorts after the index "
                              f"block's bound for it, {_short(upto)} (keys out of order)")
    finally:
        PyMem_Free(key.data)
        PyBuffer_Release(&view)


cdef object _block_seek(const unsigned char* p, Py_ssize_t n, object target, object where):
    cdef Py_ssize_t count, end, lo, hi, mid, pos, shared, non_shared, value_len
    cdef const unsigned char* t
    cdef Py_ssize_t tn
    cdef _KeyBuf key
    end = _restarts(p, n, where, &count)
    if end == 0:
        return None
    if isinstance(target, bytes):
        t = <const unsigned char*>PyBytes_AS_STRING(target)
        tn = PyBytes_GET_SIZE(target)
    elif isinstance(target, bytearray):
        t = <const unsigned char*>PyByteArray_AS_STRING(target)
        tn = PyByteArray_GET_SIZE(target)
    else:
        raise TypeError(f"'<' not supported between instances of 'bytes' and "
                        f"'{type(target).__name__}'")
    # Binary search over restart points (their keys are stored whole).
    lo = 0
    hi = count - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        pos = _entry(p, _le32(p + end + 4 * mid), end, 0, &shared, &non_shared,
                     &value_len, where)
        if _compare(p + pos, non_shared, t, tn) < 0:
            lo = mid
        else:
            hi = mid - 1
    pos = _le32(p + end + 4 * lo)
    key.data = NULL
    key.len = key.cap = 0
    try:
        while pos < end:
            pos = _entry(p, pos, end, key.len, &shared, &non_shared, &value_len, where)
            _key_set(&key, shared, p + pos, non_shared)
            pos += non_shared
            if _compare(key.data, key.len, t, tn) >= 0:
                return (PyBytes_FromStringAndSize(<char*>key.data, key.len),
                        PyBytes_FromStringAndSize(<const char*>(p + pos), value_len))
            pos += value_len
    finally:
        PyMem_Free(key.data)
    return None


def block_seek(block, target, where):
    """(key, value) of the first entry whose key is >= `target`, or None."""
    cdef Py_buffer view
    if type(block) is bytes:   # the common case: no buffer request needed
        return _block_seek(<const unsigned char*>PyBytes_AS_STRING(block),
                           PyBytes_GET_SIZE(block), target, where)
    PyObject_GetBuffer(block, &view, PyBUF_SIMPLE)
    try:
        return _block_seek(<const unsigned char*>view.buf, view.len, target, where)
    finally:
        PyBuffer_Release(&view)


# --- BundleEntryProto ---------------------------------------------------------------

cdef Py_ssize_t _skip_field(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end,
                            int wire, object where) except -1:
    cdef uint64_t v, vh
    if wire == 0:
        return _varint(p, pos, end, &v, &vh, where)
    if wire == 1:
        pos += 8
    elif wire == 2:
        pos = _varint(p, pos, end, &v, &vh, where)
        if vh != 0 or v > <uint64_t>(end - pos):
            raise FormatError(f"{where}: protobuf field runs past the end of its message")
        pos += <Py_ssize_t>v
    elif wire == 5:
        pos += 4
    else:
        raise FormatError(f"{where}: unsupported protobuf wire type {wire}")
    if pos > end:
        raise FormatError(f"{where}: protobuf field runs past the end of its message")
    return pos


cdef inline Py_ssize_t _tag(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end,
                            uint64_t* tag, object where) except -1:
    cdef uint64_t th
    pos = _varint(p, pos, end, tag, &th, where)
    if th != 0:
        tag[0] = _HUGE_TAG | (tag[0] & 7)
    return pos


cdef enum:
    _SMALL_RANK = 8


cdef struct _Shape:
    # The dims of a decoded TensorShapeProto while they are few and fit in 64
    # bits, so that a listing compares and checks them without Python objects.
    Py_ssize_t rank   # dims in `dims`; -1: unknown rank; -2: kept as a tuple instead
    int64_t dims[_SMALL_RANK]


cdef object _decode_shape(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end, object where):
    """TensorShapeProto -> tuple of dims, or None for unknown rank."""
    cdef _Shape s
    cdef object dims = _scan_shape(p, pos, end, where, &s)
    if s.rank == -2:
        return dims
    return None if s.rank == -1 else _shape_tuple(&s)


cdef tuple _shape_tuple(const _Shape* s):
    """The tuple of a shape held in a _Shape (rank >= 0)."""
    cdef tuple result = PyTuple_New(s.rank)
    cdef object dim
    cdef Py_ssize_t i
    for i in range(s.rank):
        dim = s.dims[i]
        Py_INCREF(dim)
        PyTuple_SET_ITEM(result, i, dim)
    return _atomic(result)


cdef object _shape_list(const _Shape* s, object dims):
    """list(shape) of a decoded shape (`dims`: _scan_shape's tuple), None for unknown rank."""
    cdef list result
    cdef object dim
    cdef Py_ssize_t i
    if s.rank == -2:
        return list(<tuple>dims)
    if s.rank == -1:
        return None
    result = PyList_New(s.rank)
    for i in range(s.rank):
        dim = s.dims[i]
        Py_INCREF(dim)
        PyList_SET_ITEM(result, i, dim)
    return result


cdef object _scan_shape(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end, object where,
                        _Shape* s):
    """Decode a TensorShapeProto into `s`; returns its dims as a tuple when they
    do not fit there (more than _SMALL_RANK, or one beyond 64 bits: rank -2), else None."""
    cdef uint64_t tag, t, v, vh, size, size_hi
    cdef Py_ssize_t dend, i
    cdef bint unknown = False
    cdef int64_t* small = s.dims        # dims while they are few and fit in 64 bits
    cdef Py_ssize_t rank = 0
    cdef list dims = None               # otherwise, all dims as Python ints
    while pos < end:
        pos = _tag(p, pos, end, &tag, where)
        if tag == 0x12:   # field 2 (dim), length-delimited
            pos = _varint(p, pos, end, &v, &vh, where)
            if vh != 0 or v > <uint64_t>(end - pos):
                raise FormatError(f"{where}: shape dimension runs past its message")
            dend = pos + <Py_ssize_t>v
            size = size_hi = 0
            while pos < dend:
                pos = _tag(p, pos, dend, &t, where)
                if t == 8:
                    pos = _varint(p, pos, dend, &size, &size_hi, where)
                else:
                    pos = _skip_field(p, pos, dend, <int>(t & 7), where)
            if dims is None and size_hi == 0 and rank < _SMALL_RANK:
                small[rank] = <int64_t>size
                rank += 1
            else:
                if dims is None:
                    dims = [small[i] for i in range(rank)]
                dims.append(_signed(size, size_hi))
        elif tag == 0x18:   # field 3 (unknown_rank), varint
            pos = _varint(p, pos, end, &v, &vh, where)
            unknown = (v | vh) != 0
        else:
            pos = _skip_field(p, pos, end, <int>(tag & 7), where)
    if unknown:
        s.rank = -1
        return None
    if dims is not None:
        s.rank = -2
        return _atomic(tuple(dims))
    s.rank = rank
    return None


cdef tuple _decode_slice(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end, object where):
    """TensorSliceProto -> tuple of (start, length); length -1 means full."""
    cdef uint64_t tag, t, v, vh
    cdef Py_ssize_t eend
    cdef list extents = []
    cdef object start, length
    while pos < end:
        pos = _tag(p, pos, end, &tag, where)
        if tag == 0x0A:
            pos = _varint(p, pos, end, &v, &vh, where)
            if vh != 0 or v > <uint64_t>(end - pos):
                raise FormatError(f"{where}: slice extent runs past its message")
            eend = pos + <Py_ssize_t>v
            start = 0
            length = -1
            while pos < eend:
                pos = _tag(p, pos, eend, &t, where)
                if t == 8:
                    pos = _varint(p, pos, eend, &v, &vh, where)
                    start = _signed(v, vh)
                elif t == 16:
                    pos = _varint(p, pos, eend, &v, &vh, where)
                    length = _signed(v, vh)
                else:
                    pos = _skip_field(p, pos, eend, <int>(t & 7), where)
            extents.append(_atomic((start, length)))
        else:
            pos = _skip_field(p, pos, end, <int>(tag & 7), where)
    return _atomic(tuple(extents))


cdef struct _Listed:
    # What a listing needs of an entry, without Python objects (see _decode_entry).
    uint32_t dtype
    uint64_t numbers[7]   # shard id, offset, size as (low 64 bits, bits above), number of slices
    _Shape shape


cdef object _decode_entry(const unsigned char* p, Py_ssize_t end, object where,
                          _Listed* listed=NULL):
    """The entry tuple; or, given `listed`, only what a listing needs, filled
    into it, every field still checked: then the return value is the shape's
    tuple where the shape does not fit `listed.shape` (else None)."""
    cdef uint64_t tag, field, v, vh
    cdef int wire
    cdef Py_ssize_t pos = 0
    cdef uint32_t dtype = 0, crc = 0
    cdef list slices = None
    cdef object shard_id = 0, offset = 0, size = 0, shape = ()
    cdef bint listing = listed != NULL
    cdef uint64_t* numbers = NULL
    if listing:
        numbers = listed.numbers
        memset(numbers, 0, 7 * sizeof(uint64_t))
        listed.shape.rank = 0
        shape = None
    while pos < end:
        pos = _tag(p, pos, end, &tag, where)
        field = tag >> 3
        wire = <int>(tag & 7)
        if wire == 0 and (field == 1 or field == 3 or field == 4 or field == 5):
            pos = _varint(p, pos, end, &v, &vh, where)
            if field == 1:
                dtype = <uint32_t>v
            elif listing:
                numbers[2 * (field - 3)] = v
                numbers[2 * (field - 3) + 1] = vh
            elif field == 3:
                shard_id = _signed(v, vh)
            elif field == 4:
                offset = _signed(v, vh)
            else:
                size = _signed(v, vh)
        elif wire == 5 and field == 6:
            if pos + 4 > end:
                raise FormatError(f"{where}: crc32c field runs past the end of the entry")
            crc = _le32(p + pos)
            pos += 4
        elif wire == 2 and (field == 2 or field == 7):
            pos = _varint(p, pos, end, &v, &vh, where)
            if vh != 0 or v > <uint64_t>(end - pos):
                raise FormatError(f"{where}: field {field} runs past the end of the entry")
            if field == 2 and listing:
                shape = _scan_shape(p, pos, pos + <Py_ssize_t>v, where, &listed.shape)
            elif field == 2:
                shape = _decode_shape(p, pos, pos + <Py_ssize_t>v, where)
            elif listing:
                _decode_slice(p, pos, pos + <Py_ssize_t>v, where)   # checked, not kept
                numbers[6] += 1
            else:
                if slices is None:
                    slices = []
                slices.append(_decode_slice(p, pos, pos + <Py_ssize_t>v, where))
            pos += <Py_ssize_t>v
        else:
            pos = _skip_field(p, pos, end, wire, where)
    if listing:
        listed.dtype = dtype
        return shape
    return _atomic((dtype, shape, shard_id, offset, size, crc,
                    () if slices is None else _atomic(tuple(slices))))


def decode_entry(buf, where):
    """BundleEntryProto bytes -> (dtype, shape, shard_id, offset, size, crc32c, slices).

    `shape` is a tuple (None for unknown rank); `slices` a tuple of slice
    tuples as returned for TensorSliceProto. Numbers are not range-checked
    here; the bundle layer checks them against the files.
    """
    cdef Py_buffer view
    if type(buf) is bytes:   # the common case: no buffer request needed
        return _decode_entry(<const unsigned char*>PyBytes_AS_STRING(buf),
                             PyBytes_GET_SIZE(buf), where)
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        return _decode_entry(<const unsigned char*>view.buf, view.len, where)
    finally:
        PyBuffer_Release(&view)


cdef inline bint _negative(uint64_t lo, uint64_t hi) noexcept:
    """Whether `_signed` of a varint is below zero."""
    return hi == 0 and lo >= (<uint64_t>1 << 63)


cdef object _info(const _Listed* e, object dims, uint64_t num_shards, dict table,
                  tuple last, const _Listed* last_e):
    """index_entries' value for an entry (`dims`: _decode_entry's return): (DType,
    shape) when `BundleReader`'s checks would pass for a plain tensor, else None.
    `last` (the previous value, or None; `last_e` its entry) is handed out again
    when equal, so that runs of tensors of one dtype and shape share a single
    tuple, and cost no Python objects but the name."""
    cdef const uint64_t* numbers = <const uint64_t*>e.numbers
    cdef Py_ssize_t rank = e.shape.rank, i
    cdef object dim, kind
    # The shard id is `_signed` of its varint: with bits above 64 it is lo + (hi - 1) * 2**64.
    if (numbers[6] != 0 or rank == -1 or numbers[1] > 1 or numbers[0] >= num_shards
            or _negative(numbers[2], numbers[3]) or _negative(numbers[4], numbers[5])):
        return None
    if rank == -2:
        for dim in <tuple>dims:
            if dim < 0:
                return None
    else:
        for i in range(rank):
            if e.shape.dims[i] < 0:
                return None
    if last is not None and last_e.dtype == e.dtype:
        kind = last[0]   # the same enum: the same table entry
    else:
        kind = table.get(e.dtype)
        if kind is None:
            return None
    if last is not None and last[0] is kind:
        if rank >= 0 and last_e.shape.rank == rank and (
                rank == 0 or memcmp(last_e.shape.dims, e.shape.dims,
                                    <size_t>rank * sizeof(int64_t)) == 0):
            return last
        if rank == -2 and last[1] == dims:
            return last
    return _atomic((kind, dims if rank == -2 else _shape_tuple(&e.shape)))


cdef list _decode_entries(const unsigned char* p, Py_ssize_t n, object where,
                          dict shapes=None, dict dtypes=None, dict table=None,
                          dict infos=None, uint64_t num_shards=0, list pairs=None,
                          bint* ascii=NULL):
    """decode_entries' list; or, given `shapes`, fill the listing maps instead;
    or, given `infos`, index_entries' map; or, given `pairs`, index_shapes' list
    (`ascii` cleared if a name is not ASCII)."""
    cdef Py_ssize_t count, end, pos = 0, shared, non_shared, value_len
    cdef _KeyBuf key
    cdef list out = []
    cdef bint listing = shapes is not None or infos is not None or pairs is not None
    cdef Py_ssize_t i
    cdef object entry
    cdef _Listed e, last_e
    cdef _Listed* listed = &e if listing else NULL
    cdef object info, kind, last = None
    end = _restarts(p, n, where, &count)
    key.data = NULL
    key.len = key.cap = 0
    try:
        while pos < end:
            pos = _entry(p, pos, end, key.len, &shared, &non_shared, &value_len, where)
            _key_set(&key, shared, p + pos, non_shared)
            pos += non_shared
            if key.len != 0 and key.data[0] != 0:
                k = PyUnicode_DecodeUTF8(<char*>key.data, key.len, "surrogateescape")
                error = None
                try:
                    entry = _decode_entry(p + pos, value_len, where, listed)
                except FormatError as exc:
                    error = exc
                if error is not None:
                    # Rare, so only now: report what _pure reports. It parses the
                    # whole block before the entries, so damage to the block comes
                    # first; then the entry's error, with the entry named.
                    _block_entries(p, n, where)
                    raise type(error)(_entry_where(where, k)
                                      + str(error)[len(f"{where}"):])
                if pairs is not None:
                    pairs.append((k, _shape_list(&e.shape, entry)))
                    if ascii[0]:
                        for i in range(key.len):
                            if key.data[i] >= 0x80:
                                ascii[0] = False
                                break
                elif infos is not None:
                    info = _info(&e, entry, num_shards, table, last, &last_e)
                    infos[k] = info
                    if info is not None and info is not last:
                        last = info
                        last_e = e
                elif listing:
                    shapes[k] = _shape_list(&e.shape, entry)
                    kind = table.get(e.dtype)
                    if kind is None and e.dtype not in table:
                        # _pure decodes the whole block first: damage further on
                        # is reported before the unknown dtype.
                        _decode_entries(p, n, where)
                        raise KeyError(e.dtype)
                    dtypes[k] = kind
                else:
                    out.append(_atomic((k, entry)))
            pos += value_len
    finally:
        PyMem_Free(key.data)
    return out


cdef str _entry_where(object where, str name):
    return f"{where}: entry {name!r}"


def decode_entries(block, where):
    """decode_entry of every tensor entry of a block: a list of (name, entry tuple).

    Names are str (UTF-8, undecodable bytes kept by surrogateescape). The
    header entry (key b"") and slice keys (first byte 0) are skipped; errors
    in an entry name it after `where`.
    """
    cdef Py_buffer view
    if type(block) is bytes:   # the common case: no buffer request needed
        return _decode_entries(<const unsigned char*>PyBytes_AS_STRING(block),
                               PyBytes_GET_SIZE(block), where)
    PyObject_GetBuffer(block, &view, PyBUF_SIMPLE)
    try:
        return _decode_entries(<const unsigned char*>view.buf, view.len, where)
    finally:
        PyBuffer_Release(&view)


def index_listing(block, where, dict shapes, dict dtypes, dict table):
    """Add every tensor entry of a block to the listing maps: `shapes[name]` =
    list(shape) (None for unknown rank), `dtypes[name]` = table[dtype enum].

    What decode_entries would give, with the same checks and errors, without
    building the rest of each entry; KeyError when an enum is not in `table`.
    After an exception the maps may hold some of the block's entries.
    """
    cdef Py_buffer view
    PyObject_GetBuffer(block, &view, PyBUF_SIMPLE)
    try:
        _decode_entries(<const unsigned char*>view.buf, view.len, where, shapes, dtypes, table)
    finally:
        PyBuffer_Release(&view)


def entry_map(list decoded, type cls, dict table):
    """{name: cls(name, table[dtype enum], shape, shard_id, offset, size, crc32c,
    slices)} of decode_entries' pairs, unchecked (`BundleReader.entries`); `cls`
    is a tuple subclass such as `bundle.Entry`. KeyError for an enum not in `table`."""
    cdef dict out = {}
    cdef tuple args
    # tuple's own constructor, called directly: what tuple.__new__(cls, items) runs
    cdef newfunc make = (<PyTypeObject*>tuple).tp_new
    for name, (enum, shape, shard, offset, size, crc, parts) in decoded:
        args = ((name, table[enum], shape, shard, offset, size, crc, parts),)
        out[name] = make(cls, <PyObject*>args, NULL)
    return out


def index_entries(block, where, dict infos, dict table, num_shards):
    """Add every tensor entry of a block to `infos`, in key order: name ->
    (table[dtype enum], shape tuple) for a plain tensor whose entry passes
    `BundleReader`'s checks (known dtype, known rank, no negative dimension,
    offset or size, shard id in 0..num_shards-1), else None (a partitioned or
    damaged entry: lookups of it take the path that builds and checks the
    whole entry). Decoding errors are decode_entries'.

    What a reader's per-name calls (`shape`, `dtype`, `in`, iteration, `len`)
    answer from, filled in one pass instead of one lookup per name.
    """
    cdef Py_buffer view
    cdef uint64_t shards = <uint64_t>max(0, min(_index(num_shards), 1 << 62))
    PyObject_GetBuffer(block, &view, PyBUF_SIMPLE)
    try:
        _decode_entries(<const unsigned char*>view.buf, view.len, where, None, None, table,
                        infos, shards)
    finally:
        PyBuffer_Release(&view)


def index_shapes(block, where, list pairs):
    """Append (name, list(shape), None for unknown rank) of every tensor entry
    of a block to `pairs`, in key order; the checks and errors are
    decode_entries'. Returns whether every name was ASCII: then the pairs are
    in the order `sorted()` gives them too (what `list_variables` returns).
    """
    cdef Py_buffer view
    cdef bint ascii = True
    PyObject_GetBuffer(block, &view, PyBUF_SIMPLE)
    try:
        _decode_entries(<const unsigned char*>view.buf, view.len, where, None, None, None,
                        None, 0, pairs, &ascii)
    finally:
        PyBuffer_Release(&view)
    return ascii


# --- DT_STRING tensors ------------------------------------------------------------

cdef inline Py_ssize_t _put_length(unsigned char* out, uint64_t n, bint big_endian) noexcept nogil:
    """A string length as the CRC sees it: 4-byte uint32, or 8-byte uint64 above
    0xFFFFFFFF, little-endian (byte-reversed for big-endian tensors)."""
    cdef Py_ssize_t width = 4 if n <= 0xFFFFFFFFU else 8
    cdef Py_ssize_t i
    for i in range(width):
        out[width - 1 - i if big_endian else i] = <unsigned char>(n >> (8 * i))
    return width


cdef uint32_t _lengths_crc(const uint64_t* lengths, Py_ssize_t count, bint big_endian) noexcept:
    cdef unsigned char chunk[4096]
    cdef Py_ssize_t used = 0, i
    cdef uint32_t crc = 0
    for i in range(count):
        if used > <Py_ssize_t>sizeof(chunk) - 8:
            crc = tff_crc32c_extend(crc, chunk, used)
            used = 0
        used += _put_length(chunk + used, lengths[i], big_endian)
    return tff_crc32c_extend(crc, chunk, used)


def decode_strings(buf, count, big_endian, verify, where):
    """Decode a DT_STRING tensor's bytes into a list of `count` bytes objects.

    Returns (values, crc) where crc is the unmasked CRC-32C TensorFlow stores
    for the whole tensor (0 when `verify` is false). The length checksum is
    verified when `verify` is true.
    """
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t end, pos = 0, c, i
    cdef uint64_t* lengths = NULL
    cdef uint64_t v, vh, total_lo = 0, total_hi = 0
    cdef uint32_t crc = 0, stored
    cdef bint big = bool(big_endian)
    cdef list values
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        p = <const unsigned char*>view.buf
        end = view.len
        if count > end:
            raise FormatError(f"{where}: {count} strings cannot fit in {end} bytes")
        c = count if count > 0 else 0
        lengths = <uint64_t*>PyMem_Malloc(<size_t>(c if c else 1) * sizeof(uint64_t))
        if lengths == NULL:
            raise MemoryError()
        for i in range(c):
            pos = _varint(p, pos, end, &v, &vh, where)
            lengths[i] = v
            total_lo += v
            total_hi += vh + (1 if total_lo < v else 0)   # carry
        if pos + 4 > end:
            raise FormatError(f"{where}: string tensor ends before its length checksum "
                              f"at offset {pos}")
        pos += 4
        if total_hi != 0 or total_lo > <uint64_t>(end - pos):
            raise FormatError(f"{where}: string lengths add up to {_pyint(total_lo, total_hi)} "
                              f"bytes but only {end - pos} remain at offset {pos}")
        if verify:
            crc = _lengths_crc(lengths, c, big)
            stored = _le32(p + pos - 4)
            if big:
                stored = ((stored >> 24) | ((stored >> 8) & 0xFF00) | ((stored << 8) & 0xFF0000)
                          | (stored << 24))
            if tff_crc32c_unmask(stored) != crc:
                raise ChecksumError(f"{where}: string length checksum mismatch at offset {pos - 4}")
            crc = tff_crc32c_extend(crc, p + pos - 4, 4)
        values = [None] * c
        for i in range(c):
            values[i] = PyBytes_FromStringAndSize(<const char*>(p + pos), <Py_ssize_t>lengths[i])
            pos += <Py_ssize_t>lengths[i]
        if verify:
            crc = _crc(crc, p + pos - <Py_ssize_t>total_lo, <Py_ssize_t>total_lo)
        return values, crc
    finally:
        PyMem_Free(lengths)
        PyBuffer_Release(&view)


def encode_strings(values):
    """DT_STRING tensor bytes for `values` (bytes objects), and their masked CRC."""
    cdef list items = []
    cdef Py_ssize_t count, i, header = 0, body = 0, pos, n
    cdef uint64_t* lengths = NULL
    cdef unsigned char* out
    cdef uint32_t crc, masked
    cdef uint64_t v
    for value in values:
        if not isinstance(value, bytes):
            value = _as_bytes(value)
        items.append(value)
    count = PyList_GET_SIZE(items)
    lengths = <uint64_t*>PyMem_Malloc(<size_t>(count if count else 1) * sizeof(uint64_t))
    if lengths == NULL:
        raise MemoryError()
    try:
        for i in range(count):
            n = PyBytes_GET_SIZE(items[i])
            lengths[i] = <uint64_t>n
            body += n
            header += 1
            while n >= 0x80:
                header += 1
                n >>= 7
        result = PyBytes_FromStringAndSize(NULL, header + 4 + body)
        out = <unsigned char*>PyBytes_AS_STRING(result)
        pos = 0
        for i in range(count):
            v = lengths[i]
            while v >= 0x80:
                out[pos] = <unsigned char>((v & 0x7F) | 0x80)
                pos += 1
                v >>= 7
            out[pos] = <unsigned char>v
            pos += 1
        crc = _lengths_crc(lengths, count, False)
        masked = tff_crc32c_mask(crc)
        for i in range(4):
            out[pos + i] = <unsigned char>(masked >> (8 * i))
        pos += 4
        for i in range(count):
            n = PyBytes_GET_SIZE(items[i])
            memcpy(out + pos, PyBytes_AS_STRING(items[i]), n)
            pos += n
        # The tensor CRC continues over the checksum bytes and the strings.
        crc = _crc(crc, out + header, 4 + body)
        return result, tff_crc32c_mask(crc)
    finally:
        PyMem_Free(lengths)


cdef bytes _as_bytes(object value):
    """A copy of any C-contiguous buffer's bytes (TypeError for non-buffers)."""
    cdef Py_buffer view
    PyObject_GetBuffer(value, &view, PyBUF_SIMPLE)
    try:
        return PyBytes_FromStringAndSize(<const char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
