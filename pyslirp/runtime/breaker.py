"""Circuit breakers (``services.N.breaker``): a service that keeps failing to accept is not asked
again for a while.

Per service, after ``failures`` failed connects within ``window`` seconds the breaker **opens**:
new connections to the service are refused ``breaker_open`` by the admission pipeline (RST at
once, no connect attempt) for ``cooldown`` seconds. Then it is **half-open**: one connection is
let through as a probe. If the service accepts it, the breaker **closes**; if not, it opens for
another cooldown. A probe that never comes to a connect (its client gave up, a later check
refused it) is replaced by the next connection after the service's ``connect_timeout``.

:class:`ServiceBreakers` is both the admission check and an observer: it learns of failed
connects from ``connection_refused`` (reason ``service_unavailable``) and of accepted ones from
``connection_opened``. Its state outlives a link (built once per process, carried over a reload).
Changes of state are logged; the state of each breaker shows in ``/status`` and the metrics.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from pyslirp.runtime.admission import Admitted
from pyslirp.runtime.observers import Flow, GatewayObserver

if TYPE_CHECKING:
    from pyslirp.config import BreakerConfig, ServiceConfig

log = logging.getLogger(__name__)


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """One service's breaker (see the module docstring)."""

    def __init__(self, name: str, settings: BreakerConfig, probe_timeout: float) -> None:
        self.name = name
        self.settings = settings
        self.probe_timeout = probe_timeout
        self.state = BreakerState.CLOSED
        self._failures: deque[float] = deque()
        self._until = 0.0  # OPEN: when the cooldown ends; HALF_OPEN: when the probe is given up

    def allow(self, now: float) -> bool:
        """May a new connection try the service now? (In half-open state, this one is the probe.)"""
        if self.state is BreakerState.CLOSED:
            return True
        if now < self._until:
            return False
        if self.state is BreakerState.OPEN:
            self._set(BreakerState.HALF_OPEN, "cooldown over, one probe let through")
        self._until = now + self.probe_timeout
        return True

    def failed(self, now: float) -> None:
        """A connect to the service failed."""
        if self.state is BreakerState.HALF_OPEN:
            self._open(now, "the probe failed")
            return
        failures = self._failures
        failures.append(now)
        while failures[0] <= now - self.settings.window:
            failures.popleft()
        if self.state is BreakerState.CLOSED and len(failures) >= self.settings.failures:
            self._open(now, f"{len(failures)} failed connects within {self.settings.window:g} s")

    def succeeded(self) -> None:
        """The service accepted a connection."""
        self._failures.clear()
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED, "the service accepted")

    def _open(self, now: float, why: str) -> None:
        self._failures.clear()
        self._until = now + self.settings.cooldown
        self._set(BreakerState.OPEN, f"{why}; refusing at once for {self.settings.cooldown:g} s")

    def _set(self, state: BreakerState, why: str) -> None:
        self.state = state
        (log.warning if state is BreakerState.OPEN else log.info)("service %s: breaker %s: %s",
                                                                  self.name, state.value, why)


class ServiceBreakers(GatewayObserver):
    """The breakers of the services that have one: an admission check (refusal ``breaker_open``)
    and an observer of connects."""

    judges_open_flows = False  # a breaker stops new connects, not the connections that made it

    def __init__(self, services: Mapping[int, ServiceConfig], clock: Callable[[], float]) -> None:
        self.clock = clock
        #: our port -> the breaker of the TCP service there
        self.breakers = {
            port: CircuitBreaker(service.name or f"port {port}", service.breaker, service.connect_timeout)
            for port, service in services.items()
            if service.breaker is not None and service.protocol == "tcp"
        }

    def adopt(self, previous: ServiceBreakers) -> None:
        """Keep the state of the breakers whose service is still configured alike (a reload)."""
        for port, breaker in previous.breakers.items():
            mine = self.breakers.get(port)
            if mine is not None and mine.settings == breaker.settings and mine.name == breaker.name:
                self.breakers[port] = breaker

    def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
        if flow.protocol != "tcp":
            return None
        breaker = self.breakers.get(admitted.port)
        if breaker is None or breaker.allow(now):
            return None
        return "breaker_open"

    def connection_opened(self, flow: Flow) -> None:
        breaker = self._breaker(flow)
        if breaker is not None:
            breaker.succeeded()

    def connection_refused(self, flow: Flow, reason: str) -> None:
        if reason == "service_unavailable":
            breaker = self._breaker(flow)
            if breaker is not None:
                breaker.failed(self.clock())

    def _breaker(self, flow: Flow) -> CircuitBreaker | None:
        if flow.reverse or flow.protocol != "tcp":
            return None
        return self.breakers.get(flow.destination[1])

    def states(self) -> dict[str, str]:
        """Each breaker's state by its service's name."""
        return {breaker.name: breaker.state.value for breaker in self.breakers.values()}
