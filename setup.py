"""Build the compiled core (pyslirp/_core/*.pyx) and the protocol cores compiled from their
Python source (pure-Python mode, types in the .pxd beside each) with Cython.

Every extension is optional: where no C compiler can be called, the sdist still installs, and
pyslirp runs on the pure-Python twins (it warns at start, and ``--version`` says so). A build
that should be compiled is checked by ``.ci/run`` (``pyslirp --version``).

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
if sys.platform.startswith("linux"):
    # Calls into libpython through the GOT, not a PLT stub each: the stubs' cache lines were 5%
    # of a short connection's instruction-cache misses (benchmarks/shortconn.py).
    compile_args.append("-fno-plt")

extensions = [
    Extension(
        f"pyslirp._core.{pyx.stem}",
        [str(pyx)],
        extra_compile_args=compile_args,
    )
    for pyx in sorted(Path("pyslirp/_core").glob("*.pyx"))
]

# The protocol cores (each .py with a .pxd beside it) are compiled as they are; the rule lives in
# pyslirp/compiled_modules.py, which imports nothing but the standard library.
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pyslirp.compiled_modules import compiled_modules, source_path  # noqa: E402


def _optimisation(name: str) -> list[str]:
    """The runtime's compiled modules and the PPP link are optimised for size: they spend their
    time in calls into the interpreter, and on a small board their pages are resident memory."""
    glue = name.startswith(("pyslirp.runtime.", "pyslirp.ppp.link"))
    return ["-Os"] if glue and sys.platform != "win32" else []


protocol_extensions = [
    Extension(name, [str(source_path(name).relative_to(HERE))], extra_compile_args=compile_args + _optimisation(name))
    for name in compiled_modules()
]

compiled = (
    cythonize(
        extensions,
        language_level=3,
        compiler_directives={"embedsignature": True},
    )
    + cythonize(
        protocol_extensions,
        language_level=3,
        # Types come from the .pxd; the annotations are for readers and type checkers (a
        # "-> bytes" that returns a bytearray slice must not become a runtime check).
        compiler_directives={"annotation_typing": False, "infer_types": True, "embedsignature": True, "auto_pickle": False},
    )
)
for extension in compiled:
    extension.optional = True  # set here: cythonize makes Extensions of its own

setup(ext_modules=compiled)
