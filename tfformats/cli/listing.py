"""`ls`: every tensor of a checkpoint, from its index only."""

import sys

from .common import (EXIT_OK, emit_json, human_bytes, json_doc, name_matcher, object_variables,
                     open_reader, table)


def _object_path(var):
    if var is None or var.path is None:
        return None
    return var.path


def _listing(reader, pattern=None):
    """(entries, object variables by key, [(bytes, parts) of partitioned tensors]) for `ls`.

    Plain tensors need nothing beyond their Entry; a partitioned one also gets
    the entries of its parts (from the index, like everything else here).
    """
    bundle = reader.bundle
    # The object graph first: without one, looking for it is one index lookup,
    # not a name map built from the whole scan that entries() makes.
    objects = object_variables(reader)
    table = bundle.entries(checked=False)
    entries = [table[n] for n in sorted(table)]
    if pattern is not None:
        wanted = name_matcher(objects, [pattern])
        entries = [e for e in entries if wanted(e.name)]
    parts = {e.name: [bundle.part_entry(e.name, ext) for ext in e.slices]
             for e in entries if e.slices}
    return entries, objects, parts


def cmd_ls(args):
    # A listing builds columns of 100,000s of small objects that are all kept
    # until it returns: collections in between would only rescan them, and so
    # would the first one after, were they still alive when it comes.
    from ..bundle import gc_paused
    with gc_paused():
        return _ls(args)


def _has_no_variables(path):
    """Whether `path` is a SavedModel that stores no variables (TF1 SavedModels
    of constants have no variables/variables.index): a listing with no tensors."""
    import os
    from .. import fileio
    from ..checkpoint import is_saved_model_dir
    return (fileio.isdir(path) and is_saved_model_dir(path)
            and not fileio.isfile(os.path.join(path, "variables", "variables.index")))


def _ls(args):
    from ..errors import NoCheckpointError
    try:
        opened = open_reader(args.path)
    except NoCheckpointError:
        if not _has_no_variables(args.path):
            raise
        if args.json:
            emit_json(json_doc("ls", path=args.path, prefix=None, num_shards=0, tensors=[],
                               totals={"count": 0, "bytes": 0}))
        else:
            sys.stdout.write("0 tensors, 0 bytes (0 B): a SavedModel without variables\n")
        return EXIT_OK
    with opened as reader:
        if not hasattr(reader, "bundle"):   # a Keras file or a graph file
            return _ls_file(args, reader)
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
                    "full_name": None if var is None else var.full_name,
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
            emit_json(json_doc("ls", path=args.path, prefix=reader.prefix,
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
            # TF1/Keras variable names (`dense/kernel`), when the object graph records any
            full_names = ([getattr(objects.get(name), "full_name", None) or "-" for name in names]
                          if objects else [])
            has_full_names = any(f != "-" for f in full_names)
            kinds = [e.dtype.name for e in entries]
            # Tensors share a few shapes: format each shape once.
            texts = {s: "?" if s is None else repr(list(s)) for s in {e.shape for e in entries}}
            shapes = [texts[e.shape] for e in entries]
            nbytes = list(map(str, sizes))
            shards = [str(e.shard_id) if not e.slices else
                      ",".join(str(s) for s in sorted({p.shard_id for p in parts[e.name]}))
                      for e in entries]
            columns = [names, paths, kinds, shapes, nbytes, shards]
            header = ["NAME", "OBJECT PATH", "DTYPE", "SHAPE", "BYTES", "SHARD"]
            if has_full_names:
                columns.insert(2, full_names)
                header.insert(2, "FULL NAME")
            out.write(table(columns, tuple(header), right=(len(header) - 2,)))
            out.write("\n")
        out.write(f"{len(entries)} tensors, {total} bytes ({human_bytes(total)})\n")
    return EXIT_OK




def _size(reader, name):
    try:
        return reader.nbytes(name)
    except NotImplementedError:   # an HDF5 dataset with no TensorFlow dtype
        return 0


def _ls_file(args, reader):
    """`ls` of a Keras weights file (tfformats.keras: HDF5 path, Keras variable
    name, and the key a conversion to a TF checkpoint gives it) or of a graph
    file's constants (tfformats.graph): name, dtype, shape, bytes."""
    from fnmatch import fnmatchcase
    keras = hasattr(reader, "keras_name")
    keys = reader.checkpoint_keys() if keras else {}
    dtypes = reader.get_variable_to_dtype_map()
    rows = []
    for path in reader:
        name = reader.keras_name(path) if keras else None
        if args.glob is not None and not (fnmatchcase(path, args.glob) or
                                          (name and fnmatchcase(name, args.glob))):
            continue
        dtype = dtypes.get(path)
        rows.append((path, name, dtype.name if dtype else None, reader.shape(path),
                     _size(reader, path), keys.get(path)))
    total = sum(r[4] for r in rows)
    if args.json:
        tensors = []
        for p, n, d, s, b, k in rows:
            tensor = {"name": p, "dtype": d, "shape": s, "bytes": b}
            if keras:
                tensor.update(keras_name=n, checkpoint_key=k)
            tensors.append(tensor)
        emit_json(json_doc("ls", path=args.path, prefix=reader.path, format=reader.kind,
                           tensors=tensors, totals={"count": len(rows), "bytes": total}))
        return EXIT_OK
    out = sys.stdout
    if rows:
        columns = [[r[0] for r in rows], [r[2] or "?" for r in rows],
                   [repr(list(r[3])) for r in rows], [str(r[4]) for r in rows]]
        header = ["NAME", "DTYPE", "SHAPE", "BYTES"]
        if keras:
            columns.insert(1, [r[1] or "-" for r in rows])
            header.insert(1, "KERAS NAME")
        out.write(table(columns, tuple(header), right=(len(header) - 1,)))
        out.write("\n")
    out.write(f"{len(rows)} tensors, {total} bytes ({human_bytes(total)}), {reader.kind}\n")
    return EXIT_OK
