"""SIGHUP reload: what a new configuration puts in force, what it leaves for a restart, and a bad
one refused with the running configuration kept (the link-side effects are in test_proxy)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import yaml

from pyslirp.config import PyslirpConfig, load_config
from pyslirp.runtime.brute_force import BruteForceGuard
from pyslirp.runtime.server import Server
from pyslirp.runtime.settings import Applies, reloaded


def test_a_reload_keeps_what_needs_a_restart_and_takes_the_rest() -> None:
    old = PyslirpConfig(services={22: {"port": 2222}}, monitoring={"metrics_port": 9100})
    new = PyslirpConfig(
        services={22: {"port": 2222}, 80: {"port": 8080}},
        monitoring={"metrics_port": 9200},
        logging={"level": "DEBUG", "file": "/tmp/elsewhere.log"},
        serial={"port": "/dev/ttyS1"},
    )
    effective, changes = reloaded(old, new)
    assert changes["services.80"] is Applies.LIVE
    assert changes["logging.level"] is Applies.LIVE
    assert changes["monitoring.metrics_port"] is changes["serial.port"] is Applies.RESTART
    assert 80 in effective.services and effective.logging.level == "DEBUG"
    # Kept as running: the listening ports, the line, the log file.
    assert effective.monitoring.metrics_port == 9100 and effective.serial.port == "pty"
    assert effective.logging.file is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_reload_takes_services_security_and_forwards_and_refuses_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    audit = tmp_path / "audit.jsonl"
    first_forward, second_forward = free_port(), free_port()

    def write(services: dict, forward_port: int, **security: object) -> None:
        path.write_text(yaml.safe_dump({
            "services": services,
            "forwards": [{"listen_port": forward_port, "peer_port": 22}],
            "security": {"audit_log": str(audit), "brute_force": {"enabled": True}, **security},
        }))

    write({22: {"port": 2222}}, first_forward)
    server = Server(load_config(path), lines=[None], load=lambda: load_config(path))  # type: ignore[arg-type]
    server.forwards = await server._start_forwards(server.config)
    guard = server.security.guard
    assert isinstance(guard, BruteForceGuard)
    guard.failed_login("line0", "PPP login", 0.0)  # state the reload must carry over

    write({22: {"port": 2222}, 80: {"port": 8080, "name": "web"}}, second_forward, blocked_ports=[23])
    assert await server.reload()
    assert set(server.config.services) == {22, 80}
    assert server.config.security.blocked_ports == [23]
    assert server.security.guard is not guard and server.security.guard._failures == guard._failures
    assert "web" in server.probe.targets
    # The forward moved: the new port listens, the old one no longer does.
    _, writer = await asyncio.open_connection("127.0.0.1", second_forward)
    writer.close()
    try:
        await asyncio.open_connection("127.0.0.1", first_forward)
    except OSError:
        pass
    else:
        raise AssertionError("the old forward still listens")

    path.write_text("services:\n  22:\n    port: not-a-port\n")
    assert not await server.reload()
    assert set(server.config.services) == {22, 80}  # the running configuration stays
    assert await server.reload() is False

    path.write_text(yaml.safe_dump({"services": {22: {"port": 2222}, 80: {"port": 8080, "name": "web"}},
                                    "forwards": [{"listen_port": second_forward, "peer_port": 22}],
                                    "security": {"audit_log": str(audit), "brute_force": {"enabled": True},
                                                 "blocked_ports": [23]}}))
    assert await server.reload()  # the same as running: nothing to do
    for forward in server.forwards:
        forward.close()
    server.audit.close()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    reloads = [record for record in records if record["event"] == "config_reloaded"]
    assert reloads[0]["changed"] == ["forwards", "security.blocked_ports", "services.80"]
    assert [record.get("reason") for record in reloads] == [None, "invalid_config", "invalid_config", "unchanged"]
