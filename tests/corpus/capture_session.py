"""Regenerate tests/corpus/pppd_session.pcap: one Linux pppd session against pyslirp, captured.

    .venv/bin/python tests/corpus/capture_session.py [--out tests/corpus/pppd_session.pcap]

It boots the interop rig's VM (tests/interop/README.md: QEMU, the cached guest image) and runs
``pyslirp serve`` with ``monitoring.packet_capture`` on. The guest dials with CHAP (re-challenged
every 2 s) and LCP echoes every second, then pings (a small one, one of 3000 octets that travels as
fragments both ways, one to an address nothing routes), resolves a name through our DNS relay,
downloads a page over HTTP, uploads 30 kB to a TCP sink, connects to a port no service maps, and
hangs up. The pcap is every PPP frame each way.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import struct
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "interop"))

import rig  # noqa: E402
from dial import PPPD_QUIET  # noqa: E402
from pyslirp_proc import PyslirpProcess  # noqa: E402

ANSWER_ADDRESS = bytes((10, 9, 8, 7))
PAGE = b"<html>" + b"captured for the fuzz corpus\n" * 150 + b"</html>\n"

SCRIPT = f"""
{PPPD_QUIET} user alice usepeerdns lcp-echo-interval 1 &
PPPD_PID=$!
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
ping -c 3 -W 2 10.0.0.1 >/dev/null; result ping $?
ping -c 1 -W 2 -s 3000 10.0.0.1 >/dev/null; result fragmented_ping $?
ping -c 1 -W 1 10.0.0.99 >/dev/null; result unroutable_ping $?
nslookup fuzz.example.test 10.0.0.1 >/dev/null 2>&1; result dns $?
wget -q -O /tmp/page http://10.0.0.1/page; result wget $?
head -c 30000 /dev/urandom > /tmp/up
result upload "$(nc 10.0.0.1 81 < /tmp/up)"
nc -w 2 10.0.0.1 82 </dev/null >/dev/null 2>&1; result refused $?
sleep 3
kill $PPPD_PID; wait $PPPD_PID
result pppd_exit $?
"""


class DNSResponder(asyncio.DatagramProtocol):
    """Answers every A query with 10.9.8.7 (RFC 1035 §4.1: the question echoed, one answer)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, query: bytes, addr: tuple[str, int]) -> None:
        end = 12
        while end < len(query) and query[end]:
            end += query[end] + 1
        question = query[12 : end + 5]
        header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
        answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + ANSWER_ADDRESS
        self.transport.sendto(header + question + answer, addr)


async def serve_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(PAGE) + PAGE)
    await writer.drain()
    writer.close()


async def count_upload(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    received = len(await reader.read(-1))
    writer.write(b"%d\n" % received)
    await writer.drain()
    writer.close()


async def capture(out: Path) -> None:
    image = rig.ensure_image()
    accel = await rig.choose_accel_async(image)
    loop = asyncio.get_running_loop()
    dns, _ = await loop.create_datagram_endpoint(DNSResponder, local_addr=("127.0.0.1", 0))
    http = await asyncio.start_server(serve_page, "127.0.0.1", 0)
    sink = await asyncio.start_server(count_upload, "127.0.0.1", 0)
    with tempfile.TemporaryDirectory(prefix="pyslirp-corpus-") as tmp:
        pcap = Path(tmp) / "session.pcap"
        config = {
            "services": {
                80: {"host": "127.0.0.1", "port": http.sockets[0].getsockname()[1]},
                81: {"host": "127.0.0.1", "port": sink.sockets[0].getsockname()[1]},
            },
            "dns": {"upstream": "127.0.0.1:%d" % dns.get_extra_info("sockname")[1]},
            "ppp": {
                "keepalive": {"interval": 1},
                "auth": {"method": "chap", "users": {"alice": "wonderland"}, "chap_rechallenge_interval": 2},
            },
            "monitoring": {"packet_capture": {"enabled": True, "pcap_file": str(pcap), "max_bytes": 0}},
        }
        async with PyslirpProcess(config, debug=False) as server:
            result = await rig.run_vm_async(
                image, SCRIPT, line_port=server.port, timeout=300, accel=accel,
                files={"/etc/ppp/chap-secrets": b"alice * wonderland *\n"},
            )
        result.check()
        print("guest results:", result.results)
        shutil.copyfile(pcap, out)
    dns.close()
    http.close()
    sink.close()
    print(f"wrote {out} ({out.stat().st_size} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "pppd_session.pcap")
    asyncio.run(capture(parser.parse_args().out))


if __name__ == "__main__":
    main()
