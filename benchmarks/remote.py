"""Requests and bytes that remote reads cost, counted at a local S3 server;
and the bulk read's throughput against fsspec's `cat_ranges`.

    python benchmarks/remote.py [--tensors 100000]
    python benchmarks/remote.py --bulk [--data-dir DIR] [--scale 1] [--rounds 5]

Starts moto's S3 server on 127.0.0.1 behind a counting WSGI middleware,
uploads a checkpoint of N small tensors (written here), and reports, for a
cold process state (fresh s3fs filesystem, empty caches):
  * opening the checkpoint and reading one small tensor;
  * listing every tensor (names, shapes, dtypes);
each as requests (all sequential unless noted), bytes sent by the server,
and wall time.

`--bulk` uploads the benchmark checkpoint of benchmarks/benchlib.py (~450 MiB
at scale 1; generated with TensorFlow unless --data-dir holds it) to the S3
server, run in its own process so that it does not share the client's GIL,
and times, alternating, in one process:
  * tfformats: open the checkpoint and read every tensor with CRC checks, as
    the converters do (`checkpoint.prefetched` windows, then `get_tensor`);
  * cat_ranges: s3fs's `cat_ranges` fetching exactly the byte ranges of those
    tensors in one call (the transfer ceiling: no checks, no limit on memory);
then measures, in a fresh child process, the tfformats side's peak memory
(RSS high-water and tracemalloc) against its bound: the largest tensor plus
the bytes of the fetch windows in flight. Results go in benchmarks/README.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
import tfformats as tff  # noqa: E402
from tfformats import checkpoint, fileio, remote  # noqa: E402


class Counter:
    """WSGI middleware counting requests and response body bytes."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.log = []

    def __call__(self, environ, start_response):
        began = time.perf_counter()
        body = self.app(environ, start_response)
        sent = 0
        chunks = []
        for chunk in body:
            sent += len(chunk)
            chunks.append(chunk)
        with self.lock:
            self.log.append((began, time.perf_counter(), environ["REQUEST_METHOD"],
                             environ.get("PATH_INFO"), environ.get("QUERY_STRING"),
                             environ.get("HTTP_RANGE"), sent))
        return chunks

    def take(self):
        with self.lock:
            log, self.log = self.log, []
        return log


def start_server():
    from moto.moto_server.werkzeug_app import (DomainDispatcherApplication, MotoRequestHandler,
                                               create_backend_app)
    from werkzeug.serving import make_server
    counter = Counter(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, counter, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, counter, f"http://127.0.0.1:{server.server_address[1]}"


def fresh_fs(endpoint):
    import s3fs
    return s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint,
                             skip_instance_cache=True)


TRIPS = [0]


def counted_fs(endpoint, counter):
    """A RemoteFileSystem on a fresh s3fs that counts its sequential round
    trips: each fetch or listing that reached the server waits for its answer
    before the next one starts; `start_ranges` sends its requests
    concurrently (one trip; here it waits for them before it returns).
    Listings fsspec has cached cost none."""
    rfs = remote.RemoteFileSystem(fresh_fs(endpoint))
    start_ranges = rfs.start_ranges

    def start_and_wait(*args, **kwargs):
        wait = start_ranges(*args, **kwargs)
        wait()
        return wait
    rfs.start_ranges = start_and_wait
    for name in ("fetch", "start_ranges", "_listing", "_speculate"):
        method = getattr(rfs, name)

        def counted(*args, _method=method, **kwargs):
            before = len(counter.log)
            try:
                return _method(*args, **kwargs)
            finally:
                TRIPS[0] += len(counter.log) > before
        setattr(rfs, name, counted)
    return rfs


def report(title, log, seconds):
    sent = sum(entry[-1] for entry in log)
    trips, TRIPS[0] = TRIPS[0], 0
    print(f"{title}: {len(log)} requests in {trips} sequential round trips, {sent:,} bytes "
          f"({sent / 2**20:.3f} MiB), {seconds * 1e3:.0f} ms")
    for _, _, method, path, query, rng, n in sorted(log):
        print(f"    {method} {path}{'?' + query if query else ''} {rng or ''} -> {n:,} bytes")
    return trips, sent


