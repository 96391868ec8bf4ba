"""SIGTERM while Linux pppd in the VM holds a connection open: pyslirp gives it
``tcp.shutdown_grace`` seconds, then ends the link with LCP Terminate-Request, which pppd logs,
and exits 0 within the grace (plus the Terminate exchange)."""

from __future__ import annotations

import asyncio
import contextlib

import rig
from dial import PPPD
from pyslirp_proc import PyslirpProcess

GRACE = 2.0

SCRIPT = f"""
{PPPD} &
PPPD_PID=$!
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
mkfifo /tmp/quiet
(exec 3<>/tmp/quiet; nc 10.0.0.1 7 <&3 > /dev/null) &
sleep 1
result holding 1
wait $PPPD_PID; result pppd_exit $?
"""


async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        await reader.read()
    writer.close()


async def test_sigterm_terminates_the_link_politely_and_exits_0_within_the_grace(rig_image, rig_accel) -> None:
    service = await asyncio.start_server(hold, "127.0.0.1", 0)
    config = {"services": {7: {"port": service.sockets[0].getsockname()[1]}}, "tcp": {"shutdown_grace": GRACE}}
    loop = asyncio.get_running_loop()
    async with PyslirpProcess(config, debug=False) as server:
        async with rig.VM(rig_image, SCRIPT, line_port=server.port, timeout=120, accel=rig_accel) as vm:
            assert await vm.wait_result("holding", timeout=90) == "1", vm.console_lines[-40:]
            started = loop.time()
            returncode = await server.stop()
            elapsed = loop.time() - started
            pppd_exit = await vm.wait_result("pppd_exit", timeout=30)
            console = "\n".join(vm.console_lines)
    service.close()
    print(f"\nexit {returncode} after {elapsed:.2f} s; pppd exit {pppd_exit}")
    assert returncode == 0
    assert GRACE <= elapsed < GRACE + 4.0  # the held connection had its grace, then the Terminate
    assert "LCP terminated by peer" in console, console[-3000:]
    assert server.find(r"shutting down: open connections get 2 s")
