"""The security section's admission checks: the port policy and the connection rate limits, on
their own (sans-IO, a clock given) and in a dialled gateway, where a refusal is an RST that is
counted, observed and audited."""

from __future__ import annotations

import asyncio
import json
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import datapath  # noqa: E402

from pyslirp.config import PyslirpConfig, ServiceConfig  # noqa: E402
from pyslirp.net import tcp  # noqa: E402
from pyslirp.runtime.admission import Admission, Admitted, Refused  # noqa: E402
from pyslirp.runtime.audit import AuditLog  # noqa: E402
from pyslirp.runtime.observers import Flow, Observers  # noqa: E402
from pyslirp.runtime.security import ConnectionRate, PortPolicy, TokenBucket, security_checks  # noqa: E402

LOCAL = IPv4Address("10.0.0.1")
PEER = IPv4Address("10.0.0.2")


def flow(port: int) -> Flow:
    return Flow("test", "tcp", (PEER, 40000), (LOCAL, port))


def admission_for(config: PyslirpConfig) -> Admission:
    return Admission(config.services, LOCAL, security_checks(config))


def services(*ports: int, **extra: object) -> dict[int, dict[str, object]]:
    return {port: {"port": 1000 + port, **extra} for port in ports}


def test_a_token_bucket_gives_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.05)  # half a token
    assert bucket.take(0.1)
    assert bucket.take(10.0) and bucket.take(10.0) and bucket.take(10.0) and not bucket.take(10.0)  # capped


def test_nothing_configured_is_no_check_at_all() -> None:
    assert security_checks(PyslirpConfig(services=services(22))) == []


def test_blocked_ports_then_allowed_ports() -> None:
    config = PyslirpConfig(services=services(22, 80, 443), security={"blocked_ports": [80], "allowed_ports": [22, 80]})
    (policy,) = security_checks(config)
    assert isinstance(policy, PortPolicy)
    admission = admission_for(config)
    assert isinstance(admission.admit(flow(22), 0.0), Admitted)
    assert admission.admit(flow(80), 0.0) == Refused("port_blocked")  # blocked wins over allowed
    assert admission.admit(flow(443), 0.0) == Refused("port_not_allowed")
    assert admission.admit(flow(8080), 0.0) == Refused("no_service")  # not mapped at all
    # allowed_ports null: every enabled service
    admission = admission_for(PyslirpConfig(services=services(22, 80), security={"blocked_ports": [22]}))
    assert admission.admit(flow(22), 0.0) == Refused("port_blocked")
    assert isinstance(admission.admit(flow(80), 0.0), Admitted)


def test_the_gateway_rate_limit_allows_burst_plus_rate_times_elapsed() -> None:
    config = PyslirpConfig(
        services=services(22, 80, max_connections=1000),
        security={"rate_limiting": {"enabled": True, "connections_per_second": 10, "burst": 20}},
    )
    admission = admission_for(config)
    admitted = 0
    for i in range(200):  # 200 connections over 5 s, alternating services: one bucket for both
        decision = admission.admit(flow(22 if i % 2 else 80), i * 0.025)
        if isinstance(decision, Admitted):
            admitted += 1
        else:
            assert decision == Refused("rate_limit")
    elapsed = 199 * 0.025
    assert 20 + int(10 * elapsed) - 1 <= admitted <= 20 + 10 * elapsed + 1


def test_a_service_with_its_own_limit_is_limited_alone() -> None:
    config = PyslirpConfig(services={22: {"port": 1022, "rate_limit": {"connections_per_second": 1, "burst": 2}},
                                     80: {"port": 1080}})
    (rate,) = security_checks(config)
    assert isinstance(rate, ConnectionRate) and rate.overall is None
    admission = admission_for(config)
    assert [type(admission.admit(flow(22), 0.0)) for _ in range(3)] == [Admitted, Admitted, Refused]
    assert all(isinstance(admission.admit(flow(80), 0.0), Admitted) for _ in range(10))
    assert isinstance(admission.admit(flow(22), 1.0), Admitted)


def test_a_refused_flow_takes_no_capacity() -> None:
    config = PyslirpConfig(services={22: {"port": 1022, "max_connections": 1}}, security={"blocked_ports": [22]})
    admission = admission_for(config)
    assert admission.admit(flow(22), 0.0) == Refused("port_blocked")
    assert not admission.active


async def test_a_rate_limited_client_gets_rst_and_the_refusal_is_counted_and_audited(tmp_path: Path) -> None:
    """In a dialled gateway: 5 connections against a burst of 2 with a negligible rate."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    audit = AuditLog(tmp_path / "audit.jsonl", clock=lambda: 0.0)
    path = datapath.DataPath()
    limit = {"enabled": True, "connections_per_second": 0.001, "burst": 2}
    await path.start(port, observers=Observers(audit), security={"rate_limiting": limit})
    conns = [path.connect() for _ in range(5)]
    for _ in range(2000):
        if all(c.state in (tcp.ESTABLISHED, tcp.CLOSED) for c in conns):
            break
        await asyncio.sleep(0.001)
    states = [c.state for c in conns]
    assert states.count(tcp.ESTABLISHED) == 2 and states.count(tcp.CLOSED) == 3  # RST, no timeout
    assert path.registry.totals("proxy")["refused_rate_limit"] == 3
    await path.close()
    audit.close()
    server.close()
    refusals = [json.loads(line) for line in audit.path.read_text().splitlines()]
    refusals = [r for r in refusals if r["event"] == "connection_refused"]
    assert [r["reason"] for r in refusals] == ["rate_limit"] * 3


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"rate_limiting": {"enabled": True, "connections_per_second": 0}}, "security.rate_limiting.connections_per_second"),
        ({"rate_limiting": {"burst": 0}}, "security.rate_limiting.burst"),
        ({"blocked_ports": [70000]}, "security.blocked_ports.0"),
    ],
)
def test_a_wrong_security_value_names_its_field(section: dict, message: str) -> None:
    from pyslirp.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(overrides={"security": section})


def test_per_service_rate_limit_is_validated() -> None:
    with pytest.raises(ValueError, match="burst"):
        ServiceConfig(port=22, rate_limit={"burst": 0})
