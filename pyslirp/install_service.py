"""``pyslirp install-service``: run pyslirp under systemd, one instance per line.

``pyslirp@ttyUSB0`` serves ``/dev/ttyUSB0`` with ``/etc/pyslirp/ttyUSB0.yaml``, or with
``/etc/pyslirp/config.yaml`` when there is none. The unit runs as an unprivileged user in the
``dialout`` group, restarts on failure, reloads on ``systemctl reload`` (SIGHUP) and is hardened:
no new privileges, a read-only system, no home, a private /tmp, only the address families and
the one device it needs, no capabilities. Packet captures and audit logs go to
``/var/lib/pyslirp`` and ``/var/log/pyslirp`` (``StateDirectory``, ``LogsDirectory``).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TextIO

UNIT_NAME = "pyslirp@.service"
CONFIG_DIR = Path("/etc/pyslirp")
UNIT_DIR = Path("/etc/systemd/system")

UNIT = """\
# pyslirp on one serial line: systemctl enable --now pyslirp@ttyUSB0
# Configuration: /etc/pyslirp/%i.yaml, else /etc/pyslirp/config.yaml.
[Unit]
Description=pyslirp PPP gateway on /dev/%I
After=network.target dev-%i.device

[Service]
Type=simple
User={user}
Group={user}
SupplementaryGroups=dialout
ExecStart=/bin/sh -c 'config=/etc/pyslirp/%i.yaml; [ -e "$config" ] || config=/etc/pyslirp/config.yaml; exec {command} serve --config "$config" /dev/%I'
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5
StateDirectory=pyslirp
LogsDirectory=pyslirp
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=no
DevicePolicy=closed
DeviceAllow=/dev/%I rw
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
CapabilityBoundingSet=
AmbientCapabilities=
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictNamespaces=yes
LockPersonality=yes
RestrictRealtime=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""

STARTING_CONFIG = """\
# pyslirp's configuration for every line without its own /etc/pyslirp/<line>.yaml.
# The full, commented list of settings: config.yaml in pyslirp's source, or `pyslirp validate`.
services:
  22:
    host: 127.0.0.1
    port: 22
    name: SSH
security:
  audit_log: /var/log/pyslirp/audit.jsonl
"""


def unit_text(command: str, user: str) -> str:
    """The unit, starting ``command`` (pyslirp's executable, or ``python -m pyslirp``) as ``user``."""
    return UNIT.format(command=command, user=user)


def installed_command() -> str:
    """How this installation of pyslirp is started: its interpreter running the package, which
    holds in a virtual environment as well."""
    return f"{shlex.quote(sys.executable)} -m pyslirp"


def install(root: Path, user: str, line: str, dry_run: bool, out: TextIO | None = None) -> int:
    """Write the unit and, unless one exists, a starting configuration under ``root`` (``/``
    for the system; another directory to stage a package), then say what to run next."""
    out = out if out is not None else sys.stdout
    files = {root / UNIT_DIR.relative_to("/") / UNIT_NAME: unit_text(installed_command(), user)}
    config = root / CONFIG_DIR.relative_to("/") / "config.yaml"
    if not config.exists():
        files[config] = STARTING_CONFIG
    for path, text in files.items():
        if dry_run:
            print(f"# would write {path}:\n{text}", file=out)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}", file=out)
    print(
        "next, as root:\n"
        f"    id {user} >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin {user}\n"
        f"    usermod -a -G dialout {user}\n"
        "    systemctl daemon-reload\n"
        f"    systemctl enable --now pyslirp@{line}\n"
        f"    journalctl -u pyslirp@{line} -f          # its log; systemctl reload pyslirp@{line} rereads the config",
        file=out,
    )
    return 0
