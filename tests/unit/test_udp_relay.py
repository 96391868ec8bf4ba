"""The UDP relay's DNS accounting: queries, answers and failures of the upstream resolver."""

from __future__ import annotations

import asyncio
import socket

from pyslirp.runtime.udp_relay import DNS_PORT, RELAY_COUNTERS, UDPRelay


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"answer:" + data, addr)  # type: ignore[attr-defined]


async def test_dns_queries_answers_and_failures_are_counted() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    resolver = transport.get_extra_info("sockname")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:  # a port nobody answers on
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()
    to_client: list[tuple[int, int, bytes]] = []
    relay = UDPRelay({DNS_PORT: resolver}, lambda *a: to_client.append(a), loop.time)
    relay.datagram(40000, DNS_PORT, b"query")
    for _ in range(200):
        if to_client:
            break
        await asyncio.sleep(0.005)
    assert to_client == [(DNS_PORT, 40000, b"answer:query")]
    assert (relay.counters["dns_queries"], relay.counters["dns_answers"]) == (1, 1)
    # An upstream that answers with ICMP port unreachable: a failure.
    relay.targets[DNS_PORT] = dead
    relay.datagram(40001, DNS_PORT, b"query")
    for _ in range(200):
        if relay.counters["dns_failures"]:
            break
        await asyncio.sleep(0.005)
    assert relay.counters["dns_failures"] == 1 and relay.counters["dns_queries"] == 2
    assert RELAY_COUNTERS.undeclared(relay.counters) == []
    relay.close()
    transport.close()


class Silent(asyncio.DatagramProtocol):
    """A resolver that never answers."""


async def test_dns_queries_in_flight_are_capped_and_unanswered_ones_expire() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Silent, local_addr=("127.0.0.1", 0))
    clock = [100.0]
    relay = UDPRelay({DNS_PORT: transport.get_extra_info("sockname")}, lambda *a: None, lambda: clock[0],
                     dns_timeout=5.0, max_dns_in_flight=3)
    for port in range(40000, 40005):
        relay.datagram(port, DNS_PORT, b"query")
    assert relay.counters["dns_queries"] == 3 and relay.counters["dropped_dns_in_flight"] == 2
    clock[0] = 106.0  # past the DNS timeout: the three waiting are failures, room again
    relay.datagram(40005, DNS_PORT, b"query")
    assert relay.counters["dns_failures"] == 3 and relay.counters["dns_queries"] == 4
    relay.sweep_idle(112.0)
    assert relay.counters["dns_failures"] == 4
    assert RELAY_COUNTERS.undeclared(relay.counters) == []
    await asyncio.sleep(0.05)  # let the flows open before closing them
    relay.close()
    transport.close()
