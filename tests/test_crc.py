"""CRC-32C combination and the multi-core CRC of big tensors."""

import numpy as np
import pytest

from tfformats import crc
from tfformats._impl import hot


@pytest.mark.parametrize("n1, n2", [(0, 0), (0, 9), (9, 0), (1, 1), (3, 4096), (4096, 3),
                                    (1000, 1 << 16), (12345, 777)])
def test_crc32c_combine(n1, n2):
    rng = np.random.default_rng(n1 * 7 + n2)
    a, b = rng.bytes(n1), rng.bytes(n2)
    assert crc.crc32c_combine(hot.crc32c(a), hot.crc32c(b), n2) == hot.crc32c(a + b)


@pytest.mark.parametrize("size", [0, 1, crc.PARALLEL_MIN_BYTES - 1, crc.PARALLEL_MIN_BYTES,
                                  crc.PARALLEL_MIN_BYTES + 3, 5 * crc.PARALLEL_MIN_BYTES + 7])
def test_parallel_crc_equals_serial(size):
    data = np.random.default_rng(size).bytes(size)
    assert crc.crc32c_parallel(memoryview(data)) == hot.crc32c(data)


@pytest.mark.parametrize("workers", [2, 3, 5])
@pytest.mark.parametrize("piece", [4096, 12288, 1 << 30])
def test_parallel_crc_of_many_pieces(workers, piece, monkeypatch):
    """However many threads share the pieces and however small they are, the
    pieces are combined in order (a last piece shorter than the others too)."""
    monkeypatch.setattr(crc, "_WORKERS", workers)
    monkeypatch.setattr(crc, "PIECE_BYTES", piece)
    for size in (crc.PARALLEL_MIN_BYTES, 3 * crc.PARALLEL_MIN_BYTES + 4097):
        data = np.random.default_rng(size + piece).bytes(size)
        assert crc.crc32c_parallel(memoryview(data)) == hot.crc32c(data), size


