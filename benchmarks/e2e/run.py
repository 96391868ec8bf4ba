#!/usr/bin/env python3
"""pyslirp against the original SLiRP, end to end, on the interop rig's pppd VM (issue 5).

    PYTHONPATH=. python benchmarks/e2e/run.py            # the full suite (≈ 1 h, most of it the
                                                         # 50 MB transfers on the 16550 line)
    PYTHONPATH=. python benchmarks/e2e/run.py --quick    # smoke subset, small sizes, N=100

Every VM run boots the same image (tests/interop/build_image.py, with /usr/bin/pbench) under TCG,
talks to the same host services (hostsvc.py: echo, bulk; their own processes, on 127.0.0.1) and
is bounded in time; the servers, socat and QEMU are killed on every exit path. See README.md for
what each row of the table means. Results go to benchmarks/e2e/results/<stamp>.json (or --json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "interop"))
sys.path.insert(0, str(HERE))
# pyslirp runs from the checkout (children inherit this); the compiled core is built in place.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("PYSLIRP_RIG_ACCEL", "tcg")

import rig  # noqa: E402
from servers import SLIRP, SOCAT, VARIANTS, Endpoints, Server  # noqa: E402
from shim import DOWN, UP, LineShim  # noqa: E402

LINES = ("virtio", "16550")
LINE_BAUD = 115200  # line-efficiency runs: the shim paces both directions at this rate
PHASE_SLEEP = 1.0  # guest pauses this long after announcing a phase (the host snapshots then)
ECHO_GAP_MS = 20  # between RTT samples


# ---------------------------------------------------------------------------------------------
# parameters


@dataclass
class Params:
    bulk_bytes: dict[str, int]
    rtt_samples: int
    load_warmup: float
    short_seconds: float
    scale_n: list[int]
    slirp_scale_n: list[int]
    inflight: int
    eff_bytes: int
    eff_trips: int
    variants: list[str]
    lines: list[str]
    parts: list[str]

    @classmethod
    def full(cls) -> "Params":
        return cls(bulk_bytes={"virtio": 50_000_000, "16550": 50_000_000}, rtt_samples=300,
                   load_warmup=3.0, short_seconds=10.0, scale_n=[1000, 5000, 10000],
                   slirp_scale_n=[1000, 5000], inflight=100, eff_bytes=256_000, eff_trips=100,
                   variants=list(VARIANTS), lines=list(LINES),
                   parts=["main", "scale", "efficiency"])

    @classmethod
    def quick(cls) -> "Params":
        return cls(bulk_bytes={"virtio": 4_000_000, "16550": 1_000_000}, rtt_samples=30,
                   load_warmup=1.5, short_seconds=2.0, scale_n=[100], slirp_scale_n=[100],
                   inflight=50, eff_bytes=16_000, eff_trips=100, variants=["slirp", "pyslirp-pty"],
                   lines=list(LINES), parts=["main", "scale", "efficiency"])


# ---------------------------------------------------------------------------------------------
# host services (own processes)


class HostServices:
    """hostsvc.py echo and bulk, each in its own process, for the whole run."""

    def __init__(self) -> None:
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.ports: dict[str, int] = {}

    async def __aenter__(self) -> "HostServices":
        try:
            for kind in ("echo", "bulk"):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, str(HERE / "hostsvc.py"), kind, stdout=asyncio.subprocess.PIPE,
                    stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
                self.procs[kind] = proc
                line = await asyncio.wait_for(proc.stdout.readline(), 30)  # type: ignore[union-attr]
                if not line.startswith(b"port="):
                    raise RuntimeError(f"hostsvc {kind} did not start: {line!r}")
                self.ports[kind] = int(line.split(b"=")[1])
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(echo=self.ports["echo"], bulk=self.ports["bulk"])


# ---------------------------------------------------------------------------------------------
# one VM run with phase snapshots


SCRIPT = """
phase() {{ result phase "$1"; sleep {phase_sleep}; }}
pppd $PPP_TTY 115200 nodetach local noauth nocrtscts nodefaultroute maxfail 1 {pppd_opts} &
PPPD_PID=$!
wait_ppp 60 || {{ result up 0; exit 1; }}
result up 1
H={host}; E={echo}; B={bulk}
{body}
kill $PPPD_PID 2>/dev/null; wait $PPPD_PID 2>/dev/null
exit 0
"""


@dataclass
class RunOutcome:
    name: str
    variant: str
    line: str
    ok: bool
    results: dict[str, str]
    phases: dict[str, dict[str, Any]]
    duration: float
    server_died: bool = False
    error: str | None = None
    console_tail: str = ""


PhaseHook = Callable[[str, dict[str, Any]], Awaitable[None]]


async def run_vm(image, server: Server, body: str, *, line: str, timeout: float, name: str,
                 shim: LineShim | None = None, pppd_extra: str = "",
                 on_phase: PhaseHook | None = None, env: dict[str, str] | None = None) -> RunOutcome:
    script = SCRIPT.format(phase_sleep=PHASE_SLEEP, pppd_opts=f"{server.pppd_options} {pppd_extra}",
                           host=server.host_ip, echo=server.ports.echo, bulk=server.ports.bulk,
                           body=body)
    port = shim.port if shim is not None else server.line_port
    vm = rig.VM(image, script, line=line, line_port=port, timeout=timeout, accel="tcg",
                env=env, name=name)
    phases: dict[str, dict[str, Any]] = {}
    died = False
    t0 = time.monotonic()
    await vm.start()
    try:
        waiter = asyncio.ensure_future(vm.wait())
        seen = 0
        while not waiter.done():
            new = vm.all_results[seen:]
            seen += len(new)
            for key, value in new:
                if key != "phase":
                    continue
                snap = server.snapshot()
                if shim is not None:
                    snap["shim"] = {d: shim.stats[d].as_dict() for d in (UP, DOWN)}
                snap["stats"] = await server.stats()
                phases[value.strip()] = snap
                if on_phase is not None:
                    await on_phase(value.strip(), snap)
            if not server.server_alive():
                died = True
                await asyncio.sleep(1.0)  # let the guest's last results reach the console
                await vm.kill()
                break
            await asyncio.wait({waiter}, timeout=0.05)
        res = await waiter if waiter.done() else await vm.wait()
    finally:
        res = await vm.kill()
    ok = res.exit_code == 0 and not res.timed_out and not died
    tail = "\n".join(res.console.splitlines()[-25:])
    return RunOutcome(name=name, variant=server.kind, line=line, ok=ok, results=dict(res.results),
                      phases=phases, duration=round(time.monotonic() - t0, 1), server_died=died,
                      error=None if ok else f"status={res.status} timed_out={res.timed_out} died={died}",
                      console_tail="" if ok else tail)


def kv(text: str | None) -> dict[str, float | str]:
    """'a=1 b=2.5 error=x' -> {'a': 1.0, 'b': 2.5, 'error': 'x'}"""
    out: dict[str, float | str] = {}
    for part in (text or "").split():
        k, sep, v = part.partition("=")
        if not sep:
            continue
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


def cpu_delta(phases: dict[str, dict[str, Any]], a: str, b: str, key: str = "cpu") -> float | None:
    pa, pb = phases.get(a), phases.get(b)
    if not pa or not pb or pa.get(key) is None or pb.get(key) is None:
        return None
    return pb[key] - pa[key]


def io_delta(phases: dict[str, dict[str, Any]], a: str, b: str, counter: str) -> int | None:
    """How much one of the server's /proc counters (servers.io_counts) grew from phase a to b."""
    ia, ib = (phases.get(a) or {}).get("io"), (phases.get(b) or {}).get("io")
    if not ia or not ib or counter not in ia or counter not in ib:
        return None
    return ib[counter] - ia[counter]


