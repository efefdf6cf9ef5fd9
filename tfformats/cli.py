"""The `tfformats` command: inspect, validate in CI, convert and compare.

Every subcommand is a `cmd_*` function taking the parsed arguments and
returning an exit status: 0 success (or "same" / "clean"), 1 findings,
differences or an operational error, 2 a usage error. Heavy modules
(numpy-heavy readers, protobuf, tqdm) are imported inside the handlers so
that `tfformats ls` starts fast. The JSON documents are described in
docs/cli.md; every one carries `"command"` and `"schema": 1`.
"""

import argparse
import os
import sys

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 1
EXIT_USAGE = 2
SCHEMA = 1
# Tensors at least this big get a progress bar of their own in `dump`.
_BIG_TENSOR = 64 << 20


class UsageError(Exception):
    """A command line that cannot be carried out as written (exit status 2)."""


# --- output helpers --------------------------------------------------------------

def _emit_json(doc):
    import json
    # One line: json's C encoder only runs without indent (10x faster on a big `ls`).
    sys.stdout.write(json.dumps(doc, allow_nan=False))
    sys.stdout.write("\n")


def _json_doc(command, **fields):
    from . import __version__, implementation
    return {"command": command, "schema": SCHEMA, "tfformats": __version__,
            "implementation": implementation(), **fields}


class _NoBar:
    """Stands in for a tqdm bar when there is none to show."""

    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _progress(args, total, desc, unit="B"):
    """A tqdm bar on stderr when stderr is a terminal, tqdm is installed and not --quiet."""
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    scale = unit == "B"
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000,
                file=sys.stderr, leave=False, dynamic_ncols=True)


def _human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _table(columns, header, right=()):
    """Text table from columns of strings, padded to the widest cell; `right` columns right-aligned."""
    widths = [max(len(h), max(map(len, c), default=0)) for h, c in zip(header, columns)]
    last = len(header) - 1
    fmt = "  ".join(f"%{w}s" if i in right else ("%s" if i == last else f"%-{w}s")
                    for i, w in enumerate(widths))
    return "\n".join([fmt % tuple(header), *[fmt % row for row in zip(*columns)]])


def _shape_text(shape):
    return "[" + ", ".join(map(str, shape)) + "]"


# --- ls ----------------------------------------------------------------------------

def _open_reader(path, verify=True):
    from .checkpoint import CheckpointReader
    return CheckpointReader(path, verify=verify)


def _object_variables(reader):
    """key -> ObjectVariable; an unreadable object graph only costs the column."""
    from .errors import TFFormatsError
    try:
        return reader.object_variables()
    except TFFormatsError as e:
        print(f"tfformats: warning: object graph unreadable, no object paths: {e}", file=sys.stderr)
        return {}


def _object_path(var):
    if var is None or var.path is None:
        return None
    return var.path


def _listing(reader, pattern=None):
    """(entries, object variables by key, [(bytes, parts) of partitioned tensors]) for `ls`.

    Plain tensors need nothing beyond their Entry; a partitioned one also gets
    the entries of its parts (from the index, like everything else here).
    """
    from fnmatch import fnmatchcase
    bundle = reader.bundle
    table = bundle.entries(checked=False)
    objects = _object_variables(reader)
    entries = [table[n] for n in sorted(table)]
    if pattern is not None:
        def wanted(entry):
            var = objects.get(entry.name)
            return fnmatchcase(entry.name, pattern) or (
                var is not None and var.path is not None and fnmatchcase(var.path, pattern))
        entries = [e for e in entries if wanted(e)]
    parts = {e.name: [bundle.part_entry(e.name, ext) for ext in e.slices]
             for e in entries if e.slices}
    return entries, objects, parts


def cmd_ls(args):
    with _open_reader(args.path) as reader:
        entries, objects, parts = _listing(reader, args.glob)
        sizes = [e.size if not e.slices else sum(p.size for p in parts[e.name]) for e in entries]
        total = sum(sizes)
        if args.json:
            tensors = []
            for entry, size in zip(entries, sizes):
                var = objects.get(entry.name)
                pieces = parts.get(entry.name)
                tensors.append({
                    "name": entry.name,
                    "object_path": _object_path(var),
                    "attribute": None if var is None else var.attribute,
                    "dtype": entry.dtype.name,
                    "shape": None if entry.shape is None else list(entry.shape),
                    "bytes": size,
                    "shard": None if pieces else entry.shard_id,
                    "offset": None if pieces else entry.offset,
                    "parts": None if pieces is None else [
                        {"slice": [list(e) for e in ext], "shard": p.shard_id,
                         "offset": p.offset, "bytes": p.size}
                        for ext, p in zip(entry.slices, pieces)],
                })
            _emit_json(_json_doc("ls", path=args.path, prefix=reader.prefix,
                                 num_shards=reader.bundle.num_shards, tensors=tensors,
                                 totals={"count": len(entries), "bytes": total}))
            return EXIT_OK
        out = sys.stdout
        if entries:
            # Column by column with C-level helpers: this is the hot loop for big indexes.
            names = [e.name for e in entries]
            if objects:
                paths = []
                for name in names:
                    var = objects.get(name)
                    path = _object_path(var)
                    if path is not None and var.attribute != "VARIABLE_VALUE":
                        path = f"{path}:{var.attribute}"
                    paths.append(path or "-")
            else:
                paths = ["-"] * len(names)
            kinds = [e.dtype.name for e in entries]
            shapes = ["?" if e.shape is None else repr(list(e.shape)) for e in entries]
            nbytes = list(map(str, sizes))
            shards = [str(e.shard_id) if not e.slices else
                      ",".join(str(s) for s in sorted({p.shard_id for p in parts[e.name]}))
                      for e in entries]
            out.write(_table([names, paths, kinds, shapes, nbytes, shards],
                             ("NAME", "OBJECT PATH", "DTYPE", "SHAPE", "BYTES", "SHARD"), right=(4,)))
            out.write("\n")
        out.write(f"{len(entries)} tensors, {total} bytes ({_human_bytes(total)})\n")
    return EXIT_OK


