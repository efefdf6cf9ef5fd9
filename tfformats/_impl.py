"""The one place that chooses between the compiled hot paths and their twin.

`TFFORMATS_PUREPYTHON=1` forces the pure-Python twin. Otherwise the compiled
module `tfformats._native` is used when it was built; `IMPLEMENTATION` says
which one is active ("native" or "python") so users and bug reports can tell.
"""

import os
import warnings

# Left in the package by setup.py when it could not build the extension.
BUILD_FAILED_MARKER = "NATIVE_BUILD_FAILED"


def _warn_if_build_failed():
    """Repeat setup.py's warning, which pip hides unless run with -v: an
    install without a working C compiler should not be slow in silence."""
    from . import fileio
    reason = fileio.read_file_if_present(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), BUILD_FAILED_MARKER))
    if reason is not None:
        warnings.warn("tfformats' native extension was not built when tfformats was installed "
                      f"({reason.decode(errors='replace').strip()}); using the pure-Python "
                      "implementation (same results, slower). Reinstall with a working C "
                      "compiler, or set TFFORMATS_PUREPYTHON=1 to choose it and silence this.",
                      RuntimeWarning, stacklevel=2)


if os.environ.get("TFFORMATS_PUREPYTHON", "") not in ("", "0"):
    from . import _pure as hot
else:
    try:
        from . import _native as hot  # type: ignore  # typed by its twin, _pure
    except ImportError:
        from . import _pure as hot
        _warn_if_build_failed()

IMPLEMENTATION = "native" if hot.__name__.endswith("_native") else "python"
