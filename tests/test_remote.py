"""Remote storage (tfformats/remote.py) beyond what the `store` fixture runs
on S3: fsspec's memory://, HTTP servers that honour or ignore `Range`,
filesystem= and storage_options=, the missing-extra error, and faults (a
server that stalls or dies, a truncated object, a writer killed mid-upload).
Every server is started here, on 127.0.0.1."""

import http.server
import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import tfformats as tff
from tfformats import fileio, remote
from tfformats.errors import FormatError, StorageError, UnsupportedError

from conftest import FIXTURES, _s3_filesystem, assert_same_tensor, expected_array

KERAS = FIXTURES / "keras_adam"
EXPECTED = __import__("json").loads((KERAS / "expected.json").read_text())["ckpt-2"]


# --- an HTTP server for the fixtures -----------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    """Serves tests/fixtures; honours `Range` unless the server says not to,
    and stalls mid-body when told to (a server that dies mid-read)."""

    def log_message(self, *args):
        pass

    def _target(self):
        path = FIXTURES / self.path.lstrip("/").split("?")[0]
        return path if path.is_file() else None

    def do_HEAD(self):
        path = self._target()
        if path is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Accept-Ranges", "bytes" if self.server.ranges else "none")
        self.end_headers()

    def do_GET(self):
        path = self._target()
        if path is None:
            self.send_error(404)
            return
        data = path.read_bytes()
        self.server.requests.append(self.headers.get("Range"))
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or "")
        if match and self.server.ranges:
            start, end = match.groups()
            if not start:   # a suffix
                start, end = max(0, len(data) - int(end)), len(data) - 1
            start, end = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            data = data[start:end + 1]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.server.stall and ".data-" in self.path:
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.server.stalled.wait(30)   # the rest never comes (until the test ends)
            return
        self.wfile.write(data)


@pytest.fixture
def http_server():
    """Start an HTTP server on 127.0.0.1: `server(ranges=True, stall=False)` -> base URL."""
    servers = []

    def start(ranges=True, stall=False):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.ranges, server.stall, server.requests = ranges, stall, []
        server.stalled = threading.Event()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}"
    yield start
    for server in servers:
        server.stalled.set()
        server.shutdown()
        server.server_close()


def _http_options(timeout=5):
    import aiohttp
    return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=timeout)}}


def test_http_server_that_honours_range(http_server):
    server, url = http_server(ranges=True)
    with tff.open_checkpoint(f"{url}/keras_adam/ckpt-2", storage_options=_http_options()) as r:
        assert sorted(r) == sorted(EXPECTED)
        for name, spec in EXPECTED.items():
            assert_same_tensor(r[name], expected_array(spec))
    # Only ranges were asked for: never a whole file.
    assert server.requests and all(server.requests)


def test_http_server_that_ignores_range_is_detected(http_server):
    server, url = http_server(ranges=False)
    # The index is smaller than the suffix a table's first read asks for, so it
    # opens; the first tensor read gets the whole data file back.
    with tff.open_checkpoint(f"{url}/keras_adam/ckpt-2", storage_options=_http_options()) as r:
        with pytest.raises(StorageError, match=r"ckpt-2\.data-00000-of-00001: asked for bytes "
                                               r"\d+\.\.\d+ \(\d+ bytes\) and got \d+: the server "
                                               "ignores byte ranges"):
            r[r.object_paths()["save_counter"]]


def test_small_reads_from_a_server_that_ignores_range_are_detected(http_server):
    import fsspec
    _, url = http_server(ranges=False)
    rfs = remote.RemoteFileSystem(fsspec.filesystem("http", skip_instance_cache=True,
                                                    **_http_options()))
    index = f"{url}/keras_adam/ckpt-2.index"
    # The whole file came back: its first bytes, not its last, would pass for them.
    for offset in (-8, 8):
        with pytest.raises(StorageError, match=r"ckpt-2\.index: asked for 8 bytes at offset "
                                               r"-?8 and got \d+: the server ignores byte ranges"):
            rfs.read_at(index, offset, 8)


def test_server_that_stalls_mid_read_times_out_with_a_clear_error(http_server):
    _, url = http_server(stall=True)
    reader = tff.open_checkpoint(f"{url}/keras_adam/ckpt-2", storage_options=_http_options(2))
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"ckpt-2\.data-00000-of-00001: reading bytes"):
        for name in reader:
            reader[name]
    assert time.monotonic() - started < 20


def test_s3_server_gone_mid_read_is_a_clear_error():
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    fs = _s3_filesystem(f"http://{host}:{port}")
    fs.mkdir("gone")
    tff.save_checkpoint("s3://gone/ckpt", {"a": np.arange(10), "b": np.ones(5)},
                        object_graph=False, filesystem=fs)
    reader = tff.open_checkpoint("s3://gone/ckpt", filesystem=fs)
    assert reader["a"].sum() == 45
    server.stop()
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"s3://gone/ckpt\.data-00000-of-00001"):
        reader["b"]
    assert time.monotonic() - started < 60


# --- memory://, filesystem= and storage_options= ---------------------------------------

def test_memory_round_trip_and_manager():
    tensors = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "s": np.array([b"x", b"yz"], object)}
    tff.save_checkpoint("memory://tfformats-test/run/ckpt-1", tensors, object_graph=False)
    with tff.open_checkpoint("memory://tfformats-test/run") as r:   # the directory form
        for name, value in tensors.items():
            assert_same_tensor(r[name], value)
    manager = tff.CheckpointManager("memory://tfformats-test/mgr", max_to_keep=1)
    for i in range(3):
        manager.save({"x": np.full(2, i)}, object_graph=False)
    assert tff.latest_checkpoint("memory://tfformats-test/mgr") == "memory://tfformats-test/mgr/ckpt-3"
    assert sorted(fileio.listdir("memory://tfformats-test/mgr")) == [
        "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    fileio.rmtree("memory://tfformats-test")


def test_filesystem_and_storage_options_are_passed_through(s3, s3_endpoint):
    # No filesystem registered for s3:// here: the arguments alone reach the server.
    url = "s3://fixtures/keras_adam/ckpt-2"
    with tff.open_checkpoint(url, filesystem=s3) as r:
        assert sorted(r) == sorted(EXPECTED)
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    assert tff.list_variables(url, storage_options=options) == tff.list_variables(KERAS / "ckpt-2")
    assert tff.load_saved_model("s3://fixtures/keras3_export", filesystem=s3).variables
    with pytest.raises(ValueError, match="either"):
        tff.open_checkpoint(url, filesystem=s3, storage_options=options)


def test_per_name_calls_of_a_reader_with_storage(s3):
    """shape() and dtype() answer from the scan without binding the storage; the
    lookups they make before it, and by object path, read through it."""
    with tff.open_checkpoint("s3://fixtures/keras_adam/ckpt-2", filesystem=s3) as r:
        name = sorted(EXPECTED)[-1]
        assert r.shape(name) == EXPECTED[name]["shape"]            # one lookup, no scan
        assert r.dtype(name).name == EXPECTED[name]["dtype"]
        path, key = next(iter(r.object_paths().items()))          # scans
        assert r.shape(path) == r.shape(key) == EXPECTED[key]["shape"]
        assert r.dtype(path) is r.dtype(key)
        assert {k: r.shape(k) for k in r} == {k: v["shape"] for k, v in EXPECTED.items()}


def test_cli_storage_option(s3_endpoint, s3):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["PYTHONPATH"] = str(FIXTURES.parent.parent)
    proc = subprocess.run(
        [sys.executable, "-m", "tfformats", "ls", "s3://fixtures/keras_adam", "--json",
         "--storage-option", f"endpoint_url={s3_endpoint}", "--storage-option", "key=testing",
         "--storage-option", "secret=testing"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ckpt-2" in __import__("json").loads(proc.stdout)["prefix"]
    bad = subprocess.run([sys.executable, "-m", "tfformats", "ls", "s3://x", "--storage-option", "novalue"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr


def test_missing_fsspec_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)   # import fsspec now fails
    monkeypatch.setattr(remote, "_DEFAULT", {})
    with pytest.raises(UnsupportedError, match=r"pip install tfformats\[remote\]"):
        tff.open_checkpoint("gs://bucket/run/ckpt-1")


def test_unknown_scheme_and_local_paths_that_look_like_urls(tmp_path):
    with pytest.raises(UnsupportedError, match="nosuchscheme"):
        tff.open_checkpoint("nosuchscheme://bucket/ckpt")
    assert fileio.filesystem(str(tmp_path / "a://b")) is fileio.LOCAL
    assert fileio.filesystem("C:\\x\\y") is fileio.LOCAL


# --- faults ------------------------------------------------------------------------

def test_truncated_object_is_a_format_error():
    fs = fileio.filesystem("memory://t").fs
    tff.save_checkpoint("memory://tfformats-trunc/ckpt", {"a": np.arange(100)}, object_graph=False)
    data = "memory://tfformats-trunc/ckpt.data-00000-of-00001"
    fs.pipe_file(data, fs.cat_file(data)[:100])   # cut short before the reader opens it
    with tff.open_checkpoint("memory://tfformats-trunc/ckpt") as r:
        with pytest.raises(FormatError, match="'a' needs bytes 0..800 but the shard has 100"):
            r["a"]
    tff.save_checkpoint("memory://tfformats-trunc/ckpt2", {"a": np.arange(100)}, object_graph=False)
    r = tff.open_checkpoint("memory://tfformats-trunc/ckpt2")
    data = "memory://tfformats-trunc/ckpt2.data-00000-of-00001"
    fs.pipe_file(data, fs.cat_file(data)[:100])   # cut short after it listed the file
    with pytest.raises(FormatError, match="shorter than its listing"):
        r["a"]
    fileio.rmtree("memory://tfformats-trunc")


def test_writer_killed_mid_upload_leaves_the_previous_checkpoint(store):
    prefix = store.join("ckpt")
    tff.save_checkpoint(prefix, {"w": np.zeros(4, np.float32)}, object_graph=False)
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        import os
        from tfformats import fileio, remote
        if {store.kind == "s3"}:
            import s3fs   # the environment names the server (AWS_ENDPOINT_URL)
            fileio.register_filesystem("s3", remote.RemoteFileSystem(s3fs.S3FileSystem(
                key="testing", secret="testing", endpoint_url=os.environ["AWS_ENDPOINT_URL"])))
        if {store.kind == "gcs"}:
            import gcsfs.core   # the environment names the server (STORAGE_EMULATOR_HOST)
            fileio.register_filesystem("gs", remote.RemoteFileSystem(gcsfs.core.GCSFileSystem(
                token="anon")))
        from tfformats.writer import BundleWriter
        def chunks():
            yield np.ones(4 << 20, np.uint8)
            print("uploading", flush=True)
            time.sleep(60)
            yield np.ones(4 << 20, np.uint8)
        with BundleWriter({prefix!r}) as w:
            w.add_chunks("w", "uint8", [8 << 20], chunks())
    """)
    env = dict(os.environ, PYTHONPATH=str(FIXTURES.parent.parent))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "uploading"
    finally:
        child.kill()
        child.wait()
    with tff.open_checkpoint(prefix) as r:
        assert r["w"].tolist() == [0.0] * 4


