"""``pyslirp serve`` as users run it, in a process of its own, for the benchmarks that measure
the server's memory and CPU from outside (/proc)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pyslirp

REPO = pathlib.Path(__file__).resolve().parents[1]
PYSLIRP = pathlib.Path(sys.executable).with_name("pyslirp")  # the console script users run


def vm_rss_kb(pid: int) -> int:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, "no VmRSS: the server has exited"
    return int(match.group(1))


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process so far (/proc/PID/stat fields 14 and 15)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compile_bytecode() -> None:
    """pyslirp's .pyc files, as an installed package has them: a checkout run with
    PYTHONDONTWRITEBYTECODE would compile them at each start, and the compiler's memory (about
    1 MB) would stay in the figures."""
    package = pathlib.Path(pyslirp.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True, stdout=subprocess.DEVNULL)


def start_server(workdir: pathlib.Path, args: list[str], env: dict[str, str], lines: int = 1) -> tuple[subprocess.Popen[bytes], list[int]]:
    """``pyslirp serve --config config.yaml ARGS`` (the shipped config) with ``env`` over an
    environment cleared of PYSLIRP_ variables; the process and the ports of its first ``lines``
    tcp-listen lines, in order."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("PYSLIRP_")}
    log = workdir / "pyslirp.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [str(PYSLIRP), "serve", "--config", str(REPO / "config.yaml"), *args],
            cwd=workdir, env=clean | env, stdout=output, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while len(ports := re.findall(r"listening for the line on tcp 127\.0\.0\.1:(\d+)", log.read_text())) < lines:
        assert server.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the server did not open its lines"
        time.sleep(0.05)
    return server, [int(port) for port in ports]


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Echo(asyncio.Protocol):
    """A loopback echo service as benchmarks/e2e/hostsvc.py's: TCP_NODELAY, and it closes at the
    client's FIN."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        return False  # close our side too
