"""The settings layer: the validated configuration turned into what each part of pyslirp takes.

Pure functions, one per consumer: :func:`link_options` for the sans-IO PPP link,
:func:`tcp_config` for each connection of a link, :func:`deframer_max_frame` for the HDLC
deframer, :func:`line_rate` for the line scheduler's pacing. Every rule on a value is checked
once, by the pydantic models in ``pyslirp.config`` (which name the field in their errors); a
server reads the records they were turned into (``pyslirp.config_records``), a test often the
models themselves, alike. The protocol cores take what this module hands them without checking
it again.

:data:`APPLIES` marks when a change to each section or field takes effect on a running gateway:
at once (``LIVE``), when the client next negotiates the link (``NEXT_LINK``), or only after a
restart (``RESTART``). :func:`changed_fields` classifies the differences between two
configurations by that table, and :func:`reloaded` makes the configuration a reload puts in
force: the new one, except the fields that need a restart, which keep their running values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from pyslirp.config_records import replaced
from pyslirp.net.stack import IP_TCP_HEADERS
from pyslirp.net.tcp_types import TCPConfig
from pyslirp.ppp.auth import AuthOptions
from pyslirp.ppp.fsm import FSMConfig
from pyslirp.ppp.ipcp import IPCPOptions
from pyslirp.ppp.lcp import LCPOptions
from pyslirp.ppp.link import LinkOptions

if TYPE_CHECKING:
    from pyslirp.config import PyslirpConfig, RateLimit

#: the deframer's bound on a frame: the MRU plus address, control, protocol, FCS and slack,
#: never below what LCP may carry before the MRU is negotiated
MIN_FRAME_BOUND = 4096
FRAME_OVERHEAD = 64


class Applies(enum.Enum):
    """When a changed setting takes effect on a running gateway."""

    LIVE = "live"  # at once: the next connection, datagram or log record sees it
    NEXT_LINK = "next link"  # when the client negotiates the link again (a new PPP session)
    RESTART = "restart"  # only when pyslirp restarts (the line, the listening sockets)


#: Longest prefix wins: a field not listed takes its section's entry.
APPLIES: dict[str, Applies] = {
    "serial": Applies.RESTART,
    "ppp": Applies.NEXT_LINK,
    "ppp.peer_pool": Applies.RESTART,
    "lines": Applies.RESTART,
    "services": Applies.LIVE,
    "forwards": Applies.LIVE,
    "tcp": Applies.NEXT_LINK,
    "tcp.shutdown_grace": Applies.LIVE,
    "dns": Applies.LIVE,
    "socks": Applies.LIVE,
    "outbound": Applies.LIVE,
    "security": Applies.LIVE,
    "security.audit_log": Applies.RESTART,
    "monitoring": Applies.RESTART,
    "logging": Applies.RESTART,
    "logging.level": Applies.LIVE,
}


def applies(path: str) -> Applies:
    """When a change to the field at ``path`` (``"tcp.min_rto"``) takes effect."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        found = APPLIES.get(".".join(parts[:end]))
        if found is not None:
            return found
    return Applies.RESTART


def changed_fields(old: PyslirpConfig, new: PyslirpConfig) -> dict[str, Applies]:
    """Every field whose value differs between ``old`` and ``new``, with when it would apply."""
    changes: dict[str, Applies] = {}
    for path in _diff(old.model_dump(mode="json"), new.model_dump(mode="json"), ""):
        changes[path] = applies(path)
    return changes


def reloaded(old: PyslirpConfig, new: PyslirpConfig) -> tuple[PyslirpConfig, dict[str, Applies]]:
    """What a reload puts in force — ``new`` with every field that needs a restart kept as in
    ``old`` — and the changed fields with when each applies."""
    changes = changed_fields(old, new)
    effective = new
    for path, when in changes.items():
        if when is Applies.RESTART:
            effective = replaced(effective, path.split("."), _value(old, path.split(".")))
    return effective, changes


