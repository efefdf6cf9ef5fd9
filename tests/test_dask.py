"""tfformats.dask: checkpoints as Dask arrays whose chunks read only their own bytes."""

import filecmp
import os

import numpy as np
import pytest

import tfformats as tff
from tfformats import dask as tff_dask
from tfformats._impl import hot
from tfformats.errors import ChecksumError

from conftest import FIXTURES, requires_tf

TENSORS = {"big": np.arange(30000, dtype=np.float32).reshape(300, 100),
           "ints": np.arange(-50, 50, dtype=np.int16),
           "scalar": np.float64(2.5),
           "strings": np.array([b"a", b"bc", b""], dtype=object),
           "empty": np.zeros((0, 3), np.float32)}


def _local_crcs(prefix):
    with tff.open_checkpoint(prefix) as reader:
        return {n: hot.crc32c(reader.get_tensor(n).tobytes()) for n in reader
                if not reader.dtype(n).is_string}


def test_arrays_match_the_reader_and_chunks_read_their_own_ranges(store, monkeypatch):
    prefix = store.join("ckpt")
    tff.save_checkpoint(prefix, TENSORS, object_graph=False, max_shard_size=60000)
    arrays = tff_dask.to_dask(prefix, chunk_bytes=40000)
    assert arrays["big"].npartitions == 3   # 100 rows of 400 bytes per chunk
    reads = []
    real = tff_dask.fileio.read_at
    monkeypatch.setattr(tff_dask.fileio, "read_at",
                        lambda path, offset, n: reads.append(n) or real(path, offset, n))
    for name, value in TENSORS.items():
        got = arrays[name].compute(scheduler="sync")
        assert got.dtype == value.dtype and got.shape == value.shape
        assert got.tolist() == value.tolist()
    assert max(reads) == 40000   # no chunk read more than its own rows
    # The partitioned fixture: one task per tensor, read through the reader.
    parts = tff_dask.to_dask(store.path(FIXTURES / "tf1_partitioned" / "model.ckpt"))
    with tff.open_checkpoint(FIXTURES / "tf1_partitioned" / "model.ckpt") as reader:
        np.testing.assert_array_equal(parts["part"].compute(scheduler="sync"), reader["part"])


def test_checksums_combine_chunks_and_catch_damage(tmp_path):
    prefix = str(tmp_path / "ckpt")
    tff.save_checkpoint(prefix, TENSORS, object_graph=False)
    import dask
    crcs = dask.compute(tff_dask.checksums(prefix, chunk_bytes=7777), scheduler="sync")[0]
    assert crcs == _local_crcs(prefix)
    data = tmp_path / "ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[20000] ^= 1
    data.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="'big'"):
        dask.compute(tff_dask.checksums(prefix, chunk_bytes=7777), scheduler="sync")


@pytest.fixture(scope="module")
def client():
    """One LocalCluster (worker processes on 127.0.0.1) for the module's cluster
    tests; its Client is current only inside their `as_current()` blocks, so
    the other tests keep dask's default scheduler."""
    import distributed   # the test extra installs it: a missing one fails, never skips
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


def _s3_options(endpoint):
    return {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}


def test_distributed_cluster_reads_a_remote_checkpoint(s3, s3_endpoint, tmp_path, client):
    local = str(tmp_path / "ckpt")
    tff.save_checkpoint(local, TENSORS, object_graph=False)
    options = _s3_options(s3_endpoint)
    remote = "s3://scratch/dask/ckpt"
    tff.save_checkpoint(remote, TENSORS, object_graph=False, storage_options=options)
    crcs = client.compute(tff_dask.checksums(remote, chunk_bytes=30000,
                                             storage_options=options), sync=True)
    assert crcs == _local_crcs(local)
    arrays = tff_dask.to_dask(remote, chunk_bytes=30000, storage_options=options)
    # float64 sums of these small integers are exact whatever the chunking
    sums = client.compute({n: a.astype(np.float64).sum() for n, a in arrays.items()
                           if n != "strings"}, sync=True)
    assert sums == {n: TENSORS[n].astype(np.float64).sum() for n in sums}
    assert client.compute(arrays["strings"], sync=True).tolist() == TENSORS["strings"].tolist()


