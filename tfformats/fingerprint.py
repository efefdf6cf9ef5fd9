"""SavedModel fingerprints (`fingerprint.pb`), bit-exact with TensorFlow 2.21.

TensorFlow's C++ `CreateFingerprintDef(export_dir)` re-reads `saved_model.pb`
and hashes parts of it with FarmHash Fingerprint64 (docs/formats.md, "Fingerprint").
`compute_fingerprint` does the same without TensorFlow; `check_fingerprint`
compares a stored `fingerprint.pb` with a fresh computation.

The hashes are taken over *C++ deterministic serializations*, and Python's
default protobuf backend (upb) does not reproduce those: its deterministic
mode emits integer-keyed map entries in descending key order, and orders a
string key before the keys it is a prefix of ("Tidx" before "T"). C++ sorts
integers ascending and strings bytewise. `canonical_serialize` therefore lets
protobuf serialize (fast, in C) and then puts map entries back into C++ order,
visiting only the message types that can contain a map. The result is the same
under both the upb and the pure-Python backends.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from google.protobuf import descriptor as _descriptor

from . import chunked, fileio, protos
from ._impl import hot
from .errors import CheckpointNotFoundError, FormatError
from .fileio import read_file, write_atomically
from .graph import (SAVED_MODEL_CPB, SAVED_MODEL_FILES, SAVED_MODEL_PBTXT, parse_message,
                    read_saved_model_file, saved_model_file)

FINGERPRINT_FILENAME = "fingerprint.pb"
CHECKPOINT_INDEX = os.path.join("variables", "variables.index")

# TF 2.21 writes producer 4 into fingerprint.pb (observed; its source still
# names 1 for the .pb path; docs/formats.md, "Fingerprint").
FINGERPRINT_PRODUCER = 4
# ...and producer 5, with every hash 0, for a directory with no saved_model.pb
# (e.g. only saved_model.pbtxt); observed in TF 2.21.
TEXT_FINGERPRINT_PRODUCER = 5

HASH_FIELDS = ("saved_model_checksum", "graph_def_program_hash", "signature_def_hash",
               "saved_object_graph_hash", "checkpoint_hash")

_FD = _descriptor.FieldDescriptor
_DT_STRING = 7
_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")


# --- canonical (C++ deterministic) serialization ------------------------------

# How C++ orders each kind of map key (the codes of the map-order hot path).
_KEY_KIND = {
    _FD.TYPE_STRING: hot.KEY_BYTES, _FD.TYPE_BYTES: hot.KEY_BYTES,
    _FD.TYPE_UINT32: hot.KEY_UNSIGNED, _FD.TYPE_UINT64: hot.KEY_UNSIGNED,
    _FD.TYPE_FIXED32: hot.KEY_UNSIGNED, _FD.TYPE_FIXED64: hot.KEY_UNSIGNED,
    _FD.TYPE_BOOL: hot.KEY_UNSIGNED,
    _FD.TYPE_INT32: hot.KEY_SIGNED32, _FD.TYPE_SFIXED32: hot.KEY_SIGNED32,
    _FD.TYPE_INT64: hot.KEY_SIGNED64, _FD.TYPE_SFIXED64: hot.KEY_SIGNED64,
    _FD.TYPE_SINT32: hot.KEY_ZIGZAG, _FD.TYPE_SINT64: hot.KEY_ZIGZAG,
}


_plans: dict = {}  # message descriptor -> plan dict, or None when nothing to fix


def _is_map(field):
    return (field.type == _FD.TYPE_MESSAGE and field.message_type is not None
            and field.message_type.GetOptions().map_entry)


def _plan(desc):
    """{length-delimited tag: action} for the fields of `desc` that need fixing.

    A message type needs fixing when it has a map field, or a message field
    whose type does (transitively; recursive types settle by fixpoint).
    """
    try:
        return _plans[desc]
    except KeyError:
        pass
    reachable, todo = [], [desc]
    seen = {desc}
    while todo:
        d = todo.pop()
        reachable.append(d)
        for f in d.fields:
            if f.type == _FD.TYPE_MESSAGE and f.message_type not in seen:
                seen.add(f.message_type)
                todo.append(f.message_type)
    needs = {d: any(_is_map(f) for f in d.fields) for d in reachable}
    changed = True
    while changed:
        changed = False
        for d in reachable:
            if not needs[d] and any(f.type == _FD.TYPE_MESSAGE and needs[f.message_type]
                                    for f in d.fields):
                needs[d] = changed = True
    plans = {d: {} for d in reachable if needs[d]}
    for d, plan in plans.items():
        for f in d.fields:
            if f.type != _FD.TYPE_MESSAGE:
                continue
            tag = (f.number << 3) | 2
            if _is_map(f):
                entry = f.message_type
                key = entry.fields_by_number[1]
                value_plan = plans.get(entry.fields_by_number[2].message_type)
                plan[tag] = (hot.MAP_ACTION, _KEY_KIND[key.type], value_plan)
            elif needs[f.message_type]:
                plan[tag] = (hot.MESSAGE_ACTION, plans[f.message_type])
    for d in reachable:
        _plans.setdefault(d, plans.get(d))
    return _plans[desc]


def canonical_serialize(message: Any) -> bytes:
    """Serialize `message` exactly as C++ `SerializeToStringDeterministic` does.

    Fields come in field-number order and map entries sorted by key (integers
    numerically, strings bytewise), under either Python protobuf backend.
    """
    data = message.SerializeToString(deterministic=True)
    plan = _plan(message.DESCRIPTOR)
    if plan is None or not data:
        return data
    buf = bytearray(data)
    try:
        hot.reorder_map_entries(buf, plan)
    except (ValueError, IndexError) as e:  # only if protobuf itself misbehaved
        raise FormatError(f"cannot reorder the map entries of a "
                          f"{message.DESCRIPTOR.full_name}: {e}") from None
    return bytes(buf)


# --- regularization and the five hashes -----------------------------------------

def _simple_atoi(text):
    """absl::SimpleAtoi for int64: optional blanks and sign, decimal digits."""
    s = text.strip(" \t\n\v\f\r")
    digits = s[1:] if s[:1] in ("+", "-") else s
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    value = int(s)
    return value if -(1 << 63) <= value < (1 << 63) else None


def _suffix_uid(name):
    """The integer after the last '_' of a function name, or None."""
    return _simple_atoi(name.rsplit("_", 1)[-1])


def _strip_uid(name, uid):
    suffix = str(uid)
    return name[:-len(suffix)] if name.endswith(suffix) else name


def regularize_graph_def(graph_def: Any) -> Any:
    """A regularized copy of `graph_def`, as TF does before hashing the program.

    Call ops lose the uid digits of their function name (the trailing '_'
    stays), their `config_proto` attr becomes an empty string, string `Const`
    nodes lose their value, and `library` and `versions` are emptied but stay
    present. The argument is not modified.
    """
    out = type(graph_def)()
    for field, value in graph_def.ListFields():
        if field.name in ("library", "versions"):
            continue
        if protos.is_repeated(field):
            getattr(out, field.name).extend(value)
        elif field.type == _FD.TYPE_MESSAGE:
            getattr(out, field.name).CopyFrom(value)
        else:
            setattr(out, field.name, value)
    if _has_unknown_fields(graph_def):  # rare; keep them exactly
        out.CopyFrom(graph_def)
        out.ClearField("library")
        out.ClearField("versions")
    out.library.SetInParent()
    out.versions.SetInParent()
    for node in out.node:
        attr = node.attr
        if node.op in _CALL_OPS:
            if "f" in attr:
                func = attr["f"].func
                uid = _suffix_uid(func.name)
                if uid is not None:
                    func.name = _strip_uid(func.name, uid)
            if "config_proto" in attr:
                attr["config_proto"].s = b""
        if node.op == "Const" and "dtype" in attr and attr["dtype"].type == _DT_STRING:
            if "value" in attr:
                attr["value"].Clear()
    return out


def _has_unknown_fields(msg):
    try:
        from google.protobuf.unknown_fields import UnknownFieldSet
    except ImportError:  # protobuf < 4.24
        return bool(msg.UnknownFields())
    return len(UnknownFieldSet(msg)) > 0


def _fp(data):
    return hot.fingerprint64(data)


def _signature_def_hash(signature_defs):
    h = 0
    for key in sorted(signature_defs, key=lambda k: k.encode("utf-8")):
        h = hot.fingerprint_cat64(h, _fp(key.encode("utf-8")))
        h = hot.fingerprint_cat64(h, _fp(canonical_serialize(signature_defs[key])))
    return h


def _saved_object_graph_hash(object_graph):
    functions = object_graph.concrete_functions
    by_uid = {}
    for name in sorted(functions):
        uid = _suffix_uid(name)
        if uid is None:
            raise FormatError(
                f"concrete function name {name!r} does not end in '_<integer>'; "
                "TensorFlow cannot fingerprint this SavedModel either")
        by_uid.setdefault(uid, name)
    h = 0
    for uid in sorted(by_uid):
        name = by_uid[uid]
        h = hot.fingerprint_cat64(h, _fp(_strip_uid(name, uid).encode("utf-8")))
        h = hot.fingerprint_cat64(h, _fp(canonical_serialize(functions[name])))
    return h


def fingerprint_saved_model(saved_model: Any, checkpoint_index_bytes: bytes | None = None) -> Any:
    """The FingerprintDef of an already-parsed SavedModel message.

    `checkpoint_index_bytes` is the content of `variables/variables.index`,
    or None when there is none (checkpoint_hash is then 0, as in TF).
    Only `meta_graphs[0]` is described, as in TF.
    """
    if not saved_model.meta_graphs:
        raise FormatError("SavedModel has no meta graph to fingerprint")
    meta_graph = saved_model.meta_graphs[0]
    fp = protos.FingerprintDef()
    fp.saved_model_checksum = _fp(canonical_serialize(saved_model))
    fp.graph_def_program_hash = _fp(canonical_serialize(
        regularize_graph_def(meta_graph.graph_def)))
    fp.signature_def_hash = _signature_def_hash(meta_graph.signature_def)
    fp.saved_object_graph_hash = _saved_object_graph_hash(meta_graph.object_graph_def)
    fp.checkpoint_hash = 0 if checkpoint_index_bytes is None else _fp(checkpoint_index_bytes)
    fp.version.producer = FINGERPRINT_PRODUCER
    fp.uuid = _random_uuid()
    return fp


# --- chunked SavedModels (saved_model.cpb) --------------------------------------
# TensorFlow fingerprints a .cpb without merging it whole: a hash over the
# chunks the metadata tree points at, plus the three parts of meta_graphs[0]
# read from a "pruned" model (only the chunks on their paths). Each step below
# reproduces what TensorFlow 2.21 computes, quirks included (the root chunk
# is not part of saved_model_checksum; a prefix path merges its chunk over
# the part being hashed); tests/test_chunked.py checks it against TensorFlow.
CHUNKED_FINGERPRINT_PRODUCER = 2
# The parts of meta_graphs[0] (SavedModel field 2) that get hashes of their own.
_GRAPH_DEF_PATH = chunked.field_tags(2, [0], 2)
_SIGNATURE_DEF_PATH = chunked.field_tags(2, [0], 5)
_OBJECT_GRAPH_PATH = chunked.field_tags(2, [0], 7)


def _tag_matches(tags, target):
    """How many leading elements of the path `tags` equal those of `target`."""
    matches = 0
    for have, want in zip(tags, target):
        kind = want.WhichOneof("kind")
        if kind is None:
            raise FormatError("a chunk path element of no kind")
        if have.WhichOneof("kind") != kind:
            break
        if kind == "map_key":
            key_kind = want.map_key.WhichOneof("type")
            if key_kind is None:
                raise FormatError("a chunk path map key of no type")
            if (have.map_key.WhichOneof("type") != key_kind
                    or getattr(have.map_key, key_kind) != getattr(want.map_key, key_kind)):
                break
        elif getattr(have, kind) != getattr(want, kind):
            break
        matches += 1
    return matches


def _hash_fields(source, chunked_message, target, merged, depth=0):
    """TensorFlow's HashFields: the chunks of `chunked_message` on the path `target`."""
    if depth > chunked.MAX_DEPTH:
        raise FormatError(f"{source.path}: chunked messages nested too deeply")
    h = 0
    for field in chunked_message.chunked_fields:
        sub = field.message
        matches = _tag_matches(field.field_tag, target)
        if matches == len(target):
            h = hot.fingerprint_cat64(h, hot.fingerprint64(source.chunk(sub.chunk_index))
                                      if sub.HasField("chunk_index")
                                      else _hash_fields(source, sub, target, merged, depth + 1))
        elif matches == len(field.field_tag) and sub.HasField("chunk_index"):
            merged = chunked.walk(merged, field.field_tag, source.path)
            merged.Clear()
            source.merge_chunk(merged, sub.chunk_index)
            h = hot.fingerprint_cat64(h, _hash_fields(source, sub, target, merged, depth + 1))
        elif matches == len(field.field_tag):
            for inner in sub.chunked_fields:
                h = hot.fingerprint_cat64(
                    h, _hash_fields(source, inner.message, target, merged, depth + 1))
    return h


