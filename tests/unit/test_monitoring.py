"""The monitoring endpoints of a dialled in-process gateway: /metrics parses as Prometheus text and
agrees with the gateway's own counters, /status and /health describe the link,
``pyslirp status`` renders the document or fails in one line when nothing answers, and the shipped
alerting rules and dashboard name only metrics the gateway exports."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import datapath  # noqa: E402

from pyslirp import cli, status_report  # noqa: E402
from pyslirp.config import MonitoringConfig, PyslirpConfig  # noqa: E402
from pyslirp.ppp.link import LinkDown  # noqa: E402
from pyslirp.runtime.breaker import ServiceBreakers  # noqa: E402
from pyslirp.runtime.counter_registry import CounterRegistry  # noqa: E402
from pyslirp.runtime.lines import TcpListenLine  # noqa: E402
from pyslirp.runtime.metrics import EventStats, GatewayCollector, metric_name, metrics_registry  # noqa: E402
from pyslirp.runtime.monitoring import Monitoring, MonitoringError  # noqa: E402
from pyslirp.runtime.observers import Observers  # noqa: E402
from pyslirp.runtime.server import Server  # noqa: E402
from pyslirp.runtime.status import ServiceProbe  # noqa: E402

SERVICE = f"port {datapath.SERVICE_PORT}"  # the service has no name in the data path's config
LINE = (("line", datapath.MemorySession.name),)  # the data path's one line, named as its session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class View:
    """What the monitoring documents read of a running server, here around the data path's
    gateway (``pyslirp.runtime.server.Server`` is the production one)."""

    def __init__(self, path: datapath.DataPath | None, registry: CounterRegistry, service_port: int) -> None:
        self.config = PyslirpConfig(services={datapath.SERVICE_PORT: {
            "host": "127.0.0.1", "port": service_port, "breaker": {"failures": 3},
        }})
        self.registry = registry
        self.probe = ServiceProbe(self.config.services)
        self.breakers = ServiceBreakers(self.config.services, time.monotonic)
        self.started = time.time()
        self.metrics_serving = True
        self.path = path

    @property
    def lines(self) -> list[Any]:
        """One line, named as the data path's session, whose client is the gateway session() gives."""
        return [datapath.served_line(self.session(), self.config)]

    def line_description(self) -> str:
        return "in-memory line"

    def session(self) -> Any:
        return self.path.gateway if self.path is not None else None


