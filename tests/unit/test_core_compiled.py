"""The compiled core is what runs: CI builds the extensions and this test insists on them."""

import importlib
import importlib.machinery
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pyslirp._core as core

EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def test_compiled_core_is_in_use() -> None:
    assert core.COMPILED, core.IMPLEMENTATION
    assert core.PURE_MODULES == []
    assert core.IMPLEMENTATION.startswith("compiled")


def test_every_module_is_an_extension() -> None:
    for name in core.MODULES:
        mod = importlib.import_module(f"pyslirp._core.{name}")
        assert mod.__file__ is not None and mod.__file__.endswith(EXTENSION_SUFFIXES), (name, mod.__file__)
        assert sys.modules[f"pyslirp._core.{name}"] is mod


def test_import_statement_gives_compiled_hdlc() -> None:
    import pyslirp._core.hdlc as hdlc

    assert hdlc.__file__.endswith(EXTENSION_SUFFIXES)
    # cdef classes: instances have no __dict__ and no arbitrary attributes.
    assert not hasattr(hdlc.Deframer(), "__dict__")


def test_fallback_to_pure_twins_when_not_built() -> None:
    # In a fresh interpreter, hide the extension modules: the twins must take their names.
    root = Path(core.__file__).resolve().parents[2]
    code = textwrap.dedent(
        """
        import importlib.machinery, sys, warnings
        class HideExtensions:
            def find_spec(self, name, path=None, target=None):
                if name.startswith("pyslirp._core.") and name.count(".") == 2:
                    for finder in sys.meta_path:
                        if finder is self or not hasattr(finder, "find_spec"):
                            continue
                        spec = finder.find_spec(name, path, target)
                        if spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
                            raise ImportError("hidden for the test")
                return None
        sys.meta_path.insert(0, HideExtensions())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import pyslirp._core as core
        assert not core.COMPILED
        assert core.PURE_MODULES == ["fcs", "checksum", "hdlc", "reassembly"], core.PURE_MODULES
        assert "pure-Python" in core.IMPLEMENTATION
        assert any("compiled extension modules missing" in str(w.message) for w in caught)
        import pyslirp._core.hdlc as hdlc
        from pyslirp._core import checksum, fcs, reassembly
        assert hdlc.__file__.endswith("pure/hdlc.py"), hdlc.__file__
        assert fcs.fcs16(b"123456789") ^ 0xFFFF == 0x906E
        frame = b"\\xff\\x03\\xc0\\x21hello"
        assert hdlc.Deframer().feed(hdlc.encode_frame(frame)) == [frame]
        assert reassembly.SegmentQueue(10).insert(5, b"ab", 5) == 2
        print("fallback ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env={"PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "fallback ok" in result.stdout


# -- protocol cores: their .py compiled in Cython's pure-Python mode (a .pxd beside each) -------

#: the tests of the protocol cores, run again against their source
PROTOCOL_CORE_TESTS = (
    "test_tcp_state.py", "test_tcp_flow.py", "test_tcp_sim.py", "test_tcp_segment.py", "test_tcp_on_change.py",
    "test_tcp_rtt.py", "test_tcp_congestion.py", "test_tcp_scoreboard.py", "test_tcp_send_receive.py",
    "test_line_budget.py", "test_wire.py",
    "test_gateway.py", "test_proxy.py", "test_vj.py", "test_ppp_link.py", "test_lines.py",
    "test_timing.py",
)


def test_compiled_modules_are_compiled() -> None:
    from pyslirp.net import tcp
    from pyslirp.compiled_modules import compiled_modules, running_from_source

    assert compiled_modules() == [
        "pyslirp.net.ipv4", "pyslirp.net.line_budget", "pyslirp.net.stack", "pyslirp.net.tcp",
        "pyslirp.net.tcp_congestion", "pyslirp.net.tcp_options", "pyslirp.net.tcp_receive", "pyslirp.net.tcp_rtt",
        "pyslirp.net.tcp_scoreboard", "pyslirp.net.tcp_segment", "pyslirp.net.tcp_send", "pyslirp.net.tcp_types",
        "pyslirp.net.wire", "pyslirp.ppp.link", "pyslirp.ppp.vj", "pyslirp.runtime.gateway",
        "pyslirp.runtime.network", "pyslirp.runtime.scheduler", "pyslirp.runtime.timing",
    ]
    assert running_from_source() == []
    # cdef classes: their fields are C struct members, not a __dict__
    conn = tcp.TCPConnection(b"\x0a\x00\x00\x01", 80, b"\x0a\x00\x00\x02", 40000, iss=1)
    assert not hasattr(conn, "__dict__")


def test_protocol_core_sources_pass_their_tests() -> None:
    """The uncompiled .py files are the twins: the same tests pass against them (a subprocess,
    since the compiled modules are already imported here)."""
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYSLIRP_FROM_SOURCE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--import-mode=importlib",
         "-c", str(here.parents[1] / "pyproject.toml"), *(str(here / name) for name in PROTOCOL_CORE_TESTS)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    tail = "\n".join(result.stdout.splitlines()[-15:]) + result.stderr[-2000:]
    assert result.returncode == 0, tail
    assert "protocol cores from source: " in result.stdout and "vj.py" in result.stdout, tail


def test_serve_refuses_a_partly_compiled_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A compiled core reads the C fields of objects another core makes: a mix of compiled and
    source modules (a lost .so) is refused with a clear message, not run into a crash."""
    from pyslirp import cli, compiled_modules

    monkeypatch.setattr(compiled_modules, "running_from_source", lambda: ["pyslirp.net.tcp_segment"])
    assert cli.main(["serve", "pty"]) == 1
    assert "protocol cores partly compiled (pyslirp.net.tcp_segment from source" in capsys.readouterr().err