def _pruned(chunked_message, targets, depth=0):
    """The tree keeping only the fields on (a prefix of) one of `targets`,
    once per target matched, as TensorFlow builds it."""
    if depth > chunked.MAX_DEPTH:
        raise FormatError("chunked messages nested too deeply")
    out = protos.ChunkedMessage()
    if chunked_message.HasField("chunk_index"):
        out.chunk_index = chunked_message.chunk_index
    for field in chunked_message.chunked_fields:
        for target in targets:
            if _tag_matches(field.field_tag, target) == len(field.field_tag):
                kept = out.chunked_fields.add()
                kept.field_tag.extend(field.field_tag)
                kept.message.CopyFrom(_pruned(field.message, targets, depth + 1))
    return out


def fingerprint_chunked_saved_model(path: str | os.PathLike,
                                    checkpoint_index_bytes: bytes | None = None) -> Any:
    """The FingerprintDef TensorFlow computes for the chunked SavedModel file `path`."""
    source = chunked.ChunkedFile(path)
    root = source.metadata.message
    fp = protos.FingerprintDef()
    empty = protos.SavedModel()
    fp.saved_model_checksum = hot.fingerprint_cat64(
        _hash_fields(source, root, [], empty), _fp(canonical_serialize(empty)))
    pruned = source.merge(protos.SavedModel(), _pruned(
        root, [_GRAPH_DEF_PATH, _SIGNATURE_DEF_PATH, _OBJECT_GRAPH_PATH]))
    if not pruned.meta_graphs:
        raise FormatError(f"{path}: SavedModel has no meta graph to fingerprint")
    meta_graph = pruned.meta_graphs[0]
    for name, part, part_path in (
            ("graph_def_program_hash", meta_graph.graph_def, _GRAPH_DEF_PATH),
            ("saved_object_graph_hash", meta_graph.object_graph_def, _OBJECT_GRAPH_PATH)):
        whole = _fp(canonical_serialize(part))   # before _hash_fields may merge into it
        setattr(fp, name, hot.fingerprint_cat64(
            whole, _hash_fields(source, root, part_path, part)))
    h = 0
    for key in sorted(meta_graph.signature_def):
        signature = meta_graph.signature_def[key]
        h = hot.fingerprint_cat64(h, hot.fingerprint_cat64(_fp(key.encode()),
                                                           _fp(canonical_serialize(signature))))
        copy = protos.SignatureDef()
        copy.CopyFrom(signature)
        h = hot.fingerprint_cat64(h, _hash_fields(source, root, _SIGNATURE_DEF_PATH, copy))
    fp.signature_def_hash = h
    fp.checkpoint_hash = 0 if checkpoint_index_bytes is None else _fp(checkpoint_index_bytes)
    fp.version.producer = CHUNKED_FINGERPRINT_PRODUCER
    fp.uuid = _random_uuid()
    return fp


