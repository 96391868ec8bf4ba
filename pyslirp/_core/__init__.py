"""The compiled core: HDLC-like framing and FCS-16 (RFC 1662), the Internet checksum
(RFC 1071/1624) and reassembly buffers (TCP out-of-order queue, IPv4 fragments).

Each module is a Cython extension with a pure-Python twin in ``pyslirp._core.pure`` (same
API; the test oracle). When an extension is missing (a source checkout that was not built),
its twin is registered under the compiled name, so ``import pyslirp._core.hdlc`` still works,
and a warning says so. ``COMPILED`` tells whether every module is the compiled one, and
``IMPLEMENTATION`` says which are loaded (``pyslirp --version`` prints it).
"""

from __future__ import annotations

import importlib
import sys
import warnings

__all__ = ["COMPILED", "IMPLEMENTATION", "MODULES", "PURE_MODULES"]

#: Modules of the core, in dependency order (hdlc cimports fcs, reassembly cimports checksum).
MODULES = ("fcs", "checksum", "hdlc", "reassembly")

PURE_MODULES: list[str] = []

for _name in MODULES:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ImportError:
        _twin = importlib.import_module(f"{__name__}.pure.{_name}")
        sys.modules[f"{__name__}.{_name}"] = _twin
        globals()[_name] = _twin
        PURE_MODULES.append(_name)

#: True when every core module is the compiled Cython extension.
COMPILED: bool = not PURE_MODULES

del _name

if PURE_MODULES:
    IMPLEMENTATION = "pure-Python fallback for " + ", ".join(PURE_MODULES) + " (compiled core not built)"
    warnings.warn(
        f"pyslirp._core: compiled extension modules missing ({', '.join(PURE_MODULES)}): running on the "
        "pure-Python twins, at several times the CPU per byte (installed where no C compiler could be "
        "called: install a wheel, or reinstall with one; a source checkout: `python setup.py build_ext --inplace`)",
        RuntimeWarning,
        stacklevel=2,
    )
else:
    IMPLEMENTATION = "compiled (Cython extensions: " + ", ".join(MODULES) + ")"
