"""A small HTTP/1.1 server for the monitoring endpoints, on the gateway's own event loop.

Only ``GET`` (and ``HEAD``) of a fixed set of paths, answered with ``Connection: close``: enough
for Prometheus, curl and ``pyslirp status``. It runs on the event loop rather than in a thread so
that a handler reads the gateway's objects where they live, between two packets, never in the
middle of one. Requests are bounded (one line of at most 8 KB, at most 100 header lines, 5 s to
send them); anything else gets its 4xx and the connection closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

log = logging.getLogger(__name__)

#: a handler returns (status, content type, body)
Response = tuple[int, str, bytes]
Handler = Callable[[], Response]

MAX_LINE = 8192
MAX_HEADERS = 100
REQUEST_TIMEOUT = 5.0


class MonitoringError(Exception):
    """An endpoint could not be opened; ``str()`` names the address and the reason."""


def json_response(status: int, document: Any) -> Response:
    return status, "application/json", (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


class EndpointServer:
    """Serves ``routes`` (path -> handler) on ``host:port``."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
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
            status, content_type, body, head = await asyncio.wait_for(self._respond(reader), REQUEST_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError, ConnectionError):
            status, content_type, body, head = 400, "text/plain", b"bad request\n", False
        except Exception:
            log.exception("monitoring endpoint failed")
            status, content_type, body, head = 500, "text/plain", b"internal error\n", False
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

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, bool]:
        request = (await reader.readuntil(b"\n")).decode("latin-1").split()
        for _ in range(MAX_HEADERS):
            if (await reader.readuntil(b"\n")).strip() == b"":
                break
        else:
            return 431, "text/plain", b"too many headers\n", False
        if len(request) != 3 or not request[2].startswith("HTTP/"):
            return 400, "text/plain", b"bad request\n", False
        method, target = request[0], request[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n", False
        handler = self.routes.get(target)
        if handler is None:
            paths = " ".join(sorted(self.routes))
            return 404, "text/plain", f"not found; try {paths}\n".encode(), method == "HEAD"
        status, content_type, body = handler()
        return status, content_type, body, method == "HEAD"
