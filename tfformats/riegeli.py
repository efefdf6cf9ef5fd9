"""Riegeli/records files: the container of chunked SavedModels (`saved_model.cpb`).

A file is a sequence of chunks, each a 40-byte header plus data, interrupted
every 64 KiB by a 24-byte block header that says where the surrounding chunk
begins and ends. Simple chunks ('r') hold records: a compression byte, the
compressed record sizes, then the compressed concatenated values. Every
header and every chunk's data carries a HighwayHash-64, all checked here.
A record's numeric position is its chunk's begin offset plus its index in
the chunk; that is how `saved_model.cpb` metadata points at records.
docs/formats.md ("Chunked SavedModels") has the layout.

Compression (Brotli, Zstd, Snappy) goes through cramjam, the `cpb` extra.
Decompressed sizes claimed by a file are never preallocated: buffers grow
only as real output is produced, and must then match the claim.
"""

from __future__ import annotations

import struct
from typing import Any

from ._impl import hot
from .errors import ChecksumError, FormatError, UnsupportedError

BLOCK_SIZE = 1 << 16
BLOCK_HEADER_SIZE = 24
USABLE_BLOCK_SIZE = BLOCK_SIZE - BLOCK_HEADER_SIZE
CHUNK_HEADER_SIZE = 40

SIGNATURE, METADATA, PADDING, SIMPLE, TRANSPOSED = b"s", b"m", b"p", b"r", b"t"
NONE, BROTLI, ZSTD, SNAPPY = 0, ord("b"), ord("z"), ord("s")
_COMPRESSION_NAMES = {NONE: "none", BROTLI: "brotli", ZSTD: "zstd", SNAPPY: "snappy"}

# Every file begins with a block header and an empty signature chunk: 64 fixed bytes.
FILE_SIGNATURE = bytes.fromhex(
    "83af70d10d884a3f0000000000000000400000000000000091bac23c9287e1a9"
    "0000000000000000e19f13c0e9b1c37273000000000000000000000000000000")

_BLOCK_HEADER = struct.Struct("<QQQ")
_CHUNK_HEADER = struct.Struct("<QQQQQ")   # hash, data size, data hash, type+records, decoded size


# --- positions (formulas of the format: where a chunk ends) -----------------------

def _add_with_overhead(pos, size):
    """The position `size` chunk bytes after `pos`, block headers included."""
    blocks = (size + (pos + USABLE_BLOCK_SIZE - 1) % BLOCK_SIZE) // USABLE_BLOCK_SIZE
    return pos + size + blocks * BLOCK_HEADER_SIZE


def _round_up_to_chunk_boundary(pos):
    """The first position at or after `pos` not inside or right after a block header."""
    return pos + max((-pos) % BLOCK_SIZE - (USABLE_BLOCK_SIZE - 1), 0)


def chunk_end(begin: int, data_size: int, num_records: int) -> int:
    return max(_add_with_overhead(begin, CHUNK_HEADER_SIZE + data_size),
               _round_up_to_chunk_boundary(begin + num_records))


# --- compression ----------------------------------------------------------------

def _cramjam(what):
    try:
        import cramjam
    except ImportError:
        raise UnsupportedError(f"{what}: reading compressed Riegeli chunks needs cramjam "
                               "(pip install 'tfformats[cpb]')") from None
    return cramjam


def _decompress(compression, data, where):
    if compression == NONE:
        return bytes(data)
    if compression not in _COMPRESSION_NAMES:
        raise FormatError(f"{where}: unknown compression type {compression:#x}")
    size, pos = hot.decode_varint(data, 0, where)
    cramjam = _cramjam(where)
    codec = {BROTLI: cramjam.brotli.decompress, ZSTD: cramjam.zstd.decompress,
             SNAPPY: cramjam.snappy.decompress_raw}[compression]
    try:
        out = bytes(codec(bytes(data[pos:])))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise FormatError(f"{where}: {_COMPRESSION_NAMES[compression]} data does not "
                          f"decompress ({exc})") from None
    if len(out) != size:
        raise FormatError(f"{where}: decompressed to {len(out)} bytes, the chunk says {size}")
    return out


