#!/usr/bin/env python3
"""Soak pyslirp on the interop rig: keep the VM client busy for a set time while the line and the
services fail, then check every completed transfer and pyslirp's memory.

    .venv/bin/python benchmarks/soak.py --minutes 10

pyslirp runs as a user runs it (``pyslirp serve tcp-listen://``, tests/interop/pyslirp_proc.py),
with a LineShim (tests/interop/shim.py) on the line between it and QEMU. The guest
(soak_guest.sh) dials with pppd ``persist`` and runs four loops until the time is up:
interactive echo, downloads, uploads and short connections, each transfer checked (sha256 of
downloads and uploads, every echoed line compared). The host injects a fault every 10-30 s, on a
seeded schedule: garbage on the line, the line cut and restored (pyslirp sees its client hang up
and a new one call), a service killed (every connection reset, the port closed) and restarted.
During the warm-up every kind of fault happens once. Transfers a fault cuts short fail: that is
expected and counted.

It passes when no completed transfer was corrupt, a last download after the faults stop arrives
intact, pyslirp is still running and logged no traceback, every kind of transfer completed at
least once, and pyslirp's RSS after the load and a quiet period is at most 10 % above its
baseline (its median over the last 20 s of the warm-up). Exit status 0 then, 1 otherwise, 2 when
the rig cannot run here. Not part of the pytest run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import re
import socket
import statistics
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Awaitable, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "interop"))

import rig  # noqa: E402
from dial import PPPD_QUIET  # noqa: E402
from pyslirp_proc import PyslirpProcess  # noqa: E402
from shim import DOWN, UP, LineShim  # noqa: E402

GUEST_SCRIPT = HERE / "soak_guest.sh"
ECHO_PORT, FILES_PORT, SINK_PORT = 7, 80, 81
#: redial after any failure, forever; notice a dead line within ~10 s
PPPD_OPTIONS = "persist maxfail 0 holdoff 1 lcp-echo-interval 2 lcp-echo-failure 5"
DOWN_SIZES = (65536, 262144, 1048576)
UP_SIZES = (32768, 131072, 524288)
FINAL_DOWNLOAD = (65536, "final")  # size and seed of the guest's last download
RSS_TOLERANCE = 0.10
RSS_PERIOD = 2.0  # seconds between RSS samples
FAULT_KINDS = ("garbage", "cut", "kill echo", "kill files", "kill sink")
FAULT_FREE_TAIL = 60.0  # no fault starts in the load's last seconds, so that it ends on a settled link
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------------------------------------
# host services


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Service:
    """A TCP service on 127.0.0.1 that can be killed (the port closed, every connection reset)
    and restarted on the same port."""

    def __init__(self, name: str, handler: Handler) -> None:
        self.name = name
        self.handler = handler
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def kill(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            await self.handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went, or sent nonsense
        finally:
            self._writers.discard(writer)
            writer.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def download_body(size: int, seed: str) -> bytes:
    """What GET /blob/SIZE/SEED returns: different bytes for every seed."""
    return random.Random(f"soak/{size}/{seed}").randbytes(size)


@lru_cache(maxsize=None)
def download_sha(size: int, seed: str) -> str:
    return hashlib.sha256(download_body(size, seed)).hexdigest()


async def files(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.0: GET /blob/SIZE/SEED."""
    request = await reader.readuntil(b"\r\n\r\n")
    match = re.match(rb"GET /blob/(\d+)/(\w+) ", request)
    if match is None or int(match[1]) > 1 << 24:
        writer.write(b"HTTP/1.0 404 Not Found\r\n\r\n")
        return
    body = download_body(int(match[1]), match[2].decode())
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
    for offset in range(0, len(body), 65536):
        writer.write(body[offset:offset + 65536])
        await writer.drain()


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads "SIZE\\n" and SIZE bytes, answers their sha256."""
    remaining = int(await reader.readline())
    digest = hashlib.sha256()
    while remaining > 0:
        chunk = await reader.read(min(remaining, 65536))
        if not chunk:
            return
        digest.update(chunk)
        remaining -= len(chunk)
    writer.write(digest.hexdigest().encode() + b"\n")
    await writer.drain()


# ---------------------------------------------------------------------------------------------
# the guest's reports


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0  # cut short by a fault: expected
    corrupt: int = 0  # completed, but not what was sent: a failure of the soak
    bytes_ok: int = 0


@dataclass
class Reports:
    """The guest's `result` lines, classified as they arrive."""

    tallies: dict[str, Tally] = field(
        default_factory=lambda: {kind: Tally() for kind in ("echo", "download", "upload", "short")})
    why_failed: dict[str, Counter[str]] = field(default_factory=lambda: {"echo": Counter(), "download": Counter()})
    corrupt: list[str] = field(default_factory=list)
    final: str | None = None
    taken: int = 0

    def take(self, results: list[tuple[str, str]]) -> None:
        for name, value in results[self.taken:]:
            self._take(name, value.split())
        self.taken = len(results)

    def _take(self, name: str, fields: list[str]) -> None:
        if name == "echo":  # OK BAD WHY
            tally = self.tallies["echo"]
            tally.ok += int(fields[0])
            tally.corrupt += int(fields[1])
            if fields[2] in ("write", "noanswer"):
                tally.failed += 1
                self.why_failed["echo"][fields[2]] += 1
            if int(fields[1]):
                self.corrupt.append(f"echo session: {' '.join(fields)}")
        elif name == "download":  # SIZE SEED ok SHA | SIZE SEED failed RC
            tally = self.tallies["download"]
            size, seed = int(fields[0]), fields[1]
            if fields[2] == "failed":
                tally.failed += 1
                self.why_failed["download"]["stalled 30 s" if fields[3] == "143" else f"wget exit {fields[3]}"] += 1
            elif fields[3] == download_sha(size, seed):
                tally.ok += 1
                tally.bytes_ok += size
            else:
                tally.corrupt += 1
                self.corrupt.append(f"download {size} B seed {seed}: sha256 {fields[3]}, "
                                    f"sent {download_sha(size, seed)}")
        elif name == "upload":  # SIZE SENT RECEIVED
            tally = self.tallies["upload"]
            size, sent, received = int(fields[0]), fields[1], fields[2]
            if not SHA256_HEX.fullmatch(received):
                tally.failed += 1  # no answer, or one cut short
            elif received == sent:
                tally.ok += 1
                tally.bytes_ok += size
            else:
                tally.corrupt += 1
                self.corrupt.append(f"upload {size} B: sent sha256 {sent}, the sink got {received}")
        elif name == "short":  # OK FAILED BAD
            tally = self.tallies["short"]
            tally.ok += int(fields[0])
            tally.failed += int(fields[1])
            tally.corrupt += int(fields[2])
            if int(fields[2]):
                self.corrupt.append(f"short connections answered wrongly: {fields[2]}")
        elif name == "final":
            self.final = fields[0]

    @property
    def final_intact(self) -> bool:
        return self.final == download_sha(*FINAL_DOWNLOAD)


