"""A stand-in for the part of CuPy that tfformats.cuda and gpu_check.py call.

`make()` returns a module to put in `sys.modules["cupy"]`, so that the real
`CupyBackend` code runs on machines without a GPU. The names and argument
orders are CuPy 14's (read off cupy-cuda12x 14.2.0's docstrings, e.g.
`memcpyAsync(intptr_t dst, intptr_t src, size_t size, int kind, intptr_t
stream)`). "Device" memory is host memory addressed by integer pointers;
copies are `ctypes.memmove` run in order on one thread per stream, so they
land late as on a GPU. Where CUDA would fail, or a real upload would be slow
or read freed memory, the fake fails too or records it in `cupy.fake`:

* memcpyAsync needs the HostToDevice kind, a live stream and a destination
  inside one device allocation; a source that is neither registered nor
  pinned is copied synchronously (as CUDA does with pageable memory) and
  counted as "pageable".
* hostRegister refuses overlapping ranges, ranges that are not mapped, and
  read-only pages without the read-only flag (checked in /proc/self/maps).
  It accepts a private (copy-on-write) file mapping without the flag, as
  CUDA does, but pinning it for writing makes the kernel copy every page into
  anonymous memory, which stays after unregistering: zero-copy lost and the
  file's size in memory. That is recorded in `fake.violations`.
* Freeing pinned memory, or unregistering a range, while a queued copy
  still reads it is recorded in `fake.violations`.
* Fresh device arrays are filled with 0xCD, so bytes nobody wrote show;
  `asnumpy` does not wait for non-blocking streams, as CuPy's does not.
"""

import collections
import ctypes
import itertools
import threading
import time
import types
import weakref

import numpy as np

from tfformats.cuda.backends import _HostStream

HOST_TO_DEVICE = 1
READ_ONLY = 8
ATTR_REGISTER_SUPPORTED = 99
ATTR_REGISTER_READ_ONLY_SUPPORTED = 113


class CUDARuntimeError(RuntimeError):
    pass


class OutOfMemoryError(MemoryError):
    pass


def _mapped_ranges():
    """(start, stop, writable, private file mapping) of every mapping of this process."""
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms, _, _, inode = line.split()[:5]
            lo, hi = (int(x, 16) for x in span.split("-"))
            yield lo, hi, perms[1] == "w", perms[3] == "p" and inode != "0"


class State:
    """What the fake saw: counters, violations and the live objects."""

    def __init__(self, count, delay, read_only_supported, memory_limit):
        self.count = count
        self.delay = delay
        self.read_only_supported = read_only_supported
        self.memory_limit = memory_limit
        self.counts = collections.Counter()
        self.violations = []
        self.device_arrays = {}            # ptr -> (stop, backing array), live ones
        self.registered = {}               # ptr -> stop
        self.pinned = {}                   # ptr -> (stop, storage), live ones
        self.streams = {}                  # ptr -> Stream
        self.in_flight = collections.deque()   # (src lo, src hi, future)
        self.local = threading.local()
        self.lock = threading.Lock()   # registration runs on several threads
        self.ids = itertools.count(0x1000)
        self.null_stream = None

    def reading(self, lo, hi):
        """Queued copies that have not yet read [lo, hi)."""
        return [f for a, b, f in self.in_flight if a < hi and lo < b and not f.done()]

    def close(self):
        for s in list(self.streams.values()) + [self.null_stream]:
            if s is not None:
                s._queue.close()


