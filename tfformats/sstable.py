"""LevelDB-style tables as TensorFlow writes them (the `.index` of a bundle).

Layout: data blocks, an (empty) metaindex block, an index block and a 48-byte
footer. Each block ends in a 5-byte trailer: compression type and a masked
CRC-32C of contents + type. Block parsing lives in the hot-path module.
"""

import bisect
import struct
import threading

from . import limits
from ._impl import hot
from .errors import ChecksumError, FormatError, TFFormatsError, UnsupportedError

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
TRAILER_SIZE = 5
NO_COMPRESSION = 0
SNAPPY_COMPRESSION = 1
# Snappy cannot expand data by more than this; bounds what a block may claim.
_MAX_SNAPPY_RATIO = 64
# A scan over a remote table fetches its blocks this many bytes at a time.
_PREFETCH_BYTES = 16 * 1024 * 1024


def decode_handle(buf, where):
    """A BlockHandle (offset, size varints) -> (offset, size)."""
    offset, pos = hot.decode_varint(buf, 0, where)
    size, _ = hot.decode_varint(buf, pos, where)
    return offset, size


def _snappy_decompress(data, where):
    try:
        import cramjam
    except ImportError:
        raise FormatError(f"{where}: the block is Snappy-compressed; install the optional "
                          "extra with `pip install tfformats[snappy]`") from None
    data = bytes(data)
    claimed, _ = hot.decode_varint(data, 0, where)
    if claimed > _MAX_SNAPPY_RATIO * len(data) + 64:
        raise FormatError(f"{where}: Snappy block claims {claimed} bytes from {len(data)}")
    limits.check("max_block_bytes", claimed, f"{where}: bytes of the decompressed block")
    try:
        return bytes(cramjam.snappy.decompress_raw(data))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise FormatError(f"{where}: corrupt Snappy data ({exc})") from None


def _check_keys(block, where, after, upto):
    """Key order and the key limits of one block, in the one pass over its
    keys that comes before any of them is built (`hot.check_block_keys`)."""
    current = limits.current()
    hot.check_block_keys(block, where, after, upto, current.max_key_bytes,
                         current.max_block_key_bytes)


