"""Tensor bundles: `<prefix>.index` (a table of BundleEntryProto) + data shards.

`BundleReader` knows entries, shards, dtypes, checksums, string tensors and
partitioned tensors; it hands out numpy arrays that are read-only zero-copy
views over the memory-mapped data files unless a copy is asked for.
"""

from __future__ import annotations   # np.ndarray in annotations: numpy loads on first use

import bisect
import contextlib
import gc
import math
import os
import re
import sys
from collections import namedtuple
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator
from typing import Protocol, runtime_checkable

from . import commit, crc, dtypes, fileio, limits, slices, wire
from ._impl import hot
from .crc import crc32c_copy_parallel
from .errors import (ChecksumError, CheckpointNotFoundError, FormatError, TFFormatsError,
                     TensorNotFoundError, UnsupportedError)
from .sstable import Table

if TYPE_CHECKING:
    import numpy as np
else:   # imported on first use (tfformats/_lazy.py): listing an index needs no numpy
    from ._lazy import numpy as np

HEADER_KEY = b""
BUNDLE_VERSION = 1       # the newest bundle format this reader understands
BUNDLE_MIN_PRODUCER = 0

Entry = namedtuple("Entry", "name dtype shape shard_id offset size crc32c slices")
Entry.__doc__ = """One BundleEntryProto: where a tensor lives and what it is.

`shape` is a tuple of ints; `slices` is empty for an ordinary tensor and
holds one extent tuple per stored part for a partitioned one."""


@runtime_checkable
class TensorStore(Protocol):
    """What a checkpoint reader offers whatever the format: `BundleReader`
    (V2 tensor bundles) and `v1.V1Reader` (TF1 V1 tables) implement it, and
    `CheckpointReader.bundle` is one. Front ends use only these members.

    `raw_bytes` says whether values are stored as raw bytes (V2: `raw()`
    gives them, with a CRC-32C per tensor in the entry) or inside protos
    (V1: `raw()` raises UnsupportedError, and entries carry no CRC).
    `swapped` says whether stored bytes are in the other byte order than
    this host's (read() converts them).
    """

    prefix: str
    verify: bool
    num_shards: int
    raw_bytes: bool
    swapped: bool

    def decoded_entries(self) -> list:
        """[(name, decoded fields)] of every tensor in key order, unchecked."""

    def listing(self) -> tuple:
        """({name: list(shape)}, {name: DType}) of every tensor."""

    def tensor_info(self) -> dict:
        """name -> (DType, shape tuple) of every tensor in key order, or None
        for a tensor whose `entry()` must be asked (partitioned, or damaged:
        `entry()` raises what is wrong). One scan, kept; callers must not
        change it."""

    def index_size(self) -> int:
        """Bytes a scan for `tensor_info()` decodes (0: it reads nothing)."""

    def entries(self, checked: bool = True) -> dict:
        """name -> Entry of every tensor."""

    def entry(self, name: str) -> Entry: ...

    def part_entry(self, name: str, extents: Any) -> Entry:
        """The Entry of one stored part of a partitioned tensor."""

    def parts(self, entry: Entry) -> list:
        """[(bounds, part Entry)] of a partitioned tensor, checked to tile it."""

    def read(self, name: str, copy: bool = False, verify: bool | None = None) -> np.ndarray: ...

    def read_entry(self, entry: Entry, copy: bool = False, verify: bool = True) -> np.ndarray:
        """The values of an Entry: a whole tensor or one part from `parts()`."""

    def read_region(self, name: str, index: Any) -> np.ndarray: ...

    def raw(self, entry: Entry) -> tuple:
        """(source, memoryview of the stored bytes) of a tensor or part."""

    def close(self) -> None: ...


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Build many small containers without the collector rescanning them all.

    Listing 100,000 entries allocates enough tuples and lists to trigger
    dozens of collections that find nothing and cost more than the parsing.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# What follows the prefix in a data file's name.
DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


