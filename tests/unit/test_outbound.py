"""Outbound routing: the policy lists, and the SOCKS5 client (RFC 1928/1929) against proxies
that misbehave every way a proxy can (a real one, Dante, is in the interop tests)."""

from __future__ import annotations

import asyncio
import struct
from ipaddress import IPv4Address, IPv4Network
from typing import Awaitable, Callable

import pytest

from pyslirp.config import OutboundConfig, SocksConfig
from pyslirp.net import dns
from pyslirp.runtime.admission import Admitted, Refused
from pyslirp.runtime.connector import HOST_UNREACHABLE, NET_UNREACHABLE, RST, TTL_EXPIRED, ConnectFailed
from pyslirp.runtime.fake_names import FakeNames
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


def test_fake_names_stand_for_a_name_until_they_expire_and_the_pool_is_bounded() -> None:
    clock = [0.0]
    names = FakeNames(IPv4Network("100.64.0.0/30"), lambda: clock[0], ttl=60)  # room for 2
    first = names.address_for("files.test")
    assert first == IPv4Address("100.64.0.1").packed and names.address_for("files.test") == first
    second = names.address_for("mail.test")
    assert second == IPv4Address("100.64.0.2").packed
    assert names.name_for(IPv4Address(first)) == "files.test"
    assert IPv4Address("100.64.0.3") not in names and names.name_for(IPv4Address("100.64.0.3")) is None
    clock[0] = 100.0
    names.address_for("files.test")  # handed out again: lives on
    third = names.address_for("news.test")  # full: mail.test, handed out longest ago, gives way
    assert third == second and names.name_for(IPv4Address(second)) == "news.test"
    assert names.evicted == 1 and len(names) == 2
    clock[0] = 100.0 + 2 * 60 + 1
    assert names.name_for(IPv4Address(first)) is None  # expired


def test_a_dns_query_is_read_and_answered_as_rfc_1035_says() -> None:
    query = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x05Files\x04test\x00" + struct.pack("!HH", 1, 1)
    question = dns.parse_query(query)
    assert (question.ident, question.name, question.qtype) == (0x1234, "files.test", dns.TYPE_A)
    reply = dns.answer(question, bytes([100, 64, 0, 1]), 60)
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", reply)
    assert (ident, flags & 0x8000, flags & 0x0100, flags & 0x000F, qd, an) == (0x1234, 0x8000, 0x0100, 0, 1, 1)
    assert reply[12:12 + len(question.raw)] == question.raw
    assert reply[-16:] == struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + bytes([100, 64, 0, 1])
    nodata = dns.answer(question, None, 60)
    assert struct.unpack_from("!HHHHHH", nodata)[3] == 0
    for bad in (query[:11], query[:20], struct.pack("!HHHHHH", 1, 0x8000, 1, 0, 0, 0) + query[12:],
                struct.pack("!HHHHHH", 1, 0x0100, 2, 0, 0, 0) + query[12:],
                query[:12] + b"\xc0\x0c" + query[-4:]):
        with pytest.raises(dns.DNSError):
            dns.parse_query(bad)


def test_with_remote_dns_an_address_of_the_pool_routes_to_its_name_and_an_unknown_one_is_refused() -> None:
    outbound = OutboundRoutes(OutboundConfig(mode="socks", allow=["198.18.0.0/15"], ports=[80]),
                              SocksConfig(enabled=True, remote_dns=True), lambda: 0.0)
    assert outbound.names is not None
    address = IPv4Address(outbound.names.address_for("files.test"))
    assert isinstance(outbound.route(address, 80), Admitted)  # allow does not judge a name
    assert outbound.route(address, 443) == Refused("outbound_port", "outbound")
    assert outbound.target(address) == "files.test"
    assert outbound.connector(address, 80).describe() == "files.test:80 via socks 127.0.0.1:1080"
    assert outbound.route(IPv4Address("100.64.0.99"), 80) == Refused("outbound_unknown_name", "outbound")
    kept = OutboundRoutes(OutboundConfig(mode="socks"), SocksConfig(enabled=True, remote_dns=True), lambda: 0.0,
                          names=outbound.names)  # a reload keeps the names handed out
    assert kept.target(address) == "files.test"


def test_the_outbound_and_socks_settings_take_environment_overrides(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyslirp.config import ConfigError, load_config

    path = tmp_path / "config.yaml"
    path.write_text("outbound:\n  mode: refuse\nsocks:\n  enabled: true\n")
    monkeypatch.setenv("PYSLIRP_OUTBOUND__MODE", "socks")
    monkeypatch.setenv("PYSLIRP_OUTBOUND__ALLOW", '["198.18.0.0/15"]')
    monkeypatch.setenv("PYSLIRP_SOCKS_HOST", "192.0.2.7")
    monkeypatch.setenv("PYSLIRP_SOCKS_PORT", "1081")
    config = load_config(path)
    assert config.outbound.mode == "socks" and [str(n) for n in config.outbound.allow] == ["198.18.0.0/15"]
    assert (config.socks.host, config.socks.port) == ("192.0.2.7", 1081)
    monkeypatch.setenv("PYSLIRP_OUTBOUND__MODE", "tunnel")
    with pytest.raises(ConfigError, match="outbound.mode"):
        load_config(path)
