"""Prometheus metrics: a custom collector that reads the gateways when scraped.

Nothing here runs per packet. Per line means per client label: a line's name, or ``NAME#1`` to
``NAME#N`` for a ``tcp-listen`` line with ``max_clients: N`` (the one line without ``lines`` is
named by its ``serial.port``), carried as the ``line`` label.

Every declared counter of every component comes from the
:class:`~pyslirp.runtime.counter_registry.CounterRegistry` as
``pyslirp_<component>_<counter>_total`` with its ``reason`` (and, for included sets, ``protocol``
or ``direction``) label; byte counts end in ``_bytes_total`` (``bytes_in`` is exported as
``in_bytes_total``). The components of a client's line (deframer, link, scheduler, line, stack,
tcp, line_budget, proxy, udp_relay, dispatch) carry its ``line`` label, from the first time a client
was on it; server-wide ones (audit, forward, capture) have none. Beside them:

* per line, one series for every client label configured: ``pyslirp_line_open{line}``,
  ``pyslirp_link_up{line}``, ``pyslirp_link_phase{line, pyslirp_link_phase}`` (a state set), and
  ``pyslirp_frame_processing_seconds{line}``, a histogram of the time from a frame's arrival to its
  answer being queued (the line session's own histogram, re-bucketed per octave: empty while no
  client is on the line); for a line whose link is up, ``pyslirp_link_info{line, ...}`` (what LCP
  and IPCP negotiated) and ``pyslirp_lcp_echo_rtt_seconds{line}``;
* from :class:`EventStats` (an observer), per line: ``pyslirp_link_ups_total{line}``,
  ``pyslirp_link_downs_total{line}``, ``pyslirp_link_problems_total{line, problem}`` (keepalive
  failures, loopback, rejected protocols);
* per service and line, from :class:`EventStats` and the live connections:
  ``pyslirp_service_connections_active{service, line}``, ``..._opened_total{service, line}``,
  ``..._refused_total{service, reason, line}``, ``..._closed_total{service, outcome, line}``,
  ``pyslirp_service_bytes_total{service, direction, line}``; per service only:
  ``pyslirp_service_up`` (the latest probe), ``pyslirp_service_breaker_state{service, state}``
  (for a service with a circuit breaker);
* ``pyslirp_tcp_connection_rtt_seconds``, a histogram of each closed connection's smoothed RTT;
* ``pyslirp_uptime_seconds`` and ``pyslirp_build_info``.

Labels are bounded: ``line`` takes only the configured client labels (whatever else an observer
hears is left out), service names come from the configuration, reasons and outcomes from declared
sets; never a session's name, a client port or a connection id. Sum over ``line`` for the
server's totals (what ``/status`` and SIGUSR1 show).
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
    """What the observers hear, counted as it arrives: per line the link's ups, downs and problems,
    and per line and service the connections and the bytes of closed ones."""

    def __init__(self) -> None:
        self.link_ups: Counter[str] = Counter()  # by line
        self.link_downs: Counter[str] = Counter()
        self.link_problems: Counter[tuple[str, str]] = Counter()  # (line, kind), e.g. "keepalive_failed"
        self.opened: Counter[tuple[str, str]] = Counter()  # (line, service)
        self.refused: Counter[tuple[str, str, str]] = Counter()  # (line, service, reason)
        self.closed: Counter[tuple[str, str, str]] = Counter()  # (line, service, outcome)
        self.bytes: Counter[tuple[str, str, str]] = Counter()  # (line, service, "to_service"|"to_client")
        self.rtt_counts = [0] * (len(RTT_BUCKETS) + 1)
        self.rtt_sum = 0.0

    def link_up(self, line: str, event: LinkUp) -> None:
        self.link_ups[line] += 1

    def link_down(self, line: str, event: LinkDown) -> None:
        self.link_downs[line] += 1

    def link_problem(self, line: str, event: LinkProblem) -> None:
        self.link_problems[line, _snake_case(type(event).__name__)] += 1

    def connection_opened(self, flow: Flow) -> None:
        self.opened[flow.line, flow.service] += 1

    def connection_refused(self, flow: Flow, reason: str) -> None:
        self.refused[flow.line, flow.service or NO_SERVICE, reason] += 1

    def connection_closed(self, flow: Flow, summary: ConnectionSummary) -> None:
        self.closed[flow.line, flow.service, summary.outcome] += 1
        self.bytes[flow.line, flow.service, "to_service"] += summary.to_service
        self.bytes[flow.line, flow.service, "to_client"] += summary.to_client
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
        clients = self._clients()
        yield from self._counters(clients)
        yield from self._line_and_link(clients)
        yield from self._link_events(clients)
        yield from self._service_metrics(clients)
        yield from self._histograms(clients)
        uptime = GaugeMetricFamily("pyslirp_uptime_seconds", "seconds since pyslirp started")
        uptime.add_metric([], time.time() - self.server.started)
        yield uptime
        info = InfoMetricFamily("pyslirp_build", "the running pyslirp")
        info.add_metric([], {"version": __version__})
        yield info

    def _clients(self) -> dict[str, Any]:
        """Every client label of every configured line, in order, with the gateway of the client
        on it (None: nobody): the ``line`` label's values, and all of them."""
        return {
            label: served.gateways.get(label) for served in self.server.lines for label in served.client_labels()
        }

    def _counters(self, clients: dict[str, Any]) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for counter_set, spec, labels, value in self.server.registry.samples():
            if "line" in labels and labels["line"] not in clients:
                continue  # not a configured client's: the labels stay bounded
            name = metric_name(counter_set.component, spec)
            family = families.get(name)
            if family is None:
                family = families[name] = CounterMetricFamily(name, spec.help, labels=sorted(labels))
            family.add_metric([labels[key] for key in sorted(labels)], value)
        yield from families.values()

    def _line_and_link(self, clients: dict[str, Any]) -> Iterator[Metric]:
        line_open = GaugeMetricFamily("pyslirp_line_open", "1 while a client is on the line", labels=["line"])
        link_up = GaugeMetricFamily("pyslirp_link_up", "1 while the PPP link is up (IPCP opened)", labels=["line"])
        phase = StateSetMetricFamily("pyslirp_link_phase", "the PPP link's phase (RFC 1661 §3.2)", labels=["line"])
        # Both families are always described, with a sample only while there is something to say.
        info = InfoMetricFamily("pyslirp_link", "what LCP and IPCP negotiated on the link that is up", labels=["line"])
        rtt = GaugeMetricFamily(
            "pyslirp_lcp_echo_rtt_seconds", "round trip of the latest LCP keepalive echo", labels=["line"]
        )
        for line, gateway in clients.items():
            line_open.add_metric([line], 1 if gateway is not None else 0)
            link_up.add_metric([line], 1 if gateway is not None and gateway.network is not None else 0)
            negotiated = gateway.link.negotiated() if gateway is not None else {"phase": Phase.DEAD.value}
            phase.add_metric([line], {p.value: p.value == negotiated["phase"] for p in Phase})
            lcp, ipcp = negotiated.get("lcp"), negotiated.get("ipcp")
            if lcp is not None and ipcp is not None:
                info.add_metric([line], {
                    "mru": str(lcp["mru"]), "peer_mru": str(lcp["peer_mru"]), "accm": lcp["accm"],
                    "peer_accm": lcp["peer_accm"], "pfc": str(lcp["pfc"]).lower(), "acfc": str(lcp["acfc"]).lower(),
                    "auth": lcp["auth"], "local_ip": ipcp["local_ip"], "peer_ip": ipcp["peer_ip"],
                    "vj": str(ipcp["vj_tx"] and ipcp["vj_rx"]).lower(),
                })
            if lcp is not None and lcp["echo_rtt"] is not None:
                rtt.add_metric([line], lcp["echo_rtt"])
        yield from (line_open, link_up, phase, info, rtt)

    def _link_events(self, clients: dict[str, Any]) -> Iterator[Metric]:
        stats = self.services
        ups = CounterMetricFamily("pyslirp_link_ups", "times the link came up (IPCP opened)", labels=["line"])
        downs = CounterMetricFamily("pyslirp_link_downs", "times the link went down (LCP finished)", labels=["line"])
        problems = CounterMetricFamily(
            "pyslirp_link_problems", "keepalive failures, loopback and rejected protocols", labels=["line", "problem"]
        )
        for line in clients:
            ups.add_metric([line], stats.link_ups[line])
            downs.add_metric([line], stats.link_downs[line])
            for problem in LINK_PROBLEMS:
                problems.add_metric([line, problem], stats.link_problems[line, problem])
        yield from (ups, downs, problems)

    def _service_metrics(self, clients: dict[str, Any]) -> Iterator[Metric]:
        stats = self.services
        active: Counter[tuple[str, str]] = Counter()  # (line, service)
        moving: dict[tuple[str, str, str], int] = defaultdict(int, stats.bytes)
        for line, gateway in clients.items():
            if gateway is None or gateway.network is None:
                continue
            for connection in gateway.network.proxy.connections():
                service = str(connection["service"])
                active[line, service] += 1
                moving[line, service, "to_service"] += int(connection["to_service"])  # type: ignore[call-overload]
                moving[line, service, "to_client"] += int(connection["to_client"])  # type: ignore[call-overload]
        names = sorted(
            set(self.server.probe.results) | {service for _, service in stats.opened} | {service for _, service in active}
        )
        gauge = GaugeMetricFamily(
            "pyslirp_service_connections_active", "open connections", labels=["service", "line"]
        )
        opened = CounterMetricFamily(
            "pyslirp_service_connections_opened", "connections opened", labels=["service", "line"]
        )
        for name in names:
            for line in clients:
                gauge.add_metric([name, line], active[line, name])
                opened.add_metric([name, line], stats.opened[line, name])
        refused = CounterMetricFamily(
            "pyslirp_service_connections_refused", "connections refused or failed, by reason",
            labels=["service", "reason", "line"],
        )
        for (line, service, reason), value in sorted(stats.refused.items()):
            if line in clients:
                refused.add_metric([service, reason, line], value)
        closed = CounterMetricFamily(
            "pyslirp_service_connections_closed", "connections ended, by how", labels=["service", "outcome", "line"]
        )
        for (line, service, outcome), value in sorted(stats.closed.items()):
            if line in clients:
                closed.add_metric([service, outcome, line], value)
        moved = CounterMetricFamily(
            "pyslirp_service_bytes", "bytes carried, by direction", labels=["service", "direction", "line"],
            unit="bytes",
        )
        for (line, service, direction), value in sorted(moving.items()):
            if line in clients:
                moved.add_metric([service, direction, line], value)
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

    def _histograms(self, clients: dict[str, Any]) -> Iterator[Metric]:
        stats = self.services
        rtt = HistogramMetricFamily("pyslirp_tcp_connection_rtt_seconds", "smoothed RTT of each closed connection")
        rtt.add_metric([], _cumulative(RTT_BUCKETS, stats.rtt_counts), stats.rtt_sum)
        yield rtt
        frames = HistogramMetricFamily(
            "pyslirp_frame_processing_seconds", "time from a frame's arrival to its answer being queued, this line session",
            labels=["line"],
        )
        for line, gateway in clients.items():
            buckets, total = _octave_buckets(gateway.rx_times if gateway is not None else None)
            frames.add_metric([line], buckets, total)
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


def _octave_buckets(times: ProcessingTimes | None) -> tuple[list[tuple[str, float]], float]:
    """The processing-time histogram per octave, in seconds, and an estimate of its sum (each
    packet at its bucket's upper edge: the histogram keeps no exact sum); None: an empty one."""
    running, total, buckets = 0, 0.0, []
    for index in range(BUCKETS):
        count = times.counts[index] if times is not None else 0
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
