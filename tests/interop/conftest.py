"""Pytest wiring for the interop rig (see rig.py, shim.py, build_image.py, README.md).

Fixtures:
  rig_image     (session) the guest image, built once and cached; skips — or, with CI set,
                fails — when QEMU or apt/dpkg are missing. Tests using it get the `interop` mark.
  rig_accel     (session) "kvm" or "tcg", probed once.
  line_capture  a TCP listener on 127.0.0.1 that records every byte the VM's line sends.

The rig's modules are importable from tests as plain ``import rig`` / ``import shim`` (this
conftest puts tests/interop on sys.path; import them that way, not as tests.interop.rig, so that
there is one copy of each).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import rig  # noqa: E402

_session_info: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "interop: end-to-end tests against Linux pppd in a QEMU VM")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "rig_image" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.interop)


@pytest.fixture(scope="session")
def rig_image() -> rig.ImagePaths:
    rig.require_rig()
    t0 = time.monotonic()
    image = rig.ensure_image()
    _session_info["image"] = str(image.dir)
    _session_info["image_seconds"] = round(time.monotonic() - t0, 1)
    return image


@pytest.fixture(scope="session")
def rig_accel(rig_image: rig.ImagePaths) -> str:
    t0 = time.monotonic()
    accel = asyncio.run(rig.choose_accel_async(rig_image))
    _session_info["accel"] = accel
    _session_info["accel_probe_seconds"] = round(time.monotonic() - t0, 1)
    return accel


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if not _session_info and not rig.RUNS:
        return
    tr = terminalreporter
    tr.section("pyslirp interop rig")
    for k in ("image", "image_seconds", "accel", "accel_probe_seconds"):
        if k in _session_info:
            tr.write_line(f"{k}: {_session_info[k]}")
    boots = [r.boot_wall_seconds for r in rig.RUNS if r.boot_wall_seconds is not None]
    if boots:
        tr.write_line(f"vm runs: {len(rig.RUNS)}; QEMU start to script start: min {min(boots):.2f}s "
                      f"mean {sum(boots) / len(boots):.2f}s max {max(boots):.2f}s")
    for r in rig.RUNS:
        tr.write_line(f"  {r.name} line={r.line} accel={r.accel} boot={r.boot_wall_seconds}s "
                      f"(guest uptime {r.boot_seconds}s) run={r.duration}s status={r.status} "
                      f"killed={r.timed_out}")


class LineCapture:
    """Listens on 127.0.0.1:port; records what the (first) connected peer sends."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        self.changed = asyncio.Event()
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.port

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        self.connected.set()
        try:
            while chunk := await reader.read(65536):
                self.data += chunk
                self.changed.set()
        except ConnectionError:
            pass
        finally:
            self.closed.set()
            self.changed.set()
            writer.close()

    async def wait_for(self, pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
        end = asyncio.get_running_loop().time() + timeout
        while not pred(bytes(self.data)):
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                return pred(bytes(self.data))
        return True

    async def close(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def line_capture():  # type: ignore[no-untyped-def]
    cap = LineCapture()
    await cap.start()
    try:
        yield cap
    finally:
        await cap.close()
