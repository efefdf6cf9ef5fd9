"""`diff`: compare the tensors of two checkpoints (or .safetensors / .npz files)."""

import contextlib
import os
import sys

from .. import fileio
from .common import EXIT_FINDINGS, EXIT_OK, emit_json, json_doc, json_safe, open_reader, progress, shape_text
from .convert import kind_of


class _Source:
    """Tensors by name from a checkpoint; a .safetensors or .npz file is read by
    converting it into a temporary checkpoint first, so dtypes (bfloat16, ...)
    and the object graph come back exactly as `convert` stores them."""

    def __init__(self, path):
        self.path = path
        self.kind = kind_of(path)
        self._scratch = contextlib.ExitStack()
        try:
            self._open(path)
        except BaseException:   # nothing left behind in the scratch directory
            self._scratch.close()
            raise

    def _open(self, path):
        if self.kind == "keras":   # by Keras variable name (tfformats.keras)
            from ..keras import by_variable_name
            self.reader = by_variable_name(path)
            self.names = list(self.reader)
            return
        if self.kind == "graph":   # its constants (tfformats.graph)
            self.reader = open_reader(path)
            self.names = list(self.reader)
            return
        prefix = path
        if self.kind != "checkpoint":
            from .. import convert
            if not fileio.isfile(path):
                from ..errors import CheckpointNotFoundError
                raise CheckpointNotFoundError(f"{path}: no such file")
            workdir = self._scratch.enter_context(fileio.scratch_dir("tfformats-diff-"))
            prefix = os.path.join(workdir, "ckpt")
            to_checkpoint = (convert.safetensors_to_checkpoint if self.kind == "safetensors"
                             else convert.npz_to_checkpoint)
            to_checkpoint(path, prefix)
        self.reader = open_reader(prefix)
        self.names = sorted(self.reader.bundle.entries())

    def key(self, name):
        """The key `name` stands for here (tfformats/names.py), or None; an
        ambiguous name is an error (AmbiguousNameError)."""
        from ..errors import AmbiguousNameError
        try:
            return self.reader.key(name)
        except AmbiguousNameError:
            raise
        except KeyError:
            return None

    def meta(self, name):
        entry = self.reader.entry(name)
        return entry.dtype.name, tuple(entry.shape)

    def get(self, name):
        entry = self.reader.entry(name)
        if entry.dtype.as_numpy_dtype is None and hasattr(self.reader, "bundle"):   # variant: stored bytes
            import numpy as np
            return np.frombuffer(bytes(self.reader.bundle.raw(entry)[1]), np.uint8)
        return self.reader.get_tensor(name)

    def close(self):
        self.reader.close()
        self._scratch.close()


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


def _named(a, b, tensors):
    """(only in A, only in B, [(name, key in A, key in B)]) for the tensors named."""
    only_a, only_b, common = [], [], []
    for name in dict.fromkeys(tensors):
        key_a, key_b = a.key(name), b.key(name)
        if key_a is None and key_b is None:
            a.reader.key(name)   # raises, with the closest names
        elif key_b is None:
            only_a.append(name)
        elif key_a is None:
            only_b.append(name)
        else:
            common.append((name, key_a, key_b))
    return only_a, only_b, common


def cmd_diff(args):
    a, b = _Source(args.a), _Source(args.b)
    try:
        if {a.kind, b.kind} == {"keras", "checkpoint"}:   # compare by variable name
            from .keras_files import by_variable_name
            by_variable_name(b if a.kind == "keras" else a)
        if getattr(args, "tensors", None):
            only_a, only_b, pairs = _named(a, b, args.tensors)
        else:
            only_a, only_b, pairs = _all_names(a, b)
        common = [name for name, _, _ in pairs]
        changed = []
        from ..checkpoint import tensor_nbytes
        with progress(args, sum(tensor_nbytes(a.reader, k) for _, k, _ in pairs), "comparing") as bar:
            for name, key_a, key_b in pairs:
                (dt_a, sh_a), (dt_b, sh_b) = a.meta(key_a), b.meta(key_b)
                record = {"name": name, "a": {"dtype": dt_a, "shape": list(sh_a)},
                          "b": {"dtype": dt_b, "shape": list(sh_b)}}
                if dt_a != dt_b:
                    changed.append({**record, "change": "dtype"})
                elif tuple(sh_a) != tuple(sh_b):
                    changed.append({**record, "change": "shape"})
                else:
                    same, max_diff, bad = _compare(a.get(key_a), b.get(key_b), args.atol, args.rtol)
                    if not same:
                        changed.append({**record, "change": "values", "max_abs_diff": max_diff,
                                        "mismatched": bad})
                bar.update(tensor_nbytes(a.reader, key_a))
    finally:
        a.close()
        b.close()
    return _report(args, only_a, only_b, common, changed)


def _all_names(a, b):
    """(only in A, only in B, [(key, key, key)]) over every tensor of both sides."""
    names_a, names_b = set(a.names), set(b.names)
    if a.kind != "checkpoint" or b.kind != "checkpoint":
        # Only a checkpoint has the object graph as a tensor; convert keeps it as metadata.
        from ..checkpoint import OBJECT_GRAPH_KEY
        names_a.discard(OBJECT_GRAPH_KEY)
        names_b.discard(OBJECT_GRAPH_KEY)
    only_a, only_b = sorted(names_a - names_b), sorted(names_b - names_a)
    return only_a, only_b, [(n, n, n) for n in sorted(names_a & names_b)]


def _report(args, only_a, only_b, common, changed):
    same = not (only_a or only_b or changed)
    if args.json:
        emit_json(json_doc("diff", a=args.a, b=args.b, atol=args.atol, rtol=args.rtol, same=same,
                             compared=len(common), only_in_a=only_a, only_in_b=only_b,
                             changed=json_safe(changed)))
    else:
        out = sys.stdout
        for name in only_a:
            out.write(f"only in A: {name}\n")
        for name in only_b:
            out.write(f"only in B: {name}\n")
        for c in changed:
            a_meta = f"{c['a']['dtype']} {shape_text(c['a']['shape'])}"
            b_meta = f"{c['b']['dtype']} {shape_text(c['b']['shape'])}"
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

