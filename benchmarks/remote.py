"""Requests and bytes that remote reads cost, counted at a local S3 server.

    python benchmarks/remote.py [--tensors 100000]

Starts moto's S3 server on 127.0.0.1 behind a counting WSGI middleware,
uploads a checkpoint of N small tensors (written here), and reports, for a
cold process state (fresh s3fs filesystem, empty caches):
  * opening the checkpoint and reading one small tensor;
  * listing every tensor (names, shapes, dtypes);
each as requests (all sequential unless noted), bytes sent by the server,
and wall time. Results go in benchmarks/README.md.
"""

import argparse
import os
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

import tfformats as tff  # noqa: E402
from tfformats import fileio, remote  # noqa: E402


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
    before the next one starts; `fetch_ranges` sends its requests
    concurrently (one trip). Listings fsspec has cached cost none."""
    rfs = remote.RemoteFileSystem(fresh_fs(endpoint))
    for name in ("fetch", "fetch_ranges", "_listing", "_speculate"):
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tensors", type=int, default=100_000)
    args = parser.parse_args()
    for name, value in [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")]:
        os.environ.setdefault(name, value)
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
