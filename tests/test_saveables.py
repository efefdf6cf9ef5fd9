"""Saveables that store several tensors under suffixed keys, and DT_VARIANT.

The fixture (tests/fixtures/saveables, written by TF) holds a tf.data
iterator's state (a DT_VARIANT `it/.ATTRIBUTES/ITERATOR_STATE`) and a
MutableHashTable (`table/.ATTRIBUTES/table-keys` / `-values`), whose object
graph names the keys without their suffixes.
"""

import json
import math

import numpy as np
import pytest

import tfformats
from tfformats import cuda
from tfformats.bundle import variant_crc
from tfformats.errors import ChecksumError, FormatError, UnsupportedError

from conftest import FIXTURES, assert_same_tensor, copy_fixture, expected_array
from test_cli import run, run_json

PREFIX = FIXTURES / "saveables" / "ckpt"
EXPECTED = json.loads((FIXTURES / "saveables" / "expected_saveables.json").read_text())
TENSORS = EXPECTED["ckpt"]
VARIANT = "it/.ATTRIBUTES/ITERATOR_STATE"


def test_listing_matches_tensorflow():
    with tfformats.open_checkpoint(PREFIX) as reader:
        assert reader.get_variable_to_shape_map() == {k: v["shape"] for k, v in TENSORS.items()}
        assert {k: v.name for k, v in reader.get_variable_to_dtype_map().items()} == {
            k: v["dtype"] for k, v in TENSORS.items()}


def test_values_match_tensorflow_and_variants_are_refused_like_tensorflow():
    with tfformats.open_checkpoint(PREFIX) as reader:
        for name, spec in TENSORS.items():
            if spec["dtype"] == "variant":   # TF's reader cannot return it either
                with pytest.raises(UnsupportedError, match="variant"):
                    reader.get_tensor(name)
            else:
                assert_same_tensor(reader.get_tensor(name), expected_array(spec))


def test_load_checkpoint_names_the_variant_or_skips_it():
    with pytest.raises(UnsupportedError, match=rf"'{VARIANT}'.*skip_unsupported=True"):
        tfformats.load_tensors(PREFIX)
    loaded = tfformats.load_tensors(PREFIX, skip_unsupported=True)
    assert sorted(loaded) == sorted(k for k, v in TENSORS.items()
                                    if v["dtype"] != "variant" and k != "_CHECKPOINTABLE_OBJECT_GRAPH")
    for name, array in loaded.items():
        assert_same_tensor(array, expected_array(TENSORS[name]))


def test_suffixed_keys_belong_to_their_objects():
    with tfformats.open_checkpoint(PREFIX) as reader:
        objects = reader.object_variables()
    # every key the object graph names is TF's own, suffixed or not
    assert {k: objects[k].attribute for k in EXPECTED["attributes"]} == EXPECTED["attributes"]
    assert (objects[VARIANT].path, objects[VARIANT].attribute) == ("it", "ITERATOR")
    for key in ("table/.ATTRIBUTES/table-keys", "table/.ATTRIBUTES/table-values"):
        assert (objects[key].key, objects[key].path, objects[key].attribute) == (key, "table", "table")


def _variant(reader):
    entry = reader.entry(VARIANT)
    return entry, bytes(reader.bundle.raw(entry)[1])


def test_variant_crc_is_tensorflows():
    with tfformats.open_checkpoint(PREFIX) as reader:
        entry, raw = _variant(reader)
    count = math.prod(entry.shape)
    assert variant_crc(raw, count, "v") == tfformats._impl.hot.unmask_crc(entry.crc32c)
    with pytest.raises(FormatError, match="^v: 1 bytes after the last of"):
        variant_crc(raw + b"\0", count, "v")
    with pytest.raises(FormatError, match="runs past"):
        variant_crc(raw[:-1], count, "v")
    with pytest.raises(ChecksumError, match="variant element"):
        variant_crc(raw[:-1] + bytes([raw[-1] ^ 1]), count, "v")


def test_validate_checks_variants_and_suffixed_keys(tmp_path):
    doc = run_json("validate", PREFIX)
    assert doc["ok"] and doc["findings"] == []
    prefix = copy_fixture(PREFIX, tmp_path / "ckpt")
    with tfformats.open_checkpoint(prefix) as reader:
        entry, raw = _variant(reader)
    with open(f"{prefix}.data-00000-of-00001", "r+b") as f:   # a byte inside a variant element
        f.seek(entry.offset + 10)
        byte = f.read(1)
        f.seek(entry.offset + 10)
        f.write(bytes([byte[0] ^ 0x40]))
    doc = run_json("validate", prefix, check=1)
    assert [(f["check"], f["tensor"]) for f in doc["findings"]] == [("crc", VARIANT)]


def test_diff_and_convert_with_a_variant(tmp_path):
    proc = run("diff", PREFIX, PREFIX, check=0)
    assert "0 changed: same" in proc.stdout
    proc = run("convert", PREFIX, tmp_path / "out.npz", check=3)
    assert "--skip-unsupported" in proc.stderr
    run("convert", PREFIX, tmp_path / "out.npz", "--skip-unsupported", check=0)
    with np.load(tmp_path / "out.npz") as npz:
        assert_same_tensor(npz["w/.ATTRIBUTES/VARIABLE_VALUE"],
                           expected_array(TENSORS["w/.ATTRIBUTES/VARIABLE_VALUE"]))


def test_device_upload_leaves_variants_out():
    backend = cuda.HostBackend()
    try:
        out = cuda.upload(PREFIX, backend=backend)
        assert sorted(out) == ["table/.ATTRIBUTES/table-values", "w/.ATTRIBUTES/VARIABLE_VALUE"]
        with pytest.raises(UnsupportedError, match="skip_unsupported=True"):
            cuda.load(PREFIX, backend=backend)
        loaded = cuda.load(PREFIX, backend=backend, skip_unsupported=True)
        assert VARIANT not in loaded and "table/.ATTRIBUTES/table-keys" in loaded
    finally:
        backend.close()
