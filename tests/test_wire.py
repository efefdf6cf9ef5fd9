"""tfformats.wire: the bundle header decoded without protobuf, checked against protobuf."""

import subprocess
import sys

import pytest
from google.protobuf.message import DecodeError
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tfformats import protos, wire
from tfformats.errors import FormatError

from conftest import FIXTURES

INT32 = st.integers(-(1 << 31), (1 << 31) - 1)


def as_protobuf_reads(data):
    header = protos.BundleHeaderProto.FromString(data)
    v = header.version
    return wire.BundleHeader(header.num_shards, header.endianness, v.producer, v.min_consumer,
                             list(v.bad_consumers))


@settings(max_examples=300, deadline=None)
@given(INT32, st.integers(0, 1), INT32, INT32, st.lists(INT32, max_size=4), st.booleans(),
       st.binary(max_size=8))
def test_valid_headers_read_as_protobuf_reads_them(num_shards, endianness, producer,
                                                   min_consumer, bad, split_version, noise):
    header = protos.BundleHeaderProto(num_shards=num_shards, endianness=endianness)
    header.version.producer = producer
    header.version.min_consumer = min_consumer
    header.version.bad_consumers.extend(bad)
    data = header.SerializeToString()
    if split_version:   # a second VersionDef merges into the first, as protobuf does
        extra = protos.BundleHeaderProto()
        extra.version.bad_consumers.append(7)
        data += extra.SerializeToString()
    data += b"\x22" + bytes([len(noise)]) + noise  # field 4: unknown to both, skipped
    assert wire.parse_bundle_header(data, "h") == as_protobuf_reads(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40))
@example(b"\xd9\x80\x80\x80\x10\x00")   # a tag past 32 bits (field number > 2**29 - 1)
def test_any_bytes_read_as_protobuf_reads_them_or_refused(data):
    try:
        ours = wire.parse_bundle_header(data, "h")
    except FormatError as e:
        assert str(e).startswith("h: ")
        return
    # Whatever we accept, protobuf accepts with the same values (we are
    # stricter only about groups, which a bundle header never holds).
    assert ours == as_protobuf_reads(data)


def test_unpacked_bad_consumers_and_wrong_wire_types():
    # bad_consumers written unpacked (proto2 style), num_shards as fixed32 (skipped)
    data = bytes([0x08, 3, 0x1A, 4, 0x18, 5, 0x18, 6, 0x0D, 1, 0, 0, 0])
    assert wire.parse_bundle_header(data, "h") == as_protobuf_reads(data)
    assert wire.parse_bundle_header(data, "h").bad_consumers == [5, 6]


@pytest.mark.parametrize("data", [b"\x08", b"\x1a\x05\x08", b"\x00\x00", b"\x08" + b"\xff" * 11])
def test_bad_headers_name_where(data):
    with pytest.raises(FormatError, match=r"^ckpt\.index: bundle header: "):
        wire.parse_bundle_header(data, "ckpt.index: bundle header")
    with pytest.raises(DecodeError):   # protobuf refuses these too
        protos.BundleHeaderProto.FromString(data)


def test_reading_tensors_does_not_import_protobuf():
    code = ("import sys, tfformats; r = tfformats.open_checkpoint(sys.argv[1]); r['float32'];"
            "r.get_variable_to_shape_map(); assert not [m for m in sys.modules"
            " if m.startswith('google.protobuf')], 'protobuf imported'")
    subprocess.run([sys.executable, "-c", code, str(FIXTURES / "dtypes" / "ckpt")], check=True)
