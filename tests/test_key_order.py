"""Tables whose keys are duplicated or out of order are rejected.

Lookups binary-search, so such a table would answer a name or not depending
on how it is asked for (`'a' in r` False while `list(r)` holds 'a'). Tables
are built by TfFormats' own writer with every key stored whole (restart
interval 1), then one key is overwritten in place and the block checksum
recomputed, so only the order is wrong.
"""

import shutil
import struct

import numpy as np
import pytest

import tfformats as tff
from tfformats import fileio, sstable
from tfformats._impl import hot
from tfformats.errors import FormatError
from tfformats.writer import save_checkpoint

from conftest import FIXTURES
from test_cli import run

NAMES = [f"t{i:02d}" for i in range(12)]


def _rewrite_table(path, block_size):
    """Rewrite the table at `path` with small blocks and every key whole."""
    items = list(sstable.Table(fileio.open_file(path)).items())
    with open(path, "wb") as f:
        builder = sstable.TableBuilder(f, block_size=block_size, restart_interval=1)
        for key, value in items:
            builder.add(key, value)
        builder.finish()


def _replace_key(path, old, new):
    """Overwrite key `old` with `new` (same length) in its data block, and fix
    that block's checksum."""
    data = bytearray(open(path, "rb").read())
    table = sstable.Table(fileio.open_file(path))
    for offset, size in table._handles:
        at = data.find(old, offset, offset + size)
        if at >= 0:
            data[at:at + len(old)] = new
            crc = hot.mask_crc(hot.crc32c(bytes(data[offset:offset + size + 1])))
            struct.pack_into("<I", data, offset + size + 1, crc)
            open(path, "wb").write(bytes(data))
            return len(table._handles)
    raise AssertionError(f"{old!r} is in no data block")


@pytest.fixture(params=[48, 1 << 18], ids=["multi-block", "one-block"])
def bundle(tmp_path, request):
    prefix = str(tmp_path / "ckpt")
    save_checkpoint(prefix, {n: np.float32(i) for i, n in enumerate(NAMES)}, object_graph=False)
    _rewrite_table(prefix + ".index", request.param)
    with tff.open_checkpoint(prefix) as reader:   # still a valid bundle
        assert [float(reader[n]) for n in NAMES] == list(range(12))
        assert reader.bundle.table.block_count() > 1 or request.param > 48
    return prefix


@pytest.mark.parametrize("old, new", [(b"t05", b"t04"), (b"t05", b"t06"), (b"t05", b"t09"),
                                      (b"t11", b"t00"), (b"t01", b"t10")])
@pytest.mark.parametrize("verify", [True, False])
def test_bundle_index_with_keys_out_of_order(bundle, old, new, verify):
    _replace_key(bundle + ".index", old, new)
    message = r"ckpt\.index: data block at offset \d+: .*(key .* at offset \d+ does not sort " \
              r"after|sorts after the index block's bound)"
    with pytest.raises(FormatError, match=message):
        with tff.open_checkpoint(bundle, verify=verify) as reader:
            list(reader)
    with pytest.raises(FormatError, match=message):
        with tff.open_checkpoint(bundle, verify=verify) as reader:   # cold: no scan first
            reader.has_tensor(old.decode())   # its block is the damaged one


@pytest.mark.parametrize("old, new", [(b"t05", b"t04"), (b"t11", b"t00")])
def test_validate_reports_keys_out_of_order(bundle, old, new):
    _replace_key(bundle + ".index", old, new)
    proc = run("validate", bundle)
    assert proc.returncode == 1
    assert "does not sort after" in proc.stdout or "sorts after the index block" in proc.stdout


def test_v1_table_with_keys_out_of_order(tmp_path):
    path = tmp_path / "model.ckpt-7"
    shutil.copy(FIXTURES / "tf1_v1" / "model.ckpt-7", path)
    keys = [k for k, _ in sstable.Table(fileio.open_file(path)).items()]
    _rewrite_table(path, 48)
    # Give the last key's first bytes to the one before it: the later one now
    # sorts before it, or equal (same length, so the block stays parseable).
    a, b = next((a, b) for a, b in zip(keys[-2::-1], keys[::-1]) if len(a) == len(b) > 1)
    _replace_key(path, a, b)
    with pytest.raises(FormatError, match=r"model\.ckpt-7: data block at offset \d+: .*"
                                          r"(does not sort after|sorts after the index block)"):
        with tff.open_checkpoint(path) as reader:
            for name in reader:   # the tensors' records are read from the table
                reader[name]