# --- show --------------------------------------------------------------------------
# The text layout of `saved_model_cli show`; what is shown comes from tfformats.saved_model.

def _find_meta_graph(saved_model, tag_set):
    wanted = {t.strip() for t in tag_set.split(",") if t.strip()}
    if not wanted:
        raise UsageError("--tag_set must contain at least one non-empty tag")
    try:
        return saved_model.meta_graph(wanted)
    except KeyError:
        from .errors import TFFormatsError
        available = ", ".join(repr(",".join(sorted(m.tags))) for m in saved_model.meta_graphs)
        raise TFFormatsError(f"{saved_model.path}: no MetaGraphDef with tag-set {tag_set!r}; "
                             f"available tag-sets: {available or 'none'}") from None


def _signature(meta_graph, key):
    if key not in meta_graph.signatures:
        from .errors import TFFormatsError
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
    from .dtypes import DType
    from .saved_model import NamedTupleValue, TypeSpec
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
    from .dtypes import DType
    from .saved_model import NamedTupleValue, TensorShape, TensorSpec, TypeSpec
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
    from .dtypes import DType
    from .saved_model import NamedTupleValue, TensorSpec, TypeSpec
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
    from .dtypes import DType
    from .saved_model import NamedTupleValue, TensorSpec, TypeSpec
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
        return _json_safe(obj.tolist())
    return _json_safe(obj)


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
    _emit_json(_json_doc("show", **fields))
    return EXIT_OK


def cmd_show(args):
    from .saved_model import load_saved_model
    if (args.dir is None) == (args.dir_option is None):
        raise UsageError("show needs one SavedModel directory: DIR or --dir DIR")
    args.dir = args.dir or args.dir_option
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
        for tags in sorted(sorted(m.tags) for m in saved_model.meta_graphs):
            lines.append(repr(", ".join(tags)))
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


# --- dump --------------------------------------------------------------------------

def _resolve_tensor(reader, name):
    """A checkpoint key from a key, an object path (`model/dense/kernel`) or a
    TF variable name (`dense/kernel`, `dense/kernel:0`, as Keras shows it)."""
    if reader.has_tensor(name):
        return name
    from .errors import TensorNotFoundError, TFFormatsError
    try:
        objects = reader.object_variables()
    except TFFormatsError:
        objects = {}
    key = reader.object_paths().get(name.rstrip("/")) if objects else None
    if key is not None:
        return key
    full_name = name[:-2] if name.endswith(":0") else name
    keys = [k for k, v in objects.items()
            if v.full_name == full_name and v.attribute == "VARIABLE_VALUE" and k in reader]
    if len(keys) == 1:
        return keys[0]
    if keys:
        raise TensorNotFoundError(f"{reader.prefix}: {name!r} is the variable name of "
                                  f"{len(keys)} tensors ({', '.join(keys[:3])}, ...); name one "
                                  "by its key or object path")
    raise TensorNotFoundError(f"{reader.prefix}: no tensor, object path or variable name "
                              f"{name!r}")


def _read_with_progress(args, reader, key):
    """The tensor, its CRC checked chunk by chunk under a progress bar when it is big."""
    from ._impl import hot
    from .errors import ChecksumError
    entry = reader.entry(key)
    if (entry.slices or entry.dtype.is_string or entry.size < _BIG_TENSOR
            or not reader.bundle.raw_bytes):   # V1 has no tensor CRC to check
        return reader.get_tensor(key)
    array = reader.bundle.read_entry(entry, verify=False)
    view = memoryview(array).cast("B") if array.flags.c_contiguous else memoryview(array.tobytes())
    crc, step = 0, 16 << 20
    with _progress(args, len(view), f"checking {key}") as bar:
        for start in range(0, len(view), step):
            crc = hot.crc32c(view[start:start + step], crc)
            bar.update(min(step, len(view) - start))
    if crc != hot.unmask_crc(entry.crc32c):
        raise ChecksumError(f"{reader.prefix}: tensor {key!r} at offset {entry.offset}: "
                            "data checksum mismatch")
    return array


def _json_safe(value):
    """Values from numpy's tolist() made JSON-safe (bytes, non-finite floats, complex)."""
    import math
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": __import__("base64").b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, complex):
        return [_json_safe(value.real), _json_safe(value.imag)]
    return value


def _plain_values(array):
    """Nested Python values of an array, ml_dtypes types (bfloat16, ...) as floats."""
    import numpy as np
    if array.dtype != object and array.dtype.kind not in "biufcB?":
        array = array.astype(np.float64)  # bfloat16, float8, int4 ...: numpy kind 'V'
    if array.dtype.kind == "V":
        array = array.astype(np.float64)
    return array.tolist()


