"""Run the fuzz targets of fuzz/targets.py for a bounded time each.

    python fuzz/run.py --seconds 60                     # every target, native
    python fuzz/run.py --target bundle --impl both --seconds 120
    python fuzz/run.py --engine random --seconds 30     # without atheris

Each run starts from a corpus built now from the TensorFlow-written
fixtures under tests/fixtures (nothing big is committed), in a work
directory (default: a temporary one; `--work DIR` keeps the corpora the
fuzzer grew). With `--impl python` (or `both`) the target runs under
TFFORMATS_PUREPYTHON=1.

Engines: `atheris` (coverage-guided libFuzzer; the default when atheris is
installed: `pip install tfformats[fuzz]`) or `random` (plain random
mutation of the seeds, no coverage feedback). A finding (foreign exception,
crash, hang past `--timeout` seconds, memory past `--rss-limit-mb`) is
written to `--crashes` (default fuzz-crashes/) as `<target>-<impl>-...`;
the run then restarts on the same corpus until its time is up. Executions
per target are printed at the end. Replay findings with
`python fuzz/targets.py --replay TARGET FILE...`.
"""

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = ROOT / "tests" / "fixtures"
sys.path[:0] = [str(HERE), str(ROOT)]

# Seeds bigger than this are left out (they slow every execution down).
MAX_SEED = 64 * 1024


def _bytes(path):
    return pathlib.Path(path).read_bytes()


def _bundle_prefixes():
    return sorted(p.with_name(p.name[:-len(".index")]) for p in FIXTURES.glob("**/*.index"))


def _data_files(prefix):
    return sorted(prefix.parent.glob(prefix.name + ".data-*"))


def seeds(name):
    """Seed inputs for target `name`, derived from the fixtures."""
    import numpy as np

    import targets
    from tfformats import checkpoint, convert, protos

    out = []
    if name == "table":
        out = [_bytes(f"{p}.index") for p in _bundle_prefixes()]
        out += [_bytes(p) for p in FIXTURES.glob("tf1_v1/**/model.ckpt-*")]
    elif name == "bundle":
        for prefix in _bundle_prefixes():
            out.append(targets.pack([_bytes(f"{prefix}.index"),
                                     *map(_bytes, _data_files(prefix))]))
    elif name == "v1":
        out = [_bytes(p) for p in FIXTURES.glob("tf1_v1/**/model.ckpt-*")]
    elif name == "objgraph":
        for prefix in _bundle_prefixes():
            with checkpoint.open_checkpoint(str(prefix)) as reader:
                if checkpoint.OBJECT_GRAPH_KEY in reader:
                    out.append(reader.get_tensor(checkpoint.OBJECT_GRAPH_KEY).item())
    elif name == "saved_model":
        for pb in FIXTURES.glob("**/saved_model.pb"):
            out.append(targets.pack([_bytes(pb.parent / f) if (pb.parent / f).exists() else b""
                                     for f in targets.SAVED_MODEL_FILES]))
    elif name in ("graph", "tensor_proto"):
        graphs = [protos.GraphDef.FromString(_bytes(p))
                  for p in [FIXTURES / "frozen_graph/frozen.pb", FIXTURES / "function_graph/graph.pb"]]
        for pb in FIXTURES.glob("**/saved_model.pb"):
            graphs += [m.graph_def for m in protos.SavedModel.FromString(_bytes(pb)).meta_graphs]
        if name == "graph":
            out = [g.SerializeToString() for g in graphs]
        else:
            nodes = [n for g in graphs for n in g.node]
            nodes += [n for g in graphs for f in g.library.function for n in f.node_def]
            out = sorted({n.attr["value"].tensor.SerializeToString() for n in nodes
                          if n.op == "Const"}, key=len)[:200]
    elif name == "state_file":
        out = [_bytes(p) for p in FIXTURES.glob("**/checkpoint")]
        out.append(b'model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n'
                   b"all_model_checkpoint_timestamps: 1.5\nlast_preserved_timestamp: 1.0\n")
    elif name in ("safetensors", "npz"):
        convert_fn = {"safetensors": convert.checkpoint_to_safetensors,
                      "npz": convert.checkpoint_to_npz}[name]
        with tempfile.TemporaryDirectory() as d:
            for i, prefix in enumerate(_bundle_prefixes()):
                dst = os.path.join(d, f"{i}.{name}")
                convert_fn(str(prefix), dst, skip_unsupported=True)
                out.append(_bytes(dst))
        if name == "npz":   # one written by numpy itself, compressed
            with tempfile.TemporaryDirectory() as d:
                np.savez_compressed(os.path.join(d, "c.npz"), a=np.arange(6).reshape(2, 3),
                                    b=np.array([b"xy"]))
                out.append(_bytes(os.path.join(d, "c.npz")))
    else:
        raise ValueError(f"unknown target {name}")
    return [s for s in out if len(s) <= MAX_SEED]


def write_corpus(name, directory):
    directory.mkdir(parents=True, exist_ok=True)
    found = seeds(name)
    for i, data in enumerate(found):
        (directory / f"seed-{i:03d}").write_bytes(data)
    return max(map(len, found), default=4096)


_EXECS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_DONE = re.compile(r"Done (\d+) runs")
_COV = re.compile(r"cov: (\d+) ft: (\d+)")


