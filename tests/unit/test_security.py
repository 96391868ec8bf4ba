"""The security section's admission checks: the port policy, the connection rate limits and the
brute-force guard, on their own (sans-IO, a clock given) and in a dialled gateway, where a refusal is an RST that is
counted, observed and audited."""

from __future__ import annotations

import asyncio
import json
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import datapath  # noqa: E402

from pyslirp._core.checksum import internet_checksum  # noqa: E402
from pyslirp.config import PyslirpConfig, ServiceConfig  # noqa: E402
from pyslirp.net import ipv4  # noqa: E402
from pyslirp.net.stack import Stack  # noqa: E402
from pyslirp.net import tcp_types  # noqa: E402
from pyslirp.ppp.link import AuthFailed  # noqa: E402
from pyslirp.runtime.admission import Admission, Admitted, Refused  # noqa: E402
from pyslirp.runtime.audit import AuditLog  # noqa: E402
from pyslirp.runtime.brute_force import MAX_BLOCK, MAX_TRACKED, BruteForceGuard  # noqa: E402
from pyslirp.runtime.observers import ConnectionSummary, Flow, Observers  # noqa: E402
from pyslirp.runtime.server import Server  # noqa: E402
from pyslirp.runtime.security import ConnectionRate, PortPolicy, TokenBucket, security_pipeline  # noqa: E402

LOCAL = IPv4Address("10.0.0.1")
PEER = IPv4Address("10.0.0.2")


def flow(port: int) -> Flow:
    return Flow("test", "tcp", (PEER, 40000), (LOCAL, port))


def security_checks(config: PyslirpConfig) -> list:
    return security_pipeline(config, clock=lambda: 0.0, schedule=lambda delay, callback: None).checks


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
    assert not bucket.take(9.0)  # a clock that steps back refills nothing


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
            admission.connected(decision)  # sequential, short connections
            admission.closed(decision, connected=True)
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
    admission.pending.clear()  # those connected
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
        if all(c.state in (tcp_types.ESTABLISHED, tcp_types.CLOSED) for c in conns):
            break
        await asyncio.sleep(0.001)
    states = [c.state for c in conns]
    assert states.count(tcp_types.ESTABLISHED) == 2 and states.count(tcp_types.CLOSED) == 3  # RST, no timeout
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


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ssh_flow(client: str = "10.0.0.2", port: int = 22) -> Flow:
    return Flow("test", "tcp", (IPv4Address(client), 40000), (LOCAL, port), "ssh")


def short(seconds: float = 1.0) -> ConnectionSummary:
    return ConnectionSummary("closed", 100, 100, seconds, 0.05)


def guard_for(clock: Clock, records: list, **settings: object) -> tuple[BruteForceGuard, Admission]:
    config = PyslirpConfig(
        services={22: {"port": 2222}, 80: {"port": 8080}, 2200: {"port": 22000, "auth_service": True}},
        security={"brute_force": {"enabled": True, "max_failures": 3, "window": 60, "block_time": 100, **settings},
                  "allowlist": ["10.0.0.128/25"]},
    )
    guard = BruteForceGuard.from_config(
        config.security.brute_force, config.services, config.security.allowlist, clock,
        record=lambda event, **fields: records.append((event, fields)),
    )
    return guard, Admission(config.services, LOCAL, [guard])


def test_short_connections_to_an_auth_service_block_the_client_from_auth_services_only() -> None:
    clock, records = Clock(), []
    guard, admission = guard_for(clock, records)
    assert guard.auth_ports == {22, 2200}
    for _ in range(2):
        guard.connection_closed(ssh_flow(), short())
    guard.connection_closed(ssh_flow(), short(seconds=30))  # a real session is no failure
    guard.connection_closed(Flow("test", "tcp", (PEER, 1), (LOCAL, 80), "web"), short())  # not an auth service
    assert isinstance(admission.admit(ssh_flow(), clock.now), Admitted)
    guard.connection_closed(ssh_flow(), short())  # the third within the window
    assert admission.admit(ssh_flow(), 1.0) == Refused("brute_force")
    assert admission.admit(ssh_flow(port=2200), 1.0) == Refused("brute_force")
    assert isinstance(admission.admit(Flow("test", "tcp", (PEER, 1), (LOCAL, 80)), 1.0), Admitted)
    assert isinstance(admission.admit(ssh_flow(client="10.0.0.3"), 1.0), Admitted)  # another client
    assert records == [("blocked", {"src": "10.0.0.2", "service": "ssh", "reason": "brute_force",
                                    "duration_s": 100.0})]
    assert guard.next_expiry() == 100.0


