"""``pyslirp status`` and ``pyslirp reload``: ask a running gateway on its metrics port.

``status`` fetches ``http://<metrics_host>:<metrics_port>/status`` (the configuration's address,
or ``--url``) and prints it for a person: the summary says where the line is, the link's phase
and what it negotiated, the client's address and the services' reachability; a table lists the
open connections. ``--watch`` redraws it in place every few seconds, like ``top``; ``--json``
prints the document as it came. ``reload`` posts to ``/reload`` there, which reloads the
configuration as SIGHUP does, and prints in one line what changed or why it was refused.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from pyslirp.config import MonitoringConfig

FETCH_TIMEOUT = 3.0
#: a reload restarts the forwards and may import the operator's admission check
RELOAD_TIMEOUT = 30.0
_CLEAR = "\x1b[H\x1b[2J"
#: how ``pyslirp reload`` words each ``applies`` value of the /reload answer (the server's log's words)
_APPLIES_TEXT = {"live": "in force", "next link": "in force from the next link",
                 "restart": "NOT in force until pyslirp restarts"}


class StatusUnavailable(Exception):
    """No gateway answered at the URL; ``str()`` is the one-line message for the user."""


def monitoring_url(monitoring: MonitoringConfig, path: str) -> str:
    """The URL of ``path`` on the metrics port, as this host reaches it: a server bound to every
    address (``0.0.0.0``, ``::``) is asked on loopback."""
    host = monitoring.metrics_host
    try:
        address = ip_address(host)
    except ValueError:  # a name
        return f"http://{host}:{monitoring.metrics_port}{path}"
    if address.is_unspecified:
        address = ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{monitoring.metrics_port}{path}"


def _ask(request: urllib.request.Request, timeout: float) -> bytes:
    """The answer's body; StatusUnavailable when no gateway answers (an HTTP error status is
    left to the caller, as urllib's HTTPError)."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (a URL we build)
            return response.read()
    except urllib.error.HTTPError:
        raise
    except urllib.error.URLError as exc:
        reason = exc.reason if isinstance(exc.reason, str) else getattr(exc.reason, "strerror", None) or exc.reason
        raise StatusUnavailable(
            f"cannot reach {request.full_url}: {reason} (is pyslirp serving with monitoring.enable_metrics: true?)"
        ) from None
    except (OSError, ValueError) as exc:
        raise StatusUnavailable(f"cannot read {request.full_url}: {exc}") from None


def fetch_status(url: str) -> dict[str, Any]:
    try:
        return json.loads(_ask(urllib.request.Request(url), FETCH_TIMEOUT))
    except urllib.error.HTTPError as exc:
        raise StatusUnavailable(f"cannot read {url}: {exc.code} {exc.reason}") from None
    except ValueError as exc:
        raise StatusUnavailable(f"cannot read {url}: {exc}") from None


def reload(url: str) -> int:
    """POST ``url`` (a gateway's ``/reload``) and print one line: what the reload put in force
    (exit status 0), or why it was refused or nothing answered (on stderr, 1)."""
    try:
        body = _ask(urllib.request.Request(url, data=b"", method="POST"), RELOAD_TIMEOUT)
    except urllib.error.HTTPError as exc:  # 409: the configuration is invalid; 403: not from loopback
        text = exc.read().decode("utf-8", "replace")
        try:
            reason = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            reason = text.strip() or f"{exc.code} {exc.reason}"
        print(f"pyslirp reload: {url} refused: {reason}", file=sys.stderr)
        return 1
    except StatusUnavailable as exc:
        print(f"pyslirp reload: {exc}", file=sys.stderr)
        return 1
    try:
        applies = json.loads(body)["applies"]
    except (ValueError, KeyError, TypeError):
        applies = None
    if not isinstance(applies, dict):
        print(f"pyslirp reload: cannot read {url}: not the answer of pyslirp's /reload", file=sys.stderr)
        return 1
    parts = [
        ", ".join(sorted(path for path, when in applies.items() if when == value)) + f" {words}"
        for value, words in _APPLIES_TEXT.items() if value in applies.values()
    ]
    print(f"reloaded ({url}): " + ("; ".join(parts) or "the configuration is unchanged"))
    return 0


