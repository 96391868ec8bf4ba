"""Loss recovery against Linux: a 5 MB download through a line that loses 2 % of the frames each
way and holds some back (reordering) still arrives intact; a capture of the run shows window
scaling and SACK negotiated in both SYNs and SACK blocks exchanged.

The shim sees every frame before its faults, so the capture is what each end offered to the line
(including the frames the shim then dropped). It is decoded as PPP in HDLC-like framing:

* 0x0021 IP: plain IPv4 (SYNs, FINs and RSTs always go this way under VJ);
* 0x002F VJ-uncompressed TCP: the IPv4 header with the protocol byte replaced by the slot
  number — a full TCP header, options included (VJ sends a segment this way whenever its options
  differ from the previous one's, so every new set of SACK blocks is visible);
* 0x002D VJ-compressed TCP: deltas only, no options visible — skipped.

Besides the download, the guest uploads 512 KiB through the same lossy line, so that our TCP, as
the receiver, has holes to report too. The capture is written as a pcap file (LINKTYPE_PPP,
address/control and a 2-byte protocol on every frame) under the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import rig
from dial import PPPD_QUIET as PPPD
from pyslirp_proc import PyslirpProcess
from shim import DOWN, UP, Frame, LineShim
from test_data_path import FileServer, services, sha, start_sink

DOWNLOAD = 5 << 20
UPLOAD = 512 << 10
LOSS = 0.02
LINKTYPE_PPP = 9

SCRIPT = """
snmp() {  # snmp FILE GROUP FIELD: one counter from /proc/net/snmp or /proc/net/netstat
    awk -v g="$2:" -v f="$3" '$1 == g { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } \
                                        else print $c[f] }' "$1"
}
@DIAL@
T0=$(date +%s)
wget -q -O /tmp/down http://10.0.0.1/blob; result wget $?
result down_seconds $(( $(date +%s) - T0 ))
result down_sha "$(sha256sum /tmp/down | cut -d' ' -f1)"
rm -f /tmp/down
result up_sha "$(nc 10.0.0.1 81 < /tmp/up)"
result linux_retrans "$(snmp /proc/net/snmp Tcp RetransSegs)"
result linux_sack_recovery "$(snmp /proc/net/netstat TcpExt TCPSackRecovery)"
result linux_sack_reorder "$(snmp /proc/net/netstat TcpExt TCPSACKReorder)"
result linux_ofo_queue "$(snmp /proc/net/netstat TcpExt TCPOFOQueue)"
result transfers_done 1
""" + rig.HANG_UP


# -- decoding the capture ----------------------------------------------------------------------

TCP_SYN, TCP_ACK = 0x02, 0x10
OPT_WSCALE, OPT_SACK_PERM, OPT_SACK = 3, 4, 5


@dataclass
class Segment:
    direction: str
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def sack_blocks(self) -> list[tuple[int, int]]:
        raw = self.options.get(OPT_SACK, b"")
        return [struct.unpack_from("!II", raw, i) for i in range(0, len(raw) - 7, 8)]


def tcp_options(raw: bytes) -> dict[int, bytes]:
    options: dict[int, bytes] = {}
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2:
            break
        options[kind] = raw[i + 2:i + raw[i + 1]]
        i += raw[i + 1]
    return options


def ppp_datagram(frame: Frame) -> bytes | None:
    """The IPv4 datagram a frame carries in full (IP, or VJ-uncompressed made whole), else None."""
    if not frame.fcs_ok:
        return None
    if frame.protocol == 0x0021:
        return frame.info
    if frame.protocol == 0x002F and len(frame.info) >= 40:
        info = frame.info
        return info[:9] + b"\x06" + info[10:]  # the slot number stands where the protocol was
    return None


def tcp_segment(frame: Frame) -> Segment | None:
    ip = ppp_datagram(frame)
    if ip is None or len(ip) < 40 or ip[0] >> 4 != 4 or ip[9] != 6:
        return None
    ihl = (ip[0] & 0x0F) * 4
    sport, dport, seq, ack, offb, flags = struct.unpack_from("!HHIIBB", ip, ihl)
    doff = (offb >> 4) * 4
    return Segment(frame.direction, sport, dport, seq, ack, flags, tcp_options(ip[ihl + 20:ihl + doff]))


def write_pcap(path: Path, frames: list[tuple[float, Frame]]) -> int:
    """LINKTYPE_PPP: each frame unstuffed, FCS removed, address/control and a 2-byte protocol
    restored where ACFC/PFC left them out. Returns the number of records written."""
    records = []
    for t, frame in frames:
        if not frame.fcs_ok or frame.protocol is None:
            continue
        data = b"\xff\x03" + frame.protocol.to_bytes(2, "big") + frame.info
        sec = int(t)
        records.append(struct.pack("<IIII", sec, int((t - sec) * 1e6), len(data), len(data)) + data)
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_PPP))
        f.writelines(records)
    return len(records)


# -- the test ----------------------------------------------------------------------------------


def is_dsack(segment: Segment) -> bool:
    """RFC 2883: the first block reports data received twice (below the cumulative ACK, or
    inside the second block)."""
    blocks = segment.sack_blocks
    if not blocks:
        return False
    left, right = blocks[0]
    if (left - segment.ack) & 0x80000000:  # left < ack, modulo 2**32
        return True
    return len(blocks) > 1 and not (left - blocks[1][0]) & 0x80000000 and not (blocks[1][1] - right) & 0x80000000


async def stall_now_and_then(shim: LineShim, stalls: list[str], period: float = 1.5) -> None:
    """Order-preserving delays, as a real line has them (a modem retraining, a busy UART):
    every ``period`` seconds one direction, in turn, sends nothing for 0.2 s."""
    while True:
        await asyncio.sleep(period)
        direction = DOWN if len(stalls) % 2 == 0 else UP
        shim.stall(direction, 0.2)
        stalls.append(direction)


@pytest.mark.parametrize("vj", ["vj", "novj"])
async def test_lossy_line_download_arrives_intact_with_sack(rig_image, rig_accel, tmp_path: Path, vj: str) -> None:
    """``vj``: pppd's default, VJ header compression on. A frame lost whole desynchronises the
    receiving decompressor (RFC 1144 §4.1), which then drops every later segment of that
    connection until an RTO retransmission goes uncompressed: recovery is by RTO, and the SACK
    blocks that cross are mostly D-SACKs for go-back-N retransmissions. ``novj``: the same line
    without VJ, and reordering on top (one frame in a hundred held back 50 ms, harmless without
    VJ): recovery is by SACK, and holes are reported both ways."""
    blob = os.urandom(DOWNLOAD)
    sink = await start_sink(UPLOAD)
    sink_port = sink.sockets[0].getsockname()[1]
    captured: list[tuple[float, Frame]] = []
    stalls: list[str] = []
    pppd = PPPD if vj == "vj" else PPPD + " novj"
    script = SCRIPT.replace("@DIAL@", rig.dial_with_upload(pppd, UPLOAD // 65536))
    t0 = time.monotonic()
    with FileServer({"blob": blob}) as http:
        async with PyslirpProcess(services(p80=http.port, p81=sink_port), debug=False) as server:
            async with LineShim(upstream_port=server.port, seed=2024) as shim:
                shim.tap(lambda frame: captured.append((time.time(), frame)))
                shim.set_latency(0.005)
                async with rig.VM(rig_image, script, line="virtio", line_port=shim.port, timeout=300,
                                  accel=rig_accel, name=f"loss-recovery-{vj}") as vm:
                    # Once the link is up: lose 2 % of the frames each way, stall now and then.
                    await server.wait_log(r"link up", timeout=60)
                    shim.set_loss(None, LOSS, seed=2024)
                    if vj == "novj":
                        for direction in (UP, DOWN):
                            shim.delay(direction, 0.05, count=10_000, match=lambda f: f.index % 100 == 50)
                    staller = asyncio.create_task(stall_now_and_then(shim, stalls))
                    try:
                        await vm.wait_result("transfers_done", timeout=280)
                    finally:
                        staller.cancel()
                    stats = await server.stats()
                    res = await vm.wait(timeout=30)
    sink.close()
    elapsed = time.monotonic() - t0
    res.check()
    r = res.results

    pcap = tmp_path / f"loss-recovery-{vj}.pcap"
    records = write_pcap(pcap, captured)
    segments = [s for _, f in captured if (s := tcp_segment(f)) is not None]
    syns = [s for s in segments if s.flags & TCP_SYN and not s.flags & TCP_ACK and s.dst_port == 80]
    syn_acks = [s for s in segments if s.flags & TCP_SYN and s.flags & TCP_ACK and s.src_port == 80]
    sack_up = [s for s in segments if s.direction == UP and s.sack_blocks]
    sack_down = [s for s in segments if s.direction == DOWN and s.sack_blocks]
    holes_up = [s for s in sack_up if not is_dsack(s)]
    holes_down = [s for s in sack_down if not is_dsack(s)]
    tcp = stats["counters"]["tcp"]
    summary = shim.summary()
    print(f"\n[{vj}] elapsed {elapsed:.1f} s, download {r.get('down_seconds')} s; "
          f"pcap {pcap} ({records} frames); {len(stalls)} stalls")
    print(f"shim up {summary[UP]}\nshim down {summary[DOWN]}")
    print(f"our tcp {tcp}\nscheduler {stats['counters']['scheduler']}")
    print(f"linux: retrans {r.get('linux_retrans')} sack_recovery {r.get('linux_sack_recovery')} "
          f"sack_reorder {r.get('linux_sack_reorder')} ofo_queue {r.get('linux_ofo_queue')}")
    print(f"SYN options {syns[0].options if syns else None}; "
          f"SYN-ACK options {syn_acks[0].options if syn_acks else None}")
    print(f"segments with SACK blocks: Linux -> us {len(sack_up)} ({len(holes_up)} not D-SACK, "
          f"up to {max((len(s.sack_blocks) for s in sack_up), default=0)} blocks), "
          f"us -> Linux {len(sack_down)} ({len(holes_down)} not D-SACK, "
          f"up to {max((len(s.sack_blocks) for s in sack_down), default=0)} blocks)")

    # the transfers arrived intact through the lossy line
    assert r["wget"] == "0"
    assert r["down_sha"] == sha(blob)
    assert r["up_sha"] == r["up_local"]
    # the faults were applied both ways
    for direction in (UP, DOWN):
        assert summary[direction]["dropped_random"] >= 5
        if vj == "novj":
            assert summary[direction]["delayed"] >= 5
    assert len(stalls) >= 2
    # window scaling and SACK-permitted in Linux's SYN and in our SYN-ACK of the same connection
    assert syns and syn_acks
    syn = syns[0]
    syn_ack = next(s for s in syn_acks if s.dst_port == syn.src_port)
    for s in (syn, syn_ack):
        assert OPT_WSCALE in s.options and len(s.options[OPT_WSCALE]) == 1
        assert OPT_SACK_PERM in s.options
    # SACK blocks crossed the line: Linux reported what it got twice or out of order
    assert sack_up, "no SACK blocks from Linux in the capture"
    if vj == "novj":
        # without VJ a loss leaves a hole the receiver reports: SACK both ways, and we recovered
        # by SACK-based fast recovery, not by timeouts
        assert holes_up and holes_down
        assert tcp.get("fast_recovery", 0) >= 1 and tcp.get("retrans_sack", 0) >= 1
    assert pcap.stat().st_size > DOWNLOAD
