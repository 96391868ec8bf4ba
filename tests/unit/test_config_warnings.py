"""Exposures and contradictions a valid configuration can hold: said by validate and at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyslirp import cli
from pyslirp.config import PyslirpConfig
from pyslirp.config_warnings import config_warnings

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_config_has_nothing_to_say() -> None:
    assert config_warnings(PyslirpConfig()) == []
    assert cli.main(["validate", "--config", str(REPO / "config.yaml")]) == 0


def test_exposures_beyond_loopback_are_named() -> None:
    config = PyslirpConfig(
        services={22: {"host": "192.0.2.5", "port": 22}, 80: {"host": "localhost", "port": 8080}},
        forwards=[{"listen_host": "0.0.0.0", "listen_port": 2222, "peer_port": 22}],
        monitoring={"enable_metrics": True, "metrics_host": "0.0.0.0"},
    )
    assert config_warnings(config) == [
        "services.22.host is 192.0.2.5, not loopback: the client reaches that machine through it",
        "forwards.0.listen_host is 0.0.0.0: anyone who reaches it on port 2222 connects into the client",
        "monitoring.metrics_host is 0.0.0.0: anyone who reaches ports 9090 and 9091 sees the client's address "
        "and traffic",
    ]


def test_security_settings_that_contradict_the_services() -> None:
    services = {22: {"port": 2222}, 80: {"port": 8080}}
    only_unmapped = PyslirpConfig(services=services, security={"allowed_ports": [443]})
    assert config_warnings(only_unmapped) == [
        "security.allowed_ports allows none of the enabled services: every connection is refused",
        "security.allowed_ports lists 443, which no service maps",
        "security.allowed_ports does not list 53: the DNS relay (dns.enabled) refuses every query",
    ]
    # Port 53 is the DNS relay's: listing it is no mistake while DNS forwarding is on, blocking it is.
    assert config_warnings(PyslirpConfig(services=services, security={"allowed_ports": [22, 53]})) == []
    assert config_warnings(PyslirpConfig(services=services, security={"blocked_ports": [53]})) == [
        "security.blocked_ports lists 53: the DNS relay (dns.enabled) refuses every query",
    ]
    everything_blocked = PyslirpConfig(
        services=services, dns={"enabled": False}, security={"blocked_ports": [22, 80], "allowed_ports": [22]}
    )
    assert config_warnings(everything_blocked) == [
        "security.allowed_ports and security.blocked_ports both list 22: it is blocked",
        "security.blocked_ports blocks every enabled service: every connection is refused",
    ]
    no_auth_service = PyslirpConfig(
        services={80: {"port": 8080}}, security={"brute_force": {"enabled": True}, "allowlist": ["0.0.0.0/0"]}
    )
    assert config_warnings(no_auth_service) == [
        "security.brute_force is enabled but no service is an authentication service (set auth_service: true on "
        "one): it never blocks",
        "security.allowlist holds 0.0.0.0/0: brute-force blocking never applies",
    ]


def test_validate_prints_each_warning_and_still_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("services:\n  22:\n    host: 192.0.2.5\n    port: 22\n")
    assert cli.main(["validate", "--config", str(path)]) == 0
    assert capsys.readouterr().err == (
        "warning: services.22.host is 192.0.2.5, not loopback: the client reaches that machine through it\n"
    )


def test_an_outbound_policy_that_cannot_route_anything_is_explained() -> None:
    assert config_warnings(PyslirpConfig(outbound={"mode": "socks"})) == [
        "outbound.mode is socks but socks.enabled is false: every outbound connection is refused",
    ]
    covered = PyslirpConfig(outbound={"mode": "direct", "allow": ["198.18.0.0/24"], "deny": ["198.18.0.0/15"]})
    assert config_warnings(covered) == [
        "outbound.deny covers every network of outbound.allow (198.18.0.0/24): every outbound connection is refused",
    ]
    no_ports = PyslirpConfig(outbound={"mode": "socks", "allow": ["192.0.2.0/24"], "ports": []},
                             socks={"enabled": True})
    assert config_warnings(no_ports) == [
        "outbound.ports is empty: every outbound connection is refused (null allows any port)",
    ]
    assert config_warnings(PyslirpConfig(outbound={"mode": "direct"})) == [
        "outbound.mode is direct with no outbound.allow: the client reaches every address outbound.deny does not "
        "name, from this host",
    ]
    # with outbound on, an allowed port no service maps may be meant for outbound connections
    outbound_ports = PyslirpConfig(security={"allowed_ports": [443]}, dns={"enabled": False},
                                   outbound={"mode": "direct", "allow": ["192.0.2.0/24"]})
    assert config_warnings(outbound_ports) == []