def fake_credentials():
    for name, value in [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")]:
        os.environ.setdefault(name, value)


# --- bulk throughput ------------------------------------------------------------------

def cache_object_bytes():
    """Make moto answer a GET at the cost of what it sends, as a real store does.

    moto copies an object's whole value for every GET, a range request
    included (and rereads it from a temporary file when it is above its key
    buffer size): 20 ms per request for a 44 MiB object, seconds of copies
    held at once for concurrent requests to a 450 MiB one, which would
    measure moto. Here each object's bytes are read once and kept."""
    from moto.s3.models import FakeKey
    plain = FakeKey.value

    def get(key):
        cached = getattr(key, "_bench_value", None)
        if cached is None:
            cached = key._bench_value = plain.fget(key)
        return cached

    def set_(key, value):
        key._bench_value = None
        plain.fset(key, value)
    FakeKey.value = property(get, set_)


def serve():
    """(--serve) The S3 server of --bulk, in this process until stdin closes."""
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # no line per request
    fake_credentials()
    cache_object_bytes()
    server, _, endpoint = start_server()
    print(endpoint, flush=True)
    sys.stdin.read()
    server.shutdown()


def cpu_seconds(pid):
    """User + system CPU seconds process `pid` has used (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server_process():
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def read_all(url):
    """tfformats' bulk read of a remote checkpoint, as the converters read it:
    windows of tensors fetched together (`prefetched`), every tensor CRC
    checked (the default) and every page touched."""
    total = 0
    with tff.open_checkpoint(url) as reader:
        for key in checkpoint.prefetched(reader, list(reader)):
            total += benchlib.touch(reader.get_tensor(key))
    return total


def tensor_ranges(prefix):
    """(data file name, start, end) of every tensor the bulk read reads, and the
    largest tensor's size."""
    out = []
    with tff.open_checkpoint(prefix) as reader:
        num_shards = reader.bundle.num_shards
        for key in reader:
            e = reader.entry(key)
            if e.size and not e.slices:
                name = f"{os.path.basename(prefix)}.data-{e.shard_id:05d}-of-{num_shards:05d}"
                out.append((name, e.offset, e.offset + e.size))
    return out, max(end - start for _, start, end in out)


def peak_memory(endpoint, url):
    """(--memory) One bulk read in this fresh process: its RSS high-water and
    tracemalloc peak above what the process held before it, as JSON."""
    import tracemalloc
    fileio.register_filesystem("s3", remote.RemoteFileSystem(fresh_fs(endpoint)))
    with tff.open_checkpoint(url) as reader:   # imports, connections, listing: not counted
        reader.get_variable_to_shape_map()

    def rss(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))
    with open("/proc/self/clear_refs", "w") as f:   # resets VmHWM to the current RSS
        f.write("5")
    before = rss("VmRSS:")
    tracemalloc.start()
    read_all(url)
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    json.dump({"rss": rss("VmHWM:") - before, "traced": traced}, sys.stdout)


def bulk(args):
    fake_credentials()
    s = args.scale if args.scale is not None else benchlib.scale()
    root = args.data_dir or benchlib.tmpdir()
    meta = benchlib.generate_in_subprocess(root, ["bulk"], s)["bulk"]
    prefix = meta["prefix"]
    folder = os.path.dirname(prefix)
    server, endpoint = start_server_process()
    try:
        fs = fresh_fs(endpoint)
        fs.mkdir("bench")
        started = time.perf_counter()
        for name in sorted(os.listdir(folder)):
            if name.startswith(os.path.basename(prefix) + "."):
                fs.put_file(os.path.join(folder, name), f"bench/bulk/{name}")
        print(f"uploaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        url = f"s3://bench/bulk/{os.path.basename(prefix)}"
        ranges, largest = tensor_ranges(prefix)
        nbytes = sum(end - start for _, start, end in ranges)
        paths = [f"bench/bulk/{name}" for name, _, _ in ranges]
        starts = [start for _, start, _ in ranges]
        ends = [end for _, _, end in ranges]
        fileio.register_filesystem("s3", remote.RemoteFileSystem(fs))

        def ceiling():
            blobs = fs.cat_ranges(paths, starts, ends, on_error="raise")
            assert sum(map(len, blobs)) == nbytes

        cpu = {"tfformats": [], "cat_ranges": []}

        def timed_cpu(label, fn):
            """fn, noting the CPU seconds it took here and at the server: on
            a machine others load, a steadier figure than the wall time."""
            def run():
                here, there = time.process_time(), cpu_seconds(server.pid)
                fn()
                cpu[label].append((time.process_time() - here, cpu_seconds(server.pid) - there))
            return run
        scenario = benchlib.Scenario(
            "remote bulk read", benchlib.Side("tfformats", timed_cpu("tfformats", lambda: read_all(url))),
            [benchlib.Side("cat_ranges", timed_cpu("cat_ranges", ceiling))],
            "throughput >= 0.8x cat_ranges")
        res = benchlib.alternate(scenario, min_rounds=args.rounds, max_rounds=args.rounds)
        med = res["medians"]
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory", endpoint,
                                url], stdout=subprocess.PIPE, text=True, check=True)
        peak = json.loads(child.stdout)
    finally:
        server.stdin.close()
        server.wait()
        if not args.data_dir:
            import shutil
            shutil.rmtree(root, ignore_errors=True)
    mib = 2 ** 20
    ratio = med["cat_ranges"] / med["tfformats"]
    window = checkpoint.PREFETCH_BYTES * remote.WINDOWS_IN_FLIGHT
    pieces = remote.IN_FLIGHT * remote.PIECE_BYTES
    bound = largest + window + pieces
    spread = {k: f"{min(v):.2f}..{max(v):.2f} s" for k, v in res["samples"].items()}
    used = {k: "CPU s client {:.2f}, server {:.2f}".format(*(statistics.median(x) for x in zip(*v)))
            for k, v in cpu.items()}
    print(f"remote bulk read, scale {s}: {len(ranges)} tensors, {nbytes / mib:.0f} MiB, "
          f"implementation {tff.implementation()}, {res['rounds']} rounds alternated, "
          f"load average {os.getloadavg()[0]:.2f}\n"
          f"  tfformats (CRC on): median {med['tfformats']:.2f} s ({spread['tfformats']}), "
          f"{nbytes / mib / med['tfformats']:.0f} MiB/s; median {used['tfformats']}\n"
          f"  cat_ranges:         median {med['cat_ranges']:.2f} s ({spread['cat_ranges']}), "
          f"{nbytes / mib / med['cat_ranges']:.0f} MiB/s; median {used['cat_ranges']}\n"
          f"  throughput ratio tfformats / cat_ranges: {ratio:.2f} (target >= 0.80: "
          f"{'met' if ratio >= 0.8 else 'MISSED'})\n"
          f"  tfformats peak memory above the opened reader: RSS {peak['rss'] / mib:.0f} MiB, "
          f"tracemalloc {peak['traced'] / mib:.0f} MiB; bound: largest tensor "
          f"{largest / mib:.0f} MiB + windows {window / mib:.0f} MiB + requests in flight "
          f"{pieces / mib:.0f} MiB = {bound / mib:.0f} MiB ({'met' if max(peak.values()) <= bound else 'MISSED'})")


