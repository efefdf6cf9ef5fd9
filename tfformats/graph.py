"""GraphDef files (`frozen.pb`, `graph.pbtxt`) and the constants they hold.

A frozen graph keeps its weights as `Const` nodes whose `value` attr is a
TensorProto; `graph_constants` turns those into numpy arrays. TF2 graphs
(SavedModels, `tf.function` graphs) keep most constants in the bodies of the
functions in `library`; those are read too, keyed "<function name>/<node name>".
`graph_constants` also takes the files that hold GraphDefs: a MetaGraphDef
(`model.ckpt.meta`) and a SavedModel (its directory, or `saved_model.pb`/`.pbtxt`/`.cpb`).
The choice of a SavedModel directory's file, as TensorFlow makes it, is
`saved_model_file`'s, for every module that reads SavedModels.

`GraphReader` offers the same constants with the checkpoint readers' API
(decoded one at a time, on demand): `open_checkpoint` returns one for a graph
file, so the command line lists, dumps, validates, converts and compares the
weights of frozen graphs as it does those of checkpoints.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Iterable, Iterator, NamedTuple

from google.protobuf import message as _message
from google.protobuf import text_format

from . import protos
from .errors import CheckpointNotFoundError, FormatError, UnsupportedError
from . import dtypes, fileio, limits
from .fileio import read_file
from .tensor_proto import MAX_BROADCAST_BYTES, shape_of, to_numpy

if TYPE_CHECKING:
    from .names import Names

_TEXT_SUFFIXES = (".pbtxt", ".txt", ".prototxt")

SAVED_MODEL_CPB = "saved_model.cpb"
SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
# The files a SavedModel directory may hold its graph in, in the order
# TensorFlow's loader looks for them.
SAVED_MODEL_FILES = (SAVED_MODEL_CPB, SAVED_MODEL_PB, SAVED_MODEL_PBTXT)


def saved_model_file(export_dir: str | os.PathLike) -> str | None:
    """The file of the SavedModel in `export_dir` that TensorFlow reads:
    saved_model.cpb, else .pb, else .pbtxt (as for TensorFlow, a directory of
    that name counts, and reading it fails); None when there is none."""
    for name in SAVED_MODEL_FILES:
        path = os.path.join(os.fspath(export_dir), name)
        if fileio.exists(path):
            return path
    return None


def read_saved_model_file(path: str) -> Any:
    """Parse a SavedModel file: `saved_model.cpb` merged back into one message
    (tfformats/chunked.py), a binary `.pb` or a text `.pbtxt`."""
    name = os.path.basename(path).lower()
    if name == SAVED_MODEL_CPB:
        from . import chunked   # it parses with this module's parse_message
        return chunked.read_chunked(path, protos.SavedModel())
    return parse_message(protos.SavedModel, read_file(path), path, text=name.endswith(".pbtxt"))


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
    budget = _Budget(_where(graph_def_or_path))
    return {key: budget.convert(tensor, what) for key, (tensor, what)
            in constant_protos(graph_def_or_path, ops, functions).items()}


def _where(graph_def_or_path):
    return f"{os.fspath(graph_def_or_path)}: " if isinstance(
        graph_def_or_path, (str, os.PathLike)) else ""


def constant_protos(graph_def_or_path: Any, ops: Iterable[str] = ("Const",),
                    functions: bool = True) -> dict[str, tuple[Any, str]]:
    """key -> (TensorProto, what to call it in errors): the constants of
    `graph_constants`, under the same keys, not yet decoded."""
    where = _where(graph_def_or_path)
    if isinstance(ops, str):  # else `node.op in ops` would match substrings
        ops = (ops,)
    graphs = _graph_defs(graph_def_or_path)
    if len(graphs) == 1:
        return _constants(graphs[0][1], ops, functions, where)
    out: dict[str, Any] = {}
    for tags, graph_def in graphs:
        out.update((f"{tags}:{key}", value) for key, value in _constants(
            graph_def, ops, functions, f"{where}meta graph {tags!r}: ").items())
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


def _constants(graph_def, ops, functions, where):
    out = {}
    for node in graph_def.node:
        if _is_constant(node, ops):
            out[node.name] = (node.attr["value"].tensor, f"{where}Const node {node.name!r}")
    for function in (graph_def.library.function if functions else ()):
        fname = function.signature.name
        for node in function.node_def:
            if not _is_constant(node, ops):
                continue
            key = f"{fname}/{node.name}"
            if key in out:
                raise FormatError(f"{where}Const node {node.name!r} of function {fname!r}: "
                                  f"its key {key!r} is already taken")
            out[key] = (node.attr["value"].tensor,
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
    if fileio.isdir(path) or name in SAVED_MODEL_FILES:
        if fileio.isdir(path):
            found = saved_model_file(path)
            if found is None:
                raise CheckpointNotFoundError(f"{path}: neither a graph file nor a SavedModel "
                                              f"(no {', '.join(SAVED_MODEL_FILES)})")
            path = found
        saved_model = read_saved_model_file(path)
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


# --- graph files as readers ----------------------------------------------------------

class GraphEntry(NamedTuple):
    """What the checkpoint readers' `entry` says, for a constant of a graph."""
    name: str
    dtype: dtypes.DType
    shape: tuple[int, ...]
    slices: tuple = ()


