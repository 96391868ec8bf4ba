"""Admission and connectors: the route and checks a new flow passes, and the host socket made for it."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address

import pytest

from pyslirp.config import ServiceConfig
from pyslirp.runtime.admission import REFUSED, Admission, Admitted, Refused
from pyslirp.runtime.connector import ConnectFailed, ServiceConnector
from pyslirp.runtime.observers import Flow

LOCAL = IPv4Address("10.0.0.1")
PEER = IPv4Address("10.0.0.2")


def flow(port: int, address: IPv4Address = LOCAL) -> Flow:
    return Flow("test", "tcp", (PEER, 40000), (address, port))


def test_route_then_capacity_in_that_order() -> None:
    services = {
        22: ServiceConfig(port=22, max_connections=1),
        23: ServiceConfig(port=23, enabled=False),
        53: ServiceConfig(port=53, protocol="udp"),
    }
    admission = Admission(services, LOCAL)
    assert admission.admit(flow(80), 0.0) == Refused("no_service")
    assert admission.admit(flow(53), 0.0) == Refused("no_service")  # a UDP service takes no TCP
    assert admission.admit(flow(23), 0.0) == Refused("service_disabled")
    assert admission.admit(flow(22, IPv4Address("192.0.2.7")), 0.0) == Refused("no_route")
    first = admission.admit(flow(22), 0.0)
    assert first == Admitted(services[22], 22)
    assert admission.admit(flow(22), 0.0) == Refused("service_full")
    admission.closed(first, connected=True)
    assert admission.admit(flow(22), 0.0) == Admitted(services[22], 22)
    assert {"no_service", "service_disabled", "no_route", "service_full"} <= set(REFUSED.reasons)


def test_extra_checks_run_after_the_route_and_may_refuse() -> None:
    class OnlyEvenClientPorts:
        def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
            return "service_full" if flow.client[1] % 2 else None

    admission = Admission({22: ServiceConfig(port=22)}, LOCAL, [OnlyEvenClientPorts()])
    assert isinstance(admission.admit(flow(22), 0.0), Admitted)
    odd = Flow("test", "tcp", (PEER, 40001), (LOCAL, 22))
    assert admission.admit(odd, 0.0) == Refused("service_full")
    assert admission.active["tcp", 22] == 1  # a refusal is not accounted


async def test_a_loopback_service_connects_within_the_call() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sock = ServiceConnector(ServiceConfig(port=port)).connect_now()
    assert sock is not None and sock.getpeername()[1] == port
    sock.close()
    # By name it goes the asynchronous way (resolving would block), and connects there.
    by_name = ServiceConnector(ServiceConfig(host="localhost", port=port))
    assert by_name.connect_now() is None
    sock = await by_name.connect()
    assert sock.getpeername()[1] == port
    sock.close()
    server.close()


async def test_an_unreachable_service_fails_with_a_reason() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connector = ServiceConnector(ServiceConfig(port=port, connect_timeout=2))
    assert connector.connect_now() is None
    with pytest.raises(ConnectFailed) as failed:
        await connector.connect()
    assert "refused" in failed.value.reason.lower()


async def test_a_service_restarting_is_reached_by_retries_with_backoff_within_connect_timeout() -> None:
    port = closed_port()
    counters: dict[str, int] = {}
    connector = ServiceConnector(ServiceConfig(port=port, connect_timeout=5, connect_retries=3), counters)
    connecting = asyncio.ensure_future(connector.connect())
    await asyncio.sleep(0.1)  # refused once; the retry waits 0.25 s
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)  # the service is back
    sock = await asyncio.wait_for(connecting, 5)
    assert sock.getpeername()[1] == port
    assert counters["connect_retries"] >= 1
    sock.close()
    server.close()


@pytest.mark.parametrize(("connect_timeout", "connect_retries", "retried"), [
    (5, 0, 0),  # retries off
    (5, 2, 2),  # 0.25 s, then 0.5 s
    (0.5, 10, 1),  # 0.25 s; a second wait of 0.5 s would pass connect_timeout
])
async def test_connect_retries_are_bounded_by_their_count_and_by_connect_timeout(
    connect_timeout: float, connect_retries: int, retried: int
) -> None:
    counters: dict[str, int] = {}
    service = ServiceConfig(port=closed_port(), connect_timeout=connect_timeout, connect_retries=connect_retries)
    with pytest.raises(ConnectFailed, match="refused"):
        await ServiceConnector(service, counters).connect()
    assert counters.get("connect_retries", 0) == retried


def test_connects_in_progress_are_capped_per_service_and_in_all() -> None:
    services = {22: ServiceConfig(port=22, max_pending=2), 80: ServiceConfig(port=80, max_pending=2)}
    admission = Admission(services, LOCAL, max_pending=3)
    first, second = admission.admit(flow(22), 0.0), admission.admit(flow(22), 0.0)
    assert admission.admit(flow(22), 0.0) == Refused("pending_cap")  # the service's cap
    third = admission.admit(flow(80), 0.0)
    assert admission.admit(flow(80), 0.0) == Refused("pending_cap")  # the gateway's cap
    admission.connected(first)  # accepted: no longer pending, still open
    assert dict(admission.pending) == {("tcp", 22): 1, ("tcp", 80): 1} and dict(admission.active) == {("tcp", 22): 2, ("tcp", 80): 1}
    fourth = admission.admit(flow(80), 0.0)
    assert isinstance(fourth, Admitted)
    admission.closed(second, connected=False)  # failed before the service accepted
    admission.closed(first, connected=True)
    assert dict(admission.pending) == {("tcp", 80): 2} and dict(admission.active) == {("tcp", 80): 2}
    for decision in (third, fourth):
        assert isinstance(decision, Admitted)
        admission.closed(decision, connected=False)
    assert not admission.pending and not admission.active


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_failover_tries_the_backends_in_order_when_the_service_fails() -> None:
    seen: list[int] = []

    async def serve(tag: int) -> asyncio.AbstractServer:
        return await asyncio.start_server(lambda r, w: (seen.append(tag), w.close()), "127.0.0.1", 0)

    second, third = await serve(2), await serve(3)
    service = ServiceConfig(port=closed_port(), backends=[
        f"127.0.0.1:{closed_port()}", f"127.0.0.1:{second.sockets[0].getsockname()[1]}",
        f"127.0.0.1:{third.sockets[0].getsockname()[1]}",
    ])
    connector = ServiceConnector(service)
    assert connector.connect_now() is None  # the first target refuses: the async way tries on
    for _ in range(2):
        sock = await connector.connect()
        sock.close()
    await asyncio.sleep(0.05)
    assert seen == [2, 2]  # always the first that accepts
    second.close()
    third.close()


async def test_round_robin_starts_each_connection_at_the_next_target() -> None:
    seen: list[int] = []
    servers = [await asyncio.start_server(lambda r, w, tag=tag: (seen.append(tag), w.close()), "127.0.0.1", 0)
               for tag in range(3)]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    service = ServiceConfig(port=ports[0], backends=[f"127.0.0.1:{p}" for p in ports[1:]], balance="round_robin")
    connector = ServiceConnector(service)
    for _ in range(3):
        sock = connector.connect_now()
        assert sock is not None
        sock.close()
    for _ in range(3):
        (await connector.connect()).close()
    await asyncio.sleep(0.05)
    assert seen == [0, 1, 2, 0, 1, 2]
    for server in servers:
        server.close()


def test_a_backend_must_be_host_and_port() -> None:
    with pytest.raises(ValueError, match="expected host:port, got 'nowhere'"):
        ServiceConfig(port=80, backends=["nowhere"])
