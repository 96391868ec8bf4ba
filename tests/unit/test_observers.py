"""The gateway's seams: observers hear the link and the connections, frame taps see every frame,
and one link object lives for the whole session. Driven by the in-process data path
(benchmarks/datapath.py: a scripted pppd dialled into a real Gateway over an in-memory line)."""

from __future__ import annotations

import asyncio
import logging
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import datapath  # noqa: E402

from pyslirp.net import ipv4, tcp_types  # noqa: E402
from pyslirp.net.tcp_segment import SYN, TCPSegment, build_segment  # noqa: E402
from pyslirp.ppp.link import LinkDown, LinkUp  # noqa: E402
from pyslirp.runtime.observers import Direction, Flow, GatewayObserver, Observers  # noqa: E402

LCP = 0xC021


class Recorder(GatewayObserver):
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def __getattribute__(self, name: str):  # record every observer method called
        if name in GatewayObserver.__dict__ and not name.startswith("_"):
            return lambda *args: self.calls.append((name, args))
        return object.__getattribute__(self, name)

    def of(self, name: str) -> list[tuple[object, ...]]:
        return [args for called, args in self.calls if called == name]


class Exploding(GatewayObserver):
    def link_up(self, *args: object) -> None:
        raise RuntimeError("a broken observer")

    connection_opened = connection_closed = connection_refused = link_up


class FrameRecorder:
    def __init__(self) -> None:
        self.frames: list[tuple[Direction, bytes]] = []

    def frame(self, direction: Direction, frame: bytes, now: float) -> None:
        self.frames.append((direction, bytes(frame)))


class BrokenTap:
    calls = 0

    def frame(self, direction: Direction, frame: bytes, now: float) -> None:
        self.calls += 1
        raise OSError("disk full")


def protocol_of(frame: bytes) -> int:
    i = 2 if frame[:2] == b"\xff\x03" else 0
    return frame[i] if frame[i] & 1 else int.from_bytes(frame[i : i + 2], "big")


async def echo_service() -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_failing_observer_is_logged_and_the_others_still_hear(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    observers = Observers(Exploding(), recorder)
    up = LinkUp(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), ())
    with caplog.at_level(logging.ERROR):
        observers.link_event("ttyS0", up)
        observers.link_event("ttyS0", LinkDown("peer terminated"))
    assert recorder.of("link_up") == [("ttyS0", up)]
    assert recorder.of("link_down") == [("ttyS0", LinkDown("peer terminated"))]
    assert "Exploding failed on link_up" in caplog.text


async def test_observers_and_taps_follow_the_link_and_its_connections() -> None:
    server, port = await echo_service()
    recorder, frames, broken = Recorder(), FrameRecorder(), BrokenTap()
    path = datapath.DataPath()
    await path.start(port, observers=Observers(Exploding(), recorder), taps=[broken, frames])
    loop = asyncio.get_running_loop()

    (up,) = recorder.of("link_up")
    assert up[0] == "memory" and up[1].peer_ip == IPv4Address("10.0.0.2")
    # The tap saw the negotiation both ways; the broken tap failed once and was detached.
    assert broken.calls == 1
    direction, first = frames.frames[0]  # our Configure-Request opens the negotiation
    assert direction is Direction.SENT and first[:5] == b"\xff\x03\xc0\x21\x01"
    assert {d for d, f in frames.frames if protocol_of(f) == LCP} == {Direction.RECEIVED, Direction.SENT}

    conn = path.connect()
    while conn.state != tcp_types.ESTABLISHED:
        await asyncio.sleep(0.001)
    conn.send(b"hello", loop.time())
    path.flush_client()
    echoed = bytearray()
    while not conn.at_eof:
        echoed += conn.read(-1, loop.time())
        path.flush_client()
        await asyncio.sleep(0.001)
    conn.close(loop.time())
    path.flush_client()
    for _ in range(500):  # our side closed first: TIME-WAIT (tcp.time_wait, 2 s) ends it
        if recorder.of("connection_closed"):
            break
        await asyncio.sleep(0.01)
    assert bytes(echoed) == b"hello"
    ((opened,),) = recorder.of("connection_opened")
    assert isinstance(opened, Flow)
    assert opened.destination == (IPv4Address("10.0.0.1"), datapath.SERVICE_PORT)
    assert opened.client == (IPv4Address("10.0.0.2"), conn.local_port)
    ((closed, summary),) = recorder.of("connection_closed")
    assert closed == opened
    assert (summary.outcome, summary.to_service, summary.to_client) == ("closed", 5, 5)
    assert summary.duration > 0 and summary.srtt is not None and summary.srtt < 1
    # Data frames passed the tap too (IP or VJ), each way.
    data = {d for d, f in frames.frames if protocol_of(f) in (0x21, 0x2D, 0x2F)}
    assert data == {Direction.RECEIVED, Direction.SENT}
    await path.close()
    server.close()


async def test_a_refused_flow_is_observed_with_its_reason_and_answered_from_its_destination() -> None:
    server, port = await echo_service()
    recorder = Recorder()
    path = datapath.DataPath()
    await path.start(port, observers=Observers(recorder))

    for destination, dport, reason in ((b"\x0a\x00\x00\x01", 80, "no_service"),
                                       (b"\xc0\x00\x02\x07", 22, "no_route")):
        syn = build_segment(TCPSegment(41000, dport, 1, 0, SYN, 65535, mss=1460), b"\x0a\x00\x00\x02", destination)
        packet = ipv4.build(b"\x0a\x00\x00\x02", destination, ipv4.PROTO_TCP, syn, 7)
        path.session.feed(datapath.encode_frame(b"\x21" + packet, 0))
        for _ in range(200):
            if any(got == reason for _, got in recorder.of("connection_refused")):
                break
            await asyncio.sleep(0.001)
        flow, got = recorder.of("connection_refused")[-1]
        assert got == reason and flow.destination == (IPv4Address(destination), dport)
    proxy = path.gateway.registry.totals("proxy")
    assert proxy["refused_no_service"] == 1 and proxy["refused_no_route"] == 1
    await path.close()
    server.close()


async def test_one_link_lives_for_the_session_and_keeps_its_counters_across_redials() -> None:
    server, port = await echo_service()
    recorder = Recorder()
    path = datapath.DataPath()
    await path.start(port, observers=Observers(recorder))
    link = path.gateway.link
    first_lcp = link.counters()["rx_lcp"]
    path.ppp.packet(LCP, 5)  # the client hangs up: Terminate-Request
    path._send_ppp()
    for _ in range(800):  # Terminate-Ack, then Stopping for one restart timer (RFC 1661 §4.2 zrc)
        if recorder.of("link_down"):
            break
        await asyncio.sleep(0.01)
    assert recorder.of("link_down")[0][1].reason.startswith("peer terminated")
    await asyncio.sleep(1.1)  # the gateway offers a fresh negotiation on the same session
    path.ppp.reset()
    path.ppp.start()
    path._send_ppp()
    for _ in range(300):
        if len(recorder.of("link_up")) == 2:
            break
        await asyncio.sleep(0.005)
    assert len(recorder.of("link_up")) == 2
    assert path.gateway.link is link and path.gateway.links_started == 2
    assert link.counters()["rx_lcp"] > first_lcp + 1  # the first link's frames still count
    await path.close()
    server.close()
