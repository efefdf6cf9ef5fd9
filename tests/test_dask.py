"""tfformats.dask: checkpoints as Dask arrays whose chunks read only their own bytes."""

import numpy as np
import pytest

import tfformats as tff
from tfformats import dask as tff_dask
from tfformats._impl import hot
from tfformats.errors import ChecksumError

from conftest import FIXTURES

TENSORS = {"big": np.arange(30000, dtype=np.float32).reshape(300, 100),
           "ints": np.arange(-50, 50, dtype=np.int16),
           "scalar": np.float64(2.5),
           "strings": np.array([b"a", b"bc", b""], dtype=object)}


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


def test_distributed_cluster_reads_a_remote_checkpoint(s3, s3_endpoint, tmp_path):
    import distributed   # the test extra installs it: a missing one fails, never skips
    local = str(tmp_path / "ckpt")
    tff.save_checkpoint(local, TENSORS, object_graph=False)
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    remote = "s3://scratch/dask/ckpt"
    tff.save_checkpoint(remote, TENSORS, object_graph=False, storage_options=options)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        crcs = client.compute(tff_dask.checksums(remote, chunk_bytes=30000,
                                                 storage_options=options), sync=True)
        assert crcs == _local_crcs(local)
        arrays = tff_dask.to_dask(remote, chunk_bytes=30000, storage_options=options)
        # float64 sums of these small integers are exact whatever the chunking
        sums = client.compute({n: a.astype(np.float64).sum() for n, a in arrays.items()
                               if n != "strings"}, sync=True)
        assert sums == {n: TENSORS[n].astype(np.float64).sum() for n in sums}
        assert client.compute(arrays["strings"], sync=True).tolist() == TENSORS["strings"].tolist()
