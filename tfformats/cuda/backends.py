"""The device side of an upload: `CupyBackend` on a GPU, and `HostBackend`,
a stand-in on host memory with the same interface (so the scheduler is
tested on machines without a GPU). CuPy is imported only when a
`CupyBackend` is made."""

from __future__ import annotations

import collections
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import DeviceError
from .devices import parse_device

# cudaHostRegisterReadOnly (CUDA >= 11.1). Data files are mapped privately
# (fileio.LocalFile), so CUDA would accept them without it, but then pin them
# for writing: the kernel would copy every page of the map into memory of its
# own (and keep it after unregistering). Without the flag we stage instead.
HOST_REGISTER_READ_ONLY = 8
INSTALL_HINT = "pip install tfformats[cuda]"


def address(array):
    return array.__array_interface__["data"][0]


def host_bytes(buffer):
    """A flat uint8 numpy view of a buffer (read-only buffers welcome)."""
    if isinstance(buffer, np.ndarray):
        return buffer.reshape(-1).view(np.uint8)
    return np.frombuffer(buffer, dtype=np.uint8)


_CUPY_CHARS = set("?bBhHiIlLqQefdFD")


class CupyBackend:
    """The real device: CuPy arrays on one CUDA device.

    Interface shared with `HostBackend` (all the scheduler uses):
    `supports(np_dtype)`, `empty(shape, dtype)`, `register(address, nbytes)` ->
    handle or None when refused, `unregister(handle)`, `pinned(nbytes)` -> writable
    uint8 numpy array in pinned memory, `stream()`, `copy(dst, byte_offset,
    src_uint8, stream)` (asynchronous; `src` registered or pinned),
    `record(stream)` -> event, `wait(event)` (host waits; releases the GIL),
    `assign(dst, index, src, stream)` (device-side `dst[index] = src`),
    `synchronize(stream)`, `to_numpy(array)`, `device` (text for messages).
    """

    name = "cuda"

    def __init__(self, device=0):
        cupy = _import_cupy(device)
        self.cp = cupy
        self.ordinal = parse_device(device)
        self.device = f"cuda:{self.ordinal}"
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # no driver, no device, driver too old ...
            raise DeviceError(f"no CUDA device found: CuPy is installed but CUDA reports "
                              f"{type(e).__name__}: {e}") from None
        if count == 0:
            raise DeviceError("no CUDA device found (CUDA reports 0 devices)")
        if self.ordinal >= count:
            raise DeviceError(f"{self.device} asked for, but this machine has only {count} "
                              f"CUDA device(s): cuda:0..cuda:{count - 1}")
        self._dev = cupy.cuda.Device(self.ordinal)
        self.refusal = None   # why the last registration was refused

    def model(self):
        props = self.cp.cuda.runtime.getDeviceProperties(self.ordinal)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)

    def supports(self, dtype):
        return np.dtype(dtype).char in _CUPY_CHARS

    def empty(self, shape, dtype):
        with self._dev:
            try:
                return self.cp.empty(shape, dtype=dtype)
            except self.cp.cuda.memory.OutOfMemoryError as e:
                raise DeviceError(f"out of memory on {self.device}: {e}") from None

    def _can_register_read_only(self):
        # Asking first keeps a refusal we could predict out of CUDA's
        # last-error state, which other libraries in the process may check.
        rt = self.cp.cuda.runtime
        attr = getattr(rt, "cudaDevAttrHostRegisterReadOnlySupported", 113)
        try:
            return bool(rt.deviceGetAttribute(attr, self.ordinal))
        except Exception:   # an older CuPy or driver: let hostRegister tell
            return True

    def register(self, address, nbytes):
        rt = self.cp.cuda.runtime
        if not self._can_register_read_only():
            self.refusal = (f"{self.device} cannot register read-only host memory "
                            "(cudaDevAttrHostRegisterReadOnlySupported is 0)")
            return None
        with self._dev:
            try:
                rt.hostRegister(address, nbytes, HOST_REGISTER_READ_ONLY)
            except Exception as e:  # CUDARuntimeError: not supported, already registered ...
                self.refusal = f"{type(e).__name__}: {e}"
                return None
        return address

    def unregister(self, handle):
        with self._dev:
            self.cp.cuda.runtime.hostUnregister(handle)

    def pinned(self, nbytes):
        with self._dev:
            mem = self.cp.cuda.alloc_pinned_memory(nbytes)
        return np.frombuffer(mem, dtype=np.uint8, count=nbytes)

    def stream(self):
        with self._dev:
            stream = self.cp.cuda.Stream(non_blocking=True)
            # The arrays we copy into came from CuPy's pool on the current
            # stream, maybe from blocks that work queued there still reads; a
            # non-blocking stream does not wait for it unless told to.
            stream.wait_event(self.cp.cuda.get_current_stream().record())
            return stream

    def copy(self, dst, byte_offset, src, stream):
        rt = self.cp.cuda.runtime
        with self._dev:
            rt.memcpyAsync(dst.data.ptr + byte_offset, address(src), src.nbytes,
                           rt.memcpyHostToDevice, stream.ptr)

    def record(self, stream):
        with self._dev:
            return stream.record()

    def wait(self, event):
        event.synchronize()

    def assign(self, dst, index, src, stream):
        with self._dev, stream:
            dst[index] = src

    def synchronize(self, stream):
        stream.synchronize()

    def to_numpy(self, array):
        return self.cp.asnumpy(array)


