"""Brute-force detection (``security.brute_force``): on the line's PPP logins and on the
authentication services behind it.

``max_failures`` failed PAP/CHAP logins on a line within ``window`` seconds block the line: every
login on it is refused for ``block_time`` (doubled at each repeat), with a message the client's
pppd prints ("Remote message: ..."), whatever the credentials.

A connection to an authentication service (``auth_service: true``; by default the service on
port 22) that ends within ``short_connection`` seconds is counted as a failed login of its client
address, when it has ended (a service that closes first leaves our end in TIME-WAIT for 2 s). ``max_failures`` of them within ``window`` seconds block that address from every
authentication service for ``block_time``, doubled at each repeat (at most a day). While blocked,
new connections to those services are refused ``brute_force`` by the admission pipeline; other
services are not affected. A client address in ``security.allowlist`` is never blocked. Blocks
and their end are audited (``blocked``/``unblocked``) and logged.

The guard keeps no timer of its own: ``schedule(delay, callback)`` (the event loop's
``call_later``) is asked to call :meth:`BruteForceGuard.expire` when a block is due, and an
admission check after that time ends it too.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING

from pyslirp.ppp.link import AuthFailed
from pyslirp.runtime.admission import Admitted
from pyslirp.runtime.observers import ConnectionSummary, Flow, GatewayObserver

if TYPE_CHECKING:
    from pyslirp.config import BruteForceConfig, ServiceConfig

log = logging.getLogger("pyslirp.security")

MAX_BLOCK = 86400.0
MAX_TRACKED = 1024  # keys with recent failures before the stale ones are swept


@dataclass
class _Block:
    until: float
    count: int  # blocks of this address in a row so far: the next one lasts twice as long


class BruteForceGuard(GatewayObserver):
    """An observer of closed connections and an admission check (refusal ``brute_force``)."""

    judges_open_flows = False  # a block stops new logins; a session already open is not one

    def __init__(
        self,
        settings: BruteForceConfig,
        auth_ports: Collection[int],
        allowlist: Collection[IPv4Network],
        clock: Callable[[], float],
        *,
        record: Callable[..., None] = lambda event, **fields: None,
        schedule: Callable[[float, Callable[[], None]], object] = lambda delay, callback: None,
    ) -> None:
        self.settings = settings
        self.auth_ports = frozenset(auth_ports)
        self.allowlist = tuple(allowlist)
        self.clock = clock  # the time the observer methods use (the check is given its own)
        self.record = record  # the audit log's record(event, **fields)
        self.schedule = schedule
        # Keyed by the client's address (the services) or the line's name (PPP logins).
        self._failures: dict[IPv4Address | str, deque[float]] = {}
        self._blocks: dict[IPv4Address | str, _Block] = {}
        #: the last block of each key that had one within MAX_BLOCK seconds (for the doubling)
        self._history: dict[IPv4Address | str, _Block] = {}

    @classmethod
    def from_config(
        cls,
        settings: BruteForceConfig,
        services: Mapping[int, ServiceConfig],
        allowlist: Collection[IPv4Network],
        clock: Callable[[], float],
        **hooks: Callable[..., object],
    ) -> BruteForceGuard:
        ports = [
            port for port, service in services.items() if service.protocol == "tcp" and service.is_auth_service(port)
        ]
        return cls(settings, ports, allowlist, clock, **hooks)

    def adopt(self, previous: BruteForceGuard) -> None:
        """Carry the failures and blocks of the guard this one replaces (a reload)."""
        self._failures = previous._failures
        self._blocks = previous._blocks
        self._history = previous._history

    # -- the admission check ----------------------------------------------------------------------

    def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
        if flow.protocol != "tcp" or admitted.port not in self.auth_ports:
            return None
        block = self._blocks.get(flow.client[0])
        if block is None:
            return None
        if now >= block.until:
            self.expire(now)
            return None
        return "brute_force"

    # -- what the observers hear ----------------------------------------------------------------

    def connection_closed(self, flow: Flow, summary: ConnectionSummary) -> None:
        if flow.reverse or flow.protocol != "tcp" or flow.destination[1] not in self.auth_ports:
            return
        if summary.duration < self.settings.short_connection:
            self.failed_login(flow.client[0], flow.service, self.clock())

    def auth_failed(self, line: str, event: AuthFailed) -> None:
        if event.reason != "blocked":  # refusals while blocked do not extend the block
            self.failed_login(line, "PPP login", self.clock())

    def failed_login(self, key: IPv4Address | str, service: str, now: float) -> None:
        """One failed login of a client address or on a line; blocks it when there were too many
        within the window."""
        if key in self._blocks or (isinstance(key, IPv4Address) and any(key in net for net in self.allowlist)):
            return
        if len(self._failures) >= MAX_TRACKED:
            self._forget_old_failures(now)
        failures = self._failures.setdefault(key, deque())
        failures.append(now)
        while failures and failures[0] <= now - self.settings.window:
            failures.popleft()
        if len(failures) >= self.settings.max_failures:
            del self._failures[key]
            self._block(key, service, now)

    def _forget_old_failures(self, now: float) -> None:
        """Drop the keys whose failures are all past the window (memory stays bounded however
        many client addresses fail once)."""
        horizon = now - self.settings.window
        for key, failures in list(self._failures.items()):
            if failures[-1] <= horizon:
                del self._failures[key]

    def _block(self, key: IPv4Address | str, service: str, now: float) -> None:
        last = self._history.get(key)
        count = last.count + 1 if last is not None and now - last.until < MAX_BLOCK else 1
        duration = min(self.settings.block_time * 2 ** (count - 1), MAX_BLOCK)
        self._blocks[key] = self._history[key] = _Block(now + duration, count)
        settings = self.settings
        if isinstance(key, str):
            log.warning("blocked logins on %s for %.0f s: %d failed within %.0f s",
                        key, duration, settings.max_failures, settings.window)
            self.record("blocked", line=key, reason="brute_force", duration_s=duration)
        else:
            log.warning("blocked %s from the authentication services for %.0f s: %d short connections to %s "
                        "within %.0f s", key, duration, settings.max_failures, service, settings.window)
            self.record("blocked", src=str(key), service=service, reason="brute_force", duration_s=duration)
        self.schedule(duration, lambda: self.expire(self.clock()))

    def login_refusal(self, line: str) -> str | None:
        """The message every PPP login on ``line`` is refused with while it is blocked."""
        block = self._blocks.get(line)
        now = self.clock()
        if block is None or now >= block.until:
            return None
        return f"blocked after too many failed logins; try again in {block.until - now:.0f} s"

    # -- expiry ---------------------------------------------------------------------------------

    def next_expiry(self) -> float | None:
        return min((block.until for block in self._blocks.values()), default=None)

    def expire(self, now: float) -> None:
        """End every block that is due, and forget the blocks that no longer double the next."""
        for key, block in list(self._history.items()):
            if now - block.until >= MAX_BLOCK:
                del self._history[key]
        for key, block in list(self._blocks.items()):
            if now >= block.until:
                del self._blocks[key]
                log.info("unblocked %s", key)
                where = {"line": key} if isinstance(key, str) else {"src": str(key)}
                self.record("unblocked", **where, reason="brute_force")

    def blocked(self) -> dict[str, float]:
        """Blocked addresses and lines, and when each block ends."""
        return {str(key): block.until for key, block in self._blocks.items()}
