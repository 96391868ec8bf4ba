"""Protocol cores that run compiled: sans-IO modules whose own ``.py`` Cython compiles in
pure-Python mode, with the types in a ``.pxd`` beside it (docs/ARCHITECTURE.md, "Compiled
protocol cores"). The rule is that file: setup.py compiles every
``pyslirp/<package>/<module>.py`` that has a ``.pxd`` beside it, and the uncompiled ``.py`` is
the module's twin in the tests."""

from __future__ import annotations

import importlib
import importlib.machinery
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def protocol_cores() -> list[str]:
    """Module names of the protocol cores (``pyslirp.net.tcp``, ...)."""
    return sorted(
        f"pyslirp.{pxd.parent.name}.{pxd.stem}"
        for pxd in _PACKAGE.glob("*/*.pxd")
        if pxd.parent.name != "_core" and pxd.with_suffix(".py").exists()
    )


def source_path(name: str) -> Path:
    """The ``.py`` of a protocol core."""
    return _PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py")


def running_from_source() -> list[str]:
    """Protocol cores imported from their ``.py`` rather than their compiled extension."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [
        name for name in protocol_cores()
        if not (importlib.import_module(name).__file__ or "").endswith(suffixes)
    ]


def partly_compiled() -> list[str]:
    """The cores running from source when others run compiled (a broken install): a compiled
    core reads the C fields of the objects another one makes, so they must be built together."""
    source = running_from_source()
    return source if len(source) < len(protocol_cores()) else []
