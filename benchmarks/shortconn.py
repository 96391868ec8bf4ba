"""Short connections through the gateway without a VM: the server's CPU per connection.

The client is :class:`datapath.DataPath`'s (a scripted pppd, VJ, our own TCP standing in for
Linux's) and does what the e2e rig's ``pbench short`` does, one connection at a time: connect,
send one byte, read it back from a loopback echo service, close (the client first), and on to the
next at once, so that a connection's teardown overlaps the next one's setup as on the rig.

Two ways to run the gateway:

* ``serve`` — ``python -m pyslirp serve tcp-listen://127.0.0.1:0`` in its own process, with the
  e2e rig's configuration; the client dials it over loopback TCP. The figure is that process's
  CPU time (the kernel's per-process CPU clock) ÷ connections: what ``server CPU ms per short
  conn`` in benchmarks/e2e measures, less the VM. ``--instructions`` runs the server under
  valgrind (cachegrind) instead and reports the instructions it executes per connection (user
  space only): a count that, unlike CPU time, does not move with the machine's other load, for
  comparing two builds on a shared machine.
* ``inprocess`` — the gateway in this process (``DataPath.start``, an in-memory line). The CPU
  figure includes the client's and the echo service's share; this is the mode to profile with
  cProfile (``--profile``), as every function of the path runs here.

    PYTHONPATH=. .venv/bin/python benchmarks/shortconn.py serve -n 2000 --rounds 5
    PYTHONPATH=. .venv/bin/python benchmarks/shortconn.py serve --instructions -n 1000
    PYTHONPATH=. .venv/bin/python benchmarks/shortconn.py serve --py-spy /tmp/short.txt   # sample the server
    PYTHONPATH=. .venv/bin/python benchmarks/shortconn.py inprocess -n 2000 --profile /tmp/short.prof

pytest-benchmark runs it from ``test_shortconn_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import datapath  # noqa: E402
from server_process import Echo  # noqa: E402

from pyslirp.net import tcp_types  # noqa: E402

MESSAGE = b"x"
#: connections before the measured rounds: the first ones pay for imports, caches and the
#: interpreter's specialisation
WARMUP = 200
LISTENING = re.compile(r"listening for the line on tcp 127\.0\.0\.1:(\d+)")
INSTRUCTIONS = re.compile(r"I\s+refs:\s+([\d,]+)")


def server_config(echo_port: int) -> dict[str, Any]:
    """benchmarks/e2e/servers.py's ``pyslirp_config`` for the echo service."""
    return {"services": {datapath.SERVICE_PORT: {"host": "127.0.0.1", "port": echo_port, "max_connections": 20000}},
            "tcp": {"max_connections": 20000}, "logging": {"level": "INFO"}}


class ServerProcess:
    """``python -m pyslirp serve tcp-listen://127.0.0.1:0`` with ``config``, optionally under a
    wrapper command (valgrind); its output is kept in :attr:`output`."""

    def __init__(self, config: dict[str, Any], wrapper: list[str] = ()) -> None:  # type: ignore[assignment]
        self._dir = tempfile.TemporaryDirectory(prefix="pyslirp-short-")
        self.config_file = Path(self._dir.name) / "config.yaml"
        self.config_file.write_text(yaml.safe_dump(config))
        self.wrapper = list(wrapper)
        self.output: list[str] = []
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.wrapper, sys.executable, "-m", "pyslirp", "serve", "--config", str(self.config_file),
            "tcp-listen://127.0.0.1:0", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=self._dir.name, limit=1 << 24)
        self._reader = asyncio.create_task(self._read())
        deadline = time.monotonic() + timeout
        while not self.port:
            for line in self.output:
                if match := LISTENING.search(line):
                    self.port = int(match.group(1))
                    break
            else:
                if self.proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError("pyslirp did not start:\n" + "\n".join(self.output))
                await asyncio.sleep(0.05)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.output.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self, timeout: float = 60) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            await self._reader
        self._dir.cleanup()


