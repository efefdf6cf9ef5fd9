"""Uploading checkpoint tensors to a device: the scheduler.

How the bytes travel (see `Uploader`):

* Direct: every data shard is memory-mapped (privately, copy-on-write; see
  fileio.LocalFile). The mapping is registered with `cudaHostRegister(...,
  cudaHostRegisterReadOnly)`, which pins those page cache pages as they are
  (pinning them for writing would make the kernel copy every page of the
  private map), and each tensor is copied in chunks straight
  from the mapping with `cudaMemcpyAsync` on one stream: no host-side copy at
  all, so the transfer runs at the pinned-memory (PCIe) ceiling. Registering
  costs about as much per byte as the copy itself (and reads the pages in
  from disk when the cache is cold), so it is done in page-aligned windows
  on two threads ahead of the copies, and a window is unregistered once its
  copies have landed: registration overlaps the transfers, and only a few
  windows are pinned at any time however big the checkpoint.
* Staged (fallback, when registration is refused or disabled): a few pinned
  staging buffers are filled from the mapping by several threads, one chunk
  each, and every filled buffer is copied to the device asynchronously while
  the others are being filled. One host thread alone copies far slower than
  PCIe, hence the threads.

CRC-32C of every chunk is computed on worker threads (the CRC function
releases the GIL) while the copies are in flight, and the chunk CRCs of a
tensor are combined into the tensor's CRC (`crc32c_combine`), so even one
huge tensor is checked in parallel. A mismatch raises `ChecksumError` naming
file, tensor and offset, after the copies have drained and before anything is
returned.

The device side is a backend (`backends.CupyBackend`, or `backends.HostBackend`,
a stand-in on host memory with the same interface, so the scheduler is
tested on machines without a GPU).
"""

from __future__ import annotations

import collections
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

import numpy as np

from .. import fileio, slices
from .._impl import hot
from ..bundle import TensorStore
from ..checkpoint import CheckpointReader, selected_tensors, unsupported_tensors
from ..crc import crc32c_combine
from ..errors import ChecksumError, FormatError, UnsupportedError
from .backends import address, host_bytes, make_backend

MiB = 1 << 20
DEFAULT_CHUNK = 32 * MiB
DEFAULT_WINDOW = 64 * MiB   # bytes of a memory map registered at once
WINDOWS_AHEAD = 4           # windows registered or registering at any time
REGISTER_THREADS = 2
PAGE = fileio.PAGE_SIZE


class _Check:
    """One stored entry whose CRC is verified: chunk CRCs combined in order."""

    __slots__ = ("path", "label", "offset", "expected", "lengths", "crcs")

    def __init__(self, path, label, offset, expected):
        self.path, self.label, self.offset, self.expected = path, label, offset, expected
        self.lengths = []
        self.crcs = []

    def add_chunk(self, n):
        self.lengths.append(n)
        self.crcs.append(None)
        return len(self.crcs) - 1

    def verify(self):
        crc = 0
        for n, c in zip(self.lengths, self.crcs):
            crc = crc32c_combine(crc, c, n)
        if crc != self.expected:
            raise ChecksumError(f"{self.path}: tensor {self.label} at offset {self.offset}: "
                                "data checksum mismatch (found while uploading to the device)")


# A chunk: copy host[lo:hi] (a uint8 view of `source`) to byte `dst_offset` of `dst`.
_Chunk = collections.namedtuple("_Chunk", "source host lo hi dst dst_offset check index")
# Host memory registered in one call (addresses), and the chunks copied from it.
_Window = collections.namedtuple("_Window", "start nbytes chunks")


def _bundle_of(reader):
    """The TensorStore of a CheckpointReader (or the store itself), if it has stored bytes."""
    bundle = reader.bundle if isinstance(reader, CheckpointReader) else reader
    if not isinstance(bundle, TensorStore):
        raise TypeError(f"expected a CheckpointReader or BundleReader, got {type(reader).__name__}")
    if not bundle.raw_bytes:   # V1: values are proto fields, not file bytes to copy
        raise UnsupportedError(f"{bundle.prefix}: a TF1 V1 checkpoint; GPU upload reads V2 "
                               "bundles only (load it to the host and copy with cupy.asarray)")
    return bundle


