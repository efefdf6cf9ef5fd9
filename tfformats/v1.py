"""TF1 "V1" checkpoints: `tf.compat.v1.train.Saver(write_version=SaverDef.V1)`,
the format of classic TF-slim `.ckpt` files.

A V1 checkpoint is one LevelDB-style table per shard (no `.index`, no data
files). In each table the "" key holds a SavedTensorSlices whose `meta` lists
that file's tensors: name, shape, dtype and the slices stored. Every other key
is the ordered-code name + slice of one stored slice (the key V2 bundles use
for partitioned parts), holding a SavedTensorSlices whose `data` is a
TensorProto with the values in the dtype's typed field (`float_val`,
`int_val`, ...); its own dtype and shape are left unset. A plain tensor is
one slice covering it; a partitioned variable is several. There are no
per-tensor checksums: the tables' block CRCs are all there is.

Path forms: the file itself (`model.ckpt`, `model.ckpt-1234`), and for a
sharded save (`Saver(sharded=True)`) either one shard file
(`model.ckpt-00000-of-00002`) or the pattern TF records in the `checkpoint`
state file (`model.ckpt-?????-of-00002`); both stand for every shard.

`V1Reader` offers the interface of `bundle.BundleReader` that
`CheckpointReader` uses, so the public API works unchanged.
"""

from __future__ import annotations

import math
import os
import re
import struct
import sys
from typing import TYPE_CHECKING, Any, Callable

# protos and tensor_proto (which imports protobuf) load when a V1 file is read:
# checkpoint.py imports this module, and reading V2 bundles never imports protobuf.
from . import dtypes, fileio, slices
from .bundle import Entry, handed_out
from .errors import CheckpointNotFoundError, FormatError, TensorNotFoundError, UnsupportedError
from .sstable import FOOTER_SIZE, MAGIC, Table

if TYPE_CHECKING:
    import numpy as np
else:   # imported on first use (tfformats/_lazy.py): listing an index needs no numpy
    from ._lazy import numpy as np

META_KEY = b""
CHECKPOINT_VERSION = 1   # TF_CHECKPOINT_VERSION: the format version this reader is
_SHARD = re.compile(r"^(.*)-(\?{5}|\d{5})-of-(\d{5})$", re.S)


def shard_files(path: str) -> list[str]:
    """The files of the V1 checkpoint `path` names: a shard file name or
    pattern stands for every shard of its set, anything else for itself."""
    match = _SHARD.match(path)
    if match is None or int(match.group(3)) < 1:
        return [path]
    base, count = match.group(1), int(match.group(3))
    return [f"{base}-{i:05d}-of-{count:05d}" for i in range(count)]


def _is_table(path):
    """Whether `path` is a file ending in the table footer magic (reads 8 bytes)."""
    try:
        if fileio.size(path) < FOOTER_SIZE:
            return False
        return struct.unpack("<Q", fileio.read_at(path, -8, 8))[0] == MAGIC
    except OSError:   # missing, a directory, unreadable
        return False


def is_v1(path: str | os.PathLike) -> bool:
    """Whether `path` names a V1 checkpoint: a table file (a V2 `.index` aside,
    which callers tell apart by its suffix), or a shard set with one."""
    path = os.fspath(path)
    match = _SHARD.match(path)
    if match is None or int(match.group(3)) < 2:
        return any(_is_table(f) for f in shard_files(path))
    # A shard set: look only at the shards the directory holds (one listing),
    # not at every name of the set: a state file of a few bytes can name a
    # set of 99999 shards (found by fuzzing).
    directory, stem = os.path.split(match.group(1))
    try:
        names = fileio.listdir(directory or ".")
    except OSError:   # no such directory, not one, unreadable
        return False
    count = int(match.group(3))
    shards = sorted(n for n in names if (m := _SHARD.match(n)) and m.group(1) == stem
                    and m.group(2).isdigit() and int(m.group(2)) < count
                    and int(m.group(3)) == count)
    return any(_is_table(os.path.join(directory, n)) for n in shards)


def _parse(raw, where):
    from . import protos
    record = protos.SavedTensorSlices()
    try:
        record.ParseFromString(bytes(raw))
    except Exception:   # protobuf's DecodeError, whichever implementation raises it
        raise FormatError(f"{where}: not a SavedTensorSlices record") from None
    return record