# ---------------------------------------------------------------------------------------------
# faults


class Faults:
    """Injects faults on a seeded schedule: each kind once during the warm-up, then one every
    ``interval`` seconds until ``stop_at`` (event-loop time), garbage, a cut or a kill alike
    likely; a fault's own time (a cut, a service's downtime) delays the next."""

    def __init__(self, shim: LineShim, services: dict[str, Service], rng: random.Random,
                 clock: Callable[[], float]) -> None:
        self.shim = shim
        self.services = services
        self.rng = rng
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.garbage_bytes = 0
        self.errors: list[str] = []  # faults the soak could not inject (or undo)
        self.first_round_end: float | None = None  # when each kind had happened once

    async def run(self, warmup: float, stop_at: float, interval: tuple[float, float]) -> None:
        loop = asyncio.get_running_loop()
        first_round = list(FAULT_KINDS)
        self.rng.shuffle(first_round)
        step = warmup / (len(first_round) + 1)
        start = loop.time()
        for i, kind in enumerate(first_round, 1):
            await asyncio.sleep(max(0.0, start + i * step - loop.time()))
            await self.inject(kind)
        self.first_round_end = self.clock()
        while True:
            await asyncio.sleep(self.rng.uniform(*interval))
            if loop.time() >= stop_at:
                return
            kind = self.rng.choice(("garbage", "cut", "kill"))
            await self.inject(f"kill {self.rng.choice(list(self.services))}" if kind == "kill" else kind)

    async def inject(self, kind: str) -> None:
        try:
            await self._inject(kind)
        except OSError as e:
            self.errors.append(f"{kind}: {e}")
            say(self.clock(), f"fault {kind} failed: {e}")

    async def _inject(self, kind: str) -> None:
        self.counts[kind] += 1
        if kind == "garbage":
            bursts = [(self.rng.choice((UP, DOWN)), self.rng.randbytes(self.rng.randint(16, 1024)))
                      for _ in range(self.rng.randint(1, 8))]
            say(self.clock(), f"fault: garbage, {len(bursts)} bursts of "
                f"{sum(len(data) for _, data in bursts)} bytes in all")
            for direction, data in bursts:
                self.shim.inject(direction, data)
                self.garbage_bytes += len(data)
                await asyncio.sleep(0.3)
        elif kind == "cut":
            # pppd (lcp-echo-interval 2, lcp-echo-failure 5) gives up on a line after ~10-12 s:
            # shorter cuts end in a renegotiation, longer ones in a redial
            seconds = self.rng.uniform(2.0, 25.0)
            say(self.clock(), f"fault: line cut for {seconds:.1f} s")
            await self.shim.cut(seconds)
        else:
            service = self.services[kind.removeprefix("kill ")]
            downtime = self.rng.uniform(1.0, 8.0)
            say(self.clock(), f"fault: service {service.name} killed for {downtime:.1f} s")
            await service.kill()
            await asyncio.sleep(downtime)
            await service.start()


