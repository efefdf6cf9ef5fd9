"""File access: the only module that touches the filesystem.

Every other module reads, writes, lists and renames through the functions
here. Each function asks `filesystem(path)` which `FileSystem` serves the
path and delegates to it: `LocalFileSystem` for plain paths, or a backend
registered for a URL scheme (`register_filesystem("s3", fs)`), which only
needs to implement the `FileSystem` protocol.

Reading tensors goes through a source (`open_file`): `path`, `size()`,
`read(offset, n)` (bytes) and `view(offset, n)` (a zero-copy read-only
memoryview where possible). Every request is checked against the real size,
so callers can pass offsets straight from a file. Local files are
memory-mapped privately (copy-on-write, see `LocalFile`); a remote source
(range reads) only needs the same members.

The low-level operations raise `OSError` as `os` does; the reading helpers
(`open_file`, `read_file`) raise tfformats errors naming the file.
A local file also has `unchanged()`, which readers use to notice a file
replaced while they opened a checkpoint.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import inspect
import io
import mmap
import os
import re
import secrets
import shutil
import stat as stat_module
import sys
import tempfile
from typing import BinaryIO, Iterator, Protocol
from typing import Any, Callable, TypeVar

_Class = TypeVar("_Class", bound=type)

from .errors import CheckpointNotFoundError, FormatError, StorageError

# The granularity of memory maps (and of page-locking them for the GPU).
PAGE_SIZE = mmap.PAGESIZE


class Source(Protocol):
    """Random read access to one file's bytes."""

    path: str

    def size(self) -> int: ...

    def read(self, offset: int, n: int, what: str = "read") -> bytes: ...

    def view(self, offset: int, n: int, what: str = "read") -> memoryview: ...

    def close(self) -> None: ...


class FileSystem(Protocol):
    """What tfformats needs from a storage backend. Paths are strings in the
    backend's own form; missing files raise FileNotFoundError."""

    def open_source(self, path: str) -> Source: ...

    def open_input(self, path: str) -> BinaryIO:
        """A seekable binary stream (for formats read through a library)."""

    def create(self, path: str, buffering: int = -1) -> BinaryIO:
        """A new file for binary writing; FileExistsError if it exists."""

    def read_at(self, path: str, offset: int, n: int) -> bytes:
        """Up to `n` bytes from `offset` (negative: from the end)."""

    def size(self, path: str) -> int: ...

    def exists(self, path: str) -> bool: ...

    def isfile(self, path: str) -> bool: ...

    def isdir(self, path: str) -> bool: ...

    def listdir(self, path: str) -> list: ...

    def walk_files(self, root: str) -> Iterator[str]:
        """Every file under `root` (recursively), as paths relative to it."""

    def makedirs(self, path: str) -> None:
        """Create `path` and its parents; fine if it exists."""

    def make_temp_dir(self, parent: str, prefix: str) -> str: ...

    def remove(self, path: str) -> None: ...

    def rmdir(self, path: str) -> None: ...

    def rmtree(self, path: str) -> None:
        """Remove a directory and everything in it, ignoring errors."""

    def replace(self, src: str, dst: str) -> None:
        """Rename `src` to `dst` atomically, replacing a file `dst`."""

    def rename(self, src: str, dst: str) -> None:
        """Rename `src` to `dst`, which must not exist (directories too)."""

    def copy(self, src: str, dst: str) -> None: ...

    def copytree(self, src: str, dst: str) -> None: ...

    def fsync(self, file: BinaryIO) -> None:
        """Flush a file from `create` to stable storage."""

    def fsync_dir(self, path: str) -> None:
        """Make renames in directory `path` durable, where the system can."""


# --- local files -------------------------------------------------------------------

