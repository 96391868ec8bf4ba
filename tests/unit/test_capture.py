"""Packet capture (runtime/capture.py): the pcap file's header and records, flushing per batch,
rotation, a failed write stopping only the capture, SIGUSR2's toggle, and tshark reading a
capture of a real dial through the in-process gateway (benchmarks/datapath.py)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import datapath  # noqa: E402

from pyslirp.config import PyslirpConfig  # noqa: E402
from pyslirp.runtime.capture import CAPTURE_COUNTERS, FILE_HEADER, PacketCapture  # noqa: E402
from pyslirp.runtime.lines import TcpListenLine  # noqa: E402
from pyslirp.runtime.observers import Direction, FrameTap  # noqa: E402
from pyslirp.runtime.server import Server  # noqa: E402

LCP_CONFREQ = bytes.fromhex("ff03c021010100080506a5b1c3d2")
IP_FRAME = b"\x21" + bytes(20)  # address/control and protocol compressed (ACFC, PFC)
TSHARK = shutil.which("tshark")


class TapHolder:
    """Stands in for a gateway: which taps are attached."""

    def __init__(self) -> None:
        self.taps: list[FrameTap] = []

    def attach_tap(self, tap: FrameTap) -> None:
        self.taps.append(tap)

    def detach_tap(self, tap: FrameTap) -> None:
        self.taps = [t for t in self.taps if t is not tap]


def read_pcap(path: Path) -> tuple[tuple[int, ...], list[tuple[int, int, bytes]]]:
    """The file header's fields and each record's (seconds, microseconds, data)."""
    data = path.read_bytes()
    header = FILE_HEADER.unpack_from(data)
    records, offset = [], FILE_HEADER.size
    while offset < len(data):
        seconds, micros, captured, original = struct.unpack_from("<IIII", data, offset)
        assert captured == original
        offset += 16
        records.append((seconds, micros, data[offset : offset + captured]))
        offset += captured
    return header, records


MakeCapture = Callable[..., PacketCapture]


@pytest.fixture
async def capture_at(monkeypatch: pytest.MonkeyPatch) -> MakeCapture:
    """Makes captures whose wall clock reads 1_700_000_000 when the loop's clock reads 0 (the
    loop's clock stands still at 100 s: these tests never wait for a timer)."""
    monkeypatch.setattr(asyncio.get_running_loop(), "time", lambda: 100.0)

    def make(path: Path, **kwargs: object) -> PacketCapture:
        return PacketCapture(path, wall_clock=lambda: 1_700_000_100.0, **kwargs)  # type: ignore[arg-type]

    return make


async def test_the_file_header_is_pcap_2_4_with_link_type_ppp_with_dir(
    capture_at: MakeCapture, tmp_path: Path
) -> None:
    capture = capture_at(tmp_path / "c.pcap")
    assert capture.start() and capture.capturing
    magic, major, minor, zone, sigfigs, snaplen, linktype = read_pcap(tmp_path / "c.pcap")[0]
    assert (magic, major, minor, zone, sigfigs, linktype) == (0xA1B2C3D4, 2, 4, 0, 0, 204)
    assert snaplen >= 65536  # no PPP frame is ever cut short
    capture.stop()


async def test_records_carry_direction_and_wall_clock_time_and_land_on_the_next_turn(
    capture_at: MakeCapture, tmp_path: Path
) -> None:
    path = tmp_path / "c.pcap"
    capture = capture_at(path)
    gateway = TapHolder()
    capture.watch(gateway)
    assert gateway.taps == []  # capture is off: nothing attached, nothing paid
    capture.start()
    assert gateway.taps == [capture]
    capture.frame(Direction.RECEIVED, LCP_CONFREQ, 12.25)
    capture.frame(Direction.SENT, IP_FRAME, 13.5)
    assert read_pcap(path)[1] == []  # buffered until the loop turns
    await asyncio.sleep(0)
    records = read_pcap(path)[1]
    assert records == [
        (1_700_000_012, 250_000, b"\x00" + LCP_CONFREQ),  # 0: received from the client
        (1_700_000_013, 500_000, b"\x01" + IP_FRAME),  # 1: sent by us, as it crossed the line
    ]
    assert capture.counters["frames"] == 2
    assert capture.counters["bytes"] == path.stat().st_size
    capture.stop()
    assert gateway.taps == [] and not capture.capturing


