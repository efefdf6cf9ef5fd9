"""Chunked SavedModels (saved_model.cpb) and the Riegeli/records layer under them.

TensorFlow 2.21's pip build can neither write nor load a .cpb, but its
fingerprinting code reads one with the C++ Riegeli reader and merger, checks
every hash and fingerprints it: that is the judge for what tfformats writes
and computes. Riegeli files written by the C++ writer inside `array-record`
(fixtures, and live where it is installed) are the judge for the reader.
"""

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import tfformats
from tfformats import _pure, chunked, fingerprint, protos, riegeli
from tfformats._impl import hot
from tfformats.errors import ChecksumError, FormatError, UnsupportedError
from tfformats.validate import validate

from conftest import FIXTURES

try:
    from tfformats import _native
except ImportError:
    _native = None

RIEGELI = FIXTURES / "riegeli"
CHUNKED = FIXTURES / "chunked_saved_model"
EXPECTED = json.loads((CHUNKED / "expected_chunked.json").read_text())
REPO = FIXTURES.parent.parent

# The first 64 bytes of every Riegeli/records file (its format specification).
SIGNATURE = riegeli.FILE_SIGNATURE


def _records(path):
    return [r for _, r in riegeli.read_records(path.read_bytes(), str(path)).records]


# --- HighwayHash ------------------------------------------------------------------

def test_highwayhash_known_answers():
    u64 = struct.Struct("<Q")
    # The signature's three hashes: block header, chunk header, empty chunk data.
    assert hot.highway_hash64(SIGNATURE[8:24]) == u64.unpack_from(SIGNATURE, 0)[0]
    assert hot.highway_hash64(SIGNATURE[32:64]) == u64.unpack_from(SIGNATURE, 24)[0]
    assert hot.highway_hash64(b"") == u64.unpack_from(SIGNATURE, 40)[0]
    # HighwayHash's reference vectors: key bytes 0..31, data bytes 0..n-1.
    key = (0x0706050403020100, 0x0F0E0D0C0B0A0908, 0x1716151413121110, 0x1F1E1D1C1B1A1918)
    assert [hot.highway_hash64(bytes(range(n)), key) for n in range(4)] == [
        0x907A56DE22C26E53, 0x7EAB43AAC7CDDD78, 0xB8D0569AB0B53D62, 0x5C6BEFAB8A463D80]
    with pytest.raises(ValueError):
        hot.highway_hash64(b"x", key[:3])


@pytest.mark.skipif(_native is None, reason="native extension not built")
def test_highwayhash_twins_agree_on_every_tail_length():
    rng = np.random.default_rng(7)
    for n in list(range(0, 100)) + [4096, 65536 + 13]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert _native.highway_hash64(data) == _pure.highway_hash64(data), n
        assert _native.highway_hash64(memoryview(data)) == _native.highway_hash64(bytearray(data))


# --- Riegeli/records ----------------------------------------------------------------

@pytest.mark.parametrize("compression", ["uncompressed", "brotli", "zstd", "snappy"])
def test_reads_files_of_the_cpp_riegeli_writer(compression):
    expected = json.loads((RIEGELI / "expected.json").read_text())[compression]
    records = _records(RIEGELI / f"{compression}.riegeli")
    # array-record appends its own index records after the user's records.
    assert [hashlib.sha256(r).hexdigest() for r in records[:len(expected)]] == expected


def test_live_array_record_files_read_back(tmp_path):
    from array_record.python.array_record_module import ArrayRecordWriter
    rng = np.random.default_rng(3)
    records = [rng.integers(0, 256, n, dtype=np.uint8).tobytes()
               for n in (65512 - 40, 65512, 1, 0, 131072, 77)]   # around block boundaries
    for options in ("group_size:1,uncompressed", "group_size:4,brotli", "group_size:2,zstd:3"):
        path = tmp_path / "f.riegeli"
        writer = ArrayRecordWriter(str(path), options)
        for r in records:
            writer.write(r)
        writer.close()
        assert _records(path)[:len(records)] == records, options


@pytest.mark.parametrize("compression", [riegeli.NONE, riegeli.BROTLI, riegeli.ZSTD, riegeli.SNAPPY])
def test_writer_round_trip_across_blocks(compression):
    rng = np.random.default_rng(compression)
    records = [rng.integers(0, 256, n, dtype=np.uint8).tobytes()
               for n in (0, 65512 - 80, 24, 70000, 3, 150000, 0)]
    writer = riegeli.RecordsWriter(compression, chunk_size=100_000)
    positions = [writer.write(r) for r in records]
    data = writer.getvalue()
    assert data[:64] == SIGNATURE
    assert len(data) > 3 * riegeli.BLOCK_SIZE
    parsed = riegeli.read_records(data, "mem")
    assert [r for _, r in parsed.records] == records
    assert [parsed.record_at(p) for p in positions] == records