def test_parallel_crc_does_not_wait_for_a_busy_pool(monkeypatch):
    """With every pool thread busy elsewhere (another caller's CRC, another
    reader), the caller checks every piece itself instead of waiting for a
    helper to start; and callers on several threads at once all get their CRC."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(1)
    monkeypatch.setattr(crc, "_pool", pool)
    monkeypatch.setattr(crc, "_WORKERS", 2)
    data = np.random.default_rng(5).bytes(3 * crc.PARALLEL_MIN_BYTES + 5)
    release = threading.Event()
    busy = pool.submit(release.wait, 300)
    results = []
    callers = [threading.Thread(target=lambda: results.append(crc.crc32c_parallel(memoryview(data))))
               for _ in range(3)]
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + 10
    for caller in callers:
        caller.join(max(0, deadline - time.monotonic()))
    finished = len(results)
    release.set()
    busy.result()
    pool.shutdown()
    assert finished == 3 and results == [hot.crc32c(data)] * 3


@pytest.mark.parametrize("size", [0, 1, crc.COPY_STEP + 1, crc.PARALLEL_MIN_BYTES - 1,
                                  crc.PARALLEL_MIN_BYTES, 5 * crc.PARALLEL_MIN_BYTES + 7])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_copy_and_crc_in_one_pass(size, workers, monkeypatch):
    monkeypatch.setattr(crc, "_WORKERS", workers)
    data = np.random.default_rng(size).bytes(size)
    out = bytearray(size)
    assert crc.crc32c_copy_parallel(memoryview(data), out) == hot.crc32c(data)
    assert out == data
    with pytest.raises(ValueError):
        crc.crc32c_copy_parallel(memoryview(data), bytearray(size + 1))


# --- pieces of 2**29 bytes and more (tensors of 1 GiB and more) -------------------

_ZEROS = bytes(16 << 20)


def _crc_of(pieces, crc=0):
    """CRC-32C of the concatenation of `pieces`: bytes, or an int for that many
    zero bytes (fed through the CRC, never held in memory)."""
    for piece in pieces:
        if isinstance(piece, int):
            while piece:
                n = min(piece, len(_ZEROS))
                crc = hot.crc32c(memoryview(_ZEROS)[:n], crc)
                piece -= n
        else:
            crc = hot.crc32c(piece, crc)
    return crc


@pytest.mark.parametrize("n2", [(1 << 29) - 1, 1 << 29, (1 << 29) + 1, (1 << 30) + 5,
                                (1 << 31) + (1 << 29) + 3])
def test_crc32c_combine_of_big_pieces(n2):
    # Sparse B: a few bytes, then zeros, then a few bytes.
    a = b"tfformats" * 3
    b = [b"\x01\x02\x03", n2 - 6, b"\xfe\xff\x00"]
    expected = _crc_of([a, *b])
    assert crc.crc32c_combine(hot.crc32c(a), _crc_of(b), n2) == expected
    assert crc.crc32c_combine(hot.crc32c(a), _crc_of([n2]), n2) == _crc_of([a, n2])


def test_gpu_uploader_combines_big_chunks():
    from tfformats.cuda.uploader import _Check
    lengths = [5, (1 << 29) + 7, 1 << 30]
    pieces = [b"\x07" * 5, [b"\x09", lengths[1] - 1], [lengths[2] - 1, b"\x0b"]]
    check = _Check("shard", "'big'", 0, _crc_of([pieces[0], *pieces[1], *pieces[2]]))
    for n, piece in zip(lengths, pieces):
        check.crcs[check.add_chunk(n)] = _crc_of(piece if isinstance(piece, list) else [piece])
    check.verify()   # raises ChecksumError on a wrong combine


def test_tensor_over_1_gib_reads_with_verify(tmp_path, monkeypatch):
    """A valid checkpoint with a 1 GiB + 8 byte tensor in a sparse data file:
    two CRC pieces of over 2**29 bytes each, whatever the number of cores."""
    import tfformats as tff
    from tfformats import protos
    from tfformats.bundle import BUNDLE_VERSION, data_filename
    from tfformats.sstable import TableBuilder

    monkeypatch.setattr(crc, "_WORKERS", 2)
    size = (1 << 30) + 8
    prefix = str(tmp_path / "big")
    header = protos.BundleHeaderProto(num_shards=1, endianness=protos.BundleHeaderProto.LITTLE)
    header.version.producer = BUNDLE_VERSION
    entry = protos.BundleEntryProto(dtype=4, shard_id=0, offset=0, size=size,   # DT_UINT8
                                    crc32c=hot.mask_crc(_crc_of([size - 1, b"\x2a"])))
    entry.shape.dim.add(size=size)
    with open(prefix + ".index", "wb") as f:
        table = TableBuilder(f)
        table.add(b"", header.SerializeToString())
        table.add(b"big", entry.SerializeToString())
        table.finish()
    with open(data_filename(prefix, 0, 1), "wb") as f:
        f.truncate(size - 1)   # a hole: no disk space, reads as zeros
        f.seek(size - 1)
        f.write(b"\x2a")
    with tff.open_checkpoint(prefix, verify=True) as reader:
        value = reader["big"]
        assert value.shape == (size,) and value[-1] == 42 and value[size // 2] == 0
        del value


# --- read-ahead: the next big tensor's CRC begun while the caller uses this one ---

def _small_pieces(monkeypatch):
    """Every tensor of the dtypes fixture counts as big, in pieces of 8 bytes."""
    monkeypatch.setattr(crc, "_WORKERS", 2)
    monkeypatch.setattr(crc, "PARALLEL_MIN_BYTES", 16)
    monkeypatch.setattr(crc, "_PAGE", 8)


def _numeric(reader):
    return [n for n in reader if reader.dtype(n).as_numpy_dtype is not None
            and not reader.dtype(n).is_string and reader.entry(n).size >= 16]


def test_read_ahead_in_key_order_checks_every_tensor(tmp_path, monkeypatch):
    """Reading in key order begins the next tensor's CRC ahead; every value is
    still what the file holds, and a damaged tensor that was checked ahead
    still raises ChecksumError when it is read, and not before."""
    import tfformats as tff
    from conftest import FIXTURES, copy_fixture
    _small_pieces(monkeypatch)
    prefix = copy_fixture(FIXTURES / "dtypes", tmp_path / "c") / "ckpt"
    with tff.open_checkpoint(prefix, verify=False) as reader:
        names = _numeric(reader)
        stored = {n: reader.get_tensor(n).tobytes() for n in names}
        damaged = names[-3]
        offset = reader.entry(damaged).offset
    assert len(names) > 10
    data = prefix.parent / "ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[offset + 1] ^= 0x40
    data.write_bytes(bytes(raw))
    with tff.open_checkpoint(prefix) as reader:
        assert list(reader)   # as `for name in reader` does: the key order is known
        for name in names[:-3]:
            assert reader.get_tensor(name).tobytes() == stored[name], name
        assert reader.bundle._ahead is not None   # the damaged one's CRC is under way
        with pytest.raises(tff.ChecksumError, match=f"'{damaged}' at offset {offset}"):
            reader.get_tensor(damaged)
        for name in names[-2:]:
            assert reader.get_tensor(name).tobytes() == stored[name], name
    with tff.open_checkpoint(prefix) as reader:   # read alone, it is damaged all the same
        with pytest.raises(tff.ChecksumError, match=repr(damaged)):
            reader.get_tensor(damaged)


def test_no_read_ahead_out_of_key_order(monkeypatch):
    import tfformats as tff
    from conftest import FIXTURES
    _small_pieces(monkeypatch)
    with tff.open_checkpoint(FIXTURES / "dtypes" / "ckpt") as reader:
        names = _numeric(reader)
        for name in reversed(names):
            reader.get_tensor(name)
        assert reader.bundle._ahead is None
        for name in names[:4]:
            reader.get_tensor(name)
        assert reader.bundle._ahead is not None
        # A big read elsewhere stops and drops what was begun ahead; the
        # tensor it was for is then checked afresh, and passes.
        reader.get_tensor(names[-1])
        assert reader.bundle._ahead is None
        with tff.open_checkpoint(FIXTURES / "dtypes" / "ckpt", verify=False) as unchecked:
            assert reader.get_tensor(names[4]).tobytes() == unchecked.get_tensor(names[4]).tobytes()
    assert reader.bundle._ahead is None   # closing drops it
    with tff.open_checkpoint(FIXTURES / "dtypes" / "ckpt") as reader:
        for name in names[:6]:   # in order, but the reader was not iterated: no order known
            reader.get_tensor(name)
        assert reader.bundle._ahead is None and reader.bundle._decoded is None


@pytest.mark.parametrize("workers", [2, 3])
def test_stopped_pieces_still_add_up(workers, monkeypatch):
    """stop() only sends the helpers away; result() takes every piece left."""
    monkeypatch.setattr(crc, "_WORKERS", workers)
    monkeypatch.setattr(crc, "PIECE_BYTES", 4096)
    data = np.random.default_rng(workers).bytes(2 * crc.PARALLEL_MIN_BYTES + 9)
    for stop_first in (True, False):
        pieces = crc.Pieces(memoryview(data))
        if stop_first:
            pieces.stop()
        assert pieces.result() == hot.crc32c(data)