class LocalFile:
    """A private, copy-on-write memory map of a local file.

    Views are handed out read-only (numpy arrays over them have the read-only
    flag), but the pages under them are writable private pages: a consumer
    that ignores the flag (torch.from_numpy, an old DLPack importer, ctypes)
    and writes anyway gets its own copy of the pages it touches. It neither
    faults, as it would on a read-only map, nor changes the file, as it would
    on a shared writable one. Until then the pages are the page cache's, so
    reading stays zero-copy.

    Where the file system cannot map files (some FUSE and network mounts
    refuse mmap), the file is read into memory instead: the same bytes, at
    the cost of memory for the whole file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        fd, stat = _open_regular(self.path)
        try:
            self._size = stat.st_size
            self.identity = (stat.st_dev, stat.st_ino, stat.st_size)
            # mmap cannot map an empty file; an empty buffer behaves the same.
            self._map = _map_or_read(fd, self._size, self.path) if self._size else b""
        finally:
            os.close(fd)
        # The map itself is writable (private pages); what is handed out is not.
        self._view = memoryview(self._map).toreadonly()

    def size(self) -> int:
        return self._size

    def unchanged(self) -> bool:
        """Whether `path` still names the file that was opened (same device,
        inode and size): False once it was replaced, moved away or resized."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino, stat.st_size) == self.identity

    def _check(self, offset, n, what):
        if offset < 0 or n < 0 or offset + n > self._size:
            raise FormatError(f"{self.path}: {what} of {n} bytes at offset {offset} lies "
                              f"outside the file's {self._size} bytes")

    def view(self, offset: int, n: int, what: str = "read") -> memoryview:
        self._check(offset, n, what)
        return self._view[offset:offset + n]

    def read(self, offset: int, n: int, what: str = "read") -> bytes:
        return bytes(self.view(offset, n, what))

    def private_view(self, offset: int, n: int, what: str = "read") -> memoryview | None:
        """A writable view of bytes of this object's own copy-on-write map: a
        write copies the pages it touches, so it reaches neither the file nor
        any other `LocalFile` of it; nothing is copied until then. None where
        the file was read into memory instead (one buffer: arrays over it
        would keep the whole file's memory alive while any of them lives).

        Only for a caller that alone reads through this object: every view
        of the same bytes of this map, read-only ones too, sees the writes."""
        self._check(offset, n, what)
        if not isinstance(self._map, mmap.mmap):
            return None
        return memoryview(self._map)[offset:offset + n]

    def close(self) -> None:
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


@contextlib.contextmanager
def _opening(path):
    """Turn what opening `path` for reading raises into tfformats errors naming it."""
    try:
        yield
    except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a parent is a file
        raise CheckpointNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FormatError(f"{path}: a loop of symbolic links, expected a file") from None
        raise


# Opening a FIFO for reading blocks until a writer comes, and a device can
# block or stream forever; with O_NONBLOCK the open returns at once, and the
# file type is checked before anything reads.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)


def _open_regular(path):
    """(fd, stat) of `path` opened for reading, or a tfformats error naming it:
    CheckpointNotFoundError when it does not exist, FormatError when it is not
    a regular file (a directory, FIFO, socket, device) or a symlink loop."""
    with _opening(path):
        fd = os.open(path, _OPEN_FLAGS)
    try:
        stat = os.fstat(fd)
        if not stat_module.S_ISREG(stat.st_mode):
            kind = ("a directory" if stat_module.S_ISDIR(stat.st_mode) else
                    "a FIFO" if stat_module.S_ISFIFO(stat.st_mode) else
                    "a socket" if stat_module.S_ISSOCK(stat.st_mode) else "a device")
            raise FormatError(f"{path}: is {kind}, expected a regular file")
        if _OPEN_FLAGS & getattr(os, "O_NONBLOCK", 0):  # reads of a regular file: blocking
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, stat


# Linux's MAP_NORESERVE (Python < 3.13 does not name it): a private writable
# map is otherwise charged in full against the commit limit, which would
# refuse big files under the default heuristic overcommit although only the
# pages written to ever need memory of their own. Its value is 0x4000 on the
# architectures below (PowerPC, SPARC, MIPS and Alpha use others); elsewhere
# the map goes without it.
_NORESERVE_0X4000 = {"x86_64", "i386", "i686", "aarch64", "armv7l", "armv8l", "s390x", "riscv64"}
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux")
                         and os.uname().machine in _NORESERVE_0X4000 else 0)


def _private_map(fd):
    """The whole file mapped copy-on-write (see `LocalFile`)."""
    if hasattr(mmap, "MAP_PRIVATE"):   # POSIX: say the flags, to add NORESERVE
        return mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE | _MAP_NORESERVE,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)   # Windows: PAGE_WRITECOPY


def _map_or_read(fd, size, path):
    try:
        return _private_map(fd)
    except OSError:   # ENODEV & co: this file system does not map files
        data = bytearray(size)
        with os.fdopen(os.dup(fd), "rb") as f:
            got = f.readinto(data)
        if got != size:
            raise FormatError(f"{path}: file shrank while being read ({got} of {size} "
                              "bytes)") from None
        return data


