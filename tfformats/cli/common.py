"""What every subcommand shares: exit statuses, the JSON envelope, progress
bars and small text-formatting helpers."""

import os
import sys

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_ERROR = 3
SCHEMA = 1


class UsageError(Exception):
    """A command line that cannot be carried out as written (exit status 2)."""


def emit_json(doc):
    import json
    # One line: json's C encoder only runs without indent (10x faster on a big `ls`).
    sys.stdout.write(json.dumps(doc, allow_nan=False))
    sys.stdout.write("\n")


def json_doc(command, **fields):
    from .. import __version__, implementation
    return {"command": command, "schema": SCHEMA, "tfformats": __version__,
            "implementation": implementation(), **fields}


def show_progress(args):
    """Whether to draw progress bars: when stderr is a terminal, unless --quiet or --json."""
    return not (args.quiet or args.json) and sys.stderr.isatty()


def progress(args, total, desc, unit="B"):
    """A progress bar (or nothing, see show_progress) as tfformats.progress draws them."""
    from ..progress import bar
    return bar(show_progress(args), total, desc, unit)


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def table(columns, header, right=()):
    """Text table from columns of strings, padded to the widest cell; `right` columns right-aligned."""
    widths = [max(len(h), max(map(len, c), default=0)) for h, c in zip(header, columns)]
    last = len(header) - 1
    fmt = "  ".join(f"%{w}s" if i in right else ("%s" if i == last else f"%-{w}s")
                    for i, w in enumerate(widths))
    return "\n".join([fmt % tuple(header), *[fmt % row for row in zip(*columns)]])


def shape_text(shape):
    return "[" + ", ".join(map(str, shape)) + "]"



def json_safe(value):
    """Values from numpy's tolist() made JSON-safe (bytes, non-finite floats, complex)."""
    import math
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": __import__("base64").b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, complex):
        return [json_safe(value.real), json_safe(value.imag)]
    return value


def line_width():
    if not sys.stdout.isatty():
        return 75
    try:
        return max(40, os.get_terminal_size(sys.stdout.fileno()).columns)
    except OSError:
        return 80


def open_reader(path, verify=True):
    """A CheckpointReader, or a KerasReader for a Keras file (tfformats.keras)."""
    from ..checkpoint import open_checkpoint
    return open_checkpoint(path, verify=verify)


def object_variables(reader):
    """key -> ObjectVariable of a checkpoint's object graph ({} for a reader
    without one); an unreadable object graph only costs the object paths."""
    from ..errors import TFFormatsError
    if not hasattr(reader, "object_variables"):   # Keras and graph files
        return {}
    try:
        return reader.object_variables()
    except TFFormatsError as e:
        print(f"tfformats: warning: object graph unreadable, no object paths: {e}", file=sys.stderr)
        return {}


def name_matcher(objects, patterns):
    """Whether a key, or its object path or TF variable name (from `objects`,
    object_variables' map), matches one of the fnmatch `patterns` (case-sensitive)."""
    from fnmatch import fnmatchcase

    def matches(key):
        var = objects.get(key)
        names = (key,) if var is None else (key, var.path, var.full_name)
        return any(n is not None and fnmatchcase(n, p) for n in names for p in patterns)
    return matches

