"""Build the compiled core (pyslirp/_core/*.pyx) with Cython.

Everything else lives in pyproject.toml. No -march=native: wheels must run on any x86-64/ARM64.
"""

import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

if sys.platform == "win32":
    compile_args = ["/O2"]
else:
    compile_args = ["-O3", "-fno-strict-aliasing"]

extensions = [
    Extension(
        f"pyslirp._core.{pyx.stem}",
        [str(pyx)],
        extra_compile_args=compile_args,
    )
    for pyx in sorted(Path("pyslirp/_core").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"embedsignature": True},
    ),
)