def _storage_error(path, exc):
    return StorageError(exc.errno, f"{path}: cannot write: {exc.strerror or exc}; nothing was "
                        "committed")


class _WrittenFile(io.FileIO):
    """A new local file whose write failures (a full disk, a file too large,
    a quota) are StorageErrors naming it, not a bare OSError."""

    def write(self, data):
        try:
            return super().write(data)
        except OSError as exc:
            raise _storage_error(self.name, exc) from exc


class LocalFileSystem:
    """The `FileSystem` of the machine's own files."""

    def open_source(self, path):
        return LocalFile(path)

    def open_input(self, path):
        fd, _ = _open_regular(path)
        return os.fdopen(fd, "rb")

    def create(self, path, buffering=-1):
        raw = _WrittenFile(path, "xb")
        if buffering == 0:
            return raw
        return io.BufferedWriter(raw, buffering if buffering > 1 else io.DEFAULT_BUFFER_SIZE)

    def read_at(self, path, offset, n):
        fd, _ = _open_regular(path)
        with os.fdopen(fd, "rb") as f:
            if offset < 0:
                f.seek(max(0, f.seek(0, os.SEEK_END) + offset))
            else:
                f.seek(offset)
            return f.read(n)

    def size(self, path):
        return os.stat(path).st_size

    exists = staticmethod(os.path.exists)
    isfile = staticmethod(os.path.isfile)
    isdir = staticmethod(os.path.isdir)
    listdir = staticmethod(os.listdir)
    remove = staticmethod(os.remove)
    rmdir = staticmethod(os.rmdir)
    replace = staticmethod(os.replace)
    rename = staticmethod(os.rename)
    def copy(self, src: str, dst: str) -> None:
        shutil.copy2(src, dst)

    def copytree(self, src: str, dst: str) -> None:
        shutil.copytree(src, dst)

    def walk_files(self, root):
        for directory, _, files in os.walk(root):
            for name in files:
                yield os.path.relpath(os.path.join(directory, name), root)

    def makedirs(self, path):
        os.makedirs(path, exist_ok=True)

    def make_temp_dir(self, parent, prefix):
        return tempfile.mkdtemp(prefix=prefix, dir=parent)

    def rmtree(self, path):
        shutil.rmtree(path, ignore_errors=True)

    def fsync(self, file):
        file.flush()
        try:
            os.fsync(file.fileno())
        except OSError as exc:
            raise _storage_error(file.name, exc) from exc

    def fsync_dir(self, path):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # e.g. Windows cannot open directories
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


LOCAL = LocalFileSystem()
_BY_SCHEME: "dict[str, FileSystem]" = {}


def register_filesystem(scheme: str, fs: FileSystem | None) -> None:
    """Serve paths starting with `<scheme>://` from `fs` (a `FileSystem`);
    None takes the scheme away again."""
    if fs is None:
        _BY_SCHEME.pop(scheme, None)
    else:
        _BY_SCHEME[scheme] = fs


# The filesystems an entry point's `filesystem=` / `storage_options=` bind for
# the duration of the call (`storage`): a function scheme -> FileSystem or None.
_BOUND: contextvars.ContextVar = contextvars.ContextVar("tfformats_storage", default=None)
_BOUND_ARGS: contextvars.ContextVar = contextvars.ContextVar("tfformats_storage_args",
                                                            default=(None, None))


def filesystem(path: str | os.PathLike) -> FileSystem:
    """The `FileSystem` that serves `path`: a URL (`s3://...`) is served by the
    binding of `storage()`, a registered backend, or else fsspec
    (`tfformats.remote`, imported only when a URL comes along)."""
    scheme, sep, _ = os.fspath(path).partition("://")
    if not sep or not _URL_SCHEME.fullmatch(scheme):
        return LOCAL
    bound = _BOUND.get()
    fs = bound(scheme) if bound is not None else None
    if fs is None:
        fs = _BY_SCHEME.get(scheme)
    if fs is None:
        from . import remote
        fs = remote.for_scheme(scheme)
    return fs


