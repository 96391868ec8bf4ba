"""The monitoring endpoints of a real gateway while Linux pppd in the VM uses it: /metrics agrees
with what crossed the line, /health follows the client going away and coming back, and
``pyslirp status`` shows the connection the client holds open."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import rig
from metrics_scrape import get, scrape, total
from pyslirp_proc import PyslirpProcess
from test_data_path import PPPD, FileServer, sha

SERVICE = "web"

#: HDLC framing of a download: flags, address/control, protocol and FCS per frame (8 bytes for
#: about 1,460 of payload), the segments' headers (VJ: a few bytes each) and the byte stuffing of
#: 0x7d and 0x7e (2 in 256 random bytes): well under 5% on top of the payload.
FRAMING_OVERHEAD = 0.05


def monitoring_config(web_port: int) -> tuple[dict[str, Any], int, int]:
    metrics, health = rig.free_port(), rig.free_port()
    config = {
        "services": {80: {"name": SERVICE, "host": "127.0.0.1", "port": web_port}},
        "monitoring": {"enable_metrics": True, "metrics_port": metrics, "health_port": health},
    }
    return config, metrics, health


async def wait_health(port: int, expected: int, timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, body = await get(f"http://127.0.0.1:{port}/health")
        if status == expected:
            return json.loads(body)
        assert loop.time() < deadline, f"/health stayed {status}: {body.decode()}"
        await asyncio.sleep(0.2)


DIAL = """
{pppd} &
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
{body}
while [ ! -e /tmp/never ]; do sleep 1; done
"""


async def test_metrics_agree_with_a_download_and_status_shows_the_open_connection(rig_image, rig_accel) -> None:
    blob = os.urandom(1 << 20)
    with FileServer({"blob": blob}) as http:
        config, metrics_port, _ = monitoring_config(http.port)
        async with PyslirpProcess(config, debug=False) as server:
            # The download, then a connection held open (nc reads from a sleep that never writes).
            script = DIAL.format(pppd=PPPD, body="""
sleep 3
wget -q -O /tmp/blob http://10.0.0.1/blob; result wget $?
result sha "$(sha256sum /tmp/blob | cut -d' ' -f1)"
(sleep 600 | nc 10.0.0.1 80 > /dev/null) &
result holding 1
""")
            async with rig.VM(rig_image, script, line_port=server.port, timeout=240, accel=rig_accel) as vm:
                assert await vm.wait_result("up", timeout=120) == "1", vm.console_lines[-40:]
                at_link_up = await scrape(metrics_port)  # the guest waits 3 s before the download
                assert await vm.wait_result("holding", timeout=180) == "1", vm.console_lines[-40:]
                assert vm.results["wget"] == "0" and vm.results["sha"] == sha(blob)
                for _ in range(50):  # the download's connection leaves TIME-WAIT (2 s)
                    metrics = await scrape(metrics_port)
                    if total(metrics, "pyslirp_service_connections_closed_total", service=SERVICE) == 1:
                        break
                    await asyncio.sleep(0.2)
                status = subprocess.run(
                    [sys.executable, "-m", "pyslirp", "status", "--url", f"http://127.0.0.1:{metrics_port}/status"],
                    capture_output=True, text=True, timeout=30,
                )
                await vm.kill()

    # Per service: two connections, the download closed and its bytes counted, one still open.
    assert total(metrics, "pyslirp_service_connections_opened_total", service=SERVICE) == 2
    assert total(metrics, "pyslirp_service_connections_active", service=SERVICE) == 1
    assert total(metrics, "pyslirp_service_connections_closed_total", service=SERVICE) == 1
    to_client = total(metrics, "pyslirp_service_bytes_total", service=SERVICE, direction="to_client")
    assert len(blob) < to_client < len(blob) + 1024  # the body and one response header
    # The line carried the download plus framing, no more.
    line_out = total(metrics, "pyslirp_scheduler_sent_bytes_total")
    assert len(blob) < line_out < len(blob) * (1 + FRAMING_OVERHEAD) + 64 * 1024  # + negotiation and ACKs
    data_frames = total(metrics, "pyslirp_link_frames_sent_total", reason="ip") + total(
        metrics, "pyslirp_link_frames_sent_total", reason="vj"
    )
    assert len(blob) / 1460 <= data_frames < len(blob) / 1460 * 1.2 + 200
    assert data_frames < total(metrics, "pyslirp_scheduler_frames_sent_total") < data_frames + 50
    # What came from the client (ACKs, the requests): every frame intact and delivered. While pppd
    # opens its tty, the tty may echo a frame of ours back mangled (a loop indication, then a bad
    # FCS): such drops belong to negotiation, and none may happen once the link is up.
    assert total(metrics, "pyslirp_deframer_frames_ok_total") == total(metrics, "pyslirp_link_rx_frames_total") > 0
    dropped = total(metrics, "pyslirp_deframer_frames_dropped_total")
    assert dropped == total(at_link_up, "pyslirp_deframer_frames_dropped_total") <= 2
    assert total(metrics, "pyslirp_link_up") == 1 and total(metrics, "pyslirp_link_ups_total") == 1

    assert status.returncode == 0, status.stderr
    assert "link     network  client 10.0.0.2" in status.stdout
    header, row = status.stdout.splitlines()[-2:]
    assert header.startswith("SERVICE") and row.split()[0] == SERVICE and "ESTABLISHED" in row


async def test_health_follows_the_client_powering_off_and_dialling_again(rig_image, rig_accel) -> None:
    with FileServer({}) as http:
        config, _, health_port = monitoring_config(http.port)
        async with PyslirpProcess(config, debug=False) as server:
            health = await wait_health(health_port, 503, timeout=5)
            assert health["reason"] == "no client on the line"
            for attempt in range(2):
                script = DIAL.format(pppd=PPPD, body="")
                async with rig.VM(rig_image, script, line_port=server.port, timeout=180, accel=rig_accel) as vm:
                    assert await vm.wait_result("up", timeout=120) == "1", vm.console_lines[-40:]
                    health = await wait_health(health_port, 200, timeout=10)
                    assert health["components"]["link"] == {"phase": "network", "up": True}
                    await vm.kill()  # power off: QEMU goes, the line's socket closes
                    loop = asyncio.get_running_loop()
                    gone = loop.time()
                    health = await wait_health(health_port, 503, timeout=5)
                    assert loop.time() - gone < 5
                    assert health["status"] == "unavailable" and health["reason"], attempt