def frames_delta(phases: dict[str, dict[str, Any]], a: str, b: str) -> int | None:
    def frames(p: dict[str, Any] | None) -> int | None:
        s = (p or {}).get("stats")
        if not s:
            return None
        try:
            counters = s["counters"]
            return int(counters["deframer"]["frames_ok"]) + int(counters["scheduler"]["frames_sent"])
        except (KeyError, TypeError, ValueError):
            return None
    fa, fb = frames(phases.get(a)), frames(phases.get(b))
    return None if fa is None or fb is None else fb - fa


# ---------------------------------------------------------------------------------------------
# the benchmarks


def rtt_budget(p: Params) -> int:
    """Seconds an RTT series may take (a server whose RTT under load is seconds gets fewer samples)."""
    return int(p.rtt_samples * 0.2 + 30)


def main_body(p: Params, line: str) -> str:
    size = p.bulk_bytes[line]
    rtt_budget_s = rtt_budget(p)
    return f"""
R=$(PBENCH_RTT_BUDGET={rtt_budget_s} PBENCH_TIMEOUT={rtt_budget_s + 60} pbench rtt $H $E {p.rtt_samples} {ECHO_GAP_MS}); result rtt_idle "$R rc=$?"
phase down_begin
R=$(pbench down $H $B {size}); result down "$R rc=$?"
phase down_end
R=$(pbench up $H $B {size}); result up "$R rc=$?"
phase up_end
PBENCH_TIMEOUT={rtt_budget_s + 120} pbench down $H $B 0 {rtt_budget_s + 60} > /tmp/load 2>&1 &
L=$!
sleep {p.load_warmup}
R=$(PBENCH_RTT_BUDGET={rtt_budget_s} PBENCH_TIMEOUT={rtt_budget_s + 60} pbench rtt $H $E {p.rtt_samples} {ECHO_GAP_MS}); result rtt_load "$R rc=$?"
kill $L; wait $L; result load "$(cat /tmp/load)"
sleep 2
phase short_begin
R=$(pbench short $H $E {p.short_seconds} 0); result short "$R rc=$?"
phase short_end
pbench serve 9000 & S=$!
sleep 0.5
R=$(pbench short 127.0.0.1 9000 {p.short_seconds} 0); result short_ceiling "$R rc=$?"
kill $S
"""


