"""``pyslirp reload``: a running server reloads its configuration on ``POST /reload`` of its metrics
port (Windows has no SIGHUP), answered from loopback only, and the command prints in one line what
changed or why nothing did. A real server, its real endpoint on loopback, the real command."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyslirp.config import load_config
from pyslirp.runtime.http_endpoints import EndpointServer, from_loopback, json_response
from pyslirp.runtime.lines import TcpListenLine
from pyslirp.runtime.server import Server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(path: Path, metrics_port: int, **sections: Any) -> None:
    document = {
        "serial": {"port": "tcp-listen://127.0.0.1:0"},
        "dns": {"enabled": False},
        "monitoring": {"enable_metrics": True, "metrics_port": metrics_port, "health_port": metrics_port},
        "services": {22: {"port": 2222}},
        **sections,
    }
    path.write_text(yaml.safe_dump(document))


async def pyslirp(*args: str) -> subprocess.CompletedProcess[str]:
    """The command, run as an operator runs it (the server stays on this test's event loop)."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PYSLIRP_")}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "pyslirp", *args], capture_output=True, text=True, timeout=60,
        env=environment,
    )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Server, Path, int]]:
    """A server with metrics on, reading ``config.yaml`` again on each reload."""
    path, port = tmp_path / "config.yaml", free_port()
    write_config(path, port)
    line = TcpListenLine("127.0.0.1", 0)
    line.open()
    server = Server(load_config(path), line, load=lambda: load_config(path))
    running = asyncio.ensure_future(server.run())
    for _ in range(500):
        if server.metrics_serving:
            break
        await asyncio.sleep(0.01)
    try:
        yield server, path, port
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        line.close()


async def test_reload_puts_the_changed_file_in_force_and_says_when_each_change_applies(
    served: tuple[Server, Path, int],
) -> None:
    server, path, port = served
    unchanged = await pyslirp("reload", "--config", str(path))  # the URL from the monitoring section
    assert (unchanged.returncode, unchanged.stderr) == (0, ""), unchanged.stderr
    assert unchanged.stdout == f"reloaded (http://127.0.0.1:{port}/reload): the configuration is unchanged\n"

    write_config(path, free_port(), services={22: {"port": 2222}, 80: {"port": 8080}}, ppp={"mru": 1400})
    changed = await pyslirp("reload", "--url", f"http://127.0.0.1:{port}/reload")
    assert (changed.returncode, changed.stderr) == (0, ""), changed.stderr
    assert changed.stdout == (
        f"reloaded (http://127.0.0.1:{port}/reload): services.80 in force; ppp.mru in force from the next link; "
        "monitoring.health_port, monitoring.metrics_port NOT in force until pyslirp restarts\n"
    )
    assert set(server.config.services) == {22, 80} and server.config.ppp.mru == 1400
    assert server.config.monitoring.metrics_port == port  # kept until a restart


async def test_an_invalid_file_is_refused_naming_the_field_and_the_running_configuration_stays(
    served: tuple[Server, Path, int],
) -> None:
    server, path, port = served
    url = f"http://127.0.0.1:{port}/reload"
    write_config(path, port, services={22: {"port": 2222}, 80: {"port": 8080}}, tcp={"min_rto": -1})
    refused = await pyslirp("reload", "--url", url)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.startswith(f"pyslirp reload: {url} refused: invalid configuration (file {path} ")
    assert "tcp.min_rto: Input should be greater than 0" in refused.stderr and refused.stderr.count("\n") == 1
    assert set(server.config.services) == {22}

    # The endpoint's own answer: 409 and the document.
    def post() -> tuple[int, dict[str, Any]]:
        try:
            urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=10)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        raise AssertionError("the reload was taken")

    status, document = await asyncio.to_thread(post)
    assert status == 409
    assert document["reloaded"] is False and document["changed"] == [] and "tcp.min_rto" in document["error"]


def test_the_command_with_no_server_exits_1_naming_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    from pyslirp import cli

    url = f"http://127.0.0.1:{free_port()}/reload"
    assert cli.main(["reload", "--url", url]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"pyslirp reload: cannot reach {url}: ")