# "s3", "gs", "https", "hf", "simplecache::s3" ...; not "C:\\dir" or "a/b://c".
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*(::[A-Za-z][A-Za-z0-9+.-]*)*")


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` is a URL (served by a remote backend), not a local path."""
    scheme, sep, _ = os.fspath(path).partition("://")
    return bool(sep) and bool(_URL_SCHEME.fullmatch(scheme))


def abspath(path: str | os.PathLike) -> str:
    """`os.path.abspath` for local paths; a URL is already absolute."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path)


def realpath(path: str | os.PathLike) -> str:
    """`os.path.realpath` for local paths; a URL stays as it is."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.realpath(path)


@contextlib.contextmanager
def storage(filesystem: Any = None, storage_options: dict | None = None) -> Iterator[None]:
    """Serve URLs inside the block from `filesystem` (an fsspec filesystem, for
    URLs of its protocol) or with `storage_options` (passed to fsspec when it
    makes a filesystem for a URL), as pandas and Dask take them."""
    if filesystem is None and not storage_options:
        yield
        return
    from . import remote
    token = _BOUND.set(remote.binding(filesystem, storage_options))
    args = _BOUND_ARGS.set((filesystem, storage_options))
    try:
        yield
    finally:
        _BOUND_ARGS.reset(args)
        _BOUND.reset(token)


def current_storage() -> tuple:
    """(filesystem, storage_options) of the innermost `storage` block, for work
    handed to other processes (tfformats.dask): `storage(*current_storage())`."""
    return _BOUND_ARGS.get()


def with_storage(function: Callable[..., Any]) -> Callable[..., Any]:
    """Give `function` the keyword arguments `filesystem=` and
    `storage_options=`, which serve URLs during the call (`storage`). A
    generator function's body runs later, step by step as it is iterated:
    each step of it is run inside them (`_bound_generator`)."""
    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def generate(*args, filesystem=None, storage_options=None, **kwargs):
            with storage(filesystem, storage_options):
                binding, bound_args = _BOUND.get(), _BOUND_ARGS.get()
            generator = function(*args, **kwargs)
            if binding is None:
                return generator
            return _bound_generator(generator, binding, bound_args)
        return generate

    @functools.wraps(function)
    def call(*args, filesystem=None, storage_options=None, **kwargs):
        with storage(filesystem, storage_options):
            return function(*args, **kwargs)
    return call


def _bound_generator(generator, binding, bound_args):
    """`generator`, each of its steps run with URLs served by `binding`. A
    `storage` block inside the generator would not do: a generator runs in
    its consumer's context, so the binding would leak into the consumer at
    each `yield` and be missing from the steps after it."""
    def step(method, *arg):
        token = _BOUND.set(binding)
        args_token = _BOUND_ARGS.set(bound_args)
        try:
            return method(*arg)
        finally:
            _BOUND_ARGS.reset(args_token)
            _BOUND.reset(token)

    method, arg = generator.send, None
    while True:
        try:
            item = step(method, arg)
        except StopIteration as stop:
            return stop.value
        try:
            arg, method = (yield item), generator.send
        except GeneratorExit:
            step(generator.close)
            raise
        except BaseException as exc:   # thrown in: passed on to the generator
            method, arg = generator.throw, exc


def keeps_storage(cls: _Class) -> _Class:
    """Class decorator: `__init__` takes `filesystem=` and `storage_options=`
    (as `with_storage`) and the object's public methods keep serving URLs from
    them for its lifetime (a manager saving later, a writer finishing)."""
    init = getattr(cls, "__init__")

    @functools.wraps(init)
    def __init__(self, *args, filesystem=None, storage_options=None, **kwargs):
        with storage(filesystem, storage_options):
            self._storage_binding = _BOUND.get()
            self._storage_args = _BOUND_ARGS.get()
            init(self, *args, **kwargs)
    setattr(cls, "__init__", __init__)
    for name, member in list(vars(cls).items()):
        public = not name.startswith("_") or name in ("__exit__", "__getitem__", "__iter__")
        if isinstance(member, property) and member.fget is not None:
            setattr(cls, name, property(bound_method(member.fget), member.fset, member.fdel,
                                        member.__doc__))
        elif isinstance(member, functools.cached_property):
            wrapped = functools.cached_property(bound_method(member.func))
            wrapped.__set_name__(cls, name)
            setattr(cls, name, wrapped)
        elif (callable(member) and public and not isinstance(member, type)
              and not getattr(member, "_storage_free", False)):
            setattr(cls, name, bound_method(member))
    return cls


def storage_free(method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a method `keeps_storage` leaves as it is: one answered from memory
    that reaches files only through methods that do serve the storage (the
    binding costs a call frame, as much as a whole per-name lookup)."""
    method._storage_free = True   # type: ignore[attr-defined]
    return method


def bound_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` serving URLs from its object's storage: what `keeps_storage`
    does to public methods, and what a private one that `storage_free`
    methods call is decorated with."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        binding = getattr(self, "_storage_binding", None)
        if binding is None:
            return method(self, *args, **kwargs)
        token = _BOUND.set(binding)
        args_token = _BOUND_ARGS.set(self._storage_args)
        try:
            return method(self, *args, **kwargs)
        finally:
            _BOUND_ARGS.reset(args_token)
            _BOUND.reset(token)
    return call