# --- conversion ---------------------------------------------------------------------

class _Recording(tff_dask._Window):
    """The conversions' window, remembering each instance (its peak bytes in
    flight) and the size of every job it was given."""
    made: list = []

    def __init__(self, limit, client=None):
        super().__init__(limit, client)
        self.sizes = []
        _Recording.made.append(self)

    def results(self, jobs):
        return super().results((job, self.sizes.append(n) or n) for job, n in jobs)


@pytest.fixture
def window(monkeypatch):
    _Recording.made = []
    monkeypatch.setattr(tff_dask, "_Window", _Recording)
    return _Recording.made


def _same_files(local_prefix, other_prefix):
    """The files of two checkpoints (local or S3) hold the same bytes."""
    names = sorted(n for n in os.listdir(os.path.dirname(local_prefix))
                   if n.startswith(os.path.basename(local_prefix) + "."))
    assert names
    for name in names:
        suffix = name[len(os.path.basename(local_prefix)):]
        with open(os.path.join(os.path.dirname(local_prefix), name), "rb") as f:
            expected = f.read()
        assert tff_dask.fileio.read_file(other_prefix + suffix) == expected, suffix


def test_window_bounds_the_bytes_in_flight_and_keeps_order():
    import dask
    window = tff_dask._Window(100)
    sizes = [40, 40, 40, 250, 10, 60, 60]
    jobs = [(dask.delayed(lambda i, n: (i, n))(i, n), n) for i, n in enumerate(sizes)]
    assert list(window.results(jobs)) == list(enumerate(sizes))
    assert window.peak == 250   # only the oversized job alone went past the window
    small = tff_dask._Window(100)
    list(small.results(jobs[:3] + jobs[4:]))
    assert small.peak == 80


@pytest.mark.parametrize("src", ["own", "sharded/ckpt", "tf1_partitioned/model.ckpt",
                                 "tf1_v1/model.ckpt-7"])
def test_conversions_equal_the_local_converters(tmp_path, window, src):
    """With dask's default scheduler (no Client), byte for byte what
    tfformats.convert writes, from chunks of at most chunk_bytes."""
    if src == "own":
        src = str(tmp_path / "src")
        tff.save_checkpoint(src, TENSORS)
    else:
        src = str(FIXTURES / src)
    theirs, ours = [], []
    tff.checkpoint_to_checkpoint(src, tmp_path / "expected",
                                 progress=lambda done, total: theirs.append((done, total)))
    assert tff_dask.to_checkpoint(src, tmp_path / "got", chunk_bytes=7000, window_bytes=25000,
                                  progress=lambda done, total: ours.append((done, total))) == []
    assert ours[-1] == theirs[-1]   # the same bytes counted, in smaller steps
    _same_files(str(tmp_path / "expected"), str(tmp_path / "got"))
    names = sorted(tff.open_checkpoint(src))[1::2]   # a selection: its own object graph, if any
    tff.checkpoint_to_checkpoint(src, tmp_path / "some", names=names)
    tff_dask.to_checkpoint(src, tmp_path / "got_some", names=names, chunk_bytes=7000,
                           window_bytes=25000)
    _same_files(str(tmp_path / "some"), str(tmp_path / "got_some"))
    skipped = tff.checkpoint_to_safetensors(src, tmp_path / "want.st", skip_unsupported=True)
    assert tff_dask.to_safetensors(src, tmp_path / "got.st", skip_unsupported=True,
                                   chunk_bytes=7000, window_bytes=25000) == skipped
    assert (tmp_path / "got.st").read_bytes() == (tmp_path / "want.st").read_bytes()
    assert len(window) == 3   # the whole checkpoint, the selection, to_safetensors
    for made in window:   # each window computed at most 25,000 bytes at a time
        assert made.client is None and made.sizes
        assert made.peak <= max(25000, max(made.sizes))
    if src.endswith("src"):   # 'big' went as 17 chunks of 17 rows and one of 11,
        assert window[0].sizes.count(17 * 400) == 17 and 11 * 400 in window[0].sizes
        assert 7000 < window[0].peak <= 25000   # several in flight at once, within the window


