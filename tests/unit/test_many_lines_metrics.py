"""/metrics of a server with many lines: every per-line family carries a ``line`` label, one series
per configured client label (an idle line shows 0), each line's counters are its own and stay when
its client hangs up, and no other label value ever appears."""

from __future__ import annotations

import asyncio
import socket
import sys
import urllib.request
from ipaddress import IPv4Address
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import datapath  # noqa: E402,F401  (puts tests/unit on sys.path too)

from test_many_lines import Running, wait_until  # noqa: E402

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]

LINES = [{"name": "a"}, {"name": "b"}, {"name": "hub", "max_clients": 2}]
CLIENT_LABELS = {"a", "b", "hub#1", "hub#2"}
SERVICE = "port 7"  # Running's echo service has no name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def get_metrics(port: int) -> Metrics:
    """Every sample of the server's /metrics, keyed by name and sorted labels."""
    def fetch() -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
            return response.read()

    return parse((await asyncio.to_thread(fetch)).decode())


def parse(text: str) -> Metrics:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by_line(metrics: Metrics, name: str, **labels: str) -> dict[str, float]:
    """``name``'s samples with ``labels``, by their line label."""
    wanted = set(labels.items())
    return {
        dict(sample_labels)["line"]: value
        for (sample, sample_labels), value in metrics.items()
        if sample == name and wanted <= set(sample_labels)
    }


def line_values(metrics: Metrics) -> set[str]:
    return {value for _, labels in metrics for key, value in labels if key == "line"}


async def test_per_line_series_for_every_configured_client_and_only_those() -> None:
    port = free_port()
    monitoring = {"enable_metrics": True, "metrics_port": port, "health_port": port}
    async with Running(LINES, monitoring=monitoring) as running:
        server = running.server
        await wait_until(lambda: server.metrics_serving)
        a, a_line = await running.dial("a")
        hub, _ = await running.dial("hub")
        await a.exchange(b"from a, a longer message than the hub's")
        await a.exchange(b"from a again")
        await hub.exchange(b"hub")
        metrics = await get_metrics(port)

        # One series per client label of every configured line: linked ones 1, idle ones 0.
        assert by_line(metrics, "pyslirp_line_open") == {"a": 1, "b": 0, "hub#1": 1, "hub#2": 0}
        assert by_line(metrics, "pyslirp_link_up") == {"a": 1, "b": 0, "hub#1": 1, "hub#2": 0}
        assert by_line(metrics, "pyslirp_link_phase", pyslirp_link_phase="network") == {
            "a": 1, "b": 0, "hub#1": 1, "hub#2": 0,
        }
        assert by_line(metrics, "pyslirp_link_phase", pyslirp_link_phase="dead") == {
            "a": 0, "b": 1, "hub#1": 0, "hub#2": 1,
        }
        assert by_line(metrics, "pyslirp_link_ups_total") == {"a": 1, "b": 0, "hub#1": 1, "hub#2": 0}
        frames = by_line(metrics, "pyslirp_frame_processing_seconds_count")
        assert frames["a"] > 0 and frames["hub#1"] > 0 and frames["b"] == frames["hub#2"] == 0
        peers = {dict(labels)["line"]: dict(labels)["peer_ip"]
                 for name, labels in metrics if name == "pyslirp_link_info"}
        assert peers == {"a": str(IPv4Address(a.ppp.ip)), "hub#1": str(IPv4Address(hub.ppp.ip))}

        # Connections per service and line.
        assert by_line(metrics, "pyslirp_service_connections_opened_total", service=SERVICE) == {
            "a": 2, "b": 0, "hub#1": 1, "hub#2": 0,
        }

        # Each line's counters are its own: a moved more than the hub's client; b and hub#2 never
        # had a client, so nothing was counted on them. Summed over lines, the registry's totals.
        ok = by_line(metrics, "pyslirp_deframer_frames_ok_total")
        assert set(ok) == {"a", "hub#1"} and ok["a"] > ok["hub#1"] > 0
        in_bytes = by_line(metrics, "pyslirp_deframer_in_bytes_total")
        assert in_bytes["a"] > in_bytes["hub#1"] > 0
        assert server.monitoring is not None  # scraped without yielding: nothing moves meanwhile
        now = parse(generate_latest(server.monitoring.prometheus).decode())
        total = server.registry.totals("deframer")["bytes_in"]
        assert sum(by_line(now, "pyslirp_deframer_in_bytes_total").values()) == total
        assert set(by_line(metrics, "pyslirp_tcp_segments_in_total")) == {"a", "hub#1"}
        # Server-wide components carry no line label.
        assert all("line" not in dict(labels) for name, labels in metrics if name.startswith("pyslirp_forward_"))
        # Bounded: only the configured client labels, never a session's name or a client port.
        assert line_values(metrics) == CLIENT_LABELS

        # a's client hangs up: a is idle again, its counts stay (counters never go backwards).
        a._client_task.cancel()
        a_line.close()
        running.clients.remove((a, a_line))
        await wait_until(lambda: "a" not in server.lines[0].gateways)
        after = await get_metrics(port)
        assert by_line(after, "pyslirp_line_open")["a"] == 0 and by_line(after, "pyslirp_link_up")["hub#1"] == 1
        assert by_line(after, "pyslirp_link_downs_total")["a"] == 1
        assert by_line(after, "pyslirp_deframer_in_bytes_total")["a"] >= in_bytes["a"]
        assert by_line(after, "pyslirp_service_connections_opened_total", service=SERVICE)["a"] == 2
        assert line_values(after) == CLIENT_LABELS
