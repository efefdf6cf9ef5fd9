"""`bench`: decode throughput of a checkpoint."""

import os
import sys

from .common import EXIT_OK, UsageError, emit_json, human_bytes, json_doc, open_reader, progress, table


def bench_worker(path, verify):
    """One measured pass (after a warm-up): open, read every tensor. Prints JSON."""
    import json
    import time
    from .. import implementation
    from ..checkpoint import CheckpointReader

    def one_pass():
        start = time.perf_counter()
        with CheckpointReader(path, verify=verify) as reader:
            total = 0
            for name in reader:
                total += reader.get_tensor(name).nbytes
        return time.perf_counter() - start, total

    one_pass()
    seconds, total = one_pass()
    print(json.dumps({"implementation": implementation(), "seconds": seconds, "bytes": total}))


def _run_worker(path, verify, pure):
    import json
    import subprocess
    env = dict(os.environ)
    env["TFFORMATS_PUREPYTHON"] = "1" if pure else "0"
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    code = "import sys; from tfformats.cli.bench import bench_worker; bench_worker(sys.argv[1], sys.argv[2] == '1')"
    proc = subprocess.run([sys.executable, "-c", code, path, "1" if verify else "0"],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        from ..errors import TFFormatsError
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise TFFormatsError(f"benchmark worker failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cmd_bench(args):
    import statistics
    from .. import _impl
    if args.rounds < 1:
        raise UsageError("--rounds must be at least 1")
    open_reader(args.path).close()  # fail early, with the reader's message, on a bad path
    native_available = True
    try:
        import importlib
        importlib.import_module("tfformats._native")
    except ImportError:
        native_available = False
    sides = [("python", True)] + ([("native", False)] if native_available else [])
    results = {(impl, verify): [] for impl, _ in sides for verify in (True, False)}
    total_bytes = 0
    with progress(args, args.rounds * len(results), "benchmarking", unit="run") as bar:
        for _ in range(args.rounds):  # alternate the sides, round after round
            for verify in (True, False):
                for impl, pure in sides:
                    r = _run_worker(args.path, verify, pure)
                    results[impl, verify].append(r["seconds"])
                    total_bytes = r["bytes"]
                    bar.update(1)
    rows = []
    for (impl, verify), times in results.items():
        median = statistics.median(times)
        rows.append({"implementation": impl, "crc": verify, "median_seconds": median,
                     "mb_per_s": (total_bytes / 1e6) / median if median > 0 else None,
                     "rounds": times})
    del _impl
    if args.json:
        emit_json(json_doc("bench", path=args.path, bytes=total_bytes, native_available=native_available,
                             results=rows))
        return EXIT_OK
    print(f"{args.path}: {total_bytes} bytes ({human_bytes(total_bytes)}); median of {args.rounds} "
          f"round(s), open + read every tensor")
    body = [(r["implementation"], "on" if r["crc"] else "off", f"{r['median_seconds'] * 1e3:.1f}",
             f"{r['mb_per_s']:.1f}" if r["mb_per_s"] is not None else "-") for r in rows]
    print(table(list(zip(*body)), ("IMPLEMENTATION", "CRC", "MS", "MB/S"), right=(2, 3)))
    if not native_available:
        print("native implementation not built; only the pure-Python one was measured")
    else:
        for verify in (True, False):
            py = statistics.median(results["python", verify])
            nat = statistics.median(results["native", verify])
            print(f"native speed-up with CRC {'on' if verify else 'off'}: {py / nat:.2f}x")
    return EXIT_OK

