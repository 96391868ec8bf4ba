"""Many lines, one gateway (issue 17) with Linux pppd: two VMs dial ONE ``pyslirp serve`` at once,
on two ``tcp-listen`` lines or on one line with ``max_clients: 2``.

* Each client gets its own address from ``ppp.peer_pool`` (as pppd's ip-up reports it), and both
  download 5 MB from the same host service at the same time, sha256-intact.
* An echo RTT on one VM stays interactive (the median of its rounds' p50 within 2x the idle one)
  while the other VM saturates its own line with an endless download.
* One VM's line is cut mid-transfer (a :class:`LineShim` between it and pyslirp): the other VM's
  download, mid-way too, completes intact, and the first renegotiates, gets an address from the
  pool again and downloads 5 MB intact on its new link.

The lines are virtio consoles (``/dev/hvc0``), as the other 5 MB transfer tests use: a 5 MB
download takes seconds under TCG. The host conducts both guests through gates: a guest fetches
``http://10.0.0.1:90/NAME``, answered once the test opens gate NAME.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import statistics

import pytest

import rig
from dial import PPPD_QUIET
from pyslirp_proc import PyslirpProcess
from shim import DOWN, LineShim
from test_data_path import FileServer, sha

BLOB = os.urandom(5 << 20)
POOL = "10.0.0.2-10.0.0.254"
POOL_FIRST, POOL_LAST = (ipaddress.IPv4Address(a) for a in POOL.split("-"))
LINE = "virtio"
VM_TIMEOUT = 300  # seconds: QEMU killed after that (two TCG guests share the host's cores with pyslirp)

#: the saturated line's rate: a 115200-baud serial port (10 bits a byte), as a gateway's ports are.
#: An unrated virtio download runs as fast as the guest's emulated CPU goes, which takes a host
#: core from the other VM: that would measure the rig's CPUs, not the line's isolation. A rated
#: line is saturated at its rate (its bulk queue full), and a scheduler or budget shared between
#: lines would hold the other line's echo behind 1500-byte frames at ~130 ms each.
SATURATED_RATE = 11520
#: pbench rtt: SAMPLES 1-byte echo trips GAP_MS apart per round; ROUNDS rounds idle before the
#: load, ROUNDS while the other line is saturated, ROUNDS idle after it
ROUNDS, SAMPLES, GAP_MS = 6, 40, 20
RTT_FACTOR = 2.0  # the bound: loaded p50 within 2x the idle p50
CUT_SECONDS = 3.0

#: guest ports on 10.0.0.1
HTTP, GATED, ECHO, BULK, GATE = 80, 82, 7, 81, 90

#: dial (pppd's options after PPPD_QUIET), report the addresses, define gate and download
DIAL = f"""
{PPPD_QUIET} {{options}} &
PPPD_PID=$!
wait_ppp 90 || {{{{ result up 0; exit 1; }}}}
result up 1
result local "$PPP_LOCAL"
result remote "$PPP_REMOTE"
gate() {{{{  # gate NAME: returns once the host opens gate NAME
  wget -q -O /dev/null "http://10.0.0.1:{GATE}/$1" || {{{{ result gate_failed "$1"; exit 1; }}}}
}}}}
download() {{{{  # download URL: wget's exit status and the sha256 of what arrived
  timeout 180 wget -q -O /tmp/blob "$1"; echo "$? $(sha256sum /tmp/blob | cut -d' ' -f1)"
  rm -f /tmp/blob
}}}}
"""
HANG_UP = "\nkill $PPPD_PID; wait $PPPD_PID || true\n"


def script(body: str, options: str = "") -> str:
    return DIAL.format(options=options) + body + HANG_UP


class Gates:
    """An HTTP service on 127.0.0.1: ``GET /NAME`` is answered once :meth:`open` opens NAME."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.server: asyncio.Server | None = None

    def _event(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())

    def open(self, name: str) -> None:
        self._event(name).set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            await self._event(request.split()[1].decode().lstrip("/")).wait()
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\ngo\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        for event in self.events.values():
            event.set()  # no guest left waiting: let its handler end
        if self.server is not None:
            self.server.close()


class HeldDownload:
    """HTTP on 127.0.0.1: any GET is answered with :data:`BLOB`, its first half at once, the rest
    once :attr:`release` is set; :attr:`halves` counts the answers half sent."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.halves = 0
        self.changed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BLOB))
            writer.write(BLOB[:len(BLOB) // 2])
            await writer.drain()
            self.halves += 1
            self.changed.set()
            await self.release.wait()
            writer.write(BLOB[len(BLOB) // 2:])
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def wait_halves(self, count: int, timeout: float) -> None:
        async def reached() -> None:
            while self.halves < count:
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(reached(), timeout)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echoes every byte (pbench rtt's service)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def bulk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """pbench down's service: "D <n>\\n", then n bytes (0: until the client goes away)."""
    chunk = os.urandom(1 << 16)
    try:
        line = await reader.readline()
        kind, _, n = line.decode(errors="replace").strip().partition(" ")
        remaining = int(n or 0) if kind == "D" else -1
        endless = remaining == 0
        while endless or remaining > 0:
            piece = chunk if endless else chunk[:min(remaining, len(chunk))]
            writer.write(piece)
            await writer.drain()
            remaining -= len(piece)
    except (ConnectionError, ValueError):
        pass
    finally:
        writer.close()


