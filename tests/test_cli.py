"""The `tfformats` command, run as a real subprocess on the TF-written fixtures.

The environment (TFFORMATS_PUREPYTHON included) passes through, so the suite
exercises whichever implementation the run selects.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tfformats
from tfformats import convert, fileio, protos
from tfformats.checkpoint import OBJECT_GRAPH_KEY

from conftest import FIXTURES, expected_array, expected_checkpoints

REPO = FIXTURES.parent.parent
# Every SavedModel fixture, with what saved_model_cli printed for it.
SAVED_MODELS = sorted(p.parent.name for p in FIXTURES.glob("*/saved_model_cli_show.txt"))
OPS_LINE = re.compile(r"^(The MetaGraph with tag set \[.*\] contains the following ops: )(.*)$")


def run(*args, check=None, env=None):
    """Run `python -m tfformats ARGS`; returns the CompletedProcess (text mode)."""
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    environ.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "tfformats", *map(str, args)], capture_output=True,
                          text=True, env=environ, cwd=REPO, timeout=300)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def run_json(*args, check=0):
    proc = run(*args, "--json", check=check)
    doc = json.loads(proc.stdout)
    assert doc["schema"] == 1 and doc["command"] == args[0]
    assert doc["implementation"] == tfformats.implementation()
    return doc


def one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tfformats: error: ")
    return lines[0]


# --- general behaviour ---------------------------------------------------------------

def test_version_names_the_implementation():
    proc = run("--version", check=0)
    assert proc.stdout.strip() == f"tfformats {tfformats.__version__} ({tfformats.implementation()} implementation)"


@pytest.mark.parametrize("command", ["ls", "show", "dump", "validate", "fingerprint", "convert", "diff", "bench"])
def test_every_subcommand_has_help_with_an_example(command):
    proc = run(command, "--help", check=0)
    assert "examples:" in proc.stdout
    assert f"tfformats {command}" in proc.stdout


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["ls"], ["ls", "x", "--no-such-option"],
                                  ["dump", "x", "y", "--threshold", "many"]])
def test_usage_errors_exit_2_with_one_line(argv):
    proc = run(*argv, check=2)
    one_error_line(proc)
    assert proc.stdout == ""


def test_operational_error_is_one_line_without_traceback(tmp_path):
    proc = run("ls", tmp_path / "nothing", check=3)
    line = one_error_line(proc)
    assert str(tmp_path / "nothing") in line
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(tmp_path):
    proc = run("ls", tmp_path / "nothing", "--debug", check=3)
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("tfformats: error: ")


def test_unknown_tensor_is_an_operational_error():
    proc = run("dump", FIXTURES / "keras_adam", "no/such/tensor", check=3)
    assert "no/such/tensor" in one_error_line(proc)


def test_no_progress_bar_when_stderr_is_not_a_terminal():
    proc = run("validate", FIXTURES / "sharded", check=0)
    assert proc.stderr == ""


def _run_on_pty(*args):
    """Run the command with stderr on a pseudo-terminal (POSIX; tqdm is a test dependency)."""
    import fcntl
    import pty
    import struct
    import termios
    leader, follower = pty.openpty()
    # A fresh pseudo-terminal is 0 columns wide, which leaves tqdm nothing to draw on.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    environ = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        proc = subprocess.run([sys.executable, "-m", "tfformats", *map(str, args)], stdout=subprocess.PIPE,
                              stderr=follower, env=environ, cwd=REPO, timeout=300)
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_progress_bar_on_a_terminal_and_quiet_turns_it_off(tmp_path):
    rc, stderr = _run_on_pty("validate", FIXTURES / "sharded")
    assert rc == 0 and "validating" in stderr
    rc, stderr = _run_on_pty("validate", FIXTURES / "sharded", "--quiet")
    assert rc == 0 and stderr == ""
    rc, stderr = _run_on_pty("--json", "validate", FIXTURES / "sharded")
    assert rc == 0 and stderr == ""
    # Bytes with a rate, left on screen at 100% when done.
    rc, stderr = _run_on_pty("convert", FIXTURES / "sharded", tmp_path / "w.safetensors")
    assert rc == 0 and "converting" in stderr and "B/s" in stderr and "100%" in stderr


# --- ls ----------------------------------------------------------------------------

@pytest.mark.parametrize("prefix,expected", expected_checkpoints(), ids=lambda v: str(v)[-40:])
def test_ls_json_lists_what_tensorflow_wrote(prefix, expected):
    doc = run_json("ls", prefix)
    got = {t["name"]: t for t in doc["tensors"]}
    assert set(got) == set(expected)
    for name, spec in expected.items():
        assert got[name]["shape"] == spec["shape"]
        assert got[name]["dtype"] == spec["dtype"]
    assert doc["totals"]["count"] == len(expected)
    assert doc["totals"]["bytes"] == sum(t["bytes"] for t in doc["tensors"])


def test_ls_accepts_every_path_form(store):
    forms = [FIXTURES / "keras_adam", FIXTURES / "keras_adam" / "ckpt-2",
             FIXTURES / "keras_adam" / "ckpt-2.index", FIXTURES / "keras_adam" / "ckpt-2.data-00000-of-00001"]
    outputs = {run("ls", store.path(f), check=0).stdout for f in forms}
    assert len(outputs) == 1 and "kernel" in outputs.pop()
    saved = run_json("ls", store.path(FIXTURES / "keras3_export"))
    assert saved["prefix"].endswith(os.path.join("variables", "variables"))


def test_ls_text_has_object_paths_and_totals():
    out = run("ls", FIXTURES / "keras_adam", check=0).stdout.splitlines()
    assert out[0].split() == ["NAME", "OBJECT", "PATH", "FULL", "NAME", "DTYPE", "SHAPE", "BYTES",
                              "SHARD"]
    row = next(line for line in out if line.startswith("model/layer_with_weights-0/kernel/.ATTRIBUTES"))
    assert row.split() == ["model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE",
                           "model/layer_with_weights-0/kernel", "dense/kernel", "float32", "[4,",
                           "3]", "48", "0"]
    assert re.fullmatch(r"19 tensors, \d+ bytes \(.*\)", out[-1])


def test_ls_json_object_paths_and_glob():
    doc = run_json("ls", FIXTURES / "keras_adam", "--glob", "*/.OPTIMIZER_SLOT/*/m/*")
    assert len(doc["tensors"]) == 4
    for t in doc["tensors"]:
        assert t["object_path"].endswith("/.OPTIMIZER_SLOT/optimizer/m")
        assert t["attribute"] == "VARIABLE_VALUE" and t["shard"] == 0 and t["parts"] is None
    by_path = run_json("ls", FIXTURES / "keras_adam", "--glob", "model/layer_with_weights-1/kernel")
    assert [t["name"] for t in by_path["tensors"]] == ["model/layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE"]


def test_ls_partitioned_and_sharded():
    doc = run_json("ls", FIXTURES / "tf1_partitioned" / "model.ckpt")
    part = next(t for t in doc["tensors"] if t["name"] == "part")
    assert part["shape"] == [10, 3] and part["shard"] is None and len(part["parts"]) == 3
    assert part["bytes"] == 10 * 3 * 4 == sum(p["bytes"] for p in part["parts"])
    sharded = run_json("ls", FIXTURES / "sharded")
    assert sharded["num_shards"] == 5
    for t in sharded["tensors"]:
        shards = [t["shard"]] if t["parts"] is None else [p["shard"] for p in t["parts"]]
        assert set(shards) <= set(range(5))


def test_ls_never_reads_tensor_data(tmp_path):
    """A missing data shard does not matter to ls (only the object path column goes)."""
    dst = tmp_path / "ckpt"
    shutil.copytree(FIXTURES / "sharded", dst)
    for shard in dst.glob("ckpt.data-*"):
        shard.unlink()
    proc = run("ls", dst / "ckpt", check=0)
    assert "6 tensors" in proc.stdout.splitlines()[-1]


# --- show --------------------------------------------------------------------------

def _recorded(name, which):
    return (FIXTURES / name / f"saved_model_cli_{which}.txt").read_text().splitlines()


@pytest.mark.parametrize("name", SAVED_MODELS)
def test_show_matches_saved_model_cli(name):
    assert run("show", FIXTURES / name, check=0).stdout.splitlines() == _recorded(name, "show")
    if (FIXTURES / name / "saved_model_cli_show_tag_set_serve.txt").exists():  # not for tag `eval`
        assert (run("show", FIXTURES / name, "--tag_set", "serve", check=0).stdout.splitlines()
                == _recorded(name, "show_tag_set_serve"))


def _split_ops(lines):
    """Lines with the ops set taken out (TF prints a Python set: its order is arbitrary)."""
    rest, ops = [], []
    for line in lines:
        m = OPS_LINE.match(line)
        if m:
            rest.append(m.group(1))
            ops.append(ast.literal_eval(m.group(2)))
        else:
            rest.append(line)
    return rest, ops


@pytest.mark.parametrize("name", SAVED_MODELS)
def test_show_all_matches_saved_model_cli(name):
    ours = run("show", FIXTURES / name, "--all", check=0).stdout.splitlines()
    theirs = _recorded(name, "show_all")
    ours_rest, ours_ops = _split_ops(ours)
    theirs_rest, theirs_ops = _split_ops(theirs)
    assert ours_rest == theirs_rest  # every line, Concrete Functions included
    assert ours_ops == theirs_ops    # the same set of ops
    for line in ours:  # and ours prints them sorted, so the output is stable
        m = OPS_LINE.match(line)
        if m:
            ops = ast.literal_eval(m.group(2))
            assert m.group(2) == "{" + ", ".join(repr(o) for o in sorted(ops)) + "}"


@pytest.mark.parametrize("name", SAVED_MODELS)
def test_show_signature_def_matches_the_all_listing(name):
    theirs = _recorded(name, "show_all")
    tag_set = _recorded(name, "show")[1].strip("'")   # the first tag set saved_model_cli listed
    for key in run_json("show", FIXTURES / name, "--tag_set", tag_set)["meta_graphs"][0]["signature_defs"]:
        start = theirs.index(f"signature_def['{key}']:") + 1
        end = next(i for i in range(start, len(theirs)) if theirs[i].startswith("  Method name is:")) + 1
        expected = [line[2:] for line in theirs[start:end]]  # --all indents by one level
        got = run("show", FIXTURES / name, "--tag_set", tag_set, "--signature_def", key, check=0)
        assert got.stdout.splitlines() == expected


def test_show_list_ops_and_text_saved_model():
    ours = run("show", FIXTURES / "tf1_builder", "--tag_set", "serve", "--list_ops", check=0).stdout.splitlines()
    _, theirs_ops = _split_ops(_recorded("tf1_builder", "show_all"))
    assert _split_ops(ours[:1])[1] == theirs_ops
    assert ours[1:] == _recorded("tf1_builder", "show_tag_set_serve")
    # The .pbtxt twin of tf1_builder shows the same signatures.
    text = run("show", FIXTURES / "tf1_builder_pbtxt", "--tag_set", "serve", "--signature_def",
               "serving_default", check=0)
    binary = run("show", FIXTURES / "tf1_builder", "--tag_set", "serve", "--signature_def",
                 "serving_default", check=0)
    assert text.stdout == binary.stdout
    no_tags = run("show", FIXTURES / "tf1_builder", "--list_ops", check=0).stdout.splitlines()
    assert no_tags[0] == "--list_ops must be paired with a tag-set or with --all."


def test_show_errors():
    assert "no MetaGraphDef with tag-set 'gpu'" in one_error_line(
        run("show", FIXTURES / "tf1_builder", "--tag_set", "gpu", check=3))
    assert 'Could not find signature "nope"' in one_error_line(
        run("show", FIXTURES / "tf1_builder", "--tag_set", "serve", "--signature_def", "nope", check=3))
    one_error_line(run("show", FIXTURES / "keras_adam", check=3))


@pytest.mark.parametrize("name", SAVED_MODELS)
def test_show_json_matches_the_model(name):
    expected = json.loads((FIXTURES / name / "expected_saved_model.json").read_text())
    doc = run_json("show", FIXTURES / name, "--all")
    assert len(doc["meta_graphs"]) == len(expected["meta_graphs"])
    for ours, theirs in zip(doc["meta_graphs"], expected["meta_graphs"]):
        assert set(ours["signature_defs"]) == set(theirs["signatures"])
        for key, sig in theirs["signatures"].items():
            got = ours["signature_defs"][key]
            assert got["method_name"] == sig["method_name"]
            for side in ("inputs", "outputs"):
                assert set(got[side]) == set(sig[side])
                for k, info in sig[side].items():
                    assert got[side][k]["name"] == info["name"]
                    assert got[side][k]["shape"] == info["shape"]
        assert ours["ops"] == sorted(ours["ops"])
    if "Concrete Functions:" not in (FIXTURES / name / "saved_model_cli_show_all.txt").read_text():  # TF1
        assert doc["concrete_functions"] is None
    else:
        assert doc["concrete_functions"]
        spec = doc["concrete_functions"][0]["options"][0]["args"][0]
        if name == "saved_model_composite":   # 'nested', a RaggedTensorSpec: TF's own text
            text = (FIXTURES / name / "saved_model_cli_show_all.txt").read_text()
            assert spec["class"] == "RaggedTensorSpec" and f"Value: {spec['repr']}\n" in text
        else:
            assert spec["kind"] == "TensorSpec" and spec["shape"][0] is None


# --- dump --------------------------------------------------------------------------

def _dtypes_fixture():
    return json.loads((FIXTURES / "dtypes" / "expected.json").read_text())["ckpt"]


@pytest.mark.parametrize("name", ["float32_3d", "int64", "bfloat16", "string_2d", "float32_scalar", "bool"])
def test_dump_npy_is_what_tensorflow_wrote(tmp_path, name):
    spec = _dtypes_fixture()[name]
    out = tmp_path / "t.npy"
    proc = run("dump", FIXTURES / "dtypes" / "ckpt", name, "--npy", out, check=0)
    assert str(out) in proc.stdout
    array = np.load(out, allow_pickle=spec["dtype"] == "string")
    expected = expected_array(spec)
    assert array.shape == expected.shape
    assert array.tobytes() == expected.tobytes() if spec["dtype"] != "string" else \
        list(array.ravel()) == list(expected.ravel())


def test_dump_prints_with_numpy_options():
    spec = _dtypes_fixture()["float32_3d"]
    expected = expected_array(spec)
    out = run("dump", FIXTURES / "dtypes" / "ckpt", "float32_3d", "--precision", "2", check=0).stdout
    header, body = out.split("\n", 1)
    assert header == f"float32_3d: float32 {list(expected.shape)}".replace("[", "[").replace(",", ",")
    assert body.strip() == np.array2string(expected, precision=2, max_line_width=75)
    big = FIXTURES / "sharded"  # "big" is a 64x64 tensor partitioned over the five shards
    summarized = run("dump", big, "big", check=0).stdout
    assert summarized.startswith("big/.ATTRIBUTES/VARIABLE_VALUE: float32 [64, 64]\n") and "..." in summarized
    full = run("dump", big, "big", "--full", check=0).stdout
    assert "..." not in full and len(full.split()) > 64 * 64
    assert "..." not in run("dump", big, "big", "--threshold", "5000", check=0).stdout


def test_dump_json_and_object_paths():
    doc = run_json("dump", FIXTURES / "keras_adam", "model/layer_with_weights-0/kernel")
    assert doc["name"] == "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    expected = json.loads((FIXTURES / "keras_adam" / "expected.json").read_text())["ckpt-2"][doc["name"]]
    assert doc["shape"] == expected["shape"]
    assert np.allclose(np.array(doc["values"], np.float32), expected_array(expected))
    special = run_json("dump", FIXTURES / "dtypes" / "ckpt", "float32_special")
    assert set(v for v in special["values"] if isinstance(v, str)) <= {"nan", "inf", "-inf"}
    strings = run_json("dump", FIXTURES / "dtypes" / "ckpt", "string_scalar")
    assert strings["dtype"] == "string"


@pytest.mark.parametrize("name", ["dense/kernel", "dense/kernel:0"])
def test_dump_by_tensorflow_variable_name(name):
    # The name Keras shows (the object graph's full_name) finds the key too.
    doc = run_json("dump", FIXTURES / "keras_adam", name)
    assert doc["name"] == "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    proc = run("dump", FIXTURES / "keras_adam", "dense/nope", check=3)
    assert "no tensor, object path or variable name 'dense/nope'" in one_error_line(proc)


# --- validate ----------------------------------------------------------------------

CLEAN = [FIXTURES / n for n in ("dtypes", "keras_adam", "keras_adam_new", "sharded", "tf1_partitioned",
                                "saved_model_module", "tf1_builder", "tf1_builder_pbtxt", "keras3_export",
                                "tf_keras_savedmodel", "tf1_builder_partitioned", "saved_model_composite",
                                "saveables", "tf1_partitioned_strings")]


def test_validate_clean_fixtures_exit_0():
    proc = run("validate", *CLEAN, check=0)
    assert len(proc.stdout.splitlines()) == len(CLEAN)
    assert all(": OK (" in line for line in proc.stdout.splitlines())
    doc = run_json("validate", *CLEAN)
    assert doc["ok"] is True and doc["findings"] == []
    assert [r["path"] for r in doc["paths"]] == [str(p) for p in CLEAN]
    assert sum(r["tensors"] for r in doc["paths"]) > 90


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))


def _validate(path, *more):
    doc = run_json("validate", path, *more, check=1)
    assert doc["ok"] is False
    text = run("validate", path, *more, check=1).stdout.splitlines()
    assert len(text) == len(doc["findings"]) + 1 + len(more)  # one line per finding, one per path
    return doc["findings"]


def _tensor(ckpt, name):
    return next(t for t in run_json("ls", ckpt)["tensors"] if t["name"] == name)


def test_validate_flipped_byte_in_a_tensor(tmp_path):
    ckpt = shutil.copytree(FIXTURES / "keras_adam", tmp_path / "k") / "ckpt-2"
    t = _tensor(ckpt, "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    _flip(tmp_path / "k" / "ckpt-2.data-00000-of-00001", t["offset"] + 5)
    findings = _validate(ckpt)
    assert [(f["check"], f["tensor"], f["offset"]) for f in findings] == [("crc", t["name"], t["offset"])]
    assert findings[0]["file"].endswith("ckpt-2.data-00000-of-00001")
    assert "checksum" in findings[0]["message"]


def test_validate_flipped_byte_in_an_index_block(tmp_path):
    ckpt = shutil.copytree(FIXTURES / "keras_adam", tmp_path / "k") / "ckpt-2"
    _flip(tmp_path / "k" / "ckpt-2.index", 40)
    findings = _validate(ckpt)
    assert "index-crc" in {f["check"] for f in findings}
    assert all(f["file"].endswith("ckpt-2.index") for f in findings if f["check"] == "index-crc")


def test_validate_truncated_and_missing_shards_and_keeps_going(tmp_path):
    root = shutil.copytree(FIXTURES / "sharded", tmp_path / "s")
    tensors = run_json("ls", root / "ckpt")["tensors"]
    by_shard = {}
    for t in tensors:
        for piece in t["parts"] or [t]:
            by_shard.setdefault(piece["shard"], []).append(dict(piece, name=t["name"]))
    truncated = max(s for s, ts in by_shard.items() if any(t["bytes"] for t in ts))
    missing = min(s for s in by_shard if s != truncated)
    shard_file = root / f"ckpt.data-{truncated:05d}-of-00005"
    end = max(t["offset"] + t["bytes"] for t in by_shard[truncated])
    with open(shard_file, "r+b") as f:
        f.truncate(end - 1)
    (root / f"ckpt.data-{missing:05d}-of-00005").unlink()
    findings = _validate(root / "ckpt")
    checks = [f["check"] for f in findings]
    assert "bounds" in checks and "shard" in checks
    bounds = next(f for f in findings if f["check"] == "bounds")
    assert bounds["file"] == str(shard_file) and bounds["tensor"] in {t["name"] for t in by_shard[truncated]}
    shard = next(f for f in findings if f["check"] == "shard")
    assert shard["file"].endswith(f"ckpt.data-{missing:05d}-of-00005") and "missing" in shard["message"]


def test_validate_wrong_fingerprint(tmp_path):
    model = shutil.copytree(FIXTURES / "keras3_export", tmp_path / "m")
    fp = protos.FingerprintDef.FromString((model / "fingerprint.pb").read_bytes())
    fp.signature_def_hash += 1
    (model / "fingerprint.pb").write_bytes(fp.SerializeToString())
    findings = _validate(model)
    assert [f["check"] for f in findings] == ["fingerprint"]
    assert "signature_def_hash" in findings[0]["message"]
    assert run("fingerprint", model, "--check", check=1).stdout.splitlines()[-1] == "fingerprint.pb: MISMATCH"


def test_validate_unparsable_protos_and_several_paths(tmp_path):
    model = shutil.copytree(FIXTURES / "tf_keras_savedmodel", tmp_path / "m")
    (model / "keras_metadata.pb").write_bytes(b"\xff\xff\xff")
    (model / "fingerprint.pb").write_bytes(b"\x0a\xff")
    findings = _validate(model, FIXTURES / "dtypes")
    files = {os.path.basename(f["file"]) for f in findings if f["check"] == "proto"}
    assert files == {"keras_metadata.pb", "fingerprint.pb"}
    assert all(f["path"] == str(model) for f in findings)


def test_validate_saved_model_pb_and_missing_path(tmp_path):
    model = shutil.copytree(FIXTURES / "tf1_builder", tmp_path / "m")
    (model / "saved_model.pb").write_bytes(b"\x0a\x05\x12")
    findings = _validate(model, tmp_path / "nowhere")
    assert {f["check"] for f in findings} == {"proto", "path"}
    assert next(f["message"] for f in findings if f["check"] == "path") == "does not exist"


def test_validate_never_aborts_and_json_always_prints_a_document(tmp_path, monkeypatch, capsys):
    # A state file that is not UTF-8 is a finding like any damaged file (exit 1).
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint").write_bytes(b'model_checkpoint_path: "\xff\x00"\n')
    doc = run_json("validate", tmp_path / "bad", FIXTURES / "sharded", check=1)
    assert doc["ok"] is False and [p["findings"] for p in doc["paths"]] == [1, 0]
    assert doc["findings"][0]["path"] == str(tmp_path / "bad")
    assert "not a UTF-8 text CheckpointState" in doc["findings"][0]["message"]
    # A check that breaks in a way none foresaw is a finding of its own (exit 3:
    # the checks could not finish), never an abort; --json still prints a document.
    from tfformats import validate as engine
    from tfformats.cli.parser import main

    def broken(*args):
        raise RuntimeError("no check foresaw this")
    monkeypatch.setattr(engine, "_validate", broken)
    assert main(["validate", str(tmp_path / "bad"), "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["findings"][0]["check"] == "error"
    assert main(["validate", str(tmp_path / "bad")]) == 3
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{tmp_path / 'bad'}: 1 finding")


def test_validate_expect_and_the_saved_model_pb_path(tmp_path):
    model = FIXTURES / "tf1_builder"
    for path in (model, model / "saved_model.pb", FIXTURES / "tf1_builder_pbtxt" / "saved_model.pbtxt"):
        doc = run_json("validate", path, "--expect", "saved_model", check=0)
        assert doc["paths"][0]["kind"] == "saved_model" and doc["paths"][0]["tensors"] == 2
    findings = run_json("validate", FIXTURES / "sharded", "--expect", "saved_model", check=1)["findings"]
    assert [(f["check"], f["message"]) for f in findings] == [("kind", "expected a SavedModel, found a checkpoint")]
    findings = run_json("validate", model, "--expect", "checkpoint", check=1)["findings"]
    assert [(f["check"], f["message"]) for f in findings] == [("kind", "expected a checkpoint, found a SavedModel")]
    findings = run_json("validate", model, "--expect", "graph", check=1)["findings"]
    assert [(f["check"], f["message"]) for f in findings] == [("kind", "expected a graph file, found a SavedModel")]
    run("validate", model, "--expect", "bogus", check=2)
    (tmp_path / "w.safetensors").write_bytes(b"{}")
    findings = _validate(tmp_path / "w.safetensors")
    assert [f["message"] for f in findings] == ["a safetensors file, not a checkpoint or SavedModel"]


# Every TF-written checkpoint and SavedModel fixture (frozen_graph and function_graph hold
# graphs, riegeli plain Riegeli files, keras_files Keras weight files).
TF_ARTIFACTS = sorted(p for p in FIXTURES.iterdir()
                      if p.is_dir() and p.name not in ("frozen_graph", "function_graph", "riegeli",
                                                       "keras_files"))


def test_validate_finds_nothing_wrong_with_any_tf_written_fixture():
    # tf1_eval_model's metric accumulators are local variables, which TF1 savers never store.
    doc = run_json("validate", *TF_ARTIFACTS, check=0)
    assert [p["path"] for p in doc["paths"]] == list(map(str, TF_ARTIFACTS)) and doc["findings"] == []
    kinds = {os.path.basename(p["path"]): p["kind"] for p in doc["paths"]}
    assert kinds["tf1_eval_model"] == kinds["tft_assets"] == kinds["tf1_multi_tags"] == "saved_model"


def test_global_options_before_or_after_the_command():
    before = run("--json", "ls", FIXTURES / "sharded", check=0)
    after = run("ls", FIXTURES / "sharded", "--json", check=0)
    assert json.loads(before.stdout)["tensors"] == json.loads(after.stdout)["tensors"]
    assert run("-q", "--json", "validate", FIXTURES / "sharded", check=0).stdout.startswith("{")
    assert "Traceback" in run("--debug", "ls", FIXTURES / "nothing", check=3).stderr


def test_validate_dangling_object_graph_references(tmp_path):
    from tfformats.writer import save_checkpoint
    graph = protos.TrackableObjectGraph()
    root = graph.nodes.add()
    root.children.add(node_id=1, local_name="w")
    root.children.add(node_id=7, local_name="ghost")
    leaf = graph.nodes.add()
    leaf.attributes.add(name="VARIABLE_VALUE", checkpoint_key="w/.ATTRIBUTES/VARIABLE_VALUE")
    leaf.attributes.add(name="VARIABLE_VALUE", checkpoint_key="gone/.ATTRIBUTES/VARIABLE_VALUE")
    blob = np.empty((), dtype=object)
    blob[()] = graph.SerializeToString()
    prefix = save_checkpoint(tmp_path / "ckpt", {"w/.ATTRIBUTES/VARIABLE_VALUE": np.ones(3, np.float32),
                                                 "_CHECKPOINTABLE_OBJECT_GRAPH": blob}, object_graph=False)
    findings = _validate(prefix)
    messages = sorted(f["message"] for f in findings if f["check"] == "object-graph")
    assert len(messages) == 2
    assert "points to node 7" in messages[1] or "points to node 7" in messages[0]
    assert any("'gone/.ATTRIBUTES/VARIABLE_VALUE'" in m for m in messages)


# --- fingerprint -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["keras3_export", "saved_model_module", "tf_keras_savedmodel"])
def test_fingerprint_matches_the_stored_one(name, store):
    stored = protos.FingerprintDef.FromString((FIXTURES / name / "fingerprint.pb").read_bytes())
    doc = run_json("fingerprint", store.path(FIXTURES / name), "--check")
    assert doc["matches"] is True and doc["findings"] == []
    for field, value in doc["hashes"].items():
        assert int(value) == getattr(stored, field)
    assert doc["singleprint"] == "/".join(doc["hashes"][k] for k in (
        "graph_def_program_hash", "signature_def_hash", "saved_object_graph_hash", "checkpoint_hash"))
    text = run("fingerprint", store.path(FIXTURES / name), check=0).stdout.splitlines()
    assert text[0] == f"saved_model_checksum: {stored.saved_model_checksum}"
    assert text[5].startswith("singleprint: ")


def test_fingerprint_write_then_check(store):
    model = store.copy_dir(FIXTURES / "tf1_builder", "m")  # TF wrote no fingerprint.pb here
    assert run("fingerprint", model, "--check", check=1).stdout.splitlines()[-2:] == [
        f"{model}: no fingerprint.pb (tfformats fingerprint --write creates one)", "fingerprint.pb: MISSING"]
    doc = run_json("fingerprint", model, "--check", check=1)
    assert doc["missing"] is True and doc["matches"] is False
    run("fingerprint", model, "--write", check=0)
    assert fileio.exists(f"{model}/fingerprint.pb")
    run("fingerprint", model, "--check", check=0)
    run("validate", model, check=0)


# --- convert and diff --------------------------------------------------------------

@pytest.mark.parametrize("dst", ["out.pt", "model.pkl", "weights.json"])
def test_convert_unknown_output_extension_is_a_usage_error(tmp_path, dst):
    proc = run("convert", FIXTURES / "sharded", tmp_path / dst, check=2)
    assert ".safetensors" in proc.stderr and "--to checkpoint|safetensors|npz" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_convert_to_overrides_the_extension(tmp_path):
    doc = run_json("convert", FIXTURES / "sharded", tmp_path / "weights.bin", "--to", "safetensors")
    assert doc["dst_format"] == "safetensors"
    from safetensors.numpy import load_file
    loaded = load_file(str(tmp_path / "weights.bin"))   # the reference reader accepts it
    with tfformats.CheckpointReader(FIXTURES / "sharded") as reader:
        assert sorted(loaded) == sorted(n for n in reader if n != "_CHECKPOINTABLE_OBJECT_GRAPH")
    run("convert", FIXTURES / "sharded", tmp_path / "model.ckpt-5", check=0)   # a prefix, no extension
    run("convert", FIXTURES / "sharded", tmp_path / "copy.pt", "--to", "checkpoint", check=0)
    run("diff", FIXTURES / "sharded", tmp_path / "copy.pt", check=0)

@pytest.mark.parametrize("ext", ["safetensors", "npz"])
def test_convert_round_trip_and_diff(store, ext):
    src = store.path(FIXTURES / "keras_adam")
    out = store.join(f"weights.{ext}")
    doc = run_json("convert", src, out)
    assert doc["dst_format"] == ext and doc["skipped"] == []
    back = store.join("back", "ckpt")
    run("convert", out, back, check=0)
    run("diff", src, back, check=0)
    same = run_json("diff", src, out)
    assert same["same"] is True and same["compared"] == 18
    run("validate", back, check=0)


def test_convert_saved_model_variables_and_strings(tmp_path):
    run("convert", FIXTURES / "tf_keras_savedmodel", tmp_path / "m.safetensors", check=0)
    assert "m.safetensors" in os.listdir(tmp_path)
    proc = run("convert", FIXTURES / "dtypes", tmp_path / "d.safetensors", check=3)
    assert "--skip-unsupported" in one_error_line(proc)
    one_error_line(run("convert", tmp_path / "a.npz", tmp_path / "b.safetensors", check=2))


def test_convert_a_selection_of_tensors(tmp_path):
    # The model's weights without the optimizer: patterns on keys and object paths.
    src = FIXTURES / "keras_adam"
    out = tmp_path / "w.safetensors"
    run("convert", src, out, "--exclude", "*/.OPTIMIZER_SLOT/*", "--exclude", "optimizer/*",
        "--exclude", "save_counter", check=0)
    from safetensors.numpy import load_file
    kept = load_file(out)
    assert sorted(kept) == [f"model/layer_with_weights-{i}/{w}/.ATTRIBUTES/VARIABLE_VALUE"
                            for i in (0, 1) for w in ("bias", "kernel")]
    reader = tfformats.open_checkpoint(src)
    for key, value in kept.items():
        np.testing.assert_array_equal(value, reader.get_tensor(key))
    # ...or TF variable names (Keras' "dense_1/kernel"), to an npz and to a checkpoint.
    run("convert", src, tmp_path / "d.npz", "--glob", "dense_1/*", check=0)
    with np.load(tmp_path / "d.npz") as npz:
        members = sorted(set(npz.files) - {convert._NPZ_DTYPES})
    assert members == ["model/layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE",
                       "model/layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    run("convert", src, tmp_path / "ck", "--glob", "Adam/*/m", check=0)   # with its own object graph
    assert sorted(tfformats.open_checkpoint(tmp_path / "ck")) == sorted(
        k for k in reader if k.endswith("/m/.ATTRIBUTES/VARIABLE_VALUE") or k == OBJECT_GRAPH_KEY)
    # Nothing left, or a source that is no checkpoint: usage errors.
    assert "no tensor is left" in one_error_line(run("convert", src, tmp_path / "n.npz", "--glob",
                                                     "nothing*", check=2))
    one_error_line(run("convert", out, tmp_path / "back", "--glob", "*", check=2))
    assert not (tmp_path / "n.npz").exists() and not (tmp_path / "back.index").exists()


def test_diff_reports_changes():
    a, b = FIXTURES / "keras_adam" / "ckpt-1", FIXTURES / "keras_adam" / "ckpt-2"
    doc = run_json("diff", a, b, check=1)
    assert doc["same"] is False and doc["only_in_a"] == [] and doc["only_in_b"] == []
    changed = {c["name"]: c for c in doc["changed"]}
    step = changed["save_counter/.ATTRIBUTES/VARIABLE_VALUE"]
    assert step["change"] == "values" and step["max_abs_diff"] == 1
    text = run("diff", a, b, check=1).stdout.splitlines()
    assert text[-1].endswith("differ")
    # Loose enough tolerances make the values equal; the object graph stays the same.
    loose = run_json("diff", a, b, "--atol", "10", check=0)
    assert loose["same"] is True


def test_diff_names_and_dtypes():
    doc = run_json("diff", FIXTURES / "keras_adam" / "ckpt-2", FIXTURES / "keras_adam_new", check=1)
    assert doc["only_in_a"] and doc["only_in_b"]
    doc = run_json("diff", FIXTURES / "dtypes", FIXTURES / "dtypes", check=0)
    assert doc["compared"] == 42


# --- bench -------------------------------------------------------------------------

def test_bench_decodes_against_tensorflow_and_safetensors():
    doc = run_json("bench", FIXTURES / "dtypes", "--rounds", "1")
    rows = {r["reader"]: r for r in doc["results"]}
    assert list(rows) == ["tfformats crc copy", "tfformats crc view", "tfformats copy", "tfformats view",
                          "tensorflow", "safetensors"]
    # The bytes are the stored bytes `ls` counts, of every tensor with values (strings included).
    listed = run_json("ls", FIXTURES / "dtypes")["tensors"]
    decodable = [t for t in listed if t["name"] != "_CHECKPOINTABLE_OBJECT_GRAPH"
                 and t["dtype"] not in ("variant", "resource")]
    assert doc["bytes"] == sum(t["bytes"] for t in decodable) and doc["tensors"] == len(decodable)
    assert rows["tensorflow"]["bytes"] == doc["bytes"] and rows["tensorflow"]["vs_tensorflow"] == 1.0
    no_strings = [t for t in decodable if t["dtype"] != "string"]
    assert rows["safetensors"]["tensors"] <= len(no_strings) < len(decodable)
    assert all(r["gb_per_s"] > 0 and r["meaning"] for r in rows.values())
    text = run("bench", FIXTURES / "dtypes", "--rounds", "1", check=0).stdout
    assert "GB/S" in text and "VS TENSORFLOW" in text and "the BYTES column of `tfformats ls`" in text


def test_show_accepts_saved_model_cli_spelling_of_the_directory():
    directory = FIXTURES / "tf1_builder"
    positional = run("show", directory, "--tag_set", "serve", check=0).stdout
    assert run("show", "--dir", directory, "--tag_set", "serve", check=0).stdout == positional
    for args in ([], [directory, "--dir", directory]):
        proc = run("show", *args, check=2)
        assert "DIR or --dir DIR" in proc.stderr and "Traceback" not in proc.stderr


def test_ls_imports_neither_numpy_nor_protobuf():
    """`ls` of a bundle without an object graph reads only the index: numpy and
    protobuf, whose imports take longer than listing 100,000 tensors, stay out."""
    code = ("import io, contextlib, sys\n"
            "from tfformats.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    assert main(['ls', sys.argv[1]]) == 0\n"
            "assert 'float32' in out.getvalue()\n"
            "print(sorted(m for m in ('numpy', 'google.protobuf', 'ml_dtypes', 'logging')\n"
            "             if m in sys.modules))\n")
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code, str(FIXTURES / "dtypes" / "ckpt")],
                          capture_output=True, text=True, env=environ, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
