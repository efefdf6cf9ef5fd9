"""The one place that chooses between the compiled hot paths and their twin.

`TFFORMATS_PUREPYTHON=1` forces the pure-Python twin. Otherwise the compiled
module `tfformats._native` is used when it was built; `IMPLEMENTATION` says
which one is active ("native" or "python") so users and bug reports can tell.
"""

import os

if os.environ.get("TFFORMATS_PUREPYTHON", "") not in ("", "0"):
    from . import _pure as hot
else:
    try:
        from . import _native as hot  # type: ignore  # typed by its twin, _pure
    except ImportError:
        from . import _pure as hot

IMPLEMENTATION = "native" if hot.__name__.endswith("_native") else "python"
