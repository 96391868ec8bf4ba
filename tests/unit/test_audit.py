"""The audit log: one JSON object per line per event, batched with one fsync per turn of the loop,
reopened for logrotate, loud about failures, and a startup error when it cannot be opened."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import datapath  # noqa: E402

from pyslirp.config import PyslirpConfig  # noqa: E402
from pyslirp.ppp.link import AuthFailed, AuthSucceeded  # noqa: E402
from pyslirp.runtime import audit as audit_module  # noqa: E402
from pyslirp.runtime.audit import AuditLog, AuditLogError  # noqa: E402
from pyslirp.runtime.observers import Flow, Observers  # noqa: E402
from pyslirp.runtime.server import EXIT_CONFIG, run_server  # noqa: E402

KEYS = {"ts", "event", "line", "src", "sport", "dst", "dport", "proto", "service", "reason", "user",
        "bytes_in", "bytes_out", "duration_s", "direction"}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FLOW = Flow("ttyS0", "tcp", (IPv4Address("10.0.0.2"), 40000), (IPv4Address("10.0.0.1"), 22), "ssh")


def records(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    for entry in entries:
        assert set(entry) <= KEYS and TS.match(entry["ts"]), entry
    return entries


async def echo_service() -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_dialled_gateway_writes_link_and_connection_records(tmp_path: Path) -> None:
    server, port = await echo_service()
    audit = AuditLog(tmp_path / "audit.jsonl", clock=lambda: 1_765_000_000.25)
    path = datapath.DataPath()
    await path.start(port, observers=Observers(audit))
    conn = await path.exchange(b"audited")
    for _ in range(500):
        if '"connection_closed"' in audit.path.read_text():
            break
        await asyncio.sleep(0.01)
    await path.close()
    await asyncio.sleep(0)
    audit.close()
    server.close()

    entries = records(audit.path)
    assert [e["event"] for e in entries] == ["link_up", "connection_opened", "connection_closed", "link_down"]
    up, opened, closed, down = entries
    assert up == {"ts": "2025-12-06T05:46:40.250Z", "event": "link_up", "line": "memory",
                  "src": "10.0.0.2", "dst": "10.0.0.1"}
    assert opened["src"] == "10.0.0.2" and opened["sport"] == conn.local_port
    assert (opened["dst"], opened["dport"], opened["proto"]) == ("10.0.0.1", datapath.SERVICE_PORT, "tcp")
    assert closed["reason"] == "closed" and (closed["bytes_in"], closed["bytes_out"]) == (7, 7)
    assert closed["duration_s"] > 0
    assert down["reason"]
    assert audit.counters["records"] == 4


async def test_refusals_and_logins_carry_reason_and_user_never_a_secret(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", clock=lambda: 0.0)
    audit.connection_refused(FLOW, "rate_limit")
    audit.auth_failed("ttyS0", AuthFailed("alice", "pap", "wrong password"))
    audit.auth_succeeded("ttyS0", AuthSucceeded("bob", "chap"))
    audit.record("blocked", src="10.0.0.2", service="ssh", reason="brute_force")
    await asyncio.sleep(0)
    refused, failed, ok, blocked = records(audit.path)
    assert refused == {"ts": "1970-01-01T00:00:00.000Z", "event": "connection_refused", "line": "ttyS0",
                       "src": "10.0.0.2", "sport": 40000, "dst": "10.0.0.1", "dport": 22, "proto": "tcp",
                       "service": "ssh", "reason": "rate_limit"}
    assert failed == {"ts": refused["ts"], "event": "auth_failed", "line": "ttyS0", "user": "alice",
                      "proto": "pap", "reason": "wrong password"}
    assert ok["event"] == "auth_ok" and ok["user"] == "bob"
    assert blocked["event"] == "blocked" and blocked["reason"] == "brute_force"


async def test_a_burst_is_one_write_and_one_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(audit_module.os, "fsync", lambda fd: (syncs.append(fd), real_fsync(fd))[1])
    audit = AuditLog(tmp_path / "audit.jsonl", clock=lambda: 0.0)
    for _ in range(100):
        audit.connection_refused(FLOW, "rate_limit")
    assert audit.path.read_text() == ""  # queued until the loop turns
    await asyncio.sleep(0)
    assert len(records(audit.path)) == 100 and len(syncs) == 1


def test_reopen_follows_logrotate(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, clock=lambda: 0.0)  # no running loop: each record is written at once
    audit.connection_refused(FLOW, "rate_limit")
    path.rename(tmp_path / "audit.jsonl.1")
    audit.reopen()
    audit.connection_refused(FLOW, "service_full")
    audit.close()
    assert [e["reason"] for e in records(tmp_path / "audit.jsonl.1")] == ["rate_limit"]
    assert [e["reason"] for e in records(path)] == ["service_full"]


def test_a_failed_write_is_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    audit = AuditLog(directory / "audit.jsonl", clock=lambda: 0.0)
    (directory / "audit.jsonl").rename(tmp_path / "moved")
    directory.rmdir()  # rotated away with its directory: the reopen fails
    audit.reopen()
    audit.connection_refused(FLOW, "rate_limit")
    assert audit.counters["write_errors"] == 1 and audit.counters["records_lost"] == 1
    assert "cannot open" in caplog.text and "1 records lost" in caplog.text
    directory.mkdir()
    audit.reopen()  # the next reopen recovers
    audit.connection_refused(FLOW, "rate_limit")
    assert len(records(directory / "audit.jsonl")) == 1


def test_an_audit_path_that_cannot_be_opened_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(AuditLogError, match="security.audit_log: cannot open .*/missing/audit.jsonl"):
        AuditLog(tmp_path / "missing" / "audit.jsonl", clock=lambda: 0.0)
    config = PyslirpConfig(
        serial={"port": "tcp-listen://127.0.0.1:0"}, security={"audit_log": str(tmp_path / "missing" / "a.jsonl")}
    )
    assert run_server(config) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("pyslirp: security.audit_log: cannot open ") and "Traceback" not in err


@pytest.mark.parametrize("timestamp", [0.0, 1_765_000_000.25, 1.0009999, 1.9995, 1.9999996, 59.9999996,
                                       1_175_395_973.1879995, 1_616_676_437.0369995, 4_102_444_800.5])
def test_timestamps_are_what_datetime_writes(timestamp: float) -> None:
    # Written without datetime (the server does not load it), to the same millisecond, edges included:
    # the fraction rounded to the microsecond first (half to even), then truncated.
    from datetime import datetime, timezone

    expected = datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")
    assert audit_module.rfc3339(timestamp) == expected.replace("+00:00", "Z")
