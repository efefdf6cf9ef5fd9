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
"""

import math

import numpy as np

from . import fileio
from ._impl import hot
from .checkpoint import CheckpointReader
from .crc import crc32c_combine
from .errors import ChecksumError, FormatError

# The default size of a chunk of a split tensor.
CHUNK_BYTES = 64 << 20


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

    def __init__(self, path, verify, storage):
        self.storage = storage
        with fileio.storage(*storage), CheckpointReader(path, verify=verify) as reader:
            self.prefix = reader.prefix
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
                    self.tensors[name] = (entry, bundle.shard(entry.shard_id).path)
                else:
                    self.tensors[name] = (None, reader.shape(name), reader.dtype(name))


def _rows_per_chunk(shape, itemsize, chunk_bytes):
    row = math.prod(shape[1:]) * itemsize if shape else itemsize
    return max(1, chunk_bytes // max(row, 1)), row


@fileio.with_storage
def to_dask(path, names=None, *, chunk_bytes=CHUNK_BYTES, verify=True):
    """{name: dask array} for the tensors of the checkpoint at `path` (any path
    form, local or a URL), or only for `names`."""
    dask = _import_dask()
    da = dask.array
    storage = fileio.current_storage()
    plan = _Plan(path, verify, storage)
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
        file = info[1]
        npd = np.dtype(entry.dtype.as_numpy_dtype)
        shape = tuple(entry.shape)
        rows, row_bytes = _rows_per_chunk(shape, npd.itemsize, chunk_bytes)
        if not shape or shape[0] <= rows:   # one chunk: its task checks the CRC
            crc = hot.unmask_crc(entry.crc32c) if verify else None
            task = dask.delayed(_chunk, pure=True)(storage, file, entry.offset, entry.size, npd,
                                                   shape, plan.swapped, crc, name)
            out[name] = da.from_delayed(task, shape=shape, dtype=npd)
            continue
        blocks = []
        for start in range(0, shape[0], rows):
            count = min(rows, shape[0] - start)
            task = dask.delayed(_chunk, pure=True)(
                storage, file, entry.offset + start * row_bytes, count * row_bytes, npd,
                (count, *shape[1:]), plan.swapped, None, name)
            blocks.append(da.from_delayed(task, shape=(count, *shape[1:]), dtype=npd))
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
    plan = _Plan(path, True, storage)
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


__all__ = ["CHUNK_BYTES", "checksums", "to_dask"]