# --- round trips ---------------------------------------------------------------------

def _counting(fs, trips):
    rfs = remote.RemoteFileSystem(fs)
    for name in ("fetch", "start_ranges", "_speculate"):   # fetch_ranges: start_ranges()()
        method = getattr(rfs, name)

        def counted(*args, _method=method, _name=name, **kwargs):
            trips.append(_name)
            return _method(*args, **kwargs)
        setattr(rfs, name, counted)
    return rfs


def test_cold_read_and_listing_round_trips(s3, s3_endpoint, tmp_path, monkeypatch):
    # Enough tensors for an index of several 256 KiB blocks.
    local = str(tmp_path / "ckpt-9")
    with tff.BundleWriter(local) as w:
        for i in range(30000):
            w.add(f"layer_{i:05d}/kernel", np.full(4, i, np.float32))
    for name in os.listdir(tmp_path):
        s3.put_file(str(tmp_path / name), f"scratch/trips/{name}")
    trips = []
    fileio.register_filesystem("s3", _counting(_s3_filesystem(s3_endpoint), trips))
    try:
        with tff.open_checkpoint("s3://scratch/trips/ckpt-9") as reader:
            assert reader["layer_15000/kernel"].tolist() == [15000.0] * 4
            # listing + index tail and head (one trip), the key's block unless the
            # tail or head held it, the tensor: at most three round trips
            assert trips[0] == "_speculate" and trips[1:] in (["fetch"], ["fetch", "fetch"])
            assert reader.bundle.table.block_count() > 3
            trips.clear()
            assert len(reader.get_variable_to_shape_map()) == 30000
            assert trips == ["start_ranges"]   # every other block in one concurrent batch
    finally:
        fileio.register_filesystem("s3", None)