def _value(model: Any, parts: list[str]) -> Any:
    for part in parts:
        model = model[int(part)] if isinstance(model, (list, dict)) else getattr(model, part)
    return model


def _diff(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            found += _diff(old.get(key), new.get(key), sub)
        return found
    return [path] if old != new else []


def link_options(config: PyslirpConfig) -> LinkOptions:
    """The sans-IO link's options: one object per protocol, built here and nowhere else."""
    ppp = config.ppp
    auth = ppp.auth
    return LinkOptions(
        lcp=LCPOptions(
            mru=ppp.mru,
            accm=ppp.accm,
            auth_methods=() if auth.method == "none" else (auth.method,),
            echo_interval=ppp.keepalive.interval,
            echo_failures=ppp.keepalive.failures,
        ),
        ipcp=IPCPOptions(
            local_ip=ppp.local_ip, peer_ip=ppp.peer_ip, dns=tuple(ppp.dns_servers), vj=ppp.vj, vj_slots=ppp.vj_slots
        ),
        auth=AuthOptions(
            credentials=auth.credentials(),
            timeout=auth.timeout,
            chap_rechallenge_interval=auth.chap_rechallenge_interval,
        ),
        fsm=FSMConfig(
            restart_interval=ppp.restart_timer,
            max_configure=ppp.max_configure,
            max_terminate=ppp.max_terminate,
            max_failure=ppp.max_failure,
        ),
    )


def tcp_config(config: PyslirpConfig, peer_mru: int) -> TCPConfig:
    """Each connection's tunables on a link whose client takes datagrams of ``peer_mru``: the
    MSS fits both MRUs (RFC 9293 §3.7.1, the link MTU less the IPv4 and TCP headers)."""
    tcp = config.tcp
    return TCPConfig(
        mss=min(config.ppp.mru, peer_mru) - IP_TCP_HEADERS,
        rcv_buf=tcp.receive_buffer,
        snd_buf=tcp.send_buffer,
        time_wait=tcp.time_wait,
        min_rto=tcp.min_rto,
    )


def deframer_max_frame(mru: int) -> int:
    """The longest frame the deframer keeps before it drops it as too long."""
    return max(MIN_FRAME_BOUND, mru + FRAME_OVERHEAD)


def line_rate(config: PyslirpConfig, native_rate: int | None) -> int | None:
    """Bytes per second to pace the line at: ``serial.line_rate``, else the line's own rate (a
    serial port's baud rate / 10), else None (a pty or TCP line is not paced)."""
    return config.serial.line_rate or native_rate


@dataclass(frozen=True)
class LineSettings:
    """One line the server serves: its name, and the configuration as its clients see it (its
    own ``serial`` and ``ppp`` sections, with the line's changes applied)."""

    name: str
    config: PyslirpConfig
    max_clients: int = 1
    #: its clients lease addresses from ``ppp.peer_pool``; else each gets ``ppp.peer_ip``
    pooled: bool = False
    #: each client's flows at once (every service together), and new flows a second; None: no bound
    max_connections: int | None = None
    rate_limit: RateLimit | None = None


def line_settings(config: PyslirpConfig) -> list[LineSettings]:
    """Every line to serve: those of ``lines``, else the one of ``serial`` (named by its port)."""
    if not config.lines:
        return [LineSettings(config.serial.port, config)]
    return [
        LineSettings(
            line.name,
            config.model_copy(update={"serial": line.effective_serial(config.serial), "ppp": line.effective_ppp(config.ppp)}),
            line.max_clients,
            pooled=line.peer_ip is None,
            max_connections=line.max_connections,
            rate_limit=line.rate_limit,
        )
        for line in config.lines
    ]


def pool_reserved(lines: list[LineSettings]) -> set[IPv4Address]:
    """Addresses the pool never hands out: ours on each line, and those lines fix."""
    reserved = {line.config.ppp.local_ip for line in lines}
    return reserved | {line.config.ppp.peer_ip for line in lines if not line.pooled}
