"""``pyslirp status``: fetch a running gateway's ``/status`` document and print it for a person.

The document comes from ``http://<metrics_host>:<metrics_port>/status`` (the configuration's, or
``--url``). The summary says where the line is, the link's phase and what it negotiated, the
client's address and the services' reachability; a table lists the open connections. ``--watch``
redraws it in place every few seconds, like ``top``; ``--json`` prints the document as it came.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

FETCH_TIMEOUT = 3.0
_CLEAR = "\x1b[H\x1b[2J"


class StatusUnavailable(Exception):
    """No gateway answered at the URL; ``str()`` is the one-line message for the user."""


def fetch_status(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:  # noqa: S310 (a URL we build)
            return json.loads(response.read())
    except urllib.error.URLError as exc:
        reason = exc.reason if isinstance(exc.reason, str) else getattr(exc.reason, "strerror", None) or exc.reason
        raise StatusUnavailable(
            f"cannot reach {url}: {reason} (is pyslirp serving with monitoring.enable_metrics: true?)"
        ) from None
    except (OSError, ValueError) as exc:
        raise StatusUnavailable(f"cannot read {url}: {exc}") from None


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
    connections = status.get("connections") or []
    lines.append("")
    lines.append(f"{len(connections)} connection{'s' if len(connections) != 1 else ''}")
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
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return "\n".join(lines)


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
