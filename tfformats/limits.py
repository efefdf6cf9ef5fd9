"""Limits on what an untrusted file may make tfformats allocate or compute.

A valid file can describe a lot of work in few bytes: keys that share a long
prefix, a tensor split into a million parts, a constant that repeats one
value. Each such quantity has a limit, far above what TensorFlow writes for
real models, so a hostile file gets a `LimitError` naming the limit instead of
a machine out of memory. A caller who trusts a file that needs more raises
the limit for a block of code:

    with tfformats.limits.override(max_parts=5_000_000):
        reader["huge_embedding"]

The limits are process-wide (threads see the override too); `current()`
gives those in force. README.md ("Security") lists them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Iterator

from .errors import LimitError


@dataclasses.dataclass(frozen=True)
class Limits:
    # Bytes of one `.index` (or V1 table) file.
    max_index_bytes: int = 4 << 30
    # Entries of one index (tensors and stored parts).
    max_index_entries: int = 20_000_000
    # Bytes of one key of a table (tensor names are far shorter).
    max_key_bytes: int = 64 << 10
    # Bytes of all keys of one table block once their shared prefixes are
    # expanded (a block is read whole; TensorFlow keeps one key at a time).
    max_block_key_bytes: int = 64 << 20
    # Bytes of one table block, compressed or not.
    max_block_bytes: int = 256 << 20
    # Stored parts of one partitioned tensor.
    max_parts: int = 1_000_000
    # Bytes a tensor read from a checkpoint may take in memory, as a multiple
    # of the bytes of the files that hold it.
    max_tensor_file_ratio: int = 1
    # Nesting depth of protos tfformats decodes itself (structured values).
    max_proto_depth: int = 100
    # Nodes of one object graph.
    max_object_graph_nodes: int = 10_000_000
    # Bytes `graph_constants` may allocate for all constants of one call.
    max_graph_constants_bytes: int = 4 << 30


DEFAULTS = Limits()
_current = DEFAULTS
_lock = threading.Lock()


def current() -> Limits:
    """The `Limits` in force."""
    return _current


@contextlib.contextmanager
def override(**changes: int) -> Iterator[Limits]:
    """Raise (or lower) some limits inside a `with` block: keyword names are
    the fields of `Limits`; an unknown name is a TypeError."""
    global _current
    with _lock:
        before = _current
        _current = dataclasses.replace(before, **changes)
    try:
        yield _current
    finally:
        with _lock:
            _current = before


def exceeded(name: str, value: float, what: str) -> LimitError:
    """The LimitError for `what` needing `value` where limit `name` allows less."""
    allowed = getattr(_current, name)
    return LimitError(f"{what}: {value} exceeds the limit {name}={allowed}; if the file is "
                      f"trusted, raise it with tfformats.limits.override({name}=...)", name)


def check(name: str, value: float, what: str) -> None:
    """Raise LimitError if `value` exceeds the limit `name`."""
    if value > getattr(_current, name):
        raise exceeded(name, value, what)
