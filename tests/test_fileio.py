"""The file layer: the only module that touches the filesystem, and a seam
that another storage backend can plug into."""

import os
import pathlib
import re
import sys

import numpy as np
import pytest

import tfformats
from tfformats import fileio
from tfformats.errors import CheckpointNotFoundError

PACKAGE = pathlib.Path(tfformats.__file__).parent
# Filesystem calls that belong in fileio only: the grep, plus the
# path queries and changes it does not spell out. `archive.open(` (a member
# of a zip archive) is not a filesystem call, hence the look-behind.
FILESYSTEM_CALL = re.compile(
    r"(?<![.\w])open\(|\bos\.open\(|mmap\.|os\.replace|os\.rename|shutil\.|tempfile\.|"
    r"os\.listdir|os\.scandir|os\.walk|os\.path\.(exists|isfile|isdir|getsize)|"
    r"os\.(stat|fstat|remove|unlink|rmdir|mkdir|makedirs|link|fsync)\(|\bglob\.")


def test_only_fileio_touches_the_filesystem():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in ("fileio.py", "remote.py"):   # remote: fileio's fsspec backend
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FILESYSTEM_CALL.search(line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []


class Mounted(fileio.LocalFileSystem):
    """A stand-in remote backend: `mem://<path>` is the local <path>. It
    implements the read side of FileSystem only, as a remote reader might."""

    def __init__(self, root):
        self.root = str(root)
        self.calls = []

    def _local(self, path):
        assert path.startswith("mem://"), path
        self.calls.append(path)
        return os.path.join(self.root, path[len("mem://"):])

    def open_source(self, path):
        return super().open_source(self._local(path))

    def open_input(self, path):
        return super().open_input(self._local(path))

    def read_at(self, path, offset, n):
        return super().read_at(self._local(path), offset, n)

    def size(self, path):
        return super().size(self._local(path))

    def exists(self, path):
        return os.path.exists(self._local(path))

    def isfile(self, path):
        return os.path.isfile(self._local(path))

    def isdir(self, path):
        return os.path.isdir(self._local(path))

    def listdir(self, path):
        return os.listdir(self._local(path))


@pytest.fixture
def mounted(tmp_path):
    fs = Mounted(tmp_path)
    fileio.register_filesystem("mem", fs)
    yield fs
    fileio.register_filesystem("mem", None)


def test_a_registered_backend_serves_its_urls(tmp_path, mounted):
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array([b"x", b"yz"])}
    tfformats.save_checkpoint(tmp_path / "run" / "ckpt", tensors, object_graph=False)
    assert fileio.filesystem("mem://run/ckpt") is mounted
    assert fileio.filesystem(str(tmp_path)) is fileio.LOCAL
    with tfformats.CheckpointReader("mem://run/ckpt") as reader:
        np.testing.assert_array_equal(reader["a"], tensors["a"])
        assert list(reader["s"]) == [b"x", b"yz"]
    assert "mem://run/ckpt.index" in mounted.calls
    assert "mem://run/ckpt.data-00000-of-00001" in mounted.calls


def test_reading_helpers_raise_tfformats_errors(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no such file"):
        fileio.read_file(tmp_path / "missing")
    assert fileio.read_file_if_present(tmp_path / "missing") is None
    with pytest.raises(tfformats.FormatError, match="is a directory"):
        fileio.read_file(tmp_path)


def test_write_atomically_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f"
    fileio.write_atomically(path, b"old", sync=True)
    fileio.write_atomically(path, b"new", sync=False)
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["f"]
    assert fileio.read_at(path, -2, 2) == b"ew"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/self/smaps")
def test_private_maps_are_not_charged_against_the_commit_limit(tmp_path):
    # MAP_NORESERVE took effect: the kernel lists the map with the flag "nr".
    import ctypes
    path = tmp_path / "data"
    path.write_bytes(b"x" * 65536)
    with open(path, "rb") as f:
        m = fileio._private_map(f.fileno())
    pointer = ctypes.c_char.from_buffer(m)
    address = ctypes.addressof(pointer)
    del pointer
    flags = None
    for line in pathlib.Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("VmFlags:"):
            flags = line.split()[1:]
            break
    m.close()
    assert flags is not None and "nr" in flags