# ---------------------------------------------------------------------------------------------
# memory


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def sample_rss(pid: int, samples: list[tuple[float, int]], clock: Callable[[], float]) -> None:
    while True:
        samples.append((clock(), rss_kib(pid)))
        await asyncio.sleep(RSS_PERIOD)


def baseline_rss(samples: list[tuple[float, int]], warmup: float) -> int:
    """The median RSS over the last 20 s of the warm-up."""
    window = [kib for t, kib in samples if warmup - 20.0 <= t <= warmup]
    return int(statistics.median(window))


# ---------------------------------------------------------------------------------------------
# the run


def count_lines(lines: list[str], text: str) -> int:
    return sum(text in line for line in lines)


def say(elapsed: float, text: str) -> None:
    print(f"[{elapsed:6.0f} s] {text}", flush=True)


def progress(reports: Reports, faults: Faults, samples: list[tuple[float, int]]) -> str:
    kinds = ", ".join(f"{kind} {t.ok} ok/{t.failed} failed/{t.corrupt} corrupt"
                      for kind, t in reports.tallies.items())
    rss = f"{samples[-1][1] / 1024:.1f} MiB" if samples else "?"
    return f"{kinds}; faults {sum(faults.counts.values())}; RSS {rss}"


@dataclass
class Outcome:
    reports: Reports
    faults: Faults
    samples: list[tuple[float, int]]
    warmup: float
    load_seconds: float
    quiet: float
    stats: dict[str, Any]
    pyslirp_log: list[str]
    pyslirp_alive: bool
    shim: LineShim
    console: list[str]
    services: dict[str, Service]


