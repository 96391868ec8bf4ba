"""The retransmission queue and SACK scoreboard (pyslirp/net/tcp_scoreboard.py) on its own:
records added and acknowledged, SACK marking, RFC 6675 IsLost, retransmissions and the loss of
a retransmission (RFC 8985 §6.2), marking after a timeout, NewReno's duplicate-ACK emulation,
and the "pipe" every step leaves (RFC 6675 §4 SetPipe, recomputed here from the records).

Ten 1000-octet segments from SND.UNA = 1001 are the usual queue: record i is
[1001 + 1000*i, 2001 + 1000*i), sent at 0.1*i seconds."""

from __future__ import annotations

import pytest

from pyslirp.net.tcp_scoreboard import Scoreboard

SMSS = 1000
UNA = 1001
MASK = 0xFFFFFFFF


def board(n: int = 10, una: int = UNA, seg: int = SMSS, t0: float = 0.0, dt: float = 0.1,
          dup_thresh: int = 3):
    ctr: dict = {}
    sb = Scoreboard(una, dup_thresh, ctr)
    sb.start(una)
    for i in range(n):
        sb.add(una + seg * i, una + seg * (i + 1), 0, t0 + dt * i)
    return sb, ctr


def outstanding(sb: Scoreboard) -> list:
    return sb.records[sb.head:]


def pipe(sb: Scoreboard) -> int:
    """RFC 6675 SetPipe from the records: every octet not SACKed counts once unless it is lost,
    and once more if it was retransmitted (and that copy is believed in flight)."""
    total = 0
    for r in outstanding(sb):
        if r.sacked:
            continue
        n = r.end - r.seq
        if not r.lost:
            total += n
        if r.retrans:
            total += n
    return total - sb.reno_sacked


def sack(sb: Scoreboard, first: int, last: int, una: int, nxt: int, now: float,
         min_rtt: float = 0.05) -> None:
    """A SACK block covering records first..last (of the usual queue), as 32-bit edges."""
    sb.begin_ack()
    block = ((UNA + SMSS * first) & MASK, (UNA + SMSS * (last + 1)) & MASK)
    sb.on_sack((block,), una, nxt, now, min_rtt)


def consistent(sb: Scoreboard, una: int, nxt: int) -> None:
    assert sb.check_invariants(una, nxt, False) == []
    assert sb.in_flight(nxt - una) == pipe(sb)


# ---------------------------------------------------------------------------- the queue

def test_records_and_in_flight():
    sb, _ = board()
    assert not sb.empty()
    assert len(outstanding(sb)) == 10
    first = sb.first()
    assert (first.seq, first.end, first.xmit) == (UNA, UNA + SMSS, 0.0)
    assert sb.records[-1].end == UNA + 10 * SMSS
    assert sb.in_flight(10 * SMSS) == 10 * SMSS
    consistent(sb, UNA, UNA + 10 * SMSS)


def test_empty_board():
    sb, _ = board(0)
    assert sb.empty()
    assert sb.first() is None
    assert sb.in_flight(0) == 0
    assert sb.next_lost(UNA) is None
    assert sb.mark_head_lost() is False


def test_cumulative_ack_removes_records_and_gives_the_karn_sample():
    sb, _ = board()
    nxt = UNA + 10 * SMSS
    sb.begin_ack()
    sb.on_cumulative_ack(UNA + 3 * SMSS, 1.0, 0.05)
    assert sb.first().seq == UNA + 3 * SMSS
    assert len(outstanding(sb)) == 7
    # The newest segment this ACK delivered was sent at 0.2 s and never retransmitted.
    assert sb.newest_clean_xmit == pytest.approx(0.2)
    assert sb.newest_delivered_xmit == pytest.approx(0.2)
    consistent(sb, UNA + 3 * SMSS, nxt)