def run_atheris(name, impl, seconds, corpus, crashes, args, max_len):
    """Fuzz until `seconds` have passed, restarting after each finding.
    Returns (executions, findings, libFuzzer log tail)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("TFFORMATS_PUREPYTHON", None)
    if impl == "python":
        env["TFFORMATS_PUREPYTHON"] = "1"
    deadline = time.monotonic() + seconds
    executions = findings = 0
    log = ""
    logs = []
    while (left := int(deadline - time.monotonic())) >= 5:
        cmd = [sys.executable, str(HERE / "targets.py"), name,
               f"-max_total_time={left}", f"-timeout={args.timeout}",
               f"-rss_limit_mb={args.rss_limit_mb}", f"-max_len={max_len + 4096}",
               f"-artifact_prefix={crashes}/{name}-{impl}-", "-print_final_stats=1",
               "-print_pcs=0", "-reload=0", str(corpus)]
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace")
        log = proc.stdout
        logs.append(log)
        stats = _EXECS.findall(log) or _DONE.findall(log)
        executions += int(stats[-1]) if stats else 0
        if proc.returncode != 0:
            findings += 1
            tail = "\n".join(log.splitlines()[-30:])
            print(f"--- {name} ({impl}): finding, exit {proc.returncode}\n{tail}\n", flush=True)
    (corpus.parent / f"{corpus.name}.log").write_text("\n".join(logs))
    cov = _COV.findall(log)
    return executions, findings, f"cov {cov[-1][0]} ft {cov[-1][1]}" if cov else ""


def run_random(name, impl, seconds, corpus, crashes, args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("TFFORMATS_PUREPYTHON", None)
    if impl == "python":
        env["TFFORMATS_PUREPYTHON"] = "1"
    cmd = [sys.executable, str(HERE / "targets.py"), "--random", name, str(seconds),
           str(args.timeout), f"{crashes}/{name}-{impl}-", str(corpus)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace")
    m = re.findall(r"executions: (\d+) findings: (\d+)", proc.stdout)
    if proc.returncode not in (0, 1) or not m:
        print(f"--- {name} ({impl}): died, exit {proc.returncode}\n{proc.stdout[-3000:]}")
        return 0, 1, proc.stdout
    if int(m[-1][1]):
        print(proc.stdout[-3000:])
    return int(m[-1][0]), int(m[-1][1]), ""


def main():
    sys.path.insert(0, str(HERE))
    import targets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", choices=sorted(targets.TARGETS),
                        help="a target to run (repeatable; default: all)")
    parser.add_argument("--seconds", type=int, default=60, help="per target and implementation")
    parser.add_argument("--impl", choices=("native", "python", "both"), default="native")
    parser.add_argument("--engine", choices=("atheris", "random"), default=None)
    parser.add_argument("--crashes", default="fuzz-crashes", help="where findings are written")
    parser.add_argument("--work", help="keep corpora here (default: a temporary directory)")
    parser.add_argument("--timeout", type=int, default=30,
                        help="seconds one input may take (generous: shared machines stall)")
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    parser.add_argument("--no-skip-known", action="store_true",
                        help="report the findings listed in targets.KNOWN too")
    args = parser.parse_args()
    engine = args.engine
    if not args.no_skip_known:
        os.environ["TFFORMATS_FUZZ_SKIP_KNOWN"] = "1"
    if engine is None:
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "random"
            print("atheris is not installed: plain random mutation (pip install tfformats[fuzz])")
    crashes = pathlib.Path(args.crashes).resolve()
    crashes.mkdir(parents=True, exist_ok=True)
    impls = ("native", "python") if args.impl == "both" else (args.impl,)
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="tfformats-corpus-")).resolve()
    results = []
    for name in args.target or sorted(targets.TARGETS):
        for impl in impls:
            corpus = work / f"{name}-{impl}"
            max_len = write_corpus(name, corpus)
            start = time.monotonic()
            # The targets' scratch directories go here, removed after the run
            # (libFuzzer ends a process without running its exit handlers).
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            os.environ["TFFORMATS_FUZZ_SCRATCH"] = tempfile.mkdtemp(prefix="tfformats-fuzz-",
                                                                    dir=shm)
            if engine == "atheris":
                n, found, cov = run_atheris(name, impl, args.seconds, corpus, crashes, args,
                                            max_len)
            else:
                n, found, cov = run_random(name, impl, args.seconds, corpus, crashes, args)
            shutil.rmtree(os.environ.pop("TFFORMATS_FUZZ_SCRATCH"), ignore_errors=True)
            took = time.monotonic() - start
            results.append((name, impl, n, took, found, len(list(corpus.iterdir())), cov))
            print(f"{name:13} {impl:7} {n:9d} executions in {took:6.0f} s "
                  f"({n / max(took, 1):7.1f}/s), {found} findings, corpus {results[-1][5]} {cov}",
                  flush=True)
    print(f"\nengine {engine}; findings in {crashes}; corpora in {work}")
    print(f"{'target':13} {'impl':7} {'executions':>10} {'seconds':>8} {'findings':>8}  corpus")
    for name, impl, n, took, found, size, cov in results:
        print(f"{name:13} {impl:7} {n:10d} {took:8.0f} {found:8d}  {size} {cov}")
    return 1 if any(r[4] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
