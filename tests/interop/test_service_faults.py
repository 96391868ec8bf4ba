"""Service faults with Linux pppd in the VM as the client. A circuit breaker: failed connects open
it, then the client's connections get RST at once with no connect tried; after the cooldown one
probe goes through, and when the service is back the breaker closes. Failover: a service that is
down is replaced by its next backend. A service killed mid-stream: its client gets RST, a download
from another service carries on intact."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys

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


#: service A: answers an HTTP request with an endless slow stream; killed, it resets the connection
STREAMING_SERVICE = """
import socket, struct, time
listener = socket.create_server(("127.0.0.1", 0))
print(f"port={listener.getsockname()[1]}", flush=True)
conn, _ = listener.accept()
conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # on kill: RST, not FIN
conn.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\n")
while True:
    conn.sendall(b"x" * 1024)
    time.sleep(0.05)
"""

KILL_SCRIPT = f"""
{PPPD} &
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
estab_resets() {{ grep '^Tcp: [0-9]' /proc/net/snmp | cut -d' ' -f9; }}  # field 9: EstabResets
resets_before=$(estab_resets)
wget -q -O /tmp/a http://10.0.0.1:91/stream 2>/tmp/a.err & A=$!
n=0; until [ -s /tmp/a ] || [ $n -ge 600 ]; do sleep 0.1; n=$((n+1)); done  # A is streaming
wget -q -O /tmp/b http://10.0.0.1/blob & B=$!
wait $A; result a_exit $?
result a_error "$(cat /tmp/a.err)"
result a_bytes "$(wc -c < /tmp/a)"
result resets $(($(estab_resets) - resets_before))
wait $B; result b_exit $?
result b_sha "$(sha256sum /tmp/b | cut -d' ' -f1)"
result after "$(wget -q -O - http://10.0.0.1/hello)"
"""


class GatedFileServer:
    """Service B, HTTP on 127.0.0.1: GET /blob sends the first half of ``blob``, sets
    :attr:`half_sent`, and sends the rest once :attr:`release` is set; any other path gets "hello"."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.half_sent = asyncio.Event()
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        body = self.blob if request.split()[1] == b"/blob" else b"hello"
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        half = len(body) // 2
        writer.write(body[:half])
        await writer.drain()
        if body is self.blob:
            self.half_sent.set()
            await self.release.wait()
        writer.write(body[half:])
        await writer.drain()
        writer.close()

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


async def start_streaming_service() -> tuple[asyncio.subprocess.Process, int]:
    """Service A in its own process (so that it can be killed); returns it and its port."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", STREAMING_SERVICE,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.startswith(b"port="), line
    return proc, int(line.split(b"=")[1])


async def test_a_service_killed_midstream_resets_its_client_and_spares_another_download(rig_image, rig_accel) -> None:
    blob = os.urandom(5 << 20)
    streaming, streaming_port = await start_streaming_service()
    files = GatedFileServer(blob)
    config = {"services": {80: {"name": "files", "port": await files.start()},
                           91: {"name": "stream", "port": streaming_port}}}
    try:
        async with PyslirpProcess(config, debug=False) as server:
            async with rig.VM(rig_image, KILL_SCRIPT, line="virtio", line_port=server.port, timeout=300,
                              accel=rig_accel, name="service-killed") as vm:
                # The guest starts B once A's data arrives: both are mid-stream now.
                await asyncio.wait_for(files.half_sent.wait(), 120)
                streaming.kill()
                await streaming.wait()
                files.release.set()
                res = await vm.wait()
            stats = await server.stats()
    finally:
        if streaming.returncode is None:
            streaming.kill()
            await streaming.wait()
        files.release.set()
        files.close()
    res.check()
    assert res.results["a_exit"] != "0"
    assert "reset by peer" in res.results["a_error"], res.results["a_error"]
    assert int(res.results["a_bytes"]) > 0
    assert res.results["resets"] == "1"  # the guest's kernel saw the RST on an established connection
    assert res.results["b_exit"] == "0"
    assert res.results["b_sha"] == hashlib.sha256(blob).hexdigest()
    assert res.results["after"] == "hello"  # pyslirp still serves
    proxy = stats["counters"]["proxy"]
    assert proxy["service_reset"] == 1
    assert proxy["connections_opened"] == 3
