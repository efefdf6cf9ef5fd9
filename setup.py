"""Builds the optional Cython extension `tfformats._native`.

When no C compiler is available the build of the extension is skipped with a
warning and the package installs as pure Python (same behaviour, slower).
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers, ...
            self._skip(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    @staticmethod
    def _skip(exc):
        print(f"WARNING: tfformats' native extension was not built ({exc}); "
              "the pure-Python implementation will be used.", file=sys.stderr)


def extensions():
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("WARNING: Cython is not installed; building pure Python only.", file=sys.stderr)
        return []
    native = Extension("tfformats._native", ["native/_native.pyx"],
                       extra_compile_args=["-O3"] if sys.platform != "win32" else [])
    return cythonize([native], language_level=3,
                     compiler_directives={"boundscheck": False, "wraparound": False,
                                          "cdivision": True})


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
