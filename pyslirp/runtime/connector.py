"""Connectors: how a flow the admission let through reaches its host socket.

A connector turns a target into a connected, non-blocking socket. :class:`ServiceConnector`
connects to a configured service; the outbound routes (SOCKS5, direct egress) are connectors of
their own behind the same two calls:

* :meth:`Connector.connect_now` — a socket connected within the call, or None. A service on a
  loopback address completes its handshake inside ``connect()`` itself, so the client's SYN-ACK
  can go out in the same flush that read its SYN.
* :meth:`Connector.connect` — the asynchronous way, bounded by the target's timeout; it raises
  :class:`ConnectFailed` with a reason fit for a log line and a counter.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
from typing import TYPE_CHECKING, MutableMapping, Protocol

if TYPE_CHECKING:
    from pyslirp.config import ServiceConfig


log = logging.getLogger(__name__)


#: how a failed connect is answered to the client: RST, or the ICMP error a router on the path
#: would send (RFC 1812 §4.3.2; Linux aborts a connect on it at once, RFC 1122 §4.2.3.9)
RST = "rst"
NET_UNREACHABLE = "net_unreachable"
HOST_UNREACHABLE = "host_unreachable"
TTL_EXPIRED = "ttl_expired"


class ConnectFailed(Exception):
    """The target could not be reached; ``reason`` says why ("timeout", "Connection refused"),
    ``answer`` how the client is told (RST, or one of the ICMP errors above)."""

    def __init__(self, reason: str, answer: str = RST) -> None:
        super().__init__(reason)
        self.reason = reason
        self.answer = answer


class Connector(Protocol):
    def connect_now(self) -> socket.socket | None: ...
    async def connect(self) -> socket.socket: ...
    def describe(self) -> str: ...


#: the first wait before a connect is tried again; it doubles each retry
RETRY_FIRST_DELAY = 0.25


class ServiceConnector:
    """Connects to one configured service: ``host:port`` (by address or by name), then its
    ``backends`` in order when it fails (``balance: failover``), or starting from the next target
    each time (``round_robin``). Each target gets the service's ``connect_timeout``.

    When every target refused or was unreachable at once (a service restarting), the round is
    tried again up to ``connect_retries`` times, waiting 0.25 s, 0.5 s, ... between rounds, as
    long as the whole stays within ``connect_timeout``. Meanwhile the client's SYN goes
    unanswered and is retransmitted (Linux gives up after 127 s), so the retries fit well within
    its patience; a round that timed out is not tried again."""

    def __init__(self, service: ServiceConfig, counters: MutableMapping[str, int] | None = None) -> None:
        self.service = service
        self.targets = service.targets()
        self.counters: MutableMapping[str, int] = counters if counters is not None else {}
        self._next = 0  # round robin: the target the next connection starts from
        #: each target's socket family when it is a loopback address (connect_now's), else None:
        #: worked out once, not per connection
        self._loopback = [_loopback_family(host) for host, _ in self.targets]

    def describe(self) -> str:
        first = f"{self.service.host}:{self.service.port}"
        return first if len(self.targets) == 1 else f"{first} (+{len(self.targets) - 1} backends)"

    def _order(self) -> list[tuple[str, int]]:
        if self.service.balance == "failover" or len(self.targets) == 1:
            return self.targets
        start = self._next
        self._next = (start + 1) % len(self.targets)
        return self.targets[start:] + self.targets[:start]

    def connect_now(self) -> socket.socket | None:
        """A socket already connected if the first target listens on a loopback address; None
        when it is elsewhere, by name (resolving would block), or not (yet) accepting."""
        index = self._next if self.service.balance == "round_robin" else 0
        family = self._loopback[index]
        if family is None:
            return None
        host, port = self.targets[index]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if sock.connect_ex((host, port)) in (0, errno.EINPROGRESS):
                sock.getpeername()  # raises unless the handshake is done
                if self.service.balance == "round_robin":
                    self._next = (self._next + 1) % len(self.targets)
                return sock
        except OSError:
            pass
        sock.close()
        return None

    async def connect(self) -> socket.socket:
        """Connect to the first target that accepts, each within ``connect_timeout``, in rounds
        as the class says; when none does, ConnectFailed says why the last one failed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.service.connect_timeout
        delay = RETRY_FIRST_DELAY
        retries = self.service.connect_retries
        while True:
            try:
                return await self._connect_round()
            except ConnectFailed as exc:
                if exc.reason == "timeout" or not retries or loop.time() + delay >= deadline:
                    raise
            retries -= 1
            self.counters["connect_retries"] = self.counters.get("connect_retries", 0) + 1
            await asyncio.sleep(delay)
            delay *= 2

    async def _connect_round(self) -> socket.socket:
        failure = ConnectFailed("no target")
        for host, port in self._order():
            try:
                return await self._connect_one(host, port)
            except ConnectFailed as exc:
                if len(self.targets) > 1:
                    log.info("service %s: %s:%d failed (%s)", self.service.name or self.service.port, host, port,
                             exc.reason)
                failure = exc
        raise failure

    async def _connect_one(self, host: str, port: int) -> socket.socket:
        try:
            return await open_tcp(host, port, self.service.connect_timeout)
        except ConnectFailed as exc:
            exc.answer = RST  # the service is at our address: it refuses, whatever the path to it
            raise


def _loopback_family(host: str) -> socket.AddressFamily | None:
    """AF_INET or AF_INET6 for a loopback address; None for any other address, or a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not address.is_loopback:
        return None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


#: what a direct connect's error tells the client (any other: RST)
_ERRNO_ANSWERS = {errno.ENETUNREACH: NET_UNREACHABLE, errno.EHOSTUNREACH: HOST_UNREACHABLE}


async def open_tcp(host: str, port: int, timeout: float) -> socket.socket:
    """A connected non-blocking socket to ``host`` (an address, or a name resolved without
    blocking) within ``timeout`` seconds, else ConnectFailed naming the errno."""
    try:
        return await asyncio.wait_for(_resolve_and_connect(host, port), timeout)
    except asyncio.TimeoutError:
        raise ConnectFailed("timeout") from None
    except socket.gaierror as exc:
        raise ConnectFailed(f"cannot resolve {host}: {exc.strerror}") from None
    except OSError as exc:
        # asyncio words its own message ("Connect call failed ..."): name the errno instead
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConnectFailed(reason, _ERRNO_ANSWERS.get(exc.errno or 0, RST)) from None


async def _resolve_and_connect(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError = OSError(errno.EHOSTUNREACH, "no address")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error
