"""Fuzz targets: one per parser of tfformats, each `target(data: bytes)`.

A target turns the input bytes into one or more files in a scratch
directory (on tmpfs where there is one), calls the public API on them the
way a user would, and reads everything it can. A tfformats error
(`tfformats.errors.TFFormatsError`) is the expected answer to bad input and
is swallowed; any other exception propagates and is a finding, as is a
crash (the process dies) or a hang (the fuzzer's per-input timeout).

Targets that need several files (a bundle: index + data shards; a
SavedModel: graph, fingerprint, variables) read them from one input packed
by `pack`: each file but the last is a little-endian u32 length and that
many bytes; the last file is the rest. A length past the end is cut short,
so every byte string unpacks to something.

Run one with `python fuzz/targets.py <target> [libFuzzer flags] [corpus dirs]`
(atheris), or replay inputs with `python fuzz/targets.py --replay <target>
FILE...`; `fuzz/run.py` does both for every target. Import this module only
after TFFORMATS_PUREPYTHON has been set as wanted: the implementation is
picked when tfformats is first imported.
"""

import atexit
import contextlib
import os
import shutil
import struct
import sys
import tempfile

import numpy as np

# Everything the targets reach is imported here, once, inside atheris'
# import hook when fuzzing (`python fuzz/targets.py TARGET`), so that the
# Python code of tfformats is instrumented for coverage. The compiled
# extension (tfformats._native) is not: see docs/fuzzing.md.
_hook = contextlib.nullcontext()
if __name__ == "__main__" and sys.argv[1:2] not in (["--replay"], ["--random"]):
    try:
        import atheris
        _hook = atheris.instrument_imports(include=["tfformats"])
    except ImportError:   # fuzzing then says what is missing; usage and --random still work
        pass
with _hook:
    import tfformats
    from tfformats import checkpoint, convert, fileio, fingerprint, graph, objgraph, protos, \
        sstable, tensor_proto, writer
    from tfformats.bundle import BundleReader
    from tfformats.errors import TFFormatsError
    from tfformats.saved_model import load_saved_model

from google.protobuf.message import DecodeError

# Reads after a table has been opened stop after this many records, so one
# input cannot make a target run for long just by being big and valid.
_MAX_RECORDS = 2000


# --- packing several files into one input ----------------------------------------

def pack(files):
    """One input from a list of file contents (see the module docstring)."""
    out = bytearray()
    for data in files[:-1]:
        out += struct.pack("<I", len(data)) + data
    return bytes(out + (files[-1] if files else b""))


def unpack(data, n):
    """`n` file contents from one input; missing files are empty."""
    files, pos = [], 0
    for _ in range(n - 1):
        if pos + 4 > len(data):
            files.append(b"")
            continue
        (k,) = struct.unpack_from("<I", data, pos)
        pos += 4
        files.append(data[pos:pos + k])
        pos += len(files[-1])
    files.append(data[pos:])
    return files


def unpack_all(data, limit):
    """Up to `limit` file contents: length-prefixed chunks until the input ends."""
    files, pos = [], 0
    while pos < len(data) and len(files) < limit - 1:
        if pos + 4 > len(data):
            break
        (k,) = struct.unpack_from("<I", data, pos)
        pos += 4
        files.append(data[pos:pos + k])
        pos += len(files[-1])
    files.append(data[pos:])
    return files


# --- the scratch directory ------------------------------------------------------------

