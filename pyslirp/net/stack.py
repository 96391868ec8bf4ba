"""The network stack: validates IPv4 datagrams from the link and hands them to ICMP, UDP or TCP.

Sans-IO: :meth:`Stack.receive` takes a datagram and ``now``; :meth:`Stack.take_output` returns the
datagrams to send, each marked interactive or bulk for the line scheduler. Every datagram we
discard is counted in :attr:`Stack.counters` under its reason.

Addresses: we answer for ``local_ip`` (pyslirp's end of the link). Traffic to any other address
gets what a router with no route would send (RFC 1812 §4.3.3.1, §5.2.7.1).
"""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address

from pyslirp._core.reassembly import FragmentReassembler
from pyslirp.net import icmp, ipv4
from pyslirp.net.ipv4 import IPv4Error

FRAGMENT_BYTES = 256 * 1024
FRAGMENT_TIMEOUT = 30.0  # RFC 1122 §3.3.2 recommends 60-120 s; a serial line needs less


class Stack:
    """One link's network layer."""

    def __init__(self, local_ip: IPv4Address, peer_ip: IPv4Address, mtu: int) -> None:
        self.local = local_ip.packed
        self.peer = peer_ip.packed
        self.mtu = mtu
        self.counters: Counter[str] = Counter()
        self._fragments = FragmentReassembler(FRAGMENT_BYTES, FRAGMENT_TIMEOUT)
        self._output: list[tuple[bytes, bool]] = []
        self._ident = 0

    # -- input ---------------------------------------------------------------------------------

    def receive(self, packet: bytes, now: float) -> None:
        """Process one datagram from the link."""
        try:
            header = ipv4.parse(packet)
        except IPv4Error as exc:
            self.counters[f"ip_drop_{exc.reason}"] += 1
            return
        self.counters["ip_in"] += 1
        if header.is_fragment:
            whole = self._fragments.add(packet[: header.header_length], packet[header.header_length : header.total_length], now)
            if whole is None:
                return
            packet = whole
            header = ipv4.parse(packet)
        payload = packet[header.header_length : header.total_length]
        if header.dst != self.local:
            self._no_route(header, packet, payload)
            return
        if header.protocol == ipv4.PROTO_ICMP:
            self._icmp(header, payload)
        elif header.protocol == ipv4.PROTO_TCP:
            self._tcp(header, packet, payload, now)
        elif header.protocol == ipv4.PROTO_UDP:
            self._udp(header, packet, payload, now)
        else:
            self.counters["ip_drop_protocol_unreachable"] += 1
            self._send_unreachable(icmp.PROTOCOL_UNREACHABLE, header, packet)

    def _icmp(self, header: ipv4.IPv4Header, payload: bytes) -> None:
        if not payload or payload[0] != icmp.ECHO_REQUEST:
            self.counters["icmp_ignored"] += 1
            return
        try:
            reply = icmp.echo_reply(payload)
        except icmp.ICMPError as exc:
            self.counters[f"icmp_drop_{exc.reason}"] += 1
            return
        self.counters["icmp_echo"] += 1
        self._emit(header.src, ipv4.PROTO_ICMP, reply, interactive=True)

    def _tcp(self, header: ipv4.IPv4Header, packet: bytes, payload: bytes, now: float) -> None:
        self.counters["tcp_drop_no_tcp"] += 1

    def _udp(self, header: ipv4.IPv4Header, packet: bytes, payload: bytes, now: float) -> None:
        self.counters["udp_drop_port_unreachable"] += 1
        self._send_unreachable(icmp.PORT_UNREACHABLE, header, packet)

    def _no_route(self, header: ipv4.IPv4Header, packet: bytes, payload: bytes) -> None:
        self.counters["ip_drop_no_route"] += 1
        if header.protocol == ipv4.PROTO_ICMP and icmp.is_error(payload):
            return
        self._send_unreachable(icmp.NET_UNREACHABLE, header, packet, source=self.local)

    def _send_unreachable(
        self, code: int, header: ipv4.IPv4Header, packet: bytes, source: bytes | None = None
    ) -> None:
        message = icmp.unreachable(code, packet, header.header_length)
        self._emit(header.src, ipv4.PROTO_ICMP, message, interactive=True, source=source)

    # -- output --------------------------------------------------------------------------------

    def _emit(self, dst: bytes, protocol: int, payload: bytes, *, interactive: bool, source: bytes | None = None) -> None:
        self._ident = (self._ident + 1) & 0xFFFF
        packet = ipv4.build(source or self.local, dst, protocol, payload, self._ident, dont_fragment=False)
        try:
            pieces = ipv4.fragment(packet, self.mtu)
        except IPv4Error as exc:
            self.counters[f"ip_out_drop_{exc.reason}"] += 1
            return
        for piece in pieces:
            self._output.append((piece, interactive))

    def take_output(self, bulk_room: int) -> list[tuple[bytes, bool]]:
        """Datagrams to send, each with whether it is interactive."""
        output, self._output = self._output, []
        return output

    def next_deadline(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        self._fragments.expire(now)

    def close(self) -> None:
        """The link went down."""
        self._output.clear()
