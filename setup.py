"""Builds the optional Cython extension `tfformats._native`.

When no C compiler works the build of the extension is skipped with a
warning and the package installs as pure Python (same behaviour, slower).
pip shows a build's output only with `-v`, so the reason is also left in the
package (`tfformats/NATIVE_BUILD_FAILED`), and importing tfformats repeats the
warning (`tfformats/_impl.py`).

The extension is built without debug symbols (`-g0`, and stripped on Linux):
they would make up most of its size and help no user.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MARKER = "NATIVE_BUILD_FAILED"   # read by tfformats/_impl.py
HERE = os.path.dirname(os.path.abspath(__file__))


def warn(message):
    print(f"WARNING: {message}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    def run(self):
        self._failure = None
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers, ...
            self._failure = self._reason(exc)
        self._leave_marker()

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._failure = self._reason(exc)

    def _reason(self, exc):
        kind = type(exc).__name__
        # A CompileError quotes the whole command line; its program says enough.
        program = {"CompileError": "compiler_so", "LinkError": "linker_so"}.get(kind)
        command = getattr(getattr(self, "compiler", None), program or "", None)
        if command:
            return f"{kind}: {command[0]} failed"
        text = f"{kind}: {exc}"
        return text if len(text) <= 160 else text[:157] + "..."

    def _leave_marker(self):
        # Where the package is assembled (the wheel) and, for in-place builds
        # (`pip install -e`), in the source tree; a good build removes it.
        folders = {os.path.join(self.build_lib, "tfformats")}
        if self.inplace:
            folders.add(os.path.join(HERE, "tfformats"))
        for folder in folders:
            path = os.path.join(folder, MARKER)
            if self._failure is None:
                if os.path.exists(path):
                    os.remove(path)
                continue
            os.makedirs(folder, exist_ok=True)
            with open(path, "w") as f:
                f.write(self._failure + "\n")
        if self._failure is not None:
            warn(f"tfformats' native extension was not built ({self._failure}); the "
                 "pure-Python implementation will be used (same results, slower).")


def extensions():
    posix = sys.platform != "win32"
    native = Extension("tfformats._native", ["native/_native.pyx"], include_dirs=["native"],
                       extra_compile_args=["-O3", "-g0"] if posix else [],
                       extra_link_args=["-s"] if sys.platform.startswith("linux") else [])
    try:
        from Cython.Build import cythonize
    except ImportError:
        # setuptools then compiles native/_native.c, which an sdist ships; if it
        # is missing too, the build fails and OptionalBuildExt says so.
        warn("Cython is not installed; compiling the generated native/_native.c.")
        return [native]
    return cythonize([native], language_level=3,
                     compiler_directives={"boundscheck": False, "wraparound": False,
                                          "cdivision": True})


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
