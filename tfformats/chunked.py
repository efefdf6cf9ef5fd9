"""Chunked protos (`saved_model.cpb`): read them back into one message, and write them.

A SavedModel too big for one protobuf message (2 GiB) is stored as a
Riegeli/records file (tfformats/riegeli.py). Each record is a chunk: the
first is the root message with its big parts taken out, the others are
serialized sub-messages (MESSAGE chunks) or raw bytes such as a constant's
`tensor_content` (BYTES chunks), and the last record is a `ChunkMetadata`.
Its `ChunkedMessage` tree says where each chunk goes: a `field_tag` path of
field numbers, repeated-field indexes and map keys, relative to the message
that its parent `ChunkedMessage` describes. docs/formats.md ("Chunked
SavedModels") has the details, including the merge order.

Reading checks every Riegeli hash, bounds every index against the chunks
that exist and the recursion depth, and grows repeated fields only as far as
the file can justify.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from . import fileio, protos, riegeli
from .errors import FormatError
from .graph import parse_message

MAX_DEPTH = 64          # nested ChunkedMessages; TF's own trees are a few levels deep


class ChunkedFile:
    """The chunks and metadata of one chunked proto file."""

    def __init__(self, path: str | os.PathLike, buf: Any = None) -> None:
        self.path = os.fspath(path)
        if buf is None:
            buf = fileio.read_file(self.path)
        self._records = riegeli.read_records(buf, self.path)
        if not self._records.records:
            raise FormatError(f"{self.path}: no records (a chunked proto ends with its metadata)")
        self.metadata = parse_message(protos.ChunkMetadata, self._records.records[-1][1],
                                      f"{self.path}: chunk metadata")
        self._size = len(buf)

    def chunk(self, index: int) -> bytes:
        """The bytes of chunk `index` (as `ChunkMetadata.chunks` numbers them)."""
        chunks = self.metadata.chunks
        if not 0 <= index < len(chunks):
            raise FormatError(f"{self.path}: chunk {index} does not exist ({len(chunks)} chunks)")
        info = chunks[index]
        data = self._records.record_at(info.offset, f"chunk {index}")
        if len(data) != info.size:
            raise FormatError(f"{self.path}: chunk {index} has {len(data)} bytes, the metadata "
                              f"says {info.size}")
        return data

    def merge_chunk(self, message: Any, index: int) -> None:
        """Parse chunk `index` into `message` (merging into what it holds)."""
        data = self.chunk(index)
        try:
            message.MergeFromString(data)
        except Exception as exc:  # protobuf's DecodeError, or RecursionError
            raise FormatError(f"{self.path}: chunk {index} does not parse as "
                              f"{message.DESCRIPTOR.full_name} ({type(exc).__name__})") from None

    def merge(self, message: Any, chunked_message: Any = None) -> Any:
        """Merge the chunks that `chunked_message` (default: the root) describes into `message`."""
        if chunked_message is None:
            chunked_message = self.metadata.message
        _Merger(self).read_fields(chunked_message, message, 0)
        return message


# --- field paths -------------------------------------------------------------------

def map_key_value(key, where):
    kind = key.WhichOneof("type")
    if kind is None:
        raise FormatError(f"{where}: a map key with no value")
    return getattr(key, kind)


def path_steps(field_tag, where):
    """[(field number, index or map key or None)] of a `field_tag` path."""
    steps = []
    for tag in field_tag:
        kind = tag.WhichOneof("kind")
        if kind == "field":
            steps.append([tag.field, None])
        elif kind in ("index", "map_key") and steps and steps[-1][1] is None:
            steps[-1][1] = tag.index if kind == "index" else map_key_value(tag.map_key, where)
        else:
            raise FormatError(f"{where}: field tag path {[str(t).strip() for t in field_tag]} "
                              "is not field numbers each followed by at most one index or key")
    return steps


def _compare_paths(a, b):
    """TensorFlow's merge order: field numbers and indexes ascending, map keys
    equal, a shorter path (the parent) first, then the lower chunk first."""
    for ta, tb in zip(a.field_tag, b.field_tag):
        ka, kb = ta.WhichOneof("kind"), tb.WhichOneof("kind")
        if ka != kb:
            raise FormatError("chunked fields disagree on the kind of a path element")
        if ka == "map_key":
            return 0
        va, vb = getattr(ta, ka), getattr(tb, kb)
        if va != vb:
            return -1 if va < vb else 1
    if len(a.field_tag) != len(b.field_tag):
        return -1 if len(a.field_tag) < len(b.field_tag) else 1
    ca, cb = a.message.chunk_index, b.message.chunk_index
    return (ca > cb) - (ca < cb)


class _Merger:
    def __init__(self, chunked):
        self.chunked = chunked
        # Elements a path may add beyond those present: each must be paid for by file bytes.
        self.growth_left = max(1024, chunked._size // 8)

    def read_fields(self, chunked_message, message, depth):
        if depth > MAX_DEPTH:
            raise FormatError(f"{self.chunked.path}: chunked messages nested over {MAX_DEPTH} deep")
        if chunked_message.HasField("chunk_index"):
            self.chunked.merge_chunk(message, chunked_message.chunk_index)
        fields = sorted(chunked_message.chunked_fields, key=functools.cmp_to_key(_compare_paths))
        for field in fields:
            self._process(field, message, depth)

    def _grow(self, container, index, add):
        missing = index + 1 - len(container)
        if missing > self.growth_left:
            raise FormatError(f"{self.chunked.path}: a chunk path asks for element {index} of a "
                              f"field with {len(container)}")
        for _ in range(max(missing, 0)):
            add()
        self.growth_left -= max(missing, 0)

    def _process(self, field, message, depth):
        where = self.chunked.path
        # Like TensorFlow, a chunk without an index is chunk 0.
        chunk = lambda: self.chunked.chunk(field.message.chunk_index)  # noqa: E731
        if not field.field_tag:
            self.chunked.merge_chunk(message, field.message.chunk_index)
            return
        steps = path_steps(field.field_tag, where)
        for n, (number, sub) in enumerate(steps):
            last = n == len(steps) - 1
            desc = message.DESCRIPTOR.fields_by_number.get(number)
            if desc is None:
                raise FormatError(f"{where}: {message.DESCRIPTOR.full_name} has no field {number}")
            container = getattr(message, desc.name)
            is_message = desc.type == desc.TYPE_MESSAGE
            if desc.message_type is not None and desc.message_type.GetOptions().map_entry:
                if sub is None:
                    raise FormatError(f"{where}: map field {desc.name} without a key")
                value = desc.message_type.fields_by_name["value"]
                if value.type == value.TYPE_MESSAGE:
                    message = container[sub]
                    if last:
                        self.read_fields(field.message, message, depth + 1)
                elif last:
                    container[sub] = _scalar(value, chunk(), where)
                else:
                    raise FormatError(f"{where}: path continues past scalar map {desc.name}")
            elif protos.is_repeated(desc):
                if not isinstance(sub, int) or isinstance(sub, bool):
                    raise FormatError(f"{where}: repeated field {desc.name} without an index")
                if is_message:
                    self._grow(container, sub, container.add)
                    message = container[sub]
                    if last:
                        self.read_fields(field.message, message, depth + 1)
                elif last:
                    self._grow(container, sub, lambda: container.append(_default(desc)))
                    container[sub] = _scalar(desc, chunk(), where)
                else:
                    raise FormatError(f"{where}: path continues past repeated {desc.name}")
            elif is_message:
                message = container
                message.SetInParent()
                if last:
                    self.read_fields(field.message, message, depth + 1)
            elif last:
                setattr(message, desc.name, _scalar(desc, chunk(), where))
            else:
                raise FormatError(f"{where}: path continues past scalar field {desc.name}")


def walk(message, field_tag, where):
    """The sub-message of `message` that the path `field_tag` names (as
    TensorFlow's fingerprint follows a path: existing elements only)."""
    for number, sub in path_steps(field_tag, where):
        desc = message.DESCRIPTOR.fields_by_number.get(number)
        if desc is None or desc.type != desc.TYPE_MESSAGE:
            raise FormatError(f"{where}: {message.DESCRIPTOR.full_name} has no message "
                              f"field {number}")
        message = getattr(message, desc.name)
        if sub is not None:
            try:
                message = message[sub]
            except (KeyError, IndexError, TypeError):
                raise FormatError(f"{where}: no element {sub!r} in field {desc.name}") from None
    return message


def _default(desc):
    return b"" if desc.type == desc.TYPE_BYTES else "" if desc.type == desc.TYPE_STRING else 0


def _scalar(desc, data, where):
    """A non-message field's value from its chunk: bytes as they are, strings
    as UTF-8, numbers as the text TensorFlow's merger parses."""
    data = bytes(data)
    if desc.type == desc.TYPE_BYTES:
        return data
    try:
        text = data.decode("utf-8")
        if desc.type == desc.TYPE_STRING:
            return text
        if desc.type == desc.TYPE_BOOL:
            return {"true": True, "false": False}[text]
        if desc.type in (desc.TYPE_FLOAT, desc.TYPE_DOUBLE):
            return float(text)
        if desc.type == desc.TYPE_ENUM:
            return desc.enum_type.values_by_name[text].number
        return int(text)
    except (UnicodeDecodeError, KeyError, ValueError):
        raise FormatError(f"{where}: chunk for field {desc.name} is not a valid "
                          f"{desc.type} value") from None


def read_chunked(path: str | os.PathLike, message: Any) -> Any:
    """Merge the chunked proto file at `path` into `message`; returns it."""
    return ChunkedFile(path).merge(message)


# --- writing -------------------------------------------------------------------------

def field_tags(*path: Any) -> list:
    """FieldIndex list of a path: ints are field numbers, [i] an index, {"k"} a map key."""
    tags = []
    for item in path:
        tag = protos.FieldIndex()
        if isinstance(item, int):
            tag.field = item
        elif isinstance(item, list):
            tag.index = item[0]
        else:
            tag.map_key.s = next(iter(item))
        tags.append(tag)
    return tags


class _Writer:
    """Collects chunks; chunk 0 is the root message, added last but written first."""

    def __init__(self):
        self.metadata = protos.ChunkMetadata()
        self.metadata.version.splitter_version = 1
        self.chunks = [None]

    def add(self, data, is_message):
        self.chunks.append((data, is_message))
        return len(self.chunks) - 1

    def finish(self, root, compression):
        self.chunks[0] = (root, True)
        self.metadata.message.chunk_index = 0
        records = riegeli.RecordsWriter(compression)
        for data, is_message in self.chunks:
            info = self.metadata.chunks.add()
            info.type = 1 if is_message else 2
            info.size = len(data)
            info.offset = records.write(data)
        records.write(self.metadata.SerializeToString(deterministic=True))
        return records.getvalue()

    def field(self, parent, tags, data=None, is_message=True):
        """A ChunkedField at path `tags` under ChunkedMessage `parent`, holding
        `data` as a new chunk when given; returns its ChunkedMessage."""
        field = parent.chunked_fields.add()
        field.field_tag.extend(tags)
        if data is not None:
            field.message.chunk_index = self.add(data, is_message)
        return field.message


# NodeDef.attr["value"].tensor.tensor_content: where a Const keeps its values.
_CONSTANT_CONTENT = field_tags(5, {"value"}, 8, 4)


def _split_messages(writer, messages, field_number, chunked, threshold, split_inside=None):
    """Chunk the elements of repeated field `field_number` (`messages`) of at
    least `threshold` bytes, each left in place as an empty placeholder so
    that indexes keep their meaning; `split_inside(element, chunked)` first
    moves big pieces of each element into chunks of their own."""
    for i, element in enumerate(messages):
        inner = protos.ChunkedMessage()
        if split_inside is not None:
            split_inside(element, inner)
        data = element.SerializeToString(deterministic=True)
        if len(data) >= threshold:
            inner.chunk_index = writer.add(data, True)
            element.Clear()
        if inner.HasField("chunk_index") or inner.chunked_fields:
            field = chunked.chunked_fields.add()
            field.field_tag.extend(field_tags(field_number, [i]))
            field.message.CopyFrom(inner)


def _split_graph(writer, graph, chunked, threshold):
    """Move big pieces of GraphDef `graph` into chunks under `chunked`, as
    TensorFlow's splitter does: constants' tensor_content as bytes chunks,
    then big nodes and functions (with their own constants split out first)."""

    def constants(node, inner):
        if "value" in node.attr and len(node.attr["value"].tensor.tensor_content) >= threshold:
            tensor = node.attr["value"].tensor
            writer.field(inner, _CONSTANT_CONTENT, tensor.tensor_content, False)
            tensor.tensor_content = b""

    def function(fn, inner):   # FunctionDef.node_def is field 3
        _split_messages(writer, fn.node_def, 3, inner, threshold, constants)

    _split_messages(writer, graph.node, 1, chunked, threshold, constants)
    library = protos.ChunkedMessage()
    _split_messages(writer, graph.library.function, 1, library, threshold, function)
    if library.chunked_fields:
        writer.field(chunked, field_tags(2)).CopyFrom(library)   # GraphDef.library


def write_chunked_saved_model(export_dir: str | os.PathLike, saved_model: Any,
                              threshold: int = 1 << 20, compression: int = riegeli.BROTLI) -> str:
    """Write SavedModel message `saved_model` as `<export_dir>/saved_model.cpb`.

    Parts of `meta_graphs[0].graph_def` of at least `threshold` bytes become
    chunks of their own, as TensorFlow's splitter does for big models:
    constants' `tensor_content`, functions and nodes. Returns the path.
    """
    root = protos.SavedModel()
    root.CopyFrom(saved_model)
    writer = _Writer()
    if root.meta_graphs:
        graph = writer.field(writer.metadata.message, field_tags(2, [0], 2))   # meta_graphs[0].graph_def
        _split_graph(writer, root.meta_graphs[0].graph_def, graph, threshold)
    data = writer.finish(root.SerializeToString(deterministic=True), compression)
    path = os.path.join(os.fspath(export_dir), "saved_model.cpb")
    fileio.write_atomically(path, data, sync=False)
    return path
