"""The UDP relay's cost (pytest-benchmark): a datagram on a flow already admitted and open (what
every datagram after a flow's first pays: a dict lookup and a send on its connected socket),
and a new flow refused by the admission pipeline (the route, the checks, the count, the
observers and the ICMP port unreachable the stack builds and rate-limits). extra_info records
microseconds per datagram.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

from pyslirp.config import PyslirpConfig
from pyslirp.net import ipv4, udp
from pyslirp.net.stack import Stack, UDPDatagram
from pyslirp.runtime.admission import Admission
from pyslirp.runtime.security import security_pipeline
from pyslirp.runtime.udp_relay import UDPRelay

LOCAL = IPv4Address("10.0.0.1")
PEER = IPv4Address("10.0.0.2")
N = 10_000


def datagram(client_port: int, our_port: int) -> UDPDatagram:
    payload = b"q" * 40
    packet = ipv4.build(PEER.packed, LOCAL.packed, ipv4.PROTO_UDP, udp.build(PEER.packed, LOCAL.packed, client_port,
                                                                             our_port, payload), 1)
    return UDPDatagram(PEER.packed, client_port, our_port, payload, packet)


def relay_on(config: PyslirpConfig, stack: Stack) -> UDPRelay:
    checks = security_pipeline(config, clock=lambda: 0.0, schedule=lambda delay, callback: None).checks
    admission = Admission(config.services, LOCAL, checks)
    loop = asyncio.get_event_loop()
    return UDPRelay(admission, stack.send_udp, stack.refuse_udp, loop.time)


def test_datagram_on_an_open_flow(benchmark) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    sink, _ = loop.run_until_complete(
        loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    )
    port = sink.get_extra_info("sockname")[1]
    config = PyslirpConfig(dns={"enabled": False}, services={5000: {"port": port, "protocol": "udp"}})
    relay = relay_on(config, Stack(LOCAL, PEER, 1500))
    first = datagram(40000, 5000)

    async def open_flow() -> None:
        relay.datagram(first)
        while relay.counters["flows_opened"] == 0:
            await asyncio.sleep(0.001)

    loop.run_until_complete(open_flow())

    def relay_all() -> None:
        for _ in range(N):
            relay.datagram(first)

    benchmark(relay_all)
    benchmark.extra_info["us/datagram"] = round(benchmark.stats.stats.median / N * 1e6, 3)
    relay.close()
    sink.close()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def test_a_refused_flow(benchmark) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    config = PyslirpConfig(dns={"enabled": False}, services={5000: {"port": 9, "protocol": "udp"}},
                           security={"blocked_ports": [5000]})
    stack = Stack(LOCAL, PEER, 1500)
    relay = relay_on(config, stack)
    datagrams = [datagram(1024 + i, 5000) for i in range(N)]
    clock = [0.0]

    def refuse_all() -> None:
        for item in datagrams:
            clock[0] += 1.0  # the ICMP bucket always has a token: each refusal builds its error
            stack._now = clock[0]
            relay.datagram(item)
        stack.take_output()

    benchmark(refuse_all)
    assert relay.counters["refused_port_blocked"] >= N and stack.counters["icmp_errors_ratelimited"] == 0
    benchmark.extra_info["us/datagram"] = round(benchmark.stats.stats.median / N * 1e6, 3)
    loop.close()
