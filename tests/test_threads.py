"""One reader shared by many threads: correct data, and only documented errors.

The index is rewritten with small blocks so it has far more than the 8
blocks the block cache keeps: threads then evict each other's blocks all the
time. A tiny switch interval makes the interpreter change threads between
almost every bytecode.
"""

import random
import sys
import threading

import numpy as np
import pytest

import tfformats as tff
from tfformats import fileio, sstable
from tfformats.writer import save_checkpoint

NAMES = [f"layer_{i:03d}/kernel" for i in range(300)]


@pytest.fixture
def many_blocks(tmp_path):
    prefix = str(tmp_path / "ckpt")
    save_checkpoint(prefix, {n: np.full(3, i, np.int32) for i, n in enumerate(NAMES)},
                    object_graph=False)
    items = list(sstable.Table(fileio.open_file(prefix + ".index")).items())
    with open(prefix + ".index", "wb") as f:
        builder = sstable.TableBuilder(f, block_size=256)
        for key, value in items:
            builder.add(key, value)
        builder.finish()
    return prefix


@pytest.mark.parametrize("verify", [True, False])
def test_one_reader_many_threads(many_blocks, verify, monkeypatch):
    monkeypatch.setattr(sys, "getswitchinterval", sys.getswitchinterval)   # restored below
    reader = tff.open_checkpoint(many_blocks, verify=verify)
    assert reader.bundle.table.block_count() > 30   # the cache keeps 8
    errors, wrong = [], []
    start = threading.Barrier(16)

    def work(seed):
        rng = random.Random(seed)
        start.wait()
        try:
            for _ in range(2000):
                i = rng.randrange(len(NAMES))
                name = NAMES[i]
                if not reader.has_tensor(name) or reader.get_tensor(name).tolist() != [i] * 3:
                    wrong.append(name)
                if reader.has_tensor(name + "x") or reader.shape(name) != [3]:
                    wrong.append(name)
        except Exception as exc:   # noqa: BLE001 - any error at all is the failure
            errors.append(repr(exc))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
        reader.close()
    assert errors == [] and wrong == []