def test_coalesce_merges_near_ranges():
    assert remote.coalesce([(100, 200), (0, 10), (15, 20)], max_gap=5) == [
        (0, 20, [(0, 10), (15, 20)]), (100, 200, [(100, 200)])]


def test_split_cuts_coalesced_spans_between_their_ranges():
    merged = remote.coalesce([(0, 4), (4, 8), (8, 10), (20, 50), (50, 52)], max_gap=10)
    assert remote.split(merged, 10) == [
        (0, 10, [(0, 4), (4, 8), (8, 10)]), (20, 50, [(20, 50)]), (50, 52, [(50, 52)])]


@pytest.mark.parametrize("server", ["memory", "s3", "gcs"])   # blocking and async filesystems
def test_long_ranges_are_fetched_in_pieces_and_assembled(server, request, monkeypatch):
    import fsspec
    monkeypatch.setattr(remote, "PIECE_BYTES", 1000)
    monkeypatch.setattr(remote, "IN_FLIGHT", 2)
    data = bytes(range(256)) * 40
    fs = (fsspec.filesystem("memory", skip_instance_cache=True) if server == "memory"
          else request.getfixturevalue(server))
    url = f"{ {'memory': 'memory', 's3': 's3', 'gcs': 'gs'}[server]}://scratch/pieces-{server}"
    fs.pipe_file(url, data)
    rfs = remote.RemoteFileSystem(fs)
    wait = rfs.start_ranges(url, [(10, 3500), (3600, 100), (9000, 1000)])
    got = wait()
    assert [bytes(g) for g in got] == [data[10:3510], data[3600:3700], data[9000:10000]]
    assert wait() is got and all(isinstance(g, bytes) or g.readonly for g in got)
    with pytest.raises(FormatError, match="shorter than its listing"):   # its last piece short
        rfs.fetch_ranges(url, [(8900, 1400)])
    fs.rm(url)


