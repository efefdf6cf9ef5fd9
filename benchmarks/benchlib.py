"""Shared pieces of the tfformats benchmarks (see benchmarks/README.md).

* data generation with real TensorFlow (`generate_*`), idempotent per folder;
* the benchmark scenarios (see benchmarks/README.md) as `Scenario` objects: one
  tfformats side and one or more reference sides, each a zero-argument
  callable plus untimed `prepare` / `cleanup` hooks;
* `alternate`, which times the sides A B A B ... in one process and reports
  medians and ratios.

Both `run.py` and the pytest-benchmark tests (`test_bench_*.py`) use these,
so the two always measure the same thing.
"""

import gc
import glob
import importlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:  # tfformats is used from the working tree
    sys.path.insert(0, REPO)

PAGE = 4096
DATA_VERSION = 1  # bump when the generated data changes shape


def scale():
    """TFFORMATS_BENCH_SCALE (default 1.0): multiplies every data size."""
    raw = os.environ.get("TFFORMATS_BENCH_SCALE", "1")
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"TFFORMATS_BENCH_SCALE={raw!r} is not a number") from None
    if not 0 < value <= 4:
        raise SystemExit(f"TFFORMATS_BENCH_SCALE={raw!r} must lie in (0, 4]")
    return value


def quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def import_tensorflow():
    quiet_tensorflow()
    import tensorflow as tf  # noqa: PLC0415
    tf.get_logger().setLevel("ERROR")
    return tf


def touch(array):
    """Touch the values of an array: read one byte of every 4 KiB page.

    Applied identically to tfformats', TensorFlow's and safetensors' arrays.
    It makes every page of a zero-copy (mmap) array resident and mapped, as
    a consumer of the values would, without adding an O(n) arithmetic pass
    that would measure numpy rather than the readers.
    """
    if array.dtype == object:  # string tensors: already decoded to bytes
        return array.size
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return int(flat[::PAGE].sum(dtype=np.uint64))


def read_every_tensor(prefix):
    """tfformats' bulk read: every tensor of the checkpoint, CRC verified (the
    default), every page touched."""
    import tfformats as tff  # noqa: PLC0415
    total = 0
    with tff.open_checkpoint(prefix) as reader:
        for key in reader:
            total += touch(reader.get_tensor(key))
    return total


# --- data generation (real TensorFlow) ------------------------------------------

def _done_marker(folder):
    return os.path.join(folder, ".generated.json")