def test_a_block_expires_and_a_repeat_lasts_twice_as_long() -> None:
    clock, records = Clock(), []
    guard, admission = guard_for(clock, records)
    for _ in range(3):
        guard.connection_closed(ssh_flow(), short())
    guard.expire(99.0)
    assert admission.admit(ssh_flow(), 99.0) == Refused("brute_force")
    guard.expire(100.0)
    assert records[-1] == ("unblocked", {"src": "10.0.0.2", "reason": "brute_force"})
    assert isinstance(admission.admit(ssh_flow(), 100.0), Admitted)
    clock.now = 200.0
    for _ in range(3):
        guard.connection_closed(ssh_flow(), short())
    assert records[-1][1]["duration_s"] == 200.0
    # An admission check after the end of a block ends it too (no timer needed).
    assert isinstance(admission.admit(ssh_flow(), 400.0), Admitted)
    assert records[-1][0] == "unblocked"


def test_a_block_a_day_after_the_last_one_starts_again_at_block_time() -> None:
    clock, records = Clock(), []
    guard, _ = guard_for(clock, records)
    for start in (0.0, 200.0):  # the second block doubles
        clock.now = start
        for _ in range(3):
            guard.connection_closed(ssh_flow(), short())
        guard.expire(clock.now + 1000)
    assert [fields["duration_s"] for event, fields in records if event == "blocked"] == [100.0, 200.0]
    clock.now = 400.0 + MAX_BLOCK  # a day after the second block ended: forgotten
    guard.expire(clock.now)
    for _ in range(3):
        guard.connection_closed(ssh_flow(), short())
    assert records[-1] == ("blocked", {"src": "10.0.0.2", "service": "ssh", "reason": "brute_force",
                                       "duration_s": 100.0})


def test_many_addresses_failing_once_are_forgotten_after_the_window() -> None:
    clock, records = Clock(), []
    guard, _ = guard_for(clock, records)
    for n in range(MAX_TRACKED):
        guard.connection_closed(ssh_flow(client=str(IPv4Address("10.1.0.0") + n)), short())
    clock.now = 61.0  # past the window: one more failure sweeps the stale ones
    guard.connection_closed(ssh_flow(), short())
    assert len(guard._failures) == 1 and not records


def test_udp_flows_pass_the_guard_even_from_a_blocked_client() -> None:
    clock, records = Clock(), []
    guard, admission = guard_for(clock, records)
    for _ in range(3):
        guard.connection_closed(ssh_flow(), short())
    assert admission.admit(ssh_flow(), 1.0) == Refused("brute_force")
    assert guard.check(Flow("test", "udp", (PEER, 1), (LOCAL, 22)), Admitted(ServiceConfig(port=22), 22), 1.0) is None


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock, records = Clock(), []
    guard, admission = guard_for(clock, records)
    for t in (0.0, 40.0, 80.0, 120.0):  # never three within 60 s
        clock.now = t
        guard.connection_closed(ssh_flow(), short())
    assert not records and isinstance(admission.admit(ssh_flow(), 121.0), Admitted)


def test_an_allowlisted_client_is_never_blocked() -> None:
    clock, records = Clock(), []
    guard, admission = guard_for(clock, records)
    for _ in range(10):
        guard.connection_closed(ssh_flow(client="10.0.0.200"), short())
    assert not records and isinstance(admission.admit(ssh_flow(client="10.0.0.200"), 1.0), Admitted)


def test_the_server_adds_the_guard_last_and_wires_it_to_the_audit_log(tmp_path: Path) -> None:
    config = PyslirpConfig(
        services={22: {"port": 2222}},
        security={"brute_force": {"enabled": True}, "rate_limiting": {"enabled": True},
                  "audit_log": str(tmp_path / "audit.jsonl")},
    )
    server = Server(config, lines=[None])  # type: ignore[arg-type]
    rate, guard = server.security.checks
    assert isinstance(rate, ConnectionRate) and isinstance(guard, BruteForceGuard)
    assert guard is server.security.guard
    guard.record("blocked", src="10.0.0.2", reason="brute_force")
    server.audit.close()
    (entry,) = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert (entry["event"], entry["src"]) == ("blocked", "10.0.0.2")


