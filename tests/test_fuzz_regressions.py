"""Inputs that fuzzing found to fail (docs/fuzzing.md), replayed through the
fuzz targets of fuzz/targets.py: each must now give a tfformats error or
succeed; a foreign exception, a crash or a hang fails the test.

tests/fuzz_inputs/<target>/ holds the inputs of each target. They run in a
subprocess (a crash must not take pytest down; the timeout catches a hang)
with the implementation of this run (the suite runs once per implementation).
"""

import os
import pathlib
import subprocess
import sys

import pytest

import tfformats
from tfformats import _impl, _pure, fingerprint, protos

ROOT = pathlib.Path(__file__).resolve().parent.parent
INPUTS = ROOT / "tests" / "fuzz_inputs"
TARGETS = ROOT / "fuzz" / "targets.py"


def _run(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(TARGETS), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("target", sorted(d.name for d in INPUTS.iterdir() if d.is_dir()))
def test_fuzz_inputs_replay_cleanly(target):
    files = sorted(p for p in (INPUTS / target).iterdir() if p.is_file())
    assert files
    proc = _run("--replay", target, *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the same implementation as this run, and every input really went through
    assert (f"replayed {len(files)} inputs through {target} ({tfformats.implementation()}): "
            "0 findings") in proc.stdout


def test_committed_inputs_stay_small():
    total = sum(p.stat().st_size for p in INPUTS.rglob("*") if p.is_file())
    assert total < 200 * 1024


def test_every_target_is_known_to_the_runner():
    proc = _run("no-such-target")
    assert proc.returncode != 0
    for name in ("table", "bundle", "v1", "objgraph", "saved_model", "tensor_proto", "graph",
                 "state_file", "safetensors", "npz"):
        assert name in proc.stderr


FunctionDef = protos.message_class("tfformats.FunctionDef")


def _entry(field, body):
    return bytes([field << 3 | 2, len(body)]) + body


@pytest.mark.parametrize("raw, moved", [
    # string-keyed `attr` (field 5) with an entry whose key is a varint:
    # protobuf writes it back value first, so it is not a plain entry and
    # the run keeps protobuf's order
    (_entry(5, b"\x0a\x01b") + _entry(5, b"\x08\x07\x12\x00") + _entry(5, b"\x0a\x01a"), False),
    # uint32-keyed `arg_attr` (field 7) with an entry whose key is a string:
    # plain, with the default key 0, so it sorts first
    (_entry(7, b"\x08\x02") + _entry(7, b"\x0a\x01z") + _entry(7, b"\x08\x01"), True),
], ids=["string-map-int-key", "int-map-string-key"])
def test_map_key_of_the_wrong_wire_type(raw, moved):
    # Found by fuzzing the SavedModel fingerprint: protobuf keeps such an
    # entry as an unknown field, serialized right after the map's entries,
    # and ordering them compared bytes with ints (TypeError in both
    # implementations). Both now follow one rule (native/map_order.pxi).
    message = FunctionDef.FromString(raw)
    data = message.SerializeToString(deterministic=True)
    plan = fingerprint._plan(message.DESCRIPTOR)
    out = bytearray(data)
    _impl.hot.reorder_map_entries(out, plan)
    assert sorted(out) == sorted(data)   # entries moved, none lost or changed
    assert (out != data) == moved
    assert fingerprint.canonical_serialize(message) == bytes(out)
    twin = bytearray(data)
    _pure.reorder_map_entries(twin, plan)
    assert twin == out                   # the same order in both implementations


def test_a_shard_pattern_is_not_checked_name_by_name(tmp_path, monkeypatch):
    # Found by fuzzing the state file: `model_checkpoint_path: "m-?????-of-94491"`
    # made each lookup stat 94,491 missing shards (seconds per call, several
    # calls per open). Only the shards the directory holds are looked at now.
    from tfformats import v1
    looked_at = []
    real = v1._is_table
    monkeypatch.setattr(v1, "_is_table", lambda p: looked_at.append(p) or real(p))
    assert not v1.is_v1(str(tmp_path / "m-?????-of-99999"))
    assert looked_at == []
    shard = ROOT / "tests/fixtures/tf1_v1/sharded/model.ckpt-00001-of-00002"
    (tmp_path / "m-00007-of-99999").write_bytes(shard.read_bytes())
    (tmp_path / "m-00008-of-99998").write_bytes(shard.read_bytes())   # another set
    assert v1.is_v1(str(tmp_path / "m-?????-of-99999"))
    assert v1.is_v1(str(tmp_path / "m-00000-of-99999"))   # one shard stands for its set
    assert looked_at == [str(tmp_path / "m-00007-of-99999")] * 2
    assert not v1.is_v1(str(tmp_path / "m-?????-of-00007"))
