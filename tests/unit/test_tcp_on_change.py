"""The change hook: a connection tells its stack itself when an application call produced
segments or events, so the caller never has to (``TCPConnection.on_change``, set by the stack
to ``Stack.changed``)."""

from __future__ import annotations

from ipaddress import IPv4Address

from pyslirp.net import ipv4
from pyslirp.net.stack import ConnectionEvent, ConnectionRequest, Stack
from pyslirp.net.tcp import TCPConnection
from pyslirp.net.tcp_segment import ACK, PSH, SYN, TCPSegment, build_segment, parse_segment
from pyslirp.net.tcp_types import DataReceived, Established

LOCAL = IPv4Address("10.0.0.1")
PEER = IPv4Address("10.0.0.2")


def datagram(seg: TCPSegment) -> bytes:
    return ipv4.build(PEER.packed, LOCAL.packed, ipv4.PROTO_TCP, build_segment(seg, PEER.packed, LOCAL.packed), 1)


def segments(stack: Stack) -> list[TCPSegment]:
    out = []
    for packet, _ in stack.take_output():
        header = ipv4.parse(packet)
        seg = parse_segment(packet[header.header_length:], LOCAL.packed, PEER.packed)
        assert seg is not None
        out.append(seg)
    return out


def accepted_connection() -> tuple[Stack, TCPConnection, list[int]]:
    wakes: list[int] = []
    stack = Stack(LOCAL, PEER, 1500, wake=lambda: wakes.append(1))
    stack.receive(datagram(TCPSegment(40000, 80, 5000, 0, SYN, 65535, mss=1460)), 0.0)
    (request,) = stack.events()
    assert isinstance(request, ConnectionRequest)
    conn = request.conn
    assert conn.on_change is not None
    conn.accept(0.0)                                   # no stack.changed(conn) anywhere
    assert wakes
    (synack,) = segments(stack)
    assert synack.flags == SYN | ACK
    stack.receive(datagram(TCPSegment(40000, 80, 5001, synack.seq + 1, ACK, 65535)), 0.01)
    assert [e.event for e in stack.events() if isinstance(e, ConnectionEvent)] == [Established()]
    return stack, conn, wakes


def test_stack_collects_what_send_produced_without_being_told() -> None:
    stack, conn, wakes = accepted_connection()
    wakes.clear()
    assert conn.send(b"hello", 0.02) == 5
    assert wakes == [1]                                # the stack asked its owner to flush
    (data,) = segments(stack)
    assert data.payload == b"hello" and data.flags == ACK | PSH


def test_stack_collects_a_window_update_and_a_close() -> None:
    stack, conn, wakes = accepted_connection()
    payload = bytes(2000)
    stack.receive(datagram(TCPSegment(40000, 80, 5001, conn.sender.snd_nxt, ACK | PSH, 65535, payload)), 0.02)
    assert any(isinstance(e, ConnectionEvent) and isinstance(e.event, DataReceived) for e in stack.events())
    segments(stack)
    wakes.clear()
    conn.close(0.03)                                   # unread data: an abort, RST and Closed
    assert wakes == [1]
    assert [s.flags for s in segments(stack)] == [0x04]
    assert stack.connections == {}


def test_the_hook_is_called_by_application_calls_only() -> None:
    calls: list[TCPConnection] = []
    conn = TCPConnection(LOCAL.packed, 40000, PEER.packed, 80, iss=1000)
    conn.on_change = calls.append
    conn.connect(0.0)
    assert calls == [conn]
    (syn,) = conn.take_segments()
    # What the stack drives itself (segments, timers) does not call the hook: it collects anyway.
    synack = TCPSegment(80, 40000, 7000, 1001, SYN | ACK, 65535, mss=1460)
    conn.receive_segment(synack, 0.1)
    conn.handle_timer(5.0)
    assert calls == [conn]
    conn.send(b"x", 0.2)
    conn.shutdown_write(0.3)
    conn.abort(0.4)
    assert calls == [conn] * 4