async def soak(args: argparse.Namespace) -> Outcome:
    duration = args.minutes * 60.0
    warmup = max(60.0, 0.1 * duration)
    image = rig.ensure_image()
    accel = await rig.choose_accel_async(image)
    rng = random.Random(args.seed)
    services = {"echo": Service("echo", echo), "files": Service("files", files), "sink": Service("sink", sink)}
    for service in services.values():
        await service.start()
    config = {"services": {ECHO_PORT: {"name": "echo", "port": services["echo"].port},
                           FILES_PORT: {"name": "files", "port": services["files"].port},
                           SINK_PORT: {"name": "sink", "port": services["sink"].port}}}
    env = {"PPPD_COMMAND": f"{PPPD_QUIET} {PPPD_OPTIONS}", "SOAK_SECONDS": str(int(duration)),
           "ECHO_PORT": str(ECHO_PORT), "FILES_PORT": str(FILES_PORT), "SINK_PORT": str(SINK_PORT),
           "DOWN_SIZES": " ".join(map(str, DOWN_SIZES)), "UP_SIZES": " ".join(map(str, UP_SIZES))}
    loop = asyncio.get_running_loop()
    reports = Reports()
    samples: list[tuple[float, int]] = []
    print(f"pyslirp soak: {duration:.0f} s of load on the {args.line} line ({accel}), warm-up "
          f"{warmup:.0f} s, seed {args.seed}", flush=True)
    async with PyslirpProcess(config, debug=False) as server:
        async with LineShim(upstream_port=server.port, seed=args.seed) as shim:
            async with rig.VM(image, GUEST_SCRIPT.read_text(), line=args.line, line_port=shim.port,
                              timeout=duration + 1200, accel=accel, env=env, name="soak") as vm:
                if await vm.wait_result("up", timeout=120) != "1":
                    raise rig.VMError(await vm.kill(), "pppd did not bring the link up")
                start = loop.time()

                def clock() -> float:
                    return loop.time() - start

                faults = Faults(shim, services, rng, clock)
                say(0, "link up: load and faults start")
                done = asyncio.create_task(vm.wait_result("load_done", timeout=duration + 900))
                tasks = [done, asyncio.create_task(sample_rss(server.pid, samples, clock)),
                         asyncio.create_task(faults.run(warmup, start + duration - FAULT_FREE_TAIL,
                                                        (10.0, 30.0)))]
                try:
                    while not done.done():
                        await asyncio.wait({done}, timeout=30)
                        reports.take(vm.all_results)
                        say(clock(), progress(reports, faults, samples))
                    await done
                    load_seconds = clock()
                    # the baseline comes after every kind of fault has happened once, and settled
                    warmup = max(warmup, (faults.first_round_end or load_seconds) + 20.0)
                    say(load_seconds, f"load done; the line stays up and quiet for {args.quiet:.0f} s")
                    await asyncio.sleep(args.quiet)
                finally:
                    for task in tasks:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(BaseException):
                            await task
                alive = server.returncode is None
                if alive:
                    samples.append((clock(), rss_kib(server.pid)))
                stats = await server.stats() if alive else {}
                pyslirp_log = list(server.lines)
                reports.take(vm.all_results)
                console = list(vm.console_lines)
    return Outcome(reports, faults, samples, warmup, load_seconds, args.quiet, stats, pyslirp_log,
                   alive, shim, console, services)


