"""The admission pipeline's cost per new connection (pytest-benchmark): the route alone (every
security feature off) against every check on: port policy, gateway and per-service rate limits,
the brute-force guard and a plain extension. Each round admits, connects and closes N flows, as
the proxy does for N short connections; extra_info records microseconds per connection.

Compare with ``server CPU ms per short conn`` in benchmarks/e2e (the whole server's CPU for one
connection through the VM): the pipeline's share is this figure divided by that one.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from pyslirp.admission_extension import ALLOW, FlowInfo
from pyslirp.config import PyslirpConfig
from pyslirp.runtime.admission import Admission, Admitted
from pyslirp.runtime.observers import Flow
from pyslirp.runtime.outbound import OutboundRoutes
from pyslirp.runtime.security import security_pipeline

LOCAL = IPv4Address("10.0.0.1")
N = 10_000
FLOWS = [Flow("bench", "tcp", (IPv4Address("10.0.0.2"), 1024 + i % 60000), (LOCAL, 22 if i % 2 else 80))
         for i in range(N)]


def allow(flow: FlowInfo) -> object:
    return ALLOW


SECURITY_ON = {
    "allowed_ports": [22, 80], "blocked_ports": [23],
    "rate_limiting": {"enabled": True, "connections_per_second": 1e9, "burst": 1_000_000},
    "brute_force": {"enabled": True}, "allowlist": ["192.0.2.0/24"],
    "admission": f"{__name__}:allow",
}


@pytest.mark.parametrize("security", ["off", "every check"])
def test_admission_per_connection(benchmark, security: str) -> None:
    services: dict = {22: {"port": 2222}, 80: {"port": 8080}}
    if security != "off":
        services[22]["rate_limit"] = {"connections_per_second": 1e9, "burst": 1_000_000}
    config = PyslirpConfig(services=services, security=SECURITY_ON if security != "off" else {})
    pipeline = security_pipeline(config, clock=lambda: 0.0, schedule=lambda delay, callback: None)
    admission = Admission(config.services, LOCAL, pipeline.checks)
    clock = [0.0]

    def admit_all() -> None:
        now = clock[0]
        for flow in FLOWS:
            now += 0.001
            decision = admission.admit(flow, now)
            assert isinstance(decision, Admitted)
            admission.connected(decision)
            admission.closed(decision, connected=True)
        clock[0] = now

    benchmark(admit_all)
    benchmark.extra_info["us/connection"] = round(benchmark.stats.stats.median / N * 1e6, 3)


OUTBOUND_FLOWS = [Flow("bench", "tcp", (IPv4Address("10.0.0.2"), 1024 + i % 60000),
                       (IPv4Address(f"198.18.{i // 250 % 250}.{1 + i % 250}"), 443)) for i in range(N)]


@pytest.mark.parametrize("policy", ["no lists", "allow, deny and ports"])
def test_outbound_route_per_connection(benchmark, policy: str) -> None:
    """The outbound route's policy lists on a connection to another address (mode direct; the
    connect itself is the host's)."""
    lists = {"allow": ["198.18.0.0/15", "192.0.2.0/24"], "deny": ["198.18.250.0/24", "203.0.113.0/24"],
             "ports": [80, 443]} if policy != "no lists" else {}
    config = PyslirpConfig(outbound={"mode": "direct", "max_connections": N, **lists})
    admission = Admission({}, LOCAL, outbound=OutboundRoutes(config.outbound, config.socks))

    def admit_all() -> None:
        for flow in OUTBOUND_FLOWS:
            decision = admission.admit(flow, 0.0)
            assert isinstance(decision, Admitted)
            admission.connected(decision)
            admission.closed(decision, connected=True)

    benchmark(admit_all)
    benchmark.extra_info["us/connection"] = round(benchmark.stats.stats.median / N * 1e6, 3)