@pytest.mark.parametrize(("peername", "allowed"), [
    (("127.0.0.1", 40000), True),
    (("127.3.2.1", 40000), True),
    (("::1", 40000, 0, 0), True),
    (("::ffff:127.0.0.1", 40000, 0, 0), True),
    (("192.0.2.7", 40000), False),
    (("::ffff:192.0.2.7", 40000, 0, 0), False),
    (("2001:db8::1", 40000, 0, 0), False),
    (("0.0.0.0", 40000), False),
    (("not an address", 1), False),
    (None, False),
    ("/run/pyslirp.sock", False),
])
def test_only_a_loopback_peer_may_post(peername: object, allowed: bool) -> None:
    assert from_loopback(peername) is allowed


def this_hosts_own_address() -> str | None:
    """A non-loopback address of this host (the one its route to a documentation address leaves
    from), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no datagram is sent
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


async def request(host: str, port: int, text: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(text)
    answer = await reader.read()
    writer.close()
    return answer


async def test_an_action_refuses_other_addresses_other_methods_and_bodies() -> None:
    reloads: list[int] = []

    async def action() -> tuple[int, str, bytes]:
        reloads.append(1)
        return json_response(200, {"reloaded": True})

    endpoint = EndpointServer({"/status": lambda: json_response(200, {})}, {"/reload": action})
    await endpoint.start("0.0.0.0", 0)
    try:
        port = endpoint.port
        assert (await request("127.0.0.1", port, b"POST /reload HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        body = await request("127.0.0.1", port, b"POST /reload HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        assert body.startswith(b"HTTP/1.1 413 ") and body.endswith(b"POST /reload takes no body\n")
        assert (await request("127.0.0.1", port, b"GET /reload HTTP/1.1\r\n\r\n")).endswith(b"/reload takes POST\n")
        assert (await request("127.0.0.1", port, b"POST /status HTTP/1.1\r\n\r\n")).endswith(b"/status takes GET\n")
        assert reloads == [1]
        if (own := this_hosts_own_address()) is None:
            pytest.skip("this host has no address but loopback to post from")
        refused = await request(own, port, b"POST /reload HTTP/1.1\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 403 ")
        assert refused.endswith(f"taken only from a loopback address (127.0.0.1, ::1), not {own}\n".encode())
        assert reloads == [1]
    finally:
        endpoint.close()


async def test_a_server_that_cannot_reload_has_no_reload_endpoint(tmp_path: Path) -> None:
    path, port = tmp_path / "config.yaml", free_port()
    write_config(path, port)
    line = TcpListenLine("127.0.0.1", 0)
    line.open()
    server = Server(load_config(path), line)  # no load: nothing to read again
    running = asyncio.ensure_future(server.run())
    try:
        for _ in range(500):
            if server.metrics_serving:
                break
            await asyncio.sleep(0.01)
        answer = await request("127.0.0.1", port, b"POST /reload HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 404 ")
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        line.close()


@pytest.mark.parametrize(("host", "url"), [
    ("127.0.0.1", "http://127.0.0.1:9090/reload"),
    ("0.0.0.0", "http://127.0.0.1:9090/reload"),  # bound to every address: asked on loopback
    ("::", "http://[::1]:9090/reload"),
    ("::1", "http://[::1]:9090/reload"),
    ("localhost", "http://localhost:9090/reload"),
])
def test_the_url_is_where_this_host_reaches_the_metrics_port(host: str, url: str) -> None:
    from pyslirp.config import MonitoringConfig
    from pyslirp.status_report import monitoring_url

    assert monitoring_url(MonitoringConfig(metrics_host=host), "/reload") == url


def test_with_a_url_the_commands_read_no_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyslirp import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("serial: {baudrate: -1}\n")  # invalid, and not needed
    for command in ("status", "reload"):
        assert cli.main([command, "--url", f"http://127.0.0.1:{free_port()}/{command}"]) == 1
        assert "cannot reach" in capsys.readouterr().err
    assert cli.main(["reload"]) == 2  # without one, the configuration names the port
    assert "serial.baudrate" in capsys.readouterr().err