def _damaged(data, offset):
    data = bytearray(data)
    data[offset] ^= 0x10
    return bytes(data)


def test_damage_is_detected_and_named():
    data = (RIEGELI / "uncompressed.riegeli").read_bytes()
    for offset, what in ((riegeli.BLOCK_SIZE + 3, "block header"),
                         (2 * riegeli.BLOCK_SIZE + 10, "block header"),
                         (64 + 9, "chunk header"), (64 + 40 + 100, "chunk data")):
        with pytest.raises(ChecksumError, match=what):
            riegeli.read_records(_damaged(data, offset), "f.riegeli")
    for data_ in (b"\0" * 100, _damaged(data, 3), b""):
        with pytest.raises(FormatError, match="not a Riegeli/records file"):
            riegeli.read_records(data_, "f")
    with pytest.raises(FormatError, match="f: .*past the end|do not fit"):
        riegeli.read_records(data[:70000], "f")


def _one_chunk_file(kind, data, num_records, decoded_size):
    """The signature, then one chunk with these header fields (hashes right,
    no padding): small, whatever it claims."""
    body = struct.pack("<QQQQ", len(data), hot.highway_hash64(data),
                       kind[0] | (num_records << 8), decoded_size)
    return SIGNATURE + struct.pack("<Q", hot.highway_hash64(body)) + body + data


def test_hostile_chunks_get_clear_errors_without_big_allocations():
    with pytest.raises(UnsupportedError, match="transposed"):
        riegeli.read_records(_one_chunk_file(riegeli.TRANSPOSED, b"\0", 1, 1), "f")
    with pytest.raises(FormatError, match="unknown chunk type"):
        riegeli.read_records(_one_chunk_file(b"q", b"", 0, 0), "f")
    # A chunk that claims 2**60 records or values: refused before anything is allocated.
    with pytest.raises(FormatError, match="do not fit"):
        riegeli.read_records(_one_chunk_file(riegeli.SIMPLE, b"\0\0", 2**50, 0), "f")
    with pytest.raises(FormatError, match="header says"):
        riegeli.read_records(_one_chunk_file(riegeli.SIMPLE, b"\0\0", 0, 2**60), "f")
    # Brotli data that decompresses to less than it claims.
    import cramjam
    values = riegeli.hot.encode_varint(2**40) + bytes(cramjam.brotli.compress(b"abc"))
    sizes = riegeli.hot.encode_varint(1) + bytes(cramjam.brotli.compress(b"\x03"))
    data = b"b" + riegeli.hot.encode_varint(len(sizes)) + sizes + values
    with pytest.raises(FormatError, match="decompressed to 3 bytes"):
        riegeli.read_records(_one_chunk_file(riegeli.SIMPLE, data, 1, 3), "f")


# --- chunked SavedModels --------------------------------------------------------------

def test_fixture_merges_into_the_model_tensorflow_saved():
    model = tfformats.load_saved_model(CHUNKED)
    assert model.format == "cpb"
    merged = model.proto.SerializeToString(deterministic=True)
    assert hashlib.sha256(merged).hexdigest() == EXPECTED["saved_model_sha256"]
    source = chunked.ChunkedFile(CHUNKED / "saved_model.cpb")
    kinds = {info.type for info in source.metadata.chunks}
    assert kinds == {1, 2} and len(source.metadata.chunks) > 2   # message and bytes chunks
    assert (CHUNKED / "saved_model.cpb").stat().st_size > riegeli.BLOCK_SIZE


def test_fixture_fingerprint_matches_tensorflow():
    ours = fingerprint.compute_fingerprint(CHUNKED)
    assert {k: str(getattr(ours, k)) for k in EXPECTED["fingerprint"]} == EXPECTED["fingerprint"]
    assert ours.version.producer == EXPECTED["fingerprint_producer"] == 2
    assert fingerprint.check_fingerprint(CHUNKED) == []


