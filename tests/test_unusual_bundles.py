"""Bundles TensorFlow writes rarely or only elsewhere: big-endian hosts, Snappy
index blocks (old releases), and offsets past 4 GiB. Built by hand from the
facts in docs/formats.md, since TensorFlow on this host cannot produce them."""

import struct

import numpy as np

import tfformats as tff
from tfformats import protos
from tfformats._impl import hot
from tfformats.fileio import open_file
from tfformats.sstable import SNAPPY_COMPRESSION, Table, TableBuilder

from conftest import FIXTURES, assert_same_tensor

DTYPES = FIXTURES / "dtypes" / "ckpt"


def write_table(path, items, **options):
    with open(path, "wb") as f:
        builder = TableBuilder(f, **options)
        for key, value in items:
            builder.add(key, value)
        builder.finish()


def header(big_endian=False, num_shards=1):
    h = protos.BundleHeaderProto(num_shards=num_shards, endianness=int(big_endian))
    h.version.producer = 1
    return h.SerializeToString()


def big_endian_strings(values):
    """A DT_STRING tensor as a big-endian host writes it, and its masked CRC."""
    crc = 0
    for v in values:
        crc = hot.crc32c(struct.pack(">I", len(v)), crc)
    checksum = struct.pack(">I", hot.mask_crc(crc))
    body = b"".join(values)
    crc = hot.crc32c(body, hot.crc32c(checksum, crc))
    lengths = b"".join(hot.encode_varint(len(v)) for v in values)
    return lengths + checksum + body, hot.mask_crc(crc)


def test_big_endian_bundle_is_byte_swapped_on_read(tmp_path):
    items, data = [(b"", header(big_endian=True))], bytearray()
    with tff.open_checkpoint(DTYPES) as reader:
        names = [n for n in reader if not reader.dtype(n).is_string]
        expected = {n: reader[n] for n in names}
        strings = [b"", b"ab", "h\u00e9".encode(), b"x" * 200]
        for name in names:
            value = expected[name]
            lanes = 2 if value.dtype.kind == "c" else 1
            unit = np.dtype(f"u{value.dtype.itemsize // lanes}")
            raw = value.view(unit).byteswap().tobytes() if unit.itemsize > 1 else value.tobytes()
            entry = protos.BundleEntryProto(dtype=reader.dtype(name).enum, offset=len(data),
                                            size=len(raw), crc32c=hot.mask_crc(hot.crc32c(raw)))
            entry.shape.CopyFrom(protos.TensorShapeProto())
            for d in value.shape:
                entry.shape.dim.add(size=d)
            items.append((name.encode(), entry.SerializeToString()))
            data += raw
    raw, crc = big_endian_strings(strings)
    entry = protos.BundleEntryProto(dtype=7, offset=len(data), size=len(raw), crc32c=crc)
    entry.shape.dim.add(size=len(strings))
    items.append((b"strings", entry.SerializeToString()))
    data += raw
    write_table(tmp_path / "be.index", sorted(items))
    (tmp_path / "be.data-00000-of-00001").write_bytes(bytes(data))
    with tff.open_checkpoint(tmp_path / "be") as reader:
        for name in names:
            assert_same_tensor(reader[name], expected[name])
        assert list(reader["strings"]) == strings


def test_snappy_compressed_index_blocks(tmp_path):
    items = list(Table(open_file(str(DTYPES) + ".index")).items())
    write_table(tmp_path / "ckpt.index", items, compression=SNAPPY_COMPRESSION, block_size=1024)
    raw = (tmp_path / "ckpt.index").read_bytes()
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(
        (FIXTURES / "dtypes" / "ckpt.data-00000-of-00001").read_bytes())
    table = Table(open_file(tmp_path / "ckpt.index"))
    assert table.block_count() > 1
    assert any(raw[off + size] == SNAPPY_COMPRESSION for off, size in table._handles)
    with tff.open_checkpoint(tmp_path / "ckpt") as ours, tff.open_checkpoint(DTYPES) as tf_written:
        assert list(ours) == list(tf_written)
        for name in ours:
            assert_same_tensor(ours[name], tf_written[name])


def test_offsets_past_4_gib_and_tensors_over_2_gib(tmp_path):
    big_offset = 5 << 30
    big_size = (2 << 30) + 16
    scalar = np.array(-1234567890123, dtype=np.int64).tobytes()
    data = tmp_path / "big.data-00000-of-00001"
    with open(data, "wb") as f:  # sparse: only the scalar's page is stored
        f.truncate(big_offset + 64)
        f.seek(big_offset + 8)
        f.write(scalar)
    entries = {
        b"huge": protos.BundleEntryProto(dtype=4, offset=8, size=big_size),
        b"far": protos.BundleEntryProto(dtype=9, offset=big_offset + 8, size=8,
                                        crc32c=hot.mask_crc(hot.crc32c(scalar))),
    }
    entries[b"huge"].shape.dim.add(size=big_size)
    entries[b"far"].shape.SetInParent()
    write_table(tmp_path / "big.index", [(b"", header())] + sorted(
        (k, v.SerializeToString()) for k, v in entries.items()))
    with tff.open_checkpoint(tmp_path / "big", verify=False) as reader:
        huge = reader["huge"]
        assert huge.shape == (big_size,) and huge[-1] == 0 and huge[0] == 0
        assert reader.get_slice("huge")[-4:].tolist() == [0, 0, 0, 0]
    with tff.open_checkpoint(tmp_path / "big") as reader:
        assert reader["far"] == -1234567890123
