"""The README's Python examples run as written.

Every ```python block is run, in order, in one namespace (as a reader pasting
them into one session would), from a scratch directory in which `tests/` is
the repository's: the examples name the shipped fixtures by the same
relative paths as from a clone, and what they write stays in the scratch
directory. A block whose fence says `no-run` needs what CI lacks (a GPU,
torch, jax); it must say so, and only that block may.
"""

import os
import pathlib
import re

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks():
    return [(info.strip(), code) for info, code in FENCE.findall((REPO / "README.md").read_text())]


def test_only_the_gpu_block_is_not_run():
    skipped = [info for info, _ in blocks() if info.startswith("no-run")]
    assert skipped == ["no-run: needs torch, jax and an NVIDIA GPU"]
    assert len(blocks()) >= 4


def test_readme_examples_run_as_written(tmp_path, monkeypatch):
    os.symlink(REPO / "tests", tmp_path / "tests")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    for info, code in blocks():
        if info.startswith("no-run"):
            continue
        exec(compile(code, f"README.md ```python {info}", "exec"), namespace)
    # What the comments claim, checked on what the examples left behind.
    ckpt = namespace["ckpt"]
    assert ckpt.key("dense/kernel") == "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    assert ckpt.shape("dense/kernel") == [4, 3] and ckpt.dtype("dense/kernel").name == "float32"
    assert namespace["w"].flags.writeable and namespace["part"].shape == (2, 3)
    assert sorted(namespace["weights"]) == ["dense/bias:0", "dense/kernel"]
    reader = namespace["reader"]
    counter = reader.get_tensor("save_counter/.ATTRIBUTES/VARIABLE_VALUE")
    assert isinstance(counter, np.int64) and counter == 2
    assert namespace["train"].latest_checkpoint("tests/fixtures/keras_adam") == \
        "tests/fixtures/keras_adam/ckpt-2"
    assert (tmp_path / "out" / "ckpt.index").is_file() and (tmp_path / "out" / "checkpoint").is_file()
    assert namespace["sm"].variables["hidden/kernel"].shape == (4, 3)
