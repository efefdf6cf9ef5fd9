"""Editing a SavedModel and saving it: new variable values, renamed or
removed signatures, new tags; `save()` writes a complete directory that
TensorFlow loads, built under a temporary name and renamed into place."""

from __future__ import annotations

import os
from typing import Any, Iterable
from typing import TYPE_CHECKING

import numpy as np
from google.protobuf import text_format

from .. import chunked, fileio, fingerprint as _fingerprint, protos, slices
from ..errors import FormatError, UnsupportedError
from .spec import (FINGERPRINT, SAVED_MODEL_CPB, SAVED_MODEL_PB, SAVED_MODEL_PBTXT, SIGNATURES_CHILD, VARIABLES_DIR,
                   VARIABLES_PREFIX)

if TYPE_CHECKING:   # model.py imports this module
    from .model import MetaGraph, SavedModel, SavedModelVariables


class SavedModelEditing:
    """The editing half of `SavedModel` (a mixin: it edits the SavedModel's
    proto and records new values for its variables)."""

    if TYPE_CHECKING:   # what it edits: the members of SavedModel it uses
        path: str
        proto: Any
        format: str
        meta_graphs: list[MetaGraph]
        _raw: bytes | None
        _edits: dict[str, Any]

        @property
        def variables(self) -> SavedModelVariables: ...

    def set_variable(self, name: str, value: Any) -> None:
        """Replace a variable's value for `save()`. Same shape and dtype required.

        A numpy array must have the variable's dtype exactly; other values
        (lists, Python numbers) are converted to it.
        """
        variables = self.variables
        keys = variables.keys_for(name)
        if len(keys) > 1:
            variables.key(name)  # raises unless the keys hold one variable
        reader = variables.reader
        entry = reader.entry(keys[0])
        if entry.dtype.is_string or entry.dtype.as_numpy_dtype is None:
            raise UnsupportedError(f"{self.path}: variable {name!r} has dtype "
                                   f"{entry.dtype.name}; only numeric variables can be replaced")
        want = entry.dtype.as_numpy_dtype
        if isinstance(value, (np.ndarray, np.generic)):
            array = np.asarray(value)
            if array.dtype != want:
                raise FormatError(f"{self.path}: variable {name!r} is {entry.dtype.name}; "
                                  f"got an array of {array.dtype} (convert it explicitly)")
        else:
            array = np.asarray(value, dtype=want)
        if tuple(array.shape) != tuple(entry.shape):
            raise FormatError(f"{self.path}: variable {name!r} has shape {list(entry.shape)}; "
                              f"got shape {list(array.shape)}")
        array = np.array(array, copy=True)
        array.flags.writeable = False
        for key in keys:
            self._edits[key] = array

    def rename_signature(self, old: str, new: str) -> None:
        """Rename a signature key in every meta graph that has it (and, in TF2,
        the matching child of the object graph's `signatures` map)."""
        if old == new:
            return
        found = False
        for meta in self.meta_graphs:
            defs = meta.proto.signature_def
            if old not in defs:
                continue
            if new in defs:
                raise ValueError(f"{self.path}: signature {new!r} already exists")
            found = True
            defs[new].CopyFrom(defs[old])
            del defs[old]
            signature_map = _signature_map(meta.proto)
            if signature_map is not None:
                for ref in signature_map.children:
                    if ref.local_name == old:
                        ref.local_name = new
            meta.proto_changed()
        if not found:
            raise KeyError(f"{self.path}: no signature named {old!r}")

    def remove_signature(self, key: str) -> None:
        """Drop a signature from every meta graph that has it."""
        found = False
        for meta in self.meta_graphs:
            defs = meta.proto.signature_def
            if key not in defs:
                continue
            found = True
            del defs[key]
            signature_map = _signature_map(meta.proto)
            if signature_map is not None:
                kept = [ref for ref in signature_map.children if ref.local_name != key]
                del signature_map.children[:]
                signature_map.children.extend(kept)
            meta.proto_changed()
        if not found:
            raise KeyError(f"{self.path}: no signature named {key!r}")

    def set_tags(self, tags: Iterable[str], meta_graph: int = 0) -> None:
        """Replace the tags of `meta_graphs[meta_graph]`."""
        tags = [tags] if isinstance(tags, str) else list(tags)
        meta = self.meta_graphs[meta_graph]
        if any(m is not meta and m.tag_set == frozenset(tags) for m in self.meta_graphs):
            raise ValueError(f"{self.path}: another meta graph already has tags {sorted(tags)}")
        del meta.proto.meta_info_def.tags[:]
        meta.proto.meta_info_def.tags.extend(tags)

    def serialize(self) -> bytes:
        """saved_model.pb bytes of the current, possibly edited, proto.

        Unedited, these are the original file's bytes. Otherwise the
        serialization is deterministic and the same under every protobuf
        backend (C++ `SerializeToStringDeterministic` order).
        """
        if self._raw is not None and protos.SavedModel.FromString(self._raw) == self.proto:
            return self._raw
        return _fingerprint.canonical_serialize(self.proto)

    def save(self, export_dir: str | os.PathLike, overwrite: bool = False,
             fingerprint: Any = None) -> SavedModel:
        """Write the SavedModel with all edits to a new directory; returns it loaded.

        The directory is built next to `export_dir` under a temporary name and
        renamed into place, so readers never see a half-written model.
        `fingerprint`: None writes fingerprint.pb when the source had one,
        True always (binary .pb only), False never.
        """
        export_dir = fileio.abspath(export_dir)
        if fileio.exists(export_dir):
            if not overwrite:
                raise FileExistsError(f"{export_dir}: already exists (pass overwrite=True)")
        parent = os.path.dirname(export_dir)
        fileio.makedirs(parent)
        tmp = fileio.make_temp_dir(parent, f".{os.path.basename(export_dir)}.tmp-")
        try:
            self._copy_other_files(tmp)
            self._write_variables(tmp)
            if self.format == "cpb":
                chunked.write_chunked_saved_model(tmp, self.proto)
            elif self.format == "pbtxt":
                fileio.write_file(os.path.join(tmp, SAVED_MODEL_PBTXT),
                                  text_format.MessageToString(self.proto).encode("utf-8"))
            else:
                fileio.write_file(os.path.join(tmp, SAVED_MODEL_PB), self.serialize())
            had_fingerprint = fileio.exists(os.path.join(self.path, FINGERPRINT))
            if fingerprint is None:
                fingerprint = had_fingerprint
            if fingerprint and self.format in ("pb", "cpb"):
                _fingerprint.write_fingerprint(tmp)
            _replace_dir(tmp, export_dir)
        except BaseException:
            fileio.rmtree(tmp)
            raise
        from .model import load_saved_model   # the reading side builds on this module
        return load_saved_model(export_dir)

    def _copy_other_files(self, out):
        """Copy everything except what save() regenerates (assets, assets.extra,
        keras_metadata.pb, debug info, unknown files alike)."""
        skip = {SAVED_MODEL_CPB, SAVED_MODEL_PB, SAVED_MODEL_PBTXT, FINGERPRINT, VARIABLES_DIR}
        for name in fileio.listdir(self.path):
            if name not in skip:
                _copy_entry(os.path.join(self.path, name), os.path.join(out, name))

    def _write_variables(self, out):
        src = os.path.join(self.path, VARIABLES_DIR)
        if not fileio.isdir(src):
            return
        dst = os.path.join(out, VARIABLES_DIR)
        if not self._edits:
            fileio.copytree(src, dst)
            return
        from ..writer import BundleWriter  # the writer is only needed to edit

        reader = self.variables.reader
        bundle = reader.bundle
        # (stored entry, tensor entry, extents, bounds): a partitioned tensor
        # contributes one item per part, extents None marks a plain tensor.
        # Parts are checked to tile their tensor before anything is written.
        items = []
        for entry in bundle.entries().values():
            if entry.slices:
                items.extend((part, entry, extents, bounds) for extents, (bounds, part)
                             in zip(entry.slices, bundle.parts(entry)))
            else:
                items.append((entry, entry, None, None))
        fileio.makedirs(dst)
        for name in fileio.listdir(src):  # anything besides the bundle itself
            if not name.startswith("variables."):
                _copy_entry(os.path.join(src, name), os.path.join(dst, name))
        # Added in the original data-file order, as TF did when it saved; the
        # stored dtype is kept (an int8 array stays qint8 where it was), and a
        # partitioned tensor keeps its parts: the same keys TF wrote, and each
        # TF1 restore op (one per partition) still finds its slice stored whole.
        with BundleWriter(os.path.join(out, VARIABLES_PREFIX)) as writer:
            for stored, entry, extents, bounds in sorted(
                    items, key=lambda i: (i[0].shard_id, i[0].offset, i[0].name)):
                value = self._edits.get(entry.name)
                if extents is None:
                    if value is None:
                        value = reader.get_tensor(entry.name)
                    writer.add(entry.name, value, dtype=entry.dtype)
                    continue
                if value is None:
                    value = bundle.read_entry(stored, verify=bundle.verify)
                else:
                    value = value[slices.index(bounds)]
                writer.add_slice(entry.name, entry.shape, extents, value, dtype=entry.dtype)


