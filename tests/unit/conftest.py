"""PYSLIRP_FROM_SOURCE=1: run the tests against the protocol cores' .py files rather than their
compiled extensions (pyslirp/protocol_cores.py: setup.py compiles each .py that has a .pxd beside
it; the source is its twin). test_core_compiled.py runs their tests this way in a subprocess."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from pyslirp.protocol_cores import protocol_cores, source_path

if os.environ.get("PYSLIRP_FROM_SOURCE"):
    _loaded = []
    for _name in protocol_cores():
        assert _name not in sys.modules, f"{_name} was imported before the conftest"
        _spec = importlib.util.spec_from_file_location(_name, source_path(_name))
        assert _spec is not None and _spec.loader is not None
        _module = importlib.util.module_from_spec(_spec)
        sys.modules[_name] = _module
        _spec.loader.exec_module(_module)
        _package, _, _attr = _name.rpartition(".")
        setattr(importlib.import_module(_package), _attr, _module)
        _loaded.append(_module.__file__)

    def pytest_report_header() -> str:
        return "protocol cores from source: " + ", ".join(str(path) for path in _loaded)
