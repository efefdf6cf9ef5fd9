"""HighwayHash-64, pure Python; the twin of `native/highwayhash.pxi`.

Riegeli/records files (the container of chunked `saved_model.cpb` files)
hash every block header, chunk header and chunk payload with HighwayHash-64
under one fixed key; docs/formats.md ("Chunked SavedModels") has the layout.
The state is four lanes of (v0, v1, mul0, mul1); 32-byte packets are mixed
in one after another and a short tail is folded into one last packet. All
arithmetic is on unsigned 64-bit integers. This twin runs at about 2 MB/s:
it exists so that the pure-Python build reads the same files, not for speed.
"""

import struct

_M = 0xFFFFFFFFFFFFFFFF
_INIT0 = (0xDBE6D5D5FE4CCE2F, 0xA4093822299F31D0, 0x13198A2E03707344, 0x243F6A8885A308D3)
_INIT1 = (0x3BD39E10CB0EF593, 0xC0ACF169B5F18A8C, 0xBE5466CF34E90C6C, 0x452821E638D01377)
_PACKET = struct.Struct("<4Q")

# The key of Riegeli/records: "Riegeli/records\n" twice, as four little-endian words.
RIEGELI_KEY = (0x2F696C6567656952, 0x0A7364726F636572, 0x2F696C6567656952, 0x0A7364726F636572)


def _zipper(v1, v0):
    """The byte shuffle that spreads the multiplications' high bits: the
    values added to the (lane 2k+1, lane 2k) pair of the other vector."""
    add0 = ((((v0 & 0xFF000000) | (v1 & 0xFF00000000)) >> 24)
            | (((v0 & 0xFF0000000000) | (v1 & 0xFF000000000000)) >> 16)
            | (v0 & 0xFF0000) | ((v0 & 0xFF00) << 32)
            | ((v1 & 0xFF00000000000000) >> 8) | ((v0 << 56) & _M))
    add1 = ((((v1 & 0xFF000000) | (v0 & 0xFF00000000)) >> 24)
            | (v1 & 0xFF0000) | ((v1 & 0xFF0000000000) >> 16)
            | ((v1 & 0xFF00) << 24) | ((v0 & 0xFF000000000000) >> 8)
            | ((v1 & 0xFF) << 48) | (v0 & 0xFF00000000000000))
    return add1, add0


class _State:
    __slots__ = ("v0", "v1", "mul0", "mul1")

    def __init__(self, key):
        self.mul0 = list(_INIT0)
        self.mul1 = list(_INIT1)
        self.v0 = [m ^ k for m, k in zip(_INIT0, key)]
        self.v1 = [m ^ (((k >> 32) | (k << 32)) & _M) for m, k in zip(_INIT1, key)]

    def update(self, lanes):
        v0, v1, mul0, mul1 = self.v0, self.v1, self.mul0, self.mul1
        for i in range(4):
            v1[i] = (v1[i] + mul0[i] + lanes[i]) & _M
            mul0[i] ^= (v1[i] & 0xFFFFFFFF) * (v0[i] >> 32)
            v0[i] = (v0[i] + mul1[i]) & _M
            mul1[i] ^= (v0[i] & 0xFFFFFFFF) * (v1[i] >> 32)
        for dst, src in ((v0, v1), (v1, v0)):
            for hi, lo in ((1, 0), (3, 2)):
                add1, add0 = _zipper(src[hi], src[lo])
                dst[lo] = (dst[lo] + add0) & _M
                dst[hi] = (dst[hi] + add1) & _M

    def update_tail(self, tail):
        n = len(tail)   # 1..31
        for i in range(4):
            self.v0[i] = (self.v0[i] + ((n << 32) + n)) & _M
            half0, half1 = self.v1[i] & 0xFFFFFFFF, self.v1[i] >> 32
            self.v1[i] = _rotl32(half0, n) | (_rotl32(half1, n) << 32)
        packet = bytearray(32)
        whole = n & ~3
        packet[:whole] = tail[:whole]
        rest = tail[whole:]
        if n & 16:
            packet[28:32] = tail[n - 4:n]
        elif rest:
            k = len(rest)
            packet[16], packet[17], packet[18] = rest[0], rest[k >> 1], rest[k - 1]
        self.update(_PACKET.unpack(packet))

    def finish(self):
        for _ in range(4):
            v0 = self.v0
            self.update([_swap_halves(v0[2]), _swap_halves(v0[3]),
                         _swap_halves(v0[0]), _swap_halves(v0[1])])
        return (self.v0[0] + self.v1[0] + self.mul0[0] + self.mul1[0]) & _M


def _rotl32(x, n):
    n &= 31
    return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF if n else x


def _swap_halves(x):
    return ((x >> 32) | (x << 32)) & _M


def highway_hash64(data, key=RIEGELI_KEY):
    """HighwayHash-64 of `data` (any bytes-like object) under `key` (four ints)."""
    data = memoryview(data).cast("B")
    if len(key) != 4:
        raise ValueError("a HighwayHash key is four 64-bit integers")
    state = _State(key)
    whole = len(data) & ~31
    for lanes in struct.iter_unpack("<4Q", data[:whole]):
        state.update(lanes)
    if len(data) & 31:
        state.update_tail(bytes(data[whole:]))
    return state.finish()
