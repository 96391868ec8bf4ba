"""The servers under comparison, each started fresh for one VM run, and what we read of them.

Three variants, all reached by QEMU's socket chardev on a loopback TCP port (``line_port``):

* ``slirp``       socat TCP-LISTEN (nodelay) <-> pty <-> ``slirp-fullbolt ppp`` (Debian's SLiRP)
* ``pyslirp-pty`` socat TCP-LISTEN (nodelay) <-> pty <-> ``pyslirp serve pty``  (like for like)
* ``pyslirp-tcp`` ``pyslirp serve tcp-listen://127.0.0.1:0``                  (the rig's native path)

For each: the PID whose CPU time (/proc/PID/stat utime+stime) and VmRSS (/proc/PID/status) we
report, the address the guest reaches host services at (SLiRP maps the host's loopback to
10.0.2.2; pyslirp maps services to its own address 10.0.0.1 on the same port numbers), and the
pppd options the client needs (under SLiRP the client names its peer, ``:10.0.2.2``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "interop"))

from pyslirp_proc import PyslirpProcess  # noqa: E402

SLIRP = "/usr/bin/slirp-fullbolt"
SOCAT = "socat"
PTY_PATH = re.compile(r"serving PPP on pseudo-terminal (/dev/pts/\d+)")
STATS = re.compile(r"stats: (\{.*\})\s*$")
CLK_TCK = os.sysconf("SC_CLK_TCK")
VARIANTS = ("slirp", "pyslirp-pty", "pyslirp-tcp")


# ---------------------------------------------------------------------------------------------
# /proc readings


def cpu_seconds(pid: int | None, *, kernel_only: bool = False) -> float | None:
    """utime + stime of a process (stime alone if ``kernel_only``), in seconds (None if it is gone)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    stime = int(fields[12])  # fields 14 and 15 of stat(5): utime, stime
    return (stime if kernel_only else int(fields[11]) + stime) / CLK_TCK


def io_counts(pid: int | None) -> dict[str, int] | None:
    """The process's read and write system calls (``syscr``/``syscw`` of /proc/PID/io) and its
    context switches, voluntary (it slept: a wakeup each) and not (/proc/PID/status)."""
    if pid is None:
        return None
    wanted = {"syscr": "syscr", "syscw": "syscw", "voluntary_ctxt_switches": "wakeups",
              "nonvoluntary_ctxt_switches": "preempted"}
    out: dict[str, int] = {}
    try:
        for name in ("io", "status"):
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in wanted:
                    out[wanted[key]] = int(value)
    except (OSError, ValueError):
        return None
    return out


def rss_kb(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def listening(port: int) -> bool:
    """True once something listens on 127.0.0.1:port (read from /proc/net/tcp, so that probing
    does not use up socat's single accept)."""
    want = f"0100007F:{port:04X}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[1] == want and parts[3] == "0A":
                return True
    return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# pyslirp on a pty (PyslirpProcess serves on tcp-listen; this serves on "pty")


class PyslirpPtyProcess(PyslirpProcess):
    """``pyslirp serve pty``; :attr:`pty` is the slave path it prints."""

    pty = ""

    async def start(self) -> None:  # same as PyslirpProcess.start, with the line "pty"
        import yaml

        config = dict(self.config)
        config.setdefault("logging", {}).setdefault("level", "DEBUG" if self.debug else "INFO")
        config_file = Path(self._dir.name) / "config.yaml"
        config_file.write_text(yaml.safe_dump(config))
        # PYSLIRP_BENCH_CPROFILE=DIR: run under cProfile timing CPU (not wall) time (a development
        # aid); each phase's stats (the harness logs stats with SIGUSR1 between phases) go to
        # DIR/pyslirp-<stamp>-<phase number>.prof, the rest at exit.
        prof_dir = os.environ.get("PYSLIRP_BENCH_CPROFILE")
        main = ["-m", "pyslirp"]
        if prof_dir:
            out = f"{prof_dir}/pyslirp-{os.getpid()}-{time.time():.0f}"
            main = ["-c", "import cProfile, itertools, runpy, time\n"
                    "from pyslirp.runtime import server\n"
                    "p = cProfile.Profile(time.process_time)\nphase = itertools.count()\n"
                    "log_stats = server.Server.log_stats\n"
                    "def dump(self):\n    log_stats(self)\n"
                    f"    p.dump_stats(f'{out}-{{next(phase)}}.prof')\n    p.clear()\n    p.enable()\n"
                    "server.Server.log_stats = dump\np.enable()\n"
                    "try:\n    runpy.run_module('pyslirp', run_name='__main__', alter_sys=True)\n"
                    f"finally:\n    p.disable()\n    p.dump_stats('{out}-end.prof')\n"]
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, *main, "serve", "--config", str(config_file), "pty",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=self._dir.name,
        )
        self._reader = asyncio.create_task(self._read())
        match = await self.wait_log(PTY_PATH.pattern, timeout=30)
        self.pty = match.group(1)


# ---------------------------------------------------------------------------------------------
# a server variant, started for one VM run


@dataclass
class Endpoints:
    echo: int
    bulk: int