def _random_uuid():
    # Like TF's CreateRandomUUID: a random 128-bit number, in decimal, >= 20 digits.
    return f"{secrets.randbits(128):020d}"


def read_saved_model(export_dir: str | os.PathLike) -> Any:
    """Parse the SavedModel in `export_dir` (the file `graph.saved_model_file`
    names: saved_model.cpb merged, .pb or .pbtxt) into a SavedModel message."""
    path = saved_model_file(export_dir)
    if path is None:
        raise CheckpointNotFoundError(f"{os.fspath(export_dir)}: no SavedModel here (expected "
                                      f"{' or '.join(SAVED_MODEL_FILES)})")
    return read_saved_model_file(path)


def _read_checkpoint_index(export_dir):
    try:
        return fileio.read_file_if_present(os.path.join(export_dir, CHECKPOINT_INDEX))
    except FormatError:  # a directory
        return None


@fileio.with_storage
def compute_fingerprint(export_dir: str | os.PathLike) -> Any:
    """Compute the FingerprintDef of the SavedModel in `export_dir`, as TF does.

    A directory holding only `saved_model.pbtxt` gets what TF 2.21's
    `CreateFingerprintDef` returns for it (observed): all five hashes 0 and
    `version.producer` 5. `fingerprint_saved_model(read_saved_model(d))`
    hashes the text model's content instead, should that be wanted.
    """
    export_dir = os.fspath(export_dir)
    path = saved_model_file(export_dir)
    if path is not None and path.endswith(SAVED_MODEL_PBTXT):
        fp = protos.FingerprintDef()
        fp.version.producer = TEXT_FINGERPRINT_PRODUCER
        fp.uuid = _random_uuid()
        return fp
    if path is not None and path.endswith(SAVED_MODEL_CPB):
        return fingerprint_chunked_saved_model(path, _read_checkpoint_index(export_dir))
    saved_model = read_saved_model(export_dir)
    return fingerprint_saved_model(saved_model, _read_checkpoint_index(export_dir))


