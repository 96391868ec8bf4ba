"""Names the SOCKS5 proxy resolves (``socks.remote_dns``, as ``socks5h`` clients do).

The client still asks for an address before it connects. The DNS relay answers its A queries
with an address from ``outbound.fake_ip_range`` (by default 100.64.0.0/10, the RFC 6598 shared
space, which no real destination of ours uses) and remembers the name; a connection to that
address then hands the proxy the name. An entry lives ``2 * TTL`` after it was last handed out
(the client may cache the answer for TTL, and connect late in it); the pool is bounded, and when
it is full the entry handed out longest ago gives way.
"""

from __future__ import annotations

from collections import OrderedDict
from ipaddress import IPv4Address, IPv4Network
from typing import Callable

#: what the client may cache an answer for, seconds
TTL = 60
#: entries at most, whatever the range's size
CAPACITY = 65536


class FakeNames:
    def __init__(self, network: IPv4Network, now: Callable[[], float], ttl: int = TTL, capacity: int = CAPACITY) -> None:
        self.network = network
        self.now = now
        self.ttl = ttl
        self._first = int(network.network_address) + 1  # neither the network nor the broadcast address
        self.size = min(max(network.num_addresses - 2, 0), capacity)
        self._by_name: dict[str, int] = {}
        #: address offset -> (name, expiry), the entry handed out longest ago first
        self._entries: OrderedDict[int, tuple[str, float]] = OrderedDict()
        self.evicted = 0

    def __contains__(self, address: IPv4Address) -> bool:
        return 0 <= int(address) - self._first < self.size

    def address_for(self, name: str) -> bytes:
        """The address that stands for ``name`` (the same one while the entry lives)."""
        expiry = self.now() + 2 * self.ttl
        offset = self._by_name.get(name)
        if offset is None:
            offset = self._free_offset()
            self._by_name[name] = offset
        self._entries[offset] = (name, expiry)
        self._entries.move_to_end(offset)
        return (self._first + offset).to_bytes(4, "big")

    def name_for(self, address: IPv4Address) -> str | None:
        """The name ``address`` stands for, or None (never handed out, or expired)."""
        entry = self._entries.get(int(address) - self._first)
        if entry is None or entry[1] < self.now():
            return None
        return entry[0]

    def __len__(self) -> int:
        return len(self._entries)

    def _free_offset(self) -> int:
        if len(self._entries) < self.size:  # filling up: offsets are taken in order
            return len(self._entries)
        offset, (name, expiry) = next(iter(self._entries.items()))  # handed out longest ago
        if expiry >= self.now():
            self.evicted += 1
        del self._entries[offset]
        del self._by_name[name]
        return offset
