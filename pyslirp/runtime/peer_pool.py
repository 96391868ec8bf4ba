"""The clients' addresses when one process serves several lines: ``ppp.peer_pool``.

Each client of a line that does not fix its ``peer_ip`` leases an address when its link enters
the network phase (RFC 1661 §3.6: IPCP then offers it as the client's address, RFC 1332 §3.3)
and returns it when the link goes down, so a redial gets an address again. Our own address and
the addresses lines fix are never handed out. The lowest free address is leased, so a client
that redials usually gets the one it had.
"""

from __future__ import annotations

import heapq
import logging
from ipaddress import IPv4Address

log = logging.getLogger(__name__)


class PeerPool:
    """Addresses ``first``..``last`` less ``reserved``, leased to one holder each. Memory grows
    with the addresses held, not with the pool's size."""

    def __init__(self, first: IPv4Address, last: IPv4Address, reserved: set[IPv4Address] = frozenset()) -> None:
        self.description = f"{first}-{last}"
        self._reserved = {int(address) for address in reserved}
        self._last = int(last)
        self.size = sum(1 for n in range(int(first), self._last + 1) if n not in self._reserved)
        #: the lowest address never handed out; every one below it is held or returned
        self._next = int(first)
        #: addresses returned, below ``_next``: the lowest is leased first
        self._returned: list[int] = []
        #: address -> the line label holding it
        self.held: dict[IPv4Address, str] = {}

    def lease(self, holder: str) -> AddressLease:
        """A lease for ``holder`` (a line label), empty until the link asks for an address."""
        return AddressLease(self, holder)

    def _take(self, holder: str) -> IPv4Address | None:
        if self._returned:
            number = heapq.heappop(self._returned)
        else:
            while self._next <= self._last and self._next in self._reserved:
                self._next += 1
            if self._next > self._last:
                log.warning(
                    "%s: no address for the client: all %d addresses of ppp.peer_pool %s are in use; "
                    "IPCP is refused until one is returned", holder, self.size, self.description,
                )
                return None
            number = self._next
            self._next += 1
        address = IPv4Address(number)
        self.held[address] = holder
        return address

    def _give_back(self, address: IPv4Address) -> None:
        del self.held[address]
        heapq.heappush(self._returned, int(address))


class AddressLease:
    """One line's claim on the pool: :meth:`acquire` as its link enters the network phase,
    :meth:`release` when the link goes down or the line hangs up."""

    def __init__(self, pool: PeerPool, holder: str) -> None:
        self.pool = pool
        self.holder = holder
        self.address: IPv4Address | None = None

    def acquire(self) -> IPv4Address | None:
        """The address this line's client gets (the one already held, if any); None when the
        pool is exhausted."""
        if self.address is None:
            self.address = self.pool._take(self.holder)
        return self.address

    def release(self) -> None:
        if self.address is not None:
            self.pool._give_back(self.address)
            self.address = None
