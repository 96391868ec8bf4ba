"""Outbound routing: the policy lists, and the SOCKS5 client (RFC 1928/1929) against proxies
that misbehave every way a proxy can (a real one, Dante, is in the interop tests)."""

from __future__ import annotations

import asyncio
import struct
from ipaddress import IPv4Address
from typing import Awaitable, Callable

import pytest

from pyslirp.config import OutboundConfig, SocksConfig
from pyslirp.runtime.admission import Admitted, Refused
from pyslirp.runtime.connector import HOST_UNREACHABLE, NET_UNREACHABLE, RST, TTL_EXPIRED, ConnectFailed
from pyslirp.runtime.outbound import OutboundRoutes
from pyslirp.runtime.socks5 import connect_request, credentials, greeting, socks5_connect

HOST = IPv4Address("198.18.0.2")


def routes(**outbound: object) -> OutboundRoutes:
    return OutboundRoutes(OutboundConfig(**outbound), SocksConfig(enabled=True))


def test_refuse_is_the_default_and_socks_without_a_proxy_refuses_too() -> None:
    assert routes().route(HOST, 80) == Refused("no_route")
    disabled = OutboundRoutes(OutboundConfig(mode="socks"), SocksConfig(enabled=False))
    assert disabled.route(HOST, 80) == Refused("no_route")


@pytest.mark.parametrize(("outbound", "destination", "port", "decision"), [
    ({}, HOST, 80, "outbound"),
    ({"deny": ["198.18.0.0/15"]}, HOST, 80, "outbound_denied"),
    ({"allow": ["198.18.0.0/15"], "deny": ["198.18.0.2/32"]}, HOST, 80, "outbound_denied"),  # deny wins
    ({"allow": ["192.0.2.0/24"]}, HOST, 80, "outbound_not_allowed"),
    ({"ports": [443]}, HOST, 80, "outbound_port"),
    ({}, IPv4Address("127.0.0.1"), 22, "outbound_denied"),  # the host's own
    ({}, IPv4Address("169.254.169.254"), 80, "outbound_denied"),  # link-local: cloud metadata
    ({}, IPv4Address("255.255.255.255"), 80, "outbound_denied"),
    ({"allow": ["127.0.0.0/8"]}, IPv4Address("127.0.0.1"), 22, "outbound"),  # unless allowed
])
def test_the_policy_lists(outbound: dict, destination: IPv4Address, port: int, decision: str) -> None:
    result = routes(mode="direct", **outbound).route(destination, port)
    if decision == "outbound":
        assert isinstance(result, Admitted) and result.label == "outbound"
    else:
        assert result == Refused(decision, "outbound")


def test_the_messages_are_the_rfcs() -> None:
    assert greeting(False) == b"\x05\x01\x00"
    assert greeting(True) == b"\x05\x02\x00\x02"
    assert credentials("alice", "pw") == b"\x01\x05alice\x02pw"
    assert connect_request(HOST, 80) == b"\x05\x01\x00\x01" + HOST.packed + b"\x00\x50"
    assert connect_request("example.test", 443) == b"\x05\x01\x00\x03\x0cexample.test\x01\xbb"
    with pytest.raises(ConnectFailed):
        credentials("x" * 256, "pw")


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def proxy(handler: Handler) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def reply(code: int) -> bytes:
    return bytes([5, code, 0, 1]) + bytes(4) + struct.pack("!H", 0)


def scripted(*answers: bytes, requests: list[bytes] | None = None, hang_up: bool = False) -> Handler:
    """A proxy that reads what the client sends and answers each message in turn, then keeps
    the stream open until the client closes it (or ``hang_up``: closes it at once)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            data = await reader.read(512)
            if requests is not None:
                requests.append(data)
            writer.write(answer)
            await writer.drain()
        if not hang_up:
            await reader.read()
        writer.close()
    return handle


async def connect_via(handler: Handler, **socks: object):
    server, port = await proxy(handler)
    try:
        return await socks5_connect("127.0.0.1", port, HOST, 80, timeout=2, **socks)
    finally:
        server.close()


async def test_a_connect_through_the_proxy_with_username_and_password() -> None:
    requests: list[bytes] = []
    sock = await connect_via(
        scripted(b"\x05\x02", b"\x01\x00", reply(0) + b"stream", requests=requests), username="alice", password="pw"
    )
    assert requests == [greeting(True), credentials("alice", "pw"), connect_request(HOST, 80)]
    assert sock.recv(16) == b"stream"  # the reply is consumed; what follows is the destination's
    sock.close()


@pytest.mark.parametrize(("code", "answer"), [
    (0x01, RST), (0x02, RST), (0x03, NET_UNREACHABLE), (0x04, HOST_UNREACHABLE), (0x05, RST),
    (0x06, TTL_EXPIRED), (0x07, RST), (0x08, RST), (0x42, RST),
])
async def test_every_reply_code_is_told_to_the_client(code: int, answer: str) -> None:
    with pytest.raises(ConnectFailed) as failed:
        await connect_via(scripted(b"\x05\x00", reply(code)))
    assert failed.value.answer == answer


@pytest.mark.parametrize(("answers", "reason"), [
    ((b"\x05\x02", b"\x01\x01"), "authentication failed"),
    ((b"\x05\xff",), "accepts none of our authentication methods"),
    ((b"\x04\x5a",), "not a SOCKS5 proxy"),  # a SOCKS4 answer
    ((b"HTTP/1.1 400 Bad Request\r\n\r\n",), "not a SOCKS5 proxy"),
    ((b"\x05\x00", b"\x05\x00\x00\x09"), "unknown address type"),
    ((b"\x05\x00", b"\x05\x00\x00\x01\x00"), "closed the connection"),  # a reply cut short
])
async def test_a_proxy_that_speaks_garbage_or_refuses_is_a_clear_failure(answers: tuple, reason: str) -> None:
    with pytest.raises(ConnectFailed, match=reason) as failed:
        await connect_via(scripted(*answers, hang_up=True), username="alice", password="wrong")
    assert failed.value.answer == RST


async def test_a_proxy_that_never_answers_is_bounded_by_the_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server, port = await proxy(silent)
    with pytest.raises(ConnectFailed, match="timeout"):
        await socks5_connect("127.0.0.1", port, HOST, 80, timeout=0.3)
    server.close()


async def test_a_proxy_that_is_down_is_refused() -> None:
    server, port = await proxy(scripted())
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectFailed, match="refused"):
        await socks5_connect("127.0.0.1", port, HOST, 80, timeout=2)