async def get(url: str) -> tuple[int, str, bytes]:
    def fetch() -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read()

    return await asyncio.to_thread(fetch)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def echo_service() -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):  # until the client closes
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_metrics_status_and_health_of_a_dialled_gateway() -> None:
    server, port = await echo_service()
    stats = EventStats()
    path = datapath.DataPath()
    await path.start(port, observers=Observers(stats))
    view = View(path, path.registry, port)
    metrics_port, health_port = free_port(), free_port()
    monitoring = Monitoring(view, MonitoringConfig(metrics_port=metrics_port, health_port=health_port), stats)
    await monitoring.start()
    await view.probe.probe_once()
    base = f"http://127.0.0.1:{metrics_port}"

    await path.exchange(b"hello")
    for _ in range(500):  # our side closed first: TIME-WAIT (2 s) ends the connection
        if stats.closed:
            break
        await asyncio.sleep(0.01)
    open_conn = await path.exchange(b"still open", close=False)

    status, content_type, body = await get(base + "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    metrics = samples(body.decode())
    assert metrics[("pyslirp_link_up", LINE)] == 1
    assert metrics[("pyslirp_link_ups_total", LINE)] == 1 and metrics[("pyslirp_link_downs_total", LINE)] == 0
    assert metrics[("pyslirp_link_problems_total", (*LINE, ("problem", "keepalive_failed")))] == 0
    assert metrics[("pyslirp_deframer_in_bytes_total", LINE)] == path.registry.totals("deframer")["bytes_in"] > 0
    assert metrics[("pyslirp_line_open", LINE)] == 1
    assert metrics[("pyslirp_link_phase", (*LINE, ("pyslirp_link_phase", "network")))] == 1
    info = next(labels for (name, labels) in metrics if name == "pyslirp_link_info")
    assert ("peer_ip", "10.0.0.2") in info and ("vj", "true") in info and LINE[0] in info
    service = (("service", SERVICE),)
    on_line = (*LINE, *service)  # the connection families: per service and line
    assert metrics[("pyslirp_service_connections_opened_total", on_line)] == 2
    assert metrics[("pyslirp_service_connections_active", on_line)] == 1
    assert metrics[("pyslirp_service_connections_closed_total", (*LINE, ("outcome", "closed"), *service))] == 1
    # Bytes per service: the closed connection's and the open one's, each way.
    moved = len(b"hello") + len(b"still open")
    assert metrics[("pyslirp_service_bytes_total", (("direction", "to_service"), *on_line))] == moved
    assert metrics[("pyslirp_service_bytes_total", (("direction", "to_client"), *on_line))] == moved
    assert metrics[("pyslirp_service_up", service)] == 1
    assert metrics[("pyslirp_service_breaker_state", (*service, ("state", "closed")))] == 1
    assert metrics[("pyslirp_service_breaker_state", (*service, ("state", "open")))] == 0
    assert metrics[("pyslirp_tcp_connection_rtt_seconds_count", ())] == 1
    assert metrics[("pyslirp_frame_processing_seconds_count", LINE)] > 0
    # The declared counters are the registry's, name for name and value for value (nothing
    # moves meanwhile: the open connection is idle and keepalive is off).
    for counter_set, spec, labels, value in path.registry.samples():
        name = metric_name(counter_set.component, spec)
        assert metrics[(name + "_total", tuple(sorted(labels.items())))] == value
    # Bounded labels: never a client port or a connection id.
    assert not {key for _, labels in metrics for key, _ in labels} & {"port", "client_port", "conn", "id"}
    assert all(name.startswith(("pyslirp_", "process_")) for name, _ in metrics)

    status, content_type, body = await get(base + "/status")
    document = json.loads(body)
    assert status == 200 and content_type == "application/json"
    assert document["link"]["phase"] == "network" and document["client"] == "10.0.0.2"
    assert document["link"]["lcp"]["auth"] == "none"
    (connection,) = document["connections"]
    assert connection["service"] == SERVICE and connection["state"] == "ESTABLISHED"
    assert (connection["to_service"], connection["to_client"]) == (len(b"still open"),) * 2
    assert document["services"][SERVICE]["reachable"] is True
    assert document["counters"] == json.loads(json.dumps(path.registry.snapshot()))

    status, _, body = await get(f"http://127.0.0.1:{health_port}/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok"
    assert health["components"]["link"] == {"phase": "network", "up": True}
    assert health["components"]["services"][SERVICE]["reachable"] is True
    status, _, _ = await get(f"http://127.0.0.1:{health_port}/metrics")
    assert status == 404  # the health port serves /health only

    # pyslirp status against the running gateway: the summary and the connection table.
    out = io.StringIO()
    assert await asyncio.to_thread(status_report.run, base + "/status", as_json=False, watch=None, out=out) == 0
    text = out.getvalue()
    assert "link     network  client 10.0.0.2" in text
    assert "1 connection" in text
    header, row = text.splitlines()[-2:]
    assert header.split() == ["SERVICE", "CLIENT", "PORT", "STATE", "AGE", "TO", "SERVICE", "TO", "CLIENT"]
    assert row.split()[:4] == ["port", str(datapath.SERVICE_PORT), str(open_conn.local_port), "ESTABLISHED"]

    # The client hangs up: the link goes down and /health says why.
    await path.close()
    status, _, body = await get(f"http://127.0.0.1:{health_port}/health")
    health = json.loads(body)
    assert status == 503 and health["status"] == "unavailable"
    assert health["reason"].startswith("PPP link not up")
    view.path = None
    status, _, body = await get(f"http://127.0.0.1:{health_port}/health")
    assert status == 503 and json.loads(body)["reason"] == "no client on the line"
    metrics = samples((await get(base + "/metrics"))[2].decode())
    assert metrics[("pyslirp_line_open", LINE)] == 0 and metrics[("pyslirp_link_up", LINE)] == 0
    assert metrics[("pyslirp_link_downs_total", LINE)] == 1
    # The line's counters stay after its session ended: totals never go backwards.
    assert metrics[("pyslirp_deframer_in_bytes_total", LINE)] == path.registry.totals("deframer")["bytes_in"] > 0
    monitoring.close()
    server.close()


async def test_one_port_serves_every_path_when_health_and_metrics_ports_are_equal() -> None:
    view = View(None, CounterRegistry(), free_port())
    port = free_port()
    monitoring = Monitoring(view, MonitoringConfig(metrics_port=port, health_port=port), EventStats())
    await monitoring.start()
    await view.probe.probe_once()
    for route, expected in (("/metrics", 200), ("/status", 200), ("/health", 503), ("/nothing", 404)):
        assert (await get(f"http://127.0.0.1:{port}{route}"))[0] == expected
    # The service behind the probe is down: /health and /status say so, with the reason.
    health = json.loads((await get(f"http://127.0.0.1:{port}/health"))[2])
    service = health["components"]["services"][SERVICE]
    assert service["reachable"] is False and service["error"]
    monitoring.close()


async def test_a_port_in_use_is_a_one_line_error_naming_the_address() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monitoring = Monitoring(
            View(None, CounterRegistry(), free_port()), MonitoringConfig(metrics_port=port), EventStats()
        )
        with pytest.raises(MonitoringError, match=f"monitoring: cannot listen on 127.0.0.1:{port}: "):
            await monitoring.start()
    assert not monitoring.serving


async def test_the_server_with_metrics_on_serves_them_and_counts_its_links() -> None:
    port = free_port()
    config = PyslirpConfig(
        dns={"enabled": False}, monitoring={"enable_metrics": True, "metrics_port": port, "health_port": port}
    )
    line = TcpListenLine("127.0.0.1", 0)
    line.open()
    server = Server(config, line)
    running = asyncio.ensure_future(server.run())
    try:
        for _ in range(500):
            if server.metrics_serving:
                break
            await asyncio.sleep(0.01)
        (served,) = server.lines  # one line without 'lines', named by serial.port
        server.observers.link_down(served.name, LinkDown("test"))  # the metrics' observer hears the server's events
        server.observers.link_down("a session's name", LinkDown("test"))  # not a configured line: left out
        status, _, body = await get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        metrics = samples(body.decode())
        assert metrics[("pyslirp_link_downs_total", (("line", served.name),))] == 1
        assert metrics[("pyslirp_line_open", (("line", served.name),))] == 0
        assert {value for _, labels in metrics for key, value in labels if key == "line"} == {served.name}
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        line.close()
    assert not server.metrics_serving


SERVER_WITHOUT_METRICS = """
import asyncio, sys
from pyslirp.config import PyslirpConfig
from pyslirp.runtime.lines import TcpListenLine
from pyslirp.runtime.server import Server

async def serve_a_moment():
    line = TcpListenLine("127.0.0.1", 0)
    line.open()
    running = asyncio.ensure_future(Server(PyslirpConfig(dns={"enabled": False}), line).run())
    await asyncio.sleep(0.2)
    running.cancel()
    line.close()

asyncio.run(serve_a_moment())
print(" ".join(name for name in ("prometheus_client", "serial", "pyslirp.runtime.http_endpoints", "http")
               if name in sys.modules))
"""


def test_a_server_without_metrics_never_imports_prometheus_client(tmp_path: Path) -> None:
    """Nor pyserial without a device line, nor the endpoints' HTTP server: what a server does not
    use stays out of its memory."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PYSLIRP_")}
    result = subprocess.run(
        [sys.executable, "-c", SERVER_WITHOUT_METRICS], capture_output=True, text=True, cwd=tmp_path,
        env=environment, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_status_without_a_gateway_is_one_line_and_exit_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/status"
    assert cli.main(["status", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"pyslirp status: cannot reach {url}: ")


async def exported_names() -> set[str]:
    """Every sample name a dialled gateway's /metrics can carry (families without samples yet,
    such as refusals, included by their type)."""
    server, port = await echo_service()
    stats = EventStats()
    path = datapath.DataPath()
    await path.start(port, observers=Observers(stats))
    view = View(path, path.registry, port)
    text = generate_latest(metrics_registry(GatewayCollector(view, stats))).decode()
    await path.close()
    server.close()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "info": ("_info",)}
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def contrib_expressions() -> list[str]:
    root = Path(__file__).resolve().parents[2] / "contrib"
    alerts = yaml.safe_load((root / "prometheus" / "alerts.yml").read_text())
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    assert all(rule["annotations"]["summary"] and rule["alert"].startswith("Pyslirp") for rule in rules)
    dashboard = json.loads((root / "grafana" / "pyslirp-dashboard.json").read_text())
    targets = [target for panel in dashboard["panels"] for target in panel["targets"]]
    return [rule["expr"] for rule in rules] + [target["expr"] for target in targets]


async def test_the_shipped_alerts_and_dashboard_use_only_exported_metric_names() -> None:
    exported = await exported_names()
    used = {name for expr in contrib_expressions() for name in re.findall(r"\bpyslirp_[a-z0-9_]+", expr)}
    assert len(used) > 15
    assert used - exported == set()
