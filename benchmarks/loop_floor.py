"""The event loop's own share of a short connection: the floor under ``shortconn.py serve``.

A stand-in server that does, per short connection, only what any Python proxy on this event loop
must do, and nothing of pyslirp's own work (no PPP, no IP, no TCP stack, no admission):

* the line: one persistent stream (the serial line's stand-in) carrying a short connection's
  traffic as one-byte messages, as many and in the same order as the PPP frames of a short
  connection on the e2e rig: six in and three out (SYN / SYN-ACK, ACK, data / data, ACK,
  FIN / FIN, ACK);
* the service: one loopback socket per connection, opened as pyslirp's proxy opens it (a
  non-blocking ``connect_ex``, then ``loop.create_connection(sock=...)`` in a task), one byte
  written to an echo service and read back, the client's FIN passed on with ``write_eof``, and
  the service's close ending it.

The server's CPU per connection is the floor that ``shortconn.py serve`` (the same line pattern,
the same echo service, through pyslirp) stands on; the difference is pyslirp's own work.

    PYTHONPATH=. .venv/bin/python benchmarks/loop_floor.py -n 2000 --rounds 5
    PYTHONPATH=. .venv/bin/python benchmarks/loop_floor.py --loop asyncio

pytest-benchmark runs it from ``test_shortconn_bench.py``. Linux only (it reads /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from server_process import Echo  # noqa: E402
from shortconn import WARMUP, cpu_ticks, process_cpu  # noqa: E402

# One short connection on the line, as (message the client sends, reply it waits for or b"").
# The rig's frames for the same connection: SYN -> SYN-ACK, ACK, data -> data, ACK, FIN -> FIN, ACK.
EXCHANGE = ((b"S", b"s"), (b"A", b""), (b"D", b"d"), (b"K", b""), (b"F", b"f"), (b"K", b""))


# ---------------------------------------------------------------------------------------------
# the stand-in server (its own process)


class ServicePipe(asyncio.Protocol):
    """The service side of one connection: what the service sends goes to the line."""

    def __init__(self, line: asyncio.Transport) -> None:
        self.line = line
        self.transport: asyncio.Transport | None = None
        self.pending = b""
        self.eof_pending = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.pending:
            self.transport.write(self.pending)  # type: ignore[union-attr]
        if self.eof_pending:
            self.transport.write_eof()  # type: ignore[union-attr]

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self.pending += data
        else:
            self.transport.write(data)

    def finish(self) -> None:
        if self.transport is None:
            self.eof_pending = True
        else:
            self.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        self.line.write(b"d")

    def eof_received(self) -> bool:
        self.line.write(b"f")  # the service closed: our FIN to the client
        return False


class Line(asyncio.Protocol):
    """The line: a connection's messages in, its replies out."""

    def __init__(self, echo_port: int, ended: asyncio.Future[None]) -> None:
        self.echo_port = echo_port
        self.ended = ended
        self.pipe: ServicePipe | None = None
        self.tasks: set[asyncio.Task[object]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        for message in data:
            if message == ord("S"):
                self._open()
            elif message == ord("D"):
                self.pipe.send(b"x")  # type: ignore[union-attr]
            elif message == ord("F"):
                self.pipe.finish()  # type: ignore[union-attr]

    def _open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.echo_port))
        sock.getpeername()  # a loopback connect is done at once; raises otherwise
        pipe = self.pipe = ServicePipe(self.transport)
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.create_connection(lambda: pipe, sock=sock))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self.transport.write(b"s")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


async def serve(echo_port: int) -> None:
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()
    server = await loop.create_server(lambda: Line(echo_port, ended), "127.0.0.1", 0)
    print(f"port={server.sockets[0].getsockname()[1]}", flush=True)
    await ended


# ---------------------------------------------------------------------------------------------
# the client (the benchmark's process, with the echo service)


@dataclass
class Result:
    loop: str
    n: int
    #: the server's CPU µs per connection, one per round
    rounds_us: list[float] = field(default_factory=list)
    #: the share of that CPU in the kernel, over all rounds
    kernel_pct: float | None = None

    @property
    def median_us(self) -> float:
        return statistics.median(self.rounds_us)


async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for message, reply in EXCHANGE:
        writer.write(message)
        if reply:
            got = await reader.readexactly(1)
            if got != reply:
                raise RuntimeError(f"the stand-in server answered {got!r} to {message!r}, not {reply!r}")


async def run(n: int, rounds: int, loop_name: str = "uvloop", warmup: int = WARMUP) -> Result:
    """``rounds`` rounds of ``n`` short connections through the stand-in server (run on
    ``loop_name``), after ``warmup`` ones."""
    loop = asyncio.get_running_loop()
    echo = await loop.create_server(Echo, "127.0.0.1", 0)
    echo_port = echo.sockets[0].getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(echo_port), "--loop", loop_name,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
    result = Result(loop_name, n)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)  # type: ignore[union-attr]
        if not line.startswith(b"port="):
            raise RuntimeError(f"the stand-in server did not start: {line!r}")
        reader, writer = await asyncio.open_connection("127.0.0.1", int(line.split(b"=")[1]))
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(warmup):
            await short(reader, writer)
        ticks0 = cpu_ticks(proc.pid)
        for _ in range(rounds):
            await asyncio.sleep(0.05)  # the last connection's close has run
            cpu0 = process_cpu(proc.pid)
            for _ in range(n):
                await short(reader, writer)
            await asyncio.sleep(0.05)
            result.rounds_us.append((process_cpu(proc.pid) - cpu0) / n * 1e6)
        user, kernel = (b - a for a, b in zip(ticks0, cpu_ticks(proc.pid)))
        result.kernel_pct = 100 * kernel / (user + kernel) if user + kernel else None
        writer.close()
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        echo.close()
    return result


def run_loop(loop_name: str, main: object) -> object:
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(main)  # type: ignore[arg-type]
    return asyncio.run(main)  # type: ignore[arg-type]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="connections per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the stand-in server's loop")
    ap.add_argument("--serve", type=int, metavar="ECHO_PORT", help=argparse.SUPPRESS)  # the server's own process
    args = ap.parse_args()
    if args.serve is not None:
        run_loop(args.loop, serve(args.serve))
        return 0
    t0 = time.monotonic()
    r: Result = run_loop("uvloop", run(args.n, args.rounds, args.loop))  # type: ignore[assignment]
    print(f"event-loop floor ({r.loop}): {args.n} connections x {args.rounds} rounds in {time.monotonic() - t0:.1f} s; "
          f"server CPU µs per connection median {r.median_us:.1f}, rounds {[round(x, 1) for x in r.rounds_us]}; "
          f"in the kernel {r.kernel_pct:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
