"""One way to name a tensor, for every lookup tfformats offers.

A tensor can be named by
  * its checkpoint key (`model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE`,
    or `dense/kernel` in a TF1 checkpoint),
  * its object path (`model/dense/kernel`, from the object graph), or
  * its TF1/Keras variable name (`dense/kernel`, as `variable.name` shows it),
each with or without the `:0` output suffix.

`Names.resolve` turns any of them into the checkpoint key, trying in this
order: the exact key, an object path, a variable name. A variable name that
stands for several different tensors raises AmbiguousNameError listing
their keys; several keys holding one and the same tensor (a Keras 3 export
tracks each variable twice, under `variables/N` and `_all_variables/M`)
resolve to the first, preferring paths without a `_private` component. A
name that matches nothing raises TensorNotFoundError with the closest names.

The reader (tfformats/checkpoint.py) asks the bundle first and comes here
only on a miss, so exact keys cost one dict lookup as before.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from .errors import AmbiguousNameError, TensorNotFoundError

if TYPE_CHECKING:
    from .checkpoint import CheckpointReader

# Suggestions are only computed on a miss; a checkpoint with more names than
# this gets them from a prefix of its names (difflib is quadratic-ish).
_MAX_SUGGESTION_POOL = 200_000


def forms(name: str) -> list[str]:
    """The spellings of `name` to try: as given, without `:0`, without a trailing "/"."""
    out = [name]
    if name.endswith(":0"):
        out.append(name[:-2])
    stripped = name.rstrip("/")
    if stripped and stripped != name:
        out.append(stripped)
    return out


def _private(path: str) -> bool:
    return any(part.startswith("_") for part in path.split("/"))


class Names:
    """Resolves names to the checkpoint keys of one checkpoint.

    `keys`: every checkpoint key. `paths`: object path -> key. `full_names`:
    variable name -> [keys]. `same(keys)`: whether those keys hold the same
    tensor (then a variable name naming all of them is not ambiguous).
    `where` starts error messages (the checkpoint's prefix).
    """

    def __init__(self, keys: Iterable[str], paths: Mapping[str, str] | None = None,
                 full_names: Mapping[str, Iterable[str]] | None = None,
                 same: Callable[[list[str]], bool] | None = None, where: str = "") -> None:
        self.keys = keys if isinstance(keys, (set, frozenset, dict)) else set(keys)
        self.paths = dict(paths or {})
        self.full_names = {n: list(dict.fromkeys(ks)) for n, ks in (full_names or {}).items()}
        self._same = same
        self.where = where

    @classmethod
    def of_reader(cls, reader: CheckpointReader, paths: Mapping[str, str] | None = None,
                  full_names: Mapping[str, Iterable[str]] | None = None,
                  same: Callable[[list[str]], bool] | None = None) -> Names:
        """The names of a CheckpointReader: its keys, and the object paths and
        variable names its object graph records (plus any given, e.g. from a
        SavedModel's own object graph)."""
        from .errors import TFFormatsError
        from .objgraph import VARIABLE_VALUE
        keys = set(reader)
        try:
            objects = reader.object_variables()
        except TFFormatsError:   # an unreadable object graph leaves the keys usable
            objects = {}
        all_paths = dict(paths or {})
        all_names = {n: list(ks) for n, ks in (full_names or {}).items()}
        for key, var in objects.items():
            if var.attribute != VARIABLE_VALUE or key not in keys:
                continue
            if var.path:
                all_paths.setdefault(var.path, key)
            if var.full_name:
                all_names.setdefault(var.full_name, []).append(key)
        return cls(keys, all_paths, all_names, same, reader.prefix)

    def candidates(self, name: Any) -> list[str]:
        """The keys `name` may stand for: one for a key or object path, any
        number for a variable name, none when it names nothing."""
        if not isinstance(name, str):
            return []
        spellings = forms(name)
        for form in spellings:
            if form in self.keys:
                return [form]
        for form in spellings:
            if form in self.paths:
                return [self.paths[form]]
        for form in spellings:
            keys = self.full_names.get(form)
            if keys:
                return sorted(keys, key=_private)   # stable: public paths first
        return []

    def resolve(self, name: Any) -> str:
        """The checkpoint key `name` stands for (see the module docstring)."""
        keys = self.candidates(name)
        if len(keys) == 1:
            return keys[0]
        if not keys:
            raise TensorNotFoundError(self.missing_message(name))
        if self._same is not None and self._same(keys):
            return keys[0]
        raise AmbiguousNameError(
            f"{self.where}: {name!r} is the variable name of {len(keys)} different tensors: "
            f"{', '.join(keys)}; name one by its checkpoint key or object path", keys)

    def missing_message(self, name: Any) -> str:
        if not isinstance(name, str):
            return f"{self.where}: tensor names are str, not {type(name).__name__}"
        head = f"{self.where}: no tensor, object path or variable name {name!r}"
        pool = [*self.keys, *self.paths, *self.full_names]
        close = difflib.get_close_matches(name, pool[:_MAX_SUGGESTION_POOL], n=5, cutoff=0.6)
        if close:
            return f"{head}; closest: {', '.join(repr(c) for c in close)}"
        return head


def same_tensor(reader: CheckpointReader, keys: list[str]) -> bool:
    """Whether `keys` of `reader` hold equal tensors (same dtype, shape and values)."""
    first = reader.bundle.entry(keys[0])
    for key in keys[1:]:
        entry = reader.bundle.entry(key)
        if entry.dtype != first.dtype or list(entry.shape) != list(first.shape):
            return False
    def content(key):
        value = reader.bundle.read(key)
        # bytes, not ==, so that NaNs compare equal to themselves
        return value.tolist() if value.dtype == object else value.tobytes()
    value = content(keys[0])
    return all(content(k) == value for k in keys[1:])