def cmd_dump(args):
    import numpy as np
    with _open_reader(args.path) as reader:
        key = _resolve_tensor(reader, args.tensor)
        array = _read_with_progress(args, reader, key)
        dtype = reader.dtype(key)
        if args.npy is not None:
            np.save(args.npy, array, allow_pickle=array.dtype == object)
            if args.json:
                _emit_json(_json_doc("dump", path=args.path, name=key, dtype=dtype.name,
                                     shape=list(array.shape), npy=args.npy))
            else:
                print(f"{key}: {dtype.name} {_shape_text(array.shape)} written to {args.npy}")
            return EXIT_OK
        if args.json:
            _emit_json(_json_doc("dump", path=args.path, name=key, dtype=dtype.name,
                                 shape=list(array.shape), values=_json_safe(_plain_values(array))))
            return EXIT_OK
        threshold = sys.maxsize if args.full else args.threshold
        options = {"threshold": threshold}
        if args.precision is not None:
            options["precision"] = args.precision
        text = np.array2string(array, **options, max_line_width=_line_width())
        sys.stdout.write(f"{key}: {dtype.name} {_shape_text(array.shape)}\n{text}\n")
    return EXIT_OK


def _line_width():
    import shutil
    return max(40, shutil.get_terminal_size((80, 24)).columns) if sys.stdout.isatty() else 75


# --- validate ----------------------------------------------------------------------

class Findings:
    """Problems found by `validate`, kept in the order they were found."""

    def __init__(self):
        self.items = []

    def add(self, target, check, message, file=None, tensor=None, offset=None):
        file = os.fspath(file) if file is not None else None
        message = " ".join(str(message).split())
        if file:  # the file has its own column; don't repeat it in the message
            for prefix in (file + ": ", os.path.basename(file) + ": "):
                if message.startswith(prefix):
                    message = message[len(prefix):]
                    break
        self.items.append({"path": target, "check": check, "file": file, "tensor": tensor,
                           "offset": offset, "message": message})

    def __len__(self):
        return len(self.items)


def _finding_line(f):
    where = f["file"] or f["path"]
    if f["offset"] is not None:
        where += f":{f['offset']}"
    tensor = f" tensor {f['tensor']!r}:" if f["tensor"] is not None else ""
    return f"{where}:{tensor} {f['message']} [{f['check']}]"


def _validate_checkpoint(target, prefix, findings, args, stats):
    """Check index blocks, entries, shards, bounds and CRCs; never stops at the first problem."""
    from . import protos
    from ._impl import hot
    from .bundle import BundleReader, HEADER_KEY, data_filename
    from .checkpoint import OBJECT_GRAPH_KEY
    from .errors import CheckpointNotFoundError, ChecksumError, TFFormatsError
    from .slices import is_slice_key
    from .sstable import Table

    index_path = prefix + ".index"
    try:
        bundle = BundleReader(prefix, verify=False)
    except TFFormatsError as e:
        findings.add(target, "index", e, file=index_path)
        return
    try:
        table = bundle._table
        try:
            Table(table.source, verify=True)
        except TFFormatsError as e:
            findings.add(target, "index-crc", e, file=index_path)
        checked = Table.__new__(Table)
        checked.__dict__.update(table.__dict__, verify=True, _cache={})
        entries = {}
        for i, (offset, size) in enumerate(table._handles):
            try:
                checked._block(offset, size, "data block")
            except ChecksumError:
                findings.add(target, "index-crc", "index data block checksum mismatch",
                             file=index_path, offset=offset)
            except TFFormatsError as e:
                findings.add(target, "index", e, file=index_path, offset=offset)
                continue
            where = f"{index_path}: data block at offset {offset}"
            try:
                items = hot.block_entries(table._data_block(i), where)
            except TFFormatsError as e:
                findings.add(target, "index", e, file=index_path, offset=offset)
                continue
            for key, raw in items:
                if key == HEADER_KEY or is_slice_key(key):
                    continue
                try:
                    entry = bundle._decode(key, raw)
                except TFFormatsError as e:
                    findings.add(target, "entry", e, file=index_path,
                                 tensor=key.decode("utf-8", "surrogateescape"))
                    continue
                entries[entry.name] = entry
        stats["tensors"] += len(entries)

        # The stored pieces: plain entries, and every part of a partitioned one.
        pieces = []
        for name in sorted(entries):
            entry = entries[name]
            if not entry.slices:
                pieces.append((name, entry))
                continue
            for extents in entry.slices:
                try:
                    pieces.append((name, bundle.part_entry(name, extents)))
                except TFFormatsError as e:
                    findings.add(target, "entry", e, file=index_path, tensor=name)

        missing = {}
        for shard in sorted({p.shard_id for _, p in pieces}):
            try:
                bundle._shard(shard)
            except CheckpointNotFoundError:
                missing[shard] = data_filename(prefix, shard, bundle.num_shards)
        for shard, path in missing.items():
            count = sum(1 for _, p in pieces if p.shard_id == shard)
            findings.add(target, "shard", f"data shard {shard} of {bundle.num_shards} is missing "
                         f"({count} tensors stored there)", file=path)
        total = sum(p.size for _, p in pieces if p.shard_id not in missing)
        with _progress(args, total, f"validating {os.path.basename(prefix)}") as bar:
            for name, piece in pieces:
                if piece.shard_id in missing:
                    continue
                _check_piece(target, bundle, name, piece, findings, data_filename, hot)
                stats["bytes"] += piece.size
                bar.update(piece.size)

        if OBJECT_GRAPH_KEY in entries:
            try:
                raw = bundle.read_entry(entries[OBJECT_GRAPH_KEY], verify=False).item()
                graph = protos.TrackableObjectGraph.FromString(raw)
            except Exception as e:  # any failure to decode is a finding, not a crash
                findings.add(target, "object-graph", f"object graph does not parse ({e})",
                             file=index_path, tensor=OBJECT_GRAPH_KEY)
            else:
                _check_trackable_graph(target, graph, entries, findings, index_path)
        # Every shard a header promises should exist, even when no tensor lives there.
        for shard in range(bundle.num_shards):
            path = data_filename(prefix, shard, bundle.num_shards)
            if shard not in missing and not os.path.exists(path):
                findings.add(target, "shard", f"data shard {shard} of {bundle.num_shards} is missing",
                             file=path)
    finally:
        bundle.close()


