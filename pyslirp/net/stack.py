"""The network stack: validates IPv4 datagrams from the link and hands them to ICMP, UDP or TCP.

Sans-IO: :meth:`Stack.receive` takes a datagram and ``now``; :meth:`Stack.take_output` returns the
datagrams to send, each marked interactive or bulk for the line scheduler. Every datagram we
discard is counted in :attr:`Stack.counters` under its reason (keys: :data:`STACK_COUNTERS`).

Addresses: we answer for ``local_ip`` (pyslirp's end of the link). A SYN to any other address is
a :class:`ConnectionRequest` too, carrying its destination: the runtime routes it or refuses it
(RST from that address, as a router with no route would answer, RFC 1812 §5.2.7.1). Other
traffic to other addresses gets what such a router sends (RFC 1812 §4.3.3.1, §5.2.7.1).
"""

from __future__ import annotations

import itertools
import os
import struct
from dataclasses import dataclass
from heapq import heappop, heappush
from ipaddress import IPv4Address, IPv4Network
from typing import Callable, Sequence, Union

from pyslirp._core.reassembly import FragmentReassembler
from pyslirp.counters import CounterSet, CounterSpec, Counts
from pyslirp.net import icmp, ipv4, udp
from pyslirp.net.ipv4 import IPv4Error
from pyslirp.net.line_budget import LineBudget
from pyslirp.net.tcp import TCPConnection
from pyslirp.net.tcp_types import (
    TIME_WAIT,
    Closed,
    TCPConfig,
    TCPEvent,
    is_connection_request,
    isn_keyed,
    isn_prf,
    reset_for_segment,
)
from pyslirp.net.tcp_receive import ReassemblyPool
from pyslirp.net.tcp_segment import parse_segment

PROTO_TCP = ipv4.PROTO_TCP
TTL = ipv4.DEFAULT_TTL
FRAGMENT_BYTES = 256 * 1024
REASSEMBLY_BYTES = 4 * 1024 * 1024
#: ICMP errors we send (unreachables) a second, and at once (RFC 1812 §4.3.2.8: rate-limit them):
#: a port scan must not turn into as many errors on a slow line.
ICMP_ERROR_RATE = 10.0
ICMP_ERROR_BURST = 20
#: the ICMP error (type, code) each of the runtime's answers to a SYN stands for
_ICMP_ANSWERS = {
    "net_unreachable": (icmp.DEST_UNREACHABLE, icmp.NET_UNREACHABLE),
    "host_unreachable": (icmp.DEST_UNREACHABLE, icmp.HOST_UNREACHABLE),
    "ttl_expired": (icmp.TIME_EXCEEDED, icmp.TTL_EXCEEDED_IN_TRANSIT),
}
FRAGMENT_TIMEOUT = 30.0  # RFC 1122 §3.3.2 recommends 60-120 s; a serial line needs less
IP_TCP_HEADERS = 40

IP_DROP = CounterSpec(
    "ip_drop", "datagrams from the client dropped, by reason",
    reasons=(*ipv4.PARSE_ERRORS, "no_route", "protocol_unreachable", "spoofed_source"),
)
ICMP_DROP = CounterSpec("icmp_drop", "ICMP echo requests dropped, by reason", reasons=icmp.PARSE_ERRORS)
UDP_DROP = CounterSpec(
    "udp_drop", "UDP datagrams dropped, by reason", reasons=(*udp.PARSE_ERRORS, "port_unreachable")
)
IP_OUT_DROP = CounterSpec("ip_out_drop", "datagrams to the client we could not send", reasons=ipv4.FRAGMENT_ERRORS)
STACK_COUNTERS = CounterSet("stack", [
    CounterSpec("ip_in", "datagrams from the client accepted"),
    IP_DROP,
    CounterSpec("icmp_echo", "ICMP echo requests answered"),
    CounterSpec("icmp_ignored", "ICMP messages other than echo requests, ignored"),
    ICMP_DROP,
    CounterSpec("icmp_errors_sent", "ICMP errors (destination unreachable) sent to the client"),
    CounterSpec("icmp_errors_ratelimited", "ICMP errors not sent: more than ICMP_ERROR_RATE a second"),
    CounterSpec("tcp_drop", "TCP segments dropped before reaching a connection", reasons=("malformed",)),
    CounterSpec("tcp_rst_no_connection", "TCP segments for no connection, answered with RST"),
    CounterSpec("tcp_refused_table_full", "SYNs refused because the connection table is full"),
    CounterSpec("udp_in", "UDP datagrams for a relayed port"),
    CounterSpec("udp_out", "UDP datagrams sent to the client"),
    UDP_DROP,
    IP_OUT_DROP,
])


