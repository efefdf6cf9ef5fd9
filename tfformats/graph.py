"""GraphDef files (`frozen.pb`, `graph.pbtxt`) and the constants they hold.

A frozen graph keeps its weights as `Const` nodes whose `value` attr is a
TensorProto; `graph_constants` turns those into numpy arrays. TF2 graphs
(SavedModels, `tf.function` graphs) keep most constants in the bodies of the
functions in `library`; those are read too, keyed "<function name>/<node name>".
`graph_constants` also takes the files that hold GraphDefs: a MetaGraphDef
(`model.ckpt.meta`) and a SavedModel (its directory or `saved_model.pb`/`.pbtxt`).
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable

from google.protobuf import message as _message
from google.protobuf import text_format

from . import protos
from .errors import FormatError
from . import dtypes, fileio, limits
from .fileio import read_file
from .tensor_proto import MAX_BROADCAST_BYTES, to_numpy

_TEXT_SUFFIXES = (".pbtxt", ".txt", ".prototxt")


def parse_message(message_class: Any, data: Any, path: str, text: bool | None = None) -> Any:
    """Parse binary (or, when `text` is true, text-format) protobuf data.

    Every parser failure, including protobuf's nesting-depth limit, becomes a
    FormatError naming `path`.
    """
    what = message_class.DESCRIPTOR.name
    try:
        if text:
            if isinstance(data, (bytes, bytearray, memoryview)):
                data = bytes(data).decode("utf-8")
            return text_format.Parse(data, message_class())
        return message_class.FromString(bytes(data))
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not a UTF-8 text {what} ({e})") from None
    except (_message.DecodeError, text_format.ParseError) as e:
        raise FormatError(f"{path}: not a valid {'text ' if text else ''}{what} ({e})") from None
    except RecursionError:
        raise FormatError(f"{path}: {what} nested too deeply to parse") from None
    except (ValueError, TypeError, OverflowError) as e:  # odd inputs in the pure-Python backend
        raise FormatError(f"{path}: not a valid {what} ({type(e).__name__}: {e})") from None


@fileio.with_storage
def load_graph_def(path: str | os.PathLike, as_text: bool | None = None) -> Any:
    """Read a GraphDef file, binary or text format.

    `as_text=None` guesses from the suffix (.pbtxt/.txt/.prototxt are text)
    and falls back to text format when binary parsing fails on text-looking data.
    """
    path = os.fspath(path)
    data = read_file(path)
    if as_text is None:
        as_text = path.endswith(_TEXT_SUFFIXES)
        if not as_text:
            try:
                return parse_message(protos.GraphDef, data, path)
            except FormatError:
                if not _looks_like_text(data):
                    raise
                as_text = True
    return parse_message(protos.GraphDef, data, path, text=as_text)


def _looks_like_text(data):
    head = bytes(data[:256])
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return head.lstrip().startswith((b"node", b"library", b"versions", b"#"))


def graph_constants(graph_def_or_path: Any, ops: Iterable[str] = ("Const",),
                    functions: bool = True) -> dict[str, Any]:
    """name -> numpy array for every `Const` node of a GraphDef.

    Accepts a GraphDef message (ours or TensorFlow's: anything with the same
    wire format) or a path: a GraphDef file, a MetaGraphDef file (`.meta`) or a
    SavedModel (directory, `saved_model.pb` or `.pbtxt`). A SavedModel with
    several meta graphs prefixes each key with its tag set and a colon
    ("serve:w", "gpu,train:w"; node names cannot hold a colon); a file of
    another kind (a checkpoint) raises FormatError saying what it is.
    Top-level nodes are keyed by node name. With
    `functions=True` (the default) the bodies of all functions in `library`
    are read too, called or not (a nested `tf.function` is a function of its
    own there), keyed "<function signature name>/<node name>". Such a key
    cannot clash with a top-level name for TF's "__inference_..." functions,
    as node names cannot start with "_"; should a hand-made graph clash
    anyway (or repeat a function name), FormatError is raised rather than
    one value hiding the other.
    Constants whose value is a function attr placeholder are skipped.
    """
    where = f"{os.fspath(graph_def_or_path)}: " if isinstance(
        graph_def_or_path, (str, os.PathLike)) else ""
    if isinstance(ops, str):  # else `node.op in ops` would match substrings
        ops = (ops,)
    graphs = _graph_defs(graph_def_or_path)
    budget = _Budget(where)
    if len(graphs) == 1:
        return _constants(graphs[0][1], ops, functions, where, budget)
    out: dict[str, Any] = {}
    for tags, graph_def in graphs:
        out.update((f"{tags}:{key}", value) for key, value in _constants(
            graph_def, ops, functions, f"{where}meta graph {tags!r}: ", budget).items())
    return out


class _Budget:
    """The bytes one graph_constants call may still allocate: each node is
    capped by what a proto could hold, and all of them together by the limit
    max_graph_constants_bytes (a few bytes per node could otherwise fill a
    shape of 2**29 elements, node after node)."""

    def __init__(self, where):
        self.where = where
        self.left = limits.current().max_graph_constants_bytes

    def convert(self, tensor, what):
        shape = [d.size for d in tensor.tensor_shape.dim]
        dtype = dtypes.BY_ENUM.get(tensor.dtype)
        itemsize = dtype.itemsize if dtype is not None and dtype.itemsize else 8
        # Checked before converting (strings: 8 bytes of object per element).
        need = math.prod(max(d, 0) for d in shape) * itemsize
        if need > self.left:
            limit = limits.current().max_graph_constants_bytes
            raise limits.exceeded("max_graph_constants_bytes", limit - self.left + need,
                                  f"{what}: bytes of all constants read so far")
        value = to_numpy(tensor, what=what, max_broadcast_bytes=min(MAX_BROADCAST_BYTES, self.left))
        self.left -= value.nbytes
        return value


def _constants(graph_def, ops, functions, where, budget):
    out = {}
    for node in graph_def.node:
        if _is_constant(node, ops):
            out[node.name] = budget.convert(node.attr["value"].tensor,
                                            f"{where}Const node {node.name!r}")
    for function in (graph_def.library.function if functions else ()):
        fname = function.signature.name
        for node in function.node_def:
            if not _is_constant(node, ops):
                continue
            key = f"{fname}/{node.name}"
            if key in out:
                raise FormatError(f"{where}Const node {node.name!r} of function {fname!r}: "
                                  f"its key {key!r} is already taken")
            out[key] = budget.convert(node.attr["value"].tensor,
                                      f"{where}Const node {node.name!r} of function {fname!r}")
    return out


def _is_constant(node, ops):
    return (node.op in ops and "value" in node.attr
            and node.attr["value"].WhichOneof("value") != "placeholder")


def _graph_defs(value):
    """[(tag set, GraphDef)] that a graph_constants argument stands for."""
    if not isinstance(value, (str, os.PathLike)):
        return [("", _as_graph_def(value))]
    path = os.fspath(value)
    name = os.path.basename(path).lower()
    if fileio.isdir(path) or name in ("saved_model.pb", "saved_model.pbtxt"):
        if fileio.isdir(path):
            text = not fileio.exists(os.path.join(path, "saved_model.pb"))
            path = os.path.join(path, "saved_model.pbtxt" if text else "saved_model.pb")
        saved_model = parse_message(protos.SavedModel, read_file(path), path,
                                    text=path.endswith(".pbtxt"))
        # Tags sorted within a set: "gpu,train" whichever order they were saved in.
        return [(",".join(sorted(m.meta_info_def.tags)), m.graph_def) for m in saved_model.meta_graphs]
    if name.endswith(".meta"):
        return [("", parse_message(protos.MetaGraphDef, read_file(path), path).graph_def)]
    if name.endswith(".index") or ".data-" in name or name.endswith((".safetensors", ".npz")):
        raise FormatError(f"{path}: a tensor file (checkpoint, safetensors or npz), not a graph; "
                          "read its tensors with tfformats.CheckpointReader or convert")
    return [("", load_graph_def(path))]


def _as_graph_def(value):
    if isinstance(value, (str, os.PathLike)):
        return load_graph_def(value)
    if isinstance(value, protos.GraphDef):
        return value
    if hasattr(value, "SerializeToString"):  # e.g. TensorFlow's own GraphDef
        return parse_message(protos.GraphDef, value.SerializeToString(), "<GraphDef>")
    raise TypeError(f"expected a GraphDef or a path, got {type(value).__name__}")
