"""Build the compiled core (pyslirp/_core/*.pyx) and the protocol cores compiled from their
Python source (pure-Python mode, types in the .pxd beside each) with Cython.

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

#: protocol cores: each .py with a .pxd beside it is compiled as it is (pyslirp/protocol_cores.py)
protocol_extensions = [
    Extension(".".join(pxd.with_suffix("").parts), [str(pxd.with_suffix(".py"))], extra_compile_args=compile_args)
    for pxd in sorted(Path("pyslirp").glob("*/*.pxd"))
    if pxd.parent.name != "_core" and pxd.with_suffix(".py").exists()
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"embedsignature": True},
    )
    + cythonize(
        protocol_extensions,
        language_level=3,
        # Types come from the .pxd; the annotations are for readers and type checkers (a
        # "-> bytes" that returns a bytearray slice must not become a runtime check).
        compiler_directives={"annotation_typing": False, "infer_types": True, "embedsignature": True},
    ),
)
