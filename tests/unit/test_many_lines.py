"""Many lines in one process: a real server with ``lines``, dialled over loopback TCP by the
project's scripted pppd (benchmarks/datapath.py), each client with our own TCP behind it."""

from __future__ import annotations

import asyncio
import logging
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import datapath  # noqa: E402

from pyslirp.config import PyslirpConfig  # noqa: E402
from pyslirp.ppp.link import Phase  # noqa: E402
from pyslirp.runtime.lines import TcpListenLine  # noqa: E402
from pyslirp.runtime.peer_pool import PeerPool  # noqa: E402
from pyslirp.runtime.server import Server  # noqa: E402
from pyslirp.runtime.settings import line_settings  # noqa: E402
from pyslirp.runtime.status import health_document, status_document  # noqa: E402


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(4096):
        writer.write(data)
    writer.close()


async def wait_until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


class Running:
    """A Server on ``lines`` of tcp-listen ports at 127.0.0.1, serving an echo service at port 7."""

    def __init__(self, lines: list[dict], **sections) -> None:  # type: ignore[no-untyped-def]
        self.lines = lines
        self.sections = sections

    async def __aenter__(self) -> Running:
        self.service = await asyncio.start_server(echo, "127.0.0.1", 0)
        service_port = self.service.sockets[0].getsockname()[1]
        listening = [TcpListenLine("127.0.0.1", 0) for _ in self.lines]
        for line in listening:
            line.open()
        self.ports = {spec["name"]: line.port for spec, line in zip(self.lines, listening)}
        lines = [{**spec, "port": f"tcp-listen://127.0.0.1:{line.port}"} for spec, line in zip(self.lines, listening)]
        self.config = PyslirpConfig(
            lines=lines, services={7: {"port": service_port, **self.sections.pop("services", {}).get(7, {})}},
            dns={"enabled": False},
            ppp={"keepalive": {"interval": 0}, **self.sections.pop("ppp", {})}, **self.sections,
        )
        self.server = Server(self.config, listening)
        self.task = asyncio.ensure_future(self.server.run())
        self.clients: list[tuple[datapath.DataPath, asyncio.Transport]] = []
        return self

    async def dial(self, line: str) -> tuple[datapath.DataPath, asyncio.Transport]:
        return await self.dial_as(line)

    async def dial_as(self, line: str, timeout: float = 30.0, **pppd: str) -> tuple[datapath.DataPath, asyncio.Transport]:
        client = await datapath.dial(self.ports[line], service_port=7, timeout=timeout, **pppd)
        self.clients.append(client)
        return client

    async def __aexit__(self, *exc: object) -> None:
        for path, transport in self.clients:
            path._client_task.cancel()
            transport.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        for served in self.server.lines:
            served.line.close()
        self.service.close()


def address(path: datapath.DataPath) -> IPv4Address:
    return IPv4Address(path.ppp.ip)


async def test_sixteen_lines_link_with_unique_addresses_move_data_and_return_them() -> None:
    lines = [
        {"name": "hub", "max_clients": 14},
        {"name": "fixed", "peer_ip": "10.0.0.100"},
        {"name": "solo"},
    ]
    async with Running(lines) as running:
        server = running.server
        clients = [await running.dial("hub") for _ in range(14)]
        fixed, _ = await running.dial("fixed")
        solo, _ = await running.dial("solo")
        everyone = [path for path, _ in clients] + [fixed, solo]
        addresses = [address(path) for path in everyone]
        assert len(set(addresses)) == 16
        assert address(fixed) == IPv4Address("10.0.0.100")
        pooled = [a for a in addresses if a != IPv4Address("10.0.0.100")]
        assert all(IPv4Address("10.0.0.2") <= a <= IPv4Address("10.0.0.254") for a in pooled)
        assert server.pool is not None and sorted(server.pool.held) == sorted(pooled)
        assert set(server.lines[0].gateways) == {f"hub#{k}" for k in range(1, 15)}

        # Every client's connections reach the service through its own link.
        for n, path in enumerate(everyone):
            await path.exchange(f"client {n}".encode())

        status = status_document(server)
        assert [line["name"] for line in status["lines"]] == ["hub", "fixed", "solo"]
        hub = status["lines"][0]
        assert hub["max_clients"] == 14 and len(hub["clients"]) == 14
        assert {c["client"] for c in hub["clients"]} == {str(address(p)) for p, _ in clients}
        assert all(c["phase"] == Phase.NETWORK.value for c in hub["clients"])
        assert health_document(server)[0] == 200

        # Three clients hang up: their addresses go back to the pool, and redials get addresses.
        gone = clients[:3]
        for path, transport in gone:
            path._client_task.cancel()
            transport.close()
        await wait_until(lambda: len(server.lines[0].gateways) == 11)
        freed = {address(path) for path, _ in gone}
        assert not freed & set(server.pool.held)
        again = [await running.dial("hub") for _ in range(3)]
        assert {address(path) for path, _ in again} == freed  # the lowest free ones
        assert len(server.pool.held) == 15