def _load_marker(folder, want):
    try:
        with open(_done_marker(folder)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if meta.get("params") == want else None


def _save_marker(folder, meta):
    with open(_done_marker(folder), "w") as f:
        json.dump(meta, f, indent=1)


def bulk_params(s):
    """~450 MiB float32 at s=1: 12 layers x (q,k,v,o,ff1,ff2 kernels + biases) + embedding."""
    root = math.sqrt(s)
    d = max(16, int(round(768 * root / 16)) * 16)
    vocab = max(64, int(round(40960 * root / 64)) * 64)
    return {"version": DATA_VERSION, "layers": 12, "d": d, "ff": 4 * d, "vocab": vocab}


def bulk_arrays(p, seed=0):
    """name -> float32 array, in a fixed order; names are object paths."""
    rng = np.random.default_rng(seed)
    d, ff = p["d"], p["ff"]
    shapes = {"embedding": (p["vocab"], d)}
    for i in range(p["layers"]):
        for name, shape in (("q", (d, d)), ("k", (d, d)), ("v", (d, d)), ("o", (d, d)),
                            ("ff1", (d, ff)), ("ff2", (ff, d))):
            shapes[f"layer_{i:02d}/{name}_kernel"] = shape
            shapes[f"layer_{i:02d}/{name}_bias"] = (shape[1],)
    return {k: rng.standard_normal(shape, dtype=np.float32) for k, shape in shapes.items()}


def build_tf_module(tf, arrays):
    """A tf.Module tree holding `arrays` as tf.Variables (for Checkpoint.write)."""
    root = tf.Module()
    layers = {}
    for name, value in arrays.items():
        var = tf.Variable(value, trainable=True)
        if "/" in name:
            layer, attr = name.split("/")
            mod = layers.get(layer)
            if mod is None:
                mod = layers[layer] = tf.Module()
                setattr(root, layer, mod)
            setattr(mod, attr, var)
        else:
            setattr(root, name, var)
    return root


def generate_bulk(folder, s):
    """Bulk-read data: a tf.train.Checkpoint.write checkpoint + the same weights as safetensors."""
    want = bulk_params(s)
    meta = _load_marker(folder, want)
    if meta:
        return meta
    tf = import_tensorflow()
    from safetensors.numpy import save_file  # noqa: PLC0415
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    arrays = bulk_arrays(want)
    module = build_tf_module(tf, arrays)
    prefix = tf.train.Checkpoint(model=module).write(os.path.join(folder, "ckpt"))
    reader = tf.train.load_checkpoint(prefix)
    # The safetensors file holds the same weights under the same keys.
    weights = {k: reader.get_tensor(k) for k, dt in reader.get_variable_to_dtype_map().items()
               if dt != tf.string}
    st_path = os.path.join(folder, "weights.safetensors")
    save_file(weights, st_path)
    total = sum(a.nbytes for a in weights.values())
    meta = {"params": want, "prefix": prefix, "safetensors": st_path,
            "tensors": len(reader.get_variable_to_shape_map()), "float_tensors": len(weights),
            "bytes": total}
    del module, weights, arrays
    _save_marker(folder, meta)
    return meta


def index_params(s):
    return {"version": DATA_VERSION, "n": max(100, int(round(100_000 * s)))}


def index_names(n):
    return [f"model/block_{i // 100:04d}/param_{i % 100:02d}/Adam_1" for i in range(n)]


def generate_index(folder, s):
    """100,000 tensors of shape (4,) written with tf.raw_ops.SaveV2."""
    want = index_params(s)
    meta = _load_marker(folder, want)
    if meta:
        return meta
    tf = import_tensorflow()
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    n = want["n"]
    names = index_names(n)
    prefix = os.path.join(folder, "ckpt")
    values = np.random.default_rng(1).standard_normal((n, 4), dtype=np.float32)

    @tf.function
    def save(x):  # graph mode: one Unpack op, one SaveV2 op (eager is ~5x slower)
        tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * n,
                          tensors=tf.unstack(x))

    save(tf.constant(values))
    middle = sorted(names)[n // 2]
    meta = {"params": want, "prefix": prefix, "tensors": n, "middle_key": middle,
            "index_bytes": os.path.getsize(prefix + ".index")}
    _save_marker(folder, meta)
    return meta


def saved_model_params(s):
    # ~1 MB saved_model.pb at s=1: 16 signatures + ~15 KB per further function.
    return {"version": DATA_VERSION, "functions": max(4, int(round(54 * s))), "signatures": 16}


def generate_saved_model(folder, s):
    """A SavedModel whose saved_model.pb is ~1 MB: many tf.function methods and signatures."""
    want = saved_model_params(s)
    meta = _load_marker(folder, want)
    if meta:
        return meta
    tf = import_tensorflow()
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    module = tf.Module()
    module.w = tf.Variable(np.eye(16, dtype=np.float32))
    module.b = tf.Variable(np.zeros(16, dtype=np.float32))

    def make(i):
        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="x")])
        def fn(x):
            y = x
            for j in range(10):
                y = tf.nn.relu(tf.matmul(y, module.w) + module.b + float(i + j)) * 0.5
                y = tf.reshape(y, [-1, 16])
            return {"out": y, "total": tf.reduce_sum(y, axis=1)}
        return fn

    signatures = {}
    nsig = min(want["signatures"], want["functions"])
    for i in range(want["functions"]):
        fn = make(i)
        setattr(module, f"fn_{i:03d}", fn)
        if i < nsig:
            signatures["serving_default" if i == 0 else f"sig_{i:03d}"] = fn.get_concrete_function()
    export = os.path.join(folder, "export")
    tf.saved_model.save(module, export, signatures=signatures)
    meta = {"params": want, "dir": export, "signatures": nsig,
            "pb_bytes": os.path.getsize(os.path.join(export, "saved_model.pb"))}
    _save_marker(folder, meta)
    return meta


