"""Damaged and hostile files: clear tfformats errors, never a crash or a hang."""

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfformats as tff
from tfformats import protos

from conftest import FIXTURES, copy_fixture

DTYPES = FIXTURES / "dtypes" / "ckpt"
INDEX = (FIXTURES / "dtypes" / "ckpt.index").read_bytes()
DATA = (FIXTURES / "dtypes" / "ckpt.data-00000-of-00001").read_bytes()


def read_everything(prefix, verify):
    with tff.CheckpointReader(prefix, verify=verify) as reader:
        for name in reader:
            reader.get_tensor(name)
            reader.get_slice(name)[...]
        reader.object_variables()


def write_bundle(directory, index=INDEX, data=DATA):
    directory.mkdir(exist_ok=True)
    (directory / "ckpt.index").write_bytes(index)
    (directory / "ckpt.data-00000-of-00001").write_bytes(data)
    return directory / "ckpt"


@pytest.mark.parametrize("cut", [0, 1, 47, 48, 100, len(INDEX) // 2, len(INDEX) - 49, len(INDEX) - 1])
def test_truncated_index(tmp_path, cut):
    prefix = write_bundle(tmp_path / "c", index=INDEX[:cut])
    with pytest.raises(tff.FormatError, match="ckpt.index"):
        read_everything(prefix, verify=True)


def test_wrong_magic(tmp_path):
    prefix = write_bundle(tmp_path / "c", index=INDEX[:-1] + b"\x00")
    with pytest.raises(tff.FormatError, match="magic"):
        tff.open_checkpoint(prefix)


def test_garbage_index(tmp_path):
    prefix = write_bundle(tmp_path / "c", index=bytes(range(256)) * 4)
    with pytest.raises(tff.FormatError):
        tff.open_checkpoint(prefix)


def test_truncated_data_file_names_file_tensor_and_offset(tmp_path):
    prefix = write_bundle(tmp_path / "c", data=DATA[: len(DATA) // 2])
    with pytest.raises(tff.FormatError, match=r"ckpt.data-00000-of-00001.*tensor '.*'.*bytes"):
        read_everything(prefix, verify=True)


def test_missing_shard(tmp_path):
    prefix = copy_fixture(FIXTURES / "sharded" / "ckpt", tmp_path / "c")
    (prefix.parent / "ckpt.data-00002-of-00005").unlink()
    with pytest.raises(tff.CheckpointNotFoundError, match="data shard 2 of 5 is missing"):
        read_everything(prefix, verify=True)


def test_missing_index(tmp_path):
    prefix = write_bundle(tmp_path / "c")
    (tmp_path / "c" / "ckpt.index").unlink()
    with pytest.raises(FileNotFoundError):
        tff.open_checkpoint(prefix)


def test_corrupt_index_block_is_a_checksum_error(tmp_path):
    index = bytearray(INDEX)
    index[20] ^= 0x01  # inside the first data block
    prefix = write_bundle(tmp_path / "c", index=bytes(index))
    with pytest.raises(tff.ChecksumError, match="block checksum mismatch"):
        read_everything(prefix, verify=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), verify=st.booleans())
def test_random_damage_never_escapes_as_another_error(tmp_path_factory, data, verify):
    index, blob = bytearray(INDEX), bytearray(DATA)
    target = data.draw(st.sampled_from([index, blob]))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(target) - 1))
        target[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del target[data.draw(st.integers(0, len(target))):]
    prefix = write_bundle(tmp_path_factory.mktemp("fuzz"), bytes(index), bytes(blob))
    # Every byte of the data file belongs to a tensor, and every tensor has a
    # CRC: with verify=True, damaged data must be found, not handed out.
    must_fail = verify and bytes(blob) != DATA
    try:
        read_everything(prefix, verify=verify)
    except (tff.ChecksumError, tff.FormatError):
        return
    except tff.TFFormatsError:
        if must_fail:
            raise
        return
    assert not must_fail, "damaged data read without an error under verify=True"


def test_every_data_byte_is_covered_by_a_tensor_crc():
    """What the random-damage test relies on."""
    with tff.open_checkpoint(DTYPES) as reader:
        extents = sorted((e.offset, e.offset + e.size) for e in map(reader.entry, reader))
    end = 0
    for start, stop in extents:
        assert start == end
        end = stop
    assert end == len(DATA)


def test_checksum_error_for_every_damaged_tensor(tmp_path):
    with tff.open_checkpoint(DTYPES) as reader:
        entries = [reader.entry(n) for n in reader]
    for entry in entries:
        if entry.size == 0:
            continue
        blob = bytearray(DATA)
        blob[entry.offset + entry.size - 1] ^= 0x80
        directory = tmp_path / entry.name
        prefix = write_bundle(directory, data=bytes(blob))
        with tff.open_checkpoint(prefix) as reader:
            for copy in (False, True):   # copies are checked as they are made
                with pytest.raises(tff.ChecksumError, match=f"'{entry.name}'"):
                    reader.get_tensor(entry.name, copy=copy)
        shutil.rmtree(directory)


def test_corrupt_object_graph(tmp_path):
    from tfformats.writer import save_checkpoint
    prefix = str(tmp_path / "c")
    save_checkpoint(prefix, {"_CHECKPOINTABLE_OBJECT_GRAPH": np.array(b"\xff\xff\xff", dtype=object)},
                    object_graph=False)
    with tff.open_checkpoint(prefix) as reader:
        with pytest.raises(tff.FormatError, match="TrackableObjectGraph"):
            reader.object_graph()


def test_unsupported_dtype_names_tensor_and_dtype(tmp_path):
    entry = protos.BundleEntryProto(dtype=21, size=0)  # DT_VARIANT
    entry.shape.SetInParent()
    prefix = write_index(tmp_path, {"v": entry})
    with tff.open_checkpoint(prefix) as reader:
        with pytest.raises(tff.UnsupportedError, match="'v'.*variant"):
            reader["v"]


# --- hand-made entries: lengths, offsets and shapes the file cannot back ---------

def write_index(tmp_path, entries, data=b"\x00" * 64, num_shards=1):
    """A bundle whose index holds exactly `entries` (name or key bytes -> BundleEntryProto)."""
    from tfformats.sstable import TableBuilder
    header = protos.BundleHeaderProto(num_shards=num_shards)
    header.version.producer = 1
    with open(tmp_path / "b.index", "wb") as f:
        builder = TableBuilder(f)
        builder.add(b"", header.SerializeToString())
        keyed = {n if isinstance(n, bytes) else n.encode(): e for n, e in entries.items()}
        for key in sorted(keyed):
            builder.add(key, keyed[key].SerializeToString())
        builder.finish()
    for shard in range(num_shards):
        (tmp_path / f"b.data-{shard:05d}-of-{num_shards:05d}").write_bytes(data)
    return tmp_path / "b"


def make_entry(dtype=1, shape=(4,), offset=0, size=16, shard_id=0):
    entry = protos.BundleEntryProto(dtype=dtype, offset=offset, size=size, shard_id=shard_id)
    entry.shape.SetInParent()
    for d in shape:
        entry.shape.dim.add(size=d)
    return entry


@pytest.mark.parametrize("entry,message", [
    (make_entry(shape=(-1, 4)), "negative dimension"),
    (make_entry(shape=(2**40, 2**40), size=16), "needs"),
    (make_entry(shape=(2**62, 4), size=16), "needs"),
    (make_entry(offset=2**62), "outside|needs bytes"),
    (make_entry(offset=60), "needs bytes"),
    (make_entry(offset=-5), "negative offset"),
    (make_entry(size=-16), "negative offset|needs"),
    (make_entry(shard_id=3), "shard id 3"),
    (make_entry(dtype=7, shape=(2**40,), size=16), "cannot fit"),
    (make_entry(dtype=999), "unknown DataType"),
])
def test_entries_the_file_cannot_back(tmp_path, entry, message):
    prefix = write_index(tmp_path, {"t": entry})
    with pytest.raises(tff.TFFormatsError, match=message):
        with tff.open_checkpoint(prefix) as reader:
            reader["t"]


def test_partitioned_entry_with_missing_part(tmp_path):
    entry = make_entry(shape=(4, 2), size=0)
    extent = entry.slices.add().extent
    extent.add(start=0, length=2)
    extent.add()
    prefix = write_index(tmp_path, {"p": entry})
    with tff.open_checkpoint(prefix) as reader:
        with pytest.raises(tff.FormatError, match="cover|lacks its part"):
            reader["p"]


@pytest.mark.parametrize("extents", [
    [((0, 2),), ((3, 2),)],                # one past the end; sizes add up, element 2 unset
    [((0, 4), (0, 1)), ((0, 4), (2, 2))],  # the same in the second dimension of (4, 3)
])
def test_part_one_past_its_tensor_does_not_fit(tmp_path, extents):
    from tfformats import slices
    shape = (4,) if len(extents[0]) == 1 else (4, 3)
    full = make_entry(shape=shape, size=0)
    entries, offset = {}, 0
    for ext in extents:
        slice_ = full.slices.add()
        for start, length in ext:
            slice_.extent.add(start=start, length=length)
        part_shape = tuple(length for _, length in ext)
        size = 4 * int(np.prod(part_shape))
        entries[slices.slice_key("p", ext)] = make_entry(shape=part_shape, offset=offset,
                                                         size=size)
        offset += size
    entries["p"] = full
    prefix = write_index(tmp_path, entries)
    with tff.open_checkpoint(prefix, verify=False) as reader:
        with pytest.raises(tff.FormatError, match="does not fit"):
            reader["p"]
        with pytest.raises(tff.FormatError, match="does not fit"):
            reader.get_slice("p")[0:2]


def test_huge_slice_outside_shape(tmp_path):
    entry = make_entry(shape=(4,), size=0)
    entry.slices.add().extent.add(start=2**60, length=2)
    prefix = write_index(tmp_path, {"p": entry})
    with pytest.raises(tff.FormatError, match="does not fit"):
        with tff.open_checkpoint(prefix) as reader:
            reader["p"]


def test_header_claiming_absurd_shard_count(tmp_path):
    prefix = write_index(tmp_path, {"t": make_entry()}, num_shards=1)
    header = protos.BundleHeaderProto(num_shards=10**9)
    header.version.producer = 1
    from tfformats.sstable import TableBuilder
    with open(tmp_path / "b.index", "wb") as f:
        builder = TableBuilder(f)
        builder.add(b"", header.SerializeToString())
        builder.finish()
    with pytest.raises(tff.FormatError, match="data shards"):
        tff.open_checkpoint(prefix)


def test_future_bundle_version_is_refused(tmp_path):
    header = protos.BundleHeaderProto(num_shards=1)
    header.version.producer = 5
    header.version.min_consumer = 3
    from tfformats.sstable import TableBuilder
    with open(tmp_path / "b.index", "wb") as f:
        builder = TableBuilder(f)
        builder.add(b"", header.SerializeToString())
        builder.finish()
    with pytest.raises(tff.UnsupportedError, match="min consumer 3"):
        tff.open_checkpoint(tmp_path / "b")


@pytest.mark.parametrize("extents", [
    [((0, 2),), ((1, 2),)],            # overlap hiding a gap at the end; sizes add up
    [((0, 1),), ((2, 2),)],            # a gap
    [((0, 3),), ((0, 3),), ((3, 1),)],  # a duplicate part
])
def test_partitioned_parts_must_tile_the_tensor(tmp_path, extents):
    from tfformats import slices
    full = make_entry(shape=(4,), size=0)
    entries = {}
    offset = 0
    for ext in extents:
        full.slices.add().extent.add(start=ext[0][0], length=ext[0][1])
        length = ext[0][1]
        entries[slices.slice_key("p", ext)] = make_entry(
            shape=(length,), offset=offset, size=4 * length)
        offset += 4 * length
    entries["p"] = full
    prefix = write_index(tmp_path, entries)
    with tff.open_checkpoint(prefix, verify=False) as reader:
        with pytest.raises(tff.FormatError, match="do not tile"):
            reader["p"]
        with pytest.raises(tff.FormatError, match="do not tile"):
            reader.get_slice("p")[1:3]


def test_listing_names_a_tensor_of_unknown_dtype(tmp_path):
    prefix = write_index(tmp_path, {"t": make_entry(dtype=999)})
    with tff.open_checkpoint(prefix) as reader:
        with pytest.raises(tff.UnsupportedError, match="999.*'t'"):
            reader.get_variable_to_dtype_map()


@pytest.mark.parametrize("entry", [make_entry(shape=(-1, 4)), make_entry(offset=-5),
                                   make_entry(size=-16), make_entry(shard_id=3),
                                   make_entry(dtype=999)])
def test_per_name_calls_check_the_entry_before_and_after_a_scan(tmp_path, entry):
    """shape/dtype/in of a damaged entry raise what a read raises, whether the
    reader answers from a scan of the whole index or from one lookup."""
    prefix = write_index(tmp_path, {"bad": entry, "good": make_entry()})
    for scan_first in (False, True):
        with tff.open_checkpoint(prefix) as reader:
            if scan_first:
                assert list(reader) == ["bad", "good"] and len(reader) == 2
            for call in (reader.shape, reader.dtype, reader.__contains__):
                with pytest.raises(tff.TFFormatsError) as raised:
                    call("bad")
                with pytest.raises(type(raised.value)):
                    reader["bad"]
            assert reader.shape("good") == [4] and reader.dtype("good").name == "float32"
            assert "good" in reader


def test_list_variables_sorts_names_that_key_order_does_not(tmp_path):
    """Key order is bytewise; list_variables sorts as Python (and TensorFlow's
    Python wrapper) does: undecodable bytes, kept as surrogates, sort before
    characters from U+E000 although their bytes sort after."""
    prefix = write_index(tmp_path, {b"a": make_entry(), b"b\xee\x80\x80": make_entry(shape=(2,)),
                                    b"b\xff": make_entry(shape=(3,))})
    assert tff.list_variables(prefix) == [("a", [4]), ("b\udcff", [3]), ("b\ue000", [2])]