def _unregister_all(backend, handles):
    """Undo every registration even when one fails, then raise the first failure."""
    error = None
    for handle in handles:
        try:
            backend.unregister(handle)
        except Exception as e:
            error = error or e
    if error is not None:
        raise error


def _span(hosts, chunk):
    host, base = hosts[id(chunk.source)]
    return host[chunk.lo - base:chunk.hi - base]


def _contiguous_offset(bounds, shape, itemsize):
    """Byte offset of a slice region in a C-order array if the region is one run, else None."""
    k = 0
    while k < len(shape) and bounds[k][1] - bounds[k][0] == 1:
        k += 1
    for (a, b), d in zip(bounds[k + 1:], shape[k + 1:]):
        if (a, b) != (0, d):
            return None
    start = 0
    for (a, _), d in zip(bounds, shape):
        start = start * d + a
    return start * itemsize


class Uploader:
    """Plans and runs one upload: chunking, registration or staging, CRC overlap.

    `chunk_size` bytes per copy/CRC unit; `workers` CRC and staging threads;
    `staging_buffers` pinned buffers of `chunk_size` for the fallback;
    `register=False` forces the staging path; `register_window` bytes of a
    memory map are registered at once. After `run`, `stats` says what
    happened (bytes, chunks, direct/staged chunks, registered windows, ...).
    """

    def __init__(self, backend, chunk_size=DEFAULT_CHUNK, workers=None, staging_buffers=None,
                 register=True, verify=True, raw_dtypes=False, register_window=DEFAULT_WINDOW):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if register_window < 1:
            raise ValueError(f"register_window must be positive, got {register_window}")
        self.backend = backend
        self.chunk_size = int(chunk_size)
        # Whole pages, so that the windows of one memory map never share a page.
        self.window = -(-int(register_window) // PAGE) * PAGE
        self.workers = workers or max(1, min(8, os.cpu_count() or 1))
        self.staging_buffers = staging_buffers or max(2, self.workers)
        self.register = register
        self.verify = verify
        self.raw_dtypes = raw_dtypes
        self.stats = collections.Counter()

    # planning ---------------------------------------------------------------

    def _device_dtype(self, bundle, entry):
        dtype = entry.dtype
        if dtype.is_string:
            raise UnsupportedError(f"{bundle.prefix}: tensor {entry.name!r} is a string tensor; "
                                   "string tensors cannot live on a GPU (read it on the host)")
        npd = dtype.as_numpy_dtype
        if npd is None:
            raise UnsupportedError(f"{bundle.prefix}: tensor {entry.name!r} has dtype "
                                   f"{dtype.name}, which tfformats cannot decode")
        if self.backend.supports(npd):
            return npd
        if self.raw_dtypes:
            return np.dtype(f"u{npd.itemsize}")
        raise UnsupportedError(
            f"{bundle.prefix}: tensor {entry.name!r} has dtype {dtype.name}, which "
            f"{self.backend.name} arrays cannot hold; pass raw_dtypes=True to get its bits as "
            f"uint{8 * npd.itemsize} (e.g. then view as bfloat16 in your framework)")

    def _plan(self, bundle, entries):
        out, chunks, assigns = {}, [], []
        self._checks = []
        for entry in entries:
            npd = self._device_dtype(bundle, entry)
            dst = self.backend.empty(entry.shape, npd)
            out[entry.name] = dst
            self.stats["tensors"] += 1
            if bundle.swapped:   # other byte order: read (and check) on the host, upload that
                host = bundle.read_entry(entry, copy=True, verify=self.verify)
                self._add(chunks, None, host_bytes(host), 0, host.nbytes, dst, 0, None)
                self.stats["host_converted"] += 1
            elif not entry.slices:
                self._add_entry(bundle, entry, dst, 0, chunks)
            else:
                self._plan_parts(bundle, entry, npd, dst, chunks, assigns)
        return out, chunks, assigns

    def _add_entry(self, bundle, entry, dst, dst_offset, chunks):
        count = math.prod(entry.shape)
        if count * entry.dtype.itemsize != entry.size:
            raise FormatError(f"{bundle.prefix}.index: tensor {entry.name!r} of shape "
                              f"{list(entry.shape)} and dtype {entry.dtype.name} needs "
                              f"{count * entry.dtype.itemsize} bytes but its entry says "
                              f"{entry.size}")
        source, _ = bundle.raw(entry)   # bounds checked
        check = None
        if self.verify:
            check = _Check(source.path, repr(entry.name), entry.offset, hot.unmask_crc(entry.crc32c))
            self._checks.append(check)
        self._add(chunks, source, None, entry.offset, entry.size, dst, dst_offset, check)

    def _add(self, chunks, source, host, lo, n, dst, dst_offset, check):
        if check is not None and n == 0:
            check.crcs[check.add_chunk(0)] = 0   # an empty tensor's CRC is 0
        at, end = lo, lo + n
        while at < end:
            stop = min(at + self.chunk_size, end)
            if source is not None:   # a chunk never straddles two registration windows
                stop = min(stop, (at // self.window + 1) * self.window)
            index = check.add_chunk(stop - at) if check is not None else None
            chunks.append(_Chunk(source, host, at, stop, dst, dst_offset + at - lo, check, index))
            at = stop

    def _plan_parts(self, bundle, entry, npd, dst, chunks, assigns):
        # The host reader's check: the parts must tile the tensor exactly, or
        # part of the device array would be handed out uninitialised.
        for extents, (bounds, part) in zip(entry.slices, bundle.parts(entry)):
            part = part._replace(name=f"{entry.name}[{slices.spec_string(extents, entry.shape)}]")
            offset = _contiguous_offset(bounds, entry.shape, npd.itemsize)
            self.stats["parts"] += 1
            if offset is not None:   # one run of the device array: copy straight into it
                self._add_entry(bundle, part, dst, offset, chunks)
            else:                    # upload alone, then a strided device-side copy
                tmp = self.backend.empty(part.shape, npd)
                self._add_entry(bundle, part, tmp, 0, chunks)
                assigns.append((dst, slices.index(bounds), tmp))
                self.stats["strided_parts"] += 1

    # running ----------------------------------------------------------------

    def run(self, bundle, entries):
        """Upload `entries` (Entry tuples of `bundle`); name -> device array."""
        out, chunks, assigns = self._plan(bundle, entries)
        self.stats["chunks"] += len(chunks)
        self.stats["bytes"] += sum(c.hi - c.lo for c in chunks)
        backend = self.backend
        hosts, handles = {}, []
        # Copies in flight read these, and a freed pinned buffer goes back to
        # CuPy's pool for reuse: they must outlive the final synchronize.
        staging_buffers = []
        stream = backend.stream()
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tfformats-upload")
        crc_futures = []
        try:
            windows, staged = self._windows(chunks, hosts)
            self._run_direct(windows, hosts, stream, pool, crc_futures, staged, handles)
            self._run_staged(staged, hosts, stream, pool, staging_buffers)
            for c, fut in crc_futures:
                c.check.crcs[c.index] = fut.result()
            for dst, index, tmp in assigns:   # queued behind the copies into `tmp`
                backend.assign(dst, index, tmp, stream)
        finally:
            try:
                backend.synchronize(stream)   # no copy may read memory we are about to free
            finally:
                pool.shutdown(wait=True)
                _unregister_all(backend, handles)
        for check in self._checks:
            check.verify()
        self.stats["verified"] += len(self._checks)
        return out

    def _windows(self, chunks, hosts):
        """Group the chunks of memory-mapped sources into registration windows.

        Returns (windows in file order, chunks to stage). `hosts` gets, per
        source, (uint8 view of the bytes the chunks need, the file offset
        where that view starts).
        """
        spans, sources = {}, {}
        for c in chunks:
            if c.source is not None:
                lo, hi = spans.get(id(c.source), (c.lo, c.hi))
                spans[id(c.source)] = (min(lo, c.lo), max(hi, c.hi))
                sources[id(c.source)] = c.source
        for key, (lo, hi) in spans.items():
            hosts[key] = (host_bytes(sources[key].view(lo, hi - lo)), lo)
        groups, staged = {}, []
        for c in chunks:
            if c.source is None:
                hosts[id(c.host)] = (c.host, 0)
                staged.append(c._replace(source=c.host))
            elif self.register:
                groups.setdefault((id(c.source), c.lo // self.window), []).append(c)
            else:
                staged.append(c)
        order = {key: i for i, key in enumerate(spans)}
        windows = []
        for key, k in sorted(groups, key=lambda g: (order[g[0]], g[1])):
            group = groups[key, k]
            host, base = hosts[key]
            start = address(host) + min(c.lo for c in group) - base
            stop = address(host) + max(c.hi for c in group) - base
            if (address(host) - base) % PAGE == 0:
                # A memory map (addresses and file offsets agree modulo the page
                # size): register whole pages. The map covers whole pages, and
                # windows start on page boundaries, so no two share a page.
                start -= start % PAGE
                stop = -(-stop // PAGE) * PAGE
            windows.append(_Window(start, stop - start, group))
        return windows, staged

    def _run_direct(self, windows, hosts, stream, pool, crc_futures, staged, handles):
        """Register windows ahead on other threads, copy straight from them,
        and unregister each once its copies have landed. Chunks of a refused
        window go to `staged`; `handles` holds what is still registered."""
        if not windows:
            return
        backend = self.backend
        upcoming = iter(windows)
        ahead = collections.deque()   # (window, future of its registration handle)
        live = collections.deque()    # (handle, event recorded after its copies)
        registrar = ThreadPoolExecutor(REGISTER_THREADS, thread_name_prefix="tfformats-register")

        def top_up():
            while len(ahead) + len(live) < WINDOWS_AHEAD:
                window = next(upcoming, None)
                if window is None:
                    return
                ahead.append((window, registrar.submit(backend.register, window.start,
                                                       window.nbytes)))
        try:
            top_up()
            while ahead:
                window, registration = ahead.popleft()
                handle = registration.result()
                if handle is None:
                    self.stats["registrations_refused"] += 1
                    staged.extend(window.chunks)
                    top_up()
                    continue
                handles.append(handle)
                self.stats["registered_windows"] += 1
                self.stats["registered_bytes"] += window.nbytes
                for c in window.chunks:
                    src = _span(hosts, c)
                    if c.check is not None:
                        crc_futures.append((c, pool.submit(hot.crc32c, src)))
                    backend.copy(c.dst, c.dst_offset, src, stream)
                self.stats["direct_chunks"] += len(window.chunks)
                live.append((handle, backend.record(stream)))
                # Room for the next registration: wait for the oldest window's
                # copies (the newest keep the copy engine busy meanwhile).
                while len(live) > 1 and len(live) + len(ahead) >= WINDOWS_AHEAD:
                    old, event = live.popleft()
                    backend.wait(event)
                    handles.remove(old)
                    backend.unregister(old)
                top_up()
        finally:
            registrar.shutdown(wait=True, cancel_futures=True)
            for _, registration in ahead:   # on error: undo what got registered
                if not registration.cancelled() and registration.exception() is None \
                        and registration.result() is not None:
                    handles.append(registration.result())

    def _run_staged(self, staged, hosts, stream, pool, keep):
        """Copy `staged` through pinned buffers, which go into `keep`: the
        caller holds them until the stream is synchronized."""
        if not staged:
            return
        backend = self.backend
        size = min(self.chunk_size, max(c.hi - c.lo for c in staged))
        nbuf = min(self.staging_buffers, len(staged))
        buffers = [backend.pinned(size) for _ in range(nbuf)]
        keep.extend(buffers)
        events = [None] * nbuf

        def fill(c, buf, event):
            if event is not None:
                backend.wait(event)   # the previous copy out of this buffer has landed
            n = c.hi - c.lo
            np.copyto(buf[:n], _span(hosts, c))
            return hot.crc32c(buf[:n]) if c.check is not None else None

        def issue(c, b, fut):
            crc = fut.result()
            if c.check is not None:
                c.check.crcs[c.index] = crc
            backend.copy(c.dst, c.dst_offset, buffers[b][:c.hi - c.lo], stream)
            events[b] = backend.record(stream)

        pending = collections.deque()
        try:
            for i, c in enumerate(staged):
                if len(pending) == nbuf:
                    issue(*pending.popleft())
                b = i % nbuf   # its last user, chunk i - nbuf, has been issued
                pending.append((c, b, pool.submit(fill, c, buffers[b], events[b])))
            while pending:
                issue(*pending.popleft())
        finally:
            for _, _, fut in pending:   # on error: let running fills finish
                fut.cancel()
                try:
                    fut.result()
                except BaseException:
                    pass
        self.stats["staged_chunks"] += len(staged)
        self.stats["staging_buffers"] += nbuf


# --- the public functions ---------------------------------------------------------

def _select(bundle, names):
    if names is None:   # what a device can hold: no strings, variants, resources
        return [e for _, e in sorted(bundle.entries().items())
                if not e.dtype.is_string and e.dtype.as_numpy_dtype is not None]
    if isinstance(names, str):
        names = [names]
    return [bundle.entry(n) for n in names]


def upload(reader: CheckpointReader | TensorStore | str | os.PathLike,
           names: Iterable[str] | None = None, device: Any = "cuda:0", verify: bool = True, *,
           chunk_size: int = DEFAULT_CHUNK, workers: int | None = None,
           staging_buffers: int | None = None, register: bool = True,
           register_window: int = DEFAULT_WINDOW, raw_dtypes: bool = False, backend: Any = None,
           stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """Upload tensors of a checkpoint to a GPU: name -> cupy.ndarray.

    `reader` is a CheckpointReader or BundleReader (or a path to open).
    `names=None` uploads every tensor except string tensors (GPUs have no
    strings; naming a string tensor raises UnsupportedError). Partitioned
    tensors are assembled on the device. With `verify`, every tensor's
    CRC-32C is checked while the copies run; a mismatch raises ChecksumError
    before anything is returned. dtypes CuPy lacks (bfloat16, float8, int4)
    raise UnsupportedError unless `raw_dtypes=True`, which uploads their bits
    as unsigned integers of the same width.

    Tuning: `chunk_size` (bytes per copy), `workers` (CRC and staging
    threads), `staging_buffers`, `register=False` (skip cudaHostRegister,
    always stage), `register_window` (bytes registered per call; at most
    WINDOWS_AHEAD windows are pinned at once). `backend="host"` runs the same
    scheduler into host memory (tests, machines without a GPU). Pass a dict
    as `stats` to get counters.
    """
    owned = None
    if isinstance(reader, (str, os.PathLike)):
        reader = owned = CheckpointReader(reader, verify=verify)
    try:
        dev = make_backend(device, backend)
        bundle = _bundle_of(reader)
        up = Uploader(dev, chunk_size=chunk_size, workers=workers,
                      staging_buffers=staging_buffers, register=register,
                      register_window=register_window, verify=verify,
                      raw_dtypes=raw_dtypes)
        try:
            return up.run(bundle, _select(bundle, names))
        finally:
            if stats is not None:
                stats.update(up.stats)
                stats["refusal"] = getattr(dev, "refusal", None)
            if backend is None or isinstance(backend, str):
                getattr(dev, "close", lambda: None)()
    finally:
        if owned is not None:
            owned.close()


def to_device(reader: CheckpointReader | TensorStore | str | os.PathLike, name: str,
              device: Any = "cuda:0", verify: bool = True, **kwargs: Any) -> Any:
    """One tensor on the device (see `upload` for the keywords)."""
    return upload(reader, [name], device, verify, **kwargs)[name]


def load(path: str | os.PathLike, device: Any = "cuda:0", verify: bool = True,
         skip_unsupported: bool = False, names: Any = None, include_object_graph: bool = False,
         **kwargs: Any) -> dict[str, Any]:
    """`load_tensors(path, device=...)`: the tensors, numeric ones on the device.

    `names` and `include_object_graph` pick tensors as `load_tensors` does
    (tfformats/checkpoint.py). String tensors (which a GPU cannot hold) stay
    on the host as numpy object arrays, so nothing is lost. Variant and
    resource tensors raise UnsupportedError unless `skip_unsupported=True`.
    """
    with CheckpointReader(path, verify=verify) as reader:
        wanted = selected_tensors(reader, names, include_object_graph)
        skip = unsupported_tensors(reader, skip_unsupported, set(wanted.values()))
        wanted = {asked: key for asked, key in wanted.items() if key not in skip}
        bundle = reader.bundle
        strings = {key for key in wanted.values() if bundle.entry(key).dtype.is_string}
        numeric = [key for key in dict.fromkeys(wanted.values()) if key not in strings]
        out = upload(reader, numeric, device, verify, **kwargs) if numeric else {}
        for key in strings:
            out[key] = bundle.read(key, verify=verify)
        return {asked: out[key] for asked, key in sorted(wanted.items())}