class Server:
    """One variant, started fresh: ``async with Server(kind, endpoints) as s: s.line_port``."""

    def __init__(self, kind: str, ports: Endpoints, *, keepalive: bool = True,
                 max_connections: int = 20000, log_dir: Path | None = None) -> None:
        if kind not in VARIANTS:
            raise ValueError(kind)
        self.kind = kind
        self.ports = ports
        self.keepalive = keepalive
        self.max_connections = max_connections
        self.log_dir = log_dir
        self.line_port = 0
        self.pyslirp: PyslirpProcess | None = None
        self.socat: asyncio.subprocess.Process | None = None
        self._socat_log: Any = None
        self._home: tempfile.TemporaryDirectory[str] | None = None
        self._slirp_pid: int | None = None

    # what the guest needs
    @property
    def host_ip(self) -> str:
        return "10.0.2.2" if self.kind == "slirp" else "10.0.0.1"

    @property
    def pppd_options(self) -> str:
        return ":10.0.2.2" if self.kind == "slirp" else ""

    def pyslirp_config(self) -> dict[str, Any]:
        services = {p: {"host": "127.0.0.1", "port": p, "max_connections": self.max_connections}
                    for p in (self.ports.echo, self.ports.bulk)}
        config: dict[str, Any] = {"services": services,
                                  "tcp": {"max_connections": max(self.max_connections, 16384)}}
        if not self.keepalive:
            config["ppp"] = {"keepalive": {"interval": 0}}
        return config

    # the processes
    @property
    def server_pid(self) -> int | None:
        """The process doing the PPP/TCP work (pyslirp's python; SLiRP under socat)."""
        if self.kind == "slirp":
            if self._slirp_pid is None and self.socat is not None:
                kids = children(self.socat.pid)
                self._slirp_pid = kids[0] if kids else None
            return self._slirp_pid
        return self.pyslirp._proc.pid if self.pyslirp and self.pyslirp._proc else None

    @property
    def socat_pid(self) -> int | None:
        return self.socat.pid if self.socat is not None else None

    def server_alive(self) -> bool:
        if self.kind == "slirp":
            pid = self.server_pid
            # before QEMU connects socat has not started SLiRP yet
            return alive(pid) if pid is not None else alive(self.socat_pid)
        return self.pyslirp is not None and self.pyslirp.returncode is None

    def snapshot(self) -> dict[str, Any]:
        pid = self.server_pid
        return {"t": time.monotonic(), "cpu": cpu_seconds(pid), "cpu_kernel": cpu_seconds(pid, kernel_only=True),
                "rss_kb": rss_kb(pid), "io": io_counts(pid),
                "socat_cpu": cpu_seconds(self.socat_pid), "alive": self.server_alive()}

    async def _start_socat(self, target: list[str], env: dict[str, str] | None = None) -> None:
        self.line_port = free_port()
        if self.log_dir is not None:
            self._socat_log = open(self.log_dir / f"socat-{self.kind}-{self.line_port}.log", "wb")
        self.socat = await asyncio.create_subprocess_exec(
            SOCAT, "-d", "-d", f"TCP-LISTEN:{self.line_port},bind=127.0.0.1,nodelay,reuseaddr", *target,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._socat_log or asyncio.subprocess.DEVNULL,
            stderr=self._socat_log or asyncio.subprocess.DEVNULL,
            env=env, start_new_session=True)
        deadline = time.monotonic() + 10
        while not listening(self.line_port):
            if self.socat.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"socat did not listen on {self.line_port}")
            await asyncio.sleep(0.02)

    async def start(self) -> None:
        if self.kind == "slirp":
            self._home = tempfile.TemporaryDirectory(prefix="slirp-home-")
            env = {**os.environ, "HOME": self._home.name}
            # socat starts SLiRP on a fresh pty (its stdin/stdout, its controlling tty) when QEMU
            # connects; SLiRP's "ppp" option makes it talk PPP there.
            await self._start_socat([f"EXEC:{SLIRP} ppp,pty,raw,echo=0,setsid,ctty"], env)
            return
        cls = PyslirpPtyProcess if self.kind == "pyslirp-pty" else PyslirpProcess
        self.pyslirp = cls(self.pyslirp_config(), debug=False)
        await self.pyslirp.start()
        if self.kind == "pyslirp-pty":
            await self._start_socat([f"OPEN:{self.pyslirp.pty},raw,echo=0"])  # type: ignore[attr-defined]
        else:
            self.line_port = self.pyslirp.port

    async def stats(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """pyslirp's counters (SIGUSR1 makes it log a stats line); None for SLiRP."""
        proc = self.pyslirp
        if proc is None or proc._proc is None or proc.returncode is not None:
            return None
        import json

        start = len(proc.lines)
        proc._proc.send_signal(signal.SIGUSR1)
        try:
            match = await proc.wait_log(STATS.pattern, timeout=timeout, start=start)
        except (AssertionError, TypeError):
            return None
        with contextlib.suppress(ValueError):
            return json.loads(match.group(1))
        return None

    async def stop(self) -> None:
        if self.socat is not None:
            for pid in ([self._slirp_pid] if self._slirp_pid else []) + children(self.socat.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if self.socat.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.socat.kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.socat.wait(), 5)
            if self._socat_log is not None:
                self._socat_log.close()
        if self.pyslirp is not None:
            with contextlib.suppress(Exception):
                await self.pyslirp.stop()
            if self.log_dir is not None:
                with contextlib.suppress(OSError):
                    (self.log_dir / f"pyslirp-{self.kind}-{self.line_port}.log").write_text(self.pyslirp.log())
        if self._home is not None:
            self._home.cleanup()

    async def __aenter__(self) -> "Server":
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