class _HostEvent:
    def __init__(self, future):
        self._future = future

    def synchronize(self):
        self._future.result()


class _HostStream:
    """A queue of operations run in order on one thread, like a CUDA stream."""

    def __init__(self, delay):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tfformats-hoststream")
        self._last = None
        self._delay = delay

    def submit(self, fn, *args):
        delay = self._delay

        def op():
            if delay:
                time.sleep(delay)
            fn(*args)
        self._last = self._pool.submit(op)
        return self._last

    def record(self):
        return _HostEvent(self._last if self._last is not None else self.submit(lambda: None))

    def synchronize(self):
        if self._last is not None:
            self._last.result()

    def close(self):
        self._pool.shutdown(wait=True)


class HostBackend:
    """A stand-in device on host memory with `CupyBackend`'s interface.

    Copies run asynchronously on a thread per stream (optionally slowed by
    `delay` seconds each), so a scheduler that reuses a staging buffer too
    early or returns before the copies land produces wrong bytes here too.
    `refuse_register=True` makes every registration fail (as CUDA does for
    some mappings); `supported` limits the dtypes (e.g. to CuPy's); with
    `strict=True` a copy from memory that is neither registered nor pinned
    is an error, as it would be slow or unsafe on a real device. A pinned
    buffer dropped while a copy from it is still queued is counted in
    `counts["pinned_freed_in_flight"]`: CuPy's pinned pool would hand that
    memory to the next allocation.
    """

    name = "host"
    device = "host"

    def __init__(self, refuse_register=False, delay=0.0, supported=None, strict=True):
        self.refuse_register = refuse_register
        self.delay = delay
        self.supported = supported
        self.strict = strict
        self.refusal = "registration refused (HostBackend(refuse_register=True))" \
            if refuse_register else None
        self.registered = {}      # handle -> (start, stop)
        self.pinned_ranges = []
        self.counts = collections.Counter()
        self._lock = threading.Lock()
        self._streams = []
        self._copies = collections.deque()   # (source address, future) of queued copies

    def model(self):
        return "host memory (HostBackend)"

    def supports(self, dtype):
        dtype = np.dtype(dtype)
        if self.supported == "cupy":
            return dtype.char in _CUPY_CHARS
        return self.supported is None or dtype in self.supported

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def register(self, address, nbytes):
        with self._lock:   # called from several threads, as CUDA allows
            self.counts["register_calls"] += 1
            if self.refuse_register:
                return None
            for lo, hi in self.registered.values():
                if lo < address + nbytes and address < hi:
                    return None   # CUDA refuses overlapping registrations too
            handle = (address, nbytes)
            self.registered[handle] = (address, address + nbytes)
            self.counts["registered_bytes"] += nbytes
            self.counts["most_registered_bytes"] = max(
                self.counts["most_registered_bytes"],
                sum(hi - lo for lo, hi in self.registered.values()))
            return handle

    def unregister(self, handle):
        with self._lock:
            del self.registered[handle]

    def pinned(self, nbytes):
        # Hand out a view: the copies queued from it hold views of `memory`,
        # not of the buffer, so dropping the buffer is seen, as CuPy would.
        memory = np.empty(nbytes, dtype=np.uint8)
        buf = memory[:]
        span = (address(memory), address(memory) + nbytes)
        self.pinned_ranges.append(span)
        self.counts["pinned_buffers"] += 1
        weakref.finalize(buf, self._pinned_freed, span)
        return buf

    def _pinned_freed(self, span):
        self.pinned_ranges.remove(span)
        lo, hi = span
        if any(lo <= a < hi and not f.done() for a, f in self._copies):
            self.counts["pinned_freed_in_flight"] += 1

    def stream(self):
        s = _HostStream(self.delay)
        self._streams.append(s)
        return s

    def _check_source(self, src):
        a, b = address(src), address(src) + src.nbytes
        for lo, hi in list(self.registered.values()):
            if lo <= a and b <= hi:
                return "registered"
        for lo, hi in self.pinned_ranges:
            if lo <= a and b <= hi:
                return "pinned"
        if self.strict and src.nbytes:
            raise RuntimeError(f"asynchronous copy from {src.nbytes} bytes of host memory "
                               "that is neither registered nor pinned")
        return "pageable"

    def copy(self, dst, byte_offset, src, stream):
        self.counts["copies_from_" + self._check_source(src)] += 1
        self.counts["copied_bytes"] += src.nbytes
        flat = dst.reshape(-1).view(np.uint8)
        if flat.nbytes and not np.shares_memory(flat, dst):
            raise RuntimeError("destination is not contiguous")
        if byte_offset < 0 or byte_offset + src.nbytes > flat.nbytes:
            raise RuntimeError(f"copy of {src.nbytes} bytes at {byte_offset} overflows "
                               f"a {flat.nbytes}-byte array")

        src = src[:]   # hold the memory, not the caller's buffer object (see `pinned`)

        def op():
            flat[byte_offset:byte_offset + src.nbytes] = src
        while self._copies and self._copies[0][1].done():
            self._copies.popleft()
        self._copies.append((address(src), stream.submit(op)))

    def record(self, stream):
        return stream.record()

    def wait(self, event):
        event.synchronize()

    def assign(self, dst, index, src, stream):
        self.counts["device_assigns"] += 1

        def op():
            dst[index] = src
        stream.submit(op)

    def synchronize(self, stream):
        stream.synchronize()

    def to_numpy(self, array):
        return np.asarray(array)

    def close(self):
        for s in self._streams:
            s.close()
        self._streams.clear()


def _import_cupy(device):
    try:
        import cupy
    except ImportError as e:
        raise DeviceError(f"device={device!r} needs CuPy, which is not importable ({e}); "
                          f"install it with `{INSTALL_HINT}` (or the cupy-cudaXXx wheel "
                          "matching your CUDA version)") from None
    return cupy


def make_backend(device: Any = "cuda:0", backend: Any = None) -> Any:
    """A backend instance: `backend` itself, "host", "cuda"/None for CuPy on `device`."""
    if backend is None or backend == "cuda":
        parse_device(device)   # a bad string is reported before CuPy is looked for
        return CupyBackend(device)
    if backend == "host":
        return HostBackend()
    if isinstance(backend, str):
        raise ValueError(f"unknown backend {backend!r}: use 'cuda' or 'host'")
    return backend
