"""Shared test helpers: the TensorFlow-written fixtures and what TF read back."""

import base64
import json
import os
import pathlib
import shutil

import numpy as np
import pytest

import tfformats
from tfformats import dtypes

FIXTURES = pathlib.Path(__file__).parent / "fixtures"

try:
    import tensorflow as tf  # noqa: F401
    HAVE_TF = True
except ImportError:
    HAVE_TF = False

requires_tf = pytest.mark.skipif(not HAVE_TF, reason="TensorFlow is not installed (CI installs it)")


def pytest_report_header(config):
    return f"tfformats implementation: {tfformats.implementation()}; TensorFlow available: {HAVE_TF}"


def expected_checkpoints():
    """(prefix path, {key: spec}) for every checkpoint TF wrote under fixtures/."""
    out = []
    for path in sorted(FIXTURES.glob("**/expected.json")):
        if path.parent.name == "frozen_graph":
            continue
        for prefix, tensors in json.loads(path.read_text()).items():
            if isinstance(tensors, dict):
                out.append((path.parent / prefix, tensors))
    return out


def expected_array(spec):
    """The numpy array TensorFlow read back, rebuilt from a spec in expected.json."""
    shape = tuple(spec["shape"])
    if spec["dtype"] == "string":
        values = [base64.b64decode(s) for s in spec["strings"]]
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    dtype = dtypes.BY_NAME[spec["dtype"]].as_numpy_dtype
    return np.frombuffer(bytes.fromhex(spec["hex"]), dtype=dtype).reshape(shape)


def assert_same_tensor(actual, expected):
    assert actual.shape == expected.shape
    if expected.dtype == object:
        assert actual.dtype == object
        assert list(actual.ravel()) == list(expected.ravel())
    else:
        assert actual.dtype == expected.dtype
        assert actual.tobytes() == expected.tobytes()


def copy_fixture(src, dst):
    """Copy a fixture checkpoint (all files of its prefix, or a directory)."""
    src = pathlib.Path(src)
    if src.is_dir():
        shutil.copytree(src, dst)
        return pathlib.Path(dst)
    os.makedirs(dst, exist_ok=True)
    for f in src.parent.glob(src.name + ".*"):
        shutil.copy(f, dst)
    return pathlib.Path(dst) / src.name
