"""Checkpoints as Dask arrays, for work bigger than one machine (`pip install tfformats[dask]`).

`to_dask(path)` opens the checkpoint's index once (locally or through
fsspec, `storage_options=` / `filesystem=` as everywhere in tfformats) and
returns {name: dask.array.Array}. A numeric tensor is split into chunks of
whole rows; each chunk's task reads only its own byte range of its data
file (`fileio.read_at`: one ranged request on an object store), so workers
of a `dask.distributed` cluster never download whole files. Strings,
partitioned tensors and V1 checkpoints become one task per tensor, which
opens the checkpoint and reads that tensor (only its parts' bytes).

CRC-32C: a tensor in one chunk is checked by its task. A tensor split over
several chunks is checked by `checksums(...)`/`verify(...)` below, which
combine the chunks' CRCs (crc32c_combine) without gathering the data; the
chunks themselves cannot check a CRC that covers the whole tensor.

`to_safetensors(src, dst)` and `to_checkpoint(src, dst_prefix)` convert a
checkpoint with those tasks: workers read, decode and CRC the chunks, and
the caller writes them in order through tfformats.convert's own writers
(same layout, same bytes as `checkpoint_to_safetensors` and
`checkpoint_to_checkpoint`), keeping at most `window_bytes` of computed
chunks in flight (`_Window`).
"""

from __future__ import annotations

import collections
import math
import os
import sys
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from . import convert, fileio
from ._impl import hot
from .checkpoint import CheckpointReader, tensor_nbytes
from .crc import crc32c_combine
from .errors import ChecksumError, FormatError
from .progress import bar
from .writer import BundleWriter, stored_pieces

# The default size of a chunk of a split tensor.
CHUNK_BYTES = 64 << 20
# The default bytes of computed chunks a conversion keeps in flight.
WINDOW_BYTES = 256 << 20


def _import_dask():
    try:
        import dask
        import dask.array
    except ImportError:
        raise ImportError("tfformats.dask needs Dask: `pip install tfformats[dask]`") from None
    return dask


def _read_range(storage, path, offset, n):
    """Exactly bytes offset..offset+n of `path` (a data file)."""
    with fileio.storage(*storage):
        data = fileio.read_at(path, offset, n)
    if len(data) != n:
        raise FormatError(f"{path}: {n} bytes at offset {offset} requested, {len(data)} "
                          "came back (truncated file?)")
    return data


def _chunk(storage, path, offset, n, dtype, shape, swapped, crc, name):
    data = _read_range(storage, path, offset, n)
    if crc is not None and hot.crc32c(data) != crc:
        raise ChecksumError(f"{path}: tensor {name!r} at offset {offset}: data checksum mismatch")
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array.byteswap() if swapped else array


def _chunk_and_crc(storage, path, offset, n, dtype, shape, swapped):
    """A chunk as `_chunk` reads it, with the CRC-32C of its stored bytes (the
    caller combines a tensor's chunk CRCs and checks them against the index)."""
    data = _read_range(storage, path, offset, n)
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return (array.byteswap() if swapped else array), hot.crc32c(data)


def _whole(storage, prefix, name, verify):
    with fileio.storage(*storage), CheckpointReader(prefix, verify=verify) as reader:
        return reader.get_tensor(name, copy=True)


def _chunk_crc(storage, path, offset, n):
    return hot.crc32c(_read_range(storage, path, offset, n)), n


def _combined(name, path, offset, want, *parts):
    crc = parts[0][0]
    for part, n in parts[1:]:
        crc = crc32c_combine(crc, part, n)
    if crc != want:
        raise ChecksumError(f"{path}: tensor {name!r} at offset {offset}: data checksum mismatch")
    return crc


