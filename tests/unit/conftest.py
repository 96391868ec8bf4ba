"""PYSLIRP_FROM_SOURCE=1: run the tests against the protocol cores' .py files rather than their
compiled extensions (pyslirp/compiled_modules.py: setup.py compiles each .py that has a .pxd beside
it; the source is its twin). test_core_compiled.py runs their tests this way in a subprocess."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

from pyslirp.compiled_modules import compiled_modules, source_path

if os.environ.get("PYSLIRP_FROM_SOURCE"):
    _cores = compiled_modules()

    class _SourceFinder(importlib.abc.MetaPathFinder):
        """Finds a protocol core's .py before its extension, whichever module imports it first
        (a compiled core that another imports would check the types it cimports)."""

        def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
            if name not in _cores:
                return None
            return importlib.util.spec_from_file_location(name, source_path(name))

    for _name in _cores:
        assert _name not in sys.modules, f"{_name} was imported before the conftest"
    sys.meta_path.insert(0, _SourceFinder())
    _loaded = [importlib.import_module(_name).__file__ for _name in _cores]

    def pytest_report_header() -> str:
        return "protocol cores from source: " + ", ".join(str(path) for path in _loaded)
