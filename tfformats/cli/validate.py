"""`validate` and `fingerprint`: the checks live in tfformats.validate and
tfformats.fingerprint; this module turns their findings into text or JSON."""

import os
import sys

from .. import fileio
from .common import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, emit_json, human_bytes, json_doc, show_progress


def _finding_line(path, f):
    where = f.file or path
    if f.offset is not None:
        where += f":{f.offset}"
    tensor = f" tensor {f.tensor!r}:" if f.tensor is not None else ""
    return f"{where}:{tensor} {f.message} [{f.check}]"


def cmd_validate(args):
    from ..validate import validate
    reports = [validate(path, expect=args.expect, progress=show_progress(args)) for path in args.paths]
    if args.json:
        findings = [{"path": r.path, **f._asdict()} for r in reports for f in r.findings]
        paths = [{"path": r.path, "kind": r.kind, "tensors": r.tensors, "bytes": r.bytes,
                  "proto_files": r.files, "findings": len(r.findings)} for r in reports]
        emit_json(json_doc("validate", ok=not findings, paths=paths, findings=findings))
    else:
        out = sys.stdout
        for r in reports:
            for f in r.findings:
                out.write(_finding_line(r.path, f) + "\n")
        for r in reports:
            status = "OK" if r.ok else f"{len(r.findings)} finding(s)"
            out.write(f"{r.path}: {status} ({r.kind}, {r.tensors} tensors, "
                      f"{human_bytes(r.bytes)} checked)\n")
    return _validate_status(reports)


def _validate_status(reports):
    """0 clean, 1 findings, 3 when a check could not run to the end (an "error"
    finding: what it reports is incomplete)."""
    if any(f.check == "error" for r in reports for f in r.findings):
        return EXIT_ERROR
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FINDINGS


def cmd_fingerprint(args):
    from .. import fingerprint
    if not fileio.isdir(args.dir):
        from ..errors import CheckpointNotFoundError
        raise CheckpointNotFoundError(f"{args.dir}: not a SavedModel directory")
    computed = fingerprint.compute_fingerprint(args.dir)
    # Checked before --write can create it: a missing file is not a mismatch.
    missing = not fileio.exists(os.path.join(args.dir, fingerprint.FINGERPRINT_FILENAME))
    findings = fingerprint.check_fingerprint(args.dir) if args.check else []
    if args.write:
        fingerprint.write_fingerprint(args.dir, computed)
    hashes = {name: getattr(computed, name) for name in fingerprint.HASH_FIELDS}
    single = fingerprint.singleprint(computed)
    if args.json:
        emit_json(json_doc("fingerprint", path=args.dir, hashes={k: str(v) for k, v in hashes.items()},
                             singleprint=single, producer=computed.version.producer,
                             checked=args.check, matches=None if not args.check else not findings,
                             missing=missing, findings=findings, written=args.write))
    else:
        for name, value in hashes.items():
            print(f"{name}: {value}")
        print(f"singleprint: {single}")
        if args.check:
            if missing:
                print(f"{args.dir}: no fingerprint.pb (tfformats fingerprint --write creates one)")
            else:
                for message in findings:
                    print(message if message.startswith(args.dir) else f"{args.dir}: {message}")
            print("fingerprint.pb: " + ("MISSING" if missing else "matches" if not findings else "MISMATCH"))
        if args.write:
            print(f"wrote {os.path.join(args.dir, fingerprint.FINGERPRINT_FILENAME)}")
    return EXIT_FINDINGS if findings else EXIT_OK


