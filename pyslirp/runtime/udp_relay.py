"""UDP relays: the client's datagrams to a UDP service or to the DNS upstream, and the replies back.

Each flow (client port, our port) gets its own connected host UDP socket, so replies find their
way back without any parsing; a flow idle past its timeout is closed, and the number of flows
is bounded (the oldest goes first, counted). DNS at ``local_ip:53`` is one such relay, to the
upstream resolver; at most ``MAX_DNS_IN_FLIGHT`` of its queries wait for an answer at once (a
query unanswered after the DNS timeout counts as a failure), and a query beyond that is dropped
and counted, so a client flooding queries cannot flood the resolver.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict, deque
from pathlib import Path
from typing import Callable

from pyslirp.counters import CounterSet, CounterSpec

log = logging.getLogger(__name__)

MAX_FLOWS = 256
MAX_DNS_IN_FLIGHT = 128

RELAY_COUNTERS = CounterSet("udp_relay", [
    CounterSpec("datagrams", "datagrams from the client relayed"),
    CounterSpec("replies", "datagrams from the host relayed to the client"),
    CounterSpec("errors", "errors reported by the host sockets"),
    CounterSpec("flows_evicted", "idle-oldest flows closed to make room"),
    CounterSpec(
        "dropped", "datagrams from the client dropped, by reason",
        reasons=("too_many_flows", "upstream_unreachable", "dns_in_flight"),
    ),
    CounterSpec("dns_queries", "DNS queries from the client forwarded to the upstream resolver"),
    CounterSpec("dns_answers", "DNS answers from the upstream resolver relayed to the client"),
    CounterSpec("dns_failures", "DNS queries lost to an unreachable, failing or silent upstream resolver"),
])
DNS_PORT = 53


def system_resolver(resolv_conf: Path = Path("/etc/resolv.conf")) -> tuple[str, int] | None:
    """The first IPv4 nameserver in resolv.conf."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and ":" not in fields[1]:
            return fields[1], DNS_PORT
    return None


def parse_upstream(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    return (host, int(port)) if port else (text, DNS_PORT)


class _Flow(asyncio.DatagramProtocol):
    def __init__(self, relay: "UDPRelay", client_port: int, our_port: int) -> None:
        self.relay = relay
        self.client_port = client_port
        self.our_port = our_port
        self.transport: asyncio.DatagramTransport | None = None
        self.last_activity = relay.now()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last_activity = self.relay.now()
        self.relay.counters["replies"] += 1
        if self.our_port == DNS_PORT:
            self.relay.counters["dns_answers"] += 1
            self.relay.dns_settled(1)
        self.relay.send_to_client(self.our_port, self.client_port, data)

    def error_received(self, exc: Exception) -> None:
        self.relay.counters["errors"] += 1
        if self.our_port == DNS_PORT:
            self.relay.counters["dns_failures"] += 1
            self.relay.dns_settled(1)
        log.debug("udp flow :%d -> %d: %s", self.client_port, self.our_port, exc)


class UDPRelay:
    """Relays datagrams for the ports in ``targets`` (our port -> (host, port))."""

    def __init__(
        self,
        targets: dict[int, tuple[str, int]],
        send_to_client: Callable[[int, int, bytes], None],
        now: Callable[[], float],
        idle_timeout: float = 60.0,
        dns_timeout: float = 5.0,
        max_dns_in_flight: int = MAX_DNS_IN_FLIGHT,
    ) -> None:
        self.targets = targets
        self.send_to_client = send_to_client
        self.now = now
        self.idle_timeout = idle_timeout
        self.dns_timeout = dns_timeout
        self.max_dns_in_flight = max_dns_in_flight
        #: when each DNS query still unanswered was sent, oldest first
        self._dns_waiting: deque[float] = deque()
        self.flows: OrderedDict[tuple[int, int], _Flow] = OrderedDict()
        self._opening: dict[tuple[int, int], list[bytes]] = {}
        self.counters: Counter[str] = Counter()

    @property
    def ports(self) -> frozenset[int]:
        return frozenset(self.targets)

    def datagram(self, client_port: int, our_port: int, payload: bytes) -> None:
        key = (client_port, our_port)
        if our_port == DNS_PORT:
            now = self.now()
            self._expire_dns(now)
            if len(self._dns_waiting) >= self.max_dns_in_flight:
                self.counters["dropped_dns_in_flight"] += 1
                return
            self._dns_waiting.append(now)
            self.counters["dns_queries"] += 1
        self.counters["datagrams"] += 1
        flow = self.flows.get(key)
        if flow is not None and flow.transport is not None:
            self.flows.move_to_end(key)
            flow.last_activity = self.now()
            flow.transport.sendto(payload)
            return
        if key in self._opening:
            self._opening[key].append(payload)
            return
        if len(self.flows) + len(self._opening) >= MAX_FLOWS:
            if not self.flows:
                self.counters["dropped_too_many_flows"] += 1
                return
            _, oldest = self.flows.popitem(last=False)
            self.counters["flows_evicted"] += 1
            if oldest.transport is not None:
                oldest.transport.close()
        self._opening[key] = [payload]
        asyncio.get_running_loop().create_task(self._open(key))

    async def _open(self, key: tuple[int, int]) -> None:
        client_port, our_port = key
        loop = asyncio.get_running_loop()
        try:
            _, flow = await loop.create_datagram_endpoint(
                lambda: _Flow(self, client_port, our_port), remote_addr=self.targets[our_port]
            )
        except OSError as exc:
            lost = len(self._opening.pop(key, ()))
            self.counters["dropped_upstream_unreachable"] += lost
            if our_port == DNS_PORT:
                self.counters["dns_failures"] += lost
                self.dns_settled(lost)
            log.warning("udp :%d: cannot reach %s:%d: %s", our_port, *self.targets[our_port], exc.strerror or exc)
            return
        self.flows[key] = flow
        for payload in self._opening.pop(key, ()):
            flow.transport.sendto(payload)  # type: ignore[union-attr]

    def dns_settled(self, count: int) -> None:
        """``count`` queries were answered or failed: the oldest waiting are taken as those."""
        waiting = self._dns_waiting
        for _ in range(min(count, len(waiting))):
            waiting.popleft()

    def _expire_dns(self, now: float) -> None:
        waiting = self._dns_waiting
        while waiting and now - waiting[0] > self.dns_timeout:
            waiting.popleft()
            self.counters["dns_failures"] += 1

    def sweep_idle(self, now: float) -> None:
        self._expire_dns(now)
        for key, flow in list(self.flows.items()):
            if now - flow.last_activity > self.idle_timeout:
                del self.flows[key]
                if flow.transport is not None:
                    flow.transport.close()

    def close(self) -> None:
        for flow in self.flows.values():
            if flow.transport is not None:
                flow.transport.close()
        self.flows.clear()
        self._opening.clear()
