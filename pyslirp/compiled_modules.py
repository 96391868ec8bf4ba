"""Modules that run compiled: the sans-IO protocol cores on the per-packet path, and the
runtime's per-frame modules (the gateway, its network, its line scheduler and timing, the PPP
link). Cython compiles each one's own ``.py`` in pure-Python mode, with the types in a ``.pxd``
beside it (docs/ARCHITECTURE.md, "Compiled protocol cores and per-frame runtime"). The rule is
that file: setup.py compiles every ``pyslirp/<package>/<module>.py`` that has a ``.pxd`` beside
it, and the uncompiled ``.py`` is the module's twin in the tests."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def compiled_modules() -> list[str]:
    """Names of the modules compiled from their own source (``pyslirp.net.tcp``, ...)."""
    return sorted(
        f"pyslirp.{pxd.parent.name}.{pxd.stem}"
        for pxd in _PACKAGE.glob("*/*.pxd")
        if pxd.parent.name != "_core" and pxd.with_suffix(".py").exists()
    )


def source_path(name: str) -> Path:
    """The ``.py`` of a compiled module."""
    return _PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py")


def running_from_source() -> list[str]:
    """Compiled modules that load (or were loaded) from their ``.py`` rather than their
    extension. A module not imported yet is looked up, not imported: the server asks before it
    imports its event loop (see ``pyslirp.runtime.no_tls``)."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [name for name in compiled_modules() if not _origin(name).endswith(suffixes)]


def _origin(name: str) -> str:
    module = sys.modules.get(name)
    if module is not None:
        return module.__file__ or ""
    spec = importlib.util.find_spec(name)
    return (spec.origin if spec is not None else None) or ""


def partly_compiled() -> list[str]:
    """The modules running from source when others run compiled (a broken install): a compiled
    module reads the C fields of the objects another one makes, so they must be built together."""
    source = running_from_source()
    return source if len(source) < len(compiled_modules()) else []