class Services:
    """The host services every test maps on 10.0.0.1: the 5 MB file over HTTP (whole, or held
    at half way), echo, bulk and the gates."""

    async def __aenter__(self) -> "Services":
        self.files = FileServer({"blob": BLOB})
        self.files.__enter__()
        self.held = HeldDownload()
        self.gates = Gates()
        self.echo = await asyncio.start_server(echo, "127.0.0.1", 0)
        self.bulk = await asyncio.start_server(bulk, "127.0.0.1", 0)
        self.config = {"services": {
            HTTP: {"name": "files", "port": self.files.port},
            GATED: {"name": "held", "port": await self.held.start()},
            ECHO: {"name": "echo", "port": self.echo.sockets[0].getsockname()[1]},
            BULK: {"name": "bulk", "port": self.bulk.sockets[0].getsockname()[1]},
            GATE: {"name": "gate", "port": await self.gates.start()},
        }}
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.held.release.set()
        for server in (self.gates, self.held):
            server.close()
        self.echo.close()
        self.bulk.close()
        self.files.__exit__()


def lines_config(services: Services, lines: list[dict]) -> dict:
    return {**services.config, "ppp": {"peer_pool": POOL},
            "lines": [{"port": "tcp-listen://127.0.0.1:0", **line} for line in lines]}


def in_pool(address: str) -> bool:
    return POOL_FIRST <= ipaddress.IPv4Address(address) <= POOL_LAST


def require_pbench(image: rig.ImagePaths) -> None:
    if not json.loads(image.manifest.read_text()).get("pbench"):
        rig.skip_or_fail("the rig's image has no pbench (apt-get install gcc libc6-dev, then rebuild the image)")


def vm(image: rig.ImagePaths, accel: str, script_text: str, port: int, name: str) -> rig.VM:
    return rig.VM(image, script_text, line=LINE, line_port=port, timeout=VM_TIMEOUT, accel=accel,
                  name=f"many-lines-{name}")


async def wait_all(vms: list[rig.VM], name: str, timeout: float) -> list[str]:
    return list(await asyncio.gather(*(each.wait_result(name, timeout=timeout) for each in vms)))


async def kill_all(vms: list[rig.VM]) -> None:
    for each in vms:
        await each.kill()


def clients_seen(stats: dict) -> dict[str, str | None]:
    """/status's lines (the SIGUSR1 stats line): each client's line label -> its address."""
    return {client["name"]: client["client"] for line in stats["lines"] for client in line["clients"]}


async def hung_up(server: PyslirpProcess, timeout: float = 30) -> dict:
    """The stats once no client is left on any line (the VMs are gone), or at ``timeout``."""
    for _ in range(int(timeout * 10)):
        stats = await server.stats()
        if not clients_seen(stats):
            break
        await asyncio.sleep(0.1)
    return stats


def links_logged(server: PyslirpProcess) -> list[tuple[str, str]]:
    """Each "LINE: link up" pyslirp logged: (the line's label, the client's address)."""
    return [(m.group(1), m.group(2)) for m in server.find(r"(\S+): link up: we are 10\.0\.0\.1, the client is (\S+)$")]


def fields(report: str) -> dict[str, str]:
    """pbench's "key=value ..." line as a dict."""
    return dict(field.split("=", 1) for field in report.split() if "=" in field)


# -- 1. two clients at once: their own addresses, 5 MB each ---------------------------------------

DOWNLOAD = script(f"""
result ready 1
gate download
result download "$(download http://10.0.0.1:{HTTP}/blob)"
""")


@pytest.mark.parametrize("layout", ["two-lines", "max-clients"])
async def test_two_vms_at_once_get_their_own_addresses_and_download_intact(rig_image, rig_accel, layout: str) -> None:
    async with Services() as services:
        if layout == "two-lines":
            config = lines_config(services, [{"name": "a"}, {"name": "b"}])
        else:
            config = lines_config(services, [{"name": "hub", "max_clients": 2}])
        async with PyslirpProcess(config, debug=False) as server:
            ports = [server.ports["a"], server.ports["b"]] if layout == "two-lines" else [server.ports["hub"]] * 2
            vms = [vm(rig_image, rig_accel, DOWNLOAD, port, f"{layout}-{k}") for k, port in enumerate(ports)]
            try:
                await asyncio.gather(*(each.start() for each in vms))
                await wait_all(vms, "ready", timeout=180)
                linked = await server.stats()
                services.gates.open("download")  # both downloads at once
                results = [await each.wait() for each in vms]
            finally:
                await kill_all(vms)
            after = await hung_up(server)
    for res in results:
        res.check()
    addresses = [res.results["local"] for res in results]
    print(f"{layout}: the VMs got {addresses}; pyslirp: {links_logged(server)}")
    assert len(set(addresses)) == 2, addresses
    assert all(in_pool(address) for address in addresses), addresses
    assert all(res.results["remote"] == "10.0.0.1" for res in results)
    for res in results:
        assert res.results["download"] == f"0 {sha(BLOB)}", res.results
    # pyslirp's view: a client on each line (two on the hub), with the addresses the guests saw
    labels = ["a", "b"] if layout == "two-lines" else ["hub#1", "hub#2"]
    seen = clients_seen(linked)
    assert sorted(seen) == labels, linked["lines"]
    assert sorted(seen.values()) == sorted(addresses), linked["lines"]
    assert dict(links_logged(server)) == seen, server.log()
    assert clients_seen(after) == {}, after["lines"]


# -- 2. one line saturated, the other's echo stays interactive -------------------------------------

RTT_ROUNDS = f"""
i=1; while [ $i -le {ROUNDS} ]; do
  result rtt_{{phase}}_$i "$(pbench rtt 10.0.0.1 {ECHO} {SAMPLES} {GAP_MS})"
  i=$((i+1))
done
"""

INTERACTIVE = script("\n".join([
    "result ready 1",
    "gate idle",
    RTT_ROUNDS.format(phase="idle"),
    "result idle_done 1",
    "gate loaded",
    RTT_ROUNDS.format(phase="load"),
    "result load_done 1",
    "gate idle_again",
    RTT_ROUNDS.format(phase="idle"),
    "result idle_again_done 1",
]))

SATURATING = script(f"""
result ready 1
gate load
pbench down 10.0.0.1 {BULK} 0 240 > /tmp/down &
D=$!
sleep 6  # the line budget learns the line's rate: the line is full from then on
result loading 1
gate unload
kill $D; wait $D
sleep 3  # what the line had queued for the download drains
result down "$(cat /tmp/down)"
gate done
""")


def rtt_p50s(res: rig.VMResult, phase: str) -> list[float]:
    """The p50 of each pbench rtt round of ``phase``, in ms."""
    p50s = []
    for name, value in res.all_results:
        if name.startswith(f"rtt_{phase}_"):
            report = fields(value)
            assert "error" not in report and int(report["n"]) == SAMPLES, value
            p50s.append(float(report["p50"]))
    assert len(p50s) >= ROUNDS, res.all_results
    return p50s


async def test_a_saturated_line_leaves_the_other_lines_echo_interactive(rig_image, rig_accel) -> None:
    require_pbench(rig_image)
    async with Services() as services:
        config = lines_config(services, [{"name": "interactive"},
                                         {"name": "saturated", "line_rate": SATURATED_RATE}])
        async with PyslirpProcess(config, debug=False) as server:
            interactive = vm(rig_image, rig_accel, INTERACTIVE, server.ports["interactive"], "rtt")
            saturating = vm(rig_image, rig_accel, SATURATING, server.ports["saturated"], "bulk")
            vms = [interactive, saturating]
            gates = services.gates
            try:
                await asyncio.gather(*(each.start() for each in vms))
                await wait_all(vms, "ready", timeout=180)
                gates.open("idle")  # both links up, the other line idle
                await interactive.wait_result("idle_done", timeout=180)
                gates.open("load")
                await saturating.wait_result("loading", timeout=60)
                sent = [await line_bytes_sent(server)]
                gates.open("loaded")
                await interactive.wait_result("load_done", timeout=180)
                sent.append(await line_bytes_sent(server))
                gates.open("unload")
                await saturating.wait_result("down", timeout=60)
                gates.open("idle_again")  # the other line idle again, its link still up
                await interactive.wait_result("idle_again_done", timeout=180)
                gates.open("done")
                rtt, load = [await each.wait() for each in vms]
            finally:
                await kill_all(vms)
    rtt.check()
    load.check()
    idle, loaded = rtt_p50s(rtt, "idle"), rtt_p50s(rtt, "load")
    idle_p50, loaded_p50 = statistics.median(idle), statistics.median(loaded)
    down = fields(load.results["down"])
    print(f"echo RTT p50 of each round, ms: idle {idle}; the other line saturated {loaded}")
    print(f"median p50: idle {idle_p50:.3f} ms, loaded {loaded_p50:.3f} ms, ratio {loaded_p50 / idle_p50:.2f}")
    (t0, sent0), (t1, sent1) = sent
    print(f"the saturated line's download ({SATURATED_RATE} B/s line): {load.results['down']}; "
          f"bytes sent on both lines while the loaded rounds ran: {(sent1 - sent0) / (t1 - t0):.0f} B/s")
    assert sent1 > sent0
    assert "error" not in down and int(down["bytes"]) > 0, load.results["down"]
    assert loaded_p50 <= RTT_FACTOR * idle_p50, (idle, loaded)


async def line_bytes_sent(server: PyslirpProcess) -> tuple[float, int]:
    """(now, the bytes pyslirp's line schedulers have sent on every line so far)."""
    stats = await server.stats()
    return asyncio.get_running_loop().time(), stats["counters"]["scheduler"]["bytes_sent"]


# -- 3. one line cut mid-transfer, the other's transfer completes ----------------------------------

#: the line that is cut: pppd keeps its link through a short outage (LCP echoes, persist), and
#: pyslirp's new client session renegotiates it
CUT_OPTIONS = "persist holdoff 1 maxfail 0 lcp-echo-interval 1 lcp-echo-failure 8"

CUT = script(f"""
result ready 1
rm /run/pyslirp/ppp-up
gate download
wget -q -O /tmp/first http://10.0.0.1:{GATED}/blob &  # the transfer the cut interrupts
FIRST=$!
wait_ppp 120 || {{ result up_again 0; exit 1; }}
result up_again 1
result local_again "$PPP_LOCAL"
# the new link knows nothing of the old link's connection: nothing more arrives on it
kill $FIRST 2>/dev/null; wait $FIRST
result first_download "$? $(sha256sum /tmp/first | cut -d' ' -f1)"
result second_download "$(download http://10.0.0.1:{HTTP}/blob)"
""", options=CUT_OPTIONS)

SPARED = script(f"""
result ready 1
gate download
result download "$(download http://10.0.0.1:{GATED}/blob)"
""")


async def test_a_line_cut_mid_transfer_spares_the_other_and_its_client_gets_an_address_again(
    rig_image, rig_accel
) -> None:
    async with Services() as services:
        config = lines_config(services, [{"name": "cut"}, {"name": "spared"}])
        async with PyslirpProcess(config, debug=False) as server, \
                LineShim(upstream_port=server.ports["cut"]) as shim:
            cut = vm(rig_image, rig_accel, CUT, shim.port, "cut")
            spared = vm(rig_image, rig_accel, SPARED, server.ports["spared"], "spared")
            vms = [cut, spared]
            try:
                await asyncio.gather(*(each.start() for each in vms))
                await wait_all(vms, "ready", timeout=180)
                services.gates.open("download")
                # Both downloads are half way (the service holds the rest back), and the cut line
                # has carried a good part of its half to the guest: cut it.
                await services.held.wait_halves(2, timeout=120)
                for _ in range(600):
                    if shim.stats[DOWN].bytes_out >= 1 << 20:
                        break
                    await asyncio.sleep(0.1)
                carried = shim.stats[DOWN].bytes_out
                await shim.cut(CUT_SECONDS)
                await server.wait_log(r"cut: line hung up", timeout=30)
                services.held.release.set()  # the spared line's download carries on to its end
                cut_res, spared_res = [await each.wait() for each in vms]
            finally:
                await kill_all(vms)
            after = await hung_up(server)
            alive = server.returncode is None  # pyslirp lived through the cut
    cut_res.check()
    spared_res.check()
    links = links_logged(server)
    print(f"cut after {carried} bytes to the guest; links: {links}; "
          f"first download on the cut line: {cut_res.results['first_download']}")
    assert carried >= 1 << 20 and shim.cuts == 1
    assert spared_res.results["download"] == f"0 {sha(BLOB)}", spared_res.results
    # the cut line's transfer did not survive the cut (it really was mid-transfer) ...
    assert cut_res.results["first_download"] != f"0 {sha(BLOB)}", cut_res.results
    # ... its client renegotiated on pyslirp's new session and got an address from the pool again
    first, again, other = cut_res.results["local"], cut_res.results["local_again"], spared_res.results["local"]
    assert cut_res.results["up_again"] == "1"
    assert in_pool(first) and in_pool(again) and again != other, (first, again, other)
    assert again == first, (first, again)  # returned at the cut: the lowest free address again
    assert [label for label, _ in links].count("cut") == 2, links
    assert [label for label, _ in links].count("spared") == 1, links
    assert ("cut", again) in links, links
    assert cut_res.results["second_download"] == f"0 {sha(BLOB)}", cut_res.results
    assert alive
    assert clients_seen(after) == {}, after["lines"]