class Table:
    """Read access to one table: `get(key)` and `items()`.

    Only the footer and the index block are read on open; data blocks are
    read (and their CRC verified) when a lookup or a scan needs them.
    """

    def __init__(self, source, verify=True):
        self.source = source
        self.verify = verify
        size = source.size()
        limits.check("max_index_bytes", size, f"{source.path}: bytes of the table")
        if size < FOOTER_SIZE:
            raise FormatError(f"{source.path}: {size} bytes is too short for a table footer")
        load_tail = getattr(source, "load_tail", None)
        if load_tail is not None:   # remote: footer and index block in one request
            load_tail()
        footer = source.read(size - FOOTER_SIZE, FOOTER_SIZE)
        magic_lo, magic_hi = struct.unpack_from("<II", footer, 40)
        if (magic_hi << 32) | magic_lo != MAGIC:
            raise FormatError(f"{source.path}: bad table magic in the footer at offset "
                              f"{size - FOOTER_SIZE}; not a TensorFlow index file")
        where = f"{source.path}: footer at offset {size - FOOTER_SIZE}"
        _, pos = hot.decode_varint(footer, 0, where)
        _, pos = hot.decode_varint(footer, pos, where)
        index_handle = decode_handle(footer[pos:40], where)
        self._index_handle = index_handle
        index = self._block(*index_handle, "index block")
        where = f"{source.path}: index block at offset {index_handle[0]}"
        _check_keys(index, where, None, None)   # lookups bisect the separators
        entries = hot.block_entries(index, where)
        self._separators = [k for k, _ in entries]
        self._handles = [decode_handle(v, f"{source.path}: index entry {k!r}") for k, v in entries]
        self._cache = {}   # block number -> contents, the 8 most recently read
        self._cache_lock = threading.Lock()

    def _block(self, offset, size, what, verify=None):
        """Contents of the block at `offset`, trailer checked, decompressed; its
        CRC checked when `verify` (default: the table's setting)."""
        where = f"{self.source.path}: {what} at offset {offset}"
        if size > self.source.size():
            raise FormatError(f"{where}: block size {size} exceeds the file")
        limits.check("max_block_bytes", size, f"{where}: bytes of the block")
        raw = self.source.view(offset, size + TRAILER_SIZE, what)
        kind = raw[size]
        if self.verify if verify is None else verify:
            stored = struct.unpack_from("<I", raw, size + 1)[0]
            if hot.crc32c(raw[:size + 1]) != hot.unmask_crc(stored):
                raise ChecksumError(f"{where}: block checksum mismatch")
        if kind == NO_COMPRESSION:
            return raw[:size]
        if kind == SNAPPY_COMPRESSION:
            return _snappy_decompress(raw[:size], where)
        raise FormatError(f"{where}: unknown block compression type {kind}")

    def _data_block(self, i):
        block = self._cache.get(i)
        if block is None:
            offset, size = self._handles[i]
            block = self._block(offset, size, "data block")
            # Lookups binary-search, so keys out of order (or twice) would make
            # a name found or not depending on how it is looked for: checked
            # once per block, against the index block's bounds too.
            _check_keys(block, f"{self.source.path}: data block at offset {offset}",
                        self._separators[i - 1] if i else None, self._separators[i])
            # Threads sharing a reader evict concurrently: one at a time, or two
            # could pop the same oldest block (KeyError) or iterate while the
            # other resizes. Lookups (dict.get) need no lock.
            with self._cache_lock:
                if len(self._cache) >= 8:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[i] = block
        return block

    def get(self, key):
        """The value stored under `key` (bytes), or None."""
        i = bisect.bisect_left(self._separators, key)
        if i == len(self._separators):
            return None
        offset = self._handles[i][0]
        found = hot.block_seek(self._data_block(i), key,
                               f"{self.source.path}: data block at offset {offset}")
        if found is None or found[0] != key:
            return None
        return found[1]

    def block_offset(self, key):
        """File offset of the data block that holds `key` if the table has it
        (None past the last block); reads nothing."""
        i = bisect.bisect_left(self._separators, key)
        return self._handles[i][0] if i < len(self._handles) else None

    def data_blocks(self):
        """(contents, where) of every data block, in key order."""
        prefetched = 0
        for i, (offset, _) in enumerate(self._handles):
            if i >= prefetched:
                prefetched = self._prefetch(i)
            yield self._data_block(i), f"{self.source.path}: data block at offset {offset}"

    def _prefetch(self, first, window=_PREFETCH_BYTES):
        """Let a source that can (remote ones) fetch the blocks from `first` on,
        up to `window` bytes, in one go; the number of the block after them."""
        prefetch = getattr(self.source, "prefetch", None)
        if prefetch is None:
            return len(self._handles)
        end, total, ranges = first, 0, []
        while end < len(self._handles) and (not ranges or total < window):
            offset, size = self._handles[end]
            if end not in self._cache:
                ranges.append((offset, size + TRAILER_SIZE))
                total += size + TRAILER_SIZE
            end += 1
        prefetch(ranges)
        return end

    def items(self):
        """Every (key, value) in key order, block by block."""
        for block, where in self.data_blocks():
            yield from hot.block_entries(block, where)

    def check_index_block(self):
        """Raise ChecksumError if the index block's CRC does not match, whatever `verify` says."""
        self._block(*self._index_handle, "index block", verify=True)

    def checked_blocks(self):
        """(offset, contents, problem) of every data block in key order, each CRC
        checked whatever `verify` says. `problem` is None, a ChecksumError (the
        contents are still given, read unchecked) or another TFFormatsError
        (contents None): a scan that reports every damaged block, not the first."""
        for i, (offset, size) in enumerate(self._handles):
            problem = None
            try:
                try:
                    contents = self._block(offset, size, "data block", verify=True)
                except ChecksumError as e:
                    problem = e
                    contents = self._block(offset, size, "data block", verify=False)
                _check_keys(contents, f"{self.source.path}: data block at offset {offset}",
                            self._separators[i - 1] if i else None, self._separators[i])
            except TFFormatsError as e:
                yield offset, None, e
            else:
                yield offset, contents, problem

    def block_count(self):
        return len(self._handles)


# --- writing ------------------------------------------------------------------

def encode_handle(offset, size):
    return hot.encode_varint(offset) + hot.encode_varint(size)


def _snappy_compress(data):
    try:
        import cramjam
    except ImportError:
        raise UnsupportedError("Snappy-compressed tables need the optional extra: "
                               "`pip install tfformats[snappy]`") from None
    return bytes(cramjam.snappy.compress_raw(data))


