"""Validation: every check tfformats can make on a checkpoint (V2 bundle or
TF1 V1 file) or a SavedModel directory, each problem reported as a Finding.

`validate(path)` never raises for what it finds in the files: a damaged
block, a missing shard, a check that itself failed unexpectedly all become
findings, and it goes on with the next check, so one run reports everything
(what a CI gate needs). It reads every stored byte once, CRCs included.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import List, Optional
from typing import Any, Callable

from . import fileio, fingerprint, protos
from ._impl import hot
from .bundle import HEADER_KEY, BundleReader, data_filename, variant_crc
from .checkpoint import (OBJECT_GRAPH_KEY, is_graph_path, is_saved_model_dir, is_v1_prefix,
                         resolve_prefix, saveable_keys)
from .errors import CheckpointNotFoundError, ChecksumError, Finding, TFFormatsError
from .graph import SAVED_MODEL_FILES, parse_message, saved_model_file
from .progress import bar
from .saved_model import load_saved_model
from .slices import is_slice_key
from .v1 import V1Reader

# What `expect=` may ask for, and how messages name each kind.
KINDS = {"checkpoint": "a checkpoint", "saved_model": "a SavedModel",
         "keras": "a Keras weights file", "graph": "a graph file"}


@dataclass
class Report:
    """What `validate` found at one path. `kind` is "checkpoint", "saved_model",
    "keras", "graph" or "unknown"; `tensors` and `bytes` count what was checked, `files` the
    proto files parsed; `findings` is empty when everything checked out."""

    path: str
    kind: str = "unknown"
    tensors: int = 0
    bytes: int = 0
    files: int = 0
    findings: List[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, check: str, problem: str | Exception, file: str | None = None,
            tensor: str | None = None, offset: int | None = None) -> None:
        """Record a finding; `problem` is a message or the exception that tells it."""
        if isinstance(problem, Exception) and not isinstance(problem, (TFFormatsError, OSError)):
            problem = f"unexpected {type(problem).__name__}: {problem}"
        file = os.fspath(file) if file is not None else None
        message = " ".join(str(problem).split())
        if file:  # the file has its own field; don't repeat it in the message
            for prefix in (file + ": ", os.path.basename(file) + ": "):
                if message.startswith(prefix):
                    message = message[len(prefix):]
                    break
        self.findings.append(Finding(check, message, file, tensor, offset))


@fileio.with_storage
def validate(path: str | os.PathLike, expect: Optional[str] = None,
             progress: bool | Callable[..., Any] = False) -> Report:
    """Check the checkpoint or SavedModel at `path` (see the module docstring).

    `expect` ("checkpoint" or "saved_model") makes any other kind of artifact
    a finding. A `saved_model.cpb`/`.pb`/`.pbtxt` path stands for its directory.
    `progress` is False, True or a callable (see tfformats.progress).
    """
    if expect is not None and expect not in KINDS:
        raise ValueError(f"expect must be one of {', '.join(KINDS)}, not {expect!r}")
    path = os.fspath(path)
    report = Report(path)
    try:
        _validate(report, path, expect, progress)
    except Exception as e:  # a check that broke is a finding too: validate never aborts
        report.add("error", e, file=path)
    return report


def _validate(report, path, expect, progress):
    directory = path
    if os.path.basename(path) in SAVED_MODEL_FILES and \
            fileio.isfile(path):
        directory = os.path.dirname(path) or "."
    if fileio.isdir(directory) and (is_saved_model_dir(directory)
                                    or fileio.isdir(os.path.join(directory, "variables"))):
        report.kind = "saved_model"
    elif _is_keras_file(path):
        report.kind = "keras"
    elif is_graph_path(path) and fileio.isfile(path):
        report.kind = "graph"
    else:
        try:
            prefix = resolve_prefix(path)
        except TFFormatsError as e:
            report.add("path", _path_problem(path, e), file=path)
            return
        report.kind = "checkpoint"
    if expect is not None and report.kind != expect:
        report.add("kind", f"expected {KINDS[expect]}, found {KINDS[report.kind]}", file=path)
        return
    if report.kind == "saved_model":
        _saved_model(report, directory, progress)
    elif report.kind in ("keras", "graph"):
        _weights_file(report, path, progress)
    elif is_v1_prefix(prefix):
        _v1_checkpoint(report, prefix)
    else:
        _bundle(report, prefix, progress)


def _is_keras_file(path):
    from .keras import is_keras_path
    return is_keras_path(path) and fileio.isfile(path)


def _weights_file(report, path, progress):
    """A Keras file (tfformats.keras: the archive and HDF5 structure open, and
    every dataset reads within the file's bytes) or a graph file
    (tfformats.graph: the protos parse, and every constant decodes)."""
    from .checkpoint import open_checkpoint
    try:
        reader = open_checkpoint(path)
    except TFFormatsError as e:
        report.add(report.kind, e, file=path)
        return
    with reader:
        report.tensors = len(reader)
        sizes = {}
        for name in reader:
            try:
                sizes[name] = reader.nbytes(name)
            except TFFormatsError as e:
                report.add("tensor", e, file=path, tensor=name)
        with bar(progress, sum(sizes.values()), f"validating {os.path.basename(path)}") as shown:
            for name, size in sizes.items():
                try:
                    reader.get_tensor(name, copy=True)
                    report.bytes += size
                except TFFormatsError as e:
                    report.add("tensor", e, file=path, tensor=name)
                shown.update(size)


def _path_problem(path, error):
    """What is wrong with a path that names no checkpoint or SavedModel."""
    directory, name = os.path.split(path)
    if not fileio.exists(path) and not any(n.startswith(name + ".") for n in _listdir(directory or ".")):
        return "does not exist"   # neither a file or directory nor the prefix of any
    if fileio.isfile(path):
        lower = path.lower()
        for ending, what in ((".safetensors", "a safetensors file"), (".npz", "a NumPy .npz file"),
                             (".meta", "a MetaGraphDef (.meta) file"), (".pb", "a protobuf file"),
                             (".h5", "an HDF5 file"), (".keras", "a Keras archive")):
            if lower.endswith(ending):
                return f"{what}, not a checkpoint or SavedModel"
        return "a file, but not a checkpoint or SavedModel"
    return error


# --- V2 bundles -------------------------------------------------------------------

def _bundle(report, prefix, progress):
    """Index blocks, entries, shards, bounds and CRCs; every problem, not the first."""
    index_path = prefix + ".index"
    try:
        bundle = BundleReader(prefix, verify=False)
    except Exception as e:
        report.add("index", e, file=index_path)
        return
    try:
        entries = _index_entries(report, bundle, index_path)
        report.tensors += len(entries)
        pieces = _pieces(report, bundle, entries, index_path)
        missing = _missing_shards(report, bundle, pieces)
        total = sum(p.size for _, p in pieces if p.shard_id not in missing)
        with bar(progress, total, f"validating {os.path.basename(prefix)}") as shown:
            for name, piece in pieces:
                if piece.shard_id in missing:
                    continue
                _check_piece(report, bundle, name, piece)
                report.bytes += piece.size
                shown.update(piece.size)
        if OBJECT_GRAPH_KEY in entries:
            _object_graph(report, bundle, entries, index_path)
    finally:
        bundle.close()


def _index_entries(report, bundle, index_path):
    """name -> Entry of every entry that decodes, from every readable index block."""
    try:
        bundle.table.check_index_block()
    except TFFormatsError as e:
        report.add("index-crc", e, file=index_path)
    entries = {}
    for offset, block, problem in bundle.table.checked_blocks():
        if isinstance(problem, ChecksumError):
            report.add("index-crc", "index data block checksum mismatch", file=index_path, offset=offset)
        elif problem is not None:
            report.add("index", problem, file=index_path, offset=offset)
        if block is None:
            continue
        try:
            items = hot.block_entries(block, f"{index_path}: data block at offset {offset}")
        except TFFormatsError as e:
            report.add("index", e, file=index_path, offset=offset)
            continue
        for key, raw in items:
            if key == HEADER_KEY or is_slice_key(key):
                continue
            try:
                entry = bundle.entry_from_record(key, raw)
            except Exception as e:
                report.add("entry", e, file=index_path, tensor=key.decode("utf-8", "surrogateescape"))
                continue
            entries[entry.name] = entry
    return entries


def _pieces(report, bundle, entries, index_path):
    """[(tensor name, Entry)] of what is stored: plain entries and every part of a partitioned one."""
    pieces = []
    for name in sorted(entries):
        entry = entries[name]
        if not entry.slices:
            pieces.append((name, entry))
            continue
        for extents in entry.slices:
            try:
                pieces.append((name, bundle.part_entry(name, extents)))
            except Exception as e:
                report.add("entry", e, file=index_path, tensor=name)
    return pieces


def _missing_shards(report, bundle, pieces):
    """{shard: path} of the data shards that are not there, each reported once."""
    missing = {}
    for shard in sorted({p.shard_id for _, p in pieces}):
        try:
            bundle.shard(shard)
        except CheckpointNotFoundError:
            missing[shard] = data_filename(bundle.prefix, shard, bundle.num_shards)
    for shard, path in missing.items():
        count = sum(1 for _, p in pieces if p.shard_id == shard)
        report.add("shard", f"data shard {shard} of {bundle.num_shards} is missing "
                   f"({count} tensors stored there)", file=path)
    # Every shard the header promises should exist, even when no tensor lives there.
    for shard in range(bundle.num_shards):
        path = data_filename(bundle.prefix, shard, bundle.num_shards)
        if shard not in missing and not fileio.exists(path):
            report.add("shard", f"data shard {shard} of {bundle.num_shards} is missing", file=path)
    return missing


def _check_piece(report, bundle, name, entry):
    """Bounds and CRC of one stored piece, decoded the way a read decodes it."""
    path = data_filename(bundle.prefix, entry.shard_id, bundle.num_shards)
    try:
        source = bundle.shard(entry.shard_id)
    except Exception as e:
        report.add("shard", e, file=path, tensor=name)
        return
    end = entry.offset + entry.size
    if end > source.size():
        report.add("bounds", f"needs bytes {entry.offset}..{end} but the shard has {source.size()} "
                   "(truncated?)", file=path, tensor=name, offset=entry.offset)
        return
    try:
        if entry.dtype.name == "variant":
            raw = source.view(entry.offset, entry.size)
            where = f"{path}: tensor {name!r}"
            if variant_crc(raw, math.prod(entry.shape), where) != hot.unmask_crc(entry.crc32c):
                raise ChecksumError("data checksum mismatch")
        elif entry.dtype.as_numpy_dtype is None:  # resource: CRC of the raw bytes
            if hot.crc32c(source.view(entry.offset, entry.size)) != hot.unmask_crc(entry.crc32c):
                raise ChecksumError("data checksum mismatch")
        else:
            bundle.read_entry(entry, verify=True)
    except ChecksumError:
        report.add("crc", "data checksum mismatch", file=path, tensor=name, offset=entry.offset)
    except Exception as e:
        report.add("tensor", e, file=path, tensor=name, offset=entry.offset)


def _object_graph(report, bundle, entries, index_path):
    try:
        raw = bundle.read_entry(entries[OBJECT_GRAPH_KEY], verify=False).item()
        graph = protos.TrackableObjectGraph.FromString(raw)
    except Exception as e:  # any failure to decode is a finding, not a crash
        report.add("object-graph", f"object graph does not parse ({e})", file=index_path,
                   tensor=OBJECT_GRAPH_KEY)
        return
    n = len(graph.nodes)
    names = sorted(entries)

    def add(message):
        report.add("object-graph", message, file=index_path, tensor=OBJECT_GRAPH_KEY)

    for node_id, node in enumerate(graph.nodes):
        for child in node.children:
            if not 0 <= child.node_id < n:
                add(f"node {node_id} child {child.local_name!r} points to node {child.node_id}; "
                    f"the graph has {n} nodes")
        for ref in node.slot_variables:
            for what, ref_id in (("variable", ref.original_variable_node_id),
                                 ("slot variable", ref.slot_variable_node_id)):
                if not 0 <= ref_id < n:
                    add(f"node {node_id} slot {ref.slot_name!r} names {what} node {ref_id}; "
                        f"the graph has {n} nodes")
        for attr in node.attributes:
            if attr.checkpoint_key not in entries and not saveable_keys(attr.checkpoint_key, names):
                add(f"node {node_id} attribute {attr.name!r} names checkpoint key "
                    f"{attr.checkpoint_key!r}, which is not in the bundle")


# --- TF1 V1 checkpoints -----------------------------------------------------------

def _v1_checkpoint(report, prefix):
    """A V1 checkpoint has no tensor checksums: check every table block's CRC
    and that every tensor decodes from its records, by reading each one."""
    try:
        reader = V1Reader(prefix)
    except Exception as e:
        report.add("index-crc" if isinstance(e, ChecksumError) else "index", e, file=prefix)
        return
    try:
        for name, (dtype, _) in reader.decoded_entries():
            if dtype.as_numpy_dtype is None:   # no array form (variant): nothing to decode
                continue
            try:
                value = reader.read(name)
            except Exception as e:
                report.add("crc" if isinstance(e, ChecksumError) else "tensor", e, file=prefix, tensor=name)
                continue
            report.tensors += 1
            report.bytes += value.nbytes
    finally:
        reader.close()


# --- SavedModels ------------------------------------------------------------------

def _saved_model(report, directory, progress):
    model_file = saved_model_file(directory)   # the file TensorFlow would read
    saved_model = None
    if model_file is None:
        report.add("proto", "no saved_model.cpb, saved_model.pb or saved_model.pbtxt",
                   file=directory)
    else:
        try:
            saved_model = load_saved_model(directory)
        except Exception as e:
            report.add("proto", e, file=model_file)
    report.files += saved_model is not None
    for name, cls in (("keras_metadata.pb", protos.SavedMetadata),
                      (fingerprint.FINGERPRINT_FILENAME, protos.FingerprintDef)):
        path = os.path.join(directory, name)
        if fileio.exists(path):
            try:
                parse_message(cls, fileio.read_file(path), path)
                report.files += 1
            except Exception as e:
                report.add("proto", e, file=path)
    if saved_model is not None:
        # Dangling references, missing assets and variables, the fingerprint.
        try:
            for f in saved_model.findings():
                report.add(f.check, f.message, file=f.file or model_file)
        except Exception as e:
            report.add("proto", e, file=model_file)
        finally:
            saved_model.close()
    prefix = os.path.join(directory, "variables", "variables")
    if fileio.exists(prefix + ".index"):
        _bundle(report, prefix, progress)
    elif any(n.startswith("variables.data-") for n in _listdir(os.path.join(directory, "variables"))):
        report.add("index", "variables data shards without variables.index", file=prefix + ".index")


def _listdir(path):
    try:
        return fileio.listdir(path)
    except OSError:
        return []