def render(status: dict[str, Any]) -> str:
    """The document as a summary and a table of connections."""
    link = status.get("link") or {}
    lcp, ipcp = link.get("lcp"), link.get("ipcp")
    line = status.get("line") or {}
    lines = [
        f"pyslirp {status.get('version')}  pid {status.get('pid')}  up {_duration(status.get('uptime', 0))}",
        f"line     {line.get('port')}" + (f"  session: {line['session']}" if line.get("session") else "  (no client)"),
        f"link     {link.get('phase', 'dead')}" + (f"  client {status['client']}" if status.get("client") else ""),
    ]
    if lcp:
        lines.append(
            f"LCP      mru {lcp['mru']}/{lcp['peer_mru']}  accm {lcp['accm']}/{lcp['peer_accm']}  "
            f"pfc {_yes(lcp['pfc'])}  acfc {_yes(lcp['acfc'])}  auth {lcp['auth']}"
            + (f"  echo {lcp['echo_rtt'] * 1000:.1f} ms" if lcp.get("echo_rtt") is not None else "")
        )
    if ipcp:
        lines.append(
            f"IPCP     {ipcp['local_ip']} <-> {ipcp['peer_ip']}  dns {', '.join(ipcp['dns']) or '-'}  "
            f"vj {_yes(ipcp['vj_tx'])}/{_yes(ipcp['vj_rx'])}"
        )
    services = status.get("services") or {}
    if services:
        lines.append("services " + "  ".join(f"{name} {_reachable(s)}" for name, s in sorted(services.items())))
    for forward in status.get("forwards") or []:
        lines.append(f"forward  {forward['listen']} -> client:{forward['peer_port']}")
    served = status.get("lines") or []
    of = ""  # whose connections the table shows, when there are several clients
    if len(served) > 1 or any(line.get("max_clients", 1) > 1 for line in served):
        lines.append("")
        rows = [
            (str(client["name"]), str(client["client"] or "-"), str(client["phase"]), str(client["connections"]),
             str(client["session"]))
            for line in served for client in line["clients"]
        ]
        idle = [line["name"] for line in served if not line["clients"]]
        lines.append(f"{len(rows)} client{'s' if len(rows) != 1 else ''} on {len(served)} lines"
                     + (f"; no client on {', '.join(idle)}" if idle else ""))
        lines += _table(("LINE", "CLIENT", "PHASE", "CONNECTIONS", "SESSION"), rows)
        if served[0]["clients"]:
            of = f" of {served[0]['clients'][0]['name']}"
    connections = status.get("connections") or []
    lines.append("")
    lines.append(f"{len(connections)} connection{'s' if len(connections) != 1 else ''}{of}")
    if connections:
        header = ("SERVICE", "CLIENT PORT", "STATE", "AGE", "TO SERVICE", "TO CLIENT")
        rows = [
            (
                ("<- " if c.get("reverse") else "") + str(c["service"]),
                str(c["client_port"]),
                str(c["state"]),
                _duration(c["age"]),
                _bytes(c["to_service"]),
                _bytes(c["to_client"]),
            )
            for c in sorted(connections, key=lambda c: -float(c["age"]))
        ]
        lines += _table(header, rows)
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """``rows`` under ``header``, each column as wide as its widest cell."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in (header, *rows)]


def run(url: str, *, as_json: bool, watch: float | None, out: TextIO = sys.stdout) -> int:
    """Print once, or every ``watch`` seconds until interrupted; the exit status."""
    try:
        while True:
            status = fetch_status(url)
            text = json.dumps(status, indent=2, sort_keys=True) if as_json else render(status)
            if watch is None:
                print(text, file=out)
                return 0
            out.write(_CLEAR + text + "\n")
            out.flush()
            time.sleep(watch)
    except StatusUnavailable as exc:
        print(f"pyslirp status: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _bytes(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _reachable(service: dict[str, Any]) -> str:
    if service.get("reachable") is None:
        return "(not probed yet)"
    return "up" if service["reachable"] else f"DOWN ({service.get('error') or 'unreachable'})"
