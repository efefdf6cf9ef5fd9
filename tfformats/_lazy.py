"""Modules imported on first use, so that starting up does not pay for them.

`tfformats ls` of a big index needs neither numpy nor protobuf, and importing
numpy alone takes longer than listing 100,000 tensors. Modules that hand out
arrays write `from ._lazy import numpy as np` and use `np` as usual; the real
module is imported at the first attribute looked up on it.
"""

import importlib


class LazyModule:
    """Stands for a module until an attribute is used, then imports it; each
    attribute is kept on this object, so later uses cost a plain lookup."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        value = getattr(importlib.import_module(self._name), attr)
        setattr(self, attr, value)
        return value

    def __repr__(self):
        return f"<lazily imported module {self._name!r}>"


numpy = LazyModule("numpy")
