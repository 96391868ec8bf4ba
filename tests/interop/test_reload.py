"""SIGHUP reload while Linux pppd in the VM holds connections: an invalid file leaves the running
configuration in force; a changed service map takes effect without the link dropping: a new
service answers, a session to a service still present keeps echoing, and a connection to a
service that was removed is reset."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import rig
from dial import PPPD_QUIET as PPPD
from pyslirp_proc import PyslirpProcess
from test_data_path import FileServer

SCRIPT = """
{pppd} &
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
mkfifo /tmp/quiet
(i=0; while [ ! -e /tmp/stop ]; do echo "ping $i"; i=$((i+1)); sleep 0.3; done) | nc 10.0.0.1 7 > /tmp/echo.out &
(exec 3<>/tmp/quiet; nc 10.0.0.1 81 <&3 > /dev/null; echo "$?" > /tmp/removed_closed) &
sleep 2
result holding "$(wc -l < /tmp/echo.out)"
n=0
until wget -q -O /tmp/page http://10.0.0.1:8080/page 2>/dev/null; do
    n=$((n+1)); [ $n -gt 90 ] && break; sleep 1
done
result new_service "$(cat /tmp/page 2>/dev/null)"
before=$(wc -l < /tmp/echo.out); sleep 3
result echo_grew $(( $(wc -l < /tmp/echo.out) - before ))
n=0
until [ -e /tmp/removed_closed ]; do n=$((n+1)); [ $n -gt 20 ] && break; sleep 1; done
result removed_closed "$(cat /tmp/removed_closed 2>/dev/null || echo open)"
touch /tmp/stop
"""


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):  # the VM powered off
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    writer.close()


async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        await reader.read()
    writer.close()


async def test_sighup_changes_the_service_map_without_dropping_the_link(rig_image, rig_accel) -> None:
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    held_server = await asyncio.start_server(hold, "127.0.0.1", 0)
    echo_port = echo_server.sockets[0].getsockname()[1]
    held_port = held_server.sockets[0].getsockname()[1]
    with FileServer({"page": b"added by reload"}) as web:
        before: dict[str, Any] = {"services": {
            7: {"name": "echo", "port": echo_port},
            81: {"name": "going", "port": held_port},
        }}
        after: dict[str, Any] = {"services": {
            7: {"name": "echo", "port": echo_port},
            8080: {"name": "web", "port": web.port},
        }}
        async with PyslirpProcess(before, debug=False) as server:
            async with rig.VM(rig_image, SCRIPT.format(pppd=PPPD), line_port=server.port, timeout=240,
                              accel=rig_accel) as vm:
                assert await vm.wait_result("holding", timeout=120) != "0", vm.console_lines[-40:]
                start = len(server.lines)
                await server.reconfigure_raw("services:\n  7:\n    port: not-a-port\n")
                await server.wait_log(r"reload refused, the running configuration stays: .*services\.7\.port",
                                      start=start)
                start = len(server.lines)
                await server.reconfigure(after)
                await server.wait_log(r"reload: .*services\.8080.* in force", start=start)
                assert await vm.wait_result("removed_closed", timeout=150) != "open", vm.console_lines[-40:]
                await vm.wait_result("echo_grew", timeout=10)
                results = dict(vm.results)
                before_kill = "\n".join(server.lines)
                await vm.kill()
    echo_server.close()
    held_server.close()

    assert results["new_service"] == "added by reload"
    assert int(results["echo_grew"]) > 0  # the echo session opened before the reload still answers
    assert before_kill.count("link up") == 1 and "link down" not in before_kill
    assert server.find(r"going <- :\d+: no longer allowed by the configuration, closing")