def test_variables_and_commands_work_on_a_chunked_model():
    model = tfformats.load_saved_model(CHUNKED / "saved_model.cpb")
    assert set(model.signatures) >= {"first", "second", "third"}
    assert model.variables["scale"] == np.float32(2.0)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for args in (["validate", CHUNKED, "--expect", "saved_model"], ["show", CHUNKED, "--all"],
                 ["fingerprint", CHUNKED, "--check"]):
        proc = subprocess.run([sys.executable, "-m", "tfformats", *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    assert "signature_def['first']" in proc.stdout or "matches" in proc.stdout


def test_a_damaged_chunk_is_a_validate_finding(tmp_path):
    shutil.copytree(CHUNKED, tmp_path / "m")
    path = tmp_path / "m" / "saved_model.cpb"
    path.write_bytes(_damaged(path.read_bytes(), 5000))
    report = validate(tmp_path / "m")
    assert not report.ok
    assert any("hash mismatch" in str(f.message) for f in report.findings)
    with pytest.raises(ChecksumError):
        tfformats.load_saved_model(tmp_path / "m")


def test_edited_chunked_model_is_saved_chunked(tmp_path):
    model = tfformats.load_saved_model(CHUNKED)
    saved = model.save(tmp_path / "copy")
    assert (tmp_path / "copy" / "saved_model.cpb").exists()
    assert not (tmp_path / "copy" / "saved_model.pb").exists()
    assert saved.proto == model.proto
    assert fingerprint.check_fingerprint(tmp_path / "copy") == []


def _tf_fingerprint(export_dir):
    code = ("import sys; from tensorflow.python.saved_model.pywrap_saved_model import "
            "fingerprinting as f; sys.stdout.buffer.write(f.CreateFingerprintDef(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-c", code, str(export_dir)], capture_output=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return protos.FingerprintDef.FromString(proc.stdout)


@pytest.mark.parametrize("threshold,compression", [(64, riegeli.NONE), (1024, riegeli.ZSTD),
                                                    (1 << 30, riegeli.BROTLI)])
def test_tensorflow_accepts_what_the_writer_writes(tmp_path, threshold, compression):
    """Every split of the fixture model, read back by TensorFlow's C++ reader:
    it checks every hash, and its fingerprint must equal ours."""
    model = tfformats.load_saved_model(CHUNKED)
    out = tmp_path / "m"
    shutil.copytree(CHUNKED, out)
    os.remove(out / "saved_model.cpb")
    chunked.write_chunked_saved_model(out, model.proto, threshold=threshold,
                                      compression=compression)
    merged = chunked.read_chunked(out / "saved_model.cpb", protos.SavedModel())
    assert merged == model.proto
    theirs, ours = _tf_fingerprint(out), fingerprint.compute_fingerprint(out)
    for name in fingerprint.HASH_FIELDS:
        assert getattr(ours, name) == getattr(theirs, name), name


def test_hostile_chunk_metadata_is_refused(tmp_path):
    source = chunked.ChunkedFile(CHUNKED / "saved_model.cpb")
    records = [r for _, r in source._records.records]

    def rewrite(edit):
        metadata = protos.ChunkMetadata()
        metadata.CopyFrom(source.metadata)
        edit(metadata)
        writer = riegeli.RecordsWriter(riegeli.NONE)
        positions = [writer.write(r) for r in records[:-1]]
        for info, position in zip(metadata.chunks, positions):
            info.offset = position
        writer.write(metadata.SerializeToString())
        path = tmp_path / "saved_model.cpb"
        path.write_bytes(writer.getvalue())
        return lambda: chunked.read_chunked(path, protos.SavedModel())

    def far_index(m):   # the first repeated-field index in the tree
        nodes = [m.message]
        while nodes:
            for field in nodes.pop(0).chunked_fields:
                for tag in field.field_tag:
                    if tag.WhichOneof("kind") == "index":
                        tag.index = 10**12
                        return
                nodes.append(field.message)

    def missing_chunk(m):
        m.message.chunk_index = 999

    def wrong_size(m):
        m.chunks[1].size += 1

    def deep(m):
        node = m.message
        for _ in range(100):
            node = node.chunked_fields.add().message
    for edit, match in ((far_index, "asks for element"), (missing_chunk, "does not exist"),
                        (wrong_size, "metadata says"), (deep, "nested|[Dd]epth")):
        with pytest.raises(FormatError, match=match):
            rewrite(edit)()


def test_graph_constants_of_a_chunked_saved_model():
    # The directory, or its saved_model.cpb, hold the graph in chunks: the
    # constants are those of the merged message (the bytes TF split, by the
    # sha256 test above), big tensor contents included.
    merged = tfformats.load_saved_model(CHUNKED).proto
    want = tfformats.graph_constants(merged.meta_graphs[0].graph_def)
    assert want and max(v.nbytes for v in want.values()) > 1024
    for path in (CHUNKED, CHUNKED / "saved_model.cpb"):
        got = tfformats.graph_constants(path)
        assert sorted(got) == sorted(want)
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value)
    assert fingerprint.read_saved_model(CHUNKED) == merged