async def test_a_line_takes_no_more_than_max_clients_the_next_waits_for_a_free_slot() -> None:
    async with Running([{"name": "pair", "max_clients": 2}]) as running:
        first, first_line = await running.dial("pair")
        await running.dial("pair")
        third = asyncio.ensure_future(datapath.dial(running.ports["pair"], service_port=7, timeout=30))
        await asyncio.sleep(1.0)
        assert not third.done()  # accepted by the kernel's backlog, not served
        assert sorted(running.server.lines[0].gateways) == ["pair#1", "pair#2"]
        first._client_task.cancel()
        first_line.close()
        path, transport = await asyncio.wait_for(third, 10)
        running.clients.append((path, transport))
        assert address(path) == address(first)  # pair#1's slot and address are free again
        assert sorted(running.server.lines[0].gateways) == ["pair#1", "pair#2"]


async def test_an_exhausted_pool_refuses_the_link_with_a_clear_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with Running([{"name": "hub", "max_clients": 3}], ppp={"peer_pool": "10.0.0.2-10.0.0.3"}) as running:
        await running.dial("hub")
        await running.dial("hub")
        with pytest.raises(TimeoutError):
            await datapath.dial(running.ports["hub"], service_port=7, timeout=2)
        assert any("all 2 addresses of ppp.peer_pool 10.0.0.2-10.0.0.3 are in use" in r.getMessage()
                   for r in caplog.records)
        assert running.server.registry.totals("link")["no_peer_address"] >= 1


async def test_a_fault_on_one_line_leaves_the_others_linked() -> None:
    async with Running([{"name": "a"}, {"name": "b"}]) as running:
        a, a_line = await running.dial("a")
        b, _ = await running.dial("b")
        a_line.write(b"\x7e" + bytes(range(256)) * 40 + b"\x7e")  # garbage on a's line
        a_line.close()
        await wait_until(lambda: not running.server.lines[0].gateways)
        await b.exchange(b"b is untouched")
        assert running.server.lines[1].gateways["b"].network is not None


def test_the_pool_never_hands_out_our_address_or_a_fixed_one() -> None:
    config = PyslirpConfig(
        lines=[{"name": "a", "port": "pty"}, {"name": "b", "port": "pty", "peer_ip": "10.0.0.3"}],
        ppp={"peer_pool": "10.0.0.0/29"},
    )
    settings = line_settings(config)
    from pyslirp.runtime.settings import pool_reserved

    pool = PeerPool(*config.ppp.pool_range, reserved=pool_reserved(settings))
    leases = [pool.lease(f"a#{k}") for k in range(6)]
    given = [lease.acquire() for lease in leases]
    assert given == [IPv4Address(a) for a in ("10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6")] + [None, None]
    assert leases[0].acquire() == IPv4Address("10.0.0.2")  # a lease keeps its address
    leases[1].release()
    assert leases[4].acquire() == IPv4Address("10.0.0.4")


