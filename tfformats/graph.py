"""GraphDef files (`frozen.pb`, `graph.pbtxt`) and the constants they hold.

A frozen graph keeps its weights as `Const` nodes whose `value` attr is a
TensorProto; `graph_constants` turns those into numpy arrays. TF2 graphs
(SavedModels, `tf.function` graphs) keep most constants in the bodies of the
functions in `library`; those are read too, keyed "<function name>/<node name>".
"""

import os

from google.protobuf import message as _message
from google.protobuf import text_format

from . import protos
from .errors import FormatError
from .fileio import read_file
from .tensor_proto import to_numpy

_TEXT_SUFFIXES = (".pbtxt", ".txt", ".prototxt")


def parse_message(message_class, data, path, text=None):
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


def load_graph_def(path, as_text=None):
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


def graph_constants(graph_def_or_path, ops=("Const",), functions=True):
    """name -> numpy array for every `Const` node of a GraphDef.

    Accepts a GraphDef message (ours or TensorFlow's: anything with the same
    wire format) or a path. Top-level nodes are keyed by node name. With
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
    graph_def = _as_graph_def(graph_def_or_path)
    if isinstance(ops, str):  # else `node.op in ops` would match substrings
        ops = (ops,)
    out = {}
    for node in graph_def.node:
        if _is_constant(node, ops):
            out[node.name] = to_numpy(node.attr["value"].tensor,
                                      what=f"{where}Const node {node.name!r}")
    for function in (graph_def.library.function if functions else ()):
        fname = function.signature.name
        for node in function.node_def:
            if not _is_constant(node, ops):
                continue
            key = f"{fname}/{node.name}"
            if key in out:
                raise FormatError(f"{where}Const node {node.name!r} of function {fname!r}: "
                                  f"its key {key!r} is already taken")
            out[key] = to_numpy(node.attr["value"].tensor,
                                what=f"{where}Const node {node.name!r} of function {fname!r}")
    return out


def _is_constant(node, ops):
    return (node.op in ops and "value" in node.attr
            and node.attr["value"].WhichOneof("value") != "placeholder")


def _as_graph_def(value):
    if isinstance(value, (str, os.PathLike)):
        return load_graph_def(value)
    if isinstance(value, protos.GraphDef):
        return value
    if hasattr(value, "SerializeToString"):  # e.g. TensorFlow's own GraphDef
        return parse_message(protos.GraphDef, value.SerializeToString(), "<GraphDef>")
    raise TypeError(f"expected a GraphDef or a path, got {type(value).__name__}")
