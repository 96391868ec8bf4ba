"""Reverse forwards (SLiRP's redir): a host port whose clients are connected into the PPP client.

Each forward listens on ``listen_host:listen_port``. A host client from outside the forward's
``allowed_remotes`` networks (default: loopback only) is closed at once; so is one that arrives
while no link is up. Both are counted (``FORWARD_COUNTERS``), logged and audited. An admitted one
is handed to a pipe the gateway opens to the client's ``peer_port``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from ipaddress import ip_address
from typing import TYPE_CHECKING

from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.runtime.listening import listen, passive_addresses

if TYPE_CHECKING:
    from pyslirp.config import ForwardConfig

log = logging.getLogger(__name__)

#: connections a forward's socket queues before the gate accepts them (asyncio's create_server's)
FORWARD_BACKLOG = 100

FORWARD_COUNTERS = CounterSet("forward", [
    CounterSpec("accepted", "host clients of a reverse forward connected into the client"),
    CounterSpec("refused", "host clients of a reverse forward closed at once, by reason",
                reasons=("remote_not_allowed", "no_link")),
])

#: (the forward, a label) -> a protocol piping into its client, or None when no link is up
OpenReverse = Callable[["ForwardConfig", str], "asyncio.Protocol | None"]


class ForwardError(Exception):
    """A forward's port cannot be listened on; ``str()`` names the address and the reason."""


class ForwardGate(asyncio.Protocol):
    """The first protocol of a forward's host client: screens its address, then hands the
    transport to the pipe into the client."""

    def __init__(
        self,
        forward: ForwardConfig,
        open_reverse: OpenReverse,
        counters: Counter[str],
        record: Callable[..., None],
    ) -> None:
        self.forward = forward
        self.open_reverse = open_reverse
        self.counters = counters
        self.record = record

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        forward = self.forward
        label = f"{forward.listen_host}:{forward.listen_port}"
        remote, remote_port = transport.get_extra_info("peername")[:2]
        address = ip_address(remote)
        if not any(address in network for network in forward.allowed_remotes):
            self._refuse(transport, "remote_not_allowed", remote, remote_port)
            return
        pipe = self.open_reverse(forward, f"{label} -> client:{forward.peer_port}")
        if pipe is None:
            self._refuse(transport, "no_link", remote, remote_port)
            return
        self.counters["accepted"] += 1
        transport.set_protocol(pipe)
        pipe.connection_made(transport)

    def _refuse(self, transport: asyncio.BaseTransport, reason: str, remote: str, remote_port: int) -> None:
        forward = self.forward
        self.counters[FORWARD_COUNTERS.key("refused", reason)] += 1
        log.info("reverse forward %s:%d: %s:%d closed: %s", forward.listen_host, forward.listen_port, remote,
                 remote_port, reason)
        self.record("connection_refused", src=remote, sport=remote_port, dport=forward.listen_port, proto="tcp",
                    direction="reverse", reason=reason)
        transport.close()


async def start_forwards(
    forwards: list[ForwardConfig], open_reverse: OpenReverse, counters: Counter[str], record: Callable[..., None]
) -> list[asyncio.AbstractServer]:
    """Listen for each forward; ForwardError names the address that could not be opened."""
    loop = asyncio.get_running_loop()
    servers = []
    try:
        for forward in forwards:
            def gate(forward: ForwardConfig = forward) -> asyncio.Protocol:
                return ForwardGate(forward, open_reverse, counters, record)

            try:
                for address_info in passive_addresses(forward.listen_host, forward.listen_port):
                    listening = listen(address_info, FORWARD_BACKLOG)
                    servers.append(await loop.create_server(gate, sock=listening))
            except OSError as exc:
                raise ForwardError(
                    f"forwards: cannot listen on {forward.listen_host}:{forward.listen_port}: {exc.strerror or exc}"
                ) from None
            log.info("forwarding %s:%d to the client's port %d (from %s)", forward.listen_host, forward.listen_port,
                     forward.peer_port, ", ".join(str(network) for network in forward.allowed_remotes))
    except ForwardError:
        for server in servers:
            server.close()
        raise
    return servers
