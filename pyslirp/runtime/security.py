"""The ``security`` section's checks in the admission pipeline, each a small object built from the
configuration once per process, so that its state (a rate limiter's tokens) outlives a link: a
client cannot reset a limit by dialling again.

In the order :func:`security_pipeline` gives them, after the route and the service's capacity:

1. :class:`PortPolicy` — ``blocked_ports``, then ``allowed_ports`` (null: every enabled service);
   refusals ``port_blocked`` and ``port_not_allowed``;
2. :class:`ConnectionRate` — token buckets of new connections (``rate_limiting``): one for the
   whole gateway, and one per service that sets its own ``rate_limit``; refusal ``rate_limit``;
3. the brute-force guard (:mod:`pyslirp.runtime.brute_force`), which also listens to the
   observers; refusal ``brute_force``;
4. the operator's own check (``security.admission``, :mod:`pyslirp.admission_extension`), last:
   :class:`ExtensionCheck` when it is a plain function; an ``async`` one is awaited by the proxy
   before it connects. Refusals ``denied_by_extension`` and ``admission_error``.

A check that is not configured is not in the list: a feature off costs nothing.
"""

from __future__ import annotations

from collections.abc import Collection

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pyslirp.admission_extension import Extension, FlowInfo, load_check
from pyslirp.runtime.admission import AdmissionCheck, Admitted
from pyslirp.runtime.brute_force import BruteForceGuard
from pyslirp.runtime.observers import Flow

if TYPE_CHECKING:
    from pyslirp.config import PyslirpConfig, RateLimit


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; each admitted connection takes one."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated: float | None = None

    def take(self, now: float) -> bool:
        if self.updated is None or now > self.updated:
            if self.updated is not None:
                self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class PortPolicy:
    """``security.blocked_ports`` and ``security.allowed_ports`` on the port the client opens:
    the service's, or an outbound flow's destination port."""

    judges_open_flows = True

    def __init__(self, blocked: Collection[int], allowed: Collection[int] | None) -> None:
        self.blocked = frozenset(blocked)
        self.allowed = frozenset(allowed) if allowed is not None else None

    def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
        port = flow.destination[1]
        if port in self.blocked:
            return "port_blocked"
        if self.allowed is not None and port not in self.allowed:
            return "port_not_allowed"
        return None


class ConnectionRate:
    """New connections a second, for the gateway as a whole and per service."""

    judges_open_flows = False

    def __init__(self, overall: RateLimit | None, per_service: dict[int, RateLimit]) -> None:
        self.overall = TokenBucket(overall.connections_per_second, overall.burst) if overall is not None else None
        self.per_service = {
            port: TokenBucket(limit.connections_per_second, limit.burst) for port, limit in per_service.items()
        }

    def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
        bucket = self.per_service.get(admitted.port)
        if bucket is not None and not bucket.take(now):
            return "rate_limit"
        if self.overall is not None and not self.overall.take(now):
            return "rate_limit"
        return None


class LineRate:
    """A line's ``rate_limit``: its client's new flows a second, refused ``line_rate_limit``.
    The server keeps the bucket for the line's name, so a redial does not refill it."""

    judges_open_flows = False

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket

    def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
        return None if self.bucket.take(now) else "line_rate_limit"


def flow_info(flow: Flow) -> FlowInfo:
    """What the operator's check is shown of a flow."""
    (src, _), (dst, dport) = flow.client, flow.destination
    return FlowInfo(src, dst, dport, flow.protocol, flow.service)


class ExtensionCheck:
    """A synchronous ``security.admission`` callable as a check."""

    judges_open_flows = True

    def __init__(self, extension: Extension) -> None:
        self.extension = extension

    def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
        return self.extension.decide(flow_info(replace(flow, service=admitted.label)))


@dataclass
class SecurityPipeline:
    """The configured checks in pipeline order, the brute-force guard among them (it also listens
    to the observers), and the operator's check when it is ``async`` (the proxy awaits it)."""

    checks: list[AdmissionCheck]
    guard: BruteForceGuard | None = None
    extension: Extension | None = None


def security_pipeline(
    config: PyslirpConfig,
    *,
    clock: Callable[[], float],
    schedule: Callable[[float, Callable[[], None]], object],
    record: Callable[..., None] = lambda event, **fields: None,
) -> SecurityPipeline:
    """Build the pipeline once per process; ``clock`` and ``schedule`` are the event loop's,
    ``record`` the audit log's. Raises ExtensionError when ``security.admission`` cannot load."""
    security = config.security
    pipeline = SecurityPipeline([])
    if security.blocked_ports or security.allowed_ports is not None:
        pipeline.checks.append(PortPolicy(security.blocked_ports, security.allowed_ports))
    overall = security.rate_limiting if security.rate_limiting.enabled else None
    per_service = {
        port: service.rate_limit for port, service in config.services.items() if service.rate_limit is not None
    }
    if overall is not None or per_service:
        pipeline.checks.append(ConnectionRate(overall, per_service))
    if security.brute_force.enabled:
        pipeline.guard = BruteForceGuard.from_config(
            security.brute_force, config.services, security.allowlist, clock, record=record, schedule=schedule
        )
        pipeline.checks.append(pipeline.guard)
    if security.admission is not None:
        extension = Extension(load_check(security.admission))
        if extension.is_async:
            pipeline.extension = extension
        else:
            pipeline.checks.append(ExtensionCheck(extension))
    return pipeline