class ConnectionRequest:
    """A SYN for a new connection to ``address:port`` (``address`` packed, ours or another):
    ``accept`` or ``refuse`` it (admission). Every connection makes one: compiled, a C class
    with read-only fields (stack.pxd)."""

    __slots__ = ("conn", "address", "port")

    def __init__(self, conn: TCPConnection, address: bytes, port: int) -> None:
        self.conn = conn
        self.address = address
        self.port = port

    def __repr__(self) -> str:
        return f"ConnectionRequest({self.conn!r}, {self.address!r}, {self.port})"


class ConnectionEvent:
    """Something happened on an open connection: a C class with read-only fields, compiled
    (several per connection)."""

    __slots__ = ("conn", "event")

    def __init__(self, conn: TCPConnection, event: TCPEvent) -> None:
        self.conn = conn
        self.event = event

    def __repr__(self) -> str:
        return f"ConnectionEvent({self.conn!r}, {self.event!r})"


@dataclass(frozen=True, slots=True)
class UDPDatagram:
    """A UDP datagram for one of the ports we serve, or (with ``udp_outbound``) for another
    address, ``dst``; ``packet`` is the whole IP datagram (for an ICMP error quoting it,
    :meth:`Stack.refuse_udp`)."""

    src: bytes
    src_port: int
    dst_port: int
    payload: bytes
    packet: bytes
    #: the destination when it is not our address (an outbound flow), else None
    dst: bytes | None = None


StackEvent = Union[ConnectionRequest, ConnectionEvent, UDPDatagram]


def _key(conn: TCPConnection) -> tuple[bytes, int, bytes, int]:
    """The connection table's key: (remote address, remote port, local address, local port)."""
    return (conn.remote_addr, conn.remote_port, conn.local_addr, conn.local_port)