class _Plan:
    """What `to_dask` and `checksums` need from the index: per tensor, the data
    file, offset, size and CRC of a plainly stored numeric tensor, or None."""

    def __init__(self, reader, storage):
        self.storage = storage
        # Absolute: the tasks may run in processes with another working directory.
        self.prefix = fileio.abspath(reader.prefix)
        bundle = reader.bundle
        self.swapped = getattr(bundle, "swapped", False)
        self.tensors = {}
        entries = bundle.entries() if getattr(bundle, "raw_bytes", False) else {}
        for name in reader:
            entry = entries.get(name)
            plain = (entry is not None and not entry.slices and not entry.dtype.is_string
                     and entry.dtype.itemsize is not None and entry.dtype.as_numpy_dtype is not None
                     and entry.size == math.prod(entry.shape) * entry.dtype.itemsize)
            if plain:
                self.tensors[name] = (entry, fileio.abspath(bundle.shard(entry.shard_id).path))
            else:
                self.tensors[name] = (None, reader.shape(name), reader.dtype(name))

    def chunks(self, name, chunk_bytes):
        """(data file, [(offset, size, shape)] of whole rows) of a plain tensor."""
        entry, file = self.tensors[name]
        npd = np.dtype(entry.dtype.as_numpy_dtype)
        shape = tuple(entry.shape)
        rows, row_bytes = _rows_per_chunk(shape, npd.itemsize, chunk_bytes)
        if not shape or shape[0] <= rows:
            return file, [(entry.offset, entry.size, shape)]
        return file, [(entry.offset + start * row_bytes, count * row_bytes, (count, *shape[1:]))
                      for start in range(0, shape[0], rows)
                      for count in [min(rows, shape[0] - start)]]


