"""Remote storage: the `FileSystem` and `Source` of `tfformats.fileio` on fsspec.

`fileio.filesystem(url)` comes here for any URL (`s3://`, `gs://`, `https://`,
`hf://`, `memory://`, chained `simplecache::s3://` ...); fsspec is imported
only then, so the core install does not need it (`pip install tfformats[remote]`).

Reading is built for few round trips (see docs/remote.md):
* a file's size comes from the listing of its directory, which resolving a
  checkpoint path reads anyway (one request answers every `exists`, `isfile`
  and `size` in that directory; fsspec caches it);
* a table's footer and index block come from one suffix read (`load_tail`);
* every other read fetches exactly the bytes asked for; `prefetch` fetches
  many ranges at once, adjacent ones coalesced, in windows of bounded size;
  a range above PIECE_BYTES goes out as several requests, at most IN_FLIGHT
  at a time, each copied into place as it arrives (`fetch_ranges`), so that
  memory stays near the window's bytes instead of twice them.
Every response is checked against the length asked for: a server that
ignores `Range` (fsspec does not check) sends the whole object, which is a
`StorageError`, and an object shorter than its listing is a `FormatError`.

Writing streams through fsspec's `open(path, "wb")` (multipart uploads on
object stores: memory is bounded by fsspec's block size). Object stores have
no rename: `replace` copies and deletes, so a reader sees either the old or
the new object under a name, never part of one, but a set of files is not
switched atomically (docs/remote.md says what the writer's order gives).
"""

import asyncio
import concurrent.futures
import posixpath
import secrets
import threading

import numpy as np

from .errors import CheckpointNotFoundError, FormatError, StorageError, UnsupportedError

# The suffix a table's first read fetches: the footer and, in the same
# request, an index block of up to ~this size (a 100,000-tensor index has one
# of about 60 KiB).
TAIL_BYTES = 256 * 1024
# ... and the first bytes with it: TensorFlow's index blocks are 256 KiB, and
# the first holds the bundle header that opening a checkpoint reads.
HEAD_BYTES = 256 * 1024 + 1024
# Ranges closer than this are fetched as one (the gap is cheaper than a request).
MAX_GAP = 64 * 1024
# `prefetch` windows (tfformats/checkpoint.py) fetched or held at once: a
# bulk read fetches the next window while it checks and decodes the current.
WINDOWS_IN_FLIGHT = 2
# One request fetches at most this many bytes: a longer range is split, its
# pieces fetched concurrently and copied into one buffer as they arrive. (8 MiB
# cost 40% more client CPU on the bulk benchmark: its 9 MiB tensors were split
# and copied, benchmarks/README.md.)
PIECE_BYTES = 16 * 1024 * 1024
# Requests at once within a window: the bytes in flight (which the HTTP client
# holds twice while it joins a response) stay near IN_FLIGHT * PIECE_BYTES.
IN_FLIGHT = 4

_INSTALL_HINT = "remote storage needs fsspec: `pip install tfformats[remote]`"


def _fsspec(url):
    try:
        import fsspec
    except ImportError:
        raise UnsupportedError(f"{url}: {_INSTALL_HINT}") from None
    return fsspec


def _make(scheme, storage_options):
    fsspec = _fsspec(f"{scheme}://")
    try:
        if "::" in scheme:   # a chain, e.g. simplecache::s3: fsspec builds it from a URL
            fs, _ = fsspec.core.url_to_fs(f"{scheme}://", **storage_options)
        else:
            fs = fsspec.filesystem(scheme, **storage_options)
    except ImportError as exc:   # fsspec names the package the scheme needs
        raise UnsupportedError(f"{scheme}:// URLs: {exc}") from None
    except ValueError as exc:    # a scheme fsspec does not know
        raise UnsupportedError(f"{scheme}:// URLs: {exc}") from None
    return RemoteFileSystem(fs)


_DEFAULT: dict = {}
_DEFAULT_LOCK = threading.Lock()


def for_scheme(scheme):
    """The `FileSystem` for URLs `scheme://...` with fsspec's default settings
    (credentials from the environment, as the scheme's package finds them)."""
    with _DEFAULT_LOCK:
        fs = _DEFAULT.get(scheme)
        if fs is None:
            fs = _DEFAULT[scheme] = _make(scheme, {})
        return fs