def summarize(out: Outcome) -> list[str]:
    """Print the summary; return why the soak failed (empty: it passed)."""
    failures: list[str] = []
    print("\n==== soak summary ====")
    print(f"load {out.load_seconds:.0f} s (warm-up {out.warmup:.0f} s), then {out.quiet:.0f} s quiet")
    print(f"{'transfers':<10} {'ok':>7} {'failed':>7} {'corrupt':>8} {'MiB ok':>8}")
    for kind, t in out.reports.tallies.items():
        mib = f"{t.bytes_ok / (1 << 20):8.1f}" if t.bytes_ok else f"{'':8}"
        print(f"{kind:<10} {t.ok:7} {t.failed:7} {t.corrupt:8} {mib}")
        if t.corrupt:
            failures.append(f"{t.corrupt} corrupt {kind} transfers")
        if not t.ok:
            failures.append(f"no {kind} transfer completed")
    for kind, reasons in out.reports.why_failed.items():
        if reasons:
            print(f"  {kind} failures: " + ", ".join(f"{why} {n}" for why, n in reasons.most_common()))
    for line in out.reports.corrupt:
        print(f"  CORRUPT: {line}")
    print(f"last download after the faults: {'intact' if out.reports.final_intact else out.reports.final}")
    if not out.reports.final_intact:
        failures.append("the last download after the faults did not arrive intact")

    counts = out.faults.counts
    print("faults: " + ", ".join(f"{kind} {counts[kind]}" for kind in FAULT_KINDS)
          + f"; {out.faults.garbage_bytes} garbage bytes; line cuts reconnected {out.shim.cuts}; "
          f"bytes lost to cuts up {out.shim.stats[UP].cut_bytes} down {out.shim.stats[DOWN].cut_bytes}")
    if out.faults.errors:
        failures.append("faults not injected: " + "; ".join(out.faults.errors))
    print("service connections: " + ", ".join(f"{s.name} {s.connections}" for s in out.services.values()))

    log = out.pyslirp_log
    down_reasons = Counter(m.group(1) for line in log if (m := re.search(r"gateway: .*: link down: (.*)$", line)))
    print(f"pyslirp: line sessions {count_lines(log, ': line up')}, hang-ups {count_lines(log, ': line hung up')}, "
          f"links up {count_lines(log, ': link up:')}, down {sum(down_reasons.values())} "
          f"({', '.join(f'{r}: {n}' for r, n in down_reasons.most_common())})")
    console = out.console
    print(f"guest pppd: dials {count_lines(console, 'Connect: ppp0')} (the line given up after "
          f"{count_lines(console, 'No response to')} echo timeouts), "
          f"ip-up {count_lines(console, 'PYSLIRP-PPP up')}, ip-down {count_lines(console, 'PYSLIRP-PPP down')}")
    counters = out.stats.get("counters", {})
    proxy, deframer, stack, tcp = (counters.get(name, {}) for name in ("proxy", "deframer", "stack", "tcp"))
    print("pyslirp counters: " + ", ".join(
        f"{name} {source.get(key, 0)}" for name, source, key in (
            ("connections_opened", proxy, "connections_opened"), ("service_reset", proxy, "service_reset"),
            ("service_unavailable", proxy, "service_unavailable"), ("client_reset", proxy, "client_reset"),
            ("client_aborted", proxy, "client_aborted"), ("bad_fcs", deframer, "bad_fcs"),
            ("hunt_bytes", deframer, "hunt_bytes"), ("frames_ok", deframer, "frames_ok"),
            ("tcp retrans_rto", tcp, "retrans_rto"), ("tcp rst_sent", tcp, "rst_sent"),
            ("tcp_rst_no_connection", stack, "tcp_rst_no_connection"))))

    tracebacks = [i for i, line in enumerate(log) if line.startswith("Traceback")]
    errors = [line for line in log if " ERROR " in line or " CRITICAL " in line]
    print(f"pyslirp log: {len(log)} lines, {len(tracebacks)} tracebacks, {len(errors)} errors")
    for line in errors[:10]:
        print(f"  {line}")
    for i in tracebacks[:3]:
        print("\n".join(f"  {line}" for line in log[i:i + 25]))
    if tracebacks:
        failures.append(f"pyslirp logged {len(tracebacks)} tracebacks")
    if not out.pyslirp_alive:
        failures.append("pyslirp exited during the soak")

    baseline = baseline_rss(out.samples, out.warmup)
    peak = max(kib for _, kib in out.samples)
    final = out.samples[-1][1]
    growth = final / baseline - 1
    print(f"RSS of pyslirp: baseline {baseline / 1024:.1f} MiB (after the warm-up), peak "
          f"{peak / 1024:.1f} MiB, final {final / 1024:.1f} MiB after {out.quiet:.0f} s quiet: "
          f"{growth:+.1%} (limit {RSS_TOLERANCE:+.0%}); {len(out.samples)} samples")
    if growth > RSS_TOLERANCE:
        failures.append(f"RSS grew {growth:+.1%} over its baseline")
    print("RESULT: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the guest keeps the line busy")
    parser.add_argument("--line", choices=("virtio", "16550"), default="virtio",
                        help="the guest's line device: virtio moves ~10x the data under TCG")
    parser.add_argument("--seed", type=int, default=1, help="seeds the faults' schedule")
    parser.add_argument("--quiet", type=float, default=20.0, help="seconds of quiet line before the last RSS sample")
    parser.add_argument("--log-dir", type=Path, help="write the console and pyslirp's log there")
    args = parser.parse_args()
    missing = rig.missing_prerequisites()
    if missing:
        print("the interop rig cannot run here: missing " + ", ".join(missing), file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        out = asyncio.run(soak(args))
    except rig.VMError as e:
        print(f"RESULT: FAIL: the VM run failed: {e}")
        return 1
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
        (args.log_dir / "console.log").write_text("\n".join(out.console) + "\n")
        (args.log_dir / "pyslirp.log").write_text("\n".join(out.pyslirp_log) + "\n")
    failures = summarize(out)
    print(f"wall time {time.monotonic() - t0:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
