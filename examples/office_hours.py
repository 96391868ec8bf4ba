"""An admission extension for pyslirp: SSH from the client only in office hours, and nothing to a
list of ports kept in a file the operator edits (read at each connection, so no reload is needed).

Use it with ``security.admission: "office_hours:check"`` and this directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pyslirp.admission_extension import ALLOW, Decision, Deny, FlowInfo

CLOSED_PORTS = Path(os.environ.get("PYSLIRP_CLOSED_PORTS", "/etc/pyslirp/closed-ports"))
OPEN_HOURS = range(8, 18)


def check(flow: FlowInfo) -> Decision:
    if flow.service == "SSH" and time.localtime().tm_hour not in OPEN_HOURS:
        return Deny("SSH only from 08:00 to 18:00")
    try:
        closed = {int(word) for word in CLOSED_PORTS.read_text().split()}
    except (OSError, ValueError):
        closed = set()
    if flow.dport in closed:
        return Deny(f"port {flow.dport} is closed by {CLOSED_PORTS}")
    return ALLOW
