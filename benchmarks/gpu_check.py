"""GPU upload check: tfformats.cuda.upload against CuPy's pinned host-to-device copy.

Run on a machine with an NVIDIA GPU and CuPy (`pip install tfformats[cuda]`):

    python benchmarks/gpu_check.py                 # ~1 GiB float32 checkpoint
    python benchmarks/gpu_check.py --size-gib 4 --chunk-mib 64

It writes a float32 checkpoint of many tensors with `tfformats.writer.save_checkpoint`
(or uses `--checkpoint PREFIX`), reads it once to warm the page cache, uploads
every tensor with CRC verification on, compares each one bit for bit with the
host read, and prints the achieved GB/s next to CuPy's own pinned
host-to-device copy of the same number of bytes, measured in the same run.
The registered path is timed with several registration window sizes (the
default first: the 90% target is judged on it), then the staging fallback.
Exit status 1 when any tensor differs. `--backend host` runs the same
scheduler into host memory (no GPU needed; the test suite uses it).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

try:
    import tfformats
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    import tfformats
from tfformats import cuda

GB = 1e9


def write_checkpoint(prefix, size_bytes, tensors, seed=0):
    """A float32 checkpoint of `tensors` tensors of mixed sizes totalling ~size_bytes."""
    try:
        from tfformats.writer import save_checkpoint   # tfformats/writer.py
    except ImportError as e:
        raise SystemExit(f"writing the test checkpoint needs tfformats.writer.save_checkpoint "
                         f"({e}); pass --checkpoint PREFIX to use an existing checkpoint")
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.2, 1.8, tensors)       # mixed sizes, some odd lengths
    counts = np.maximum(1, (weights / weights.sum() * size_bytes / 4).astype(np.int64))
    arrays = {}
    for i, n in enumerate(counts):
        n = int(n) - (i % 3)                          # not all multiples of a chunk
        cols = 1024 if n >= 1024 else 1
        rows = max(1, n // cols)
        arrays[f"layer_{i:03d}/kernel"] = rng.random((rows, cols), dtype=np.float32)
    save_checkpoint(prefix, arrays)
    return sum(a.nbytes for a in arrays.values())


def warm(reader):
    """Read (and CRC-check) every tensor on the host so the file sits in the page cache."""
    t = time.perf_counter()
    total = 0
    for name in reader:
        if not reader.dtype(name).is_string:
            total += reader[name].nbytes
    return total, time.perf_counter() - t


def timed_upload(reader, args, backend, window_mib):
    stats = {}
    t = time.perf_counter()
    out = cuda.upload(reader, device=args.device, verify=True, backend=backend,
                      chunk_size=args.chunk_mib << 20, workers=args.workers,
                      register=window_mib is not None, register_window=(window_mib or 1) << 20,
                      raw_dtypes=True, stats=stats)
    return out, time.perf_counter() - t, stats


def pinned_baseline(backend, nbytes, repeat):
    """Seconds for one pinned host buffer -> device copy of nbytes (best of `repeat`)."""
    if isinstance(backend, cuda.HostBackend):
        src = np.ones(nbytes, dtype=np.uint8)
        dst = np.empty(nbytes, dtype=np.uint8)
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            np.copyto(dst, src)
            best = min(best, time.perf_counter() - t)
        return best
    import cupy
    with cupy.cuda.Device(backend.ordinal):
        mem = cupy.cuda.alloc_pinned_memory(nbytes)
        host = np.frombuffer(mem, dtype=np.uint8, count=nbytes)
        host[:] = 1
        dev = cupy.empty(nbytes, dtype=np.uint8)
        stream = cupy.cuda.Stream(non_blocking=True)
        rt = cupy.cuda.runtime
        best = float("inf")
        for _ in range(repeat + 1):              # the first one warms up
            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            start.record(stream)
            rt.memcpyAsync(dev.data.ptr, mem.ptr, nbytes, rt.memcpyHostToDevice, stream.ptr)
            stop.record(stream)
            stop.synchronize()
            best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3)
        del dev
        cupy.get_default_memory_pool().free_all_blocks()
        return best


def compare(reader, out, backend):
    """Names of tensors whose device bytes differ from the host read."""
    bad = []
    for name, array in out.items():
        host = reader.get_tensor(name)
        got = backend.to_numpy(array)
        if (got.shape != host.shape or got.dtype.itemsize != host.dtype.itemsize
                or not np.array_equal(got.reshape(-1).view(np.uint8),
                                      np.ascontiguousarray(host).reshape(-1).view(np.uint8))):
            bad.append(name)
    return bad


def free(out, backend):
    out.clear()
    if isinstance(backend, cuda.CupyBackend):
        import cupy
        cupy.get_default_memory_pool().free_all_blocks()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gib", type=float, default=1.0)
    p.add_argument("--tensors", type=int, default=96)
    p.add_argument("--chunk-mib", type=int, default=32)
    p.add_argument("--window-mib", type=lambda v: [int(w) for w in v.split(",")],
                   default=[cuda.DEFAULT_WINDOW >> 20, 16, 256, 1024],
                   help="registration window sizes to time, the default first "
                        "(comma-separated MiB)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--backend", choices=["cuda", "host"], default="cuda")
    p.add_argument("--checkpoint", help="use this checkpoint instead of writing one")
    p.add_argument("--dir", help="where to write the checkpoint (default: a temp dir)")
    p.add_argument("--no-staged", action="store_true", help="skip timing the staging fallback")
    args = p.parse_args(argv)

    try:
        backend = cuda.make_backend(args.device, args.backend)
    except tfformats.DeviceError as e:
        print(f"cannot run: {e}", file=sys.stderr)
        return 2
    print(f"device: {backend.model()} ({args.backend}, {backend.device}); "
          f"tfformats {tfformats.__version__} ({tfformats.implementation()})")
    tmp = None
    try:
        if args.checkpoint:
            prefix = args.checkpoint
        else:
            tmp = tempfile.mkdtemp(prefix="tfformats-gpu-", dir=args.dir)
            prefix = os.path.join(tmp, "ckpt")
            t = time.perf_counter()
            nbytes = write_checkpoint(prefix, int(args.size_gib * (1 << 30)), args.tensors)
            print(f"wrote {nbytes / GB:.4g} GB in {args.tensors} tensors "
                  f"in {time.perf_counter() - t:.1f} s")
        failed = False
        checked = 0
        shares = {}   # upload mode -> its speed as a share of the pinned copy's
        with tfformats.open_checkpoint(prefix) as reader:
            nbytes, secs = warm(reader)
            print(f"host read + CRC (warms the page cache): {nbytes / GB:.4g} GB in {secs:.3f} s")
            base = pinned_baseline(backend, max(nbytes, 1), args.repeat)
            # The first window size is the default, the one the target is judged on.
            modes = [(f"registered, {w} MiB windows", w) for w in args.window_mib]
            modes += [] if args.no_staged else [("staged (register=False)", None)]
            for label, window_mib in modes:
                best, stats = float("inf"), None
                for i in range(args.repeat):
                    out, secs, stats = timed_upload(reader, args, backend, window_mib)
                    best = min(best, secs)
                    if i == 0:
                        checked = len(out)
                        bad = compare(reader, out, backend)
                        if bad:
                            failed = True
                            print(f"MISMATCH ({label}): {len(bad)} tensors differ, "
                                  f"e.g. {bad[:5]}")
                    free(out, backend)
                path = (f"direct, {stats['registered_windows']} windows"
                        if stats.get("direct_chunks") else "staged") + \
                    (f", registration refused: {stats['refusal']}"
                     if stats.get("registrations_refused") else "")
                share = base / best
                shares.setdefault(label, share)
                print(f"{'upload, CRC on, ' + label:46s}: {nbytes / best / GB:7.2f} GB/s "
                      f"= {share:.0%} of the pinned copy ({best * 1e3:.1f} ms best of "
                      f"{args.repeat}; {stats.get('chunks', 0)} chunks, path: {path})")
            what = ("host memcpy (HostBackend stand-in)" if args.backend == "host"
                    else "CuPy pinned host->device copy")
            print(f"{what + ', same bytes':46s}: {nbytes / base / GB:7.2f} GB/s "
                  f"({base * 1e3:.1f} ms)")
            print("bit-for-bit comparison: " + ("FAILED" if failed else
                                                f"all {checked} uploaded tensors equal"))
            label, share = next(iter(shares.items()))
            print(f"target, >= 90% of the pinned copy with CRC on ({label}): "
                  f"{'met' if share >= 0.9 else 'NOT met'} ({share:.0%})")
        return 1 if failed else 0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        getattr(backend, "close", lambda: None)()


if __name__ == "__main__":
    sys.exit(main())