def _extents(slice_proto):
    """A TensorSliceProto as ((start, length), ...); an extent without a length
    is the whole dimension, length -1 (TensorFlow keys it so too)."""
    return tuple((e.start, e.length if e.HasField("length") else slices.FULL)
                 for e in slice_proto.extent)


def _fits(extents, shape):
    """Whether a slice lies inside `shape` (a whole dimension starts at 0)."""
    return len(extents) == len(shape) and all(
        start == 0 if length == slices.FULL else 0 <= start and 0 <= length <= dim - start
        for (start, length), dim in zip(extents, shape))


def _slice_shape(extents, shape):
    return tuple(b - a for a, b in slices.resolve(extents, shape))


def _check_representable(shape, dtype, where):
    """numpy limits an array's rank and dimensions even when it has no elements."""
    dtypes.check_numpy_shape(shape, dtype.itemsize, where)
    if math.prod(d for d in shape if d) * (dtype.itemsize or 8) > sys.maxsize:
        raise UnsupportedError(f"{where}: numpy cannot represent an array of shape {list(shape)}")


class _StoredSlice(Entry):
    """The Entry of one stored slice, knowing which slice it is."""

    extents: Any

    def __new__(cls, extents, *fields):
        self = super().__new__(cls, *fields)
        self.extents = extents
        return self


