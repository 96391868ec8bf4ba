"""A deterministic discrete-event simulated network for TCP tests.

``Simulator`` keeps a simulated clock and a heap of scheduled events; endpoints register as
timer sources (anything with ``next_deadline()``/``handle_timer(now)``), and ``run`` advances
the clock to whichever comes first: the next scheduled event or the next endpoint deadline.
Everything random draws from one seeded ``random.Random``, so a run is reproducible.

``SimLink`` is one direction of a link: a bounded FIFO (tail drop) in front of a serializer
of ``bandwidth`` bytes/s, then ``delay`` seconds of propagation. Each packet that leaves the
serializer may be lost, delayed by up to ``reorder_delay`` extra (reordering), or duplicated.
Drops are counted, split into packets that carried TCP payload or not.

``TCPEndpoint`` joins a ``pyslirp.net.tcp.TCPConnection`` to a link: it parses what arrives
(checksum verified), hands it to the connection (creating the connection from a SYN and
accepting it when passive), sends what the connection emits, runs the connection's timers,
and calls an application hook after every step.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Callable, Optional

from pyslirp.net.tcp import TCPConnection
from pyslirp.net.tcp_segment import parse_segment
from pyslirp.net.tcp_types import TCPConfig, is_connection_request


@dataclass
class LinkConfig:
    bandwidth: Optional[float] = None   # bytes per second; None: infinitely fast
    delay: float = 0.0                  # one-way propagation delay (s)
    queue_limit: int = 1_000_000        # packets waiting for the serializer (tail drop)
    loss: float = 0.0                   # probability a packet is lost on the wire
    duplicate: float = 0.0              # probability a packet is delivered twice
    reorder: float = 0.0                # probability a packet is delayed extra
    reorder_delay: float = 0.0          # max extra delay of a reordered packet (s)
    overhead: int = 20 + 8              # bytes added per packet (IPv4 + PPP/HDLC framing)


class Simulator:
    """Simulated clock, event heap and timer sources."""

    def __init__(self, seed: int = 1) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self._heap: list = []
        self._seq = 0
        self.timer_sources: list = []
        self.steps = 0

    def schedule(self, t: float, fn: Callable, *args) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, args))

    def run(self, until: float = float("inf"), stop: Optional[Callable[[], bool]] = None,
            max_steps: int = 10_000_000) -> None:
        heap = self._heap
        sources = self.timer_sources
        while self.steps < max_steps:
            if stop is not None and stop():
                return
            t_ev = heap[0][0] if heap else None
            src = None
            t_src = None
            for s in sources:
                d = s.next_deadline()
                if d is not None and (t_src is None or d < t_src):
                    t_src, src = d, s
            if t_ev is None and t_src is None:
                return
            if t_src is not None and (t_ev is None or t_src < t_ev):
                if t_src > until:
                    self.now = until
                    return
                if t_src > self.now:
                    self.now = t_src
                self.steps += 1
                src.handle_timer(self.now)
            else:
                if t_ev > until:
                    self.now = until
                    return
                t, _, fn, args = heapq.heappop(heap)
                if t > self.now:
                    self.now = t
                self.steps += 1
                fn(*args)


class SimLink:
    """One direction of a link with bandwidth, bounded queue, loss, reordering,
    duplication and delay."""

    def __init__(self, sim: Simulator, config: LinkConfig,
                 deliver: Optional[Callable[[bytes], None]] = None) -> None:
        self.sim = sim
        self.cfg = config
        self.deliver = deliver
        self._busy_until = 0.0
        self._departures: list = []      # serializer finish times of queued packets (FIFO)
        self._dhead = 0
        self.sent = 0
        self.delivered = 0
        self.lost = 0
        self.lost_data = 0
        self.tail_drops = 0
        self.tail_drops_data = 0
        self.duplicated = 0
        self.reordered = 0
        self.max_queue = 0

    @property
    def dropped_data(self) -> int:
        """Packets carrying TCP payload that the link dropped (loss + tail drop)."""
        return self.lost_data + self.tail_drops_data

    def send(self, data: bytes) -> None:
        sim = self.sim
        cfg = self.cfg
        now = sim.now
        rng = sim.rng
        self.sent += 1
        has_data = _has_payload(data)
        if cfg.bandwidth is not None:
            dep = self._departures
            h = self._dhead
            while h < len(dep) and dep[h] <= now:
                h += 1
            if h > 1024:
                del dep[:h]
                h = 0
            self._dhead = h
            q = len(dep) - h
            if q >= cfg.queue_limit:
                self.tail_drops += 1
                self.tail_drops_data += has_data
                return
            if q + 1 > self.max_queue:
                self.max_queue = q + 1
            start = self._busy_until if self._busy_until > now else now
            done = start + (len(data) + cfg.overhead) / cfg.bandwidth
            self._busy_until = done
            dep.append(done)
        else:
            done = now
        if cfg.loss and rng.random() < cfg.loss:
            self.lost += 1
            self.lost_data += has_data
            return
        arrive = done + cfg.delay
        if cfg.reorder and rng.random() < cfg.reorder:
            arrive += rng.random() * cfg.reorder_delay
            self.reordered += 1
        sim.schedule(arrive, self._arrive, data)
        if cfg.duplicate and rng.random() < cfg.duplicate:
            self.duplicated += 1
            sim.schedule(arrive + rng.random() * 0.002, self._arrive, data)

    def _arrive(self, data: bytes) -> None:
        self.delivered += 1
        if self.deliver is not None:
            self.deliver(data)


def _has_payload(tcp: bytes) -> int:
    return 1 if len(tcp) > ((tcp[12] >> 4) << 2) else 0


class TCPEndpoint:
    """A host with one TCP connection on a simulated link."""

    def __init__(self, sim: Simulator, addr: bytes, port: int, config: TCPConfig,
                 iss: int, app: Optional[Callable[["TCPEndpoint"], None]] = None) -> None:
        self.sim = sim
        self.addr = addr
        self.port = port
        self.config = config
        self.iss = iss
        self.app = app
        self.conn: Optional[TCPConnection] = None
        self.link: Optional[SimLink] = None       # outgoing
        self.peer_addr: bytes = b""
        self.events: list = []
        self.counters: dict = {}
        self.segments_in = 0
        self.auto_accept = True
        sim.timer_sources.append(self)

    # wiring
    def connect_to(self, peer: "TCPEndpoint") -> None:
        """Active open toward ``peer``."""
        self.peer_addr = peer.addr
        self.conn = TCPConnection(self.addr, self.port, peer.addr, peer.port, iss=self.iss,
                                  config=self.config, now=self.sim.now,
                                  counters=self.counters)
        self.conn.connect(self.sim.now)
        self.flush()

    def receive(self, data: bytes) -> None:
        now = self.sim.now
        self.segments_in += 1
        seg = parse_segment(data, self.peer_addr, self.addr, self.counters)
        if seg is None:
            return
        if self.conn is None:
            if not is_connection_request(seg):
                return
            self.conn = TCPConnection.from_syn(seg, self.addr, self.peer_addr, iss=self.iss,
                                               config=self.config, now=now,
                                               counters=self.counters)
            if self.auto_accept:
                self.conn.accept(now)
        else:
            self.conn.receive_segment(seg, now)
        self.flush()

    def flush(self) -> None:
        conn = self.conn
        if conn is None:
            return
        evs = conn.events()
        if evs:
            self.events.extend(evs)
        if self.app is not None:
            self.app(self)
        out = conn.take_segments()
        if out:
            link = self.link
            for o in out:
                link.send(o.data)
        evs = conn.events()
        if evs:
            self.events.extend(evs)

    # timer source protocol
    def next_deadline(self) -> Optional[float]:
        return self.conn.next_deadline() if self.conn is not None else None

    def handle_timer(self, now: float) -> None:
        self.conn.handle_timer(now)
        self.flush()


def make_pair(sim: Simulator, link_ab: LinkConfig, link_ba: LinkConfig,
              config_a: Optional[TCPConfig] = None, config_b: Optional[TCPConfig] = None,
              app_a=None, app_b=None, iss_a: int = 1000, iss_b: int = 5000):
    """Endpoints A (10.0.0.1:40000, active) and B (10.0.0.2:80, passive) joined by two
    links; nothing is sent until ``a.connect_to(b)``."""
    a = TCPEndpoint(sim, bytes([10, 0, 0, 1]), 40000, config_a or TCPConfig(), iss_a, app_a)
    b = TCPEndpoint(sim, bytes([10, 0, 0, 2]), 80, config_b or TCPConfig(), iss_b, app_b)
    a.peer_addr = b.addr
    b.peer_addr = a.addr
    a.link = SimLink(sim, link_ab, b.receive)
    b.link = SimLink(sim, link_ba, a.receive)
    return a, b


class BulkSender:
    """Application writing ``data`` as fast as the send buffer allows, then half-closing."""

    def __init__(self, data: bytes, close: bool = True) -> None:
        self.data = memoryview(data)
        self.off = 0
        self.close = close
        self.closed = False
        self.max_buffered = 0

    def __call__(self, ep: TCPEndpoint) -> None:
        conn = ep.conn
        if conn.state.name not in ("ESTABLISHED", "CLOSE_WAIT"):
            return
        while self.off < len(self.data):
            n = conn.send(self.data[self.off:self.off + 65536], ep.sim.now)
            self.off += n
            if n == 0:
                break
        if conn.send_buffered > self.max_buffered:
            self.max_buffered = conn.send_buffered
        if self.off >= len(self.data) and self.close and not self.closed:
            self.closed = True
            conn.shutdown_write(ep.sim.now)


class Sink:
    """Application reading everything (or at most ``rate`` bytes/s, in ``chunk`` pieces every
    chunk/rate seconds), half-closing after the peer's FIN."""

    def __init__(self, rate: Optional[float] = None, chunk: int = 4096) -> None:
        self.rate = rate
        self.chunk = chunk
        self.parts: list = []
        self.received = 0
        self.max_buffered = 0
        self.closed = False
        self._ticking = False

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)

    def __call__(self, ep: TCPEndpoint) -> None:
        conn = ep.conn
        b = conn.rcv_buffered
        if b > self.max_buffered:
            self.max_buffered = b
        if self.rate is None:
            self._take(ep, -1)
        elif not self._ticking:
            self._ticking = True
            ep.sim.schedule(ep.sim.now + self.chunk / self.rate, self._tick, ep)

    def _tick(self, ep: TCPEndpoint) -> None:
        # _ticking stays True across flush(): the app hook must not schedule a second tick.
        self._take(ep, self.chunk)
        ep.flush()
        if not self.closed and ep.conn.state.name != "CLOSED":
            ep.sim.schedule(ep.sim.now + self.chunk / self.rate, self._tick, ep)
        else:
            self._ticking = False

    def _take(self, ep: TCPEndpoint, n: int) -> None:
        conn = ep.conn
        d = conn.read(n, ep.sim.now)
        if d:
            self.parts.append(d)
            self.received += len(d)
        if conn.at_eof and not self.closed:
            self.closed = True
            conn.shutdown_write(ep.sim.now)