def _compress(compression, data):
    if compression == NONE:
        return bytes(data)
    cramjam = _cramjam("writing")
    codec = {BROTLI: cramjam.brotli.compress, ZSTD: cramjam.zstd.compress,
             SNAPPY: cramjam.snappy.compress_raw}[compression]
    return hot.encode_varint(len(data)) + bytes(codec(bytes(data)))


# --- reading ----------------------------------------------------------------------

class RecordsFile:
    """The records of one Riegeli/records file held in `buf` (bytes-like).

    `records` lists (numeric position, bytes) in file order; `record_at(p)`
    finds one by numeric position. Every hash is checked while reading.
    """

    def __init__(self, buf: Any, path: str) -> None:
        self.path = path
        self._buf = memoryview(buf).cast("B")
        self.records: list[tuple[int, bytes]] = []
        self._by_position: dict[int, bytes] = {}
        self._read_all()

    def record_at(self, position: int, what: str = "record") -> bytes:
        try:
            return self._by_position[position]
        except KeyError:
            raise FormatError(f"{self.path}: no {what} at record position {position}") from None

    def _take(self, pos, n, what):
        """`n` chunk bytes from file offset `pos`, skipping (and checking) block
        headers; returns (bytes, offset after them)."""
        buf, size = self._buf, len(self._buf)
        parts = []
        while n > 0:
            in_block = pos % BLOCK_SIZE
            if in_block < BLOCK_HEADER_SIZE:
                self._check_block_header(pos - in_block)
                pos += BLOCK_HEADER_SIZE - in_block
                continue
            take = min(n, BLOCK_SIZE - in_block)
            if pos + take > size:
                raise FormatError(f"{self.path}: {what} at offset {pos} runs past the end of "
                                  f"the file ({size} bytes)")
            parts.append(buf[pos:pos + take])
            pos += take
            n -= take
        return b"".join(parts), pos

    def _check_block_header(self, block):
        if block + BLOCK_HEADER_SIZE > len(self._buf):
            raise FormatError(f"{self.path}: block header at offset {block} is cut off")
        header_hash, _, _ = _BLOCK_HEADER.unpack_from(self._buf, block)
        if hot.highway_hash64(self._buf[block + 8:block + BLOCK_HEADER_SIZE]) != header_hash:
            raise ChecksumError(f"{self.path}: block header at offset {block}: hash mismatch")

    def _read_all(self):
        size, pos = len(self._buf), 0
        if self._buf[:len(FILE_SIGNATURE)] != FILE_SIGNATURE:
            raise FormatError(f"{self.path}: not a Riegeli/records file (it does not start with "
                              "the file signature)")
        while pos < size:
            header, data_pos = self._take(pos, CHUNK_HEADER_SIZE, "chunk header")
            header_hash, data_size, data_hash, kind_and_count, decoded_size = \
                _CHUNK_HEADER.unpack(header)
            where = f"{self.path}: chunk at offset {pos}"
            if hot.highway_hash64(header[8:]) != header_hash:
                raise ChecksumError(f"{where}: chunk header hash mismatch")
            kind, num_records = bytes([kind_and_count & 0xFF]), kind_and_count >> 8
            end = chunk_end(pos, data_size, num_records)
            if data_size > size or end > _round_up_to_chunk_boundary(size):
                raise FormatError(f"{where}: {data_size} data bytes and {num_records} records "
                                  f"do not fit in the file ({size} bytes)")
            data, _ = self._take(data_pos, data_size, "chunk data")
            if hot.highway_hash64(data) != data_hash:
                raise ChecksumError(f"{where}: chunk data hash mismatch")
            if kind == SIMPLE:
                self._add_records(pos, self._simple_records(data, num_records, decoded_size, where))
            elif kind == TRANSPOSED:
                raise UnsupportedError(f"{where}: transposed chunks are not supported")
            elif kind in (SIGNATURE, PADDING, METADATA):
                if num_records:
                    raise FormatError(f"{where}: a {kind.decode()!r} chunk with records")
            else:
                raise FormatError(f"{where}: unknown chunk type {kind!r}")
            pos = end

    def _add_records(self, chunk_begin, values):
        for index, value in enumerate(values):
            self.records.append((chunk_begin + index, value))
            self._by_position[chunk_begin + index] = value

    @staticmethod
    def _simple_records(data, num_records, decoded_size, where):
        if not data:
            raise FormatError(f"{where}: empty simple chunk")
        compression = data[0]
        sizes_size, pos = hot.decode_varint(data, 1, where)
        if sizes_size > len(data) - pos:
            raise FormatError(f"{where}: record sizes ({sizes_size} bytes) run past the chunk")
        sizes_buf = _decompress(compression, data[pos:pos + sizes_size], where + " (sizes)")
        values = _decompress(compression, data[pos + sizes_size:], where + " (values)")
        if len(values) != decoded_size:
            raise FormatError(f"{where}: {len(values)} bytes of records, the header says "
                              f"{decoded_size}")
        records, at, start = [], 0, 0
        for _ in range(num_records):
            n, at = hot.decode_varint(sizes_buf, at, where + " (sizes)")
            if n > len(values) - start:
                raise FormatError(f"{where}: record {len(records)} ({n} bytes) runs past the "
                                  "values")
            records.append(values[start:start + n])
            start += n
        if at != len(sizes_buf) or start != len(values):
            raise FormatError(f"{where}: record sizes do not add up to the chunk's values")
        return records