def binding(filesystem=None, storage_options=None):
    """A function scheme -> FileSystem (or None: not bound) for `fileio.storage`."""
    if filesystem is not None:
        if storage_options:
            raise ValueError("pass either filesystem= or storage_options=, not both")
        wrapped = filesystem if hasattr(filesystem, "open_source") else RemoteFileSystem(filesystem)
        protocols = getattr(filesystem, "protocol", ())
        protocols = {protocols} if isinstance(protocols, str) else set(protocols)
        return lambda scheme: wrapped if scheme in protocols or scheme.split("::")[-1] in protocols \
            else None
    made = {}
    lock = threading.Lock()

    def bound(scheme):
        with lock:
            if scheme not in made:
                made[scheme] = _make(scheme, dict(storage_options))
            return made[scheme]
    return bound


def _inner(path):
    """The URL as the (outermost) fsspec filesystem takes it: chained URLs
    lose their chain, which the filesystem object already is."""
    return path.rsplit("::", 1)[-1]


def _split(path):
    """(parent URL, name) of a URL."""
    path = path.rstrip("/")
    parent, name = posixpath.split(path)
    return parent, name


def _translate(exc, path, what):
    """A tfformats error for an exception fsspec raised while reading `path`."""
    if isinstance(exc, FileNotFoundError):
        return CheckpointNotFoundError(f"{path}: no such file")
    return StorageError(f"{path}: {what} failed: {type(exc).__name__}: {exc}")


class RemoteFile:
    """A `Source` reading byte ranges of one remote file."""

    def __init__(self, fs, path, size=None):
        self.path = path
        self._fs = fs
        self._size = size
        self._tail = None          # (offset, bytes): the suffix `load_tail` fetched
        self._head = b""           # the first bytes, which `load_tail` fetched too
        self._prefetched = {}      # (offset, n) -> (wait for the fetch, index), see prefetch
        self._lock = threading.Lock()

    def size(self):
        if self._size is None:
            self._size = self._fs.size(self.path)
        return self._size

    def _check(self, offset, n, what):
        size = self.size()
        if offset < 0 or n < 0 or offset + n > size:
            raise FormatError(f"{self.path}: {what} of {n} bytes at offset {offset} lies "
                              f"outside the file's {size} bytes")

    def load_tail(self, nbytes=TAIL_BYTES, head=HEAD_BYTES):
        """Fetch the last `nbytes` (a table's footer and index block) and, in
        the same round trip, the first `head` bytes (its first data block,
        which holds a bundle's header); reads inside them are free."""
        size = self.size()
        if self._tail is not None or not size:
            return
        guess = self._fs.take_guess(self.path)
        if guess is not None and len(guess[0]) == min(nbytes, size) and \
                len(guess[1]) == min(head, size):   # else the file changed since: fetch
            self._tail = (size - len(guess[0]), guess[0])
            self._head = guess[1]
            return
        start = max(0, size - nbytes)
        if start <= head:   # a small file: all of it in one request
            self._tail = (0, self._fs.fetch(self.path, 0, size))
            return
        tail, first = self._fs.fetch_ranges(self.path, [(start, size - start), (0, head)],
                                            max_gap=0)
        self._tail = (start, tail)
        self._head = first

    def view(self, offset, n, what="read"):
        self._check(offset, n, what)
        if self._tail is not None and offset >= self._tail[0]:
            start = offset - self._tail[0]
            return memoryview(self._tail[1])[start:start + n]
        if offset + n <= len(self._head):
            return memoryview(self._head)[offset:offset + n]
        with self._lock:
            pending = self._prefetched.pop((offset, n), None)
        if pending is None:
            data = self._fs.fetch(self.path, offset, offset + n)
        else:
            wait, i = pending
            data = wait()[i]
        return memoryview(data)

    def read(self, offset, n, what="read"):
        return bytes(self.view(offset, n, what))

    def prefetch(self, ranges):
        """Start fetching the (offset, n) `ranges` concurrently, for the reads
        that follow (each range is handed out once; a read waits for its
        range, and gets the error if its fetch failed). Returns without
        waiting where the store allows, so that the caller can work on the
        previous ranges meanwhile. Ranges outside the file are left for the
        read to report."""
        size = self.size()
        wanted = sorted({(o, n) for o, n in ranges if o >= 0 and n > 0 and o + n <= size})
        wait = self._fs.start_ranges(self.path, wanted)
        with self._lock:
            self._prefetched.update((r, (wait, i)) for i, r in enumerate(wanted))

    def close(self):
        self._tail = None
        self._head = b""
        with self._lock:
            pending, self._prefetched = self._prefetched, {}
        for wait, _ in pending.values():   # fetches nobody will read
            wait.cancel()

    def __repr__(self):
        return f"RemoteFile({self.path!r})"


