"""`convert`: checkpoint <-> .safetensors / .npz, or checkpoint -> V2 checkpoint."""

import os

from .common import EXIT_OK, UsageError, emit_json, json_doc, progress


def kind_of(path):
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return "safetensors"
    if lower.endswith(".npz"):
        return "npz"
    return "checkpoint"


def cmd_convert(args):
    from .. import convert
    src_kind, dst_kind = kind_of(args.src), kind_of(args.dst)
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
    with progress(args, None, f"converting {os.path.basename(args.src)}", unit="file") as bar:
        if src_kind == "checkpoint":
            from ..errors import UnsupportedError
            try:
                skipped = function(args.src, args.dst, skip_unsupported=args.skip_unsupported)
            except UnsupportedError as e:
                raise UnsupportedError(f"{e} (on the command line: --skip-unsupported)") from None
        else:
            function(args.src, args.dst)
        bar.update(1)
    if args.json:
        emit_json(json_doc("convert", src=args.src, dst=args.dst, src_format=src_kind,
                             dst_format=dst_kind, skipped=list(skipped or [])))
    else:
        for name in skipped or []:
            print(f"skipped {name} (no equivalent dtype in {dst_kind})")
        print(f"{args.src} ({src_kind}) -> {args.dst} ({dst_kind})")
    return EXIT_OK