def test_partial_ack_of_a_record_trims_it_and_its_flags():
    sb, _ = board()
    nxt = UNA + 10 * SMSS
    sb.mark_head_lost()
    assert sb.lost_bytes == SMSS
    sb.begin_ack()
    sb.on_cumulative_ack(UNA + 400, 1.0, 0.05)
    head = sb.first()
    assert (head.seq, head.end) == (UNA + 400, UNA + SMSS)
    assert head.lost
    assert sb.lost_bytes == 600
    assert sb.newest_clean_xmit == -1.0       # nothing was delivered whole
    consistent(sb, UNA + 400, nxt)


def test_acknowledged_records_are_dropped_in_batches():
    sb, _ = board(200, seg=100)
    sb.on_cumulative_ack(UNA + 100 * 10, 30.0, 0.05)
    assert sb.head == 10 and len(sb.records) == 200        # few: only the index moves
    sb.on_cumulative_ack(UNA + 100 * 150, 30.0, 0.05)
    assert sb.head == 0 and len(sb.records) == 50           # many: the list is compacted
    assert sb.first().seq == UNA + 100 * 150
    consistent(sb, UNA + 100 * 150, UNA + 100 * 200)


def test_clear():
    sb, _ = board()
    sack(sb, 2, 4, UNA, UNA + 10 * SMSS, 1.0)
    sb.clear()
    assert sb.empty()
    assert (sb.sacked_bytes, sb.lost_bytes, sb.retrans_bytes, sb.lost_pending) == (0, 0, 0, 0)


# ---------------------------------------------------------------------------- SACK

def test_sack_marks_the_records_a_block_covers():
    sb, _ = board()
    nxt = UNA + 10 * SMSS
    sack(sb, 3, 4, UNA, nxt, 1.0)
    assert [r.sacked for r in outstanding(sb)] == [i in (3, 4) for i in range(10)]
    assert sb.sacked_bytes == 2 * SMSS
    assert sb.high_sacked == UNA + 5 * SMSS
    assert sb.newly_sacked
    assert sb.newest_clean_xmit == pytest.approx(0.4)
    assert sb.in_flight(10 * SMSS) == 8 * SMSS
    consistent(sb, UNA, nxt)
    # The same block again: nothing new.
    sack(sb, 3, 4, UNA, nxt, 1.1)
    assert not sb.newly_sacked
    assert sb.sacked_bytes == 2 * SMSS


def test_a_block_covering_part_of_a_record_marks_nothing():
    sb, _ = board()
    sb.begin_ack()
    sb.on_sack(((UNA + 2 * SMSS, UNA + 3 * SMSS - 1),), UNA, UNA + 10 * SMSS, 1.0, 0.05)
    assert sb.sacked_bytes == 0
    assert not sb.newly_sacked


def test_sack_edges_unwrap_across_2_to_the_32():
    una = (1 << 32) - 2500                    # records straddle the 32-bit wrap
    sb, _ = board(una=una)
    nxt = una + 10 * SMSS
    left = una + 3 * SMSS                     # > 2^32: its 32-bit edge is small
    assert left > MASK
    sb.begin_ack()
    sb.on_sack(((left & MASK, (left + 2 * SMSS) & MASK),), una, nxt, 1.0, 0.05)
    assert [i for i, r in enumerate(outstanding(sb)) if r.sacked] == [3, 4]
    assert sb.high_sacked == left + 2 * SMSS
    consistent(sb, una, nxt)


def test_dsack_and_invalid_blocks_are_counted_and_ignored():
    sb, ctr = board()
    nxt = UNA + 10 * SMSS
    sb.begin_ack()
    sb.on_sack(((UNA - 1000, UNA),                       # below SND.UNA: RFC 2883 D-SACK
                (UNA + 9 * SMSS, nxt + SMSS),            # beyond SND.NXT
                (UNA + 2 * SMSS, UNA + 2 * SMSS)),       # empty
               UNA, nxt, 1.0, 0.05)
    assert ctr == {"dsack_received": 1, "sack_invalid": 2}
    assert sb.sacked_bytes == 0
    consistent(sb, UNA, nxt)


