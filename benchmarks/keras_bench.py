"""Keras weight files: read every tensor of a ~450 MiB Keras 3 `.weights.h5`
(written by Keras at benchmark time) with tfformats, with h5py directly, and
with Keras' own `load_weights` (see benchmarks/README.md, "Keras weight files").

    python benchmarks/keras_bench.py [--data-dir DIR] [--budget SECONDS]

TFFORMATS_BENCH_SCALE multiplies the data size as for the other scenarios.
The pytest-benchmark shim is test_bench_keras.py.
"""

import argparse
import json
import os
import sys
import tempfile

import benchlib
from benchlib import Scenario, Side, touch

WIDTH = 3072   # 12 Dense(3072) layers: 12 x (3072 x 3072 + 3072) float32 = 432 MiB
LAYERS = 12


def _model(keras, layers):
    inputs = keras.Input(shape=(WIDTH,))
    x = inputs
    for i in range(layers):
        x = keras.layers.Dense(WIDTH, name=f"dense_{i}")(x)
    return keras.Model(inputs, keras.layers.Dense(16, name="head")(x))


def params(s):
    return {"layers": max(1, round(LAYERS * s))}


def generate_keras(folder, s=None):
    """`model.weights.h5` written by Keras 3 `save_weights` (idempotent per folder)."""
    s = benchlib.scale() if s is None else s
    meta = {"kind": "keras", "version": benchlib.DATA_VERSION, **params(s)}
    path = os.path.join(folder, "model.weights.h5")
    marker = os.path.join(folder, "meta.json")
    if os.path.exists(marker) and json.load(open(marker)).get("layers") == meta["layers"]:
        return {**json.load(open(marker)), "path": path}
    os.makedirs(folder, exist_ok=True)
    benchlib.quiet_tensorflow()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    model = _model(keras, meta["layers"])
    model.save_weights(path)
    meta["bytes"] = sum(int(w.numpy().nbytes) for w in model.weights)
    meta["tensors"] = len(model.weights)
    with open(marker, "w") as f:
        json.dump(meta, f)
    return {**meta, "path": path}


def keras_read(data, copy=False):
    """tfformats (views of the map, or copies) vs h5py vs Keras' load_weights."""
    import h5py
    import keras
    from tfformats.keras import KerasReader
    path = data["path"]
    model = _model(keras, data["layers"])

    def tfformats_side():
        with KerasReader(path) as reader:
            return sum(touch(reader.get_tensor(name, copy=copy)) for name in reader)

    def h5py_side():
        total = 0
        with h5py.File(path, "r") as f:
            names = []
            f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            for name in names:
                total += touch(f[name][()])
        return total

    def keras_side():
        model.load_weights(path)

    label = "keras read (copies)" if copy else "keras read"
    return Scenario(
        label, Side("tfformats", tfformats_side),
        [Side("h5py", h5py_side), Side("Keras load_weights", keras_side)],
        "informative" if copy else "≤ 1× h5py", target_ratio=None if copy else 1.0,
        info={"tensors": data["tensors"], "MiB": round(data["bytes"] / 2**20, 1)})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", help="keep the generated file here and reuse it")
    ap.add_argument("--budget", type=float, default=8.0, help="seconds of timing per scenario")
    args = ap.parse_args()
    import tfformats
    folder = args.data_dir or tempfile.mkdtemp(prefix="tffb-keras-")
    data = generate_keras(os.path.join(folder, "keras"))
    print(f"{data['tensors']} tensors, {data['bytes'] / 2**20:.1f} MiB, "
          f"tfformats {tfformats.implementation()}", file=sys.stderr)
    results = [benchlib.alternate(keras_read(data, copy), budget=args.budget, log=print)
               for copy in (False, True)]
    print(benchlib.markdown_table({tfformats.implementation(): results}))


if __name__ == "__main__":
    main()
