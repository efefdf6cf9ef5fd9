"""`show`: the text layout of `saved_model_cli show`; what is shown comes
from tfformats.saved_model. A graph file gets a summary (tfformats.graph)."""

import sys

from .common import EXIT_OK, UsageError, emit_json, human_bytes, json_doc, json_safe


# The text layout of `saved_model_cli show`; what is shown comes from tfformats.saved_model.

def _find_meta_graph(saved_model, tag_set):
    wanted = {t.strip() for t in tag_set.split(",") if t.strip()}
    if not wanted:
        raise UsageError("--tag_set must contain at least one non-empty tag")
    try:
        return saved_model.meta_graph(wanted)
    except KeyError:
        from ..errors import TFFormatsError
        available = ", ".join(repr(",".join(sorted(m.tags))) for m in saved_model.meta_graphs)
        raise TFFormatsError(f"{saved_model.path}: no MetaGraphDef with tag-set {tag_set!r}; "
                             f"available tag-sets: {available or 'none'}") from None


def _signature(meta_graph, key):
    if key not in meta_graph.signatures:
        from ..errors import TFFormatsError
        raise TFFormatsError(f'Could not find signature "{key}". Please choose from: '
                             f'{", ".join(meta_graph.signatures)}')
    return meta_graph.signatures[key]


def _sorted_meta_graphs(saved_model):
    return sorted(saved_model.meta_graphs, key=lambda m: m.tags)


def _ops_line(meta_graph):
    ops = meta_graph.ops()
    text = "{" + ", ".join(repr(o) for o in ops) + "}" if ops else "set()"
    return f"The MetaGraph with tag set {meta_graph.tags!r} contains the following ops: {text}"


def _tensor_info_lines(info, indent):
    pad = "  " * indent
    if info.shape is None:
        shape = "unknown_rank"
    else:
        shape = "(" + ", ".join("-1" if d is None else str(d) for d in info.shape) + ")"
    return [f"{pad}    dtype: {info.dtype_name}",
            f"{pad}    shape: {shape}",
            f"{pad}    name: {info.tensor_name or ''}"]


def _signature_lines(signature, indent):
    pad = "  " * indent
    lines = [f"{pad}The given SavedModel SignatureDef contains the following input(s):"]
    for key, info in signature.inputs.items():
        lines.append(f"{pad}  inputs['{key}'] tensor_info:")
        lines.extend(_tensor_info_lines(info, indent + 1))
    lines.append(f"{pad}The given SavedModel SignatureDef contains the following output(s):")
    for key, info in signature.outputs.items():
        lines.append(f"{pad}  outputs['{key}'] tensor_info:")
        lines.extend(_tensor_info_lines(info, indent + 1))
    lines.append(f"{pad}Method name is: {signature.method_name}")
    return lines


def _value_text(value):
    """One value the way saved_model_cli prints it inside a list or dict."""
    from ..dtypes import DType
    from ..saved_model import NamedTupleValue, TypeSpec
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, DType):
        return f"<dtype: {value.name!r}>"
    if isinstance(value, TypeSpec):
        return _spec_repr(value)
    if isinstance(value, NamedTupleValue):
        return f"{value.name}(" + ", ".join(f"{k}={_value_text(v)}" for k, v in value.fields.items()) + ")"
    return str(value)


def _type_spec_class(spec):
    return spec.class_name or spec.type_spec_class


