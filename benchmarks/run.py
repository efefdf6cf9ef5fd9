#!/usr/bin/env python
"""Run every benchmark scenario A/B (alternating, one process per implementation).

    python benchmarks/run.py                      # both implementations, full size
    python benchmarks/run.py --scale 0.1          # quick run (TFFORMATS_BENCH_SCALE)
    python benchmarks/run.py --out results.md --json results.json
    python benchmarks/run.py --impl native --scenarios bulk_read,one_lookup
    python benchmarks/run.py --data-dir /tmp/tffb # keep/reuse the generated data

The parent process only orchestrates: it generates the data with TensorFlow in
a child process, then starts one worker process per implementation (the pure
one with TFFORMATS_PUREPYTHON=1), each of which imports tfformats and
TensorFlow, times every scenario's sides alternately and reports JSON.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

IMPLS = ("native", "python")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=None,
                   help="data size factor (default: $TFFORMATS_BENCH_SCALE or 1.0)")
    p.add_argument("--impl", default="native,python", help="comma list of: native, python")
    p.add_argument("--scenarios", default=",".join(benchlib.SCENARIOS),
                   help="comma list of: " + ", ".join(benchlib.SCENARIOS))
    p.add_argument("--data-dir", help="where to generate (and reuse) the data; default: a temp "
                                      "dir removed afterwards")
    p.add_argument("--budget", type=float, default=8.0,
                   help="approximate seconds of timing per scenario and implementation")
    p.add_argument("--min-rounds", type=int, default=3)
    p.add_argument("--max-rounds", type=int, default=15)
    p.add_argument("--out", help="also write the markdown table to this file")
    p.add_argument("--json", help="also write all results (with every sample) to this file")
    # internal
    p.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def data_kinds(scenarios):
    kinds = []
    for name in scenarios:
        for kind in benchlib.SCENARIOS[name][0]:
            if kind not in kinds:
                kinds.append(kind)
    return kinds


def worker(args, scenarios):
    """Runs in a child process: time scenarios for one implementation, JSON to stdout."""
    import tfformats  # noqa: PLC0415
    impl = tfformats.implementation()
    if impl != args.worker:
        json.dump({"impl": args.worker, "unavailable": f"tfformats.implementation() is {impl!r} "
                   f"(the native extension is not built)"}, sys.stdout)
        return
    data = benchlib.generate(args.data_dir, data_kinds(scenarios))
    workdir = benchlib.tmpdir("tfformats-bench-work-")
    results = []
    try:
        for name in scenarios:
            try:
                built = benchlib.SCENARIOS[name][1](data, workdir)
            except benchlib.NotReady as exc:
                log(f"[{impl}] {name}: not measured: {exc}")
                results.append({"scenario": name, "target": benchlib.TARGETS.get(name, ""),
                                "skipped": str(exc)})
                continue
            for scenario in built:
                try:
                    res = benchlib.alternate(scenario, budget=args.budget, min_rounds=args.min_rounds,
                                             max_rounds=args.max_rounds,
                                             log=lambda m: log(f"[{impl}] {m}"))
                except Exception as exc:  # a module that exists but fails: report, go on
                    log(f"[{impl}] {scenario.name}: FAILED: {exc!r}")
                    res = {"scenario": scenario.name, "target": scenario.target,
                           "skipped": f"failed: {type(exc).__name__}: {str(exc)[:200]}"}
                finally:
                    if scenario.close:
                        scenario.close()
                results.append(res)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    json.dump({"impl": impl, "results": results}, sys.stdout)


def run_worker(impl, args, scenario, scale):
    """One child process per (implementation, scenario): a crash loses only that scenario."""
    env = dict(os.environ)
    env["TFFORMATS_BENCH_SCALE"] = repr(scale)
    if impl == "python":
        env["TFFORMATS_PUREPYTHON"] = "1"
    else:
        env.pop("TFFORMATS_PUREPYTHON", None)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--data-dir", args.data_dir,
           "--scenarios", scenario, "--budget", str(args.budget),
           "--min-rounds", str(args.min_rounds), "--max-rounds", str(args.max_rounds)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        why = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit status {proc.returncode}")
        return {"impl": impl, "results": [{"scenario": scenario,
                                           "target": benchlib.TARGETS.get(scenario, ""),
                                           "skipped": f"benchmark process crashed ({why})"}]}
    return json.loads(proc.stdout)


def main(argv=None):
    args = parse_args(argv)
    scale = args.scale if args.scale is not None else benchlib.scale()
    os.environ["TFFORMATS_BENCH_SCALE"] = repr(scale)
    if args.generate_only:
        kinds = [k for k in args.scenarios.split(",") if k in benchlib.GENERATORS]
        benchlib.generate(args.data_dir, kinds, scale, log)
        return None
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in benchlib.SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; known: {list(benchlib.SCENARIOS)}")
    if args.worker:
        return worker(args, scenarios)
    try:
        import tensorflow  # noqa: F401, PLC0415
    except ImportError:
        raise SystemExit("TensorFlow is not installed: the benchmarks need it to generate the data "
                         "and as the reference side (pip install tensorflow-cpu)") from None
    impls = [i.strip() for i in args.impl.split(",") if i.strip()]
    cleanup = args.data_dir is None
    if cleanup:
        args.data_dir = benchlib.tmpdir()
    t0 = time.perf_counter()
    try:
        log(f"generating data (scale {scale}) in {args.data_dir} ...")
        benchlib.generate_in_subprocess(args.data_dir, data_kinds(scenarios), scale)
        by_impl, notes = {}, []
        for impl in impls:
            log(f"--- {impl} ---")
            for scenario in scenarios:
                out = run_worker(impl, args, scenario, scale)
                if "unavailable" in out:
                    notes.append(f"{impl}: not measured: {out['unavailable']}")
                    log(notes[-1])
                    break
                by_impl.setdefault(impl, []).extend(out["results"])
    finally:
        if cleanup:
            shutil.rmtree(args.data_dir, ignore_errors=True)
    table = benchlib.markdown_table(by_impl)
    header = (f"tfformats benchmarks, scale {scale}, Python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs; medians of alternating rounds; ratio = tfformats / reference; "
              f"total {time.perf_counter() - t0:.0f} s")
    text = "\n".join([header, "", table, *([""] + notes if notes else [])]) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"scale": scale, "results": by_impl, "notes": notes}, f, indent=1)
    return None


if __name__ == "__main__":
    main()
