"""The audit log (``security.audit_log``): one JSON object per line for each security-relevant
event, for the operator and for tools that parse it.

Keys: ``ts`` (RFC 3339, UTC, milliseconds), ``event``, ``line``, and as the event has them
``src``, ``dst``, ``dport``, ``proto``, ``service``, ``reason``, ``user``, ``bytes_in`` (from the
client), ``bytes_out`` (to the client), ``duration_s``. Events: ``link_up``, ``link_down``,
``auth_ok``, ``auth_failed``, ``connection_opened``, ``connection_refused``,
``connection_closed``, and, recorded by their owners through :meth:`AuditLog.record`,
``blocked``, ``unblocked``, ``config_reloaded`` (with ``changed``, the fields that changed, or a
``reason``: ``invalid_config``, ``unchanged``). ``reason`` values are the stable snake_case
words the metrics use as their ``reason`` label. No secret is ever written: authentication events
carry the user name and the method, never a password, a challenge or a response.

Records are buffered and written, flushed and fsync'd once per turn of the event loop (a batch),
so a burst of refusals costs one fsync. :meth:`AuditLog.reopen` (SIGHUP) closes and reopens the
file for logrotate. An audit path that cannot be opened at start is a configuration error; a write
that fails later is logged and counted (``write_errors``, ``records_lost``), never silent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.ppp.link import AuthFailed, AuthSucceeded, LinkDown, LinkUp
from pyslirp.runtime.observers import ConnectionSummary, Flow, GatewayObserver

log = logging.getLogger(__name__)

AUDIT_COUNTERS = CounterSet("audit", [
    CounterSpec("records", "records written to the audit log"),
    CounterSpec("write_errors", "failed writes to the audit log"),
    CounterSpec("records_lost", "records a failed write lost"),
])


class AuditLogError(Exception):
    """The audit log cannot be opened; ``str()`` names the path and the reason."""


def rfc3339(timestamp: float) -> str:
    """``2026-12-06T18:46:37.123Z`` (UTC, milliseconds truncated from the whole microsecond, as
    ``datetime.isoformat`` gives them; :mod:`datetime` itself would cost the server 0.7 MB)."""
    fraction, seconds = math.modf(timestamp)
    extra_second, micros = divmod(round(fraction * 1_000_000), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds + extra_second)) + f".{micros // 1000:03d}Z"


class AuditLog(GatewayObserver):
    """Writes the gateway's events (it is an observer) and those given to :meth:`record`."""

    def __init__(self, path: Path, clock: Callable[[], float]) -> None:
        self.path = path
        self.clock = clock  # wall-clock seconds (time.time)
        self.counters: Counter[str] = Counter()  # AUDIT_COUNTERS
        self._pending: list[str] = []
        self._flush_scheduled = False
        self._file = self._open()

    def _open(self) -> Any:
        try:
            return open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open; closed in close())
        except OSError as exc:
            raise AuditLogError(f"security.audit_log: cannot open {self.path}: {exc.strerror or exc}") from None

    # -- records -----------------------------------------------------------------------------------

    def record(self, event: str, **fields: Any) -> None:
        """Queue one record; fields that are None are left out."""
        entry = {"ts": rfc3339(self.clock()), "event": event}
        entry.update((key, value) for key, value in fields.items() if value is not None)
        self._pending.append(json.dumps(entry, separators=(",", ":"), default=str))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (a tool, a test): write at once
                self.flush()

    def flush(self) -> None:
        """Write, flush and fsync what is queued (one batch)."""
        self._flush_scheduled = False
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            self._file.write("\n".join(batch) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except (OSError, ValueError) as exc:  # ValueError: the file was closed
            self.counters["write_errors"] += 1
            self.counters["records_lost"] += len(batch)
            log.error("audit log %s: write failed, %d records lost: %s", self.path, len(batch), exc)
        else:
            self.counters["records"] += len(batch)

    def reopen(self) -> None:
        """For logrotate (SIGHUP): write what is queued, close the file and open the path again."""
        self.flush()
        self._file.close()
        try:
            self._file = self._open()
        except AuditLogError as exc:
            log.error("%s; records are lost until the next reopen", exc)
            self._file = _Closed()
        else:
            log.info("audit log %s reopened", self.path)

    def close(self) -> None:
        self.flush()
        self._file.close()

    # -- the gateway's events ---------------------------------------------------------------------

    def link_up(self, line: str, event: LinkUp) -> None:
        self.record("link_up", line=line, src=str(event.peer_ip), dst=str(event.local_ip))

    def link_down(self, line: str, event: LinkDown) -> None:
        self.record("link_down", line=line, reason=event.reason)

    def auth_succeeded(self, line: str, event: AuthSucceeded) -> None:
        self.record("auth_ok", line=line, user=event.user, proto=event.method)

    def auth_failed(self, line: str, event: AuthFailed) -> None:
        self.record("auth_failed", line=line, user=event.user, proto=event.method, reason=event.reason)

    def connection_opened(self, flow: Flow) -> None:
        self.record("connection_opened", **_flow_fields(flow))

    def connection_refused(self, flow: Flow, reason: str) -> None:
        self.record("connection_refused", **_flow_fields(flow), reason=reason)

    def connection_closed(self, flow: Flow, summary: ConnectionSummary) -> None:
        self.record(
            "connection_closed",
            **_flow_fields(flow),
            reason=summary.outcome,
            bytes_in=summary.to_service,
            bytes_out=summary.to_client,
            duration_s=round(summary.duration, 3),
        )


def _flow_fields(flow: Flow) -> dict[str, Any]:
    (client, client_port), (destination, port) = flow.client, flow.destination
    return {
        "line": flow.line,
        "src": str(client),
        "sport": client_port,
        "dst": str(destination),
        "dport": port,
        "proto": flow.protocol,
        "service": flow.service or None,
        "direction": "reverse" if flow.reverse else None,
    }


class _Closed:
    """Stands in for a file that could not be reopened: every write fails (and is counted)."""

    def write(self, text: str) -> int:
        raise ValueError("audit log not open")

    def flush(self) -> None: ...

    def fileno(self) -> int:
        raise ValueError("audit log not open")

    def close(self) -> None: ...
