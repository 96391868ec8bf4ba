"""PYSLIRP_TCP_SOURCE=1: run the tests against tcp.py itself rather than its compiled extension
(setup.py compiles pyslirp/net/tcp.py with Cython; the source is its twin).
test_core_compiled.py runs the TCP tests this way in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pyslirp.net

if os.environ.get("PYSLIRP_TCP_SOURCE"):
    assert "pyslirp.net.tcp" not in sys.modules, "tcp was imported before the conftest"
    _source = Path(pyslirp.net.__file__).parent / "tcp.py"
    _spec = importlib.util.spec_from_file_location("pyslirp.net.tcp", _source)
    assert _spec is not None and _spec.loader is not None
    _tcp = importlib.util.module_from_spec(_spec)
    sys.modules["pyslirp.net.tcp"] = _tcp
    _spec.loader.exec_module(_tcp)
    pyslirp.net.tcp = _tcp  # type: ignore[attr-defined]

    def pytest_report_header() -> str:
        return f"TCP from source: {_tcp.__file__}"
