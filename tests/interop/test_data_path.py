"""The TCP/IP data path against the Linux kernel: downloads, uploads, parallel transfers, DNS,
refused and failing services, reverse forwards — each through pyslirp's own TCP stack and proxy.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import rig
from dial import PPPD_QUIET as PPPD
from pyslirp_proc import PyslirpProcess


SCRIPT = """
{pppd} {options} &
PPPD_PID=$!
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
{body}
kill $PPPD_PID; wait $PPPD_PID || true
"""


class FileServer:
    """An HTTP server on 127.0.0.1: GET /<name> serves a file."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                body = server.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)


        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


async def start_sink(size: int) -> asyncio.AbstractServer:
    """A TCP service that reads ``size`` bytes and answers with their sha256 (an upload target:
    busybox wget's --post-file stops at the first NUL byte)."""

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        remaining = size
        while remaining:
            chunk = await reader.read(min(remaining, 1 << 16))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
        writer.write(digest.hexdigest().encode() + b"\n")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(sink, "127.0.0.1", 0)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def services(**ports: int) -> dict:
    return {"services": {int(k.lstrip("p")): {"host": "127.0.0.1", "port": v} for k, v in ports.items()}}


async def run(image, accel, server: PyslirpProcess, body: str, *, line: str = "16550", options: str = "",
              timeout: float = 300, files=None, port: int | None = None) -> rig.VMResult:
    script = SCRIPT.format(pppd=PPPD, options=options, body=body)
    res = await rig.run_vm_async(image, script, line=line, line_port=port or server.port, timeout=timeout,
                                 accel=accel, files=files)
    res.check()
    assert res.results["up"] == "1"
    return res


@pytest.mark.parametrize(("line", "size"), [("virtio", 20 << 20), ("16550", 2 << 20)])
async def test_download_and_upload_arrive_intact(rig_image, rig_accel, line: str, size: int) -> None:
    blob = os.urandom(size)
    sink = await start_sink(size)
    with FileServer({"blob": blob}) as http:
        async with PyslirpProcess(services(p80=http.port, p81=sink.sockets[0].getsockname()[1]), debug=False) as server:
            res = await run(rig_image, rig_accel, server, line=line, body="""
wget -q -O /tmp/blob http://10.0.0.1/blob; result wget $?
result down_sha "$(sha256sum /tmp/blob | cut -d' ' -f1)"
result up_sha "$(nc 10.0.0.1 81 < /tmp/blob)"
""")
    assert res.results["wget"] == "0"
    assert res.results["down_sha"] == sha(blob)
    assert res.results["up_sha"] == sha(blob)  # what the sink received


async def test_parallel_downloads(rig_image, rig_accel) -> None:
    blob = os.urandom(1 << 20)
    with FileServer({"blob": blob}) as http:
        async with PyslirpProcess(services(p80=http.port), debug=False) as server:
            res = await run(rig_image, rig_accel, server, line="virtio", body="""
mkdir /tmp/par
pids=""
i=0; while [ $i -lt 50 ]; do wget -q -O /tmp/par/$i http://10.0.0.1/blob & pids="$pids $!"; i=$((i+1)); done
for p in $pids; do wait $p; done
result distinct "$(sha256sum /tmp/par/* | cut -d' ' -f1 | sort | uniq -c | tr -s ' ')"
""")
    assert res.results["distinct"].strip() == f"50 {sha(blob)}"


async def test_refused_and_unmapped_ports_get_reset(rig_image, rig_accel) -> None:
    # Port 81 maps to a host port nobody listens on; port 82 is not mapped at all.
    closed = rig.free_port()
    async with PyslirpProcess(services(p81=closed), debug=False) as server:
        res = await run(rig_image, rig_accel, server, body="""
result refused "$(nc -w 5 10.0.0.1 81 </dev/null 2>&1; echo rc=$?)"
result unmapped "$(nc -w 5 10.0.0.1 82 </dev/null 2>&1; echo rc=$?)"
ping -c 1 -W 3 10.0.0.1 >/dev/null; result ping $?
""")
    assert "refused" in res.results["refused"].lower()
    assert "refused" in res.results["unmapped"].lower()
    assert res.results["ping"] == "0"


async def test_service_reset_midstream_does_not_disturb_others(rig_image, rig_accel) -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"partial")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        import socket as s
        import struct
        sock.setsockopt(s.SOL_SOCKET, s.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    blob = os.urandom(4 << 20)
    rude_server = await asyncio.start_server(rude, "127.0.0.1", 0)
    rude_port = rude_server.sockets[0].getsockname()[1]
    with FileServer({"blob": blob}) as http:
        async with PyslirpProcess(services(p80=http.port, p90=rude_port), debug=False) as server:
            res = await run(rig_image, rig_accel, server, line="virtio", body="""
wget -q -O /tmp/blob http://10.0.0.1/blob & W=$!
for i in 1 2 3 4 5; do nc -w 5 10.0.0.1 90 </dev/null >/dev/null 2>&1; done
wait $W; result wget $?
result sha "$(sha256sum /tmp/blob | cut -d' ' -f1)"
""")
    rude_server.close()
    assert res.results["wget"] == "0"
    assert res.results["sha"] == sha(blob)
    assert server.returncode in (0, None)


async def test_dns_resolves_through_our_forwarder(rig_image, rig_accel, tmp_path: Path) -> None:
    if shutil.which("dnsmasq") is None:
        rig.skip_or_fail("dnsmasq is missing (apt-get install dnsmasq-base)")
    dns_port = rig.free_port()
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.44 files.example.test\n")
    dnsmasq = await asyncio.create_subprocess_exec(
        "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}",
        "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={dns_port}", "--user=root",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(0.5)
        config = {"dns": {"upstream": f"127.0.0.1:{dns_port}"}}
        async with PyslirpProcess(config, debug=False) as server:
            res = await run(rig_image, rig_accel, server, options="usepeerdns", body="""
result lookup "$(nslookup files.example.test 10.0.0.1 2>&1 | grep -A1 'Name:' | grep Address | head -1)"
""")
    finally:
        dnsmasq.terminate()
        await dnsmasq.wait()
    assert "192.0.2.44" in res.results["lookup"]


async def test_reverse_forward_reaches_a_server_in_the_vm(rig_image, rig_accel) -> None:
    host_port = rig.free_port()
    config = {"forwards": [{"listen_host": "127.0.0.1", "listen_port": host_port, "peer_port": 7000}]}
    async with PyslirpProcess(config, debug=False) as server:
        script = SCRIPT.format(pppd=PPPD, options="", body="""
echo "hello from the vm" > /tmp/greeting
nc -l -p 7000 < /tmp/greeting > /tmp/received &
sleep 1  # let nc listen before the host connects
result ready 1
i=0; while [ ! -s /tmp/received ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
result received "$(cat /tmp/received)"
""")
        async with rig.VM(rig_image, script, line_port=server.port, timeout=120, accel=rig_accel) as vm:
            await vm.wait_result("ready", timeout=90)
            reader, writer = await asyncio.open_connection("127.0.0.1", host_port)
            writer.write(b"hello from the host\n")
            await writer.drain()
            greeting = await asyncio.wait_for(reader.readline(), 30)
            writer.close()
            res = await vm.wait(timeout=60)
    res.check()
    assert greeting == b"hello from the vm\n"
    assert res.results["received"] == "hello from the host"
