"""An operator's own admission check (``security.admission: "package.module:callable"``).

The callable is given a :class:`FlowInfo` for each new connection of the client, after every
built-in check has let it through, and answers with a :class:`Decision`: :data:`ALLOW`, or
``Deny("why")``. It may be a plain function or an ``async def``; the client's SYN is answered
once it has decided (an async check delays only its own flow, for at most the service's
``connect_timeout``). An exception refuses the flow
(reason ``admission_error``) and is logged at most once a minute. A denial is refused with reason
``denied_by_extension`` in the metrics and the audit log; the text the check gave goes to the log.

Example (``examples/office_hours.py`` in the repository)::

    from pyslirp.admission_extension import ALLOW, Deny, FlowInfo

    def check(flow: FlowInfo):
        if flow.service == "SSH" and not 8 <= time.localtime().tm_hour < 18:
            return Deny("SSH only in office hours")
        return ALLOW
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Union

log = logging.getLogger("pyslirp.security")

ERROR_LOG_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class FlowInfo:
    src: IPv4Address
    dst: IPv4Address
    dport: int
    proto: str  # "tcp"
    service: str  # the service's name, or "port N"


@dataclass(frozen=True, slots=True)
class Allow:
    pass


@dataclass(frozen=True, slots=True)
class Deny:
    reason: str = "denied"


ALLOW = Allow()
Decision = Union[Allow, Deny]
Check = Callable[[FlowInfo], Union[Decision, Awaitable[Decision]]]


class ExtensionError(Exception):
    """The configured callable cannot be loaded; ``str()`` names the field and the reason."""


def load_check(spec: str) -> Check:
    """Import ``package.module:callable``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ExtensionError(f"security.admission: {spec!r} is not 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 -- any failure of the operator's module is reported, not raised
        raise ExtensionError(f"security.admission: cannot import {module_name}: {exc}") from None
    check = getattr(module, attribute, None)
    if not callable(check):
        raise ExtensionError(f"security.admission: {module_name} has no callable {attribute!r}")
    return check


class Extension:
    """Runs the operator's check and turns its answer (or its failure) into a refusal reason."""

    def __init__(self, check: Check, clock: Callable[[], float] = time.monotonic) -> None:
        self.check = check
        self.is_async = inspect.iscoroutinefunction(check)
        self.clock = clock
        self._last_error_log = float("-inf")

    def reason_for(self, decision: object) -> str | None:
        """None to admit, else the refusal reason; a denial's own words are logged."""
        if isinstance(decision, Allow):
            return None
        if isinstance(decision, Deny):
            log.info("admission extension denied a connection: %s", decision.reason)
            return "denied_by_extension"
        self.failed(TypeError(f"returned {decision!r}, not ALLOW or Deny(...)"))
        return "admission_error"

    def decide(self, info: FlowInfo) -> str | None:
        """A synchronous check's answer."""
        try:
            decision = self.check(info)
        except Exception as exc:  # noqa: BLE001 -- the operator's code must not take down the gateway
            self.failed(exc)
            return "admission_error"
        return self.reason_for(decision)

    async def decide_async(self, info: FlowInfo, timeout: float) -> str | None:
        """An ``async`` check's answer; one that takes longer than ``timeout`` seconds (the
        service's ``connect_timeout``) is a failure, so a stuck check holds no flow for ever."""
        try:
            decision = await asyncio.wait_for(self.check(info), timeout)  # type: ignore[arg-type]
        except asyncio.TimeoutError:
            self.failed(TimeoutError(f"no answer in {timeout:g} s"))
            return "admission_error"
        except Exception as exc:  # noqa: BLE001
            self.failed(exc)
            return "admission_error"
        return self.reason_for(decision)

    def failed(self, exc: BaseException) -> None:
        now = self.clock()
        if now - self._last_error_log >= ERROR_LOG_INTERVAL:
            self._last_error_log = now
            log.error("admission extension %s failed (flows are refused while it fails): %s: %s",
                      getattr(self.check, "__qualname__", self.check), type(exc).__name__, exc)
