"""VJ header compression recovers from a lost or damaged frame, both ways (RFC 1144 §4).

The shim drops or corrupts one frame carrying a compressed TCP segment (PPP protocol 0x002D)
in the middle of a 1 MB transfer, in one direction:

* dropped: the receiver cannot tell (the frame is simply gone), applies the next frame's deltas
  to the wrong saved header and rebuilds a header whose TCP checksum fails; every following
  compressed segment of that connection fails the same way until the sender's retransmission,
  which the compressor must send uncompressed (0x002F: its sequence number went backwards),
  reloads the slot.
* corrupted: the receiver's deframer sees a bad FCS and the link tells VJ to toss (§4.2):
  implicit-slot compressed frames are discarded until one names its slot or comes uncompressed.

Each run uploads 1 MB (VM -> sink service) and downloads 1 MB (HTTP service -> VM) over one
link; the fault hits the data direction of one of them (UP: the upload's data, DOWN: the
download's). Both transfers must arrive intact; our stats (UP) and the guest kernel's counters
(DOWN) show the fault was seen and recovered from.
"""

from __future__ import annotations

import os
from typing import Callable

import pytest

import rig
from dial import PPPD_QUIET as PPPD
from pyslirp_proc import PyslirpProcess
from shim import DOWN, UP, Frame, LineShim
from test_data_path import FileServer, services, sha, start_sink

PROTO_VJ_COMPRESSED = 0x002D
SIZE = 1 << 20


# The upload's data go up, the download's come down; the fault hits one of them. Guest counters
# are read before and after: ppp0 rx_errors (ppp_generic's ppp_receive_error: a bad FCS, then
# every compressed frame tossed until resync), rx_dropped, and TCP InCsumErrors (headers rebuilt
# from a stale slot).
SCRIPT = """
counters() {
    echo "$(cat /sys/class/net/$PPP_IFACE/statistics/rx_errors)" \
         "$(cat /sys/class/net/$PPP_IFACE/statistics/rx_dropped)" \
         "$(awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } \
                          else print $c["InCsumErrors"] }' /proc/net/snmp)"
}
@DIAL@
result before "$(counters)"
result up_sha "$(nc 10.0.0.1 81 < /tmp/up)"
wget -q -O /tmp/down http://10.0.0.1/blob; result wget $?
result down_sha "$(sha256sum /tmp/down | cut -d' ' -f1)"
result after "$(counters)"
result transfers_done 1
""" + rig.HANG_UP


def nth_compressed_data_frame(n: int) -> Callable[[Frame], bool]:
    """A shim match: the n-th frame (and, if the fault is still active, those after it) that
    carries a VJ-compressed TCP segment with data (not a bare ACK)."""
    seen = 0

    def match(frame: Frame) -> bool:
        nonlocal seen
        if frame.protocol == PROTO_VJ_COMPRESSED and len(frame.info) > 256 and frame.fcs_ok:
            seen += 1
            return seen >= n
        return False

    return match


@pytest.mark.parametrize("direction", [UP, DOWN])
@pytest.mark.parametrize("action", ["drop", "corrupt"])
async def test_vj_resynchronises_after_a_lost_or_damaged_compressed_frame(
        rig_image, rig_accel, direction: str, action: str) -> None:
    blob = os.urandom(SIZE)
    sink = await start_sink(SIZE)
    sink_port = sink.sockets[0].getsockname()[1]
    with FileServer({"blob": blob}) as http:
        async with PyslirpProcess(services(p80=http.port, p81=sink_port), debug=False) as server:
            async with LineShim(upstream_port=server.port, seed=7) as shim:
                fault = getattr(shim, action)(direction, count=1, match=nth_compressed_data_frame(40))
                script = SCRIPT.replace("@DIAL@", rig.dial_with_upload(PPPD, SIZE // 65536))
                async with rig.VM(rig_image, script, line="16550", line_port=shim.port, timeout=180,
                                  accel=rig_accel, name=f"vj-{action}-{direction}") as vm:
                    await vm.wait_result("up", timeout=60)
                    # Counted from here: while pppd opens the tty, its default termios may echo
                    # (and ONLCR-mangle) our first LCP frame back at us, a bad FCS before the link.
                    base = await server.stats()
                    await vm.wait_result("transfers_done", timeout=160)
                    stats = await server.stats()
                    res = await vm.wait(timeout=30)
    sink.close()
    res.check()
    r = res.results
    counters, base = stats["counters"], base["counters"]
    link = {k: v - base["link"].get(k, 0) for k, v in counters["link"].items()}
    bad_fcs = counters["deframer"]["bad_fcs"] - base["deframer"]["bad_fcs"]
    vj = {k: v for k, v in link.items() if k.startswith("vj_")}
    before = [int(x) for x in r["before"].split()]
    after = [int(x) for x in r["after"].split()]
    guest = dict(zip(("rx_errors", "rx_dropped", "tcp_in_csum_errors"),
                     (a - b for a, b in zip(after, before))))
    tcp = counters["tcp"]
    print(f"\n{action} {direction}: shim {shim.summary()[direction]}")
    print(f"deframer {counters['deframer']}")
    print(f"vj {dict((k, v) for k, v in vj.items() if v)}")
    print(f"tcp {tcp} scheduler {counters['scheduler']}")
    print(f"guest {guest}")

    # the transfers arrived intact
    assert r["up_sha"] == r["up_local"]
    assert r["wget"] == "0"
    assert r["down_sha"] == sha(blob)
    # the fault was applied, once
    assert fault.hits == 1
    shim_stats = shim.stats[direction]
    assert (shim_stats.dropped, shim_stats.corrupted) == ((1, 0) if action == "drop" else (0, 1))
    assert link["vj_rx_compressed"] > 100 and link["vj_tx_compressed"] > 100  # VJ was in use both ways

    if direction == UP:
        if action == "drop":
            # our decompressor rebuilt headers from a stale slot: the TCP checksums failed...
            assert tcp.get("bad_checksum", 0) >= 1
            # ...until Linux's retransmission came uncompressed (the two connections' first
            # segments are the other two)
            assert link["vj_rx_uncompressed"] >= 3
        else:
            assert bad_fcs == 1
            assert link["frame_error"] >= 1 and link["vj_rx_toss_requests"] >= 1
            assert link["vj_rx_tossed"] >= 1  # compressed frames discarded until resync...
            assert tcp.get("bad_checksum", 0) == 0  # ...so none was rebuilt from a stale slot
        # the other direction was clean: the guest saw no damaged frame and no bad header
        assert guest == {"rx_errors": 0, "rx_dropped": 0, "tcp_in_csum_errors": 0}
    else:
        if action == "drop":
            # the guest's slhc rebuilt headers from a stale slot; our retransmission went
            # uncompressed (its sequence number went backwards) and reloaded it
            assert guest["tcp_in_csum_errors"] >= 1 and guest["rx_errors"] == 0
        else:
            # ppp_async saw the bad FCS and tossed (rx_errors counts the frames discarded until
            # the uncompressed retransmission); nothing was rebuilt from a stale slot
            assert guest["rx_errors"] >= 1 and guest["tcp_in_csum_errors"] == 0
        assert tcp.get("retrans_rto", 0) + tcp.get("retrans_sack", 0) + tcp.get("retrans_fast", 0) >= 1
        assert link["vj_tx_uncompressed_large_delta"] >= 1
        # the other direction was clean
        assert bad_fcs == 0 and link["vj_rx_tossed"] == 0
        assert tcp.get("bad_checksum", 0) == 0