def _shortest_separator(start, limit):
    """A short key k with start <= k < limit (LevelDB's bytewise rule)."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i < n and start[i] < 0xFF and start[i] + 1 < limit[i]:
        return start[:i] + bytes([start[i] + 1])
    return start  # one is a prefix of the other, or no room to shorten


def _short_successor(key):
    """A short key >= `key`: its first non-0xff byte, incremented."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


class _BlockBuilder:
    """Entries with prefix-compressed keys, then the restart offsets."""

    def __init__(self, restart_interval):
        self.restart_interval = restart_interval
        self.reset()

    def reset(self):
        self.buffer = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""

    def empty(self):
        return not self.buffer

    def size_estimate(self):
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def add(self, key, value):
        shared = 0
        if self.counter < self.restart_interval:
            last = self.last_key
            n = min(len(last), len(key))
            while shared < n and last[shared] == key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.counter = 0
        buf = self.buffer
        buf += hot.encode_varint(shared)
        buf += hot.encode_varint(len(key) - shared)
        buf += hot.encode_varint(len(value))
        buf += key[shared:]
        buf += value
        self.last_key = key
        self.counter += 1

    def finish(self):
        return bytes(self.buffer) + struct.pack(f"<{len(self.restarts) + 1}I",
                                                *self.restarts, len(self.restarts))


class TableBuilder:
    """Writes a table exactly as TensorFlow's bundle writer does.

    Keys must be added in strictly increasing bytewise order. A data block
    is cut once it reaches `block_size`, or before an entry at least twice
    that big. Bundles are stored uncompressed (so old readers and builds
    without Snappy can read them); `compression=SNAPPY_COMPRESSION` (needs
    cramjam) writes tables as other TensorFlow tables and old releases did.
    """

    def __init__(self, file, block_size=262144, restart_interval=16,
                 compression=NO_COMPRESSION):
        if compression not in (NO_COMPRESSION, SNAPPY_COMPRESSION):
            raise ValueError(f"unknown table compression type {compression}")
        self._file = file
        self._block_size = block_size
        self._compression = compression
        self._data = _BlockBuilder(restart_interval)
        self._index = _BlockBuilder(1)
        self._offset = 0
        self._entries = 0
        self._last_key = b""
        self._pending_handle = None  # handle of a flushed block awaiting its index key

    def add(self, key, value):
        key = bytes(key)
        if self._entries:
            if key <= self._last_key:
                raise FormatError(f"table keys must be strictly increasing: {key!r} after "
                                  f"{self._last_key!r}")
            if len(key) + len(value) >= 2 * self._block_size:
                self._flush()
        if self._pending_handle is not None:
            self._index.add(_shortest_separator(self._last_key, key), self._pending_handle)
            self._pending_handle = None
        self._last_key = key
        self._entries += 1
        self._data.add(key, value)
        if self._data.size_estimate() >= self._block_size:
            self._flush()

    def _flush(self):
        if not self._data.empty():
            self._pending_handle = self._write_block(self._data)

    def _write_block(self, block):
        contents = block.finish()
        block.reset()
        kind = NO_COMPRESSION
        if self._compression == SNAPPY_COMPRESSION:
            compressed = _snappy_compress(contents)
            if len(compressed) < len(contents) - len(contents) // 8:  # worth it: >= 12.5%
                contents, kind = compressed, SNAPPY_COMPRESSION
        handle = encode_handle(self._offset, len(contents))
        trailer = bytes([kind])
        crc = hot.mask_crc(hot.crc32c(trailer, hot.crc32c(contents)))
        self._file.write(contents)
        self._file.write(trailer + struct.pack("<I", crc))
        self._offset += len(contents) + TRAILER_SIZE
        return handle

    def finish(self):
        """Write the last data block, the metaindex, the index and the footer."""
        self._flush()
        metaindex = self._write_block(_BlockBuilder(1))
        if self._pending_handle is not None:
            self._index.add(_short_successor(self._last_key), self._pending_handle)
            self._pending_handle = None
        index = self._write_block(self._index)
        footer = (metaindex + index).ljust(FOOTER_SIZE - 8, b"\0")
        self._file.write(footer + struct.pack("<II", MAGIC & 0xFFFFFFFF, MAGIC >> 32))
        self._offset += FOOTER_SIZE
        return self._offset