def main_timeout(p: Params, line: str) -> tuple[float, dict[str, str]]:
    """VM timeout, and the guest tool's own per-command bound (PBENCH_TIMEOUT)."""
    slow_rate = 40_000 if line == "16550" else 400_000  # bytes/s well below what either server does
    per_transfer = p.bulk_bytes[line] / slow_rate + 30
    rtt = rtt_budget(p) + 60
    total = 90 + 2 * per_transfer + 2 * rtt + p.load_warmup + 2 * p.short_seconds + 30
    return total, {"PBENCH_TIMEOUT": str(int(max(per_transfer, p.short_seconds + 30)))}


async def bench_main(image, svc: HostServices, p: Params, variant: str, line: str, log_dir: Path) -> RunOutcome:
    timeout, env = main_timeout(p, line)
    async with Server(variant, svc.endpoints, log_dir=log_dir) as server:
        return await run_vm(image, server, main_body(p, line), line=line, timeout=timeout,
                            name=f"main-{variant}", env=env)


def scale_body(ns: list[int], inflight: int, hold_s: float = 3.0) -> str:
    rounds = []
    for n in ns:
        deadline = max(60, n // 40)
        rounds.append(f"""
F=/tmp/hold_{n}; : > $F
PBENCH_HOLD_DEADLINE={deadline} PBENCH_TIMEOUT={2 * deadline + 60} pbench hold $H $E {n} {inflight} {hold_s} >> $F 2>&1 &
P=$!
while ! grep -q held= $F && kill -0 $P 2>/dev/null; do sleep 0.2; done
result hold_{n} "$(grep held= $F)"
phase held_{n}
wait $P; rc=$?
result verify_{n} "$(grep verified= $F) $(grep closed_secs= $F) $(grep error= $F) rc=$rc"
[ $rc = 0 ] || exit 0
sleep 4
phase after_{n}
""")
    return "phase base\n" + "".join(rounds)


async def bench_scale(image, svc: HostServices, p: Params, variant: str, log_dir: Path) -> RunOutcome:
    ns = p.slirp_scale_n if variant == "slirp" else p.scale_n
    timeout = 90 + sum(2 * max(60, n // 40) + 80 for n in ns)
    async with Server(variant, svc.endpoints, log_dir=log_dir) as server:
        out = await run_vm(image, server, scale_body(ns, p.inflight), line="virtio",
                           timeout=timeout, name=f"scale-{variant}")
    out.results["_ns"] = " ".join(map(str, ns))
    if variant == "slirp" and out.server_died:
        small_ok = all(kv(out.results.get(f"verify_{n}")).get("rc") == 0 for n in ns if n <= 1016)
        if small_ok and any(n > 1016 for n in ns):
            # select() and FD_SETSIZE: SLiRP aborts at its 1,017th connection. That is the finding.
            out.ok, out.error = True, "SLiRP died past 1,016 connections (expected: FD_SETSIZE)"
    return out


def efficiency_body(p: Params) -> str:
    return f"""
phase e0
R=$(pbench rtt $H $E 1 0); result trip1 "$R rc=$?"
sleep 1
phase e1
R=$(pbench rtt $H $E {p.eff_trips} 0); result tripN "$R rc=$?"
sleep 1
phase e2
R=$(pbench down $H $B {p.eff_bytes}); result eff_down "$R rc=$?"
phase e3
R=$(pbench up $H $B {p.eff_bytes}); result eff_up "$R rc=$?"
phase e4
"""


async def bench_efficiency(image, svc: HostServices, p: Params, variant: str, log_dir: Path) -> RunOutcome:
    per = p.eff_bytes / (LINE_BAUD / 10 * 0.5) + 30  # at half the line rate, at worst
    timeout = 120 + 2 * per + p.eff_trips * 0.5
    env = {"PBENCH_TIMEOUT": str(int(per + 30))}
    async with Server(variant, svc.endpoints, keepalive=False, log_dir=log_dir) as server:
        async with LineShim(upstream_port=server.line_port, baud=LINE_BAUD) as shim:
            return await run_vm(image, server, efficiency_body(p), line="virtio", timeout=timeout,
                                shim=shim, name=f"eff-{variant}", pppd_extra="lcp-echo-interval 0",
                                env=env)


async def bench_profile(image, svc: HostServices, p: Params, log_dir: Path) -> dict[str, Any]:
    """py-spy (sampling, --nonblocking) over pyslirp (through socat+pty, the compared variant)
    during a bulk download and upload on the first of ``p.lines``."""
    pyspy = Path(sys.executable).with_name("py-spy")
    if not pyspy.exists():
        return {"error": "py-spy not found beside the interpreter (pip install py-spy)"}
    out_file = log_dir / "profile-pyslirp.txt"
    line = p.lines[0]
    size = p.bulk_bytes[line]
    native = bool(os.environ.get("PYSLIRP_PROFILE_NATIVE"))  # C frames too (pauses the process)
    procs: list[subprocess.Popen] = []

    async with Server("pyslirp-pty", svc.endpoints, log_dir=log_dir) as server:
        async def hook(name: str, snap: dict[str, Any]) -> None:
            if name == "down_begin":
                procs.append(subprocess.Popen(
                    [str(pyspy), "record", "--pid", str(server.server_pid), "--format", "raw",
                     "--rate", "200", "-o", str(out_file),
                     *(["--native"] if native else ["--nonblocking"])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            elif name == "up_end" and procs:
                procs[0].send_signal(signal.SIGINT)

        body = f"""
phase down_begin
R=$(pbench down $H $B {size}); result down "$R rc=$?"
R=$(pbench up $H $B {size}); result up "$R rc=$?"
phase up_end
"""
        try:
            outcome = await run_vm(image, server, body, line=line, timeout=600, name="profile",
                                   on_phase=hook, env={"PBENCH_TIMEOUT": "400"})
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return {"file": str(out_file), **summarize_profile(out_file), "results": outcome.results}


def summarize_profile(path: Path, top: int = 20) -> dict[str, Any]:
    """Self and inclusive sample shares by function, from py-spy's collapsed stacks."""
    if not path.exists():
        return {"error": "no profile written"}
    self_c: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in frames]
        if frames:
            self_c[frames[-1]] = self_c.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
    def table(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]
    return {"samples": total, "self": table(self_c), "inclusive": table(incl)} if total else {"error": "empty profile"}


# ---------------------------------------------------------------------------------------------
# figures and the table


def figures(outcomes: list[RunOutcome], p: Params) -> dict[str, dict[str, Any]]:
    """metric -> variant -> value (None: not measured / failed)."""
    fig: dict[str, dict[str, Any]] = {}

    def put(metric: str, variant: str, value: Any) -> None:
        fig.setdefault(metric, {})[variant] = value

    for o in outcomes:
        v, r, ph = o.variant, o.results, o.phases
        if o.name.startswith("main-"):
            L = o.line
            for what, phase_a, phase_b in (("down", "down_begin", "down_end"), ("up", "down_end", "up_end")):
                d = kv(r.get(what))
                ok = d.get("rc") == 0 and d.get("error") is None
                nbytes = d.get("bytes") if what == "down" else d.get("acked")
                secs = d.get("secs")
                mbps = nbytes / secs / 1e6 if ok and secs else None  # type: ignore[operator]
                put(f"bulk {what} {L} MB/s", v, mbps)
                cpu = cpu_delta(ph, phase_a, phase_b)
                put(f"CPU s/MB {what} {L}", v, cpu / (nbytes / 1e6) if ok and cpu is not None and nbytes else None)
                kernel = cpu_delta(ph, phase_a, phase_b, "cpu_kernel")
                if kernel is not None and cpu:
                    put(f"CPU % in the kernel {what} {L}", v, 100 * kernel / cpu)
                socat = cpu_delta(ph, phase_a, phase_b, "socat_cpu")
                if socat is not None and ok and nbytes:
                    put(f"socat CPU s/MB {what} {L}", v, socat / (nbytes / 1e6))
                frames = frames_delta(ph, phase_a, phase_b)
                if frames and cpu is not None:
                    put(f"pyslirp CPU µs/frame {what} {L} (mean)", v, cpu / frames * 1e6)
            for when in ("idle", "load"):
                d = kv(r.get(f"rtt_{when}"))
                ok = isinstance(d.get("n"), float) and d["n"] >= 10  # a series cut short by its budget still counts
                put(f"echo RTT {when} samples {L}", v, int(d["n"]) if ok else None)
                for q in ("min", "p50", "p99"):  # min: the fastest trip, the rig's floor
                    put(f"echo RTT {when} {q} {L} ms", v, d.get(q) if ok else None)
            stats = (ph.get("up_end") or {}).get("stats") or {}
            processing = (stats.get("session") or {}).get("processing") or {}
            for kind, label in (("rx_frame", "frame received"), ("tx_datagram", "datagram a service sent")):
                times = processing.get(kind) or {}
                for q in ("p50", "p99"):
                    put(f"pyslirp µs per {label} {q} {L} (bulk runs)", v, times.get(f"{q}_us"))
            load = kv(r.get("load"))
            secs = load.get("secs")
            put(f"download during RTT test {L} MB/s", v,
                load["bytes"] / secs / 1e6 if secs and "bytes" in load else None)  # type: ignore[operator]
            for key, metric in (("short", f"short conn/s {L}"), ("short_ceiling", f"rig ceiling conn/s {L} (guest loopback)")):
                d = kv(r.get(key))
                put(metric, v, d.get("rate") if d.get("rc") == 0 else None)
            # One connection at a time: the server's CPU per connection lies on the critical path,
            # so 1 / (time per connection - that CPU) bounds the rate a server costing nothing
            # would reach on this rig.
            short = kv(r.get("short"))
            cpu = cpu_delta(ph, "short_begin", "short_end")
            if short.get("rc") == 0 and short.get("ok") and cpu is not None:
                per_conn = cpu / short["ok"]  # type: ignore[operator]
                put(f"server CPU ms per short conn {L}", v, per_conn * 1000)
                kernel = cpu_delta(ph, "short_begin", "short_end", "cpu_kernel")
                if kernel is not None:
                    put(f"server CPU ms per short conn {L}, user space", v, (cpu - kernel) / short["ok"] * 1000)  # type: ignore[operator]
                for counter, label in (("syscr", "read calls"), ("syscw", "write calls"), ("wakeups", "wakeups"),
                                       ("preempted", "preemptions")):
                    count = io_delta(ph, "short_begin", "short_end", counter)
                    if count is not None:
                        put(f"server {label} per short conn {L}", v, count / short["ok"])  # type: ignore[operator]
                gap = short["secs"] / short["ok"] - per_conn  # type: ignore[operator]
                put(f"rig bound conn/s {L} (server costing nothing)", v, 1 / gap if gap > 0 else None)
        elif o.name.startswith("scale-"):
            base = ph.get("base", {}).get("rss_kb")
            put("RSS idle, link up (MB)", v, base / 1024 if base else None)
            for n in [int(x) for x in r.get("_ns", "").split()]:
                h = kv(r.get(f"hold_{n}"))
                ver = kv(r.get(f"verify_{n}"))
                held = int(h.get("held", 0)) if "held" in h else None
                verified = int(ver.get("verified", 0)) if "verified" in ver else None
                if held is None and o.server_died:
                    put(f"N={n}: held/verified", v, "server died")
                else:
                    txt = f"{held if held is not None else '-'}/{verified if verified is not None else '-'}"
                    if o.server_died and ver.get("rc") != 0:
                        txt += " (server died)"
                    put(f"N={n}: held/verified", v, txt)
                put(f"N={n}: time to open s", v, h.get("open_secs") if held else None)
                rss = ph.get(f"held_{n}", {}).get("rss_kb")
                put(f"N={n}: server RSS MB", v, rss / 1024 if rss else None)
                if rss and base and held:
                    put(f"N={n}: KB per held conn", v, (rss - base) / held)
        elif o.name.startswith("eff-"):
            def shim_delta(a: str, b: str, d: str) -> int | None:
                pa, pb = ph.get(a, {}).get("shim"), ph.get(b, {}).get("shim")
                return pb[d]["bytes_out"] - pa[d]["bytes_out"] if pa and pb else None
            rate = LINE_BAUD / 10
            for what, a, b, d in (("down", "e2", "e3", DOWN), ("up", "e3", "e4", UP)):
                x = kv(r.get(f"eff_{what}"))
                nbytes = x.get("bytes") if what == "down" else x.get("acked")
                ok = x.get("rc") == 0 and nbytes
                put(f"115200 goodput {what} % of line", v,
                    100 * nbytes / x["secs"] / rate if ok and x.get("secs") else None)  # type: ignore[operator]
                wire = shim_delta(a, b, d)
                put(f"115200 payload/wire bytes {what} %", v, 100 * nbytes / wire if ok and wire else None)  # type: ignore[operator]
                cpu = cpu_delta(ph, a, b)  # the server's CPU over the saturated paced line
                put(f"115200 server CPU {what} % of a core", v,
                    100 * cpu / x["secs"] if ok and cpu is not None and x.get("secs") else None)
            t1, tn = kv(r.get("trip1")), kv(r.get("tripN"))
            if t1.get("rc") == 0 and tn.get("rc") == 0:
                for d, label in ((UP, "client→server"), (DOWN, "server→client")):
                    one, many = shim_delta("e0", "e1", d), shim_delta("e1", "e2", d)
                    if one is not None and many is not None:
                        put(f"wire bytes per 1-byte echo trip {label}", v, (many - one) / (p.eff_trips - 1))
    return fig


# (metric prefix, direction: +1 higher is better / -1 lower is better, target ratio or None)
def target_for(metric: str) -> tuple[str, Callable[[float | None, Any, Any], bool | None]] | None:
    def ratio_at_least(k: float):
        return lambda r, a, b: None if r is None else r >= k

    def ratio_at_most(k: float):
        return lambda r, a, b: None if r is None else r <= k

    if metric.startswith("bulk "):
        return "≥0.95×", ratio_at_least(0.95)
    if metric.startswith("echo RTT load p50"):
        return "≤1/3×", ratio_at_most(1 / 3)
    if metric.startswith("short conn/s"):
        return "≥1.5×", ratio_at_least(1.5)
    if metric.startswith("CPU s/MB"):
        return "≤2×", ratio_at_most(2.0)
    if metric.endswith("KB per held conn"):
        return "≤2× (36 KB)", lambda r, a, b: None if a is None else a <= 2 * (b if isinstance(b, float) else 18.0)
    if metric.startswith(("115200 goodput", "115200 payload/wire")):
        return ">SLiRP", lambda r, a, b: None if r is None else r > 1.0
    if metric.startswith("wire bytes per"):
        return "≤10 B", lambda r, a, b: None if a is None else a <= 10
    if metric.startswith("N=10000: held"):
        return "all held", lambda r, a, b: None if a is None else str(a).split("/")[0] == str(a).split("/")[-1].split()[0] == "10000"
    return None


def fmt(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


SECTIONS = [
    ("1. Bulk throughput", ("bulk ",)),
    ("2. Interactive latency (1-byte echo, TCP_NODELAY)", ("echo RTT", "download during")),
    ("3. Scale", ("RSS idle", "N=", "short conn", "rig ceiling", "rig bound", "server CPU ms per short",
                  "server read calls", "server write calls", "server wakeups", "server preemptions")),
    ("4. Line efficiency, shim at 115200 baud both ways", ("115200", "wire bytes")),
    ("5. Cost", ("CPU s/MB", "CPU % in the kernel", "socat CPU", "pyslirp CPU", "pyslirp µs")),
]


def render_table(fig: dict[str, dict[str, Any]], variants: list[str]) -> tuple[str, list[dict[str, Any]]]:
    cols = [v for v in ("slirp", "pyslirp-pty", "pyslirp-tcp") if v in variants]
    head = ["metric"] + [{"slirp": "SLiRP", "pyslirp-pty": "pyslirp pty", "pyslirp-tcp": "pyslirp tcp"}[c] for c in cols]
    head += ["pty/SLiRP", "target", "verdict"]
    rows: list[list[str]] = []
    records: list[dict[str, Any]] = []
    used: set[str] = set()
    for title, prefixes in SECTIONS:
        metrics = [m for m in fig if m.startswith(prefixes) and m not in used]
        if not metrics:
            continue
        rows.append([f"[{title}]"] + [""] * (len(head) - 1))
        for m in metrics:
            used.add(m)
            vals = fig[m]
            a, b = vals.get("pyslirp-pty"), vals.get("slirp")
            ratio = a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None
            tgt = target_for(m)
            verdict = None
            if tgt is not None:
                verdict = tgt[1](ratio, a, b)
            rows.append([m] + [fmt(vals.get(c)) for c in cols] + [
                f"{ratio:.2f}×" if ratio is not None else "—", tgt[0] if tgt else "",
                "" if tgt is None else ("PASS" if verdict else "FAIL" if verdict is False else "n/a")])
            records.append({"metric": m, "values": vals, "ratio_pty_over_slirp": ratio,
                            "target": tgt[0] if tgt else None, "pass": verdict})
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        if r[0].startswith("["):
            lines.append(r[0])
            continue
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines), records


# ---------------------------------------------------------------------------------------------
# main


def prerequisites() -> list[str]:
    missing = [f"{t} (apt package {pkg})" for t, pkg in
               ((SLIRP, "slirp"), (SOCAT, "socat"), (rig.QEMU, "qemu-system-x86"))
               if not (Path(t).exists() if t.startswith("/") else __import__("shutil").which(t))]
    return missing


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def amain(args: argparse.Namespace) -> int:
    p = Params.quick() if args.quick else Params.full()
    if args.variants:
        p.variants = args.variants.split(",")
    if args.lines:
        p.lines = args.lines.split(",")
    if args.parts:
        p.parts = args.parts.split(",")
    if args.bulk_mb is not None:
        p.bulk_bytes = {k: int(args.bulk_mb * 1e6) for k in p.bulk_bytes}
    if args.bulk_mb_16550 is not None:
        p.bulk_bytes["16550"] = int(args.bulk_mb_16550 * 1e6)
    if args.scale_n:
        p.scale_n = [int(x) for x in args.scale_n.split(",")]
    if args.slirp_scale_n:
        p.slirp_scale_n = [int(x) for x in args.slirp_scale_n.split(",")]
    missing = prerequisites()
    if missing:
        print("missing: " + ", ".join(missing), file=sys.stderr)
        return 2
    raise_nofile()
    image = rig.ensure_image()
    manifest = json.loads(image.manifest.read_text())
    if not manifest.get("pbench"):
        print("the rig image has no pbench: install gcc and libc6-dev, then rerun "
              "(tests/interop/build_image.py rebuilds the image)", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_json = Path(args.json) if args.json else HERE / "results" / f"{stamp}{'-quick' if args.quick else ''}.json"
    log_dir = out_json.with_suffix("")
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYSLIRP_RIG_LOG_DIR", str(log_dir))

    load_before = os.getloadavg()
    t_start = time.monotonic()
    outcomes: list[RunOutcome] = []
    failed_attempts: list[RunOutcome] = []
    profile: dict[str, Any] | None = None
    # Interleave the variants inside each benchmark so that drifting background load hits them alike.
    jobs: list[tuple[str, Callable[[], Awaitable[RunOutcome]]]] = []
    async with HostServices() as svc:
        def add(label: str, make: Callable[[], Awaitable[RunOutcome]]) -> None:
            jobs.append((label, make))
        if "main" in p.parts:
            for line in p.lines:
                for v in p.variants:
                    add(f"main {v} {line}", lambda v=v, line=line: bench_main(image, svc, p, v, line, log_dir))
        if "scale" in p.parts:
            for v in p.variants:
                add(f"scale {v}", lambda v=v: bench_scale(image, svc, p, v, log_dir))
        if "efficiency" in p.parts:
            for v in p.variants:
                add(f"efficiency {v}", lambda v=v: bench_efficiency(image, svc, p, v, log_dir))
        for i, (label, make) in enumerate(jobs, 1):
            log(f"({i}/{len(jobs)}) {label} ...")
            t = time.monotonic()
            # A main or efficiency run that did not complete (SLiRP 1.0.17 has been seen to die
            # mid-run) is run once more; the failed attempt stays in the JSON. Scale runs are not
            # retried: SLiRP dying past 1,016 connections is the finding.
            for attempt in (1, 2):
                try:
                    o = await make()
                except Exception as exc:  # a failed run is reported, the suite goes on
                    o = RunOutcome(name=label.replace(" ", "-"), variant=label.split()[1], line="", ok=False,
                                   results={}, phases={}, duration=round(time.monotonic() - t, 1),
                                   error=f"{type(exc).__name__}: {exc}"[:2000])
                log(f"    {'ok' if o.ok else 'FAILED ' + str(o.error)} in {o.duration:.0f} s, load {os.getloadavg()[0]:.2f}")
                if not o.ok and o.console_tail:
                    log("    console tail:\n" + o.console_tail)
                if o.ok or label.startswith("scale") or attempt == 2:
                    outcomes.append(o)
                    break
                failed_attempts.append(o)
                log("    retrying once")
        if args.profile:
            log(f"profile: py-spy over pyslirp-pty during a {p.lines[0]} bulk download + upload ...")
            profile = await bench_profile(image, svc, p, log_dir)

    fig = figures(outcomes, p)
    table, records = render_table(fig, p.variants)
    elapsed = time.monotonic() - t_start
    header = (f"pyslirp vs SLiRP, end to end ({'quick' if args.quick else 'full'}), "
              f"QEMU TCG, {os.cpu_count()} host CPUs, "
              f"load avg before {load_before[0]:.2f} / after {os.getloadavg()[0]:.2f}, "
              f"{elapsed / 60:.1f} min")
    print(header)
    print(f"bulk sizes: {', '.join(f'{k} {v / 1e6:g} MB' for k, v in p.bulk_bytes.items())}; "
          f"RTT samples {p.rtt_samples}; N {p.scale_n} (SLiRP {p.slirp_scale_n}); "
          f"efficiency {p.eff_bytes / 1e3:g} kB, {p.eff_trips} trips")
    print(table)
    failed = [o for o in outcomes if not o.ok]
    if failed_attempts:
        print("\nretried after a failed attempt: " + "; ".join(f"{o.name} {o.line}: {o.error}" for o in failed_attempts))
    if failed:
        print("\nruns that did not complete: " + "; ".join(f"{o.name} {o.line}: {o.error}" for o in failed))
    if profile:
        print("\npyslirp profile (py-spy, % of samples):")
        if "self" in profile:
            print("  self time:")
            for name, pct in profile["self"][:15]:
                print(f"    {pct:5.1f}%  {name}")
            print("  inclusive:")
            for name, pct in profile["inclusive"][:15]:
                print(f"    {pct:5.1f}%  {name}")
        else:
            print(f"  {profile.get('error')}")
    doc = {
        "started": stamp, "quick": args.quick, "params": asdict(p), "elapsed_s": round(elapsed, 1),
        "host": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                 "python": platform.python_version(), "kernel": platform.release()},
        "image": manifest.get("key"), "table": records, "figures": fig,
        "runs": [asdict(o) for o in outcomes], "failed_attempts": [asdict(o) for o in failed_attempts],
        "profile": profile,
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"\nJSON: {out_json}\nlogs: {log_dir}")
    return 0 if not failed else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke subset: small sizes, N=100")
    ap.add_argument("--variants", help=f"comma list of {','.join(VARIANTS)}")
    ap.add_argument("--lines", help="comma list of virtio,16550 (bulk/latency runs)")
    ap.add_argument("--parts", help="comma list of main,scale,efficiency")
    ap.add_argument("--bulk-mb", type=float, help="bulk transfer size on both lines (MB)")
    ap.add_argument("--bulk-mb-16550", type=float, help="bulk transfer size on the 16550 line (MB)")
    ap.add_argument("--scale-n", help="comma list of N for pyslirp (default 1000,5000,10000)")
    ap.add_argument("--slirp-scale-n", help="comma list of N for SLiRP (default 1000,5000: it aborts at 1,017)")
    ap.add_argument("--profile", action="store_true", help="also profile pyslirp with py-spy during a bulk transfer")
    ap.add_argument("--json", help="where to write the results (default benchmarks/e2e/results/<stamp>.json)")
    args = ap.parse_args(argv)
    try:
        return asyncio.run(guarded(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        reap_children()


async def guarded(args: argparse.Namespace) -> int:
    """amain, cancelled (so that every server, socat, QEMU and service is stopped by its own
    context manager) on SIGTERM/SIGINT."""
    task = asyncio.ensure_future(amain(args))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        print("interrupted: stopped every server, socat, QEMU and host service", file=sys.stderr)
        return 130


def reap_children() -> None:
    """Last resort on any exit path: SIGKILL whatever this process started that is still there
    (descendants found through /proc/<pid>/task/*/children, by PID)."""
    def descendants(pid: int) -> list[int]:
        out: list[int] = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                for child in (task / "children").read_text().split():
                    out += [int(child)] + descendants(int(child))
        return out
    for pid in descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