def _signature_map(meta_proto):
    """The SavedObject holding the signatures as children (TF2), or None."""
    nodes = meta_proto.object_graph_def.nodes
    if not nodes:
        return None
    for ref in nodes[0].children:
        if ref.local_name == SIGNATURES_CHILD and 0 <= ref.node_id < len(nodes):
            return nodes[ref.node_id]
    return None


def _copy_entry(src, dst):
    try:
        _copy(src, dst)
    except OSError as exc:   # a symlink loop, a FIFO, a dangling link (copytree's Error too)
        raise FormatError(f"{src}: cannot be copied into the new SavedModel "
                          f"({str(exc)[:300]})") from None


def _copy(src, dst):
    """Copy a file or a whole directory."""
    (fileio.copytree if fileio.isdir(src) else fileio.copy)(src, dst)


def _replace_dir(tmp, export_dir):
    if not fileio.exists(export_dir):
        fileio.rename(tmp, export_dir)
        return
    old = fileio.make_temp_dir(os.path.dirname(export_dir),
                               f".{os.path.basename(export_dir)}.old-")
    fileio.rmdir(old)
    fileio.rename(export_dir, old)
    try:
        fileio.rename(tmp, export_dir)
    except BaseException:
        fileio.rename(old, export_dir)
        raise
    fileio.rmtree(old)