class GraphReader(Mapping):
    """The constants of a graph file (GraphDef, `.meta`, SavedModel) as a
    read-only reader with the checkpoint readers' methods: keys are those of
    `graph_constants`; a lookup also takes a TensorFlow tensor name (`w:0`).
    Values are decoded when asked for, each into a new array (read-only
    unless `copy=True`), within the limit max_graph_constants_bytes.
    Graph files carry no checksums: `verify` is accepted and changes nothing.
    """

    kind = "graph"

    def __init__(self, path: str | os.PathLike, verify: bool = True,
                 ops: Iterable[str] = ("Const",), functions: bool = True) -> None:
        self.path = self.prefix = os.fspath(path)
        self.verify = verify
        self._protos = dict(sorted(constant_protos(self.path, ops, functions).items()))
        self._names: Names | None = None

    def key(self, name: str) -> str:
        """The constant `name` stands for: its key, or a tensor name with `:0`."""
        if name in self._protos:
            return name
        if self._names is None:
            from .names import Names
            self._names = Names(self._protos.keys(), where=self.path)
        return self._names.resolve(name)

    def _proto(self, name):
        return self._protos[self.key(name)]

    def __getitem__(self, name: str) -> Any:
        return self.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._protos)

    def __len__(self) -> int:
        return len(self._protos)

    def __contains__(self, name: object) -> bool:
        return name in self._protos

    def has_tensor(self, name: object) -> bool:
        return name in self._protos

    def shape(self, name: str) -> list[int]:
        tensor, what = self._proto(name)
        return shape_of(tensor.tensor_shape, what)

    def dtype(self, name: str) -> dtypes.DType:
        tensor, what = self._proto(name)
        return dtypes.from_enum(tensor.dtype, what)

    def entry(self, name: str) -> GraphEntry:
        return GraphEntry(self.key(name), self.dtype(name), tuple(self.shape(name)))

    def nbytes(self, name: str) -> int:
        """The bytes of the decoded array (strings: those of their values)."""
        return _nbytes(*self._proto(name))

    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        return {name: self.shape(name) for name in self._protos}

    def get_variable_to_dtype_map(self) -> dict[str, dtypes.DType]:
        return {name: self.dtype(name) for name in self._protos}

    def get_tensor(self, name: str, copy: bool = False) -> Any:
        tensor, what = self._proto(name)
        value = _Budget(f"{self.path}: ").convert(tensor, what)
        if not copy:
            value.flags.writeable = False   # as the checkpoint readers' arrays
        return value

    def close(self) -> None:
        self._protos = {}

    def __enter__(self) -> GraphReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<GraphReader {self.path!r}: {len(self._protos)} constants>"


def _nbytes(tensor, what):
    """The bytes of a constant's decoded array (strings: those of their values)."""
    itemsize = dtypes.from_enum(tensor.dtype, what).itemsize
    if itemsize is None:
        return sum(len(v) for v in tensor.string_val)
    return math.prod(shape_of(tensor.tensor_shape, what)) * itemsize


# Ops that are never a graph's result, for `summarize_graph`'s outputs.
_NOT_OUTPUTS = frozenset({"Const", "NoOp", "Assert", "Placeholder", "PlaceholderWithDefault"})


def _shape_text(shape_proto):
    if shape_proto.unknown_rank:
        return None
    return [d.size for d in shape_proto.dim]


@fileio.with_storage
def summarize_graph(path: str | os.PathLike) -> dict[str, Any]:
    """What a graph file holds, for `tfformats show`: its kind ("GraphDef" or
    "MetaGraphDef", with the tags and signature keys of the latter), node and
    function counts, its inputs (Placeholder nodes: name, dtype, shape, -1 for
    an unknown dimension, None for an unknown rank), its outputs (nodes no
    other node reads, other than constants and no-ops), the number and bytes
    of its constants and how often each op is used."""
    path = os.fspath(path)
    summary: dict[str, Any] = {"path": path, "kind": "GraphDef"}
    if path.lower().endswith(".meta"):   # parsed once: its graph and what is around it
        meta_graph = parse_message(protos.MetaGraphDef, read_file(path), path)
        graph_def = meta_graph.graph_def
        summary.update(kind="MetaGraphDef", tags=list(meta_graph.meta_info_def.tags),
                       signatures=sorted(meta_graph.signature_def))
    else:
        graphs = _graph_defs(path)
        if len(graphs) != 1:
            raise FormatError(f"{path}: {len(graphs)} meta graphs; `tfformats show` the SavedModel")
        graph_def = graphs[0][1]
    read: set[str] = set()
    ops: dict[str, int] = {}
    inputs = []
    for node in graph_def.node:
        ops[node.op] = ops.get(node.op, 0) + 1
        read.update(name.lstrip("^").split(":")[0] for name in node.input)
        if node.op in ("Placeholder", "PlaceholderWithDefault"):
            dtype = dtypes.BY_ENUM.get(node.attr["dtype"].type)
            inputs.append({"name": node.name, "dtype": dtype.name if dtype else None,
                           "shape": _shape_text(node.attr["shape"].shape)
                           if "shape" in node.attr else None})
    outputs = [{"name": node.name, "op": node.op} for node in graph_def.node
               if node.name not in read and node.op not in _NOT_OUTPUTS]
    sizes = []
    for tensor, what in _constants(graph_def, ("Const",), True, f"{path}: ").values():
        try:
            sizes.append(_nbytes(tensor, what))
        except (FormatError, UnsupportedError):   # validate says what is wrong with it
            sizes.append(0)
    summary.update(nodes=len(graph_def.node), functions=len(graph_def.library.function),
                   inputs=inputs, outputs=outputs, constants=len(sizes),
                   constant_bytes=sum(sizes), ops=dict(sorted(ops.items())))
    return summary
