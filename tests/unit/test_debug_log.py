"""``serve --debug`` (runtime/debug_log.py): a dial through the in-process gateway
(benchmarks/datapath.py) logs each control packet decoded, pppd's way, and nothing else; the
server attaches the tap only when asked."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import datapath  # noqa: E402

from pyslirp import cli  # noqa: E402
from pyslirp.config import PyslirpConfig  # noqa: E402
from pyslirp.runtime import server as server_module  # noqa: E402
from pyslirp.runtime.debug_log import PacketDebugLog  # noqa: E402
from pyslirp.runtime.lines import TcpListenLine  # noqa: E402
from pyslirp.runtime.server import Server  # noqa: E402


def debug_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pyslirp.debug"]


async def test_a_dial_logs_each_control_packet_each_way(caplog: pytest.LogCaptureFixture) -> None:
    service = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    dial = datapath.DataPath()
    with caplog.at_level(logging.DEBUG, logger="pyslirp.debug"):
        await dial.start(service.sockets[0].getsockname()[1], taps=[PacketDebugLog()])
        await dial.close()
    service.close()
    lines = debug_lines(caplog)
    assert lines[0].startswith("sent [LCP ConfReq id=0x1 <asyncmap 0x0> <magic 0x")
    assert "rcvd [LCP ConfReq id=0x1 <asyncmap 0x0> <magic 0x5eed1234> <pcomp> <accomp>]" in lines
    assert "sent [LCP ConfAck id=0x1 <asyncmap 0x0> <magic 0x5eed1234> <pcomp> <accomp>]" in lines
    assert any(line.startswith("rcvd [LCP ConfAck id=0x1 ") for line in lines)
    assert any(line.startswith("sent [IPCP ConfReq id=0x1 <compress VJ 0f 01> <addr 10.0.0.1>") for line in lines)
    assert any(line.startswith("rcvd [IPCP ConfAck id=0x1 ") for line in lines)
    assert all(line.startswith(("sent [LCP", "rcvd [LCP", "sent [IPCP", "rcvd [IPCP")) for line in lines)


async def test_the_server_decodes_packets_only_with_debug(caplog: pytest.LogCaptureFixture) -> None:
    for debug in (False, True):
        line = TcpListenLine("127.0.0.1", 0)
        line.open()
        server = Server(PyslirpConfig(), line, debug_packets=debug)
        running = asyncio.ensure_future(server.run())
        with caplog.at_level(logging.DEBUG, logger="pyslirp.debug"):
            reader, writer = await asyncio.open_connection("127.0.0.1", line.port)
            assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x7e"
            await asyncio.wait_for(reader.readuntil(b"\x7e"), 5)  # our Configure-Request
        assert server.gateway is not None
        assert server.gateway._taps == ((server.packet_log,) if debug else ())
        assert [m[:17] for m in debug_lines(caplog)] == (["sent [LCP ConfReq"] if debug else [])
        writer.close()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        line.close()
        caplog.clear()


@pytest.mark.parametrize("flag", [[], ["--debug"]])
def test_serve_debug_asks_for_decoded_packets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: list[str]) -> None:
    asked: list[bool] = []
    monkeypatch.chdir(tmp_path)  # no ./config.yaml
    monkeypatch.setattr(cli, "_setup_logging", lambda config: None)  # leave the test's logging be
    monkeypatch.setattr(server_module, "run_server",
                        lambda config, debug_packets, load, loop: asked.append(debug_packets) or 0)
    assert cli.main(["serve", *flag]) == 0
    assert asked == [bool(flag)]