def _validate_v1(target, prefix, findings, stats):
    """A TF1 V1 checkpoint has no tensor checksums: check every table block's
    CRC and that every tensor decodes from its records, by reading each one."""
    from .errors import ChecksumError, TFFormatsError
    from .v1 import V1Reader
    try:
        reader = V1Reader(prefix)
    except TFFormatsError as e:
        findings.add(target, "index-crc" if isinstance(e, ChecksumError) else "index", e,
                     file=prefix)
        return
    try:
        for name, (dtype, _) in reader.decoded_entries():
            if dtype.as_numpy_dtype is None:   # no array form (variant): nothing to decode
                continue
            try:
                value = reader.read(name)
            except TFFormatsError as e:
                findings.add(target, "crc" if isinstance(e, ChecksumError) else "tensor", e,
                             file=prefix, tensor=name)
                continue
            stats["tensors"] += 1
            stats["bytes"] += value.nbytes
    finally:
        reader.close()


def _check_piece(target, bundle, name, entry, findings, data_filename, hot):
    import math

    from .bundle import variant_crc
    from .errors import ChecksumError, TFFormatsError
    path = data_filename(bundle.prefix, entry.shard_id, bundle.num_shards)
    try:
        source = bundle._shard(entry.shard_id)
    except TFFormatsError as e:
        findings.add(target, "shard", e, file=path, tensor=name)
        return
    end = entry.offset + entry.size
    if end > source.size():
        findings.add(target, "bounds", f"needs bytes {entry.offset}..{end} but the shard has "
                     f"{source.size()} (truncated?)", file=path, tensor=name, offset=entry.offset)
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
        findings.add(target, "crc", "data checksum mismatch", file=path, tensor=name, offset=entry.offset)
    except TFFormatsError as e:
        findings.add(target, "tensor", e, file=path, tensor=name, offset=entry.offset)


def _check_trackable_graph(target, graph, entries, findings, file):
    from .checkpoint import OBJECT_GRAPH_KEY, saveable_keys
    n = len(graph.nodes)
    names = sorted(entries)
    for node_id, node in enumerate(graph.nodes):
        for child in node.children:
            if not 0 <= child.node_id < n:
                findings.add(target, "object-graph", f"node {node_id} child {child.local_name!r} points "
                             f"to node {child.node_id}; the graph has {n} nodes", file=file,
                             tensor=OBJECT_GRAPH_KEY)
        for ref in node.slot_variables:
            for what, ref_id in (("variable", ref.original_variable_node_id),
                                 ("slot variable", ref.slot_variable_node_id)):
                if not 0 <= ref_id < n:
                    findings.add(target, "object-graph", f"node {node_id} slot {ref.slot_name!r} names "
                                 f"{what} node {ref_id}; the graph has {n} nodes", file=file,
                                 tensor=OBJECT_GRAPH_KEY)
        for attr in node.attributes:
            if attr.checkpoint_key not in entries and not saveable_keys(attr.checkpoint_key, names):
                findings.add(target, "object-graph", f"node {node_id} attribute {attr.name!r} names "
                             f"checkpoint key {attr.checkpoint_key!r}, which is not in the bundle",
                             file=file, tensor=OBJECT_GRAPH_KEY)