def test_failed_logins_on_a_line_refuse_every_login_there_until_the_block_ends() -> None:
    clock, records = Clock(), []
    guard, _ = guard_for(clock, records)
    for _ in range(2):
        guard.auth_failed("ttyS0", AuthFailed("alice", "chap", "wrong response"))
    assert guard.login_refusal("ttyS0") is None
    guard.auth_failed("ttyS0", AuthFailed("alice", "chap", "wrong response"))
    clock.now = 40.0
    assert guard.login_refusal("ttyS0") == "blocked after too many failed logins; try again in 60 s"
    assert guard.login_refusal("ttyS1") is None  # another line
    guard.auth_failed("ttyS0", AuthFailed("alice", "chap", "blocked"))  # refused while blocked: no count
    assert records == [("blocked", {"line": "ttyS0", "reason": "brute_force", "duration_s": 100.0})]
    clock.now = 100.0
    assert guard.login_refusal("ttyS0") is None
    guard.expire(clock.now)
    assert records[-1] == ("unblocked", {"line": "ttyS0", "reason": "brute_force"})


def echo_request(source: str) -> bytes:
    body = b"\x08\x00\x00\x00\x00\x01\x00\x01ping"
    message = body[:2] + internet_checksum(body).to_bytes(2, "big") + body[4:]
    return ipv4.build(IPv4Address(source).packed, LOCAL.packed, ipv4.PROTO_ICMP, message, 1)


def test_a_spoofed_source_is_dropped_and_counted_unless_its_network_is_allowed() -> None:
    stack = Stack(LOCAL, PEER, 1500, allowed_sources=[IPv4Network("192.168.7.0/24")])
    for source in ("10.0.0.2", "10.0.0.77", "192.168.7.9", "192.168.8.9"):
        stack.receive(echo_request(source), 0.0)
    replies = [ipv4.parse(packet).dst for packet, _ in stack.take_output()]
    assert replies == [PEER.packed, IPv4Address("192.168.7.9").packed]
    assert stack.counters["ip_drop_spoofed_source"] == 2 and stack.counters["ip_in"] == 2


async def test_a_reverse_forward_takes_only_its_allowed_remotes(tmp_path: Path) -> None:
    from collections import Counter

    from pyslirp.config import ForwardConfig
    from pyslirp.runtime.forwards import start_forwards

    opened: list[tuple[int, str]] = []

    class Into(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.write(b"into the client\n")
            transport.close()

    def open_reverse(forward: ForwardConfig, label: str) -> asyncio.Protocol | None:
        opened.append((forward.peer_port, label))
        return Into() if len(opened) == 1 else None  # the second finds no link up

    port = free_tcp_port()
    loopback_only = ForwardConfig(listen_port=port, peer_port=22)
    elsewhere_only = ForwardConfig(listen_port=free_tcp_port(), peer_port=23, allowed_remotes=["192.0.2.0/24"])
    assert [str(n) for n in loopback_only.allowed_remotes] == ["127.0.0.0/8"]  # the default
    counters: Counter[str] = Counter()
    records: list = []
    servers = await start_forwards([loopback_only, elsewhere_only], open_reverse, counters,
                                   lambda event, **fields: records.append((event, fields)))

    async def read_from(listen_port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", listen_port)
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return data

    assert await read_from(port) == b"into the client\n"
    assert await read_from(elsewhere_only.listen_port) == b""  # 127.0.0.1 is not in 192.0.2.0/24
    assert await read_from(port) == b""  # no link up
    for server in servers:
        server.close()
    assert opened == [(22, f"127.0.0.1:{port} -> client:22")] * 2
    assert counters == {"accepted": 1, "refused_remote_not_allowed": 1, "refused_no_link": 1}
    assert [fields["reason"] for _, fields in records] == ["remote_not_allowed", "no_link"]


def free_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