class _SocketLine(asyncio.Protocol):
    """The client's end of ``pyslirp serve tcp-listen://``: what DataPath feeds goes to the
    socket, what the socket reads goes to DataPath's client."""

    def __init__(self, path: "ShortPath") -> None:
        self.path = path
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.path._from_server(data)

    def feed(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class ShortPath(datapath.DataPath):
    """DataPath's client, run event-driven (no polling) for many short connections, on the
    in-memory line or on a socket to a ``pyslirp serve`` process."""

    def __init__(self) -> None:
        super().__init__()
        self.progress = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    async def dial_socket(self, host: str, port: int, timeout: float = 30) -> None:
        """Dial ``pyslirp serve`` listening on ``host:port`` (instead of :meth:`start`)."""
        self.gateway = None  # type: ignore[assignment]
        self.ppp.start()  # before the line is up: the server's first frames may come at once
        line = _SocketLine(self)
        self.session = line  # type: ignore[assignment]  # DataPath only calls feed() on it
        await self.loop.create_connection(lambda: line, host, port)
        self._send_ppp()
        deadline = self.loop.time() + timeout
        while not self.ppp.ipcp_open:
            if self.loop.time() > deadline:
                raise TimeoutError("IPCP did not open")
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)  # the server's network is up once its IPCP is
        self._client_task = asyncio.ensure_future(self._client_timers())

    def _from_server(self, data: bytes) -> None:
        super()._from_server(data)
        self.progress.set()

    async def _client_timers(self) -> None:
        """The client's timers and flushes: on every segment it received, and at its
        connections' deadlines (delayed ACKs)."""
        while True:
            await self._kick.wait()
            self._kick.clear()
            self._service()

    def _service(self) -> None:
        """Run due timers, send what the connections have, and drop the connections that are
        done (TIME-WAIT: nothing more comes for them) once their last ACK is sent."""
        now = self.loop.time()
        due = None
        done = []
        for port, conn in self.conns.items():
            deadline = conn.next_deadline()
            if deadline is not None and deadline <= now:
                conn.handle_timer(now)
                deadline = conn.next_deadline()
            if conn.state in (tcp_types.CLOSED, tcp_types.TIME_WAIT):
                done.append(port)
            elif deadline is not None and (due is None or deadline < due):
                due = deadline
        self.flush_client()
        for port in done:
            del self.conns[port]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if due is not None:
            self._timer = self.loop.call_at(due, self._service)

    async def _wait(self, done: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = self.loop.time() + timeout
        while not done():
            self.progress.clear()
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise TimeoutError("no progress")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.progress.wait(), remaining)

    async def short(self) -> None:
        """One ``pbench short`` connection: connect, one byte echoed, close (client first)."""
        conn = self.connect()
        await self._wait(lambda: conn.state in (tcp_types.ESTABLISHED, tcp_types.CLOSED))
        if conn.state != tcp_types.ESTABLISHED:
            raise AssertionError("connection refused")
        conn.send(MESSAGE, self.loop.time())
        self.flush_client()
        await self._wait(lambda: conn.readable >= len(MESSAGE) or conn.at_eof)
        echoed = conn.read(-1, self.loop.time())
        if echoed != MESSAGE:
            raise AssertionError(f"echoed {echoed!r}")
        conn.close(self.loop.time())
        self.flush_client()

    async def settle(self, timeout: float = 30.0) -> None:
        """Until every client connection has closed (the last teardowns)."""
        await self._wait(lambda: all(c.state in (tcp_types.CLOSED, tcp_types.TIME_WAIT)
                                     for c in self.conns.values()), timeout)

    async def close(self) -> None:
        task = getattr(self, "_client_task", None)
        if task is not None:
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        self.session.close()
        if self.gateway is not None:
            await asyncio.wait_for(self.task, 5)


