"""Service faults with Linux pppd in the VM as the client. A circuit breaker: failed connects open
it, then the client's connections get RST at once with no connect tried; after the cooldown one
probe goes through, and when the service is back the breaker closes. Failover: a service that is
down is replaced by its next backend."""

from __future__ import annotations

import asyncio

import rig
from dial import PPPD_QUIET as PPPD
from pyslirp_proc import PyslirpProcess
from test_data_path import FileServer

FAILURES, COOLDOWN = 3, 3

SCRIPT = f"""
{PPPD} &
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
attempt() {{ nc 10.0.0.1 80 < /dev/null 2>/dev/null | grep -q hello && echo ok || echo refused; }}
for i in 1 2 3 4 5; do result try$i "$(attempt)"; done
result attempts_done 1
sleep {COOLDOWN + 1}
n=0; until [ "$(attempt)" = ok ]; do n=$((n+1)); [ $n -gt 20 ] && break; sleep 0.5; done
result probe "$(attempt)"
"""


async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"hello\n")
    await writer.drain()
    writer.close()


async def test_the_breaker_opens_refuses_at_once_half_opens_and_closes(rig_image, rig_accel) -> None:
    port = rig.free_port()  # nothing listens there yet
    config = {"services": {80: {"name": "web", "port": port, "connect_timeout": 2,
                                "breaker": {"failures": FAILURES, "window": 30, "cooldown": COOLDOWN}}}}
    async with PyslirpProcess(config, debug=False) as server:
        async with rig.VM(rig_image, SCRIPT, line_port=server.port, timeout=180, accel=rig_accel) as vm:
            assert await vm.wait_result("attempts_done", timeout=120) == "1", vm.console_lines[-40:]
            stats = await server.stats()
            service = await asyncio.start_server(greet, "127.0.0.1", port)  # the service is back
            assert await vm.wait_result("probe", timeout=60) == "ok", vm.console_lines[-40:]
            results = dict(vm.results)
            after = await server.stats()
            await vm.kill()
    service.close()
    assert [results[f"try{i}"] for i in range(1, 6)] == ["refused"] * 5
    proxy = stats["counters"]["proxy"]
    assert proxy["service_unavailable"] == FAILURES  # connects tried until the breaker opened
    assert proxy["refused_breaker_open"] == 5 - FAILURES  # then RST without a connect
    assert server.find(r"service web: breaker open: 3 failed connects within 30 s")
    assert server.find(r"service web: breaker half_open")
    assert server.find(r"service web: breaker closed: the service accepted")
    assert after["counters"]["proxy"]["service_unavailable"] == FAILURES  # the probe connected


FAILOVER_SCRIPT = f"""
{PPPD} &
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
for i in 1 2 3; do result get$i "$(wget -q -O - http://10.0.0.1/page 2>/dev/null)"; done
"""


async def test_failover_reaches_the_second_backend_while_the_first_is_down(rig_image, rig_accel) -> None:
    with FileServer({"page": b"from the backend"}) as backend:
        config = {"services": {80: {"name": "web", "port": rig.free_port(),  # down: nothing listens
                                    "backends": [f"127.0.0.1:{backend.port}"]}}}
        async with PyslirpProcess(config, debug=False) as server:
            res = await rig.run_vm_async(rig_image, FAILOVER_SCRIPT, line_port=server.port, timeout=120,
                                         accel=rig_accel, name="failover")
            res.check()
            stats = await server.stats()
    assert [res.results[f"get{i}"] for i in (1, 2, 3)] == ["from the backend"] * 3
    assert stats["counters"]["proxy"]["connections_opened"] == 3
    assert stats["counters"]["proxy"].get("service_unavailable", 0) == 0
    assert len(server.find(r"service web: 127\.0\.0\.1:\d+ failed \(Connection refused\)")) == 3