def _validate_saved_model(target, directory, findings, args, stats):
    from . import fingerprint, protos
    from .graph import parse_message
    from .errors import TFFormatsError
    from .saved_model import SAVED_MODEL_PB, SAVED_MODEL_PBTXT, load_saved_model

    pb = os.path.join(directory, SAVED_MODEL_PB)
    model_file = pb if os.path.exists(pb) else os.path.join(directory, SAVED_MODEL_PBTXT)
    saved_model = None
    if not os.path.exists(model_file):
        findings.add(target, "proto", "no saved_model.pb or saved_model.pbtxt", file=directory)
    else:
        try:
            saved_model = load_saved_model(directory)
        except (TFFormatsError, OSError) as e:
            findings.add(target, "proto", e, file=model_file)
    stats["files"] += saved_model is not None
    for name, cls in (("keras_metadata.pb", protos.SavedMetadata),
                      (fingerprint.FINGERPRINT_FILENAME, protos.FingerprintDef)):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            try:
                with open(path, "rb") as f:
                    parse_message(cls, f.read(), path)
                stats["files"] += 1
            except (TFFormatsError, OSError) as e:
                findings.add(target, "proto", e, file=path)
    if saved_model is not None:
        # Dangling references, missing assets and variables, the fingerprint.
        try:
            for f in saved_model.findings():
                findings.add(target, f.check, f.message, file=f.file or model_file)
        except TFFormatsError as e:
            findings.add(target, "proto", e, file=model_file)
        finally:
            saved_model.close()
    prefix = os.path.join(directory, "variables", "variables")
    if os.path.exists(prefix + ".index"):
        _validate_checkpoint(target, prefix, findings, args, stats)
    elif any(n.startswith("variables.data-") for n in _listdir(os.path.join(directory, "variables"))):
        findings.add(target, "index", "variables data shards without variables.index",
                     file=prefix + ".index")


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def cmd_validate(args):
    from .checkpoint import _is_saved_model_dir, is_v1_prefix, resolve_prefix
    from .errors import TFFormatsError
    findings = Findings()
    reports = []
    for target in args.paths:
        stats = {"tensors": 0, "bytes": 0, "files": 0}
        before = len(findings)
        kind = "checkpoint"
        if os.path.isdir(target) and (_is_saved_model_dir(target) or os.path.isdir(os.path.join(target, "variables"))):
            kind = "saved_model"
            _validate_saved_model(target, target, findings, args, stats)
        else:
            try:
                prefix = resolve_prefix(target)
            except TFFormatsError as e:
                findings.add(target, "path", e, file=target)
            else:
                if is_v1_prefix(prefix):
                    _validate_v1(target, prefix, findings, stats)
                else:
                    _validate_checkpoint(target, prefix, findings, args, stats)
        reports.append({"path": target, "kind": kind, "tensors": stats["tensors"], "bytes": stats["bytes"],
                        "proto_files": stats["files"], "findings": len(findings) - before})
    if args.json:
        _emit_json(_json_doc("validate", ok=not len(findings), paths=reports, findings=findings.items))
    else:
        out = sys.stdout
        for f in findings.items:
            out.write(_finding_line(f) + "\n")
        for r in reports:
            status = "OK" if not r["findings"] else f"{r['findings']} finding(s)"
            out.write(f"{r['path']}: {status} ({r['kind']}, {r['tensors']} tensors, "
                      f"{_human_bytes(r['bytes'])} checked)\n")
    return EXIT_FINDINGS if len(findings) else EXIT_OK


# --- fingerprint -------------------------------------------------------------------

def cmd_fingerprint(args):
    from . import fingerprint
    if not os.path.isdir(args.dir):
        from .errors import CheckpointNotFoundError
        raise CheckpointNotFoundError(f"{args.dir}: not a SavedModel directory")
    computed = fingerprint.compute_fingerprint(args.dir)
    findings = fingerprint.check_fingerprint(args.dir) if args.check else []
    if args.write:
        fingerprint.write_fingerprint(args.dir, computed)
    hashes = {name: getattr(computed, name) for name in fingerprint.HASH_FIELDS}
    single = fingerprint.singleprint(computed)
    if args.json:
        _emit_json(_json_doc("fingerprint", path=args.dir, hashes={k: str(v) for k, v in hashes.items()},
                             singleprint=single, producer=computed.version.producer,
                             checked=args.check, matches=None if not args.check else not findings,
                             findings=findings, written=args.write))
    else:
        for name, value in hashes.items():
            print(f"{name}: {value}")
        print(f"singleprint: {single}")
        if args.check:
            for message in findings:
                print(message if message.startswith(args.dir) else f"{args.dir}: {message}")
            print("fingerprint.pb: " + ("matches" if not findings else "MISMATCH"))
        if args.write:
            print(f"wrote {os.path.join(args.dir, fingerprint.FINGERPRINT_FILENAME)}")
    return EXIT_FINDINGS if findings else EXIT_OK


# --- convert -----------------------------------------------------------------------

def _kind_of(path):
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return "safetensors"
    if lower.endswith(".npz"):
        return "npz"
    return "checkpoint"


def cmd_convert(args):
    from . import convert
    src_kind, dst_kind = _kind_of(args.src), _kind_of(args.dst)
    if src_kind != "checkpoint" and dst_kind != "checkpoint":
        raise UsageError("convert goes between a TF checkpoint and .safetensors/.npz; "
                         f"{args.src} -> {args.dst} has no checkpoint side")
    functions = {("checkpoint", "checkpoint"): "checkpoint_to_checkpoint",   # e.g. V1 -> V2
                 ("checkpoint", "safetensors"): "checkpoint_to_safetensors",
                 ("checkpoint", "npz"): "checkpoint_to_npz",
                 ("safetensors", "checkpoint"): "safetensors_to_checkpoint",
                 ("npz", "checkpoint"): "npz_to_checkpoint"}
    function = getattr(convert, functions[src_kind, dst_kind])
    skipped = []
    with _progress(args, None, f"converting {os.path.basename(args.src)}", unit="file") as bar:
        if src_kind == "checkpoint":
            from .errors import UnsupportedError
            try:
                skipped = function(args.src, args.dst, skip_unsupported=args.skip_unsupported)
            except UnsupportedError as e:
                raise UnsupportedError(f"{e} (on the command line: --skip-unsupported)") from None
        else:
            function(args.src, args.dst)
        bar.update(1)
    if args.json:
        _emit_json(_json_doc("convert", src=args.src, dst=args.dst, src_format=src_kind,
                             dst_format=dst_kind, skipped=list(skipped or [])))
    else:
        for name in skipped or []:
            print(f"skipped {name} (no equivalent dtype in {dst_kind})")
        print(f"{args.src} ({src_kind}) -> {args.dst} ({dst_kind})")
    return EXIT_OK