def process_cpu(pid: int) -> float:
    """``pid``'s CPU time in seconds (all its threads), from the kernel's per-process clock."""
    return time.clock_gettime(((~pid) << 3) | 2)


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks of ``pid`` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def io_syscalls(pid: int) -> tuple[int, int]:
    """(read, write) system calls of ``pid`` so far (/proc/PID/io: syscr, syscw)."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["syscr"]), int(fields["syscw"])


@dataclass
class Result:
    mode: str
    n: int
    #: CPU µs per connection in each round (serve: the server process; inprocess: this one)
    rounds_us: list[float] = field(default_factory=list)
    wall_us: list[float] = field(default_factory=list)
    #: the share of that CPU time spent in the kernel (all rounds, from clock ticks)
    kernel_pct: float | None = None
    #: read and write system calls per connection (all rounds; serve: the server's)
    reads: float | None = None
    writes: float | None = None
    #: the server's log (serve)
    server_output: list[str] = field(default_factory=list)

    @property
    def median_us(self) -> float:
        return statistics.median(self.rounds_us)

    @property
    def median_wall_us(self) -> float:
        return statistics.median(self.wall_us)


async def run(mode: str, n: int, rounds: int, *, warmup: int = WARMUP, profile: str | None = None,
              sampler: list[str] | None = None, wrapper: list[str] = ()) -> Result:  # type: ignore[assignment]
    """``rounds`` rounds of ``n`` short connections after ``warmup`` ones. ``sampler``: a
    profiler command to run over the server during the rounds (its pid appended); ``wrapper``:
    a command the server runs under."""
    loop = asyncio.get_running_loop()
    echo = await loop.create_server(Echo, "127.0.0.1", 0)
    echo_port = echo.sockets[0].getsockname()[1]
    result = Result(mode, n)
    path = ShortPath()
    server: ServerProcess | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        if mode == "serve":
            server = ServerProcess(server_config(echo_port), wrapper)
            await server.start(timeout=600 if wrapper else 30)
            await path.dial_socket("127.0.0.1", server.port, timeout=600 if wrapper else 30)
            pid = server.pid
            cpu: Callable[[], float] = lambda: process_cpu(pid)  # noqa: E731
        else:
            await path.start(echo_port)
            pid = os.getpid()
            cpu = time.process_time
        for _ in range(warmup):
            await path.short()
        await path.settle()
        if sampler is not None:
            assert server is not None, "a sampler samples the server process (serve mode)"
            spy = subprocess.Popen([*sampler, str(server.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(1.0)
        profiler = None
        if profile is not None:
            import cProfile
            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
        ticks0, io0 = cpu_ticks(pid), io_syscalls(pid)
        for _ in range(rounds):
            cpu0, t0 = cpu(), time.perf_counter()
            for _ in range(n):
                await path.short()
            await path.settle()
            result.rounds_us.append((cpu() - cpu0) / n * 1e6)
            result.wall_us.append((time.perf_counter() - t0) / n * 1e6)
        ticks1, io1 = cpu_ticks(pid), io_syscalls(pid)
        if rounds and n:
            result.reads, result.writes = (io1[0] - io0[0]) / (rounds * n), (io1[1] - io0[1]) / (rounds * n)
        user, system = ticks1[0] - ticks0[0], ticks1[1] - ticks0[1]
        result.kernel_pct = 100 * system / (user + system) if user + system else None
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
            spy = None
    finally:
        if spy is not None:
            spy.kill()
        await path.close()
        if server is not None:
            await server.stop()
            result.server_output = server.output
        echo.close()
    return result


def instructions(output: list[str]) -> int:
    """The instruction count valgrind's cachegrind printed at the server's exit."""
    for line in output:
        if match := INSTRUCTIONS.search(line):
            return int(match.group(1).replace(",", ""))
    raise RuntimeError("no instruction count in the server's output:\n" + "\n".join(output[-20:]))


async def run_instructions(n: int, warmup: int = 50) -> float:
    """Instructions the server executes per short connection (user space), under cachegrind: a
    run of ``warmup`` connections and one of ``warmup + n``, the difference ÷ ``n``."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("--instructions needs valgrind (apt-get install valgrind)")
    wrapper = [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    seed = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = "0"  # the servers': the same dict layouts in both runs
    counts = []
    try:
        for total in (0, n):
            r = await run("serve", total, 1 if total else 0, warmup=warmup, wrapper=wrapper)
            counts.append(instructions(r.server_output))
    finally:
        if seed is None:
            del os.environ["PYTHONHASHSEED"]
        else:
            os.environ["PYTHONHASHSEED"] = seed
    return (counts[1] - counts[0]) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("serve", "inprocess"))
    ap.add_argument("-n", type=int, default=2000, help="connections per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=WARMUP)
    ap.add_argument("--instructions", action="store_true",
                    help="serve: instructions per connection under valgrind instead of CPU time")
    ap.add_argument("--profile", help="inprocess: write cProfile stats (CPU time) of the rounds here")
    ap.add_argument("--py-spy", help="serve: sample the server with py-spy during the rounds (raw stacks)")
    ap.add_argument("--perf", help="serve: record the server with perf during the rounds into this file")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = ap.parse_args()
    sampler = None
    if args.py_spy:
        sampler = [str(Path(sys.executable).with_name("py-spy")), "record", "--rate", "500", "--format", "raw",
                   "--nonblocking", "-o", args.py_spy, "--pid"]
    elif args.perf:
        sampler = ["perf", "record", "-F", "4999", "-g", "-o", args.perf, "-p"]
    if args.instructions:
        coro: Any = run_instructions(args.n)
    else:
        coro = run(args.mode, args.n, args.rounds, warmup=args.warmup, profile=args.profile, sampler=sampler)
    if args.loop == "uvloop":
        import uvloop
        r = uvloop.run(coro)
    else:
        r = asyncio.run(coro)
    if args.instructions:
        print(f"serve: {r:,.0f} instructions per connection (server process, user space, cachegrind)")
        return 0
    who = "server process" if r.mode == "serve" else "whole process (client and echo included)"
    kernel = f"{r.kernel_pct:.0f}%" if r.kernel_pct is not None else "—"
    print(f"{r.mode}: {r.n} connections x {len(r.rounds_us)} rounds; CPU µs per connection ({who}): "
          f"median {r.median_us:.1f}, rounds {', '.join(f'{x:.1f}' for x in r.rounds_us)}; "
          f"wall µs per connection median {r.median_wall_us:.0f}; in the kernel {kernel}; "
          f"read/write calls per connection {r.reads:.1f}/{r.writes:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
