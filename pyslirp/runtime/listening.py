"""Listening TCP sockets for the line (``tcp-listen://``) and the reverse forwards.

The host is resolved as ``loop.create_server`` resolves it (``AI_PASSIVE``, one socket per
address; IPv6 sockets IPv6-only; ``SO_REUSEADDR`` on POSIX only: on Windows it would let another
program take the port from under us), but handed to the resolver as ASCII bytes
where it is ASCII: given text, ``getaddrinfo`` (and uvloop's ``create_server``) first encode it
with Python's IDNA codec, whose first use loads ``encodings.idna``, ``stringprep`` and
``unicodedata``, about 0.4 MB of a server's memory, for hosts that need no IDNA.
"""

from __future__ import annotations

import os
import socket
from typing import Any

__all__ = ["MonitoringError", "listen", "passive_addresses"]


class MonitoringError(Exception):
    """A monitoring endpoint could not be opened; ``str()`` names the address and the reason.
    Here, not beside the endpoints' server, so that a server without endpoints need not import
    their HTTP machinery to catch it."""


def passive_addresses(host: str, port: int) -> list[tuple[Any, ...]]:
    """``getaddrinfo`` for listening on ``host:port``: (family, type, proto, canonname, address)
    for each address; OSError (socket.gaierror) where the host does not resolve."""
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    return socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)


def listen(address_info: tuple[Any, ...], backlog: int) -> socket.socket:
    """A socket listening on one of :func:`passive_addresses`; closed again if that fails."""
    family, kind, proto, _, address = address_info
    server = socket.socket(family, kind, proto)
    try:
        if os.name == "posix":
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        server.bind(address)
        server.listen(backlog)
    except OSError:
        server.close()
        raise
    return server
