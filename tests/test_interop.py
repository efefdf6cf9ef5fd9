"""Fitting the tools people use: IPython completion (dir), numpy and dask on
`get_slice` handles."""

import json

import numpy as np
import pytest

import tfformats

from conftest import FIXTURES

DTYPES = FIXTURES / "dtypes" / "ckpt"
PARTITIONED = FIXTURES / "tf1_partitioned" / "model.ckpt"


def test_dir_lists_the_lazy_names():
    names = dir(tfformats)
    for lazy in tfformats._LAZY:
        assert lazy in names
    for eager in ("load_checkpoint", "load_tensors", "train", "AmbiguousNameError"):
        assert eager in names
    assert set(tfformats.__all__) <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("prefix,name", [(DTYPES, "float32_3d"), (DTYPES, "bfloat16"),
                                         (PARTITIONED, "part"), (DTYPES, "string_2d"),
                                         (DTYPES, "float32_scalar")])
def test_slice_handle_is_array_like(prefix, name):
    with tfformats.open_checkpoint(prefix) as reader:
        whole = reader[name]
        handle = reader.get_slice(name)
        assert handle.shape == whole.shape and isinstance(handle.shape, tuple)
        assert handle.dtype == whole.dtype and isinstance(handle.dtype, np.dtype)
        assert handle.ndim == whole.ndim and handle.size == whole.size
        if whole.ndim:
            assert len(handle) == len(whole)
        else:
            with pytest.raises(TypeError):
                len(handle)
        as_array = np.asarray(handle)
        assert as_array.dtype == whole.dtype
        if whole.dtype == object:
            assert as_array.tolist() == whole.tolist()
        else:
            assert as_array.tobytes() == whole.tobytes()
        assert np.array(handle, dtype=object).dtype == object
        text = repr(handle)
        assert name in text and str(list(whole.shape)) in text and reader.dtype(name).name in text


def test_dask_reads_a_handle_chunk_by_chunk():
    import dask.array as da
    with tfformats.open_checkpoint(PARTITIONED) as reader:
        expected = reader["part"]
        lazy = da.from_array(reader.get_slice("part"), chunks=(4, 2))
        assert lazy.shape == (10, 3) and lazy.dtype == expected.dtype
        assert lazy.numblocks == (3, 2)
        np.testing.assert_array_equal(lazy.compute(scheduler="synchronous"), expected)
        assert float(lazy.sum().compute(scheduler="threads")) == pytest.approx(float(expected.sum()))
    with tfformats.open_checkpoint(DTYPES) as reader:
        lazy = da.from_array(reader.get_slice("float32_3d"), chunks=(1, 3, 2))
        np.testing.assert_array_equal((lazy * 2).compute(), reader["float32_3d"] * 2)


def test_slice_handle_of_a_variant_says_so():
    prefix = FIXTURES / "saveables" / "ckpt"
    expected = json.loads((FIXTURES / "saveables" / "expected_saveables.json").read_text())
    variant = next(k for k, v in expected["ckpt"].items() if v["dtype"] == "variant")
    with tfformats.open_checkpoint(prefix) as reader:
        handle = reader.get_slice(variant)
        assert handle.tf_dtype.name == "variant"
        with pytest.raises(tfformats.UnsupportedError, match="no array form"):
            handle.dtype