def read_records(buf: Any, path: str) -> RecordsFile:
    """The RecordsFile of the Riegeli/records bytes `buf` (read from `path`)."""
    return RecordsFile(buf, path)


# --- writing ----------------------------------------------------------------------

class RecordsWriter:
    """Builds a Riegeli/records file in memory: `write(record)` returns the
    record's numeric position, `getvalue()` the finished file's bytes.
    Records are grouped into simple chunks of about `chunk_size` bytes."""

    def __init__(self, compression: int = BROTLI, chunk_size: int = 1 << 20) -> None:
        self._compression = compression
        self._chunk_size = chunk_size
        self._out = bytearray()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._emit_chunk(SIGNATURE, b"", 0, 0)

    def write(self, record: bytes) -> int:
        position = len(self._out) + len(self._pending)
        self._pending.append(bytes(record))
        self._pending_bytes += len(record)
        if self._pending_bytes >= self._chunk_size:
            self._flush()
        return position

    def getvalue(self) -> bytes:
        self._flush()
        return bytes(self._out)

    def _flush(self):
        if not self._pending:
            return
        sizes = b"".join(hot.encode_varint(len(r)) for r in self._pending)
        values = b"".join(self._pending)
        sizes = _compress(self._compression, sizes)
        data = (bytes([self._compression]) + hot.encode_varint(len(sizes)) + sizes
                + _compress(self._compression, values))
        self._emit_chunk(SIMPLE, data, len(self._pending), len(values))
        self._pending, self._pending_bytes = [], 0

    def _emit_chunk(self, kind, data, num_records, decoded_size):
        begin = len(self._out)
        end = chunk_end(begin, len(data), num_records)
        body = _CHUNK_HEADER.pack(0, len(data), hot.highway_hash64(data),
                                  kind[0] | (num_records << 8), decoded_size)[8:]
        header = struct.pack("<Q", hot.highway_hash64(body)) + body
        out, pos = self._out, begin
        for piece in (header, data, None):
            view = memoryview(piece) if piece is not None else None
            while (pos < end) if view is None else view:
                if pos % BLOCK_SIZE == 0:
                    links = struct.pack("<QQ", pos - begin, end - pos)
                    out += struct.pack("<Q", hot.highway_hash64(links)) + links
                    pos += BLOCK_HEADER_SIZE
                room = BLOCK_SIZE - pos % BLOCK_SIZE
                if view is None:   # zero padding up to the chunk's end
                    take = min(end - pos, room)
                    out += bytes(take)
                else:
                    take = min(len(view), room)
                    out += view[:take]
                    view = view[take:]
                pos += take
        assert pos == len(out)
