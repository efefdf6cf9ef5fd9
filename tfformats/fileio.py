"""File access: the only layer that touches the filesystem when reading,
and the small helpers every writer uses for atomic writes.

A source has `path`, `size()`, `read(offset, n)` (bytes) and `view(offset, n)`
(a zero-copy read-only memoryview where possible). Every request is checked
against the real size, so callers can pass offsets straight from a file.
Local files are memory-mapped; a remote source (range reads) only needs the
same four members.
"""

import contextlib
import mmap
import os
import secrets

from .errors import CheckpointNotFoundError, FormatError


class LocalFile:
    """A read-only memory map of a local file.

    Where the file system cannot map files (some FUSE and network mounts
    refuse mmap), the file is read into memory instead: the same bytes, at
    the cost of memory for the whole file.
    """

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
            self._map = _map_or_read(fd, self._size, self.path) if self._size else b""
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


def _map_or_read(fd, size, path):
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except OSError:   # ENODEV & co: this file system does not map files
        data = bytearray(size)
        with os.fdopen(os.dup(fd), "rb") as f:
            got = f.readinto(data)
        if got != size:
            raise FormatError(f"{path}: file shrank while being read ({got} of {size} "
                              "bytes)") from None
        return memoryview(data).toreadonly()   # handed-out arrays stay read-only


def open_file(path):
    """The default opener: a memory-mapped local file."""
    return LocalFile(path)


# --- atomic writes -------------------------------------------------------------

def temp_name(path):
    """A fresh temporary name beside `path`, to write it under and rename later."""
    return f"{path}.tempstate{secrets.randbits(64)}"


def remove_if_present(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def replaced_atomically(path):
    """Yield a fresh temporary name beside `path` to write the new file under;
    it is renamed over `path` when the block completes and removed when it
    fails, so readers see the old file or the new one, never a part."""
    temp = temp_name(path)
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        remove_if_present(temp)
        raise


def write_atomically(path, data, sync):
    """Write a small file (`data`, bytes) atomically (`replaced_atomically`).
    `sync` fsyncs it first, so the rename never lands before the bytes do."""
    with replaced_atomically(path) as temp:
        with open(temp, "xb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
