"""Progress reporting for long reads, writes and checks.

Functions that can take a while accept `progress`: False (the default)
reports nothing, True draws a tqdm bar on stderr, and a callable is called
as `progress(done, total)` after each step (`total` may be None when it is
not known up front). Amounts are bytes unless a caller says otherwise.
"""

from __future__ import annotations

import sys
from typing import Any, Callable


class _Silent:
    """Stands in for a bar when nothing is to be shown."""

    def update(self, n=1):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Callback(_Silent):
    """Turns bar updates into calls of `callback(done, total)`."""

    def __init__(self, callback, total):
        self._callback = callback
        self._total = total
        self._done = 0

    def update(self, n=1):
        self._done += n
        self._callback(self._done, self._total)


def bar(progress: bool | Callable[..., Any] | None, total: int, desc: str, unit: str = "B") -> Any:
    """A context manager with `update(n)` for `progress` (see the module docstring)."""
    if progress is None or progress is False:
        return _Silent()
    if progress is not True:
        if not callable(progress):
            raise TypeError(f"progress must be True, False or a callable, not {type(progress).__name__}")
        return _Callback(progress, total)
    from tqdm import tqdm
    scale = unit == "B"
    # The bar stays on screen when done: it shows how long the step took and how fast it went.
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000,
                file=sys.stderr, dynamic_ncols=True)
