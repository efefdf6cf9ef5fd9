"""Replacing the files of a checkpoint at a prefix so that a crash at any
instant leaves the old checkpoint or the new one whole (docs/durability.md).

A bundle is several files with fixed names (`<prefix>.index` and its data
shards), so no single rename can replace it. The index is the commit point:

1. the new files are complete and (with `sync`) fsynced under temporary names;
2. the old index, then the old data files, are renamed aside to
   `<name>.aside-<commit id>` (then the directory is fsynced);
3. the new data files are renamed to their final names;
4. the new index is renamed to `<prefix>.index`: the commit (directory fsynced);
5. the aside files are deleted, the old index first.

Until step 4 the prefix holds no index beside new data: TensorFlow finds no
checkpoint at all (never old index + new data), and tfformats' reader reads
the old one from the aside names (`BundleReader`). After a crash the next
write at that prefix calls `recover`, which puts the old files back if no new
index landed and deletes the aside files if one did. One writer per prefix at
a time: a write deletes the temporary files of earlier writers at its prefix.
"""

import os
import re
import secrets

from . import fileio
from .fileio import remove_if_present

_DATA = r"\.data-\d{5}-of-\d{5}"


def _names_at(prefix):
    """Paths in prefix's directory whose names start with its base name."""
    directory, base = os.path.split(prefix)
    try:
        names = fileio.listdir(directory or ".")
    except OSError:
        names = []
    return [os.path.join(directory, n) for n in names if n.startswith(base)]


def data_files(prefix):
    """Every data shard file at `prefix`, whatever its shard count."""
    return sorted(p for p in _names_at(prefix) if re.fullmatch(re.escape(prefix) + _DATA, p))


def aside_files(prefix):
    """{commit id: {original name: aside name}} of the commits at `prefix`
    that a crash interrupted (or that are deleting their aside files now)."""
    found = {}
    pattern = re.escape(prefix) + rf"(\.index|{_DATA})\.aside-([0-9a-f]{{16}})"
    for path in _names_at(prefix):
        match = re.fullmatch(pattern, path)
        if match:
            found.setdefault(match.group(2), {})[prefix + match.group(1)] = path
    return found


def has_index(prefix):
    """Whether a reader finds a bundle at `prefix`: its index, or the aside
    index of the old checkpoint that an interrupted rewrite keeps."""
    return fileio.isfile(prefix + ".index") or any(
        prefix + ".index" in asides for asides in aside_files(prefix).values())


def recover(prefix, sync=True):
    """Finish what a crashed commit at `prefix` left: the old files go back when
    no new index landed, the aside files go when one did."""
    index = prefix + ".index"
    for _, asides in sorted(aside_files(prefix).items()):
        old_index = asides.pop(index, None)
        if not fileio.exists(index):
            # Restored last: while an aside index exists, the files it
            # describes are all there, aside or in place (a reader relies on it).
            for original, aside in sorted(asides.items()):
                fileio.replace(aside, original)
            if old_index is not None:
                fileio.replace(old_index, index)
            if sync:
                fileio.fsync_dir(os.path.dirname(fileio.abspath(prefix)))
        else:
            try:
                for aside in [old_index] * (old_index is not None) + sorted(asides.values()):
                    remove_if_present(aside)
            except OSError:   # the new checkpoint is in place; the next write retries
                pass


def remove_stale_temps(prefix):
    """Delete temporary files that killed writers left at `prefix`."""
    pattern = re.escape(prefix) + r"(\.index|\.data-[^/\\]*)\.tempstate\d+"
    for path in _names_at(prefix):
        if re.fullmatch(pattern, path):
            remove_if_present(path)


def commit(prefix, data, index_temp, sync):
    """Put a complete bundle in place at `prefix` by the protocol above.

    `data` is [(temporary name, final name)] of the data files, `index_temp`
    the temporary name of the new index; both already written (and fsynced
    when `sync`). On an exception the old checkpoint is put back (or, past the
    commit point, the new one kept) before it propagates.
    """
    directory = os.path.dirname(fileio.abspath(prefix))
    index = prefix + ".index"
    recover(prefix, sync)
    commit_id = secrets.token_hex(8)
    placed = []
    try:
        for path in ([index] if fileio.exists(index) else []) + data_files(prefix):
            fileio.replace(path, f"{path}.aside-{commit_id}")
        if sync:
            fileio.fsync_dir(directory)
        for temp, final in data:
            fileio.replace(temp, final)
            placed.append(final)
        fileio.replace(index_temp, index)
        placed = []
        if sync:
            fileio.fsync_dir(directory)
    except BaseException:
        for final in placed:   # new data files no aside file will replace
            remove_if_present(final)
        raise
    finally:
        recover(prefix, sync)   # rolls back before the commit point, cleans up after it
    remove_stale_temps(prefix)
