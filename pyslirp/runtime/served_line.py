"""One line of the server and the clients on it.

A line yields sessions (``runtime.lines``); each is served by a gateway of its own. A line serves
one client at a time, except a ``tcp-listen://`` line with ``max_clients`` above 1: it serves up
to that many at once, each a line of its own named ``NAME#k`` (k the lowest free slot, so the
labels of metrics and status stay bounded), and accepts the next client only when a slot is free
(the client waits in the listening socket's backlog meanwhile).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pyslirp.runtime.admission import AdmissionCheck
from pyslirp.runtime.lines import Line, LineSession
from pyslirp.runtime.security import LineRate, TokenBucket
from pyslirp.runtime.settings import LineSettings

if TYPE_CHECKING:
    from pyslirp.runtime.gateway import Gateway

#: serves one client: (the line, its session, the client's label) until the session ends
RunClient = Callable[["ServedLine", LineSession, str], Awaitable[None]]


class ServedLine:
    """A configured line: its settings, its :class:`Line`, and the gateway of each client on it."""

    def __init__(self, settings: LineSettings, line: Line) -> None:
        self.settings = settings
        self.line = line
        #: client label -> the gateway serving it
        self.gateways: dict[str, Gateway] = {}
        self._labels: set[str] = set()
        #: each client label's rate_limit bucket: it outlives a link, so a redial does not refill it
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def name(self) -> str:
        return self.settings.name

    async def serve(self, run_client: RunClient) -> None:
        """Serve every session the line yields until cancelled."""
        if self.settings.max_clients == 1:
            async for session in self.line.sessions():
                await run_client(self, session, self.name)
            return
        slots = asyncio.Semaphore(self.settings.max_clients)
        clients: set[asyncio.Task[None]] = set()
        sessions = self.line.sessions()
        try:
            while True:
                await slots.acquire()
                session = await anext(sessions)
                label = self._take_label()
                task = asyncio.create_task(run_client(self, session, label), name=f"client {label}")
                clients.add(task)
                task.add_done_callback(lambda done, label=label: self._client_ended(done, label, clients, slots))
        finally:
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)

    def _take_label(self) -> str:
        k = next(k for k in range(1, self.settings.max_clients + 1) if f"{self.name}#{k}" not in self._labels)
        label = f"{self.name}#{k}"
        self._labels.add(label)
        return label

    def _client_ended(
        self, task: asyncio.Task[None], label: str, clients: set[asyncio.Task[None]], slots: asyncio.Semaphore
    ) -> None:
        clients.discard(task)
        self._labels.discard(label)
        slots.release()

    def checks(self, label: str) -> list[AdmissionCheck]:
        """The admission checks of this line's own for the client ``label`` (its rate_limit)."""
        limit = self.settings.rate_limit
        if limit is None:
            return []
        bucket = self._buckets.get(label)
        if bucket is None:
            bucket = self._buckets[label] = TokenBucket(limit.connections_per_second, limit.burst)
        return [LineRate(bucket)]

    def client_labels(self) -> list[str]:
        """Every label a client of this line can have (the bound on metrics' ``line`` label)."""
        if self.settings.max_clients == 1:
            return [self.name]
        return [f"{self.name}#{k}" for k in range(1, self.settings.max_clients + 1)]
