"""Run ``pyslirp serve`` as a user would — the installed CLI in its own process — for interop tests.

    async with PyslirpProcess(config) as server:        # listens on tcp-listen://127.0.0.1:<free>
        res = await rig.run_vm_async(image, script, line_port=server.port, ...)
        await server.wait_log(r"link up")

The configuration is a dict written to a YAML file; the line is ``tcp-listen://`` on a free loopback
port (:attr:`port`), or ``line`` (a device path, say). A configuration with ``lines`` names every
port there (``tcp-listen://127.0.0.1:0``: a free one each); :attr:`ports` maps each such line's name
to the port it listens on. Everything the server logs is kept in :attr:`PyslirpProcess.lines` for assertions and is
shown when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

LISTENING = re.compile(r"listening for the line on tcp 127\.0\.0\.1:(\d+)")
#: with ``lines``, each tcp-listen line says where it listens, prefixed with its name
LINE_LISTENING = r"line {name}: listening for the line on tcp 127\.0\.0\.1:(\d+)"
SERVING = re.compile(r"serving PPP on serial port")
STATS = re.compile(r"stats: (\{.*\})\s*$")
#: the longest log line read: a "stats:" line lists every open connection (about 150 bytes
#: each), which at the e2e rig's 10,000 held is far beyond asyncio's 64 KB default
LOG_LINE_LIMIT = 64 * 1024 * 1024
#: the event loop every server of the run uses: ``PYSLIRP_TEST_LOOP=asyncio`` runs the VM tests
#: on asyncio's own loop (the default, auto, is uvloop where installed)
LOOP = os.environ.get("PYSLIRP_TEST_LOOP", "auto")


class PyslirpProcess:
    def __init__(self, config: dict[str, Any] | None = None, *, debug: bool = True, line: str | None = None) -> None:
        self.config = dict(config or {})
        self.debug = debug
        self.line = line
        self.lines: list[str] = []
        self.port = 0
        #: with ``lines``: each tcp-listen line's name -> its port
        self.ports: dict[str, int] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._dir = tempfile.TemporaryDirectory(prefix="pyslirp-test-")

    async def __aenter__(self) -> "PyslirpProcess":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if exc[0] is not None:
            print("---- pyslirp log ----\n" + self.log(), file=sys.stderr)

    @property
    def config_file(self) -> Path:
        return Path(self._dir.name) / "config.yaml"

    def _write_config(self, config: dict[str, Any]) -> None:
        config = dict(config)
        config.setdefault("logging", {}).setdefault("level", "DEBUG" if self.debug else "INFO")
        self.config_file.write_text(yaml.safe_dump(config))

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Rewrite the configuration file and ask the server to reload it (SIGHUP)."""
        self._write_config(config)
        self._hangup()

    async def reconfigure_raw(self, text: str) -> None:
        """Write ``text`` as the configuration file (e.g. an invalid one) and send SIGHUP."""
        self.config_file.write_text(text)
        self._hangup()

    def _hangup(self) -> None:
        assert self._proc is not None and self._proc.returncode is None, "pyslirp is not running"
        self._proc.send_signal(signal.SIGHUP)

    async def start(self) -> None:
        self._write_config(self.config)
        config_file = self.config_file
        lines = self.config.get("lines") or []
        port = [] if lines else [self.line or "tcp-listen://127.0.0.1:0"]  # 'lines' names every port
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyslirp", "serve", "--config", str(config_file), *port,
            *(["--debug"] if self.debug else []),
            "--loop", LOOP,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self._dir.name,
            limit=LOG_LINE_LIMIT,
        )
        self._reader = asyncio.create_task(self._read())
        if lines:
            for line in lines:
                if str(line["port"]).startswith("tcp-listen://"):
                    match = await self.wait_log(LINE_LISTENING.format(name=re.escape(line["name"])), timeout=30)
                    self.ports[line["name"]] = int(match.group(1))
            self.port = next(iter(self.ports.values()), 0)
            return
        if self.line is not None:
            await self.wait_log(SERVING.pattern, timeout=30)
            return
        match = await self.wait_log(LISTENING.pattern, timeout=30)
        self.port = int(match.group(1))

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    def log(self) -> str:
        return "\n".join(self.lines)

    def find(self, pattern: str) -> list[re.Match[str]]:
        regex = re.compile(pattern)
        return [m for line in self.lines if (m := regex.search(line))]

    def all_stats(self) -> list[dict[str, Any]]:
        """Every "stats: {...}" line logged so far (at hang-up, on SIGUSR1), parsed, in order."""
        return [json.loads(m.group(1)) for m in self.find(STATS.pattern)]

    async def stats(self, timeout: float = 10) -> dict[str, Any]:
        """Ask the running server for its counters (SIGUSR1) and return the stats line it logs."""
        assert self._proc is not None and self._proc.returncode is None, "pyslirp is not running"
        start = len(self.lines)
        self._proc.send_signal(signal.SIGUSR1)
        match = await self.wait_log(STATS.pattern, timeout=timeout, start=start)
        return json.loads(match.group(1))

    async def wait_log(self, pattern: str, timeout: float = 30, start: int = 0) -> re.Match[str]:
        """The first log line (from line ``start`` on) matching ``pattern``; AssertionError with
        the log on timeout."""
        regex = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = start
        while True:
            for line in self.lines[seen:]:
                if match := regex.search(line):
                    return match
            seen = len(self.lines)
            if self._proc is not None and self._proc.returncode is not None and self._reader.done():
                raise AssertionError(f"pyslirp exited ({self._proc.returncode}) before {pattern!r}:\n{self.log()}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"pyslirp never logged {pattern!r} in {timeout} s:\n{self.log()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    @property
    def pid(self) -> int:
        """The server's process id (``python -m pyslirp serve`` itself, no wrapper between)."""
        assert self._proc is not None, "pyslirp was not started"
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    async def stop(self) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)  # tcp.shutdown_grace (10 s) + the LCP Terminate
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            await self._reader
        self._dir.cleanup()
        return proc.returncode