# --- operations on a path, served by its filesystem ------------------------------

def _delegate(name):
    def operation(path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        path = os.fspath(path)
        return getattr(filesystem(path), name)(path, *args, **kwargs)
    operation.__name__ = name
    operation.__qualname__ = name
    operation.__doc__ = f"`FileSystem.{name}` of the filesystem serving `path`."
    return operation


open_input = _delegate("open_input")
create = _delegate("create")
read_at = _delegate("read_at")
size = _delegate("size")
exists = _delegate("exists")
isfile = _delegate("isfile")
isdir = _delegate("isdir")
listdir = _delegate("listdir")
walk_files = _delegate("walk_files")
makedirs = _delegate("makedirs")
remove = _delegate("remove")
rmdir = _delegate("rmdir")
rmtree = _delegate("rmtree")
replace = _delegate("replace")
rename = _delegate("rename")
copy = _delegate("copy")
copytree = _delegate("copytree")
fsync_dir = _delegate("fsync_dir")


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> str:
    """A new empty directory in `parent` whose name starts with `prefix`."""
    return filesystem(parent).make_temp_dir(os.fspath(parent), prefix)


def fsync(file: BinaryIO, path: str | os.PathLike) -> None:
    """Flush `file` (from `create(path)`) to stable storage."""
    filesystem(path).fsync(file)


def open_file(path: str | os.PathLike) -> Source:
    """A `Source` for reading `path`: a memory map for a local file."""
    path = os.fspath(path)
    return filesystem(path).open_source(path)


def read_file(path: str | os.PathLike) -> bytes:
    """The whole (small) file `path`, as bytes."""
    with _opening(path), open_input(path) as f:
        return f.read()


def read_file_if_present(path: str | os.PathLike) -> bytes | None:
    """The whole (small) file `path` as bytes, or None when it does not exist."""
    try:
        return read_file(path)
    except CheckpointNotFoundError:
        return None


def remove_if_present(path: str | os.PathLike) -> None:
    try:
        remove(path)
    except FileNotFoundError:
        pass


# --- atomic writes -------------------------------------------------------------

def temp_name(path: str | os.PathLike) -> str:
    """A fresh temporary name beside `path`, to write it under and rename later."""
    return f"{path}.tempstate{secrets.randbits(64)}"


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[str]:
    """Yield a fresh temporary name beside `path` to write the new file under;
    it is renamed over `path` when the block completes and removed when it
    fails, so readers see the old file or the new one, never a part."""
    temp = temp_name(path)
    try:
        yield temp
        replace(temp, path)
    except BaseException:
        remove_if_present(temp)
        raise


def write_file(path: str | os.PathLike, data: bytes, sync: bool = False) -> None:
    """Write `data` (bytes) to the new file `path`; `sync` fsyncs it."""
    with create(path) as f:
        f.write(data)
        if sync:
            fsync(f, path)


def write_atomically(path: str | os.PathLike, data: bytes, sync: bool) -> None:
    """Write a small file (`data`, bytes) atomically (`replaced_atomically`).
    `sync` fsyncs it first, so the rename never lands before the bytes do."""
    with replaced_atomically(path) as temp:
        write_file(temp, data, sync)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[str]:
    """A private local directory in the system's temporary location, removed
    with everything in it afterwards (the command line's intermediate files)."""
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def discard_output(fd: int) -> None:
    """Point file descriptor `fd` at the null device: what the command does to
    stdout once its reader has gone (`tfformats ls | head`)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