@fileio.with_storage
def read_fingerprint(export_dir: str | os.PathLike) -> Any:
    """Parse `<export_dir>/fingerprint.pb`."""
    path = os.path.join(os.fspath(export_dir), FINGERPRINT_FILENAME)
    return parse_message(protos.FingerprintDef, read_file(path), path)


@fileio.with_storage
def write_fingerprint(export_dir: str | os.PathLike, fp: Any = None) -> Any:
    """Write `fingerprint.pb` atomically (computing it when `fp` is None); return fp."""
    export_dir = os.fspath(export_dir)
    if fp is None:
        fp = compute_fingerprint(export_dir)
    data = fp.SerializeToString(deterministic=True)
    # Like TensorFlow's writer: atomic, no fsync, the umask's mode (not mkstemp's 0600).
    write_atomically(os.path.join(export_dir, FINGERPRINT_FILENAME), data, sync=False)
    return fp


def singleprint(fp: Any) -> str:
    """TF's "singleprint": the four model hashes joined by '/' (no checksum)."""
    return (f"{fp.graph_def_program_hash}/{fp.signature_def_hash}/"
            f"{fp.saved_object_graph_hash}/{fp.checkpoint_hash}")


@fileio.with_storage
def check_fingerprint(export_dir: str | os.PathLike) -> list[str]:
    """Compare the stored fingerprint.pb with a fresh computation.

    Returns a list of findings (strings); empty when all five hashes match.
    A missing or unreadable fingerprint.pb is a finding too.
    """
    export_dir = os.fspath(export_dir)
    computed = compute_fingerprint(export_dir)
    try:
        stored = read_fingerprint(export_dir)
    except (CheckpointNotFoundError, FormatError) as e:
        return [str(e)]
    findings = []
    for name in HASH_FIELDS:
        have, want = getattr(stored, name), getattr(computed, name)
        if have != want:
            findings.append(f"{FINGERPRINT_FILENAME}: {name} is {have} but the "
                            f"SavedModel hashes to {want}")
    return findings