class Upload:
    """A file being uploaded (fsspec's streaming writer underneath), which keeps
    its last KEEP_BYTES in memory so that a writer can still take back a tensor
    that failed half-way (`seek` back and `truncate`), as it does locally.
    Memory: at most KEEP_BYTES + PUSH_BYTES plus what one write brings."""

    KEEP_BYTES = 8 << 20
    PUSH_BYTES = 8 << 20

    def __init__(self, file, path):
        self._file = file
        self.path = path
        self._buffer = bytearray()
        self._uploaded = 0      # bytes handed to the underlying file
        self._pos = 0           # the position within the file

    @property
    def closed(self):
        return self._file.closed

    def write(self, data):
        data = memoryview(data).cast("B")
        self._buffer += data
        self._pos += len(data)
        if len(self._buffer) >= self.KEEP_BYTES + self.PUSH_BYTES:
            self._push(len(self._buffer) - self.KEEP_BYTES)
        return len(data)

    def _push(self, n):
        try:
            self._file.write(bytes(self._buffer[:n]))
        except Exception as exc:
            raise _translate(exc, self.path, "uploading") from None
        del self._buffer[:n]
        self._uploaded += n

    def tell(self):
        return self._pos

    def seekable(self):
        return False

    def seek(self, position, whence=0):
        # Refused even in place: zipfile then writes a streaming archive.
        raise OSError(f"{self.path}: an upload is written front to back (no seek)")

    def truncate(self, size):
        """Take back the bytes after `size` (still in memory); the end moves there."""
        if not self._uploaded <= size <= self._pos:
            raise OSError(f"{self.path}: cannot take back the upload to byte {size} "
                          f"(bytes before {self._uploaded} are sent)")
        del self._buffer[size - self._uploaded:]
        self._pos = size
        return size

    def flush(self):
        pass   # the bytes go up as the buffer fills and on close, where S3 commits them

    def close(self):
        if self._file.closed:
            return
        try:
            if self._buffer:
                self._push(len(self._buffer))
            self._file.close()
        except StorageError:
            raise
        except Exception as exc:
            raise _translate(exc, self.path, "finishing the upload") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def coalesce(ranges, max_gap=MAX_GAP):
    """Sorted (start, end) ranges merged where they are closer than `max_gap`:
    [(start, end, [(start, end) of the ranges it covers])]."""
    merged = []
    for start, end in sorted(ranges):
        if merged and start - merged[-1][1] <= max_gap:
            first, last_end, parts = merged[-1]
            parts.append((start, end))
            merged[-1] = (first, max(last_end, end), parts)
        else:
            merged.append((start, end, [(start, end)]))
    return merged


def split(merged, most):
    """`coalesce`'s spans cut between their ranges into spans of at most
    `most` bytes (or one range, when it is longer)."""
    out = []
    for _, _, parts in merged:
        first, last_end, taken = parts[0][0], parts[0][1], [parts[0]]
        for start, end in parts[1:]:
            if max(last_end, end) - first <= most:
                last_end = max(last_end, end)
                taken.append((start, end))
            else:
                out.append((first, last_end, taken))
                first, last_end, taken = start, end, [(start, end)]
        out.append((first, last_end, taken))
    return out


