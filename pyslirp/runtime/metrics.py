"""Prometheus metrics: a custom collector that reads the gateway when scraped.

Nothing here runs per packet. Every declared counter of every component comes from the
:class:`~pyslirp.runtime.counter_registry.CounterRegistry` as
``pyslirp_<component>_<counter>_total`` with its ``reason`` (and, for included sets, ``protocol``
or ``direction``) label; byte counts end in ``_bytes_total`` (``bytes_in`` is exported as
``in_bytes_total``). Beside them:

* ``pyslirp_line_open``, ``pyslirp_link_up``, ``pyslirp_link_phase{phase}`` (a state set) and
  ``pyslirp_link_info{...}`` (what LCP and IPCP negotiated), ``pyslirp_lcp_echo_rtt_seconds``;
* from :class:`EventStats` (an observer), over every line session: ``pyslirp_link_ups_total``,
  ``pyslirp_link_downs_total``, ``pyslirp_link_problems_total{problem}`` (keepalive failures,
  loopback, rejected protocols);
* per service, from :class:`EventStats` and the live connections:
  ``pyslirp_service_connections_active``, ``..._opened_total``, ``..._refused_total{reason}``,
  ``..._closed_total{outcome}``, ``pyslirp_service_bytes_total{direction}``,
  ``pyslirp_service_up`` (the latest probe), ``pyslirp_service_breaker_state{state}`` (for a
  service with a circuit breaker);
* ``pyslirp_tcp_connection_rtt_seconds``, a histogram of each closed connection's smoothed RTT;
* ``pyslirp_frame_processing_seconds``, a histogram of the time from a frame's arrival to its
  answer being queued (the gateway's own histogram, re-bucketed per octave);
* ``pyslirp_uptime_seconds`` and ``pyslirp_build_info``.

Labels are bounded: service names come from the configuration, reasons and outcomes from
declared sets; never a client port or a connection id.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any, get_args

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import CollectorRegistry

from pyslirp import __version__
from pyslirp.counters import CounterSpec
from pyslirp.ppp.link import LinkDown, LinkUp, Phase
from pyslirp.runtime.breaker import BreakerState
from pyslirp.runtime.observers import ConnectionSummary, Flow, GatewayObserver, LinkProblem
from pyslirp.runtime.status import GatewayView
from pyslirp.runtime.timing import BUCKETS, STEPS_PER_OCTAVE, ProcessingTimes

#: upper bounds of the connection RTT histogram, seconds (a serial line's RTTs run 10 ms to seconds)
RTT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


#: the problem label's values: the kinds of LinkProblem event
LINK_PROBLEMS = tuple(_snake_case(kind.__name__) for kind in get_args(LinkProblem))
NO_SERVICE = "none"  # the service label of a flow refused before it had one


class EventStats(GatewayObserver):
    """What the observers hear, counted as it arrives: the link's ups, downs and problems, and per
    service the connections and the bytes of closed ones."""

    def __init__(self) -> None:
        self.link_ups = 0
        self.link_downs = 0
        self.link_problems: Counter[str] = Counter()  # by event kind, e.g. "keepalive_failed"
        self.opened: Counter[str] = Counter()
        self.refused: Counter[tuple[str, str]] = Counter()
        self.closed: Counter[tuple[str, str]] = Counter()
        self.bytes: Counter[tuple[str, str]] = Counter()  # (service, "to_service"|"to_client")
        self.rtt_counts = [0] * (len(RTT_BUCKETS) + 1)
        self.rtt_sum = 0.0

    def link_up(self, line: str, event: LinkUp) -> None:
        self.link_ups += 1

    def link_down(self, line: str, event: LinkDown) -> None:
        self.link_downs += 1

    def link_problem(self, line: str, event: LinkProblem) -> None:
        self.link_problems[_snake_case(type(event).__name__)] += 1

    def connection_opened(self, flow: Flow) -> None:
        self.opened[flow.service] += 1

    def connection_refused(self, flow: Flow, reason: str) -> None:
        self.refused[flow.service or NO_SERVICE, reason] += 1

    def connection_closed(self, flow: Flow, summary: ConnectionSummary) -> None:
        self.closed[flow.service, summary.outcome] += 1
        self.bytes[flow.service, "to_service"] += summary.to_service
        self.bytes[flow.service, "to_client"] += summary.to_client
        if summary.srtt is not None:
            index = next((i for i, bound in enumerate(RTT_BUCKETS) if summary.srtt <= bound), len(RTT_BUCKETS))
            self.rtt_counts[index] += 1
            self.rtt_sum += summary.srtt


class GatewayCollector:
    """Everything above, read from ``server`` at each scrape."""

    def __init__(self, server: GatewayView, services: EventStats) -> None:
        self.server = server
        self.services = services

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._line_and_link()
        yield from self._link_events()
        yield from self._service_metrics()
        yield from self._histograms()
        uptime = GaugeMetricFamily("pyslirp_uptime_seconds", "seconds since pyslirp started")
        uptime.add_metric([], time.time() - self.server.started)
        yield uptime
        info = InfoMetricFamily("pyslirp_build", "the running pyslirp")
        info.add_metric([], {"version": __version__})
        yield info

    def _counters(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for counter_set, spec, labels, value in self.server.registry.samples():
            name = metric_name(counter_set.component, spec)
            family = families.get(name)
            if family is None:
                family = families[name] = CounterMetricFamily(name, spec.help, labels=sorted(labels))
            family.add_metric([labels[key] for key in sorted(labels)], value)
        yield from families.values()

    def _line_and_link(self) -> Iterator[Metric]:
        gateway = self.server.session()
        line_open = GaugeMetricFamily("pyslirp_line_open", "1 while a client is on the line")
        line_open.add_metric([], 1 if gateway is not None else 0)
        link_up = GaugeMetricFamily("pyslirp_link_up", "1 while the PPP link is up (IPCP opened)")
        link_up.add_metric([], 1 if gateway is not None and gateway.network is not None else 0)
        negotiated = gateway.link.negotiated() if gateway is not None else {"phase": Phase.DEAD.value}
        phase = StateSetMetricFamily("pyslirp_link_phase", "the PPP link's phase (RFC 1661 §3.2)")
        phase.add_metric([], {p.value: p.value == negotiated["phase"] for p in Phase})
        yield from (line_open, link_up, phase)
        # Both families are always described, with a sample only while there is something to say.
        lcp, ipcp = negotiated.get("lcp"), negotiated.get("ipcp")
        info = InfoMetricFamily("pyslirp_link", "what LCP and IPCP negotiated on the link that is up")
        if lcp is not None and ipcp is not None:
            info.add_metric([], {
                "mru": str(lcp["mru"]), "peer_mru": str(lcp["peer_mru"]), "accm": lcp["accm"],
                "peer_accm": lcp["peer_accm"], "pfc": str(lcp["pfc"]).lower(), "acfc": str(lcp["acfc"]).lower(),
                "auth": lcp["auth"], "local_ip": ipcp["local_ip"], "peer_ip": ipcp["peer_ip"],
                "vj": str(ipcp["vj_tx"] and ipcp["vj_rx"]).lower(),
            })
        rtt = GaugeMetricFamily("pyslirp_lcp_echo_rtt_seconds", "round trip of the latest LCP keepalive echo")
        if lcp is not None and lcp["echo_rtt"] is not None:
            rtt.add_metric([], lcp["echo_rtt"])
        yield from (info, rtt)

    def _link_events(self) -> Iterator[Metric]:
        stats = self.services
        ups = CounterMetricFamily("pyslirp_link_ups", "times the link came up (IPCP opened)")
        ups.add_metric([], stats.link_ups)
        downs = CounterMetricFamily("pyslirp_link_downs", "times the link went down (LCP finished)")
        downs.add_metric([], stats.link_downs)
        problems = CounterMetricFamily(
            "pyslirp_link_problems", "keepalive failures, loopback and rejected protocols", labels=["problem"]
        )
        for problem in LINK_PROBLEMS:
            problems.add_metric([problem], stats.link_problems[problem])
        yield from (ups, downs, problems)

    def _service_metrics(self) -> Iterator[Metric]:
        stats = self.services
        gateway = self.server.session()
        live = gateway.network.proxy.connections() if gateway is not None and gateway.network is not None else []
        active: Counter[str] = Counter()
        moving: dict[tuple[str, str], int] = defaultdict(int, stats.bytes)
        for connection in live:
            service = str(connection["service"])
            active[service] += 1
            moving[service, "to_service"] += int(connection["to_service"])  # type: ignore[call-overload]
            moving[service, "to_client"] += int(connection["to_client"])  # type: ignore[call-overload]
        names = sorted(set(self.server.probe.results) | set(stats.opened) | set(active))
        gauge = GaugeMetricFamily("pyslirp_service_connections_active", "open connections", labels=["service"])
        opened = CounterMetricFamily("pyslirp_service_connections_opened", "connections opened", labels=["service"])
        for name in names:
            gauge.add_metric([name], active[name])
            opened.add_metric([name], stats.opened[name])
        refused = CounterMetricFamily(
            "pyslirp_service_connections_refused", "connections refused or failed, by reason", labels=["service", "reason"]
        )
        for (service, reason), value in sorted(stats.refused.items()):
            refused.add_metric([service, reason], value)
        closed = CounterMetricFamily(
            "pyslirp_service_connections_closed", "connections ended, by how", labels=["service", "outcome"]
        )
        for (service, outcome), value in sorted(stats.closed.items()):
            closed.add_metric([service, outcome], value)
        moved = CounterMetricFamily(
            "pyslirp_service_bytes", "bytes carried, by direction", labels=["service", "direction"], unit="bytes"
        )
        for (service, direction), value in sorted(moving.items()):
            moved.add_metric([service, direction], value)
        up = GaugeMetricFamily("pyslirp_service_up", "1 if the service answered its latest probe", labels=["service"])
        for name, result in sorted(self.server.probe.results.items()):
            if result.reachable is not None:
                up.add_metric([name], 1 if result.reachable else 0)
        breaker = GaugeMetricFamily(
            "pyslirp_service_breaker_state", "1 for the state each service's circuit breaker is in",
            labels=["service", "state"],
        )
        breakers = self.server.breakers
        for name, state in sorted((breakers.states() if breakers is not None else {}).items()):
            for each in BreakerState:
                breaker.add_metric([name, each.value], 1 if each.value == state else 0)
        yield from (gauge, opened, refused, closed, moved, up, breaker)

    def _histograms(self) -> Iterator[Metric]:
        stats = self.services
        rtt = HistogramMetricFamily("pyslirp_tcp_connection_rtt_seconds", "smoothed RTT of each closed connection")
        rtt.add_metric([], _cumulative(RTT_BUCKETS, stats.rtt_counts), stats.rtt_sum)
        yield rtt
        gateway = self.server.session()
        frames = HistogramMetricFamily(
            "pyslirp_frame_processing_seconds", "time from a frame's arrival to its answer being queued, this line session"
        )
        if gateway is not None:
            buckets, total = _octave_buckets(gateway.rx_times)
            frames.add_metric([], buckets, total)
        yield frames


def metric_name(component: str, spec: CounterSpec) -> str:
    """The exported name of a declared counter, without ``_total``: byte counts end in ``_bytes``."""
    name = spec.name
    if spec.unit == "bytes" and not name.endswith("_bytes"):
        name = name.removeprefix("bytes_") + "_bytes"
    return f"pyslirp_{component}_{name}"


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    running, buckets = 0, []
    for bound, count in zip((*bounds, float("inf")), counts):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return buckets


def _octave_buckets(times: ProcessingTimes) -> tuple[list[tuple[str, float]], float]:
    """The processing-time histogram per octave, in seconds, and an estimate of its sum (each
    packet at its bucket's upper edge: the histogram keeps no exact sum)."""
    running, total, buckets = 0, 0.0, []
    for index in range(BUCKETS):
        count = times.counts[index]
        upper = 2 ** (index / STEPS_PER_OCTAVE) * 1e-6
        running += count
        total += count * upper
        if index % STEPS_PER_OCTAVE == 0:
            buckets.append((f"{upper:.6g}", running))
    buckets.append(("+Inf", running))
    return buckets, total


def metrics_registry(collector: Any) -> CollectorRegistry:
    """A Prometheus registry holding only pyslirp's collector (no process metrics of the client
    library, which would read /proc at every scrape: use node_exporter for those)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