class Stack:
    """One link's network layer.

    ``mtu`` is the largest datagram the client takes (its MRU); ``wake`` is called when
    something outside :meth:`receive`/:meth:`handle_timer` (the proxy calling a connection)
    produced output, so the gateway flushes it.
    """

    def __init__(
        self,
        local_ip: IPv4Address,
        peer_ip: IPv4Address,
        mtu: int,
        *,
        tcp_config: TCPConfig | None = None,
        max_connections: int = 16384,
        udp_ports: frozenset[int] = frozenset(),
        wake: Callable[[], None] = lambda: None,
        line_budget: bool = False,
        allowed_sources: Sequence[IPv4Network] = (),
        reassembly_bytes: int = REASSEMBLY_BYTES,
    ) -> None:
        self.local = local_ip.packed
        self.peer = peer_ip.packed
        self.allowed_sources = ()
        self.allow_sources(allowed_sources)
        self.mtu = mtu
        self.tcp_config = tcp_config or TCPConfig(mss=mtu - IP_TCP_HEADERS)
        self.max_connections = max_connections
        self.udp_ports = udp_ports
        #: UDP to other addresses is handed up (outbound UDP is on), not answered net unreachable
        self.udp_outbound = False
        self.wake = wake
        self.counters: Counts[str] = Counts()
        self.tcp_counters: Counts[str] = Counts()
        self._fragments = FragmentReassembler(FRAGMENT_BYTES, FRAGMENT_TIMEOUT)
        #: out-of-order TCP octets held by all the connections together, and their bound
        self.reassembly = ReassemblyPool(reassembly_bytes)
        self._output: list[tuple[bytes, bool]] = []
        self._events: list[StackEvent] = []
        self._ident = 0
        self._isn_secret = os.urandom(16)
        self._isn_prf = isn_prf(self._isn_secret)
        #: (remote address, remote port, local address, local port) -> connection
        self.connections: dict[tuple[bytes, int, bytes, int], TCPConnection] = {}
        self._dirty: dict[TCPConnection, None] = {}
        self._timers: list[tuple[float, int, TCPConnection]] = []
        self._timer_seq = 0  # ties in _timers are broken by the order of scheduling
        self._scheduled: dict[TCPConnection, float] = {}
        #: every connection's on_change hook: one bound method, not one per connection
        self._on_change = self.changed
        self._ephemeral = itertools.cycle(range(49152, 65536))
        #: bulk bytes in flight, shared by every connection (None: unbounded, as in unit tests)
        self.budget: LineBudget | None = LineBudget(self.tcp_config.mss) if line_budget else None
        self._now = 0.0
        self._icmp_tokens = float(ICMP_ERROR_BURST)
        self._icmp_updated = 0.0

    # -- input ---------------------------------------------------------------------------------

    def receive(self, packet: bytes, now: float) -> None:
        """Process one datagram from the link."""
        self._now = now
        try:
            header = ipv4.parse(packet)
        except IPv4Error as exc:
            self.counters[IP_DROP.key(exc.reason)] += 1
            return
        if header.src != self.peer and not self._source_allowed(header.src):
            self.counters["ip_drop_spoofed_source"] += 1  # anti-spoofing (RFC 2827 ingress filtering)
            return
        self.counters["ip_in"] += 1
        if header.is_fragment:
            whole = self._fragments.add(packet[: header.header_length], packet[header.header_length : header.total_length], now)
            if whole is None:
                return
            packet = whole
            header = ipv4.parse(packet)
        payload = packet[header.header_length : header.total_length]
        if header.protocol == PROTO_TCP:
            self._tcp(header, packet, payload, now)
        elif header.dst != self.local:
            if header.protocol == ipv4.PROTO_UDP and self.udp_outbound:
                self._udp(header, packet, payload, now)
            else:
                self._no_route(header, packet, payload)
        elif header.protocol == ipv4.PROTO_ICMP:
            self._icmp(header, payload)
        elif header.protocol == ipv4.PROTO_UDP:
            self._udp(header, packet, payload, now)
        else:
            self.counters["ip_drop_protocol_unreachable"] += 1
            self._send_unreachable(icmp.PROTOCOL_UNREACHABLE, header, packet)

    def allow_sources(self, networks: Sequence[IPv4Network]) -> None:
        """Networks the client routes (a LAN behind it): sources accepted besides its own address."""
        self.allowed_sources = tuple((int(net.network_address), int(net.netmask)) for net in networks)

    def _source_allowed(self, source: bytes) -> bool:
        address = int.from_bytes(source, "big")
        return any(address & mask == network for network, mask in self.allowed_sources)

    def _icmp(self, header: ipv4.IPv4Header, payload: bytes) -> None:
        if not payload or payload[0] != icmp.ECHO_REQUEST:
            self.counters["icmp_ignored"] += 1
            return
        try:
            reply = icmp.echo_reply(payload)
        except icmp.ICMPError as exc:
            self.counters[ICMP_DROP.key(exc.reason)] += 1
            return
        self.counters["icmp_echo"] += 1
        self._emit(header.src, ipv4.PROTO_ICMP, reply, interactive=True)

    def _tcp(self, header: ipv4.IPv4Header, packet: bytes, payload: bytes, now: float) -> None:
        seg = parse_segment(payload, header.src, header.dst, counters=self.tcp_counters)
        if seg is None:
            self.counters["tcp_drop_malformed"] += 1
            return
        key = (header.src, seg.src_port, header.dst, seg.dst_port)
        conn = self.connections.get(key)
        if conn is not None and conn.state is TIME_WAIT and conn.accepts_new_syn(seg):
            # RFC 9293 §3.6.1: a new incarnation of the connection out of TIME-WAIT.
            self._forget(key, conn)
            conn = None
        if conn is not None:
            conn.receive_segment(seg, now)
            self._dirty[conn] = None
            return
        if not is_connection_request(seg):
            # RFC 9293 §3.10.7.1: no connection — answer with a reset (none to a reset).
            self.counters["tcp_rst_no_connection"] += 1
            self._emit_tcp_reset(seg, header)
            return
        if len(self.connections) >= self.max_connections:
            self.counters["tcp_refused_table_full"] += 1
            self._emit_tcp_reset(seg, header)
            return
        # A held connection keeps its addresses and key: share the link's own address objects
        # rather than keep this packet's copies.
        local = self.local if header.dst == self.local else header.dst
        remote = self.peer if header.src == self.peer else header.src
        iss = isn_keyed(self._isn_prf, (local, seg.dst_port), (remote, seg.src_port), now)
        conn = TCPConnection.from_syn(
            seg, local, remote, iss=iss, config=self.tcp_config, now=now, counters=self.tcp_counters
        )
        conn.budget = self.budget
        conn.receiver.pool = self.reassembly
        conn.on_change = self._on_change
        self.connections[(remote, seg.src_port, local, seg.dst_port)] = conn
        self._events.append(ConnectionRequest(conn, header.dst, seg.dst_port))

    def _emit_tcp_reset(self, seg, header: ipv4.IPv4Header) -> None:
        reset = reset_for_segment(seg, header.dst, header.src)
        if reset is not None:
            self._emit(header.src, ipv4.PROTO_TCP, reset, interactive=True, source=header.dst)

    def _udp(self, header: ipv4.IPv4Header, packet: bytes, payload: bytes, now: float) -> None:
        try:
            sport, dport, data = udp.parse(header.src, header.dst, payload)
        except udp.UDPError as exc:
            self.counters[UDP_DROP.key(exc.reason)] += 1
            return
        outbound = header.dst != self.local
        if not outbound and dport not in self.udp_ports:
            self.counters["udp_drop_port_unreachable"] += 1
            self._send_unreachable(icmp.PORT_UNREACHABLE, header, packet)
            return
        self.counters["udp_in"] += 1
        self._events.append(UDPDatagram(header.src, sport, dport, data, packet, header.dst if outbound else None))

    def _no_route(self, header: ipv4.IPv4Header, packet: bytes, payload: bytes) -> None:
        """What a router with no route sends (RFC 1812 §5.2.7): net unreachable (TCP is routed
        or refused by the runtime, see ConnectionRequest)."""
        self.counters["ip_drop_no_route"] += 1
        if header.protocol == ipv4.PROTO_ICMP and icmp.is_error(payload):
            return
        self._send_unreachable(icmp.NET_UNREACHABLE, header, packet, source=self.local)

    # -- the application side ------------------------------------------------------------------

    def changed(self, conn: TCPConnection) -> None:
        """The application called ``conn`` (send, read, accept, close...): collect its output.
        Every connection calls it itself, through its ``on_change`` hook."""
        if conn not in self._dirty:
            self._dirty[conn] = None
            self.wake()

    def open_connection(self, port: int, now: float) -> TCPConnection:
        """Active open to the client's ``port`` (reverse forwards)."""
        for _ in range(16384):
            local_port = next(self._ephemeral)
            key = (self.peer, port, self.local, local_port)
            if key not in self.connections:
                break
        else:
            raise RuntimeError("no free local port")
        iss = isn_keyed(self._isn_prf, (self.local, local_port), (self.peer, port), now)
        conn = TCPConnection(
            self.local, local_port, self.peer, port, iss=iss, config=self.tcp_config, now=now,
            counters=self.tcp_counters,
        )
        conn.budget = self.budget
        conn.receiver.pool = self.reassembly
        conn.on_change = self._on_change
        self.connections[key] = conn
        conn.connect(now)
        return conn

    def send_udp(
        self, src_port: int, dst_port: int, payload: bytes, dst: bytes | None = None, source: bytes | None = None
    ) -> None:
        """A UDP datagram from our ``src_port`` to the client (or to ``dst``, a host it routes);
        from ``source`` instead of our address for the reply of an outbound flow."""
        dst = self.peer if dst is None else dst
        source = self.local if source is None else source
        self.counters["udp_out"] += 1
        self._emit(dst, ipv4.PROTO_UDP, udp.build(source, dst, src_port, dst_port, payload), interactive=True,
                   source=source)
        self.wake()

    def refuse_udp(self, datagram: UDPDatagram) -> None:
        """The runtime refused the flow ``datagram`` opens: port unreachable, as for a port we do
        not serve (RFC 1122 §4.1.3.1); for another address, net unreachable from us, as a router
        with no route for it says (RFC 1812 §5.2.7.1)."""
        packet = datagram.packet
        if datagram.dst is None:
            self._send_unreachable(icmp.PORT_UNREACHABLE, ipv4.parse(packet), packet)
        else:
            self._send_unreachable(icmp.NET_UNREACHABLE, ipv4.parse(packet), packet, source=self.local)
        self.wake()

    def refuse_with_icmp(self, conn: TCPConnection, answer: str, now: float) -> None:
        """The runtime could not reach the target of ``conn``'s held SYN, and a router on the
        path said why: pass that on as ours (RFC 1812 §4.3.2) — ``net_unreachable``,
        ``host_unreachable`` or ``ttl_expired`` — instead of a RST. The quote is the SYN's IP
        header and first 8 octets (ports and sequence number), which the client matches."""
        kind, code = _ICMP_ANSWERS[answer]
        syn = conn._syn
        quoted = struct.pack("!HHI", conn.remote_port, conn.local_port, syn.seq)
        packet = ipv4.build(conn.remote_addr, conn.local_addr, PROTO_TCP, quoted, 0, TTL, 0, True)  # DF set
        conn.drop_syn(now)
        self._send_icmp_error(kind, code, ipv4.parse(packet), packet, source=self.local)
        self.wake()

    def events(self) -> list[StackEvent]:
        """Connection requests, connection events and UDP datagrams since the last call."""
        self._collect()
        events, self._events = self._events, []
        return events

    def _collect(self) -> None:
        """Gather output, events and timer deadlines of the connections touched since last time."""
        budget = self.budget
        if budget is not None:
            # Acknowledgements freed room in the line budget: the connections it held back go on.
            for conn in budget.take_waiting(self._now):
                if conn.budget is budget:
                    conn.resume(self._now)
                    self._dirty[conn] = None
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        for conn in dirty:
            for segment in conn.take_segments():
                # From the connection's own address, which its checksum covers (RFC 9293 §3.1): a
                # SYN to another address is answered from there (RFC 1812 §5.2.7.1).
                self._emit_datagram(conn.remote_addr, PROTO_TCP, segment.data, segment.interactive, conn.local_addr)
            for event in conn.events():
                self._events.append(ConnectionEvent(conn, event))
                if isinstance(event, Closed):
                    self._forget(_key(conn), conn)
            self._schedule(conn)

    def _forget(self, key: tuple[bytes, int, bytes, int], conn: TCPConnection) -> None:
        if self.connections.get(key) is conn:
            del self.connections[key]
        self._scheduled.pop(conn, None)

    def _schedule(self, conn: TCPConnection) -> None:
        deadline = conn.next_deadline()
        if deadline is None or _key(conn) not in self.connections:
            self._scheduled.pop(conn, None)
            return
        if self._scheduled.get(conn) != deadline:
            self._scheduled[conn] = deadline
            self._timer_seq += 1
            heappush(self._timers, (deadline, self._timer_seq, conn))

    def _send_unreachable(
        self, code: int, header: ipv4.IPv4Header, packet: bytes, source: bytes | None = None
    ) -> None:
        self._send_icmp_error(icmp.DEST_UNREACHABLE, code, header, packet, source)

    def _send_icmp_error(
        self, kind: int, code: int, header: ipv4.IPv4Header, packet: bytes, source: bytes | None = None
    ) -> None:
        # A token bucket (RFC 1812 §4.3.2.8), refilled by the time of the datagram being answered.
        now = self._now
        if now > self._icmp_updated:
            self._icmp_tokens = min(ICMP_ERROR_BURST, self._icmp_tokens + (now - self._icmp_updated) * ICMP_ERROR_RATE)
            self._icmp_updated = now
        if self._icmp_tokens < 1.0:
            self.counters["icmp_errors_ratelimited"] += 1
            return
        self._icmp_tokens -= 1.0
        self.counters["icmp_errors_sent"] += 1
        message = icmp.error(kind, code, packet, header.header_length)
        self._emit(header.src, ipv4.PROTO_ICMP, message, interactive=True, source=source)

    # -- output --------------------------------------------------------------------------------

    def _emit(self, dst: bytes, protocol: int, payload: bytes, *, interactive: bool, source: bytes | None = None) -> None:
        self._emit_datagram(dst, protocol, payload, interactive, source)

    def _emit_datagram(self, dst: bytes, protocol: int, payload: bytes, interactive: bool, source: bytes | None) -> None:
        """:meth:`_emit`, positionally: a C call from the per-segment paths when compiled."""
        self._ident = (self._ident + 1) & 0xFFFF
        # (positional: a C call when compiled; ttl, tos, dont_fragment)
        packet = ipv4.build(source or self.local, dst, protocol, payload, self._ident, TTL, 0, False)
        if len(packet) <= self.mtu:  # what the connections send always fits: no fragmenting
            self._output.append((packet, interactive))
            return
        try:
            pieces = ipv4.fragment(packet, self.mtu)
        except IPv4Error as exc:
            self.counters[IP_OUT_DROP.key(exc.reason)] += 1
            return
        for piece in pieces:
            self._output.append((piece, interactive))

    def take_output(self) -> list[tuple[bytes, bool]]:
        """Datagrams to send, each with whether it is interactive."""
        self._collect()
        output, self._output = self._output, []
        return output

    def next_deadline(self) -> float | None:
        self._collect()
        timers = self._timers
        while timers and self._scheduled.get(timers[0][2]) != timers[0][0]:
            heappop(timers)  # superseded entry
        due = timers[0][0] if timers else None
        fragments = self._fragments.next_deadline()
        if fragments is not None and (due is None or fragments < due):
            due = fragments
        return due

    def handle_timer(self, now: float) -> None:
        self._now = now
        self._fragments.expire(now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, conn = heappop(timers)
            if self._scheduled.get(conn) != deadline:
                continue
            del self._scheduled[conn]
            conn.handle_timer(now)
            self._dirty[conn] = None
        self._collect()

    def close(self) -> None:
        """The link went down: every connection is gone with it."""
        self._output.clear()
        for conn in self.connections.values():
            conn.budget = None
        self.connections.clear()
        self._dirty.clear()
        self._timers.clear()
        self._scheduled.clear()