# --- round trips ----------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tensors", type=int, default=100_000)
    parser.add_argument("--bulk", action="store_true",
                        help="time the bulk read against cat_ranges instead")
    parser.add_argument("--data-dir", help="--bulk: where the benchmark data is (or is generated)")
    parser.add_argument("--scale", type=float, help="--bulk: data size factor (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="--bulk: rounds of each side")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()
    if args.memory:
        return peak_memory(*args.memory)
    if args.bulk:
        return bulk(args)
    fake_credentials()
    server, counter, endpoint = start_server()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "ckpt-1000")
        rng = np.random.default_rng(0)
        with tff.BundleWriter(prefix) as w:
            for i in range(args.tensors):
                w.add(f"model/layer_{i:06d}/kernel", rng.standard_normal(16).astype(np.float32))
        fs = fresh_fs(endpoint)
        fs.mkdir("bench")
        for name in sorted(os.listdir(tmp)):
            fs.put_file(os.path.join(tmp, name), f"bench/run/{name}")
        sizes = {n: os.path.getsize(os.path.join(tmp, n)) for n in os.listdir(tmp)}
    print(f"checkpoint: {args.tensors:,} tensors; " +
          ", ".join(f"{n} {s:,} bytes" for n, s in sorted(sizes.items())))
    url = "s3://bench/run/ckpt-1000"
    target = f"model/layer_{args.tensors // 2:06d}/kernel"

    counter.take()
    TRIPS[0] = 0
    fileio.register_filesystem("s3", counted_fs(endpoint, counter))
    started = time.perf_counter()
    with tff.open_checkpoint(url) as reader:
        value = reader[target]
        took = time.perf_counter() - started
        read = counter.take()
    assert value.shape == (16,)
    n, sent = report("open + read one small tensor, cold", read, took)

    fileio.register_filesystem("s3", counted_fs(endpoint, counter))
    reader = tff.open_checkpoint(url)
    counter.take()
    TRIPS[0] = 0
    started = time.perf_counter()
    shapes = reader.get_variable_to_shape_map()
    took = time.perf_counter() - started
    assert len(shapes) == args.tensors + 1 or len(shapes) == args.tensors
    listing = report("listing after open", counter.take(), took)
    reader.close()
    fileio.register_filesystem("s3", None)
    server.shutdown()
    print(f"\nsummary: one tensor cold = {n} sequential round trips / {sent / 2**20:.3f} MiB; "
          f"listing after open = {listing[0]} round trips / {listing[1] / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