def _spec_repr(value):
    """A TypeSpec as TF prints one: its class name and the repr of its
    serialized state, e.g. RaggedTensorSpec(TensorShape([None, None]), tf.float32, 1, tf.int64)."""
    from ..dtypes import DType
    from ..saved_model import NamedTupleValue, TensorShape, TensorSpec, TypeSpec
    if isinstance(value, TypeSpec):
        state = value.state if isinstance(value.state, tuple) else (value.state,)
        return _type_spec_class(value) + _spec_repr(state)
    if isinstance(value, TensorShape):
        return "TensorShape([" + ", ".join("None" if d is None else str(d) for d in value) + "])"
    if isinstance(value, DType):
        return f"tf.{value.name}"
    if isinstance(value, NamedTupleValue):
        return f"{value.name}(" + ", ".join(f"{k}={_spec_repr(v)}" for k, v in value.fields.items()) + ")"
    if isinstance(value, TensorSpec):
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_spec_repr, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(map(_spec_repr, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_spec_repr(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _argument_lines(arguments, kind, indent):
    """saved_model_cli's _print_args over decoded argument specs (a dict gives its keys)."""
    from collections.abc import Iterable
    from ..dtypes import DType
    from ..saved_model import NamedTupleValue, TensorSpec, TypeSpec
    pad = "  " * indent
    lines = []
    for index, element in enumerate(arguments, 1):
        lines.append(f"{pad}{kind} #{index}")
        if isinstance(element, str):
            lines.append(f"{pad}  {element}")
        elif isinstance(element, TensorSpec):
            lines.append(f"{pad}  {element.name}: {element!r}")
        elif isinstance(element, TypeSpec):
            lines.append(f"{pad}  DType: {_type_spec_class(element)}")
            lines.append(f"{pad}  Value: {_value_text(element)}")
        elif isinstance(element, DType):
            lines.append(f"{pad}  DType: DType")
            lines.append(f"{pad}  Value: {_value_text(element)}")
        elif isinstance(element, dict):
            lines.append(f"{pad}  DType: dict")
            # TF prints "Value: {" then "'k': v, " per item and backspaces over the last ", ".
            items = "".join(f"'{k}': {_value_text(v)}, " for k, v in element.items())
            lines.append(f"{pad}  Value: {{{items}\b\b}}")
        elif isinstance(element, Iterable) and getattr(element, "ndim", 1):
            values = element.fields.values() if isinstance(element, NamedTupleValue) else element
            name = element.name if isinstance(element, NamedTupleValue) else type(element).__name__
            lines.append(f"{pad}  DType: {name}")
            items = "".join(f"{_value_text(v)}, " for v in values)
            lines.append(f"{pad}  Value: [{items}\b\b]")
        else:
            lines.append(f"{pad}  DType: {type(element).__name__}")
            lines.append(f"{pad}  Value: {element}")
    return lines


def _function_lines(functions):
    lines = ["", "Concrete Functions:"]
    for index, (name, options) in enumerate(functions.items()):
        if index:
            lines.append("")  # TF starts each function with a newline, the first one on its header line
        lines.append(f"  Function Name: '{name}'")
        for number, function in enumerate(options, 1):
            if function.args:
                lines.append(f"    Option #{number}")
                lines.append("      Callable with:")
                lines.extend(_argument_lines(function.args, "Argument", 4))
            if function.kwargs:
                lines.extend(_argument_lines(function.kwargs, "Named Argument", 4))
    return lines


def _functions_meta_graph(saved_model):
    """The meta graph whose object graph lists the functions (the first TF2 one), or None."""
    return next((m for m in saved_model.meta_graphs if m.is_tf2), None)


def show_all_lines(saved_model):
    """`saved_model_cli show --all` for a tfformats SavedModel, as a list of lines."""
    lines = []
    for meta_graph in _sorted_meta_graphs(saved_model):
        lines.append("")
        lines.append(f"MetaGraphDef with tag-set: '{', '.join(meta_graph.tags)}' "
                     "contains the following SignatureDefs:")
        for key, signature in meta_graph.signatures.items():
            lines.append("")
            lines.append(f"signature_def['{key}']:")
            lines.extend(_signature_lines(signature, 1))
        lines.append(_ops_line(meta_graph))
    with_objects = _functions_meta_graph(saved_model)
    if with_objects is not None:
        lines.extend(_function_lines(with_objects.functions()))
    return lines


def _structure_json(obj):
    from ..dtypes import DType
    from ..saved_model import NamedTupleValue, TensorSpec, TypeSpec
    if isinstance(obj, TensorSpec):
        return {"kind": type(obj).__name__, "name": obj.name, "shape": obj.shape,
                "dtype": None if obj.dtype is None else obj.dtype.name}
    if isinstance(obj, TypeSpec):
        return {"kind": "TypeSpec", "class": _type_spec_class(obj), "repr": _spec_repr(obj)}
    if isinstance(obj, DType):
        return obj.name
    if isinstance(obj, NamedTupleValue):
        return [_structure_json(v) for v in obj.fields.values()]
    if isinstance(obj, dict):
        return {str(k): _structure_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_structure_json(v) for v in obj]
    if hasattr(obj, "tolist"):
        return json_safe(obj.tolist())
    return json_safe(obj)


def _tensor_info_json(info):
    return {"dtype": info.dtype_name,
            "shape": None if info.shape is None else [-1 if d is None else d for d in info.shape],
            "name": info.tensor_name or ""}


def _signature_json(signature):
    return {"method_name": signature.method_name,
            "inputs": {k: _tensor_info_json(v) for k, v in signature.inputs.items()},
            "outputs": {k: _tensor_info_json(v) for k, v in signature.outputs.items()}}


def _show_json(args, saved_model):
    if args.tag_set is not None and not args.all:
        meta_graphs = [_find_meta_graph(saved_model, args.tag_set)]
    else:
        meta_graphs = _sorted_meta_graphs(saved_model)
    docs = []
    for meta_graph in meta_graphs:
        signatures = meta_graph.signatures
        if args.signature_def is not None and not args.all:
            signatures = {args.signature_def: _signature(meta_graph, args.signature_def)}
        doc = {"tags": meta_graph.tags,
               "signature_defs": {k: _signature_json(s) for k, s in signatures.items()}}
        if args.list_ops or args.all:
            doc["ops"] = meta_graph.ops()
        docs.append(doc)
    fields = {"path": saved_model.path, "meta_graphs": docs}
    if args.all:
        with_objects = _functions_meta_graph(saved_model)
        fields["concrete_functions"] = None if with_objects is None else [
            {"name": name, "options": [
                {"function": f.name, "args": _structure_json(f.args), "kwargs": _structure_json(f.kwargs)}
                for f in options]}
            for name, options in with_objects.functions().items()]
    emit_json(json_doc("show", **fields))
    return EXIT_OK


# How many outputs `show` prints of a graph file.
_SHOWN_OUTPUTS = 20


def _show_graph(args):
    """`show` of a graph file (a frozen GraphDef, a `.meta`): what summarize_graph says."""
    from ..graph import summarize_graph
    summary = summarize_graph(args.dir)
    if args.json:
        emit_json(json_doc("show", **summary))
        return EXIT_OK
    lines = [f"{summary['path']}: {summary['kind']}, {summary['nodes']} nodes, "
             f"{summary['functions']} functions"]
    if summary["kind"] == "MetaGraphDef":
        lines.append(f"tags: {', '.join(summary['tags']) or '-'}; SignatureDefs: "
                     f"{', '.join(summary['signatures']) or '-'}")
    lines.append(f"{len(summary['inputs'])} inputs:")
    lines.extend(f"  {i['name']}: {i['dtype'] or '?'} "
                 f"{'unknown rank' if i['shape'] is None else i['shape']}" for i in summary["inputs"])
    outputs = summary["outputs"]
    lines.append(f"{len(outputs)} outputs:")
    lines.extend(f"  {o['name']} ({o['op']})" for o in outputs[:_SHOWN_OUTPUTS])
    if len(outputs) > _SHOWN_OUTPUTS:   # a training graph's many loose ends: --json has them all
        lines.append(f"  ... and {len(outputs) - _SHOWN_OUTPUTS} more (--json lists them all)")
    lines.append(f"{summary['constants']} constants, {summary['constant_bytes']} bytes "
                 f"({human_bytes(summary['constant_bytes'])})")
    lines.append("ops: " + ", ".join(f"{op} {n}" for op, n in summary["ops"].items()))
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def cmd_show(args):
    from .. import fileio
    from ..checkpoint import is_graph_path
    from ..saved_model import load_saved_model
    if (args.dir is None) == (args.dir_option is None):
        raise UsageError("show needs one SavedModel directory: DIR or --dir DIR")
    args.dir = args.dir or args.dir_option
    if is_graph_path(args.dir) and fileio.isfile(args.dir):
        return _show_graph(args)
    saved_model = load_saved_model(args.dir)
    if args.json:
        return _show_json(args, saved_model)
    lines = []
    if args.all:
        lines = show_all_lines(saved_model)
    elif args.tag_set is None:
        if args.list_ops:
            lines.append("--list_ops must be paired with a tag-set or with --all.")
        lines.append("The given SavedModel contains the following tag-sets:")
        # saved_model_cli's order: the tag lists as stored, sorted; each printed sorted.
        for tags in sorted(m.tags for m in saved_model.meta_graphs):
            lines.append(repr(", ".join(sorted(tags))))
    else:
        meta_graph = _find_meta_graph(saved_model, args.tag_set)
        if args.list_ops:
            lines.append(_ops_line(meta_graph))
        if args.signature_def is None:
            lines.append("The given SavedModel MetaGraphDef contains SignatureDefs with the following keys:")
            lines.extend(f'SignatureDef key: "{k}"' for k in meta_graph.signatures)
        else:
            lines.extend(_signature_lines(_signature(meta_graph, args.signature_def), 0))
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK

