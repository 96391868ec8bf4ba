"""The whole pyslirp data path in one process, for measuring its cost per frame without a VM.

A scripted pppd (tests/unit/test_ppp_link.py's ``Pppd``) dials a real :class:`Gateway` over an
in-memory line; once IPCP is up, a client TCP connection (our own TCP standing in for Linux's)
sends or receives bulk data through the gateway's HDLC framing, PPP link, VJ compression, stack
and service proxy to a real loopback service, as in production. The client side compresses and
frames its segments as pppd would (VJ, ACFC, PFC, ACCM 0).

Only the gateway's own processing is reported: its per-frame time histograms (the same ones its
stats expose) and the process CPU time, from which the client's share is not separable — so the
figures that matter are the gateway's per-packet times.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "unit"))
from test_ppp_link import Pppd  # noqa: E402

from prometheus_client import generate_latest  # noqa: E402

from pyslirp._core.hdlc import Deframer, encode_frame  # noqa: E402
from pyslirp.config import PyslirpConfig  # noqa: E402
from pyslirp.net import ipv4, tcp, tcp_types  # noqa: E402
from pyslirp.net.tcp_segment import parse_segment  # noqa: E402
from pyslirp.ppp.vj import VJCompressor, VJDecompressor  # noqa: E402
from pyslirp.runtime.counter_registry import CounterRegistry  # noqa: E402
from pyslirp.runtime.gateway import Gateway  # noqa: E402
from pyslirp.runtime.lines import LineSession  # noqa: E402
from pyslirp.runtime.network import LinkNetwork  # noqa: E402
from pyslirp.runtime.observers import FrameTap, Observers  # noqa: E402
from pyslirp.runtime.metrics import EventStats, GatewayCollector, metrics_registry  # noqa: E402
from pyslirp.runtime.security import security_pipeline  # noqa: E402
from pyslirp.runtime.served_line import ServedLine  # noqa: E402
from pyslirp.runtime.status import ServiceProbe  # noqa: E402
from pyslirp.runtime.settings import LineSettings, link_options  # noqa: E402

LOCAL = IPv4Address("10.0.0.1")
SERVICE_PORT = 9


class MemorySession(LineSession):
    """The server's end of an in-memory line; each direction is delivered on the next turn of
    the event loop, as a real line's would be."""

    name = "memory"

    def __init__(self, to_client: Callable[[bytes], None]) -> None:
        self.to_client = to_client
        self._loop = asyncio.get_running_loop()
        self._receive: Callable[[bytes], None] | None = None
        self._done = self._loop.create_future()

    def feed(self, data: bytes) -> None:
        self._loop.call_soon(self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        assert self._receive is not None, "the gateway pumps before the first delivery"
        self._receive(data)

    async def pump(self, receive: Callable[[bytes], None]) -> None:
        self._receive = receive
        await self._done

    async def read(self) -> bytes:
        raise NotImplementedError

    def try_write(self, data: bytes) -> int:
        self._loop.call_soon(self.to_client, data)
        return len(data)

    async def write(self, data: bytes) -> None:
        self._loop.call_soon(self.to_client, data)

    def close(self) -> None:
        if not self._done.done():
            self._done.set_result(None)


@dataclass
class Result:
    bytes_moved: int
    seconds: float
    cpu_seconds: float
    frames_in: int
    frames_out: int
    rx: dict
    tx: dict


class DataPath:
    """A gateway with a scripted client dialled in; :meth:`upload`/:meth:`download` move data."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.client_bytes = bytearray()
        self.deframer = Deframer(accm=0, max_frame=4096)
        self.ppp = Pppd()
        self.vj_out = VJCompressor(max_slot_id=15, compress_slot_id=True)
        self.vj_in = VJDecompressor(max_slot_id=15, compress_slot_id=True)
        self._ident = itertools.count(1)
        self._ports = itertools.cycle(range(32768, 61000))
        self.conns: dict[int, tcp.TCPConnection] = {}  # by the client's port
        self.service_port = SERVICE_PORT  # the port at 10.0.0.1 the client's connections go to
        self.ready = asyncio.Event()
        self._kick = asyncio.Event()

    async def start(self, service_port: int, observers: Observers | None = None,
                    taps: Sequence[FrameTap] = (), **sections: Any) -> None:
        """Dial in; ``sections`` are further configuration sections (``security={...}``)."""
        config = PyslirpConfig(services={SERVICE_PORT: {"host": "127.0.0.1", "port": service_port}},
                               dns={"enabled": False}, ppp={"keepalive": {"interval": 0}}, **sections)
        loop = asyncio.get_running_loop()
        security = security_pipeline(config, clock=loop.time, schedule=loop.call_later)

        self.session = MemorySession(self._from_server)
        observer = observers if observers is not None else Observers()
        if security.guard is not None:
            observer.subscribe(security.guard)
        self.registry = registry = CounterRegistry()
        self.gateway = Gateway(
            self.session, link_options(config),
            lambda up, wake: LinkNetwork(
                config, up, wake, line=self.session.name, observer=observer, registry=registry,
                checks=security.checks, extension=security.extension,
            ),
            observers=observer,
            registry=registry,
        )
        for tap in taps:
            self.gateway.attach_tap(tap)
        self.task = asyncio.ensure_future(self.gateway.run())
        await asyncio.sleep(0)
        self.ppp.start()
        self._send_ppp()
        while not self.ppp.ipcp_open or self.gateway.network is None:
            await asyncio.sleep(0.001)
            self._send_ppp()
        self._client_task = asyncio.ensure_future(self._client_timers())

    # -- the client side -----------------------------------------------------------------------

    def _from_server(self, data: bytes) -> None:
        for frame in self.deframer.feed(data):
            i = 2 if frame[:2] == b"\xff\x03" else 0
            if frame[i] & 1:
                protocol, payload = frame[i], frame[i + 1:]
            else:
                protocol, payload = int.from_bytes(frame[i:i + 2], "big"), frame[i + 2:]
            if protocol in (0x21, 0x2D, 0x2F):
                packet = payload if protocol == 0x21 else self.vj_in.decompress(protocol, payload)
                if packet is not None:
                    header = ipv4.parse(packet)
                    seg = parse_segment(packet[header.header_length:], LOCAL.packed, self.ppp.ip)
                    conn = self.conns.get(seg.dst_port) if seg is not None else None
                    if conn is not None:
                        conn.receive_segment(seg, self.loop.time())
                        self._kick.set()
            else:
                self.ppp.receive(frame, 0)
        self._send_ppp()

    def _send_ppp(self) -> None:
        for frame in self.ppp.take():
            self.session.feed(encode_frame(frame, 0xFFFFFFFF))

    def flush_client(self) -> None:
        """Send what the client's connections produced, framed as pppd would."""
        for segment in [s for conn in self.conns.values() for s in conn.take_segments()]:
            packet = ipv4.build(self.ppp.ip, LOCAL.packed, ipv4.PROTO_TCP, segment.data, next(self._ident) & 0xFFFF)
            protocol, payload = self.vj_out.compress(packet)
            # One frame per read, as a virtio console delivers them.
            self.session.feed(encode_frame(bytes((protocol,)) + payload, 0))

    async def _client_timers(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            now = self.loop.time()
            for port, conn in list(self.conns.items()):
                deadline = conn.next_deadline()
                if deadline is not None and deadline <= now:
                    conn.handle_timer(now)
                if conn.state == tcp_types.CLOSED:
                    del self.conns[port]
            self.flush_client()

    def connect(self) -> tcp.TCPConnection:
        port = next(self._ports)
        conn = tcp.TCPConnection(self.ppp.ip, port, LOCAL.packed, self.service_port,
                                 iss=port * 7919, config=tcp_types.TCPConfig(mss=1460), now=self.loop.time())
        self.conns[port] = conn
        conn.connect(self.loop.time())
        self.flush_client()
        return conn

    async def exchange(self, message: bytes, close: bool = True) -> tcp.TCPConnection:
        """Connect to the service, send ``message`` and read as many bytes back (an echo
        service), then close unless told not to; the client's connection."""
        conn = self.connect()
        while conn.state != tcp_types.ESTABLISHED:
            await asyncio.sleep(0.001)
        conn.send(message, self.loop.time())
        self.flush_client()
        echoed = bytearray()
        while len(echoed) < len(message):
            echoed += conn.read(-1, self.loop.time())
            self.flush_client()
            await asyncio.sleep(0.001)
        if bytes(echoed) != message:
            raise AssertionError(f"echoed {bytes(echoed)!r}, sent {message!r}")
        if close:
            conn.close(self.loop.time())
            self.flush_client()
        return conn

    async def close(self) -> None:
        self._client_task.cancel()
        self.session.close()
        await asyncio.wait_for(self.task, 5)


class _SocketLine:
    """The client's end of a line that is a TCP socket: what :class:`DataPath` feeds goes out on it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def feed(self, data: bytes) -> None:
        self.transport.write(data)


class _LineClient(asyncio.Protocol):
    def __init__(self, path: DataPath) -> None:
        self.path = path

    def data_received(self, data: bytes) -> None:
        self.path._from_server(data)


async def dial(
    port: int, service_port: int = SERVICE_PORT, timeout: float = 30.0, **pppd: Any
) -> tuple[DataPath, asyncio.Transport]:
    """A scripted pppd (``Pppd(**pppd)``: ``user=..., password=...`` to log in) on a server's
    ``tcp-listen`` line at 127.0.0.1:``port``, with IPCP up; its connections go to our
    ``service_port``. Close the transport to hang up."""
    loop = asyncio.get_running_loop()
    path = DataPath()
    if pppd:
        path.ppp = Pppd(**pppd)
    path.service_port = service_port
    transport, _ = await loop.create_connection(lambda: _LineClient(path), "127.0.0.1", port)
    path.session = _SocketLine(transport)  # type: ignore[assignment]
    path.ppp.start()
    path._send_ppp()
    deadline = loop.time() + timeout
    while not path.ppp.ipcp_open:
        if loop.time() > deadline:
            transport.close()
            raise TimeoutError("the link did not come up")
        await asyncio.sleep(0.01)
    path._client_task = asyncio.ensure_future(path._client_timers())
    return path, transport


class NullTap:
    """A frame tap that does nothing: what attaching one costs the data path."""

    def frame(self, direction: object, frame: bytes, now: float) -> None:
        pass


class MemoryLine:
    """What a :class:`ServedLine` shows of the data path's in-memory line."""

    def describe(self) -> str:
        return "in-memory line"


def served_line(gateway: Gateway | None, config: PyslirpConfig) -> ServedLine:
    """The data path's one line as the server holds it (``Server.lines``): named as its session,
    with ``gateway`` (if any) the client on it; what the metrics' ``line`` label takes."""
    served = ServedLine(LineSettings(MemorySession.name, config), MemoryLine())  # type: ignore[arg-type]
    if gateway is not None:
        served.gateways[served.name] = gateway
    return served


class MonitoredView:
    """What the metrics collector reads of a server (``runtime.status.GatewayView``), around the
    data path's gateway: the monitoring benchmark scrapes it while data moves."""

    def __init__(self, path: DataPath) -> None:
        self.path = path
        self.config = PyslirpConfig()
        self.registry = path.registry
        self.probe = ServiceProbe({})
        self.breakers = None
        self.started = time.time()
        self.metrics_serving = True

    @property
    def lines(self) -> list[ServedLine]:
        return [served_line(self.path.gateway, self.config)]

    def line_description(self) -> str:
        return "in-memory line"

    def session(self) -> Gateway:
        return self.path.gateway


async def scrape_every(interval: float, path: DataPath, stats: EventStats) -> None:
    """Render /metrics every ``interval`` seconds, as Prometheus would (typically every 15 s)."""
    registry = metrics_registry(GatewayCollector(MonitoredView(path), stats))
    while True:
        await asyncio.sleep(interval)
        generate_latest(registry)


async def run(direction: str, size: int, taps: Sequence[FrameTap] = (), scrape: float | None = None) -> Result:
    """Move ``size`` bytes up (client -> service) or down (service -> client). ``scrape``: the
    metrics observer is subscribed and /metrics rendered every ``scrape`` seconds meanwhile."""
    loop = asyncio.get_running_loop()
    received = 0
    done = loop.create_future()

    class Service(asyncio.Protocol):
        def connection_made(self, transport):  # type: ignore[override]
            self.transport = transport
            if direction == "down":
                transport.write(b"\x5a" * size)
                transport.write_eof()

        def data_received(self, data: bytes) -> None:
            nonlocal received
            received += len(data)
            if received >= size and not done.done():
                done.set_result(None)

    server = await loop.create_server(Service, "127.0.0.1", 0)
    path = DataPath()
    stats = EventStats()
    await path.start(server.sockets[0].getsockname()[1], taps=taps,
                     observers=Observers(stats) if scrape is not None else None)
    scraper = asyncio.ensure_future(scrape_every(scrape, path, stats)) if scrape is not None else None
    conn = path.connect()
    while conn.state != tcp_types.ESTABLISHED:
        await asyncio.sleep(0.0005)
    registry = path.gateway.registry
    frames0 = registry.totals("deframer")["frames_ok"], registry.totals("scheduler")["frames_sent"]
    cpu0, t0 = time.process_time(), time.perf_counter()
    if direction == "up":
        sent = 0
        chunk = b"\xa5" * 65536
        while not done.done():
            while sent < size:
                n = conn.send(chunk[: min(65536, size - sent)], loop.time())
                if not n:
                    break
                sent += n
            path.flush_client()
            await asyncio.sleep(0)
    else:
        got = 0
        while got < size:
            data = conn.read(1 << 20, loop.time())
            got += len(data)
            path.flush_client()
            await asyncio.sleep(0)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    frames_in = registry.totals("deframer")["frames_ok"] - frames0[0]
    frames_out = registry.totals("scheduler")["frames_sent"] - frames0[1]
    processing = path.gateway.stats()["processing"]
    if scraper is not None:
        scraper.cancel()
    await path.close()
    server.close()
    return Result(size, seconds, cpu, frames_in, frames_out,
                  processing["rx_frame"], processing["tx_datagram"])  # type: ignore[index]
