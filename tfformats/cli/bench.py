"""`bench`: how fast tfformats decodes a checkpoint, against TensorFlow's reader and
safetensors on the same tensors, measured in this one process with the runs alternating."""

import os
import statistics
import sys
import time

from .common import EXIT_OK, UsageError, emit_json, human_bytes, json_doc, progress, table

# (name, what it measures) of each contender, in the order they run within a round.
_MEANINGS = {
    "tfformats crc copy": "tfformats: open, read every tensor into its own array, CRC-32C checked",
    "tfformats crc view": "tfformats: the same, numeric tensors as zero-copy views of the mapped "
                          "file (CRC-32C checked)",
    "tfformats copy": "tfformats with verify=False: every tensor copied into its own array",
    "tfformats view": "tfformats with verify=False: zero-copy views; the bytes are read only "
                      "when the values are summed",
    "tensorflow": "tf.train.load_checkpoint + get_tensor (TensorFlow checks the CRC-32C too)",
    "safetensors": "safetensors.safe_open(framework='np') + get_tensor, on the same numeric "
                   "tensors written to a temporary .safetensors file",
}


def _touch(value):
    """Read every byte of a value (a checksum of its bytes), so that a zero-copy
    view costs what reading its data costs. Returns the bytes read."""
    import numpy as np
    value = np.asarray(value)   # TensorFlow returns a scalar string as bytes
    if value.dtype == object:
        return sum(len(v) for v in value.ravel())
    flat = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
    words = flat[:flat.size - flat.size % 8].view(np.uint64)
    np.bitwise_xor.reduce(words)
    np.bitwise_xor.reduce(flat[words.size * 8:])
    return value.nbytes


def _tfformats_run(path, names, verify, copy):
    from ..checkpoint import CheckpointReader

    def run():
        with CheckpointReader(path, verify=verify) as reader:
            for name in names:
                _touch(reader.get_tensor(name, copy=copy))
    return run


def _tensorflow_run(path, names):
    try:
        import tensorflow as tf
    except ImportError:
        return None

    def run():
        reader = tf.train.load_checkpoint(path)
        for name in names:
            _touch(reader.get_tensor(name))
    return run


def _safetensors_run(path, names, workdir):
    try:
        from safetensors import safe_open
    except ImportError:
        return None, []
    from ..convert import checkpoint_to_safetensors
    st_path = os.path.join(workdir, "bench.safetensors")
    checkpoint_to_safetensors(path, st_path, skip_unsupported=True)
    held = []
    with safe_open(st_path, framework="np") as f:
        stored = set(f.keys())
        for name in names:
            if name in stored:
                try:
                    f.get_tensor(name)
                except (AttributeError, TypeError, ValueError):   # a dtype its numpy reader lacks
                    continue
                held.append(name)

    def run():
        with safe_open(st_path, framework="np") as f:
            for name in held:
                _touch(f.get_tensor(name))
    return run, held


def _measured(reader):
    """(names, stored bytes per name) of the tensors every reader can return: those
    with an array form, the object graph left out; bytes as `ls` counts them."""
    from ..checkpoint import OBJECT_GRAPH_KEY
    names, sizes = [], {}
    for name in reader:
        entry = reader.entry(name)
        if name == OBJECT_GRAPH_KEY or entry.dtype.as_numpy_dtype is None:
            continue
        pieces = ([reader.bundle.part_entry(name, ext) for ext in entry.slices]
                  if entry.slices else [entry])
        names.append(name)
        sizes[name] = sum(p.size for p in pieces)
    return names, sizes


def cmd_bench(args):
    from .. import fileio, implementation
    from .common import open_reader
    if args.rounds < 1:
        raise UsageError("--rounds must be at least 1")
    with open_reader(args.path) as reader:   # fails early, with the reader's message, on a bad path
        prefix = reader.prefix
        names, sizes = _measured(reader)
    total = sum(sizes.values())
    with fileio.scratch_dir("tfformats-bench-") as workdir:
        runs = {"tfformats crc copy": (_tfformats_run(prefix, names, True, True), total),
                "tfformats crc view": (_tfformats_run(prefix, names, True, False), total),
                "tfformats copy": (_tfformats_run(prefix, names, False, True), total),
                "tfformats view": (_tfformats_run(prefix, names, False, False), total)}
        tf_run = _tensorflow_run(prefix, names)
        if tf_run is not None:
            runs["tensorflow"] = (tf_run, total)
        st_run, held = _safetensors_run(prefix, names, workdir)
        if st_run is not None:
            runs["safetensors"] = (st_run, sum(sizes[n] for n in held))
        for run, _ in runs.values():   # warm-up: imports, page cache
            run()
        times = {name: [] for name in runs}
        with progress(args, args.rounds * len(runs), "benchmarking", unit="run") as bar:
            for _ in range(args.rounds):   # alternate: drift hits every contender alike
                for name, (run, _) in runs.items():
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
                    bar.update(1)
    baseline = statistics.median(times["tensorflow"]) if "tensorflow" in times else None
    rows = []
    for name, (_, nbytes) in runs.items():
        median = statistics.median(times[name])
        rows.append({"reader": name, "meaning": _MEANINGS[name], "bytes": nbytes,
                     "tensors": len(held) if name == "safetensors" else len(names),
                     "median_seconds": median, "gb_per_s": nbytes / 1e9 / median if median > 0 else None,
                     "vs_tensorflow": (baseline / median * nbytes / total
                                       if baseline is not None and median > 0 else None),
                     "rounds": times[name]})
    if args.json:
        emit_json(json_doc("bench", path=args.path, bytes=total, tensors=len(names), results=rows))
        return EXIT_OK
    print(f"{args.path}: {len(names)} tensors, {total} bytes ({human_bytes(total)}; the BYTES column of "
          f"`tfformats ls` summed over them); {implementation()} implementation; median of "
          f"{args.rounds} round(s), the readers alternating")
    body = [(r["reader"], f"{r['median_seconds'] * 1e3:.2f}",
             f"{r['gb_per_s']:.3f}" if r["gb_per_s"] is not None else "-",
             f"{r['vs_tensorflow']:.2f}x" if r["vs_tensorflow"] is not None else "-") for r in rows]
    print(table(list(zip(*body)), ("READER", "MS", "GB/S", "VS TENSORFLOW"), right=(1, 2, 3)))
    print("\nEach figure: open the file, then read every tensor and read every byte of its values "
          "(a running XOR), so that no reader wins by not touching data. GB/s is 10^9 bytes of "
          "stored tensor data per second; VS TENSORFLOW is that throughput over TensorFlow's "
          "(above 1: faster).")
    for r in rows:
        print(f"  {r['reader']}: {r['meaning']}")
    if "tensorflow" not in runs:
        print("TensorFlow is not installed: no comparison with its reader")
    if "safetensors" not in runs:
        print("safetensors is not installed: no comparison with it")
    elif len(held) < len(names):
        print(f"safetensors holds {len(held)} of the {len(names)} tensors (no strings; its numpy "
              "reader lacks some dtypes): its figure covers those")
    sys.stdout.flush()
    return EXIT_OK