class RemoteFileSystem:
    """The `FileSystem` protocol (tfformats/fileio.py) over one fsspec filesystem.

    Paths are full URLs. Directories are prefixes on object stores: `makedirs`
    creates nothing there, and a directory exists while something is in it.
    """

    def __init__(self, fs):
        self.fs = fs
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        # HTTP cannot list a directory: ask about each file instead.
        self._listable = not ({"http", "https"} & set(protocols))
        # Stores with a listing cache and concurrent requests: guess ahead (_speculate).
        self._speculates = (self._listable and getattr(fs, "async_impl", False)
                            and hasattr(getattr(fs, "dircache", None), "__contains__"))
        self._guesses = {}   # index URL -> (tail, head) bytes, see _speculate
        self._lock = threading.Lock()

    # --- reading ---------------------------------------------------------------

    def fetch(self, path, start, end):
        """Bytes start..end of `path`, exactly (or an error saying why not)."""
        if end <= start:   # no request: an empty range reads as the whole object
            return b""
        try:
            data = self.fs.cat_file(_inner(path), start=start, end=end)
        except Exception as exc:   # network and server errors of any fsspec backend
            raise _translate(exc, path, f"reading bytes {start}..{end}") from None
        return self._checked(path, start, end, data)

    def fetch_ranges(self, path, ranges, max_gap=MAX_GAP):
        """The bytes of each (offset, n) in `ranges` (bytes or read-only
        memoryviews), fetched concurrently in coalesced requests."""
        return self.start_ranges(path, ranges, max_gap)()

    def start_ranges(self, path, ranges, max_gap=MAX_GAP):
        """Start fetching the (offset, n) `ranges` and return at once (where
        fsspec runs the filesystem on its event loop) a function that waits
        for them and returns what `fetch_ranges` does, or raises why not.
        Requests go out coalesced (closer than `max_gap`, up to PIECE_BYTES),
        IN_FLIGHT at a time; a range longer than PIECE_BYTES goes out in
        pieces, assembled in one buffer as they arrive."""
        merged = split(coalesce([(o, o + n) for o, n in ranges if n > 0], max_gap), PIECE_BYTES)
        pieces = [(i, s, min(s + PIECE_BYTES, end)) for i, (start, end, _) in enumerate(merged)
                  for s in range(start, end, PIECE_BYTES)]
        # (numpy's empty buffer: bytearray(n) writes n zeros first, a pass over
        # memory that the copies make anyway)
        blobs = [None if end - start <= PIECE_BYTES else memoryview(np.empty(end - start, np.uint8))
                 for start, end, _ in merged]

        def arrived(i, s, e, data):
            data = self._checked(path, s, e, data)
            if blobs[i] is None:
                blobs[i] = data
            else:
                start = merged[i][0]
                blobs[i][s - start:e - start] = data

        def wait():
            if not done:
                try:
                    fetching()
                except (StorageError, FormatError, CheckpointNotFoundError):
                    raise
                except Exception as exc:   # network and server errors of any fsspec backend
                    raise _translate(exc, path, f"reading {len(merged)} byte ranges") from None
                out = {}
                for (start, end, parts), blob in zip(merged, blobs):
                    if len(parts) > 1 or isinstance(blob, memoryview):   # views, not copies
                        blob = memoryview(blob).toreadonly()
                    for s, e in parts:
                        out[(s, e)] = blob[s - start:e - start]
                done.append([out[(o, o + n)] if n > 0 else b"" for o, n in ranges])
            return done[0]
        done = []
        loop = getattr(self.fs, "loop", None) if getattr(self.fs, "async_impl", False) else None
        if loop is not None and hasattr(self.fs, "_cat_file") and pieces:
            future = asyncio.run_coroutine_threadsafe(
                self._gather(_inner(path), pieces, arrived), loop)
            fetching = future.result
            wait.cancel = future.cancel
            return wait
        try:   # a blocking filesystem (memory://, local): one call for the lot, now
            got = self.fs.cat_ranges([_inner(path)] * len(pieces), [p[1] for p in pieces],
                                     [p[2] for p in pieces], on_error="return") if pieces else []
        except Exception as exc:
            got = exc

        def fetching():
            if isinstance(got, Exception):
                raise got
            for piece, blob in zip(pieces, got):
                arrived(*piece, blob)
        wait.cancel = lambda: None
        return wait

    async def _gather(self, inner, pieces, arrived):
        """Fetch `pieces` (index, start, end) of `inner`, IN_FLIGHT at a time,
        handing each to `arrived` (on the event loop's thread) as it comes;
        the first failure cancels the rest."""
        queue = iter(pieces)

        async def worker():
            for i, s, e in queue:   # a shared iterator: each piece is taken once
                arrived(i, s, e, await self.fs._cat_file(inner, start=s, end=e))
        tasks = [asyncio.ensure_future(worker()) for _ in range(min(IN_FLIGHT, len(pieces)))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    def _checked(self, path, start, end, data):
        if isinstance(data, Exception):
            raise _translate(data, path, f"reading bytes {start}..{end}")
        if len(data) == end - start:
            return data
        if len(data) > end - start:
            raise StorageError(
                f"{path}: asked for bytes {start}..{end} ({end - start} bytes) and got "
                f"{len(data)}: the server ignores byte ranges (Range requests). Read it "
                f"through a cache (`simplecache::{path}`) or download it first")
        raise FormatError(f"{path}: bytes {start}..{end} requested but only {len(data)} "
                          f"came back: the object is shorter than its listing (truncated?)")

    def open_source(self, path):
        info = self._info(path)
        if info is None:
            raise CheckpointNotFoundError(f"{path}: no such file")
        if info.get("type") == "directory":
            raise FormatError(f"{path}: is a directory, expected a file")
        return RemoteFile(self, path, info.get("size"))

    def open_input(self, path):
        if self._listable and self._info(path) is None:
            raise FileNotFoundError(path)
        try:
            return self.fs.open(_inner(path), "rb")
        except FileNotFoundError:
            raise
        except IsADirectoryError:
            raise
        except Exception as exc:
            raise _translate(exc, path, "opening") from None

    def read_at(self, path, offset, n):
        if n == 0 and offset >= 0:   # HTTP has no empty range (S3 answers 416): no request
            return b""
        try:
            if offset < 0:   # a suffix: one request, whatever the size
                data = self.fs.cat_file(_inner(path), start=offset)
                asked = -offset
            else:
                data = self.fs.cat_file(_inner(path), start=offset, end=offset + n)
                asked = n
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise _translate(exc, path, f"reading at offset {offset}") from None
        if len(data) > asked:   # the whole object: its first bytes are not the ones asked for
            raise StorageError(f"{path}: asked for {asked} bytes at offset {offset} and got "
                               f"{len(data)}: the server ignores byte ranges (Range requests)")
        return data[:n]

    # --- what is there ----------------------------------------------------------

    def _listing(self, directory):
        """{name: fsspec info} of a directory, or None when it is not one."""
        try:
            entries = self.fs.ls(_inner(directory), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except Exception as exc:
            raise _translate(exc, directory, "listing") from None
        return {posixpath.basename(e["name"].rstrip("/")): e for e in entries}

    def _info(self, path):
        """fsspec's info of `path` (from its directory's listing where the store
        can list), or None when nothing is there."""
        parent, name = _split(path)
        if self._listable and "://" in parent:
            if self._speculates and not self._listed(parent):
                self._speculate(parent, path)
            listing = self._listing(parent)
            return None if listing is None else listing.get(name)
        try:
            return self.fs.info(_inner(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except Exception as exc:
            raise _translate(exc, path, "looking up") from None

    def _listed(self, directory):
        """Whether fsspec has the listing of `directory` cached."""
        return self.fs._strip_protocol(_inner(directory)).rstrip("/") in self.fs.dircache

    def _speculate(self, parent, path):
        """List `parent` and, in the same round trip, fetch the tail and head of
        the index `path` would have as a checkpoint prefix (`load_tail` takes
        them): what opening a checkpoint asks next, so that a cold open costs
        one round trip instead of two. The guess costs a failed or unused
        request when `path` is something else."""
        index = path if path.endswith(".index") else path + ".index"
        if ".data-" in posixpath.basename(path) or index in self._guesses:
            return
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            listing = pool.submit(self.fs.ls, _inner(parent), detail=True)
            ends = pool.submit(self.fs.cat_ranges, [_inner(index)] * 2, [-TAIL_BYTES, 0],
                               [None, HEAD_BYTES], on_error="return")
            try:
                listing.result()
            except Exception:   # _listing asks again and reports it
                pass
            try:
                tail, head = ends.result()
            except Exception:
                return
        if isinstance(tail, bytes) and isinstance(head, bytes):
            with self._lock:
                while len(self._guesses) >= 4:   # bounded: unused guesses go
                    self._guesses.pop(next(iter(self._guesses)))
                self._guesses[index] = (tail, head)

    def take_guess(self, path):
        """(tail, head) bytes `_speculate` fetched for `path`, once, or None."""
        with self._lock:
            return self._guesses.pop(path, None)

    def size(self, path):
        info = self._info(path)
        if info is None:
            raise FileNotFoundError(path)
        if info.get("size") is None:
            return self.fs.size(_inner(path))
        return info["size"]

    def exists(self, path):
        return self._info(path) is not None

    def isfile(self, path):
        info = self._info(path)
        return info is not None and info.get("type") != "directory"

    def isdir(self, path):
        info = self._info(path)
        return info is not None and info.get("type") == "directory"

    def listdir(self, path):
        listing = self._listing(path)
        if listing is None:
            raise FileNotFoundError(path)
        return sorted(listing)

    def walk_files(self, root):
        base = self.fs._strip_protocol(_inner(root)).rstrip("/") + "/"
        for name in self.fs.find(_inner(root)):
            if name.startswith(base):
                yield name[len(base):]

    # --- writing -----------------------------------------------------------------

    def create(self, path, buffering=-1):
        if self.exists(path):
            raise FileExistsError(path)
        try:
            return Upload(self.fs.open(_inner(path), "wb"), path)
        except Exception as exc:
            raise _translate(exc, path, "creating") from None

    def makedirs(self, path):
        try:
            self.fs.makedirs(_inner(path), exist_ok=True)
        except FileExistsError:
            pass

    def make_temp_dir(self, parent, prefix):
        path = f"{parent.rstrip('/')}/{prefix}{secrets.token_hex(8)}"
        self.makedirs(path)
        return path

    def remove(self, path):
        if not self.exists(path):
            raise FileNotFoundError(path)
        self.fs.rm_file(_inner(path))
        self._forget(path)

    def rmdir(self, path):
        try:
            self.fs.rmdir(_inner(path))
        except (FileNotFoundError, NotImplementedError):
            pass
        self._forget(path)

    def rmtree(self, path):
        try:
            self.fs.rm(_inner(path), recursive=True)
        except Exception:   # "ignoring errors", as the local one does
            pass
        self._forget(path)

    def replace(self, src, dst):
        """Object stores cannot rename: a copy and a delete. Readers see the old
        or the new object under `dst`, never a part of one."""
        if not self.exists(src):
            raise FileNotFoundError(src)
        self.fs.mv(_inner(src), _inner(dst))
        self._forget(src)
        self._forget(dst)

    def rename(self, src, dst):
        if self.exists(dst):
            raise FileExistsError(dst)
        if self.isdir(src):   # a prefix: its files one by one, each copied then deleted
            self.copytree(src, dst)
            self.rmtree(src)
        else:
            self.replace(src, dst)
        self._forget(src)
        self._forget(dst)

    def copy(self, src, dst):
        self.fs.copy(_inner(src), _inner(dst))
        self._forget(dst)

    def copytree(self, src, dst):
        if self.exists(dst):
            raise FileExistsError(dst)
        for name in list(self.walk_files(src)):
            self.fs.copy(_inner(f"{src.rstrip('/')}/{name}"), _inner(f"{dst.rstrip('/')}/{name}"))
        self._forget(dst)

    def fsync(self, file):
        """An object exists once its upload completes (when the file closes)."""
        file.flush()

    def fsync_dir(self, path):
        pass   # nothing to sync: renames on object stores are copies, done when they return

    def _forget(self, path):
        """Drop fsspec's cached listings around `path` after changing it."""
        try:
            self.fs.invalidate_cache(self.fs._strip_protocol(_inner(path)))
        except Exception:
            pass

    def __repr__(self):
        return f"RemoteFileSystem({type(self.fs).__name__})"
