"""A small HTTP/1.1 server for the monitoring endpoints, on the gateway's own event loop.

``GET`` (and ``HEAD``) of a fixed set of paths, and ``POST`` of a few actions (``/reload``), each
answered with ``Connection: close``: enough for Prometheus, curl, ``pyslirp status`` and
``pyslirp reload``. It runs on the event loop rather than in a thread so that a handler reads the
gateway's objects where they live, between two packets, never in the middle of one. An action
changes the server, so it is taken only from a loopback address (403 otherwise, whatever address
the port is bound to) and only without a body. Requests are bounded (one line of at most 8 KB, at
most 100 header lines, 5 s to send them); anything else gets its 4xx and the connection closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from ipaddress import IPv6Address, ip_address
from typing import Any

log = logging.getLogger(__name__)

#: a handler returns (status, content type, body)
Response = tuple[int, str, bytes]
Handler = Callable[[], Response]
#: an action (POST) may wait, e.g. for a reload to restart the forwards; no time limit cuts it short
Action = Callable[[], Awaitable[Response]]

MAX_LINE = 8192
MAX_HEADERS = 100
REQUEST_TIMEOUT = 5.0


def json_response(status: int, document: Any) -> Response:
    return status, "application/json", (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def from_loopback(peername: object) -> bool:
    """Whether a connection's peer (``getpeername()``: ``(host, port, ...)``) is on this host's
    loopback: 127.0.0.0/8, ``::1``, or a loopback IPv4 address mapped into IPv6."""
    if not isinstance(peername, tuple) or not peername:
        return False
    try:
        address = ip_address(str(peername[0]))
    except ValueError:
        return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    has_body: bool


class _Refused(Exception):
    """A request answered with an error status before any handler runs."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def _text(status: int, text: str, head: bool = False) -> tuple[int, str, bytes, bool]:
    return status, "text/plain", f"{text}\n".encode(), head


class EndpointServer:
    """Serves ``routes`` (path -> handler, for GET and HEAD) and ``actions`` (path -> action, for
    POST from loopback) on ``host:port``."""

    def __init__(self, routes: dict[str, Handler], actions: dict[str, Action] | None = None) -> None:
        self.routes = routes
        self.actions = actions or {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen; raises OSError (address in use, no permission) for the caller to report."""
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_LINE)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(_read_request(reader), REQUEST_TIMEOUT)
            status, content_type, body, head = await self._respond(request, writer.get_extra_info("peername"))
        except _Refused as refused:
            status, content_type, body, head = _text(refused.status, str(refused))
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                ConnectionError):
            status, content_type, body, head = _text(400, "bad request")
        except Exception:
            log.exception("monitoring endpoint failed")
            status, content_type, body, head = _text(500, "internal error")
        reason = HTTPStatus(status).phrase
        header = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            writer.write(header if head else header + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _respond(self, request: _Request, peername: object) -> tuple[int, str, bytes, bool]:
        method, path = request.method, request.path
        if method in ("GET", "HEAD") and path in self.routes:
            return (*self.routes[path](), method == "HEAD")
        if method == "POST" and path in self.actions:
            if not from_loopback(peername):
                peer = peername[0] if isinstance(peername, tuple) and peername else "an unknown address"
                return _text(403, f"POST {path} is taken only from a loopback address (127.0.0.1, ::1), not {peer}")
            if request.has_body:
                return _text(413, f"POST {path} takes no body")
            return (*await self.actions[path](), False)
        if path in self.routes:
            return _text(405, f"{path} takes GET")
        if path in self.actions:
            return _text(405, f"{path} takes POST")
        paths = " ".join(sorted([*self.routes, *(f"POST {action}" for action in self.actions)]))
        return _text(404, f"not found; try {paths}", method == "HEAD")


async def _read_request(reader: asyncio.StreamReader) -> _Request:
    """The request line and whether headers announce a body; _Refused when it is no request."""
    request_line = (await reader.readuntil(b"\n")).decode("latin-1").split()
    has_body = False
    for _ in range(MAX_HEADERS):
        header = await reader.readuntil(b"\n")
        if header.strip() == b"":
            break
        name, _, value = header.decode("latin-1").partition(":")
        name = name.strip().lower()
        has_body |= name == "transfer-encoding" or (name == "content-length" and value.strip() != "0")
    else:
        raise _Refused(431, "too many headers")
    if len(request_line) != 3 or not request_line[2].startswith("HTTP/"):
        raise _Refused(400, "bad request")
    return _Request(request_line[0], request_line[1].split("?", 1)[0], has_body)