def _rows_per_chunk(shape, itemsize, chunk_bytes):
    row = math.prod(shape[1:]) * itemsize if shape else itemsize
    return max(1, chunk_bytes // max(row, 1)), row


def _open_plan(path, verify, storage):
    with fileio.storage(*storage), CheckpointReader(path, verify=verify) as reader:
        return _Plan(reader, storage)


@fileio.with_storage
def to_dask(path, names=None, *, chunk_bytes=CHUNK_BYTES, verify=True):
    """{name: dask array} for the tensors of the checkpoint at `path` (any path
    form, local or a URL), or only for `names`."""
    dask = _import_dask()
    da = dask.array
    storage = fileio.current_storage()
    plan = _open_plan(path, verify, storage)
    out = {}
    for name in (names if names is not None else plan.tensors):
        info = plan.tensors[name]
        entry = info[0]
        if entry is None:   # strings, partitioned tensors, V1: one task reads the tensor
            shape, dtype = info[1], info[2]
            task = dask.delayed(_whole, pure=True)(storage, plan.prefix, name, verify)
            npd = object if dtype.is_string else dtype.as_numpy_dtype
            out[name] = da.from_delayed(task, shape=tuple(shape), dtype=npd)
            continue
        npd = np.dtype(entry.dtype.as_numpy_dtype)
        file, chunks = plan.chunks(name, chunk_bytes)
        if len(chunks) == 1:   # one chunk: its task checks the CRC
            crc = hot.unmask_crc(entry.crc32c) if verify else None
            task = dask.delayed(_chunk, pure=True)(storage, file, entry.offset, entry.size, npd,
                                                   tuple(entry.shape), plan.swapped, crc, name)
            out[name] = da.from_delayed(task, shape=tuple(entry.shape), dtype=npd)
            continue
        blocks = [da.from_delayed(dask.delayed(_chunk, pure=True)(
                      storage, file, offset, n, npd, shape, plan.swapped, None, name),
                      shape=shape, dtype=npd)
                  for offset, n, shape in chunks]
        out[name] = da.concatenate(blocks, axis=0)
    return out


@fileio.with_storage
def checksums(path, *, chunk_bytes=CHUNK_BYTES):
    """{name: dask.delayed CRC-32C} of every plainly stored numeric tensor,
    combined from per-chunk CRCs; computing one raises ChecksumError when it
    differs from the index (so `dask.compute(*checksums(p).values())` verifies
    a checkpoint on a cluster without moving its data)."""
    dask = _import_dask()
    storage = fileio.current_storage()
    plan = _open_plan(path, True, storage)
    out = {}
    for name, info in plan.tensors.items():
        entry = info[0]
        if entry is None:
            continue
        file = info[1]
        parts = [dask.delayed(_chunk_crc, pure=True)(storage, file, start, min(chunk_bytes, end - start))
                 for end in [entry.offset + entry.size]
                 for start in range(entry.offset, end, chunk_bytes)] or \
            [dask.delayed(_chunk_crc, pure=True)(storage, file, entry.offset, 0)]
        out[name] = dask.delayed(_combined, pure=True)(name, file, entry.offset,
                                                       hot.unmask_crc(entry.crc32c), *parts)
    return out


# --- conversion on a cluster ------------------------------------------------------

def _reading(reader, src, progress, keys):
    """A progress bar over the bytes of tensors `keys`, as the local converters count them."""
    total = sum(tensor_nbytes(reader, name) for name in keys)
    return bar(progress, total, f"converting {os.path.basename(os.fspath(src))}")


def _current_client():
    """The dask.distributed Client in use, or None (then dask's default
    scheduler computes). distributed is not imported here: a caller with a
    Client has imported it already."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        return distributed.Client.current()
    except ValueError:   # no client started
        return None


class _Window:
    """Computes a stream of jobs (delayed value, bytes it holds) and hands the
    results out in order, with at most `limit` bytes of jobs submitted and not
    yet handed out (at least one job, so a bigger one still goes through).
    The caller's memory is thus bounded by the window plus the result it is
    writing, whatever the size of the checkpoint.

    On a distributed Client the jobs are futures computed on the workers and
    the window slides: a job is submitted as soon as an earlier one's bytes
    are handed out. With dask's default scheduler the window is computed as
    one batch (one `dask.compute`), then handed out, then the next."""

    def __init__(self, limit: int, client: Any = None) -> None:
        self.limit = max(1, limit)
        self.client = client
        self.peak = 0   # the most bytes in flight at once (what the tests check)

    def results(self, jobs: Iterable[tuple[Any, int]]) -> Iterator[Any]:
        jobs = iter(jobs)
        pending: collections.deque = collections.deque()   # (future or value, bytes)
        in_flight = 0
        job = next(jobs, None)
        try:
            while job is not None or pending:
                batch: list[tuple[Any, int]] = []
                if self.client is not None or not pending:
                    while job is not None and (not (pending or batch)
                                               or in_flight + job[1] <= self.limit):
                        batch.append(job)
                        in_flight += job[1]
                        job = next(jobs, None)
                if batch:
                    self.peak = max(self.peak, in_flight)
                    pending.extend(zip(self._start([task for task, _ in batch]),
                                       [n for _, n in batch]))
                started, n = pending.popleft()
                value = started.result() if self.client is not None else started
                del started   # a finished future's data is released on the workers
                in_flight -= n
                yield value
        finally:
            if self.client is not None and pending:   # an error: stop the rest
                self.client.cancel([started for started, _ in pending])

    def _start(self, tasks):
        if self.client is not None:
            return self.client.compute(tasks)
        return _import_dask().compute(*tasks)


class _Conversion:
    """The Dask side of a conversion: for each tensor to write, in order, its
    values computed by tasks (a plain tensor chunk by chunk, CRCs combined
    and checked here; others whole, checked by their task)."""

    def __init__(self, reader, chunk_bytes, window_bytes, verify):
        self.dask = _import_dask()
        self.plan = _Plan(reader, fileio.current_storage())
        self.chunk_bytes = chunk_bytes
        self.verify = verify
        self.window = _Window(window_bytes, _current_client())
        self._results = None

    def _jobs(self, name):
        plan, delayed = self.plan, self.dask.delayed
        entry = plan.tensors[name][0]
        if entry is None:
            shape, dtype = plan.tensors[name][1:]
            size = math.prod(shape) * (dtype.itemsize or 1)   # strings: a guess
            return [(delayed(_whole, pure=True)(plan.storage, plan.prefix, name, self.verify),
                     size)]
        npd = np.dtype(entry.dtype.as_numpy_dtype)
        file, chunks = plan.chunks(name, self.chunk_bytes)
        return [(delayed(_chunk_and_crc, pure=True)(plan.storage, file, offset, n, npd, shape,
                                                    plan.swapped), n)
                for offset, n, shape in chunks]

    def values(self, names, shown):
        """(name, whole value or None, iterator of the chunks or None) per name;
        each tensor's chunks must be consumed before the next tensor's. The
        progress bar `shown` counts the numeric bytes handed out."""
        jobs = [self._jobs(name) for name in names]
        self._results = results = self.window.results(job for tensor in jobs for job in tensor)
        for name, tensor in zip(names, jobs):
            if self.plan.tensors[name][0] is None:
                yield name, next(results), None
                shape, dtype = self.plan.tensors[name][1:]
                shown.update(math.prod(shape) * (dtype.itemsize or 0))
            else:
                yield name, None, self._checked(name, results, len(tensor), shown)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        """A conversion that failed cancels the jobs still running, now."""
        if self._results is not None:
            self._results.close()

    def _checked(self, name, results, count, shown):
        entry, file = self.plan.tensors[name]
        crc, size = 0, 0
        for _ in range(count):
            array, part = next(results)
            crc = crc32c_combine(crc, part, array.nbytes) if size else part
            size += array.nbytes
            yield array
            shown.update(array.nbytes)
        if self.verify and crc != hot.unmask_crc(entry.crc32c):
            raise ChecksumError(f"{file}: tensor {name!r} at offset {entry.offset}: "
                                "data checksum mismatch")


@fileio.with_storage
def to_safetensors(src: str | os.PathLike, dst: str | os.PathLike, *,
                   names: str | Iterable[str] | None = None, skip_unsupported: bool = False,
                   chunk_bytes: int = CHUNK_BYTES, window_bytes: int = WINDOW_BYTES,
                   verify: bool = True, progress: bool | Callable[..., Any] = False) -> list[str]:
    """`tfformats.checkpoint_to_safetensors` (same arguments, same file) with
    the reading, decoding and CRC checking done by Dask tasks: on the workers
    of the current dask.distributed Client, else by dask's default scheduler.
    Tensors are read in chunks of up to `chunk_bytes` (whole rows); at most
    `window_bytes` of them (or one bigger chunk) are in flight while `dst`,
    local or a URL, is written in order. A damaged tensor raises ChecksumError
    and leaves no `dst`. `progress` (tfformats/progress.py) counts the tensor
    bytes written. Returns the names skipped."""
    skipped: list[str] = []
    with CheckpointReader(src, verify=verify) as reader:
        header, keys = convert.safetensors_layout(reader, convert.selected_keys(reader, names),
                                                  src, skip_unsupported, skipped)
        dtypes = {name: reader.dtype(name) for name in keys}
        with _Conversion(reader, chunk_bytes, window_bytes, verify) as work, \
                _reading(reader, src, progress, keys) as shown:
            pieces = (piece for name, value, chunks in work.values(keys, shown)
                      for array in (chunks if value is None else [value])
                      for piece in stored_pieces(array, dtypes[name]))
            convert.write_safetensors(dst, header, pieces)
    return skipped


@fileio.with_storage
def to_checkpoint(src: str | os.PathLike, dst_prefix: str | os.PathLike, *,
                  names: str | Iterable[str] | None = None, skip_unsupported: bool = False,
                  chunk_bytes: int = CHUNK_BYTES, window_bytes: int = WINDOW_BYTES,
                  verify: bool = True, progress: bool | Callable[..., Any] = False) -> list[str]:
    """`tfformats.checkpoint_to_checkpoint` (same arguments, the same bundle
    byte for byte) computed as `to_safetensors` is: Dask tasks read, decode
    and CRC the chunks, the caller streams them in order into a BundleWriter
    at `dst_prefix` (local or a URL), which puts the files in place only once
    all are written. Returns the names skipped."""
    skipped: list[str] = []
    with CheckpointReader(src, verify=verify) as reader:
        keys = [name for name in convert.selected_keys(reader, names)
                if convert.copyable(name, reader.entry(name), skip_unsupported, skipped)]
        with _Conversion(reader, chunk_bytes, window_bytes, verify) as work, \
                BundleWriter(dst_prefix) as writer, _reading(reader, src, progress, keys) as shown:
            for name, value, chunks in work.values(keys, shown):
                entry = reader.entry(name)
                if value is None:
                    writer.add_chunks(name, entry.dtype, entry.shape, chunks)
                else:
                    convert.put_tensor(writer, name, entry, value)
            if names is not None:
                convert.add_selection_graph(writer, reader, keys)
    return skipped


__all__ = ["CHUNK_BYTES", "WINDOW_BYTES", "checksums", "to_checkpoint", "to_dask",
           "to_safetensors"]