class Scratch:
    """A directory emptied before each input; on tmpfs when /dev/shm exists."""

    def __init__(self):
        base = os.environ.get("TFFORMATS_FUZZ_SCRATCH") or (
            "/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.root = tempfile.mkdtemp(prefix="tfformats-fuzz-", dir=base)
        atexit.register(self.close)   # libFuzzer exits through exit(): atexit runs

    def fresh(self, name):
        path = os.path.join(self.root, name)
        if os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    @staticmethod
    def write(path, data):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


_scratch = None


def scratch():
    global _scratch
    if _scratch is None:
        _scratch = Scratch()
    return _scratch


# --- shared readers ----------------------------------------------------------------

def _read_everything(reader):
    """Read every tensor of an open CheckpointReader, whole and in part."""
    for n, name in enumerate(reader):
        if n >= _MAX_RECORDS:
            break
        reader.shape(name)
        reader.dtype(name)
        value = reader.get_tensor(name)
        if np.ndim(value) and np.size(value):   # indexing an empty axis is the caller's error
            s = reader.get_slice(name)
            s[0]
            s[-1:]
            s[..., :1]
    reader.get_variable_to_shape_map()
    reader.object_paths()


def _open_and_read(path):
    """Open `path` with verify=True (the default: damage must be noticed) and
    with verify=False (what gets past the CRCs reaches deeper code)."""
    for verify in (True, False):
        try:
            with checkpoint.open_checkpoint(path, verify=verify) as reader:
                _read_everything(reader)
        except TFFormatsError:
            pass


def _scratch_file(kind, name, data):
    """The path of file `name` holding `data`, in a fresh scratch folder for `kind`."""
    path = os.path.join(scratch().fresh(kind), name)
    Scratch.write(path, data)
    return path


# --- the targets ---------------------------------------------------------------------

def target_table(data):
    """The SSTable layer and the bundle index on top of it: one `.index` file."""
    index = _scratch_file("table", "ckpt.index", data)
    d = os.path.dirname(index)
    for verify in (True, False):
        source = fileio.open_file(index)
        try:
            table = sstable.Table(source, verify=verify)
            for n, _ in enumerate(table.items()):
                if n >= _MAX_RECORDS:
                    break
            for key in (b"", b"\x00", b"a", b"\xff" * 4):
                table.get(key)
                table.block_offset(key)
            for _ in table.checked_blocks():
                pass
            table.block_count()
        except TFFormatsError:
            pass
        finally:
            source.close()
        try:
            bundle = BundleReader(os.path.join(d, "ckpt"), verify=verify)
        except TFFormatsError:
            continue
        try:
            bundle.listing()
            bundle.decoded_entries()
            bundle.entries()
        except TFFormatsError:
            pass
        finally:
            bundle.close()


def target_bundle(data):
    """A whole V2 bundle (index + data shards): entries, numeric and string
    tensors, partitioned tensors, slices, the object graph."""
    d = scratch().fresh("bundle")
    files = unpack_all(data, 9)
    Scratch.write(os.path.join(d, "ckpt.index"), files[0])
    shards = files[1:] or [b""]
    for i, shard in enumerate(shards):
        Scratch.write(os.path.join(d, f"ckpt.data-{i:05d}-of-{len(shards):05d}"), shard)
    _open_and_read(os.path.join(d, "ckpt"))


def target_v1(data):
    """A TF1 V1 checkpoint: one table file of SavedSlice records."""
    _open_and_read(_scratch_file("v1", "model.ckpt-7", data))


def target_objgraph(data):
    """A TrackableObjectGraph: decoded directly, and as the graph tensor of a
    checkpoint whose variables it names (read back by object path)."""
    try:
        g = objgraph.parse_graph(data, "fuzz input")
        objgraph.node_paths(g.nodes)
        objgraph.slot_variables(g.nodes)
        objgraph.object_variables(g)
    except TFFormatsError:
        pass
    d = scratch().fresh("objgraph")
    prefix = os.path.join(d, "ckpt")
    tensors = {"a/.ATTRIBUTES/VARIABLE_VALUE": np.arange(3, dtype=np.float32),
               "b/.ATTRIBUTES/VARIABLE_VALUE": np.int64(5),
               "b/m/.ATTRIBUTES/VARIABLE_VALUE_x": np.zeros(2, np.float32),
               checkpoint.OBJECT_GRAPH_KEY: np.array(data, dtype=object)}
    writer.save_checkpoint(prefix, tensors, object_graph=False, sync=False)
    try:
        with checkpoint.open_checkpoint(prefix) as reader:
            reader.object_graph()
            reader.object_variables()
            for path, key in reader.object_paths().items():
                reader.get_tensor(key)
    except TFFormatsError:
        pass


SAVED_MODEL_FILES = ("saved_model.pb", "fingerprint.pb", "keras_metadata.pb",
                     "variables/variables.index", "variables/variables.data-00000-of-00001")


def target_saved_model(data):
    """A SavedModel directory: graph, fingerprint, Keras metadata and variables
    (an empty file stands for a missing one)."""
    d = scratch().fresh("saved_model")
    for name, content in zip(SAVED_MODEL_FILES, unpack(data, len(SAVED_MODEL_FILES))):
        if content or name == "saved_model.pb":
            Scratch.write(os.path.join(d, name), content)
    try:
        model = load_saved_model(d)
    except TFFormatsError:
        model = None
    if model is not None:
        with model:
            for step in (lambda: model.tag_sets, lambda: model.signatures,
                         lambda: model.ops(), lambda: model.object_graph,
                         lambda: model.concrete_functions, lambda: model.functions(),
                         lambda: model.variable_infos(), lambda: model.assets,
                         lambda: model.assets_extra, lambda: model.keras_metadata,
                         lambda: model.fingerprint, lambda: model.findings(),
                         lambda: _read_variables(model)):
                try:
                    step()
                except TFFormatsError:
                    pass
    for step in (fingerprint.read_fingerprint, fingerprint.compute_fingerprint,
                 fingerprint.check_fingerprint):
        try:
            step(d)
        except TFFormatsError:
            pass


def _read_variables(model):
    variables = model.variables
    for n, name in enumerate(variables):
        if n >= _MAX_RECORDS:
            break
        variables[name]


def target_tensor_proto(data):
    """A serialized TensorProto, decoded to numpy (`make_ndarray`)."""
    proto = protos.TensorProto()
    try:
        proto.ParseFromString(data)
    except DecodeError:
        return   # protobuf's own parser, not tfformats: no finding
    try:
        tensor_proto.to_numpy(proto)
    except TFFormatsError:
        pass


def target_graph(data):
    """A GraphDef file and the constants (TensorProtos) in it."""
    path = _scratch_file("graph", "graph.pb", data)
    try:
        graph.graph_constants(path)
    except TFFormatsError:
        pass


def target_state_file(data):
    """The `checkpoint` state file of a directory that also holds a valid
    checkpoint `ckpt-1`."""
    d = scratch().fresh("state_file")
    Scratch.write(os.path.join(d, "checkpoint"), data)
    writer.save_checkpoint(os.path.join(d, "ckpt-1"), {"v": np.arange(2, dtype=np.int32)},
                           object_graph=False, sync=False)
    from tfformats import train   # latest_checkpoint is tf.train's, in tfformats.train
    for step in (checkpoint.read_state, train.latest_checkpoint, train.get_checkpoint_state,
                 checkpoint.resolve_prefix,
                 lambda p: writer.CheckpointManager(p, max_to_keep=2).checkpoints,
                 lambda p: _read_everything(checkpoint.open_checkpoint(p))):
        try:
            step(d)
        except TFFormatsError:
            pass


def _convert_and_read(convert_fn, data, suffix):
    src = _scratch_file(suffix, "input." + suffix, data)
    d = os.path.dirname(src)
    try:
        prefix = convert_fn(src, os.path.join(d, "out"))
    except TFFormatsError:
        return
    # What was written must read back (an object graph copied from the
    # metadata may still be rejected, with a tfformats error).
    try:
        with checkpoint.open_checkpoint(prefix or os.path.join(d, "out")) as reader:
            _read_everything(reader)
    except TFFormatsError:
        pass


def target_safetensors(data):
    """A safetensors file converted to a checkpoint, which is then read."""
    _convert_and_read(convert.safetensors_to_checkpoint, data, "safetensors")


def target_npz(data):
    """An `.npz` file converted to a checkpoint, which is then read."""
    _convert_and_read(convert.npz_to_checkpoint, data, "npz")


# Findings to skip while a fix is in flight elsewhere, so that a run goes on
# to new ones (`fuzz/run.py --no-skip-known` reports them anyway):
# (target, exception class, regex on the message). Empty: the three listed
# in docs/fuzzing.md are fixed on main.
KNOWN: list = []


def is_known(name, exc):
    import re
    return any(name == t and type(exc).__name__ == e and re.search(r, str(exc))
               for t, e, r in KNOWN)


def skipping_known(name, fn):
    """`fn`, with the KNOWN findings of target `name` treated as expected."""
    def run(data):
        try:
            fn(data)
        except Exception as exc:
            if not is_known(name, exc):
                raise
    return run


TARGETS = {name[len("target_"):]: fn for name, fn in sorted(globals().items())
           if name.startswith("target_")}


# --- running --------------------------------------------------------------------------

def replay(name, paths):
    """Run target `name` on each file; print each foreign exception and
    return how many there were (crashes and hangs kill the process)."""
    import traceback
    fn, failures = TARGETS[name], 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:
            fn(data)
        except Exception:
            failures += 1
            print(f"FINDING {name} {path}", file=sys.stderr)
            traceback.print_exc()
    return failures


_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**31, 2**63 - 1]