async def test_stop_writes_what_is_pending(capture_at: MakeCapture, tmp_path: Path) -> None:
    capture = capture_at(tmp_path / "c.pcap")
    capture.start()
    capture.frame(Direction.SENT, LCP_CONFREQ, 1.0)
    capture.stop()  # before the loop turns
    assert len(read_pcap(tmp_path / "c.pcap")[1]) == 1


async def test_a_full_file_is_rotated_and_only_keep_old_ones_remain(capture_at: MakeCapture, tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    record_size = 16 + 1 + len(LCP_CONFREQ)
    capture = capture_at(path, max_bytes=FILE_HEADER.size + 3 * record_size, keep=2)
    capture.start()
    for i in range(10):
        capture.frame(Direction.SENT, LCP_CONFREQ, float(i))
        await asyncio.sleep(0)
    capture.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pcap", "c.pcap.1", "c.pcap.2"]
    # Three frames fill a file; frames 0-2 went in the file rotated away, 3-5 in .2, 6-8 in .1.
    seconds = {name: [s - 1_700_000_000 for s, _, _ in read_pcap(tmp_path / name)[1]]
               for name in ("c.pcap.2", "c.pcap.1", "c.pcap")}
    assert seconds == {"c.pcap.2": [3, 4, 5], "c.pcap.1": [6, 7, 8], "c.pcap": [9]}
    assert all((tmp_path / name).stat().st_size <= capture.max_bytes for name in seconds)  # type: ignore[operator]
    assert capture.counters["rotations"] == 3 and capture.counters["frames"] == 10
    assert CAPTURE_COUNTERS.undeclared(capture.counters) == []


async def test_a_start_sets_an_earlier_capture_aside(capture_at: MakeCapture, tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    path.write_bytes(b"an earlier capture")
    capture = capture_at(path, keep=1)
    capture.start()
    capture.stop()
    assert (tmp_path / "c.pcap.1").read_bytes() == b"an earlier capture"
    assert read_pcap(path)[1] == []


async def test_a_failed_write_stops_the_capture_once_and_leaves_the_gateway_alone(
    capture_at: MakeCapture, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = capture_at(tmp_path / "c.pcap")
    gateway = TapHolder()
    capture.watch(gateway)
    capture.start()
    capture._file.close()  # type: ignore[union-attr]
    monkeypatch.setattr(capture, "_file", open("/dev/full", "wb"))  # every write: no space left
    with caplog.at_level(logging.ERROR):
        capture.frame(Direction.RECEIVED, LCP_CONFREQ, 1.0)
        capture.frame(Direction.SENT, LCP_CONFREQ, 1.0)
        await asyncio.sleep(0)
        capture.flush()
    assert not capture.capturing and gateway.taps == []
    assert capture.counters["write_errors"] == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "No space left on device" in errors[0]


async def test_a_capture_that_cannot_open_its_file_is_off(
    capture_at: MakeCapture, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capture = capture_at(tmp_path / "no such directory" / "c.pcap")
    gateway = TapHolder()
    capture.watch(gateway)
    with caplog.at_level(logging.ERROR):
        assert not capture.start()
    assert not capture.capturing and gateway.taps == []
    assert capture.counters["write_errors"] == 1 and "cannot write" in caplog.text


async def test_sigusr2_toggles_capture_and_logs_the_new_state(
    capture_at: MakeCapture, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.pcap"
    capture = capture_at(path, keep=1)
    gateway = TapHolder()
    capture.watch(gateway)
    with caplog.at_level(logging.INFO, logger="pyslirp.runtime.capture"):
        capture.toggle()  # what the server's SIGUSR2 handler calls
        assert capture.capturing and gateway.taps == [capture]
        capture.frame(Direction.RECEIVED, LCP_CONFREQ, 1.0)
        capture.toggle()
        assert not capture.capturing and gateway.taps == []
        capture.toggle()
        assert capture.capturing and gateway.taps == [capture]
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(":")[0] for m in messages] == ["packet capture on", "packet capture off", "packet capture on"]
    assert len(read_pcap(tmp_path / "c.pcap.1")[1]) == 1  # the first capture was kept
    capture.unwatch(gateway)
    assert gateway.taps == []
    capture.stop()


async def test_the_server_captures_each_session_until_toggled_off(tmp_path: Path) -> None:
    path = tmp_path / "server.pcap"
    config = PyslirpConfig(monitoring={"packet_capture": {"enabled": True, "pcap_file": path}})
    line = TcpListenLine("127.0.0.1", 0)
    line.open()
    server = Server(config, line)
    running = asyncio.ensure_future(server.run())
    reader, writer = await asyncio.open_connection("127.0.0.1", line.port)
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x7e"
    await asyncio.wait_for(reader.readuntil(b"\x7e"), 5)  # our first Configure-Request...
    for _ in range(1000):  # ...reaches the file on the next turn of the loop
        if read_pcap(path)[1]:
            break
        await asyncio.sleep(0.001)
    server.capture.toggle()  # SIGUSR2
    assert not server.capture.capturing and server.gateway is not None and server.gateway._taps == ()
    records = read_pcap(path)[1]
    assert records[0][2][:6] == b"\x01\xff\x03\xc0\x21\x01"  # sent: LCP Configure-Request
    assert server.registry.totals("capture")["frames"] == len(records)
    writer.close()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    line.close()


async def test_tshark_decodes_a_captured_dial_with_directions(tmp_path: Path) -> None:
    if TSHARK is None:
        pytest.skip("tshark is not installed (apt-get install tshark): the capture is not decoded here")
    path = tmp_path / "dial.pcap"
    capture = PacketCapture(path)
    capture.start()
    async def echo_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(echo_once, "127.0.0.1", 0)
    dial = datapath.DataPath()
    await dial.start(server.sockets[0].getsockname()[1], taps=[capture])
    loop = asyncio.get_running_loop()
    conn = dial.connect()
    conn.send(b"hello", loop.time())  # sent once the connection is established
    for _ in range(5000):  # until the echo and the service's FIN are back
        if conn.at_eof:
            break
        conn.read(-1, loop.time())
        dial.flush_client()
        await asyncio.sleep(0.001)
    await dial.close()
    server.close()
    capture.stop()

    fields = ["frame.p2p_dir", "ppp.protocol", "_ws.col.Protocol", "ip.src", "tcp.flags.str"]
    out = subprocess.run(
        [TSHARK, "-r", str(path), "-T", "fields", "-E", "separator=|", *(x for f in fields for x in ("-e", f))],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines()]
    # Wireshark's p2p_dir: 0 sent by this host, 1 received by it (from the client).
    assert rows[0]["frame.p2p_dir"] == "0" and rows[0]["_ws.col.Protocol"] == "PPP LCP"  # our ConfReq
    seen = {(r["_ws.col.Protocol"], r["frame.p2p_dir"]) for r in rows}
    assert {("PPP LCP", "0"), ("PPP LCP", "1"), ("PPP IPCP", "0"), ("PPP IPCP", "1")} <= seen
    syns = [r for r in rows if r["_ws.col.Protocol"] == "TCP" and "S" in r["tcp.flags.str"]]
    assert [(r["ip.src"], r["frame.p2p_dir"]) for r in syns] == [("10.0.0.2", "1"), ("10.0.0.1", "0")]