def _damaged_copy(options, prefix):
    """TENSORS saved at the S3 `prefix` with one byte of 'big' flipped."""
    tff.save_checkpoint(prefix, TENSORS, storage_options=options)
    with tff.open_checkpoint(prefix, storage_options=options) as reader:
        entry = reader.entry("big/.ATTRIBUTES/VARIABLE_VALUE")
        data = reader.bundle.shard(entry.shard_id).path
    with tff_dask.fileio.storage(None, options):
        raw = bytearray(tff_dask.fileio.read_file(data))
        raw[entry.offset + entry.size // 2] ^= 1
        tff_dask.fileio.remove(data)
        tff_dask.fileio.write_file(data, bytes(raw))


@requires_tf
def test_cluster_converts_a_remote_checkpoint(s3, s3_endpoint, tmp_path, client, window):
    """A checkpoint on the S3 server converted by the cluster's workers, to a
    local and to an S3 destination: the local converters' bytes, TensorFlow
    reads the values; a damaged tensor fails with ChecksumError, leaving no
    destination; the caller never held more than the window."""
    import tensorflow as tf
    options = _s3_options(s3_endpoint)
    src = "s3://scratch/dask-convert/src/ckpt"
    tff.save_checkpoint(src, TENSORS, storage_options=options)
    local = str(tmp_path / "local")
    tff.save_checkpoint(local, TENSORS)
    tff.checkpoint_to_checkpoint(local, tmp_path / "expected")
    tff.checkpoint_to_safetensors(local, tmp_path / "want.st", skip_unsupported=True)
    sizes = dict(chunk_bytes=30000, window_bytes=70000, storage_options=options)
    with client.as_current():
        tff_dask.to_checkpoint(src, tmp_path / "got", **sizes)
        tff_dask.to_checkpoint(src, "s3://scratch/dask-convert/out/ckpt", **sizes)
        tff_dask.to_safetensors(src, tmp_path / "got.st", skip_unsupported=True, **sizes)
        tff_dask.to_safetensors(src, "s3://scratch/dask-convert/out/w.st",
                                skip_unsupported=True, **sizes)
    _same_files(str(tmp_path / "expected"), str(tmp_path / "got"))
    with tff_dask.fileio.storage(None, options):
        _same_files(str(tmp_path / "expected"), "s3://scratch/dask-convert/out/ckpt")
        assert tff_dask.fileio.read_file("s3://scratch/dask-convert/out/w.st") == \
            (tmp_path / "want.st").read_bytes()
    assert (tmp_path / "got.st").read_bytes() == (tmp_path / "want.st").read_bytes()
    reader = tf.train.load_checkpoint(str(tmp_path / "got"))
    for name, value in TENSORS.items():
        got = reader.get_tensor(name + "/.ATTRIBUTES/VARIABLE_VALUE")
        assert np.asarray(got).tolist() == value.tolist(), name
    # The window: 'big' (120,000 bytes) went as 4 chunks of 30,000, never more
    # than 70,000 bytes of them computed and not yet written.
    assert len(window) == 4
    for made in window:
        assert made.client is client
        assert made.sizes.count(30000) == 4 and max(made.sizes) == 30000
        assert 60000 <= made.peak <= 70000

    bad = "s3://scratch/dask-convert/bad/ckpt"
    _damaged_copy(options, bad)
    with client.as_current():
        for convert, dst in [(tff_dask.to_checkpoint, tmp_path / "bad" / "ckpt"),
                             (tff_dask.to_checkpoint, "s3://scratch/dask-convert/bad-out/ckpt"),
                             (tff_dask.to_safetensors, tmp_path / "bad" / "w.st"),
                             (tff_dask.to_safetensors, "s3://scratch/dask-convert/bad-out/w.st")]:
            with pytest.raises(ChecksumError, match="'big/"):
                convert(bad, dst, skip_unsupported=True, **sizes)
    assert not (tmp_path / "bad").exists() or os.listdir(tmp_path / "bad") == []
    s3.invalidate_cache()
    assert not s3.exists("scratch/dask-convert/bad-out") or s3.ls("scratch/dask-convert/bad-out") == []
