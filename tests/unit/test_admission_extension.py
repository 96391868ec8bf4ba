"""The operator's own admission check (security.admission): loaded by name, run last, plain or
async, its denials and failures refused with stable reasons; the shipped example works."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "examples"))
import datapath  # noqa: E402

from pyslirp.admission_extension import ALLOW, Deny, Extension, ExtensionError, FlowInfo, load_check  # noqa: E402
from pyslirp.config import PyslirpConfig  # noqa: E402
from pyslirp.net import tcp_types  # noqa: E402
from pyslirp.runtime.admission import Admission, Admitted, Refused  # noqa: E402
from pyslirp.runtime.observers import Flow, Observers  # noqa: E402
from pyslirp.runtime.security import ExtensionCheck, security_pipeline  # noqa: E402

LOCAL = IPv4Address("10.0.0.1")
SEEN: list[FlowInfo] = []


def deny_port_80(flow: FlowInfo) -> object:
    SEEN.append(flow)
    return Deny("no web today") if flow.dport == 80 else ALLOW


async def deny_everything(flow: FlowInfo) -> object:
    await asyncio.sleep(0.01)
    return Deny("closed")


def explode(flow: FlowInfo) -> object:
    raise RuntimeError("the policy database is down")


def pipeline(spec: str):  # type: ignore[no-untyped-def]
    config = PyslirpConfig(services={22: {"port": 2222, "name": "SSH"}, 80: {"port": 8080}},
                           security={"admission": spec, "blocked_ports": [443]})
    return config, security_pipeline(config, clock=lambda: 0.0, schedule=lambda delay, callback: None)


def flow(port: int) -> Flow:
    return Flow("test", "tcp", (IPv4Address("10.0.0.2"), 40000), (LOCAL, port))


def test_a_plain_check_runs_last_and_sees_the_flow() -> None:
    config, security = pipeline(f"{__name__}:deny_port_80")
    assert isinstance(security.checks[-1], ExtensionCheck) and security.extension is None
    admission = Admission(config.services, LOCAL, security.checks)
    SEEN.clear()
    assert isinstance(admission.admit(flow(22), 0.0), Admitted)
    assert admission.admit(flow(80), 0.0) == Refused("denied_by_extension")
    assert SEEN == [FlowInfo(IPv4Address("10.0.0.2"), LOCAL, 22, "tcp", "SSH"),
                    FlowInfo(IPv4Address("10.0.0.2"), LOCAL, 80, "tcp", "port 80")]


def test_a_failing_check_refuses_with_admission_error_and_logs_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [0.0]
    extension = Extension(explode, clock=lambda: clock[0])
    with caplog.at_level(logging.ERROR):
        assert extension.decide(FlowInfo(LOCAL, LOCAL, 22, "tcp", "SSH")) == "admission_error"
        clock[0] = 30.0
        assert extension.decide(FlowInfo(LOCAL, LOCAL, 22, "tcp", "SSH")) == "admission_error"
        clock[0] = 61.0
        assert extension.decide(FlowInfo(LOCAL, LOCAL, 22, "tcp", "SSH")) == "admission_error"
    assert caplog.text.count("the policy database is down") == 2
    assert Extension(lambda flow: "yes").decide(FlowInfo(LOCAL, LOCAL, 22, "tcp", "")) == "admission_error"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "is not 'package.module:callable'"),
        ("no_such_module_here:check", "cannot import no_such_module_here"),
        (f"{__name__}:SEEN", "has no callable 'SEEN'"),
    ],
)
def test_a_check_that_cannot_load_is_a_configuration_error(spec: str, message: str) -> None:
    with pytest.raises(ExtensionError, match=f"^security.admission: .*{message}"):
        load_check(spec)


async def test_an_async_check_is_awaited_before_the_connect_and_its_denial_is_an_rst() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    path = datapath.DataPath()
    await path.start(server.sockets[0].getsockname()[1], observers=Observers(),
                     security={"admission": f"{__name__}:deny_everything"})
    conn = path.connect()
    for _ in range(2000):
        if conn.state == tcp_types.CLOSED:
            break
        await asyncio.sleep(0.001)
    assert conn.state == tcp_types.CLOSED
    assert path.registry.totals("proxy")["refused_denied_by_extension"] == 1
    await path.close()
    server.close()


def test_the_shipped_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = tmp_path / "closed-ports"
    closed.write_text("8080 9000\n")
    monkeypatch.setenv("PYSLIRP_CLOSED_PORTS", str(closed))
    sys.modules.pop("office_hours", None)
    check = load_check("office_hours:check")
    src = IPv4Address("10.0.0.2")
    assert check(FlowInfo(src, LOCAL, 9000, "tcp", "port 9000")) == Deny(f"port 9000 is closed by {closed}")
    assert check(FlowInfo(src, LOCAL, 80, "tcp", "HTTP")) == ALLOW
    monkeypatch.setattr(time, "localtime", lambda: time.struct_time((2026, 12, 6, 23, 0, 0, 6, 340, 0)))
    assert check(FlowInfo(src, LOCAL, 22, "tcp", "SSH")) == Deny("SSH only from 08:00 to 18:00")


async def never_answers(flow: FlowInfo) -> object:
    await asyncio.sleep(3600)
    return ALLOW


async def test_an_async_check_that_never_answers_refuses_after_the_connect_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    extension = Extension(never_answers)
    info = FlowInfo(LOCAL, LOCAL, 22, "tcp", "SSH")
    with caplog.at_level(logging.ERROR):
        assert await extension.decide_async(info, timeout=0.05) == "admission_error"
    assert "no answer in 0.05 s" in caplog.text
