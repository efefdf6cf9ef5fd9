"""Protobuf wire format read by hand, where protobuf itself does not fit.

Opening a checkpoint parses one small message, the bundle header. Importing
protobuf for it would cost more than the rest of opening a small checkpoint
(~50 ms on the build machines), so the header is decoded here and protobuf
loads only when a caller needs it (object graphs, SavedModels). The older
keras_metadata.pb layout also needs fields that protobuf's classes no
longer describe.
"""

from collections import namedtuple

from ._impl import hot
from .errors import FormatError

BIG_ENDIAN = 1   # BundleHeaderProto.Endianness.BIG

BundleHeader = namedtuple("BundleHeader",
                          "num_shards endianness producer min_consumer bad_consumers")


def fields(data, where):
    """(field number, wire type, value) of each field of a serialized message:
    an int for varint and fixed-width fields, the bytes of length-delimited
    ones. FormatError (naming `where` and the offset) on bad data; groups are
    refused."""
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = hot.decode_varint(data, pos, where)
        number, wire = tag >> 3, tag & 7
        if not 0 < number < 1 << 29:
            raise FormatError(f"{where}: invalid field number {number} at offset {pos}")
        if wire == 0:
            value, pos = hot.decode_varint(data, pos, where)
        elif wire == 2:
            size, pos = hot.decode_varint(data, pos, where)
            if size > end - pos:
                raise FormatError(f"{where}: field {number} runs past the end of its "
                                  f"message at offset {pos}")
            value = data[pos:pos + size]
            pos += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if width > end - pos:
                raise FormatError(f"{where}: field {number} runs past the end of its "
                                  f"message at offset {pos}")
            value = int.from_bytes(data[pos:pos + width], "little")
            pos += width
        else:
            raise FormatError(f"{where}: unsupported protobuf wire type {wire} at offset {pos}")
        yield number, wire, value


def _int32(value):
    """An int32 field from its varint (negative ones are sign-extended to 64 bits)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


def parse_bundle_header(data, where):
    """The BundleHeaderProto fields a reader needs, as protobuf would parse
    them (last value wins; unknown fields and wrong wire types skipped)."""
    num_shards = endianness = producer = min_consumer = 0
    bad_consumers = []
    for number, wire, value in fields(data, where):
        if number == 1 and wire == 0:
            num_shards = _int32(value)
        elif number == 2 and wire == 0:
            endianness = _int32(value)
        elif number == 3 and wire == 2:   # VersionDef, merged when repeated
            for vnumber, vwire, v in fields(value, where):
                if vnumber == 1 and vwire == 0:
                    producer = _int32(v)
                elif vnumber == 2 and vwire == 0:
                    min_consumer = _int32(v)
                elif vnumber == 3 and vwire == 0:
                    bad_consumers.append(_int32(v))
                elif vnumber == 3 and vwire == 2:   # packed
                    pos = 0
                    while pos < len(v):
                        x, pos = hot.decode_varint(v, pos, where)
                        bad_consumers.append(_int32(x))
    return BundleHeader(num_shards, endianness, producer, min_consumer, bad_consumers)
