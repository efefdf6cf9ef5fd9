"""`convert`: checkpoint <-> .safetensors / .npz, or checkpoint -> V2 checkpoint."""

import os
import re

from .. import fileio
from .common import (EXIT_OK, UsageError, emit_json, json_doc, name_matcher, object_variables,
                     open_reader, show_progress)


# Extensions that name a TF checkpoint file or prefix (`model.ckpt`, `ckpt-7.index`).
_CHECKPOINT_EXTENSIONS = ("ckpt", "index")
FORMATS = ("checkpoint", "safetensors", "npz", "keras")


def kind_of(path):
    """The format a path's extension names; a checkpoint prefix for anything else."""
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return "safetensors"
    if lower.endswith(".npz"):
        return "npz"
    if lower.endswith((".keras", ".h5", ".hdf5")):
        return "keras"
    from ..checkpoint import is_graph_path
    if is_graph_path(path):
        return "graph"
    return "checkpoint"


def _checked_kind(path, what):
    """kind_of, but an extension of another format (`.pt`, `.h5`, `.json`) is a usage error."""
    kind = kind_of(path)
    extension = os.path.splitext(os.path.basename(path))[1][1:]
    # A word after the last dot is an extension; `ckpt-100` or `data-00000-of-00001` is not.
    foreign = (kind == "checkpoint" and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", extension)
               and extension.lower() not in _CHECKPOINT_EXTENSIONS)
    # An input prefix need not exist as a file (`run/model.v2` for its .index): only a file can be foreign.
    if foreign and (what == "output" or fileio.isfile(path)):
        hint = f"; or name the output format with --to {'|'.join(FORMATS)}" if what == "output" else ""
        raise UsageError(f"{what} {path}: unknown extension .{extension}; convert supports TF "
                         "checkpoints (a prefix such as out/ckpt; a SavedModel directory as input), "
                         f".safetensors, .npz and Keras files (.keras, .weights.h5, .h5), and reads "
                         f"graph files (.pb, .pbtxt, .meta){hint}")
    return kind


def cmd_convert(args):
    from .. import convert
    src_kind = _checked_kind(args.src, "input")
    dst_kind = args.to or _checked_kind(args.dst, "output")
    if "keras" in (src_kind, dst_kind):
        _no_selection(args, "Keras")
        from .keras_files import convert as convert_keras
        return convert_keras(args, src_kind, dst_kind)
    if dst_kind == "graph":
        raise UsageError(f"output {args.dst}: convert writes no graph files; name a checkpoint "
                         "prefix, a .safetensors or a .npz file")
    # A graph file's constants are read as a checkpoint's tensors (tfformats.graph).
    reads = "checkpoint" if src_kind == "graph" else src_kind
    if reads != "checkpoint" and dst_kind != "checkpoint":
        raise UsageError("convert goes between a TF checkpoint and .safetensors/.npz; "
                         f"{args.src} -> {args.dst} has no checkpoint side")
    functions = {("checkpoint", "checkpoint"): "checkpoint_to_checkpoint",   # e.g. V1 -> V2
                 ("checkpoint", "safetensors"): "checkpoint_to_safetensors",
                 ("checkpoint", "npz"): "checkpoint_to_npz",
                 ("safetensors", "checkpoint"): "safetensors_to_checkpoint",
                 ("npz", "checkpoint"): "npz_to_checkpoint"}
    function = getattr(convert, functions[reads, dst_kind])
    skipped = []
    if reads == "checkpoint":
        skipped = run_skipping(function, args, names=_selected(args))
    else:
        _no_selection(args, src_kind)
        function(args.src, args.dst, progress=show_progress(args))
    return report(args, src_kind, dst_kind, skipped, f"no equivalent dtype in {dst_kind}")


def _selected(args):
    """The keys of the source that --glob and --exclude leave (None: no selection,
    every tensor). The object graph is left out: a selection gets none."""
    if not args.glob and not args.exclude:
        return None
    from ..checkpoint import OBJECT_GRAPH_KEY
    with open_reader(args.src) as reader:
        objects = object_variables(reader)
        keys = [key for key in reader if key != OBJECT_GRAPH_KEY]
    included = name_matcher(objects, args.glob or ["*"])
    excluded = name_matcher(objects, args.exclude or [])
    keys = [key for key in keys if included(key) and not excluded(key)]
    if not keys:
        raise UsageError(f"{args.src}: no tensor is left by --glob/--exclude")
    return keys


def _no_selection(args, kind):
    if args.glob or args.exclude:
        raise UsageError(f"--glob/--exclude select tensors of a checkpoint, SavedModel or graph "
                         f"file to convert; not for {kind} files ({args.src} -> {args.dst})")


def run_skipping(function, args, names=None):
    """`function(args.src, args.dst)` for a converter that can skip tensors (of
    `names` only, unless None); returns the names skipped. Refusals say how to
    skip on the command line."""
    from ..errors import UnsupportedError
    try:
        selection = {} if names is None else {"names": names}
        return function(args.src, args.dst, skip_unsupported=args.skip_unsupported,
                        progress=show_progress(args), **selection)
    except UnsupportedError as e:
        raise UnsupportedError(f"{e} (on the command line: --skip-unsupported)") from None


def report(args, src_kind, dst_kind, skipped, why):
    """What convert prints (or its JSON document): each tensor skipped and `why`, then the result."""
    if args.json:
        emit_json(json_doc("convert", src=args.src, dst=args.dst, src_format=src_kind,
                             dst_format=dst_kind, skipped=list(skipped or [])))
    else:
        for name in skipped or []:
            print(f"skipped {name} ({why})")
        print(f"{args.src} ({src_kind}) -> {args.dst} ({dst_kind})")
    return EXIT_OK