def test_whole_checkpoint_reads_fetch_tensors_together(tmp_path):
    import fsspec
    tensors = {f"t{i:03d}": np.full(i + 1, i, np.int32) for i in range(200)}
    tff.save_checkpoint("memory://tfformats-bulk/ckpt", tensors, object_graph=False)
    trips = []
    with fileio.storage(filesystem=_CountingMemory(trips)):
        loaded = tff.load_tensors("memory://tfformats-bulk/ckpt")
        tff.checkpoint_to_safetensors("memory://tfformats-bulk/ckpt", str(tmp_path / "w.safetensors"))
    assert {n: a.tolist() for n, a in loaded.items()} == {n: a.tolist() for n, a in tensors.items()}
    # No request per tensor: the tensors' ranges go out together (one batch per reader).
    assert trips.count("cat_ranges") <= 4 and trips.count("cat_file") <= 4
    fsspec.filesystem("memory").rm("/tfformats-bulk", recursive=True)


def _CountingMemory(trips):
    from fsspec.implementations.memory import MemoryFileSystem

    class Counting(MemoryFileSystem):
        def cat_file(self, *args, **kwargs):
            trips.append("cat_file")
            return super().cat_file(*args, **kwargs)

        def cat_ranges(self, *args, **kwargs):
            trips.append("cat_ranges")
            return super().cat_ranges(*args, **kwargs)
    return Counting(skip_instance_cache=True)