def test_cumulative_ack_over_sacked_records():
    sb, _ = board()
    nxt = UNA + 10 * SMSS
    sack(sb, 1, 2, UNA, nxt, 1.0)
    sb.begin_ack()
    sb.on_cumulative_ack(UNA + 2 * SMSS, 1.1, 0.05)     # covers record 0 and SACKed record 1
    assert sb.sacked_bytes == SMSS                       # record 2 is still SACKed
    assert sb.newest_clean_xmit == pytest.approx(0.0)    # only record 0 is newly delivered
    consistent(sb, UNA + 2 * SMSS, nxt)


# ---------------------------------------------------------------------------- loss

def test_islost_needs_dupthresh_sacked_segments_above_a_hole():
    # RFC 6675 §4 IsLost, DupThresh 3: two SACKed segments above the hole are not enough.
    sb, _ = board()
    nxt = UNA + 10 * SMSS
    sack(sb, 1, 2, UNA, nxt, 1.0)
    sb.mark_lost_dupthresh(UNA, SMSS)
    assert sb.lost_bytes == 0 and sb.lost_pending == 0
    sack(sb, 3, 3, UNA, nxt, 1.1)
    sb.mark_lost_dupthresh(UNA, SMSS)
    assert [i for i, r in enumerate(outstanding(sb)) if r.lost] == [0]
    assert sb.lost_bytes == SMSS
    assert sb.lost_pending == 1
    # pipe = 10 - 3 SACKed - 1 lost segments; the unSACKed ones above the SACKed are in flight
    assert sb.in_flight(10 * SMSS) == 6 * SMSS
    consistent(sb, UNA, nxt)


def test_islost_by_sacked_octets():
    # More than (DupThresh - 1) * SMSS SACKed octets above a segment: lost, whatever the count.
    sb, _ = board()
    nxt = UNA + 10 * SMSS
    sack(sb, 2, 2, UNA, nxt, 1.0)
    sb.mark_lost_dupthresh(UNA, 400)          # 1000 SACKed octets > 2 * 400
    assert [i for i, r in enumerate(outstanding(sb)) if r.lost] == [0, 1]
    assert sb.lost_pending == 2
    assert sb.mark_hint == UNA + 2 * SMSS
    consistent(sb, UNA, nxt)


def test_retransmission_accounting():
    sb, _ = board()
    nxt = UNA + 10 * SMSS
    sack(sb, 2, 4, UNA, nxt, 1.0)
    sb.mark_lost_dupthresh(UNA, SMSS)
    assert sb.lost_pending == 2
    r = sb.next_lost(nxt)
    assert r.seq == UNA                       # NextSeg (1): the lowest lost segment first
    sb.on_retransmit(r, 1.0, True)
    assert (r.rtx, r.xmit, r.retrans, r.lost) == (1, 1.0, True, True)
    assert sb.retrans_bytes == SMSS
    assert sb.lost_pending == 1
    assert len(sb.rtx_fifo) == 1
    # pipe: 10 - 3 SACKed - 2 lost + 1 retransmitted
    assert sb.in_flight(10 * SMSS) == 6 * SMSS
    consistent(sb, UNA, nxt)
    r2 = sb.next_lost(nxt)
    assert r2.seq == UNA + SMSS
    sb.on_retransmit(r2, 1.0, False)          # not watched: no SACK loss detection of it
    assert len(sb.rtx_fifo) == 1
    assert sb.next_lost(nxt) is None
    assert sb.lost_pending == 0
    assert sb.in_flight(10 * SMSS) == 7 * SMSS
    consistent(sb, UNA, nxt)


