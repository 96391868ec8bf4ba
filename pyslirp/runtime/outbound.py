"""Outbound routing: the client's flows to addresses other than ours.

``outbound.mode`` decides what they get: ``refuse`` (the default) an RST or ICMP unreachable,
refused ``no_route``; ``socks`` a connection through the SOCKS5 proxy of the ``socks`` section
(UDP too when ``socks.udp``, by UDP ASSOCIATE); ``direct`` a connection or UDP socket the host
opens itself, as SLiRP does. The policy lists apply in both modes, in this
order: ``deny`` (and the host's own loopback, link-local, multicast and ``0.0.0.0/8``, unless
``allow`` names them) refuses ``outbound_denied``; a non-empty ``allow`` that does not hold the
destination refuses ``outbound_not_allowed``; ``ports`` that do not hold its port refuse
``outbound_port``. What passes is one route, the service ``outbound``, through the same checks
as every service (its ``max_connections``, the security section's rate limits and port policy).

With ``socks.remote_dns``, an address of ``outbound.fake_ip_range`` stands for a name the proxy
resolves (:mod:`pyslirp.runtime.fake_names`): the flow's target is the name, and ``allow`` does
not judge it (the proxy picks the address; ``deny`` and ``ports`` still apply). One the pool does
not know (never handed out, or expired) is refused ``outbound_unknown_name``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING

from pyslirp.config_records import ServiceRecord
from pyslirp.runtime.admission import OUTBOUND_PORT, Admitted, Refused
from pyslirp.runtime.connector import open_tcp
from pyslirp.runtime.fake_names import FakeNames
from pyslirp.runtime.socks5 import socks5_connect

if TYPE_CHECKING:
    from pyslirp.config import OutboundConfig, ServiceConfig, SocksConfig

#: never reached unless ``allow`` names them: the host's own and no one's addresses
HOST_LOCAL = tuple(
    IPv4Network(net) for net in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3")
)


class Networks:
    """A list of networks to test an address against, as integers (``in`` on IPv4Network costs
    a microsecond or more each, per connection)."""

    def __init__(self, networks: Sequence[IPv4Network]) -> None:
        self._masks = tuple((int(net.network_address), int(net.netmask)) for net in networks)

    def __bool__(self) -> bool:
        return bool(self._masks)

    def __contains__(self, address: IPv4Address) -> bool:
        value = int(address)
        for network, mask in self._masks:
            if value & mask == network:
                return True
        return False


_HOST_LOCAL = Networks(HOST_LOCAL)


class OutboundRoutes:
    """The route of flows to other addresses, and the connector of each admitted one."""

    def __init__(
        self, outbound: OutboundConfig, socks: SocksConfig, now: Callable[[], float] = time.monotonic,
        names: FakeNames | None = None,
    ) -> None:
        """``names``: the pool of the configuration before a reload, kept if it still applies."""
        self.config = outbound
        self.socks = socks
        self.allow, self.deny = Networks(outbound.allow), Networks(outbound.deny)
        self.ports = frozenset(outbound.ports) if outbound.ports is not None else None
        self.mode = outbound.mode if outbound.mode != "socks" or socks.enabled else "refuse"
        self.timeout = socks.connect_timeout if self.mode == "socks" else outbound.connect_timeout
        #: outbound UDP: direct, or through a proxy that relays it (``udp_socks``)
        self.udp = self.mode == "direct" or (self.mode == "socks" and socks.udp)
        self.udp_socks = socks if self.mode == "socks" and socks.udp else None
        #: the names the proxy resolves, by the address that stands for each
        self.names: FakeNames | None = None
        if self.mode == "socks" and socks.remote_dns:
            self.names = names if names is not None and names.network == outbound.fake_ip_range else FakeNames(
                outbound.fake_ip_range, now
            )
        # The service outbound flows are accounted and labelled as (its host and port are unused:
        # each flow's destination is its target).
        self.admitted = {
            protocol: Admitted(
                ServiceRecord(name="outbound", port=1, protocol=protocol, max_connections=outbound.max_connections,
                              connect_timeout=self.timeout, connect_retries=0, auth_service=False),
                OUTBOUND_PORT,
            )
            for protocol in ("tcp", "udp")
        }

    def route(self, destination: IPv4Address, port: int, protocol: str = "tcp") -> Admitted | Refused:
        if self.mode == "refuse" or (protocol == "udp" and not self.udp):
            return Refused("no_route")
        names = self.names
        named = names is not None and destination in names
        if named and names.name_for(destination) is None:  # type: ignore[union-attr]
            return Refused("outbound_unknown_name", "outbound")
        allowed = named or destination in self.allow
        if destination in self.deny or (not allowed and destination in _HOST_LOCAL):
            return Refused("outbound_denied", "outbound")
        if self.allow and not allowed:
            return Refused("outbound_not_allowed", "outbound")
        if self.ports is not None and port not in self.ports:
            return Refused("outbound_port", "outbound")
        return self.admitted[protocol]

    def target(self, destination: IPv4Address) -> IPv4Address | str:
        """What an admitted flow to ``destination`` goes to: the address, or the name it stands for."""
        if self.names is not None and destination in self.names:
            return self.names.name_for(destination) or destination
        return destination

    def connector(self, destination: IPv4Address, port: int) -> "DirectConnector | SocksConnector":
        if self.mode == "socks":
            return SocksConnector(self.socks, self.target(destination), port)
        return DirectConnector(destination, port, self.timeout)


class DirectConnector:
    """The host connects to the destination itself."""

    def __init__(self, destination: IPv4Address, port: int, timeout: float) -> None:
        self.destination, self.port, self.timeout = destination, port, timeout

    def describe(self) -> str:
        return f"{self.destination}:{self.port} (direct)"

    def connect_now(self) -> socket.socket | None:
        return None

    async def connect(self) -> socket.socket:
        return await open_tcp(str(self.destination), self.port, self.timeout)


class SocksConnector:
    """Through the SOCKS5 proxy, which connects to the destination."""

    def __init__(self, socks: SocksConfig, destination: IPv4Address | str, port: int) -> None:
        self.socks, self.destination, self.port = socks, destination, port

    def describe(self) -> str:
        return f"{self.destination}:{self.port} via socks {self.socks.host}:{self.socks.port}"

    def connect_now(self) -> socket.socket | None:
        return None

    async def connect(self) -> socket.socket:
        socks = self.socks
        return await socks5_connect(
            socks.host, socks.port, self.destination, self.port, socks.connect_timeout, socks.username, socks.password
        )