def test_a_line_overrides_ppp_and_serial_for_its_clients_only() -> None:
    config = PyslirpConfig(
        ppp={"auth": {"method": "pap", "users": {"everyone": "pw"}}},
        lines=[
            {"name": "lab", "port": "/dev/ttyUSB0", "baudrate": 9600, "ppp": {"auth": {"users": {"alice": "pw"}}}},
            {"name": "desk", "port": "/dev/ttyUSB1"},
        ],
    )
    lab, desk = line_settings(config)
    assert lab.config.ppp.auth.users == {"alice": "pw"} and lab.config.ppp.auth.method == "pap"
    assert desk.config.ppp.auth.users == {"everyone": "pw"}
    assert (lab.config.serial.port, lab.config.serial.baudrate) == ("/dev/ttyUSB0", 9600)
    assert desk.config.serial.baudrate == 115200
    assert lab.pooled and desk.pooled


def test_validate_warns_of_a_pool_smaller_than_the_clients_and_an_unused_serial_port() -> None:
    from pyslirp.config_warnings import config_warnings

    config = PyslirpConfig(
        serial={"port": "/dev/ttyS0"},
        ppp={"peer_pool": "10.0.0.1-10.0.0.4"},
        lines=[{"name": "hub", "port": "tcp-listen://127.0.0.1:0", "max_clients": 4},
               {"name": "fixed", "port": "pty", "peer_ip": "10.0.0.3"}],
    )
    assert config_warnings(config) == [
        "serial.port is /dev/ttyS0, but 'lines' names the lines: it is not opened",
        "ppp.peer_pool 10.0.0.1-10.0.0.4 has 2 addresses for up to 4 clients of lines without peer_ip: "
        "the others are refused until an address is returned",
    ]
    assert config_warnings(PyslirpConfig(lines=[{"name": "a", "port": "pty"}])) == []


def test_serve_with_several_ports_serves_a_line_for_each() -> None:
    from pyslirp.cli import _cli_overrides, _parser

    args = _parser().parse_args(["serve", "/dev/ttyUSB0", "tcp-listen://127.0.0.1:5555", "/dev/serial/ttyUSB0"])
    config = PyslirpConfig(**_cli_overrides(args))
    assert [(line.name, line.port) for line in config.lines] == [
        ("ttyUSB0", "/dev/ttyUSB0"), ("tcp-listen://127.0.0.1:5555", "tcp-listen://127.0.0.1:5555"),
        ("line3", "/dev/serial/ttyUSB0"),
    ]
    with pytest.raises(ValueError, match="lines.1.port: line 'ttyUSB0' has /dev/ttyUSB0 too"):
        PyslirpConfig(**_cli_overrides(_parser().parse_args(["serve", "/dev/ttyUSB0", "/dev/ttyUSB0"])))
    single = PyslirpConfig(**_cli_overrides(_parser().parse_args(["serve", "pty"])))
    assert single.lines == [] and single.serial.port == "pty"


async def attempt(path: datapath.DataPath) -> bool:
    """Open a connection to the service and leave it open: whether it was established (else reset)."""
    from pyslirp.net import tcp_types

    conn = path.connect()
    await wait_until(lambda: conn.state in (tcp_types.ESTABLISHED, tcp_types.CLOSED))
    return conn.state == tcp_types.ESTABLISHED


async def test_a_service_limit_counts_every_line_and_a_line_limit_its_own_client() -> None:
    lines = [{"name": "a", "max_connections": 2}, {"name": "b"}]
    async with Running(lines, services={7: {"max_connections": 3}}) as running:
        a, _ = await running.dial("a")
        b, _ = await running.dial("b")
        assert [await attempt(a) for _ in range(3)] == [True, True, False]  # a's own bound: 2
        assert [await attempt(b) for _ in range(2)] == [True, False]  # the service's: 3 on both lines
        refused = running.server.registry.totals("proxy")
        assert refused["refused_line_full"] == 1 and refused["refused_service_full"] == 1