def data_filename(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def _key_name(key):
    return key.decode("utf-8", "surrogateescape")


class BundleReader:
    """Reads one tensor bundle given its prefix (`ckpt` for `ckpt.index`);
    a `TensorStore`."""

    raw_bytes = True
    _decoded: list | None
    _by_name: dict | None

    def __init__(self, prefix: str | os.PathLike, verify: bool = True,
                 opener: Callable[[str], fileio.Source] = fileio.open_file) -> None:
        self.prefix = str(prefix)
        self.verify = verify
        self._opener = opener
        self._decoded = None   # [(name, decode_entry tuple)], from a scan on demand
        self._info: dict | None = None   # tensor_info(), from a scan on demand
        self._by_name = None   # the same as a dict, built when a read needs it
        # shard id -> ([start], [end]) of the bytes writable views were handed
        # out for (read_private), sorted and disjoint.
        self._claims: dict[int, tuple[list, list]] = {}
        # Read-ahead of CRCs (`_crc_of`): the big tensors' names in key order
        # and their positions, once reads follow that order; the last big
        # tensor checked and how many in a row came in key order; and the
        # (shard, offset, size) whose CRC was begun ahead, with its Pieces.
        self._big: tuple[list, dict] | None = None
        self._last_big: str | None = None
        self._in_order = 0
        self._ahead: tuple | None = None
        # Every data file is opened now, not at the first read: the maps keep
        # the files that belong to this index even if the checkpoint is
        # rewritten at the same prefix later. A rewrite while this opens is
        # noticed (the index path names another file by then: writers replace
        # or move the index before any data file) and opening starts over.
        for _ in range(_OPEN_ATTEMPTS):
            index, aside = self._open_index()
            try:
                self._open(index, aside)
            except BaseException:
                self.close()
                raise
            if all(_unchanged(s) for s in [index, *self._shards.values()]):
                return
            self.close()
        raise FormatError(f"{self.prefix}: the checkpoint was replaced {_OPEN_ATTEMPTS} times "
                          "while it was being opened; is a writer rewriting it in a loop?")

    def _open_index(self):
        """The index source, and the commit id whose aside files hold the
        checkpoint when a crash interrupted a rewrite (else None)."""
        self._index_path = self.prefix + ".index"
        try:
            return self._opener(self._index_path), None
        except CheckpointNotFoundError:
            for commit_id, asides in commit.aside_files(self.prefix).items():
                if self._index_path in asides:
                    self._index_path = asides[self._index_path]
                    return self._opener(self._index_path), commit_id
            raise

    def _open(self, index, aside):
        self._shards = {}
        self._missing = {}   # shard id -> the error to raise when it is read
        self.table = Table(index, verify=self.verify)
        raw = self.table.get(HEADER_KEY)
        if raw is None:
            raise FormatError(f"{self._index_path}: no bundle header entry; not a tensor bundle")
        header = wire.parse_bundle_header(raw, f"{self._index_path}: bundle header")
        self._check_version(header)
        if header.num_shards < 1 or header.num_shards > 99999:
            raise FormatError(f"{self._index_path}: header claims {header.num_shards} data shards")
        self.num_shards = header.num_shards
        self.big_endian = header.endianness == wire.BIG_ENDIAN
        self.swapped = self.big_endian != (sys.byteorder == "big")
        for shard_id in range(self.num_shards):
            path = data_filename(self.prefix, shard_id, self.num_shards)
            try:
                self._shards[shard_id] = self._open_data(path, aside)
            except CheckpointNotFoundError:
                self._missing[shard_id] = CheckpointNotFoundError(
                    f"{path}: data shard {shard_id} of {self.num_shards} is missing")

    def _open_data(self, path, aside):
        """A data file; for an interrupted rewrite, its aside name while there
        is one (`tfformats.commit`: the old file is moved aside before a new
        one takes its name, so a file opened by its name is old only if no
        aside file exists after it was opened)."""
        if aside is None:
            return self._opener(path)
        aside_path = f"{path}.aside-{aside}"
        for name in (aside_path, path, aside_path):
            try:
                source = self._opener(name)
            except CheckpointNotFoundError:
                continue
            if name == aside_path or not fileio.exists(aside_path):
                return source
            source.close()
        raise CheckpointNotFoundError(f"{path}: no such file")

    def _check_version(self, header):
        if header.producer < BUNDLE_MIN_PRODUCER or header.min_consumer > BUNDLE_VERSION:
            raise UnsupportedError(
                f"{self._index_path}: bundle format producer {header.producer}, min consumer "
                f"{header.min_consumer}; this reader supports version {BUNDLE_VERSION}")
        if BUNDLE_VERSION in header.bad_consumers:
            raise UnsupportedError(f"{self._index_path}: bundle marks version "
                                   f"{BUNDLE_VERSION} readers as bad consumers")

    # --- entries -------------------------------------------------------------

    def _entry(self, name, decoded):
        """An Entry from decode_entry's tuple, checked before anything uses it."""
        enum, shape, shard, offset, size, crc, parts = decoded
        dtype = dtypes.BY_ENUM.get(enum) or dtypes.from_enum(enum, name)
        if (shape is None or (shape and min(shape) < 0) or offset < 0 or size < 0
                or (not parts and not 0 <= shard < self.num_shards)
                or (parts and not _parts_fit(parts, shape))):
            self._reject(name, decoded)
        if parts:
            limits.check("max_parts", len(parts),
                         f"{self._index_path}: partitioned tensor {name!r}: its parts")
        dtypes.check_numpy_shape(shape, dtype.itemsize, f"{self._index_path}: tensor {name!r}")
        return Entry(name, dtype, shape, shard, offset, size, crc, parts)

    def _reject(self, name, decoded):
        """Raise the FormatError that says what is wrong with an entry."""
        where = f"{self._index_path}: entry {name!r}"
        _, shape, shard, offset, size, _, parts = decoded
        if shape is None:
            raise FormatError(f"{where}: shape of unknown rank")
        if shape and min(shape) < 0:
            raise FormatError(f"{where}: negative dimension in shape {list(shape)}")
        if offset < 0 or size < 0:
            raise FormatError(f"{where}: negative offset {offset} or size {size}")
        if not parts:
            raise FormatError(f"{where}: shard id {shard} outside 0..{self.num_shards - 1}")
        bad = next(p for p in parts if not _parts_fit((p,), shape))
        raise FormatError(f"{where}: slice {bad} does not fit shape {list(shape)}")

    def entry_from_record(self, key: bytes, raw: bytes) -> Entry:
        """The checked Entry of one index record (`key`, `raw` from the index table)."""
        name = _key_name(key)
        return self._entry(name, hot.decode_entry(raw, f"{self._index_path}: entry {name!r}"))

    def decoded_entries(self) -> list:
        """[(name, decode_entry tuple)] of every tensor in key order, from one scan.

        Listing uses these as they are (a shape from a damaged index may be
        odd, but nothing is allocated from it); reads go through `entry()`,
        which checks every field first.
        """
        if self._decoded is None:
            decoded = []
            with gc_paused():
                for block, where in self.table.data_blocks():
                    decoded += hot.decode_entries(block, where)
                    _check_entry_count(len(decoded), self._index_path)
            self._decoded = decoded
        return self._decoded

    def tensor_info(self) -> dict:
        """name -> (DType, shape tuple), or None where `entry()` must be asked;
        see `TensorStore.tensor_info`. One batched pass over the index."""
        info = self._info
        if info is None:
            info = {}
            with gc_paused():
                for block, where in self.table.data_blocks():
                    hot.index_entries(block, where, info, dtypes.BY_ENUM, self.num_shards)
            self._info = info
        return info

    def index_size(self) -> int:
        return self.table.source.size()

    def shape_pairs(self) -> list[tuple[str, list[int]]]:
        """sorted((name, list(shape)) of every tensor), as `tf.train.list_variables`
        returns them, from one pass that builds nothing else; sorting only when
        a name is not ASCII (otherwise key order is already sorted order)."""
        pairs: list = []
        ordered = True
        with gc_paused():
            for block, where in self.table.data_blocks():
                ordered = hot.index_shapes(block, where, pairs) and ordered
            if not ordered:
                pairs.sort()
        return pairs

    def listing(self) -> tuple:
        """({name: list(shape)}, {name: DType}) of every tensor, from one pass over
        the index that builds nothing else (what TensorFlow's listing calls return)."""
        shapes: dict[str, list[int]] = {}
        kinds: dict[str, dtypes.DType] = {}
        try:
            with gc_paused():
                for block, where in self.table.data_blocks():
                    hot.index_listing(block, where, shapes, kinds, dtypes.BY_ENUM)
                    _check_entry_count(len(shapes), self._index_path)
        except KeyError:  # an unknown dtype enum: let from_enum name the tensor
            for name, decoded in self.decoded_entries():
                dtypes.from_enum(decoded[0], name)
            raise
        return shapes, kinds

    def entries(self, checked: bool = True) -> dict:
        """name -> Entry for every tensor, partitioned parts folded into their tensor.

        `checked=False` skips the checks `entry()` makes before a read, for
        listings that only report what the index says.
        """
        decoded = self.decoded_entries()
        with gc_paused():
            if checked:
                return {name: self._entry(name, d) for name, d in decoded}
            try:
                return hot.entry_map(decoded, Entry, dtypes.BY_ENUM)
            except KeyError:  # an unknown dtype: let the checked path name it
                return self.entries()

    def entry(self, name: str) -> Entry:
        """The Entry of `name`: from the scan if there was one, else one lookup."""
        if self._decoded is not None:
            if self._by_name is None:
                self._by_name = dict(self._decoded)
            decoded = self._by_name.get(name)
            if decoded is not None:
                return self._entry(name, decoded)
        else:
            key = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
            if key != HEADER_KEY and not slices.is_slice_key(key):
                raw = self.table.get(key)
                if raw is not None:
                    return self.entry_from_record(key, raw)
        raise TensorNotFoundError(f"{self._index_path}: no tensor named {name!r}")

    def part_entry(self, name: str, extents: Any) -> Entry:
        """The Entry of the stored part `extents` of partitioned tensor `name`."""
        key = slices.slice_key(name, extents)
        raw = self.table.get(key)
        if raw is None:
            raise FormatError(f"{self._index_path}: partitioned tensor {name!r} lacks its "
                              f"part {list(extents)}")
        return self.entry_from_record(key, raw)

    # --- data ----------------------------------------------------------------

    def shard(self, shard_id: int) -> fileio.Source:
        """The opened data file of shard `shard_id` (CheckpointNotFoundError if missing)."""
        source = self._shards.get(shard_id)
        if source is None:
            raise self._missing[shard_id]
        return source

    def raw(self, entry: Entry) -> tuple:
        """The stored bytes of an entry, bounds checked against its shard."""
        source = self.shard(entry.shard_id)
        if entry.offset + entry.size > source.size():
            raise FormatError(f"{source.path}: tensor {entry.name!r} needs bytes "
                              f"{entry.offset}..{entry.offset + entry.size} but the shard has "
                              f"{source.size()}")
        return source, source.view(entry.offset, entry.size)

    def _check_crc(self, entry, source, crc):
        if crc != hot.unmask_crc(entry.crc32c):
            raise ChecksumError(f"{source.path}: tensor {entry.name!r} at offset {entry.offset}: "
                                "data checksum mismatch")

    def read(self, name: str, copy: bool = False, verify: bool | None = None) -> np.ndarray:
        """The whole tensor `name` as a numpy array (bytes objects for strings)."""
        entry = self.entry(name)
        return self.read_entry(entry, copy, self.verify if verify is None else verify)

    def read_entry(self, entry: Entry, copy: bool = False, verify: bool = True) -> np.ndarray:
        """The tensor of `entry`: read-only unless `copy` (see `handed_out`)."""
        return handed_out(self._read_entry(entry, copy, verify), copy)

    def read_private(self, name: str, verify: bool | None = None) -> np.ndarray:
        """The tensor `name` as a private, writable array, without copying it
        where it can: a view of this reader's own copy-on-write map of the
        data file (fileio.LocalFile.private_view), whose pages the kernel
        copies only when they are written, so writes reach neither the file
        nor any other reader. A copy (as `read(name, copy=True)`) where there
        is no such map (a remote or unmapped file), where the values are not
        the stored bytes (strings, parts, the other byte order), and where
        the bytes overlap those of an earlier private view (two arrays must
        not share memory).

        Only for a reader nobody else reads from (`load_tensors` opens its
        own): its read-only arrays view the same map and would see writes."""
        entry = self.entry(name)
        return handed_out(self._read_entry(entry, _PRIVATE, self.verify if verify is None
                                           else verify), True)

    def _read_entry(self, entry: Entry, copy: bool | str, verify: bool) -> np.ndarray:
        # copy: False (a read-only view), True (a copy) or _PRIVATE (read_private)
        if entry.slices:
            return self._assemble(entry, verify)
        dtype = entry.dtype
        count = math.prod(entry.shape)
        if dtype.is_string:
            return self._read_strings(entry, count, verify)
        if dtype.as_numpy_dtype is None:
            raise UnsupportedError(f"{self._index_path}: tensor {entry.name!r} has dtype "
                                   f"{dtype.name}, which tfformats cannot decode")
        if count * dtype.itemsize != entry.size:
            raise FormatError(f"{self._index_path}: tensor {entry.name!r} of shape "
                              f"{list(entry.shape)} and dtype {dtype.name} needs "
                              f"{count * dtype.itemsize} bytes but its entry says {entry.size}")
        source, view = self.raw(entry)
        writable = (self._claim(source, entry, np.dtype(dtype.as_numpy_dtype).alignment)
                    if copy is _PRIVATE else None)
        if writable is not None:   # the array is the map's own pages: nothing to copy
            copy, view = False, writable
        elif verify and copy and not self.swapped:
            # A verified copy: copied and checked in one pass, on all cores.
            out = np.empty(entry.shape, dtype=dtype.as_numpy_dtype)
            crc = crc32c_copy_parallel(view, out.reshape(-1).view(np.uint8))
            self._check_crc(entry, source, crc)
            return out
        if verify:
            self._check_crc(entry, source, self._crc_of(entry, view))
        array = np.frombuffer(view, dtype=dtype.as_numpy_dtype).reshape(entry.shape)
        if self.swapped:
            return _byteswapped(array)
        return array.copy() if copy else array

    def _crc_of(self, entry, view):
        """The CRC-32C of a tensor's stored bytes `view`, on all cores. While
        big tensors are read in key order (`for name in reader`), the next
        one's CRC is begun on the pool's threads before this one's returns,
        as the kernel reads files ahead: they check it while the caller uses
        this tensor, and its read takes what is left (crc.Pieces)."""
        ahead = self._ahead
        where = (entry.shard_id, entry.offset, entry.size)
        if ahead is not None and ahead[0] == where:
            self._ahead = None
            pieces = ahead[1]
        else:
            pieces = crc.begun(view)
            if pieces is None:   # small, or one core: no read-ahead either
                return hot.crc32c(view)
            if ahead is not None:   # a big read elsewhere: what was begun ahead is not wanted
                self._ahead = None
                ahead[1].stop()
        self._read_ahead(entry.name)
        return pieces.result()

    def _read_ahead(self, name):
        """Begin the CRC of the big tensor after `name` in key order, once the
        last few big reads came in that order and the reader was iterated
        (nothing is begun for reads in any other order)."""
        last, self._last_big = self._last_big, name
        self._in_order = self._in_order + 1 if last is not None and name > last else 0
        if self._in_order < _IN_ORDER_BEFORE_READ_AHEAD:
            return
        if self._big is None:
            # The order is that of tensor_info(), scanned for iterating over
            # the reader; without it, no scan is made just for reading ahead.
            info = self._info
            if info is None:
                return
            names = [n for n, i in info.items()
                     if i is not None and math.prod(i[1]) * (i[0].itemsize or 0) >=
                     crc.PARALLEL_MIN_BYTES]
            self._big = (names, {n: i for i, n in enumerate(names)})
        try:   # speculative: anything wrong is for the read itself to report
            names, positions = self._big
            at = positions.get(name)
            if at is None or at + 1 >= len(names):
                return
            entry = self.entry(names[at + 1])   # checked as a read checks it
            if (entry.dtype.is_string or entry.dtype.as_numpy_dtype is None
                    or entry.size > _READ_AHEAD_MAX_BYTES):
                return
            _, view = self.raw(entry)
        except TFFormatsError:
            return
        pieces = crc.begun(view)
        if pieces is not None:
            self._ahead = ((entry.shard_id, entry.offset, entry.size), pieces)

    def _claim(self, source, entry, alignment):
        """A writable view of the stored bytes of `entry` in the private map
        of `source`, or None: where the source has none, where the bytes are
        byte-swapped into a copy anyway, where they are not aligned for the
        dtype (maps start on a page; a copy is aligned, as consumers of
        writable arrays such as torch expect), or where they overlap bytes
        an earlier view was handed out for (a hostile index may point two
        tensors at the same bytes; one name may be asked for twice)."""
        private_view = getattr(source, "private_view", None)
        if private_view is None or self.swapped or entry.offset % alignment:
            return None
        start, end = entry.offset, entry.offset + entry.size
        starts, ends = self._claims.setdefault(entry.shard_id, ([], []))
        at = bisect.bisect_right(starts, start)
        if (at and ends[at - 1] > start) or (at < len(starts) and starts[at] < end):
            return None
        view = private_view(entry.offset, entry.size)
        if view is not None and end > start:
            starts.insert(at, start)
            ends.insert(at, end)
        return view

    def _read_strings(self, entry, count, verify):
        source, view = self.raw(entry)
        values, crc = hot.decode_strings(
            view, count, self.big_endian, verify,
            f"{source.path}: tensor {entry.name!r} at offset {entry.offset}")
        if verify:
            self._check_crc(entry, source, crc)
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(entry.shape)

    def parts(self, entry: Entry) -> list:
        """[(bounds, part Entry)] of a partitioned tensor, checked to tile it exactly.

        Gaps would hand out uninitialised memory and overlaps would hide them,
        so the parts must be disjoint and add up to the whole tensor.
        """
        dtype = entry.dtype
        if dtype.as_numpy_dtype is None:
            raise UnsupportedError(f"{self._index_path}: partitioned tensor {entry.name!r} "
                                   f"has dtype {dtype.name}, which cannot be assembled")
        parts = []
        for extents in entry.slices:
            part = self.part_entry(entry.name, extents)
            bounds = slices.resolve(extents, entry.shape)
            want = tuple(b - a for a, b in bounds)
            if part.shape != want or part.dtype != dtype:
                raise FormatError(f"{self._index_path}: part {list(extents)} of {entry.name!r} "
                                  f"is {part.dtype.name}{list(part.shape)}, expected "
                                  f"{dtype.name}{list(want)}")
            parts.append((bounds, part))
        if not slices.tiles([b for b, _ in parts], entry.shape):
            raise FormatError(f"{self._index_path}: the parts of {entry.name!r} do not tile "
                              f"its shape {list(entry.shape)} exactly")
        # Parts may all point at the same bytes, so tiling alone does not
        # bound what assembling them allocates; the data files do.
        # (A string takes at least one stored byte, its length.)
        for _, part in parts:
            self.shard(part.shard_id)   # a missing shard is the error to report
        nbytes = math.prod(entry.shape) * (dtype.itemsize or 1)
        stored = sum(source.size() for source in self._shards.values())
        limits.check("max_tensor_file_ratio", nbytes / max(stored, 1),
                     f"{self._index_path}: partitioned tensor {entry.name!r} of {nbytes} bytes "
                     f"from {stored} bytes of data files, bytes per stored byte")
        return parts

    def _assemble(self, entry, verify):
        """Build a partitioned tensor whole from its stored parts."""
        parts = self.parts(entry)   # checked before anything is allocated for them
        out = np.empty(entry.shape, dtype=entry.dtype.as_numpy_dtype)
        for bounds, part in parts:
            out[slices.index(bounds)] = self.read_entry(part, verify=verify)
        return out

    def read_region(self, name: str, index: Any) -> np.ndarray:
        """`tensor[index]` reading only the bytes it needs (no CRC check)."""
        entry = self.entry(name)
        if entry.dtype.is_string and not entry.slices:   # strings are not fixed-width
            return self.read_entry(entry, verify=self.verify)[index]
        if not entry.slices:
            return handed_out(self.read_entry(entry, verify=False)[index].copy())
        return handed_out(self._region_of_parts(entry, index))

    def _region_of_parts(self, entry, index):
        ranges, squeeze = _normalize_index(index, entry.shape)
        if ranges is None:  # fancy indexing: assemble, then index
            return self._assemble(entry, self.verify)[index]
        parts = self.parts(entry)
        out = np.empty(tuple(len(r) for r in ranges), dtype=entry.dtype.as_numpy_dtype)
        for bounds, part in parts:
            src, dst = [], []
            for r, (a, b) in zip(ranges, bounds):
                # Positions k of r with a <= r[k] < b (r has a positive step).
                k0 = max(0, -(-(a - r.start) // r.step))
                k1 = min(len(r), max(0, -(-(b - r.start) // r.step)))
                if k0 >= k1:
                    break
                src.append(slice(r[k0] - a, r[k1 - 1] - a + 1, r.step))
                dst.append(slice(k0, k1))
            else:
                out[tuple(dst)] = self.read_entry(part, verify=False)[tuple(src)]
        return out.reshape([len(r) for i, r in enumerate(ranges) if i not in squeeze])

    def prefetch(self, entries: Iterable[Entry]) -> None:
        """Let data files that can (remote ones) fetch the stored bytes of
        `entries` together, concurrently and coalesced, for the reads that
        follow; the caller bounds how many bytes one call asks for."""
        wanted: dict = {}
        for entry in entries:
            source = self._shards.get(entry.shard_id)
            if not entry.slices and entry.size and hasattr(source, "prefetch"):
                wanted.setdefault(entry.shard_id, []).append((entry.offset, entry.size))
        for shard_id, ranges in wanted.items():
            self._shards[shard_id].prefetch(ranges)

    def close(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:   # its helpers stop after their piece in flight
            ahead[1].stop()
        table = getattr(self, "table", None)
        if table is not None:
            table.source.close()
        for source in self._shards.values():
            source.close()
        self._shards.clear()


# `_read_entry`'s `copy` for `read_private`: a writable view of the private map.
_PRIVATE = "private"

# Big tensors read in key order in a row before the next one's CRC is begun ahead.
_IN_ORDER_BEFORE_READ_AHEAD = 2
# The most bytes checked ahead: what a caller that stops reading wastes at most
# (CRC work, and reading them from disk when the file is not cached).
_READ_AHEAD_MAX_BYTES = 64 << 20

# Opening starts over when the checkpoint was replaced meanwhile, this many times.
_OPEN_ATTEMPTS = 3


def _check_entry_count(count, path):
    limits.check("max_index_entries", count, f"{path}: entries of the index")


def _unchanged(source):
    """Whether a source still is the file at its path (sources that cannot
    tell, such as remote ones, are taken as unchanged)."""
    unchanged = getattr(source, "unchanged", None)
    return unchanged is None or unchanged()


def _parts_fit(parts, shape):
    """Whether every slice lies inside `shape` (length -1: the whole dimension)."""
    return all(len(part) == len(shape) and all(
        s >= 0 and (n < 0 or s + n <= d) for (s, n), d in zip(part, shape)) for part in parts)


def _normalize_index(index, shape):
    """Basic indexing -> (per-dimension ranges with step > 0, dims to drop).

    Returns (None, None) for what this cannot express (arrays, negative steps,
    newaxis, bools, which numpy reads as a new axis and not as 0 or 1) so the
    caller falls back to assembling the tensor.
    """
    if not isinstance(index, tuple):
        index = (index,)
    # `is`, not ==: comparing an index array with Ellipsis would be elementwise.
    ellipses = [at for at, i in enumerate(index) if i is Ellipsis]
    if len(ellipses) > 1:
        return None, None
    if ellipses:
        at = ellipses[0]
        index = index[:at] + (slice(None),) * (len(shape) - len(index) + 1) + index[at + 1:]
    if len(index) > len(shape):
        raise IndexError(f"too many indices for a tensor of rank {len(shape)}")
    index = index + (slice(None),) * (len(shape) - len(index))
    ranges, squeeze = [], set()
    for dim, (i, n) in enumerate(zip(index, shape)):
        if isinstance(i, slice):
            r = range(*i.indices(n))
            if r.step < 0:
                return None, None
        elif isinstance(i, (int, np.integer)) and not isinstance(i, bool):
            j = int(i) + n if i < 0 else int(i)
            if not 0 <= j < n:
                raise IndexError(f"index {int(i)} is out of bounds for dimension {dim} of size {n}")
            r = range(j, j + 1)
            squeeze.add(dim)
        else:
            return None, None
        ranges.append(r)
    return ranges, squeeze


def handed_out(array: Any, copy: bool = False) -> Any:
    """`array` as readers hand it out: read-only (numpy's writeable flag off)
    unless it is a copy the caller asked for, whether it is a view of a data
    file or was built in memory (assembled parts, byte-swapped, strings), so
    every tensor behaves the same. The memory under a view is still safe to
    write: data files are mapped copy-on-write (fileio.LocalFile)."""
    if not copy and isinstance(array, np.ndarray) and array.flags.writeable:
        array.flags.writeable = False
    return array


def _byteswapped(array):
    """A native-order copy of an array read from a bundle of the other byte order."""
    dtype = array.dtype
    if dtype.itemsize == 1:
        return array.copy()
    lanes = 2 if dtype.kind == "c" else 1
    unit = np.dtype(f"u{dtype.itemsize // lanes}")
    return array.view(unit).byteswap().view(dtype)


def variant_crc(buf: Any, count: int, where: str) -> int:
    """The unmasked CRC-32C TensorFlow stores for a DT_VARIANT tensor's bytes.

    Each of the `count` elements is a varint length, a serialized
    VariantTensorDataProto and the masked running CRC so far; the running CRC
    covers each length as 8 little-endian bytes, the proto bytes and the
    checksums already written (docs/formats.md, "Data shards"). Element checksums are checked
    on the way. The elements themselves are not decoded: like TensorFlow's
    reader, tfformats hands out no variant values.
    """
    crc, pos, end = 0, 0, len(buf)
    for i in range(count):
        n, at = hot.decode_varint(buf, pos, where)
        if n > end - at or end - at - n < 4:
            raise FormatError(f"{where}: variant element {i} at offset {pos} runs past the "
                              f"tensor's {end} bytes")
        crc = hot.crc32c(buf[at:at + n], hot.crc32c(n.to_bytes(8, "little"), crc))
        stored = bytes(buf[at + n:at + n + 4])
        if int.from_bytes(stored, "little") != hot.mask_crc(crc):
            raise ChecksumError(f"{where}: checksum of variant element {i} does not match "
                                f"at offset {at + n}")
        crc = hot.crc32c(stored, crc)
        pos = at + n + 4
    if pos != end:
        raise FormatError(f"{where}: {end - pos} bytes after the last of {count} variant elements")
    return crc