GENERATORS = {"bulk": generate_bulk, "index": generate_index, "saved_model": generate_saved_model}


def generate(root, kinds=("bulk", "index", "saved_model"), s=None, log=None):
    s = scale() if s is None else s
    out = {}
    for kind in kinds:
        t0 = time.perf_counter()
        out[kind] = GENERATORS[kind](os.path.join(root, kind), s)
        if log:
            log(f"data {kind}: ready in {time.perf_counter() - t0:.1f} s")
    return out


def generate_in_subprocess(root, kinds, s=None):
    """Generate data in a child process so TF's memory never stays in the timing process."""
    s = scale() if s is None else s
    cmd = [sys.executable, os.path.join(HERE, "run.py"), "--generate-only", "--data-dir", root,
           "--scale", repr(s), "--scenarios", ",".join(kinds)]
    subprocess.run(cmd, check=True)
    return {k: _load_marker(os.path.join(root, k), PARAMS[k](s)) for k in kinds}


PARAMS = {"bulk": bulk_params, "index": index_params, "saved_model": saved_model_params}


# --- scenarios --------------------------------------------------------------------

class NotReady(Exception):
    """A tfformats module a scenario needs does not exist (yet)."""


def need(module, attr=None):
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise NotReady(f"{module} is not importable ({exc})") from None
    if attr is not None and not hasattr(mod, attr):
        raise NotReady(f"{module} has no {attr}")
    return getattr(mod, attr) if attr else mod


@dataclass
class Side:
    label: str
    fn: Callable[[], object]
    prepare: Optional[Callable[[], None]] = None   # untimed, before every call
    cleanup: Optional[Callable[[], None]] = None   # untimed, after every call
    number: int = 1                                # calls per timed sample

    def once(self):
        """One timed sample (seconds per call)."""
        if self.prepare:
            self.prepare()
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(self.number):
            self.fn()
        dt = (time.perf_counter() - t0) / self.number
        if self.cleanup:
            self.cleanup()
        return dt


@dataclass
class Scenario:
    name: str
    main: Side                      # the tfformats side
    refs: List[Side]                # reference sides; refs[0] is what the target compares to
    target: str                     # human-readable target
    target_ratio: Optional[float] = None   # main / refs[0] must be <= this
    target_abs: Optional[float] = None     # main median must be < this (seconds)
    info: dict = field(default_factory=dict)
    close: Optional[Callable[[], None]] = None

    def sides(self):
        return [*self.refs, self.main]

    def verdict(self, main_median, ratio):
        if self.target_ratio is not None:
            return "met" if ratio <= self.target_ratio else "MISSED"
        if self.target_abs is not None:
            return "met" if main_median < self.target_abs else "MISSED"
        return ""


def _tf_read_all(tf, prefix):
    reader = tf.train.load_checkpoint(prefix)
    total = 0
    for key in reader.get_variable_to_shape_map():
        total += touch(np.asarray(reader.get_tensor(key)))
    return total


def bulk_read(data):
    tf = import_tensorflow()
    from safetensors.numpy import load_file  # noqa: PLC0415
    prefix, st_path = data["prefix"], data["safetensors"]

    def tfformats_side():
        return read_every_tensor(prefix)

    def safetensors_side():
        return sum(touch(a) for a in load_file(st_path).values())

    return Scenario(
        "bulk read", Side("tfformats", tfformats_side),
        [Side("TensorFlow", lambda: _tf_read_all(tf, prefix)),
         Side("safetensors", safetensors_side)],
        "≤ 0.25× TF", target_ratio=0.25,
        info={"tensors": data["tensors"], "MiB": round(data["bytes"] / 2**20, 1)})


