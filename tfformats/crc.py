"""CRC-32C over big buffers on several cores, and combining partial CRCs.

The CRC functions of both implementations release the GIL on large buffers,
so pieces of one tensor can be checked on threads and their CRCs combined.
"""

import functools
import os

from ._impl import hot

# crc(A + B) from crc(A), crc(B) and len(B): appending len(B) bytes multiplies
# crc(A) by x^(8 len(B)) in GF(2)[x] modulo the Castagnoli polynomial (bit-reflected
# here, so x^0 is the top bit); then crc(B) is added.

_POLY = 0x82F63B78


def _gf2_multiply(a, b):
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


_X8 = 1 << 23   # x^8: one byte


@functools.lru_cache(maxsize=1024)
def _x_pow_8n(nbytes):
    """x^(8 nbytes) mod P, by squaring. The powers x^(2^k) must not be reused
    modulo 32: the polynomial is not irreducible, so x^(2^32) is not x, and
    pieces of 2**29 bytes or more would get a wrong CRC. Cached: a checkpoint's
    tensors come in a few sizes, and squaring in Python costs ~100 µs a call,
    more than checking a megabyte."""
    p, power = 1 << 31, _X8   # x^0; x^(8 * 2^k)
    while nbytes:
        if nbytes & 1:
            p = _gf2_multiply(power, p)
        power = _gf2_multiply(power, power)
        nbytes >>= 1
    return p


@functools.lru_cache(maxsize=1024)
def _shifted_bits(nbytes):
    """x^(8 nbytes) times each single-bit CRC: multiplying is linear, so a
    product is the XOR of these for the bits set in the other factor."""
    power = _x_pow_8n(nbytes)
    return tuple(_gf2_multiply(power, 1 << j) for j in range(32))


def crc32c_combine(crc1, crc2, len2):
    """CRC-32C of A + B given crc1 = CRC(A), crc2 = CRC(B) and len2 = len(B)."""
    if len2 <= 0:
        return crc1
    product = 0
    for j, shifted in enumerate(_shifted_bits(len2)):
        if crc1 >> j & 1:
            product ^= shifted
    return product ^ crc2


# Below this a tensor is checked in one piece: thread hand-offs would cost more.
PARALLEL_MIN_BYTES = 1 << 20
_WORKERS = min(4, os.cpu_count() or 1)
_pool = None


def _shared_pool():
    global _pool
    if _pool is None:
        # Imported here: concurrent.futures brings logging, which listing an
        # index (`tfformats ls`) never needs.
        from concurrent.futures import ThreadPoolExecutor
        _pool = ThreadPoolExecutor(max(1, _WORKERS - 1), thread_name_prefix="tfformats-crc")
    return _pool


def crc32c_in_background(data, value=0):
    """A future for hot.crc32c(data, value), computed on another core (the GIL is
    released), so a caller can write `data` out meanwhile."""
    return _shared_pool().submit(hot.crc32c, data, value)


# A big buffer is checked in pieces, about PIECES_PER_WORKER per core and at
# most PIECE_BYTES each, which the calling thread and the pool's threads take
# one at a time until none is left. A helper that starts late (its core busy,
# or idle and slow to wake, as virtual machines' often are) then takes fewer
# pieces instead of the caller waiting for a fixed share of its, and at the
# end the caller waits for at most the one piece a helper is still on.
PIECES_PER_WORKER = 2
PIECE_BYTES = 8 << 20
_PAGE = 4096   # pieces are whole pages (of the buffer)


class Pieces:
    """The CRC-32C of one big buffer, begun on the pool's threads (`begun`):
    they take its pieces while the caller does other work, and `result()`
    has the caller take whatever is left, wait for the pieces in flight and
    combine them."""

    def __init__(self, buffer):
        n = len(buffer)
        step = min(PIECE_BYTES, -(-n // (PIECES_PER_WORKER * _WORKERS)))
        self._step = step = -(-step // _PAGE) * _PAGE
        count = -(-n // step)
        self._buffer, self._n = buffer, n
        self._crcs = [0] * count
        self._pending = list(range(count - 1, -1, -1))   # popped from the end: in order
        self._stopped = False
        self._helpers = [_shared_pool().submit(self._take, True)
                         for _ in range(min(_WORKERS, count) - 1)]

    def _take(self, helping=False):
        """CRC each piece that `pending.pop()` hands this thread (list.pop is
        atomic) until none is left; a helper also stops once `stop()` was called."""
        buffer, step, crcs, pending = self._buffer, self._step, self._crcs, self._pending
        while not (helping and self._stopped):
            try:
                i = pending.pop()
            except IndexError:
                return
            crcs[i] = hot.crc32c(buffer[i * step:(i + 1) * step])

    def stop(self):
        """The helpers take no more pieces (work begun ahead that nobody may
        want); `result()` would still take every piece left."""
        self._stopped = True

    def result(self):
        self._take()
        for helper in self._helpers:
            if not helper.cancel():   # one that never started has nothing to finish
                helper.result()
        step, crcs = self._step, self._crcs
        crc = crcs[0]
        for i in range(1, len(crcs)):
            crc = crc32c_combine(crc, crcs[i], min(step, self._n - i * step))
        return crc


def begun(buffer):
    """`Pieces` of `buffer` (a memoryview) begun on the pool's threads, or None
    where one core checks it best (small, or a single worker)."""
    if _WORKERS < 2 or len(buffer) < PARALLEL_MIN_BYTES:
        return None
    return Pieces(buffer)


def crc32c_parallel(buffer):
    """CRC-32C of `buffer` (a memoryview), its pieces computed on several cores."""
    pieces = begun(buffer)
    return hot.crc32c(buffer) if pieces is None else pieces.result()


# Copies are checked in steps of this many bytes: each step's CRC then reads
# bytes the copy has just brought into the cache, instead of a second pass
# over memory.
COPY_STEP = 1 << 20


def _copy_and_check(src, dst):
    """Copy `src` into `dst` (numpy uint8 arrays of one length) step by step,
    returning the CRC-32C of the copied bytes; both steps release the GIL."""
    import numpy as np
    crc = 0
    for a in range(0, len(src), COPY_STEP):
        piece = dst[a:a + COPY_STEP]
        np.copyto(piece, src[a:a + COPY_STEP])
        crc = hot.crc32c(piece, crc)
    return crc


def crc32c_copy_parallel(src, dst):
    """Copy the bytes of `src` into `dst` (a writable buffer of the same
    length) and return the CRC-32C of what now is in `dst`, pieces on several
    cores: a verified private copy in one pass over the bytes."""
    import numpy as np
    src = np.frombuffer(src, np.uint8)
    dst = np.frombuffer(dst, np.uint8)
    n = len(src)
    if len(dst) != n:
        raise ValueError(f"copy of {n} bytes into a buffer of {len(dst)}")
    if _WORKERS < 2 or n < PARALLEL_MIN_BYTES:
        return _copy_and_check(src, dst)
    step = -(-n // _WORKERS)
    cuts = list(range(0, n, step))
    futures = [_shared_pool().submit(_copy_and_check, src[a:a + step], dst[a:a + step])
               for a in cuts[1:]]
    crc = _copy_and_check(src[:step], dst[:step])
    for a, future in zip(cuts[1:], futures):
        crc = crc32c_combine(crc, future.result(), min(step, n - a))
    return crc