async def test_a_line_rate_limit_holds_its_own_client_and_survives_a_redial() -> None:
    limit = {"connections_per_second": 0.01, "burst": 2}
    async with Running([{"name": "a", "rate_limit": limit}, {"name": "b"}]) as running:
        a, a_line = await running.dial("a")
        b, _ = await running.dial("b")
        assert [await attempt(a) for _ in range(3)] == [True, True, False]
        assert all([await attempt(b) for _ in range(3)])
        a._client_task.cancel()
        a_line.close()
        await wait_until(lambda: not running.server.lines[0].gateways)
        again, _ = await running.dial("a")
        assert not await attempt(again)  # the bucket belongs to the line, not to one link
        assert running.server.registry.totals("proxy")["refused_line_rate_limit"] == 2


async def test_pyslirp_status_lists_every_line_with_its_clients() -> None:
    from pyslirp.status_report import render

    async with Running([{"name": "hub", "max_clients": 2}, {"name": "spare"}]) as running:
        first, _ = await running.dial("hub")
        await first.exchange(b"one", close=False)
        second, _ = await running.dial("hub")
        text = render(status_document(running.server))
    assert "2 clients on 2 lines; no client on spare" in text
    table = text.split("LINE", 1)[1].splitlines()
    assert table[1].split()[:4] == ["hub#1", str(address(first)), "network", "1"]
    assert table[2].split()[:4] == ["hub#2", str(address(second)), "network", "0"]
    assert "1 connection of hub#1" in text


async def test_a_user_of_one_line_cannot_log_in_on_another() -> None:
    pap = {"auth": {"method": "pap", "users": {"staff": "s3cret"}}}
    lines = [{"name": "lab", "max_clients": 2, "ppp": {"auth": {"users": {"alice": "wonderland"}}}}, {"name": "desk"}]
    async with Running(lines, ppp=pap) as running:
        alice, _ = await running.dial_as("lab", user="alice", password="wonderland")
        await alice.exchange(b"alice on lab")
        with pytest.raises(TimeoutError):
            await running.dial_as("desk", user="alice", password="wonderland", timeout=3)
        with pytest.raises(TimeoutError):
            await running.dial_as("lab", user="staff", password="s3cret", timeout=3)
        staff, _ = await running.dial_as("desk", user="staff", password="s3cret")
        await staff.exchange(b"staff on desk")
        assert running.server.registry.totals("link")["auth_failure"] >= 2


async def test_a_reverse_forward_connects_into_the_client_of_the_line_it_names() -> None:
    from pyslirp.config import ForwardConfig

    async with Running([{"name": "a"}, {"name": "hub", "max_clients": 2}]) as running:
        server = running.server
        await running.dial("a")
        await running.dial("hub")

        def opened(label: str) -> int:
            line = next(served for served in server.lines if label.startswith(served.name))
            return len(line.gateways[label].network.stack.connections)

        before = {label: opened(label) for label in ("a", "hub#1")}
        assert server._open_reverse(ForwardConfig(listen_port=2222, peer_port=22, line="hub#1"), "to hub#1")
        assert (opened("a"), opened("hub#1")) == (before["a"], before["hub#1"] + 1)
        assert server._open_reverse(ForwardConfig(listen_port=2222, peer_port=22), "to the first line")
        assert (opened("a"), opened("hub#1")) == (before["a"] + 1, before["hub#1"] + 1)
        # hub#2 has no client: the forward's host client is refused (no_link), nothing is opened
        assert server._open_reverse(ForwardConfig(listen_port=2222, peer_port=22, line="hub#2"), "to hub#2") is None


@pytest.mark.parametrize(("lines", "forward_line", "problem"), [
    ([], "a", "forwards.0.line: there is no 'lines' section; leave it out"),
    ([{"name": "a", "port": "pty"}], "b", "forwards.0.line: no line is named 'b' (lines: ['a'])"),
    ([{"name": "hub", "port": "tcp-listen://127.0.0.1:0", "max_clients": 2}], "hub",
     "forwards.0.line: line 'hub' has 2 clients; name one of them, hub#1 to hub#2"),
    ([{"name": "a", "port": "pty"}], "a#1", "forwards.0.line: line 'a' has one client; name it 'a'"),
])
def test_a_forward_must_name_a_line_and_client_that_exist(lines: list, forward_line: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        PyslirpConfig(lines=lines, forwards=[{"listen_port": 2222, "peer_port": 22, "line": forward_line}])