class V1Reader:
    """Reads a V1 checkpoint; a `bundle.TensorStore` like `BundleReader`.

    Opening reads each shard's footer, index block and metadata record;
    a tensor's records are read when it is. Entries describe where a tensor
    is: `shard_id` the shard file, `offset` the table block holding its
    (first) record, `size` the bytes of its values (the stored records for
    strings); `crc32c` is 0, as V1 has no tensor checksums. Arrays are decoded
    from protos, so each read makes a new one; arrays are handed out
    read-only like BundleReader's views unless `copy=True`.
    """

    raw_bytes = False   # values live in protos; there are no stored bytes to hand out
    swapped = False     # and are decoded in this host's byte order
    _tensors: dict[str, Any]
    _entries: dict[str, Entry]

    def __init__(self, path: str | os.PathLike, verify: bool = True,
                 opener: Callable[[str], fileio.Source] = fileio.open_file) -> None:
        self.prefix = os.fspath(path)
        self.verify = verify
        self._files = shard_files(self.prefix)
        self.num_shards = len(self._files)
        self._tables = []
        self._tensors = {}   # name -> (DType, shape, {extents: shard}) from the metadata
        self._entries = {}   # name -> Entry, built when asked for
        try:
            for shard, file in enumerate(self._files):
                try:
                    source = opener(file)
                except CheckpointNotFoundError:
                    if self.num_shards == 1:
                        raise
                    raise CheckpointNotFoundError(
                        f"{file}: shard {shard} of {self.num_shards} of a V1 checkpoint "
                        "is missing") from None
                try:
                    self._tables.append(Table(source, verify=verify))
                except BaseException:
                    source.close()
                    raise
                self._load_meta(shard)
        except BaseException:
            self.close()
            raise
        # Key order, as V2 bundles list their tensors; the metadata is read once.
        self._decoded = [(name, known[:2]) for name, known in sorted(
            self._tensors.items(), key=lambda kv: kv[0].encode("utf-8", "surrogateescape"))]

    def _load_meta(self, shard):
        from . import tensor_proto
        file = self._files[shard]
        raw = self._tables[shard].get(META_KEY)
        where = f"{file}: V1 metadata (the table's \"\" entry)"
        if raw is None:
            raise FormatError(f"{file}: a table without the \"\" metadata entry; not a TF1 V1 "
                              "checkpoint")
        record = _parse(raw, where)
        if not record.HasField("meta"):
            raise FormatError(f"{where}: holds no metadata")
        versions = record.meta.versions
        if (versions.producer < 0 or versions.min_consumer > CHECKPOINT_VERSION
                or CHECKPOINT_VERSION in versions.bad_consumers):
            raise UnsupportedError(
                f"{where}: checkpoint format producer {versions.producer}, min consumer "
                f"{versions.min_consumer}, bad consumers {list(versions.bad_consumers)}; this "
                f"reader is version {CHECKPOINT_VERSION}")
        for meta in record.meta.tensor:
            name = meta.name
            at = f"{file}: V1 metadata of tensor {name!r}"
            dtype = dtypes.BY_ENUM.get(meta.type)
            if dtype is None:
                raise UnsupportedError(f"{at}: unknown DataType enum {meta.type}")
            shape = tuple(tensor_proto.shape_of(meta.shape, at))
            known = self._tensors.setdefault(name, (dtype, shape, {}))
            if known[:2] != (dtype, shape):   # TensorFlow refuses this too
                raise FormatError(f"{at}: {dtype.name}{list(shape)} here, but "
                                  f"{known[0].name}{list(known[1])} in another shard")
            for slice_proto in meta.slice:
                extents = _extents(slice_proto)
                if not _fits(extents, shape):
                    raise FormatError(f"{at}: slice {list(extents)} does not fit its shape "
                                      f"{list(shape)}")
                if extents in known[2]:
                    raise FormatError(f"{at}: slice {list(extents)} is listed twice")
                known[2][extents] = shard

    # --- entries -------------------------------------------------------------

    def _known(self, name):
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        known = self._tensors.get(name) if isinstance(name, str) else None
        if known is None:
            raise TensorNotFoundError(f"{self.prefix}: no tensor named {name!r}")
        return name, known

    def _record(self, name, extents, shard):
        """(raw record, where) of one stored slice; FormatError if it is missing."""
        table = self._tables[shard]
        key = slices.slice_key(name, extents)
        where = (f"{self._files[shard]}: tensor {name!r}, slice {list(extents)}, in the table "
                 f"block at offset {table.block_offset(key)}")
        raw = table.get(key)
        if raw is None:
            raise FormatError(f"{where}: the metadata lists this slice but the table has no "
                              "record for it")
        return raw, where

    def part_entry(self, name: str, extents: Any) -> Entry:
        """The Entry of one stored slice (its shape is the slice's)."""
        name, (dtype, shape, stored) = self._known(name)
        extents = tuple(map(tuple, extents))
        shard = stored.get(extents)
        if shard is None:
            raise FormatError(f"{self.prefix}: tensor {name!r} has no stored slice "
                              f"{list(extents)}")
        part_shape = _slice_shape(extents, shape)
        key = slices.slice_key(name, extents)
        if dtype.is_string:   # no size without reading them; the record's is the honest one
            size = len(self._record(name, extents, shard)[0])
        else:   # what the values take as an array (0 for dtypes with no array form)
            size = math.prod(part_shape) * (dtype.itemsize or 0)
        return _StoredSlice(extents, name, dtype, part_shape, shard,
                            self._tables[shard].block_offset(key) or 0, size, 0, ())

    def entry(self, name: str) -> Entry:
        name, (dtype, shape, stored) = self._known(name)
        entry = self._entries.get(name)
        if entry is None:
            parts = [self.part_entry(name, extents) for extents in stored]
            whole = len(parts) == 1 and slices.covers_all(next(iter(stored)), shape)
            first = parts[0] if parts else None
            entry = Entry(name, dtype, shape, first.shard_id if first else 0,
                          first.offset if first else 0, sum(p.size for p in parts), 0,
                          () if whole else tuple(stored))
            self._entries[name] = entry
        return entry

    def decoded_entries(self) -> list:
        """[(name, (DType, shape))] in key order, from the metadata alone."""
        return self._decoded

    def tensor_info(self) -> dict:
        """name -> (DType, shape) in key order; None for string tensors, whose
        `entry()` reads their records (and raises if one is missing)."""
        return {name: None if dtype.is_string else (dtype, shape)
                for name, (dtype, shape) in self._decoded}

    def index_size(self) -> int:
        return 0   # the metadata was read on open

    def listing(self) -> tuple:
        return ({name: list(shape) for name, (_, shape, _) in self._tensors.items()},
                {name: dtype for name, (dtype, _, _) in self._tensors.items()})

    def entries(self, checked: bool = True) -> dict:
        """name -> Entry of every tensor (`checked` is BundleReader's; V1
        entries are checked as the metadata is read)."""
        return {name: self.entry(name) for name, _ in self.decoded_entries()}

    # --- data ----------------------------------------------------------------

    def _values(self, name, dtype, extents, shard, shape):
        """The values of one stored slice as an array of the slice's shape."""
        from . import tensor_proto
        raw, where = self._record(name, extents, shard)
        record = _parse(raw, where)
        part_shape = _slice_shape(extents, shape)
        _check_representable(part_shape, dtype, where)
        count = math.prod(part_shape)
        field = tensor_proto.value_field(dtype)
        values = getattr(record.data.data, field)
        n = len(values) // 2 if field in ("scomplex_val", "dcomplex_val") else len(values)
        # TensorFlow's reader wants exactly one value per element: no fills, and
        # so nothing allocated that the record does not hold.
        if n != count or (n * 2 != len(values) and field in ("scomplex_val", "dcomplex_val")):
            raise FormatError(f"{where}: the record holds {len(values)} {field} values; "
                              f"{dtype.name}{list(part_shape)} needs {count}")
        if dtype.is_string:
            flat = np.empty(count, dtype=object)
            flat[:] = list(values)
        else:
            flat = tensor_proto.typed_values(values, field, n, count, dtype.as_numpy_dtype)
        return flat.reshape(part_shape)

    def read(self, name: str, copy: bool = False, verify: bool | None = None) -> np.ndarray:
        """The whole tensor `name` (block CRCs are checked as the reader was opened)."""
        return self.read_entry(self.entry(name), copy)

    def parts(self, entry: Entry) -> list:
        """[(bounds, part Entry)] of a partitioned tensor, checked to tile it."""
        name, (_, shape, stored) = self._known(entry.name)
        parts = [(slices.resolve(extents, shape), self.part_entry(name, extents))
                 for extents in stored]
        if not slices.tiles([b for b, _ in parts], shape):
            raise FormatError(f"{self.prefix}: tensor {name!r}: its stored slices do not tile "
                              f"its shape {list(shape)} exactly")
        return parts

    def raw(self, entry: Entry) -> tuple:
        raise UnsupportedError(f"{self.prefix}: tensor {entry.name!r}: a V1 checkpoint keeps "
                               "values in protos, not as stored bytes")

    def read_entry(self, entry: Entry, copy: bool = False, verify: bool = True) -> np.ndarray:
        name, (dtype, shape, stored) = self._known(entry.name)
        if isinstance(entry, _StoredSlice):   # one part, from parts()
            array = self._values(name, dtype, entry.extents, entry.shard_id, shape)
            return _finished(array, dtype, copy)
        where = f"{self.prefix}: tensor {name!r}"
        if dtype.as_numpy_dtype is None:
            raise UnsupportedError(f"{where} has dtype {dtype.name}, which tfformats cannot "
                                   "decode")
        _check_representable(shape, dtype, where)
        if len(stored) == 1 and slices.covers_all(next(iter(stored)), shape):
            # mypy miscounts a starred Any followed by a positional argument
            array = self._values(  # type: ignore[call-arg]
                name, dtype, *next(iter(stored.items())), shape)
        else:
            boxes = [slices.resolve(extents, shape) for extents in stored]
            if not slices.tiles(boxes, shape):
                raise FormatError(f"{where}: its stored slices do not tile its shape "
                                  f"{list(shape)} exactly")
            # Every part first: the file then backs each element of `array`.
            parts = [self._values(name, dtype, extents, shard, shape)
                     for extents, shard in stored.items()]
            array = np.empty(shape, dtype=dtype.as_numpy_dtype)
            for box, part in zip(boxes, parts):
                array[slices.index(box)] = part
        return _finished(array, dtype, copy)

    def read_region(self, name: str, index: Any) -> np.ndarray:
        """`tensor[index]`: V1 records hold whole slices, so the tensor is read whole."""
        array = self.read(name)
        return handed_out(array[index] if array.dtype == object else array[index].copy())

    def close(self) -> None:
        for table in self._tables:
            table.source.close()
        self._tables = []


def _finished(array, dtype, copy):
    """Read-only unless a copy was asked for, as BundleReader's arrays are."""
    if copy and not array.flags.writeable:   # values decoded straight from the file's bytes
        array = array.copy()
    return handed_out(array, copy)
