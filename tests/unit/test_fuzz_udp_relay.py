"""Fuzzing the UDP relay and the DNS relay (pyslirp/runtime/udp_relay.py) through the stack: the
client's datagrams (the captured DNS queries mutated, and random ones) to the DNS relay, to UDP
services and to ports nobody serves, and the "servers'" answers: replies of any content to any
flow, errors, silence past the timeouts.

Whatever arrives, nothing raises (nor in the relay's tasks), the DNS queries waiting are the sum
of every flow's, the open flows are what the admission accounts, the caps hold, every count is
declared, and closing the relay leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))
import fuzzing  # noqa: E402

from pyslirp.config import PyslirpConfig  # noqa: E402
from pyslirp.net import icmp, ipv4, udp  # noqa: E402
from pyslirp.net.stack import Stack, UDPDatagram  # noqa: E402
from pyslirp.runtime.admission import Admission  # noqa: E402
from pyslirp.runtime.udp_relay import DNS_PORT, RELAY_COUNTERS, UDPRelay, dns_relay, udp_ports  # noqa: E402

LOCAL = IPv4Address("10.0.0.1")
PEER = IPv4Address("10.0.0.2")
#: a service whose server takes datagrams and answers when a step says; one where nothing listens
#: (the host answers ICMP port unreachable); a port no service maps
SILENT_SERVICE, CLOSED_SERVICE, UNSERVED = 5000, 5001, 5002
MAX_FLOWS, MAX_DNS_IN_FLIGHT = 4, 3


@dataclass(frozen=True)
class FromClient:
    client_port: int
    our_port: int
    payload: bytes


@dataclass(frozen=True)
class ServerAnswers:
    """A datagram from the host socket of one open flow (which, by its index)."""

    flow: int
    payload: bytes


@dataclass(frozen=True)
class ServerFails:
    """An ICMP error on the host socket of one open flow."""

    flow: int


@dataclass(frozen=True)
class TimePasses:
    seconds: float


captured_dns = [d[(d[0] & 0x0F) * 4 + 8 :] for d in fuzzing.datagrams_of(ipv4.PROTO_UDP)]
payloads = fuzzing.mutated(captured_dns) | st.binary(max_size=64)
steps = st.lists(
    st.one_of(
        st.builds(FromClient, st.integers(1024, 1031),
                  st.sampled_from([DNS_PORT, DNS_PORT, SILENT_SERVICE, CLOSED_SERVICE, UNSERVED]), payloads),
        st.builds(ServerAnswers, st.integers(0, 7), payloads),
        st.builds(ServerFails, st.integers(0, 7)),
        st.builds(TimePasses, st.sampled_from([0.0, 0.1, 1.0, 6.0, 61.0])),
    ),
    min_size=1, max_size=24,
)


def assert_consistent(relay: UDPRelay, admission: Admission) -> None:
    assert relay.dns_in_flight == sum(flow.queries for flow in relay.flows.values())
    assert 0 <= relay.dns_in_flight <= MAX_DNS_IN_FLIGHT
    assert len(relay.flows) <= MAX_FLOWS
    assert sum(admission.active.values()) == len(relay.flows)
    assert relay.counters.keys() <= RELAY_COUNTERS.all_keys()


def assert_well_formed(stack: Stack) -> None:
    """What goes to the client: UDP replies from our address, or ICMP port unreachable."""
    for packet, _interactive in stack.take_output():
        header = ipv4.parse(packet)
        payload = packet[header.header_length :]
        if header.protocol == ipv4.PROTO_UDP:
            udp.parse(header.src, header.dst, payload)
        else:
            assert header.protocol == ipv4.PROTO_ICMP and payload[0] == icmp.DEST_UNREACHABLE


async def run_relay(steps: list[object], upstream: str) -> None:
    clock = [0.0]
    config = PyslirpConfig(
        dns={"upstream": upstream},
        services={SILENT_SERVICE: {"port": int(upstream.rpartition(":")[2]), "protocol": "udp"},
                  CLOSED_SERVICE: {"port": 9, "protocol": "udp"}},
    )
    relays = dns_relay(config)
    stack = Stack(LOCAL, PEER, 1500, udp_ports=udp_ports(config, relays))
    admission = Admission(config.services, LOCAL, relays=relays)
    relay = UDPRelay(
        admission, lambda ours, client, data, to: stack.send_udp(ours, client, data, to), stack.refuse_udp,
        lambda: clock[0], max_flows=MAX_FLOWS, max_dns_in_flight=MAX_DNS_IN_FLIGHT,
    )
    tasks: set[asyncio.Task[None]] = set()
    for step in steps:
        if isinstance(step, FromClient):
            packet = udp.build(PEER.packed, LOCAL.packed, step.client_port, step.our_port, step.payload)
            stack.receive(ipv4.build(PEER.packed, LOCAL.packed, ipv4.PROTO_UDP, packet, 1), clock[0])
            for event in stack.events():
                assert isinstance(event, UDPDatagram)
                relay.datagram(event)
        elif isinstance(step, TimePasses):
            clock[0] += step.seconds
            relay.sweep_idle(clock[0])
        else:
            open_flows = [flow for flow in relay.flows.values() if flow.transport is not None]
            if open_flows:
                flow = open_flows[step.flow % len(open_flows)]  # type: ignore[attr-defined]
                if isinstance(step, ServerAnswers):
                    flow.datagram_received(step.payload, ("127.0.0.1", 53))
                else:
                    flow.error_received(ConnectionRefusedError())
        tasks |= relay._tasks
        for _ in range(3):  # the host sockets of new flows open
            await asyncio.sleep(0)
        assert_consistent(relay, admission)
        assert_well_formed(stack)
    relay.close()
    assert relay.flows == {} and relay.dns_in_flight == 0 and not admission.active
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(outcome is None or isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)


@pytest.mark.fuzz
@fuzzing.fuzz_settings(weight=0.5)
@given(steps=steps)
def test_client_datagrams_and_server_answers_keep_the_relay_consistent(steps: list[object]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent_server:
        silent_server.bind(("127.0.0.1", 0))
        asyncio.run(run_relay(steps, "127.0.0.1:%d" % silent_server.getsockname()[1]))
