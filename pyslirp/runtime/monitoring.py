"""The ``monitoring`` section acting: the metrics and health endpoints and the service probe.

With ``monitoring.enable_metrics``, pyslirp serves ``/metrics`` (Prometheus) and ``/status``
(JSON) on ``metrics_host:metrics_port``, and ``/health`` on ``metrics_host:health_port`` (the same
server when both ports are equal), and probes the enabled services. Both bind to 127.0.0.1 by
default: anything that can reach them reads the client's address, the services and the traffic;
bind them elsewhere only behind a firewall. ``POST /reload`` on the metrics port, taken only from
a loopback address, reloads the configuration as SIGHUP does (``pyslirp reload``; Windows has no
SIGHUP).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector

from pyslirp.runtime.http_endpoints import Action, EndpointServer, Handler, Response, json_response
from pyslirp.runtime.listening import MonitoringError
from pyslirp.runtime.metrics import GatewayCollector, EventStats, metrics_registry
from pyslirp.runtime.status import GatewayView, health_document, status_document

if TYPE_CHECKING:
    from pyslirp.config import MonitoringConfig
    from pyslirp.runtime.server import ReloadReport

log = logging.getLogger(__name__)


class Monitoring:
    """Owns the endpoint servers and the probe task of one running server."""

    def __init__(
        self,
        server: GatewayView,
        settings: MonitoringConfig,
        services: EventStats,
        reload: Callable[[], Awaitable[ReloadReport]] | None = None,
    ) -> None:
        self.server = server
        self.settings = settings
        #: the server's reload, which ``POST /reload`` runs (None: no such endpoint)
        self._reload = reload
        self.prometheus = metrics_registry(GatewayCollector(server, services))
        ProcessCollector(registry=self.prometheus)
        self._servers: list[EndpointServer] = []
        self._probe_task: asyncio.Task[None] | None = None

    def metrics(self) -> Response:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.prometheus)

    def status(self) -> Response:
        return json_response(200, status_document(self.server))

    def health(self) -> Response:
        return json_response(*health_document(self.server))

    async def reload(self) -> Response:
        """``POST /reload``: the configuration read again; 200 and what changed (with when each
        change applies), or 409 and why the new configuration was refused."""
        assert self._reload is not None
        report = await self._reload()
        return json_response(200 if report.reloaded else 409, {
            "reloaded": report.reloaded,
            "changed": sorted(report.changes),
            "applies": {path: when.value for path, when in report.changes.items()},
            "error": report.error,
        })

    @property
    def serving(self) -> bool:
        return bool(self._servers)

    async def start(self) -> None:
        settings = self.settings
        routes: dict[str, Handler] = {"/metrics": self.metrics, "/status": self.status}
        actions: dict[str, Action] = {"/reload": self.reload} if self._reload is not None else {}
        health_routes: dict[str, Handler] = {"/health": self.health}
        if settings.health_port == settings.metrics_port:
            routes.update(health_routes)
            await self._listen(routes, settings.metrics_port, actions)
        else:
            await self._listen(routes, settings.metrics_port, actions)
            await self._listen(health_routes, settings.health_port)
        self._probe_task = asyncio.create_task(self.server.probe.run(), name="service probe")

    async def _listen(self, routes: dict[str, Handler], port: int, actions: dict[str, Action] | None = None) -> None:
        endpoint = EndpointServer(routes, actions)
        host = self.settings.metrics_host
        try:
            await endpoint.start(host, port)
        except OSError as exc:
            self.close()
            raise MonitoringError(f"monitoring: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._servers.append(endpoint)
        paths = [*sorted(routes), *(f"POST {path} (from loopback)" for path in sorted(actions or {}))]
        log.info("serving %s on http://%s:%d", " ".join(paths), host, endpoint.port)

    def close(self) -> None:
        for endpoint in self._servers:
            endpoint.close()
        self._servers.clear()
        if self._probe_task is not None:
            self._probe_task.cancel()
            self._probe_task = None