# --- diff --------------------------------------------------------------------------

class _Source:
    """Tensors by name from a checkpoint; a .safetensors or .npz file is read by
    converting it into a temporary checkpoint first, so dtypes (bfloat16, ...)
    and the object graph come back exactly as `convert` stores them."""

    def __init__(self, path):
        import tempfile
        self.path = path
        self.kind = _kind_of(path)
        self._tmp = None
        prefix = path
        if self.kind != "checkpoint":
            from . import convert
            if not os.path.isfile(path):
                from .errors import CheckpointNotFoundError
                raise CheckpointNotFoundError(f"{path}: no such file")
            self._tmp = tempfile.TemporaryDirectory(prefix="tfformats-diff-")
            prefix = os.path.join(self._tmp.name, "ckpt")
            to_checkpoint = (convert.safetensors_to_checkpoint if self.kind == "safetensors"
                             else convert.npz_to_checkpoint)
            to_checkpoint(path, prefix)
        self.reader = _open_reader(prefix)
        self.names = sorted(self.reader.bundle.entries())

    def meta(self, name):
        entry = self.reader.entry(name)
        return entry.dtype.name, tuple(entry.shape)

    def get(self, name):
        entry = self.reader.entry(name)
        if entry.dtype.as_numpy_dtype is None:   # variant / resource: compare the stored bytes
            import numpy as np
            return np.frombuffer(bytes(self.reader.bundle.raw(entry)[1]), np.uint8)
        return self.reader.get_tensor(name)

    def close(self):
        self.reader.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def _compare(a, b, atol, rtol):
    """(same, max_abs_diff or None, mismatched count) of two arrays of one shape."""
    import numpy as np
    if a.dtype == object or b.dtype == object:
        flat_a, flat_b = a.ravel().tolist(), b.ravel().tolist()
        bad = sum(x != y for x, y in zip(flat_a, flat_b))
        return bad == 0, None, bad
    if a.dtype.kind == "b" or b.dtype.kind == "b":
        bad = int(np.count_nonzero(a != b))
        return bad == 0, float(bad > 0), bad
    if a.dtype.kind in "iu" and b.dtype.kind in "iu" and a.dtype.itemsize <= 8 and a.dtype != np.uint64:
        x, y = a.astype(np.int64), b.astype(np.int64)
    elif a.dtype.kind == "c" or b.dtype.kind == "c":
        x, y = a.astype(np.complex128), b.astype(np.complex128)
    else:
        x, y = a.astype(np.float64), b.astype(np.float64)
    if x.size == 0:
        return True, 0.0, 0
    both_nan = np.isnan(x) & np.isnan(y) if x.dtype.kind in "fc" else np.zeros(x.shape, bool)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(x - y)
        close = (diff <= atol + rtol * np.abs(y)) | (x == y) | both_nan
    bad = int(x.size - np.count_nonzero(close))
    finite = diff[~both_nan]
    max_diff = float(np.nanmax(finite)) if finite.size and not np.all(np.isnan(finite)) else 0.0
    return bad == 0, max_diff, bad


def cmd_diff(args):
    a, b = _Source(args.a), _Source(args.b)
    try:
        names_a, names_b = set(a.names), set(b.names)
        if a.kind != "checkpoint" or b.kind != "checkpoint":
            # Only a checkpoint has the object graph as a tensor; convert keeps it as metadata.
            from .checkpoint import OBJECT_GRAPH_KEY
            names_a.discard(OBJECT_GRAPH_KEY)
            names_b.discard(OBJECT_GRAPH_KEY)
        only_a, only_b = sorted(names_a - names_b), sorted(names_b - names_a)
        common = sorted(names_a & names_b)
        changed = []
        with _progress(args, len(common), "comparing", unit="tensor") as bar:
            for name in common:
                (dt_a, sh_a), (dt_b, sh_b) = a.meta(name), b.meta(name)
                record = {"name": name, "a": {"dtype": dt_a, "shape": list(sh_a)},
                          "b": {"dtype": dt_b, "shape": list(sh_b)}}
                if dt_a != dt_b:
                    changed.append({**record, "change": "dtype"})
                elif tuple(sh_a) != tuple(sh_b):
                    changed.append({**record, "change": "shape"})
                else:
                    same, max_diff, bad = _compare(a.get(name), b.get(name), args.atol, args.rtol)
                    if not same:
                        changed.append({**record, "change": "values", "max_abs_diff": max_diff,
                                        "mismatched": bad})
                bar.update(1)
    finally:
        a.close()
        b.close()
    same = not (only_a or only_b or changed)
    if args.json:
        _emit_json(_json_doc("diff", a=args.a, b=args.b, atol=args.atol, rtol=args.rtol, same=same,
                             compared=len(common), only_in_a=only_a, only_in_b=only_b,
                             changed=_json_safe(changed)))
    else:
        out = sys.stdout
        for name in only_a:
            out.write(f"only in A: {name}\n")
        for name in only_b:
            out.write(f"only in B: {name}\n")
        for c in changed:
            a_meta = f"{c['a']['dtype']} {_shape_text(c['a']['shape'])}"
            b_meta = f"{c['b']['dtype']} {_shape_text(c['b']['shape'])}"
            if c["change"] == "values":
                detail = f"{c['mismatched']} values differ"
                if c["max_abs_diff"] is not None:
                    detail += f", max abs diff {c['max_abs_diff']:.6g}"
                out.write(f"values differ: {c['name']} ({detail})\n")
            else:
                out.write(f"{c['change']} differs: {c['name']}: {a_meta} -> {b_meta}\n")
        verdict = "same" if same else "differ"
        out.write(f"{len(common)} tensors compared, {len(only_a)} only in A, {len(only_b)} only in B, "
                  f"{len(changed)} changed: {verdict}\n")
    return EXIT_OK if same else EXIT_FINDINGS


