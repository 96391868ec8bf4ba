"""The UDP relay: flows through the admission pipeline (refused ones get ICMP port unreachable,
counted and published), DNS accounting against the upstream resolver, and its caps."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address

from pyslirp.config import PyslirpConfig, RateLimit, ServiceConfig
from pyslirp.net.stack import UDPDatagram
from pyslirp.runtime.admission import Admission
from pyslirp.runtime.observers import ConnectionSummary, Flow, GatewayObserver
from pyslirp.runtime.security import security_pipeline
from pyslirp.runtime.udp_relay import DNS_PORT, RELAY_COUNTERS, UDPRelay, dns_relay

LOCAL = IPv4Address("10.0.0.1")
PEER = IPv4Address("10.0.0.2")


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"answer:" + data, addr)  # type: ignore[attr-defined]


class Silent(asyncio.DatagramProtocol):
    """A resolver that never answers."""


class Recorder(GatewayObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, Flow, object]] = []

    def connection_opened(self, flow: Flow) -> None:
        self.events.append(("opened", flow, None))

    def connection_refused(self, flow: Flow, reason: str) -> None:
        self.events.append(("refused", flow, reason))

    def connection_closed(self, flow: Flow, summary: ConnectionSummary) -> None:
        self.events.append(("closed", flow, summary))


def datagram(client_port: int, our_port: int = DNS_PORT, payload: bytes = b"query") -> UDPDatagram:
    return UDPDatagram(PEER.packed, client_port, our_port, payload, b"packet")


async def server(protocol: type[asyncio.DatagramProtocol]) -> tuple[asyncio.DatagramTransport, str]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(protocol, local_addr=("127.0.0.1", 0))
    return transport, "%s:%d" % transport.get_extra_info("sockname")  # type: ignore[return-value]


def relay_for(config: PyslirpConfig, now, **kwargs) -> tuple[UDPRelay, list, list, Recorder]:  # type: ignore[no-untyped-def]
    to_client: list[tuple[int, int, bytes, bytes]] = []
    refused: list[UDPDatagram] = []
    observer = Recorder()
    checks = security_pipeline(config, clock=now, schedule=lambda delay, callback: None).checks
    admission = Admission(config.services, LOCAL, checks, relays=dns_relay(config))
    relay = UDPRelay(admission, lambda *a: to_client.append(a), refused.append, now, observer=observer, **kwargs)
    return relay, to_client, refused, observer


async def until(condition, timeout: float = 1.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met")


async def test_a_dns_flow_ends_with_its_answer_and_failures_are_counted() -> None:
    transport, resolver = await server(Echo)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:  # a port nobody answers on
        closed.bind(("127.0.0.1", 0))
        dead = "%s:%d" % closed.getsockname()
    loop = asyncio.get_running_loop()
    relay, to_client, refused, observer = relay_for(PyslirpConfig(dns={"upstream": resolver}), loop.time)
    relay.datagram(datagram(40000))
    await until(lambda: to_client)
    assert to_client == [(DNS_PORT, 40000, b"answer:query", PEER.packed)]
    assert (relay.counters["dns_queries"], relay.counters["dns_answers"]) == (1, 1)
    # Answered: the flow has ended, its socket is closed and the observers have its summary.
    assert not relay.flows and not relay.admission.active and relay.dns_in_flight == 0
    kinds = [kind for kind, _, _ in observer.events]
    assert kinds == ["opened", "closed"]
    flow, summary = observer.events[1][1], observer.events[1][2]
    assert flow.protocol == "udp" and flow.service == "dns" and flow.client == (PEER, 40000)
    assert (summary.to_service, summary.to_client) == (5, 12)  # type: ignore[union-attr]
    # An upstream that answers with ICMP port unreachable: a failure.
    relay2, _, _, _ = relay_for(PyslirpConfig(dns={"upstream": dead}), loop.time)
    relay2.datagram(datagram(40001))
    await until(lambda: relay2.counters["dns_failures"])
    assert relay2.counters["dns_queries"] == 1 and not relay2.flows and relay2.dns_in_flight == 0
    assert RELAY_COUNTERS.undeclared(relay.counters) == [] and RELAY_COUNTERS.undeclared(relay2.counters) == []
    assert not refused
    relay.close(), relay2.close()
    transport.close()


async def test_dns_queries_in_flight_are_capped_and_unanswered_ones_expire() -> None:
    transport, resolver = await server(Silent)
    clock = [100.0]
    relay, _, _, _ = relay_for(PyslirpConfig(dns={"upstream": resolver, "timeout": 5.0}), lambda: clock[0],
                               dns_timeout=5.0, max_dns_in_flight=3)
    for port in range(40000, 40005):
        relay.datagram(datagram(port))
    assert relay.counters["dns_queries"] == 3 and relay.counters["dropped_dns_in_flight"] == 2
    assert len(relay.flows) == 3  # the dropped queries hold no flow
    clock[0] = 106.0  # past the DNS timeout: the three waiting are failures, room again
    relay.datagram(datagram(40005))
    assert relay.counters["dns_failures"] == 3 and relay.counters["dns_queries"] == 4
    relay.sweep_idle(112.0)
    assert relay.counters["dns_failures"] == 4 and not relay.flows and not relay.admission.active
    assert RELAY_COUNTERS.undeclared(relay.counters) == []
    relay.close()
    transport.close()


async def test_refused_flows_get_port_unreachable_and_are_published_once() -> None:
    transport, echo = await server(Echo)
    host, port = echo.split(":")
    config = PyslirpConfig(
        dns={"enabled": False},
        services={5000: ServiceConfig(port=int(port), host=host, protocol="udp", max_connections=2,
                                      rate_limit=RateLimit(connections_per_second=0.01, burst=3)),
                  6000: ServiceConfig(port=int(port), host=host, protocol="udp")},
        security={"blocked_ports": [6000]},
    )
    loop = asyncio.get_running_loop()
    relay, to_client, refused, observer = relay_for(config, loop.time, max_flows=8)
    for client_port in (1, 2, 3):  # the third: the service's two flows are open
        relay.datagram(datagram(client_port, 5000, b"x"))
    relay.datagram(datagram(1, 5000, b"y"))  # an open flow's datagrams pass without a check
    relay.datagram(datagram(4, 6000))
    relay.datagram(datagram(5, DNS_PORT))  # DNS is off
    relay.datagram(datagram(6, 7000))  # no service there (the stack answers these itself)
    await until(lambda: len(to_client) == 3)
    assert sorted(payload for _, _, payload, _ in to_client) == [b"answer:x", b"answer:x", b"answer:y"]
    reasons = [(flow.destination[1], reason) for kind, flow, reason in observer.events if kind == "refused"]
    assert reasons == [(5000, "service_full"), (6000, "port_blocked"), (DNS_PORT, "no_service"), (7000, "no_service")]
    assert len(refused) == 4  # each answered with ICMP port unreachable
    assert relay.counters["refused_service_full"] == 1 and relay.counters["dropped_flow_refused"] == 4
    # The flows idle out; then the rate limit (burst 3, two taken) refuses the second new flow.
    relay.sweep_idle(loop.time() + 3600)
    assert not relay.flows and not relay.admission.active
    relay.datagram(datagram(7, 5000, b"x"))
    relay.datagram(datagram(8, 5000, b"x"))
    assert relay.counters["refused_rate_limit"] == 1
    relay.close()
    transport.close()


async def test_new_flows_beyond_the_cap_are_refused_and_open_ones_go_on() -> None:
    transport, echo = await server(Echo)
    host, port = echo.split(":")
    config = PyslirpConfig(dns={"enabled": False},
                           services={5000: ServiceConfig(port=int(port), host=host, protocol="udp")})
    loop = asyncio.get_running_loop()
    relay, to_client, refused, _ = relay_for(config, loop.time, max_flows=2)
    for client_port in (1, 2, 3):
        relay.datagram(datagram(client_port, 5000, b"x"))
    assert relay.counters["refused_flow_cap"] == 1 and len(refused) == 1 and refused[0].src_port == 3
    relay.datagram(datagram(1, 5000, b"again"))
    await until(lambda: len(to_client) == 3)
    assert {(client, payload) for _, client, payload, _ in to_client} == {
        (1, b"answer:x"), (2, b"answer:x"), (1, b"answer:again")
    }
    relay.close()
    transport.close()