def test_karn_retransmitted_segments_give_no_rtt_sample():
    sb, _ = board()
    nxt = UNA + 10 * SMSS
    sb.mark_head_lost()
    sb.on_retransmit(sb.next_lost(nxt), 1.0, True)
    sb.begin_ack()
    sb.on_cumulative_ack(UNA + SMSS, 1.02, 0.05)
    assert sb.newest_clean_xmit == -1.0
    # Too soon after the retransmission to be its delivery (RACK): not counted as delivered.
    assert sb.newest_delivered_xmit == -1.0
    assert sb.retrans_bytes == 0 and sb.lost_bytes == 0
    sb2, _ = board()
    sb2.mark_head_lost()
    sb2.on_retransmit(sb2.next_lost(nxt), 1.0, True)
    sb2.begin_ack()
    sb2.on_cumulative_ack(UNA + SMSS, 1.3, 0.05)
    assert sb2.newest_clean_xmit == -1.0
    assert sb2.newest_delivered_xmit == 1.0  # an RTT after the resend: delivered
    consistent(sb2, UNA + SMSS, nxt)


def test_lost_retransmission_detected_rack_style():
    # RFC 8985 §6.2: a segment sent more than a reordering window after the retransmission
    # has been delivered, the retransmission has not: it is lost again.
    sb, ctr = board()
    sb.mark_head_lost()
    sb.on_retransmit(sb.next_lost(UNA + 10 * SMSS), 1.0, True)
    sb.add(UNA + 10 * SMSS, UNA + 11 * SMSS, 0, 1.2)
    sb.add(UNA + 11 * SMSS, UNA + 12 * SMSS, 0, 1.2)
    nxt = UNA + 12 * SMSS
    sack(sb, 10, 10, UNA, nxt, 1.5)
    assert sb.newest_delivered_xmit == pytest.approx(1.2)
    sb.detect_lost_retransmits(sb.newest_delivered_xmit, 0.3, UNA)    # within the window
    assert sb.retrans_bytes == SMSS and "lost_retransmit" not in ctr
    sb.detect_lost_retransmits(sb.newest_delivered_xmit, 0.05, UNA)
    assert ctr["lost_retransmit"] == 1
    head = sb.first()
    assert head.lost and not head.retrans
    assert sb.retrans_bytes == 0
    assert sb.lost_pending == 1
    assert sb.next_lost(nxt) is head          # to be sent again
    consistent(sb, UNA, nxt)


def test_timeout_marks_lost_only_what_should_have_been_acknowledged():
    # RFC 6675 §5.1 / Linux tcp_timeout_mark_lost: the head and what was sent before the
    # cut-off; later segments stay in flight (no go-back-N); SACKed ones are kept.
    sb, ctr = board()
    nxt = UNA + 10 * SMSS
    sack(sb, 5, 5, UNA, nxt, 1.0)
    sb.mark_head_lost()
    sb.on_retransmit(sb.next_lost(nxt), 0.9, True)   # the head's retransmission is lost too
    sb.mark_lost_on_rto(UNA, 0.35)
    assert [i for i, r in enumerate(outstanding(sb)) if r.lost] == [0, 1, 2, 3]
    assert not any(r.retrans for r in outstanding(sb))
    assert sb.sacked_bytes == SMSS
    assert sb.lost_bytes == 4 * SMSS
    assert sb.retrans_bytes == 0
    assert sb.lost_pending == 4
    assert sb.rtx_hint == UNA
    assert sb.in_flight(10 * SMSS) == 5 * SMSS       # 10 - 1 SACKed - 4 lost
    assert "sack_reneging" not in ctr
    consistent(sb, UNA, nxt)


def test_timeout_always_marks_the_head():
    sb, _ = board()
    sb.mark_lost_on_rto(UNA, -1.0)
    assert [i for i, r in enumerate(outstanding(sb)) if r.lost] == [0]
    assert sb.in_flight(10 * SMSS) == 9 * SMSS


def test_timeout_with_the_head_sacked_forgets_the_sack_state():
    # RFC 2018 §8: the receiver may renege; a SACKed head at the RTO means it did.
    sb, ctr = board()
    nxt = UNA + 10 * SMSS
    sack(sb, 0, 1, UNA, nxt, 1.0)
    sack(sb, 4, 4, UNA, nxt, 1.0)
    sb.mark_lost_on_rto(UNA, -1.0)
    assert ctr["sack_reneging"] == 1
    assert sb.sacked_bytes == 0
    assert not any(r.sacked for r in outstanding(sb))
    assert sb.high_sacked == UNA
    assert [i for i, r in enumerate(outstanding(sb)) if r.lost] == [0]
    consistent(sb, UNA, nxt)


