"""File access: the only layer that touches the filesystem when reading.

A source has `path`, `size()`, `read(offset, n)` (bytes) and `view(offset, n)`
(a zero-copy read-only memoryview where possible). Every request is checked
against the real size, so callers can pass offsets straight from a file.
Local files are memory-mapped; a remote source (range reads) only needs the
same four members.
"""

import mmap
import os

from .errors import CheckpointNotFoundError, FormatError


class LocalFile:
    """A read-only memory map of a local file."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise FormatError(f"{self.path}: is a directory, expected a file") from None
        try:
            self._size = os.fstat(fd).st_size
            # mmap cannot map an empty file; an empty buffer behaves the same.
            self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if self._size else b""
        finally:
            os.close(fd)
        self._view = memoryview(self._map)

    def size(self):
        return self._size

    def _check(self, offset, n, what):
        if offset < 0 or n < 0 or offset + n > self._size:
            raise FormatError(f"{self.path}: {what} of {n} bytes at offset {offset} lies "
                              f"outside the file's {self._size} bytes")

    def view(self, offset, n, what="read"):
        self._check(offset, n, what)
        return self._view[offset:offset + n]

    def read(self, offset, n, what="read"):
        return bytes(self.view(offset, n, what))

    def close(self):
        """Drop the map. Arrays already handed out keep their pages alive."""
        try:
            self._view.release()
        except BufferError:  # still exported; the map goes when its users do
            pass
        self._view = memoryview(b"")
        self._map = b""
        self._size = 0

    def __repr__(self):
        return f"LocalFile({self.path!r}, {self._size} bytes)"


def open_file(path):
    """The default opener: a memory-mapped local file."""
    return LocalFile(path)