def mutate(data, rng, corpus):
    """A few random byte-level edits of `data` (the `random` engine)."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(7)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:       # flip a bit
            i = min(pos, len(data) - 1)
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:     # set a byte
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 2:              # an interesting integer, as a varint or fixed width
            v = rng.choice(_INTERESTING)
            enc = bytearray()
            if rng.random() < 0.5:
                while True:
                    enc.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
                    v >>= 7
                    if not enc[-1] & 0x80:
                        break
            else:
                enc = bytearray(struct.pack("<Q", v)[:rng.choice((1, 2, 4, 8))])
            data[pos:pos + len(enc)] = enc
        elif op == 3:              # delete a range
            del data[pos:pos + rng.randint(1, 64)]
        elif op == 4 and data:     # duplicate a range
            i = rng.randrange(len(data))
            data[pos:pos] = data[i:i + rng.randint(1, 64)]
        elif op == 5:              # splice another input in
            other = rng.choice(corpus)
            i = rng.randrange(len(other) + 1)
            data[pos:pos + rng.randint(0, 64)] = other[i:i + rng.randint(1, 256)]
        elif op == 6:              # truncate
            del data[pos:]
    return bytes(data)


def random_fuzz(name, seconds, timeout, prefix, corpus_dirs):
    """Random mutation of the seeds without coverage feedback: each foreign
    exception or input over `timeout` seconds is written to `prefix<n>`."""
    import hashlib
    import random
    import signal
    import time
    import traceback

    class Hang(Exception):
        pass

    def alarm(*_):
        raise Hang()

    signal.signal(signal.SIGALRM, alarm)
    corpus = [p.read_bytes() for d in corpus_dirs for p in sorted(__import__("pathlib").Path(d).iterdir())]
    rng, fn = random.Random(0), TARGETS[name]
    if os.environ.get("TFFORMATS_FUZZ_SKIP_KNOWN"):
        fn = skipping_known(name, fn)
    deadline, executions, findings = time.monotonic() + seconds, 0, 0
    seen = set()   # (exception, file, line): each distinct finding is written once
    while time.monotonic() < deadline:
        data = mutate(rng.choice(corpus), rng, corpus)
        executions += 1
        signal.alarm(timeout)
        try:
            fn(data)
        except Exception as exc:
            signal.alarm(0)
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            signature = (type(exc).__name__, frame.filename, frame.lineno)
            if signature in seen:
                continue
            seen.add(signature)
            findings += 1
            path = f"{prefix}{'hang' if isinstance(exc, Hang) else 'crash'}-" \
                   f"{hashlib.sha1(data).hexdigest()}"
            with open(path, "wb") as f:
                f.write(data)
            print(f"FINDING {name}: {path}")
            traceback.print_exc(file=sys.stdout)
        finally:
            signal.alarm(0)
    print(f"executions: {executions} findings: {findings}")
    return 1 if findings else 0


def main(argv):
    if argv[1:2] == ["--replay"]:
        name, paths = argv[2], argv[3:]
        failures = replay(name, paths)
        print(f"replayed {len(paths)} inputs through {name} ({tfformats.implementation()}): "
              f"{failures} findings")
        return 1 if failures else 0
    if argv[1:2] == ["--random"]:
        name, seconds, timeout, prefix, *dirs = argv[2:]
        return random_fuzz(name, int(seconds), int(timeout), prefix, dirs)
    import atheris
    name = argv[1]
    fn = TARGETS[name]
    if os.environ.get("TFFORMATS_FUZZ_SKIP_KNOWN"):
        fn = skipping_known(name, fn)
    atheris.Setup([argv[0], *argv[2:]], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in (*TARGETS, "--replay", "--random"):
        sys.exit(f"usage: {sys.argv[0]} TARGET [libFuzzer args] | --replay TARGET FILE...\n"
                 f"targets: {', '.join(TARGETS)}")
    sys.exit(main(sys.argv))