# ---------------------------------------------------------------------------- without SACK

def test_duplicate_acks_emulate_sacked_segments():
    # RFC 5681 §3.2 / RFC 6582: each duplicate ACK is a segment that left the network; the
    # third one is DupThresh.
    sb, _ = board()
    nxt = UNA + 10 * SMSS
    assert sb.count_dup_ack(10 * SMSS, SMSS) is False
    assert sb.count_dup_ack(10 * SMSS, SMSS) is False
    assert sb.count_dup_ack(10 * SMSS, SMSS) is True
    assert sb.reno_sacked == 3 * SMSS
    assert sb.in_flight(10 * SMSS) == 7 * SMSS
    assert sb.mark_head_lost() is True
    assert sb.mark_head_lost() is False               # already marked
    assert sb.in_flight(10 * SMSS) == 6 * SMSS
    consistent(sb, UNA, nxt)
    sb.reset_dupacks()
    assert (sb.dupacks, sb.reno_sacked) == (0, 0)


def test_emulated_sacked_octets_stay_below_the_outstanding_data():
    sb, _ = board(3)
    for _ in range(5):
        sb.count_dup_ack(3 * SMSS, SMSS)
    assert sb.reno_sacked == 2 * SMSS                 # outstanding - SMSS at most
    assert sb.in_flight(3 * SMSS) == SMSS


def test_duplicated_segments_never_count_more_delivered_than_the_holes_allow():
    # A network that duplicates data makes duplicate ACKs without a loss: after a partial ACK
    # the emulated octets must still leave the lost head in flight (pipe >= 0).
    sb, _ = board()
    for _ in range(12):
        sb.count_dup_ack(10 * SMSS, SMSS)
    assert sb.reno_sacked == 9 * SMSS
    sb.mark_head_lost()
    sb.limit_reno_sacked(10 * SMSS, SMSS)
    assert sb.in_flight(10 * SMSS) >= 0
    sb.begin_ack()
    sb.on_cumulative_ack(UNA + 2 * SMSS, 1.3, 0.05)
    sb.on_partial_ack(2 * SMSS, 8 * SMSS, SMSS)
    assert sb.in_flight(8 * SMSS) >= 0
    consistent(sb, UNA + 2 * SMSS, UNA + 10 * SMSS)


def test_partial_ack_deflates_and_marks_the_next_hole():
    # RFC 6582 §3.2 step 5: the next unacknowledged segment is lost too.
    sb, _ = board()
    nxt = UNA + 10 * SMSS
    for _ in range(4):
        sb.count_dup_ack(10 * SMSS, SMSS)
    sb.mark_head_lost()
    sb.on_retransmit(sb.next_lost(nxt), 1.0, False)
    sb.begin_ack()
    sb.on_cumulative_ack(UNA + 2 * SMSS, 1.3, 0.05)   # two segments: a partial ACK
    assert sb.on_partial_ack(2 * SMSS, 8 * SMSS, SMSS) is True
    assert sb.reno_sacked == 4 * SMSS - SMSS          # less what went beyond one SMSS
    head = sb.first()
    assert head.seq == UNA + 2 * SMSS and head.lost
    assert sb.in_flight(8 * SMSS) == 8 * SMSS - 3 * SMSS - SMSS
    consistent(sb, UNA + 2 * SMSS, nxt)


# ---------------------------------------------------------------------------- the checker

def test_invariant_checker_reports_a_miscount():
    sb, _ = board()
    sb.sacked_bytes = 5
    assert any("sacked/lost/retrans" in m for m in sb.check_invariants(UNA, UNA + 10 * SMSS, False))
    sb2, _ = board()
    assert sb2.check_invariants(UNA + 1, UNA + 10 * SMSS, False) == [f"head {UNA} != snd_una {UNA + 1}"]