def make(count=1, delay=0.0, read_only_supported=True, count_error=None, memory_limit=None):
    """A fresh fake `cupy` module; its `fake` attribute is the State."""
    state = State(count, delay, read_only_supported, memory_limit)

    # --- streams and events ------------------------------------------------------

    class Event:
        def __init__(self, block=True, disable_timing=False, interprocess=False):
            self._future = None
            self.time = None

        def record(self, stream=None):
            stream = stream or get_current_stream()

            def stamp():
                self.time = time.perf_counter()
            self._future = stream._queue.submit(stamp)
            return self

        def synchronize(self):
            if self._future is not None:
                self._future.result()

        @property
        def done(self):
            return self._future is None or self._future.done()

    class Stream:
        def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
            self.ptr = 0 if null else next(state.ids)
            self.non_blocking = non_blocking
            self._queue = _HostStream(0.0)
            if not null:
                state.streams[self.ptr] = self
            state.counts["streams"] += 1

        def record(self, event=None):
            return (event or Event()).record(self)

        def wait_event(self, event):
            self._queue.submit(event.synchronize)

        def synchronize(self):
            self._queue.synchronize()

        def __enter__(self):
            state.local.__dict__.setdefault("stack", []).append(self)
            return self

        def __exit__(self, *exc):
            state.local.stack.pop()
            return False

    def get_current_stream():
        stack = getattr(state.local, "stack", None)
        return stack[-1] if stack else state.null_stream

    state.null_stream = Stream(null=True)

    def get_elapsed_time(start, stop):
        start.synchronize()
        stop.synchronize()
        return (stop.time - start.time) * 1e3

    class Device:
        def __init__(self, device=None):
            self.id = device or 0

        def __enter__(self):
            if self.id >= state.count:
                raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
            return self

        def __exit__(self, *exc):
            return False

    # --- memory ------------------------------------------------------------------

    class MemoryPointer:
        def __init__(self, ptr):
            self.ptr = ptr

    class ndarray:
        """A device array: shape, dtype, nbytes, data.ptr and `a[index] = b`."""

        def __init__(self, shape, dtype):
            self.dtype = np.dtype(dtype)
            self.shape = tuple(int(d) for d in (shape if isinstance(shape, tuple) else (shape,)))
            self.size = int(np.prod(self.shape, dtype=np.int64))
            self.nbytes = self.size * self.dtype.itemsize
            used = sum(a.nbytes for _, a in state.device_arrays.values())
            if state.memory_limit is not None and used + self.nbytes > state.memory_limit:
                raise OutOfMemoryError(f"out of memory allocating {self.nbytes} bytes")
            self._host = np.full(self.nbytes, 0xCD, dtype=np.uint8)
            ptr = self._host.ctypes.data if self.nbytes else 0
            self.data = MemoryPointer(ptr)
            if self.nbytes:
                state.device_arrays[ptr] = (ptr + self.nbytes, self._host)
                weakref.finalize(self, state.device_arrays.pop, ptr, None)

        def _view(self):
            return self._host.view(self.dtype).reshape(self.shape)

        def __setitem__(self, index, value):
            if not isinstance(value, ndarray):
                raise TypeError("the fake only assigns device arrays")
            dst, src = self._view(), value._view()
            state.counts["device_assigns"] += 1

            def assign():
                dst[index] = src
            get_current_stream()._queue.submit(assign)

    def empty(shape, dtype=float, order="C"):
        return ndarray(shape, dtype)

    def asnumpy(a):
        return a._view().copy()

    def alloc_pinned_memory(size):
        # A ctypes array over storage that queued copies hold: it has the
        # buffer protocol and `.ptr` as CuPy's PinnedMemoryPointer, numpy views
        # keep it alive, and freeing it in flight is seen without a copy
        # reading freed memory.
        storage = np.empty(max(size, 1), dtype=np.uint8)
        pointer_type = type("PinnedMemoryPointer", (ctypes.c_uint8 * size,), {})
        mem = pointer_type.from_buffer(storage)
        mem.ptr = storage.ctypes.data
        lo, hi = mem.ptr, mem.ptr + size
        state.pinned[lo] = (hi, storage)
        state.counts["pinned_allocations"] += 1

        def freed():
            del state.pinned[lo]
            if state.reading(lo, hi):
                state.violations.append(f"pinned memory at {lo:#x} freed while a copy reads it")
        weakref.finalize(mem, freed)
        return mem

    class MemoryPool:
        def free_all_blocks(self):
            pass

    # --- runtime -----------------------------------------------------------------

    def getDeviceCount():
        if count_error is not None:
            raise count_error
        return state.count

    def getDeviceProperties(device):
        return {"name": b"fake GPU (tests/fake_cupy.py)", "totalGlobalMem": 1 << 34}

    def deviceGetAttribute(attrib, device):
        if attrib == ATTR_REGISTER_READ_ONLY_SUPPORTED:
            return int(state.read_only_supported)
        if attrib == ATTR_REGISTER_SUPPORTED:
            return 1
        raise CUDARuntimeError(f"the fake does not know attribute {attrib}")

    def hostRegister(ptr, size, flags):
        with state.lock:
            _host_register(ptr, size, flags)

    def _host_register(ptr, size, flags):
        state.counts["hostRegister"] += 1
        hi = ptr + size
        if flags & ~0xF or not size:
            raise CUDARuntimeError("cudaErrorInvalidValue: invalid argument")
        if flags & READ_ONLY and not state.read_only_supported:
            raise CUDARuntimeError("cudaErrorNotSupported: operation not supported")
        if any(lo < hi and ptr < stop for lo, stop in tuple(state.registered.items())):
            raise CUDARuntimeError("cudaErrorHostMemoryAlreadyRegistered: part or all of the "
                                   "requested memory range is already mapped")
        at, read_only, copy_on_write = ptr, False, False
        for lo, stop, writable, private_file in sorted(_mapped_ranges()):
            if lo <= at < stop:
                read_only |= not writable
                copy_on_write |= writable and private_file
                at = stop
            if at >= hi:
                break
        if at < hi:
            raise CUDARuntimeError("cudaErrorInvalidValue: range not mapped")
        if read_only and not flags & READ_ONLY:
            raise CUDARuntimeError("cudaErrorInvalidValue: read-only memory needs "
                                   "cudaHostRegisterReadOnly")
        if copy_on_write and not flags & READ_ONLY:
            state.violations.append(f"range at {ptr:#x} of a private file mapping registered "
                                    "without cudaHostRegisterReadOnly: every page copied")
        state.registered[ptr] = hi

    def hostUnregister(ptr):
        with state.lock:
            _host_unregister(ptr)

    def _host_unregister(ptr):
        if ptr not in state.registered:
            raise CUDARuntimeError("cudaErrorHostMemoryNotRegistered: pointer does not "
                                   "correspond to a registered memory region")
        if state.reading(ptr, state.registered[ptr]):
            state.violations.append(f"range at {ptr:#x} unregistered while a copy reads it")
        del state.registered[ptr]

    def _source(lo, hi):
        """What the source memory is, and the object that keeps it alive."""
        # a snapshot: registration threads change the dict while copies are planned.
        # dict.copy(), not tuple(items()): building the item tuples can run the
        # collector, whose finalizers unregister memory in this very thread.
        if any(a <= lo and hi <= b for a, b in state.registered.copy().items()):
            return "registered", None   # the caller's memory map
        for a, (b, storage) in state.pinned.copy().items():
            if a <= lo and hi <= b:
                return "pinned", storage
        return "pageable", None

    def memcpyAsync(dst, src, size, kind, stream):
        if kind != HOST_TO_DEVICE:
            raise CUDARuntimeError(f"the fake copies host to device only, got kind {kind}")
        queue = state.null_stream if stream == 0 else state.streams.get(stream)
        if queue is None:
            raise CUDARuntimeError("cudaErrorInvalidResourceHandle: invalid stream")
        target = [backing for lo, (stop, backing) in state.device_arrays.items()
                  if lo <= dst and dst + size <= stop]
        if not target:
            raise CUDARuntimeError(f"cudaErrorInvalidValue: {size} bytes at device "
                                   f"address {dst:#x} are not inside one allocation")
        source, storage = _source(src, src + size)
        state.counts["copies_from_" + source] += 1
        state.counts["copied_bytes"] += size
        if source == "pageable":   # CUDA stages pageable memory before returning
            queue.synchronize()
            ctypes.memmove(dst, src, size)
            return
        delay = state.delay

        def copy(keep=(target, storage)):   # neither end is freed before the copy runs
            if delay:
                time.sleep(delay)
            ctypes.memmove(dst, src, size)
        state.in_flight.append((src, src + size, queue._queue.submit(copy)))
        while state.in_flight and state.in_flight[0][2].done():
            state.in_flight.popleft()

    runtime = types.SimpleNamespace(
        CUDARuntimeError=CUDARuntimeError, getDeviceCount=getDeviceCount,
        getDeviceProperties=getDeviceProperties, deviceGetAttribute=deviceGetAttribute,
        hostRegister=hostRegister, hostUnregister=hostUnregister, memcpyAsync=memcpyAsync,
        memcpyHostToDevice=HOST_TO_DEVICE,
        cudaDevAttrHostRegisterSupported=ATTR_REGISTER_SUPPORTED,
        cudaDevAttrHostRegisterReadOnlySupported=ATTR_REGISTER_READ_ONLY_SUPPORTED)
    cuda = types.SimpleNamespace(
        runtime=runtime, Device=Device, Stream=Stream, Event=Event,
        get_current_stream=get_current_stream, get_elapsed_time=get_elapsed_time,
        alloc_pinned_memory=alloc_pinned_memory,
        memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError))
    module = types.ModuleType("cupy", "fake CuPy (tests/fake_cupy.py)")
    pool = MemoryPool()
    module.__dict__.update(cuda=cuda, ndarray=ndarray, empty=empty, asnumpy=asnumpy,
                           get_default_memory_pool=lambda: pool, fake=state)
    return module