class Wire:
    """A hand-driven peer for unit tests: builds segments from the peer (REMOTE:rport) to
    the connection (LOCAL:lport) and parses, checksum verified, what the connection sends."""

    LOCAL = bytes([10, 0, 0, 1])
    REMOTE = bytes([10, 0, 0, 2])

    def __init__(self, conn=None, lport: int = 80, rport: int = 40000) -> None:
        self.conn = conn
        self.lport = lport
        self.rport = rport
        self.events: list = []

    def seg(self, flags: int, seq: int, ack: int = 0, window: int = 65535,
            payload: bytes = b"", **opts):
        from pyslirp.net.tcp_segment import TCPSegment
        return TCPSegment(self.rport, self.lport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags,
                          window, payload, **opts)

    def feed(self, seg, now: float) -> list:
        self.conn.receive_segment(seg, now)
        return self.out()

    def out(self) -> list:
        res = []
        for o in self.conn.take_segments():
            s = parse_segment(o.data, self.LOCAL, self.REMOTE)
            assert s is not None, "connection emitted a malformed segment"
            assert s.src_port == self.lport and s.dst_port == self.rport
            res.append(s)
        self.events.extend(self.conn.events())
        return res

    def take_events(self) -> list:
        ev = self.events + self.conn.events()
        self.events = []
        return ev