def _floor_side(paths):
    """The hardware floor of a verified bulk read: map each data file fresh, and
    on every core at once fault in one byte of every 4 KiB page of its share
    and compute the CRC-32C of that share (crc32c releases the GIL). No reader
    can verify and hand out every tensor faster on this machine."""
    import mmap  # noqa: PLC0415
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    import crc32c  # noqa: PLC0415
    workers = os.cpu_count() or 1
    pool = ThreadPoolExecutor(workers)

    def share(view):
        np.frombuffer(view, np.uint8)[::PAGE].sum(dtype=np.uint64)   # fault in every page
        return crc32c.crc32c(view)

    def floor():
        for path in paths:
            with open(path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            view = memoryview(mapped)
            step = -(-len(view) // workers // PAGE) * PAGE or PAGE
            futures = [pool.submit(share, view[a:a + step]) for a in range(0, len(view), step)]
            for future in futures:
                future.result()
            view.release()
            mapped.close()

    return Side("hardware floor", floor), pool.shutdown


def bulk_floor(data):
    """The bulk read against the hardware floor of the same data files."""
    prefix = data["prefix"]
    paths = sorted(glob.glob(glob.escape(prefix) + ".data-*"))
    floor, close = _floor_side(paths)

    def tfformats_side():
        return read_every_tensor(prefix)

    return Scenario("bulk read vs floor", Side("tfformats", tfformats_side), [floor],
                    "≤ 1.3× floor", target_ratio=1.3, close=close,
                    info={"MiB": round(data["bytes"] / 2**20, 1), "cores": os.cpu_count()})


def writable_load(data):
    """Every tensor as a private, writable numpy array (what torch.from_numpy
    needs), against safetensors' loader on the same weights."""
    import tfformats as tff  # noqa: PLC0415
    from safetensors.numpy import load_file  # noqa: PLC0415
    # The dict loader.
    load = tff.load_tensors
    prefix, st_path = data["prefix"], data["safetensors"]

    def tfformats_side():
        tensors = load(prefix)
        assert all(a.flags.writeable for a in tensors.values())
        return sum(touch(a) for a in tensors.values())

    def safetensors_side():
        return sum(touch(a) for a in load_file(st_path).values())

    return Scenario("writable load", Side("tfformats", tfformats_side),
                    [Side("safetensors", safetensors_side)], "≤ 0.5× safetensors",
                    target_ratio=0.5, info={"MiB": round(data["bytes"] / 2**20, 1)})


def index_listing(data):
    import tfformats as tff  # noqa: PLC0415
    tf = import_tensorflow()
    prefix = data["prefix"]

    def tfformats_side():
        with tff.open_checkpoint(prefix) as reader:
            shapes = reader.get_variable_to_shape_map()
            dtypes = reader.get_variable_to_dtype_map()
        return len(shapes) + len(dtypes)

    def tf_side():
        reader = tf.train.load_checkpoint(prefix)
        return len(reader.get_variable_to_shape_map()) + len(reader.get_variable_to_dtype_map())

    # Issue #15 set the pure-Python twin a target of its own (0.3x).
    ratio = 0.3 if _implementation() == "python" else 0.1
    return Scenario("index listing", Side("tfformats", tfformats_side),
                    [Side("TensorFlow", tf_side)], f"≤ {ratio}× TF", target_ratio=ratio,
                    info={"tensors": data["tensors"]})


def _tf_two_maps(tf, prefix):
    reader = tf.train.load_checkpoint(prefix)
    return len(reader.get_variable_to_shape_map()) + len(reader.get_variable_to_dtype_map())


def per_key(data):
    """How people list a checkpoint by hand: open, then one call per name.

    Each row is compared with what TensorFlow needs for the same information,
    opening the checkpoint and building its two maps. `in` asks for names from
    elsewhere (the list the data was written from, in writing order)."""
    import tfformats as tff  # noqa: PLC0415
    tf = import_tensorflow()
    prefix = data["prefix"]
    names = index_names(data["tensors"])

    def shapes_and_dtypes():
        with tff.open_checkpoint(prefix) as reader:
            for k in reader:
                reader.shape(k)
                reader.dtype(k)

    def shapes():
        with tff.open_checkpoint(prefix) as reader:
            for k in reader:
                reader.shape(k)

    def dtypes():
        with tff.open_checkpoint(prefix) as reader:
            for k in reader:
                reader.dtype(k)

    def contains():
        with tff.open_checkpoint(prefix) as reader:
            return sum(k in reader for k in names)

    def iteration():
        with tff.open_checkpoint(prefix) as reader:
            return sum(1 for _ in reader)

    def length():
        with tff.open_checkpoint(prefix) as reader:
            return len(reader)

    rows = [("per-key shape + dtype", "open; for k in reader: shape(k), dtype(k)", shapes_and_dtypes),
            ("per-key shape", "open; for k in reader: shape(k)", shapes),
            ("per-key dtype", "open; for k in reader: dtype(k)", dtypes),
            ("per-key in", "open; k in reader for 100k names", contains),
            ("iteration", "open; for k in reader", iteration),
            ("len", "open; len(reader)", length)]
    return [Scenario(name, Side("tfformats", fn), [Side("TF two maps", lambda: _tf_two_maps(tf, prefix))],
                     "≤ 0.1× TF", target_ratio=0.1, info={"tensors": data["tensors"], "what": what})
            for name, what, fn in rows]


def list_variables(data):
    import tfformats as tff  # noqa: PLC0415
    tf = import_tensorflow()
    prefix = data["prefix"]
    return Scenario("list_variables", Side("tfformats", lambda: len(tff.list_variables(prefix))),
                    [Side("tf.train.list_variables", lambda: len(tf.train.list_variables(prefix)))],
                    "≤ 0.1× TF", target_ratio=0.1, info={"tensors": data["tensors"]})


def one_lookup(data):
    import tfformats as tff  # noqa: PLC0415
    tf = import_tensorflow()
    prefix, key = data["prefix"], data["middle_key"]

    def tfformats_side():
        with tff.open_checkpoint(prefix) as reader:
            return touch(reader.get_tensor(key))

    def tf_side():
        return touch(tf.train.load_checkpoint(prefix).get_tensor(key))

    return Scenario("one lookup", Side("tfformats", tfformats_side),
                    [Side("TensorFlow", tf_side)], "≤ 0.1× TF", target_ratio=0.1,
                    info={"key": key})


def two_threads(data):
    """CRC checks of one reader on two threads against one thread: the CRC
    releases the GIL, so two threads should take about half the time on two
    cores. The reader's own multi-core CRC is switched off for both sides so
    that only the threads of the caller run."""
    import tfformats as tff  # noqa: PLC0415
    from tfformats import crc  # noqa: PLC0415
    reader = tff.open_checkpoint(data["prefix"])
    names = list(reader)
    saved, crc._WORKERS = crc._WORKERS, 1
    # Half the bytes each, not every other key: keys alternate bias, kernel
    # (12 per layer), so names[0::2] would be the 72 biases (0.3 MiB) and
    # names[1::2] everything else, one thread doing all the work.
    halves: tuple = ([], [])
    loads = [0, 0]
    for name in sorted(names, key=lambda n: -reader.entry(n).size):
        lighter = loads.index(min(loads))
        halves[lighter].append(name)
        loads[lighter] += reader.entry(name).size

    def verify(subset):
        return sum(reader.get_tensor(name).nbytes for name in subset)   # CRC checked

    def both():
        other = threading.Thread(target=verify, args=(halves[1],))
        other.start()
        verify(halves[0])
        other.join()

    def close():
        crc._WORKERS = saved
        reader.close()

    return Scenario("two threads", Side("tfformats, 2 threads", both),
                    [Side("tfformats, 1 thread", lambda: verify(names))],
                    TARGETS["two_threads"], target_ratio=0.6, close=close,
                    info={"tensors": len(names), "MiB": round(data["bytes"] / 2**20, 1),
                          "MiB per thread": [round(n / 2**20, 1) for n in loads]})


def write(data, workdir):
    save_checkpoint = need("tfformats.writer", "save_checkpoint")
    import tfformats as tff  # noqa: PLC0415
    tf = import_tensorflow()
    # The bulk-read weights, as numpy arrays (tfformats) and tf.Variables (TF).
    with tff.open_checkpoint(data["prefix"]) as reader:
        paths = reader.object_paths()  # "model/layer_00/q_kernel" -> checkpoint key
        arrays = {path[len("model/"):]: reader.get_tensor(key, copy=True)
                  for path, key in sorted(paths.items()) if path.startswith("model/")}
    module = build_tf_module(tf, arrays)
    checkpoint = tf.train.Checkpoint(model=module)
    out = os.path.join(workdir, "write")
    counter = [0]

    def fresh():
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        counter[0] += 1

    def gone():
        shutil.rmtree(out, ignore_errors=True)

    named = {f"model/{k}": v for k, v in arrays.items()}
    info = {"tensors": len(arrays), "MiB": round(sum(a.nbytes for a in arrays.values()) / 2**20, 1)}

    def tf_side():
        return Side("TensorFlow", lambda: checkpoint.write(os.path.join(out, "ckpt")),
                    prepare=fresh, cleanup=gone)

    # Each round writes into an emptied directory, like a new training checkpoint: there
    # save_checkpoint does not fsync (its default syncs only when replacing a checkpoint),
    # and neither does TensorFlow. The sync=True row shows what durability costs.
    default = Scenario(
        "write", Side("tfformats", lambda: save_checkpoint(os.path.join(out, "ckpt"), named),
                      prepare=fresh, cleanup=gone),
        [tf_side()], "≤ 0.5× TF", target_ratio=0.5, info=info, close=gone)
    synced = Scenario(
        "write (sync=True)",
        Side("tfformats", lambda: save_checkpoint(os.path.join(out, "ckpt"), named, sync=True),
             prepare=fresh, cleanup=gone),
        [tf_side()], "informative", info=info, close=gone)
    return [default, synced]


def fingerprint(data):
    compute = need("tfformats.fingerprint", "compute_fingerprint")
    quiet_tensorflow()
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting  # noqa: PLC0415
    export = data["dir"]
    info = {"pb_KiB": round(data["pb_bytes"] / 1024)}
    ratio = 1
    if _implementation() == "python":
        ratio = 2   # issue #15: 2x for the pure twin
        # FarmHash in C (the `farmhash` extra) or in Python: the row says which.
        in_c = need("tfformats._farmhash", "_fingerprint64_c") is not None
        info["farmhash"] = "cityhash (C)" if in_c else "Python"
    return Scenario(
        "fingerprint", Side("tfformats", lambda: compute(export)),
        [Side("TensorFlow", lambda: fingerprinting.CreateFingerprintDef(export))],
        f"≤ {ratio}× TF", target_ratio=ratio, info=info)


def signatures(data):
    tff = need("tfformats")
    load = getattr(tff, "load_saved_model", None)
    if load is None:
        load = need("tfformats.saved_model", "load_saved_model")
    quiet_tensorflow()
    from tensorflow.python.saved_model import loader_impl  # noqa: PLC0415
    export = data["dir"]

    def tfformats_side():
        return len(load(export).signatures)

    def tf_side():  # what saved_model_cli does: parse saved_model.pb, take the signature map
        return len(loader_impl.parse_saved_model(export).meta_graphs[0].signature_def)

    return Scenario("SavedModel signatures", Side("tfformats", tfformats_side),
                    [Side("TF parse_saved_model", tf_side)], "< 50 ms", target_abs=0.050,
                    info={"signatures": data["signatures"]})


def _cli_env():
    env = dict(os.environ)
    # As an installed package is used: from bytecode caches (the untimed first run
    # writes them), not compiled from source at every start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run_cli(args, env):
    proc = subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace')[-2000:]}")


def cli(index_data, sm_data):
    need("tfformats.cli")
    if not os.path.exists(os.path.join(REPO, "tfformats", "__main__.py")):
        raise NotReady("tfformats/__main__.py is missing (python -m tfformats)")
    env = _cli_env()
    baseline = Side("python -c pass", lambda: _run_cli(["-c", "pass"], env))
    ls = Scenario("CLI ls (100k ckpt)",
                  Side("tfformats", lambda: _run_cli(["-m", "tfformats", "ls", index_data["prefix"]], env)),
                  [baseline], "< 0.3 s", target_abs=0.3)
    show = Scenario("CLI show --all (SavedModel)",
                    Side("tfformats", lambda: _run_cli(["-m", "tfformats", "show", "--all",
                                                        sm_data["dir"]], env)),
                    [baseline], "< 0.5 s", target_abs=0.5)
    return [ls, show]


# scenario id -> (data kinds it needs, builder)
SCENARIOS = {
    "bulk_read": (("bulk",), lambda d, w: [bulk_read(d["bulk"])]),
    "bulk_floor": (("bulk",), lambda d, w: [bulk_floor(d["bulk"])]),
    "writable_load": (("bulk",), lambda d, w: [writable_load(d["bulk"])]),
    "index_listing": (("index",), lambda d, w: [index_listing(d["index"])]),
    "one_lookup": (("index",), lambda d, w: [one_lookup(d["index"])]),
    "per_key": (("index",), lambda d, w: per_key(d["index"])),
    "list_variables": (("index",), lambda d, w: [list_variables(d["index"])]),
    "two_threads": (("bulk",), lambda d, w: [two_threads(d["bulk"])]),
    "write": (("bulk",), lambda d, w: write(d["bulk"], w)),
    "fingerprint": (("saved_model",), lambda d, w: [fingerprint(d["saved_model"])]),
    "signatures": (("saved_model",), lambda d, w: [signatures(d["saved_model"])]),
    "cli": (("index", "saved_model"), lambda d, w: cli(d["index"], d["saved_model"])),
}


# --- alternation --------------------------------------------------------------------

def calibrate(side, seconds):
    """Pick side.number so that one sample lasts about `seconds` (for very fast sides)."""
    dt = side.once()
    if dt < seconds:
        side.number = max(1, min(1000, int(seconds / max(dt, 1e-6))))
    return dt


def alternate(scenario, budget=8.0, min_rounds=3, max_rounds=15, min_sample=0.02, log=None):
    """Time the sides of a scenario alternating (refs..., main) per round.

    Every side runs once untimed first (warm page cache, imports, lazy init).
    The number of rounds fits `budget` seconds, within [min_rounds, max_rounds].
    Returns a dict of medians, all samples and ratios main / ref.
    """
    sides = scenario.sides()
    first = {s.label: calibrate(s, min_sample) for s in sides}  # warm-up + calibration
    per_round = sum(max(first[s.label], min_sample) for s in sides)
    rounds = int(max(min_rounds, min(max_rounds, budget // max(per_round, 1e-9))))
    samples = {s.label: [] for s in sides}
    for _ in range(rounds):  # A B A B ...
        for side in sides:
            samples[side.label].append(side.once())
    med = {k: statistics.median(v) for k, v in samples.items()}
    main = med[scenario.main.label]
    ratios = {ref.label: main / med[ref.label] for ref in scenario.refs}
    first_ref = scenario.refs[0].label
    result = {
        "scenario": scenario.name, "rounds": rounds, "medians": med, "samples": samples,
        "ratios": ratios, "main": scenario.main.label, "reference": first_ref,
        "target": scenario.target, "verdict": scenario.verdict(main, ratios[first_ref]),
        "info": scenario.info, "number": {s.label: s.number for s in sides},
    }
    if log:
        log(format_result_line(result))
    return result


def fmt_time(seconds):
    if seconds is None:
        return "–"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def format_result_line(res):
    med = res["medians"]
    refs = ", ".join(f"{k} {fmt_time(v)} ({res['ratios'][k]:.3f}×)" for k, v in med.items()
                     if k != res["main"])
    return (f"{res['scenario']}: tfformats {fmt_time(med[res['main']])} vs {refs}; "
            f"target {res['target']}: {res['verdict']} [{res['rounds']} rounds]")


def markdown_table(results_by_impl):
    """results_by_impl: {"native": [result | {"scenario", "skipped"}], "python": [...]}."""
    lines = ["| scenario | impl | tfformats | reference | reference median | ratio | target | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for impl, results in results_by_impl.items():
        for res in results:
            if res.get("skipped"):
                lines.append(f"| {res['scenario']} | {impl} | n/a | | | | {res.get('target', '')} | "
                             f"not measured: {res['skipped']} |")
                continue
            med = res["medians"]
            refs = [k for k in med if k != res["main"]]
            for i, ref in enumerate(refs):
                first = i == 0
                lines.append(
                    f"| {res['scenario'] if first else ''} | {impl if first else ''} | "
                    f"{fmt_time(med[res['main']]) if first else ''} | {ref} | {fmt_time(med[ref])} | "
                    f"{res['ratios'][ref]:.3f}× | {res['target'] if first else ''} | "
                    f"{res['verdict'] if first else ''} |")
    return "\n".join(lines)


def tmpdir(prefix="tfformats-bench-"):
    return tempfile.mkdtemp(prefix=prefix)


TARGETS = {"bulk_read": "≤ 0.25× TF", "index_listing": "≤ 0.1× TF", "one_lookup": "≤ 0.1× TF",
           "per_key": "≤ 0.1× TF each", "bulk_floor": "≤ 1.3× floor",
           "writable_load": "≤ 0.5× safetensors", "list_variables": "≤ 0.1× TF",
           "write": "≤ 0.5× TF", "fingerprint": "≤ 1× TF", "signatures": "< 50 ms",
           "cli": "ls < 0.3 s, show < 0.5 s", "two_threads": "≤ 0.6× one thread (2 cores)"}


# --- pytest-benchmark -------------------------------------------------------------------

PYTEST_RESULTS = []  # filled by run_pytest_benchmark, printed by conftest's terminal summary


def run_pytest_benchmark(benchmark, scenario, budget=None, min_rounds=3, max_rounds=15):
    """Measure `scenario` with pytest-benchmark, alternating with its reference sides.

    pytest-benchmark times the tfformats side; each round's untimed `setup`
    first runs and times every reference side itself, so the rounds go
    ref, tfformats, ref, tfformats, ... in this process. Medians and ratios
    land in `benchmark.extra_info`. Nothing here asserts on a time.
    """
    budget = float(os.environ.get("TFFORMATS_BENCH_BUDGET", "8")) if budget is None else budget
    main = scenario.main
    try:
        first = {s.label: s.once() for s in scenario.sides()}  # warm-up, untimed by pytest
        per_round = sum(first.values())
        rounds = int(max(min_rounds, min(max_rounds, budget // max(per_round, 1e-9))))
        ref_samples = {ref.label: [] for ref in scenario.refs}

        def setup():
            for ref in scenario.refs:
                ref_samples[ref.label].append(ref.once())
            if main.prepare:
                main.prepare()
            gc.collect()

        def teardown():
            if main.cleanup:
                main.cleanup()

        benchmark.group = scenario.name
        benchmark.extra_info.update({"scenario": scenario.name, "target": scenario.target,
                                     "implementation": _implementation(), **scenario.info})
        benchmark.pedantic(main.fn, setup=setup, teardown=teardown, rounds=rounds, iterations=1)
        stats = getattr(benchmark, "stats", None)
        main_median = stats.stats.median if stats is not None else None
        ref_medians = {k: statistics.median(v) for k, v in ref_samples.items() if v}
        benchmark.extra_info["reference_medians_s"] = ref_medians
        if main_median is not None:
            benchmark.extra_info["tfformats_median_s"] = main_median
            ratios = {k: main_median / v for k, v in ref_medians.items()}
            benchmark.extra_info["ratios"] = ratios
            first_ref = scenario.refs[0].label
            benchmark.extra_info["verdict"] = scenario.verdict(main_median, ratios[first_ref])
            PYTEST_RESULTS.append({
                "scenario": scenario.name, "rounds": rounds, "main": main.label,
                "medians": {**ref_medians, main.label: main_median}, "ratios": ratios,
                "reference": first_ref, "target": scenario.target,
                "verdict": benchmark.extra_info["verdict"]})
    finally:
        if scenario.close:
            scenario.close()


def _implementation():
    import tfformats  # noqa: PLC0415
    return tfformats.implementation()