# --- bench -------------------------------------------------------------------------

def bench_worker(path, verify):
    """One measured pass (after a warm-up): open, read every tensor. Prints JSON."""
    import json
    import time
    from . import implementation
    from .checkpoint import CheckpointReader

    def one_pass():
        start = time.perf_counter()
        with CheckpointReader(path, verify=verify) as reader:
            total = 0
            for name in reader:
                total += reader.get_tensor(name).nbytes
        return time.perf_counter() - start, total

    one_pass()
    seconds, total = one_pass()
    print(json.dumps({"implementation": implementation(), "seconds": seconds, "bytes": total}))


def _run_worker(path, verify, pure):
    import json
    import subprocess
    env = dict(os.environ)
    env["TFFORMATS_PUREPYTHON"] = "1" if pure else "0"
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    code = "import sys; from tfformats.cli import bench_worker; bench_worker(sys.argv[1], sys.argv[2] == '1')"
    proc = subprocess.run([sys.executable, "-c", code, path, "1" if verify else "0"],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        from .errors import TFFormatsError
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise TFFormatsError(f"benchmark worker failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cmd_bench(args):
    import statistics
    from . import _impl
    if args.rounds < 1:
        raise UsageError("--rounds must be at least 1")
    _open_reader(args.path).close()  # fail early, with the reader's message, on a bad path
    native_available = True
    try:
        import importlib
        importlib.import_module("tfformats._native")
    except ImportError:
        native_available = False
    sides = [("python", True)] + ([("native", False)] if native_available else [])
    results = {(impl, verify): [] for impl, _ in sides for verify in (True, False)}
    total_bytes = 0
    with _progress(args, args.rounds * len(results), "benchmarking", unit="run") as bar:
        for _ in range(args.rounds):  # alternate the sides, round after round
            for verify in (True, False):
                for impl, pure in sides:
                    r = _run_worker(args.path, verify, pure)
                    results[impl, verify].append(r["seconds"])
                    total_bytes = r["bytes"]
                    bar.update(1)
    rows = []
    for (impl, verify), times in results.items():
        median = statistics.median(times)
        rows.append({"implementation": impl, "crc": verify, "median_seconds": median,
                     "mb_per_s": (total_bytes / 1e6) / median if median > 0 else None,
                     "rounds": times})
    del _impl
    if args.json:
        _emit_json(_json_doc("bench", path=args.path, bytes=total_bytes, native_available=native_available,
                             results=rows))
        return EXIT_OK
    print(f"{args.path}: {total_bytes} bytes ({_human_bytes(total_bytes)}); median of {args.rounds} "
          f"round(s), open + read every tensor")
    body = [(r["implementation"], "on" if r["crc"] else "off", f"{r['median_seconds'] * 1e3:.1f}",
             f"{r['mb_per_s']:.1f}" if r["mb_per_s"] is not None else "-") for r in rows]
    print(_table(list(zip(*body)), ("IMPLEMENTATION", "CRC", "MS", "MB/S"), right=(2, 3)))
    if not native_available:
        print("native implementation not built; only the pure-Python one was measured")
    else:
        for verify in (True, False):
            py = statistics.median(results["python", verify])
            nat = statistics.median(results["native", verify])
            print(f"native speed-up with CRC {'on' if verify else 'off'}: {py / nat:.2f}x")
    return EXIT_OK


# --- the parser --------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message):
        sys.stderr.write(f"tfformats: error: {message} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)


_EXAMPLES = {
    "ls": "examples:\n  tfformats ls run/ckpt-7\n  tfformats ls export/1 --glob '*/kernel*' --json",
    "show": ("examples:\n  tfformats show export/1\n  tfformats show export/1 --tag_set serve\n"
             "  tfformats show export/1 --tag_set serve --signature_def serving_default\n"
             "  tfformats show export/1 --all"),
    "dump": ("examples:\n  tfformats dump run/ckpt-7 model/dense/kernel\n"
             "  tfformats dump run/ckpt-7 'dense/kernel/.ATTRIBUTES/VARIABLE_VALUE' --full --precision 3\n"
             "  tfformats dump run/ckpt-7 model/dense/kernel --npy kernel.npy"),
    "validate": ("examples:\n  tfformats validate run/ckpt-7 export/1\n"
                 "  tfformats validate export/1 --json > report.json\n"
                 "exit status: 0 clean, 1 findings, 2 usage error"),
    "fingerprint": ("examples:\n  tfformats fingerprint export/1\n  tfformats fingerprint export/1 --check\n"
                    "  tfformats fingerprint export/1 --write"),
    "convert": ("examples:\n  tfformats convert run/ckpt-7 model.safetensors\n"
                "  tfformats convert export/1 weights.npz\n  tfformats convert model.safetensors out/ckpt\n"
                "  tfformats convert slim/inception_v3.ckpt out/ckpt   # a TF1 V1 file -> V2 bundle"),
    "diff": ("examples:\n  tfformats diff run/ckpt-6 run/ckpt-7\n"
             "  tfformats diff run/ckpt-7 model.safetensors --atol 1e-6 --json\n"
             "exit status: 0 same, 1 different"),
    "bench": "examples:\n  tfformats bench run/ckpt-7 --rounds 5",
}


def _version_text():
    from . import __version__, implementation
    return f"tfformats {__version__} ({implementation()} implementation)"


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version_text())
        parser.exit()


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bar")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    parser = _Parser(prog="tfformats", parents=[common],
                     description="Inspect, validate, convert and compare TensorFlow checkpoints and "
                                 "SavedModels without TensorFlow.",
                     epilog="Run 'tfformats COMMAND --help' for a command's options and examples.")
    parser.add_argument("--version", action=_VersionAction, help="print the version and implementation")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name, help, handler):
        p = sub.add_parser(name, parents=[common], help=help, description=help, epilog=_EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(handler=handler)
        return p

    def add_json(p):
        p.add_argument("--json", action="store_true", help="machine-readable output (see docs/cli.md)")

    p = command("ls", "list every tensor (from the index only)", cmd_ls)
    p.add_argument("path", help="checkpoint prefix, .index/.data file, checkpoint dir or SavedModel dir")
    p.add_argument("--glob", metavar="PATTERN", help="only names or object paths matching this pattern")
    add_json(p)

    p = command("show", "what `saved_model_cli show` prints, without TensorFlow", cmd_show)
    p.add_argument("dir", nargs="?", help="SavedModel directory")
    p.add_argument("--dir", dest="dir_option", metavar="DIR",
                   help="the same, spelled as saved_model_cli spells it")
    p.add_argument("--all", action="store_true", help="everything: all tag-sets, signatures, ops, functions")
    p.add_argument("--tag_set", "--tag-set", metavar="T", help="comma-separated tags of one MetaGraphDef")
    p.add_argument("--signature_def", "--signature-def", metavar="S", help="one SignatureDef key (needs --tag_set)")
    p.add_argument("--list_ops", "--list-ops", action="store_true", help="ops used by the MetaGraphDef")
    add_json(p)

    p = command("dump", "print one tensor's values (or write them to .npy)", cmd_dump)
    p.add_argument("path", help="checkpoint or SavedModel")
    p.add_argument("tensor", help="checkpoint key, object path or TF variable name (dense/kernel:0)")
    p.add_argument("--threshold", type=int, default=1000, metavar="N",
                   help="summarize arrays with more than N elements (numpy's threshold; default 1000)")
    p.add_argument("--precision", type=int, metavar="P", help="digits after the point")
    p.add_argument("--full", action="store_true", help="never summarize")
    p.add_argument("--npy", metavar="OUT", help="write the tensor to this .npy file instead")
    add_json(p)

    p = command("validate", "check CRCs, shards, bounds, protos and fingerprints (for CI)", cmd_validate)
    p.add_argument("paths", nargs="+", metavar="PATH", help="checkpoints or SavedModel directories")
    add_json(p)

    p = command("fingerprint", "compute a SavedModel's fingerprint hashes", cmd_fingerprint)
    p.add_argument("dir", help="SavedModel directory")
    p.add_argument("--check", action="store_true", help="compare with fingerprint.pb; exit 1 on mismatch")
    p.add_argument("--write", action="store_true", help="(re)write fingerprint.pb")
    add_json(p)

    p = command("convert", "checkpoint <-> .safetensors / .npz (by extension), or -> V2 checkpoint",
                cmd_convert)
    p.add_argument("src", help="checkpoint / SavedModel dir, or a .safetensors / .npz file")
    p.add_argument("dst", help="a .safetensors / .npz file, or a checkpoint prefix")
    p.add_argument("--skip-unsupported", action="store_true",
                   help="leave out tensors the target format cannot hold (strings) instead of failing")
    add_json(p)

    p = command("diff", "compare the tensors of two checkpoints (or .safetensors / .npz)", cmd_diff)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0)")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0)")
    add_json(p)

    p = command("bench", "decode throughput: native vs pure Python, CRC on and off", cmd_bench)
    p.add_argument("path")
    p.add_argument("--rounds", type=int, default=3, metavar="N", help="rounds per side (default 3)")
    add_json(p)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        sys.stdout.reconfigure(errors="backslashreplace")
    except (AttributeError, ValueError):
        pass
    try:
        status = args.handler(args)
        sys.stdout.flush()
        return status
    except UsageError as e:
        _report(e, debug)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`tfformats ls x | head`): not an error worth a message.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("tfformats: interrupted\n")
        return 130
    except Exception as e:
        from .errors import TFFormatsError
        if not isinstance(e, (TFFormatsError, OSError)):
            _report(e, debug, unexpected=True)
        else:
            _report(e, debug)
        return EXIT_ERROR


def _report(exc, debug, unexpected=False):
    if debug:
        import traceback
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    message = " ".join(str(exc).split()) or type(exc).__name__
    if unexpected:
        message = f"unexpected {type(exc).__name__}: {message}"
        if not debug:
            message += " (rerun with --debug for the traceback)"
    sys.stderr.write(f"tfformats: error: {message}\n")
