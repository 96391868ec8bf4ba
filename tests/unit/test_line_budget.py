"""The line budget (pyslirp/net/line_budget.py): bulk data in flight stays near the line's
bandwidth-delay product, so the queue below us — which we cannot see — stays short."""

from __future__ import annotations

import hashlib
import pathlib
import random
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from simlink import BulkSender, LinkConfig, Simulator, Sink, make_pair  # noqa: E402

from pyslirp.net import line_budget  # noqa: E402
from pyslirp.net.line_budget import LineBudget  # noqa: E402
from pyslirp.net.tcp import TCPConfig  # noqa: E402

MSS = 1460


def measured(rate: float, min_rtt: float) -> LineBudget:
    """A budget that has seen ``min_rtt`` and delivered at ``rate`` for a while."""
    budget = LineBudget(MSS)
    budget.rtt_sample(min_rtt)
    t = 0.0
    budget.release(0, t)  # starts the first interval
    for _ in range(20):
        t += 0.01
        budget.flight += int(rate * 0.01)
        budget.release(int(rate * 0.01), t)
    return budget


def test_no_limit_until_the_line_is_measured() -> None:
    budget = LineBudget(MSS)
    assert budget.limit is None
    for _ in range(100):
        assert budget.admit("c", MSS, 0.0)
    assert budget.flight == 100 * MSS


def test_limit_is_the_bandwidth_delay_product_plus_the_target_queue() -> None:
    budget = measured(rate=180_000, min_rtt=0.016)
    assert budget.rate == pytest.approx(180_000, rel=0.01)
    assert budget.limit == pytest.approx(180_000 * (0.016 + line_budget.TARGET_DELAY), rel=0.01)


def test_held_connections_wait_in_order_and_resume_when_acks_free_room() -> None:
    budget = measured(rate=180_000, min_rtt=0.016)  # about 3,240 bytes + 2 segments
    now = 1.0
    for _ in range(4):
        assert budget.admit("a", MSS, now)
    assert not budget.admit("a", MSS, now)
    assert not budget.admit("b", MSS, now)
    assert budget.take_waiting(now) == []  # no room yet
    # Room freed by a's ACK goes to the connections already waiting, not straight back to a.
    budget.release(MSS, now + 0.01)
    assert not budget.admit("c", MSS, now)
    assert budget.take_waiting(now) == ["a", "b", "c"]
    assert budget.counters["budget_blocked"] == 3


def test_an_empty_line_always_admits_one_segment() -> None:
    budget = measured(rate=1_000, min_rtt=0.001)  # a limit far below one segment
    assert budget.limit is not None and budget.limit < MSS
    assert budget.admit("a", 10 * MSS, 5.0)


def test_segments_shrink_and_the_budget_tightens_while_an_interactive_flow_is_active() -> None:
    budget = measured(rate=180_000, min_rtt=0.016)
    assert budget.segment_size(1.0) == MSS
    budget.note_interactive(1.0)
    size = budget.segment_size(1.0)
    assert size == int(180_000 * line_budget.SEGMENT_TIME)  # 540 bytes: 3 ms of this line
    cap = 2 * size + int(180_000 * line_budget.INTERACTIVE_DELAY)
    admitted = 0
    while budget.admit("bulk", size, 1.0):
        admitted += size
    assert admitted <= cap
    # A fast line keeps full-size segments; the hold expires.
    assert measured(rate=6e6, min_rtt=0.002).segment_size(1.0) == MSS
    assert budget.segment_size(1.0 + line_budget.INTERACTIVE_HOLD) == MSS


def admitted(budget: LineBudget, now: float) -> int:
    """Bulk bytes the budget lets into flight from empty, a segment at a time."""
    budget.flight = 0
    budget._waiting.clear()
    while budget.admit("bulk", MSS, now):
        pass
    flight = budget.flight
    budget.flight = MSS  # as after a send: something in flight
    budget._waiting.clear()
    return flight


def test_a_slow_lines_reads_rest_several_ack_intervals_and_the_limit_covers_the_rest() -> None:
    budget = measured(rate=180_000, min_rtt=0.016)
    assert budget.update_read_rest(1.0) == 0.0  # nothing in flight: nothing to batch
    without = admitted(budget, 1.0)
    rest = budget.update_read_rest(1.0)
    ack_interval = line_budget.ACK_SEGMENTS * MSS / 180_000  # 16 ms
    assert rest == pytest.approx(min(line_budget.REST_ACKS * ack_interval, line_budget.MAX_READ_REST))
    assert rest >= 2 * ack_interval  # a wake-up takes at least two ACKs
    # While ACKs wait out a rest, the line must not run dry: the rest's line time more in flight.
    assert admitted(budget, 1.0) - without == pytest.approx(180_000 * rest, abs=MSS)
    # A keystroke's echo must not wait behind that: an interactive flow ends the rests.
    budget.note_interactive(1.0)
    assert budget.update_read_rest(1.0) == 0.0
    assert budget.update_read_rest(1.0 + line_budget.INTERACTIVE_HOLD) == rest


@pytest.mark.parametrize("rate", [6e6, 8_000])
def test_no_read_rest_on_a_fast_line_nor_one_too_slow_for_two_acks_per_rest(rate: float) -> None:
    """6 MB/s: ACKs come every 0.5 ms and the reader's own batching takes them; 8 kB/s: one
    ACK per 365 ms, and a rest that takes fewer than two saves no wake-up."""
    budget = measured(rate=rate, min_rtt=0.016)
    budget.flight = MSS
    assert budget.update_read_rest(1.0) == 0.0


def test_acks_taken_in_lumps_do_not_inflate_the_rate() -> None:
    """With resting reads, a wake-up takes 3 or 5 ACKs in turn (the rests' phase against the ACK
    clock): a sample per wake-up would see 5/4 of the rate, and the budget would keep the max."""
    rate = 180_000
    budget = measured(rate=rate, min_rtt=0.016)
    budget.flight = MSS
    rest = budget.update_read_rest(1.0)
    ack_bytes = line_budget.ACK_SEGMENTS * MSS
    t = 1.0
    for i in range(200):
        t += rest
        acks = 3 if i % 2 else 5
        budget.flight += acks * ack_bytes
        budget.release(acks * ack_bytes, t)
    assert rest == pytest.approx(4 * ack_bytes / rate)  # four ACKs per rest on average
    assert budget.rate == pytest.approx(rate, rel=0.1)


class RestingReader:
    """The sender's line reader, as FdSession reads with ``read_rest`` set: after a wake-up it
    rests as long as the budget asks, and takes what arrived meanwhile together; a rest that
    brings nothing ends the resting."""

    def __init__(self, sim: Simulator, receive, budget: LineBudget) -> None:
        self.sim, self.receive, self.budget = sim, receive, budget
        self.pending: list[bytes] = []
        self.resting = False
        self.wakeups = 0
        self.segments = 0

    def __call__(self, data: bytes) -> None:
        self.pending.append(data)
        if not self.resting:
            self._wake()

    def _wake(self) -> None:
        self.resting = False
        if not self.pending:
            return
        self.wakeups += 1
        batch, self.pending = self.pending, []
        self.segments += len(batch)
        for data in batch:
            self.receive(data)
        rest = self.budget.update_read_rest(self.sim.now)
        if rest:
            self.resting = True
            self.sim.schedule(self.sim.now + rest, self._wake)


class BudgetedSender:
    """A bulk sender whose connection shares a line budget, resumed as the stack resumes it."""

    def __init__(self, data: bytes, budget: LineBudget | None) -> None:
        self.sender = BulkSender(data)
        self.budget = budget

    def __call__(self, ep) -> None:
        if self.budget is not None and ep.conn.budget is None:
            ep.conn.budget = self.budget
        self.sender(ep)
        if self.budget is not None:
            for conn in self.budget.take_waiting(ep.sim.now):
                conn.resume(ep.sim.now)


def transfer(budget: LineBudget | None, interactive_from: float | None = None, reader: type | None = None):
    """2 MB over a 16550-like line (180 kB/s, 1 ms each way) whose queue never drops: the
    client's receive window, not the queue, is what limits an unbudgeted sender."""
    sim = Simulator(3)
    data = random.Random(3).randbytes(2_000_000)
    line = LinkConfig(bandwidth=180_000, delay=0.001, queue_limit=1_000_000)
    back = LinkConfig(bandwidth=180_000, delay=0.001)
    sink = Sink()
    app = BudgetedSender(data, budget)
    a, b = make_pair(sim, line, back, TCPConfig(), TCPConfig(rcv_buf=1 << 20), app, sink)
    if reader is not None:
        b.link.deliver = reader(sim, a.receive, budget)
    if interactive_from is not None and budget is not None:
        for i in range(40):
            sim.schedule(interactive_from + i * 0.25, budget.note_interactive, interactive_from + i * 0.25)
    sent: list[tuple[float, int, int]] = []  # (time, segment size, segments queued before it)
    link = a.link
    send = link.send

    def recording_send(segment: bytes) -> None:
        queued = sum(1 for done in link._departures[link._dhead:] if done > sim.now)
        sent.append((sim.now, len(segment), queued))
        send(segment)

    link.send = recording_send
    a.connect_to(b)
    sim.run(until=60, stop=lambda: sink.closed)
    assert hashlib.sha256(sink.data).digest() == hashlib.sha256(data).digest()
    sim.reader = b.link.deliver
    return sim, sent


def queue_delay(sent: list[tuple[float, int, int]], start: float, end: float) -> float:
    """The longest a segment sent in [start, end) waited behind others, in seconds."""
    return max(queued * (size + 28) for t, size, queued in sent if start <= t < end) / 180_000


def test_without_the_budget_the_hidden_queue_grows_to_seconds() -> None:
    sim, sent = transfer(None)
    assert queue_delay(sent, 1.0, sim.now) > 1.0


def test_budget_keeps_the_queue_to_milliseconds_at_full_throughput() -> None:
    sim, sent = transfer(LineBudget(MSS))
    # After slow start (before the first measurement the initial window goes out whole):
    assert queue_delay(sent, 1.0, sim.now) < 0.03
    goodput = 2_000_000 / sim.now
    assert goodput > 0.9 * 180_000 * MSS / (MSS + 40 + 28)


def test_resting_reads_take_several_acks_per_wake_up_at_full_throughput() -> None:
    budget = LineBudget(MSS)
    sim, sent = transfer(budget, reader=RestingReader)
    reader = sim.reader
    assert reader.segments / reader.wakeups > 3  # ACKs per wake-up (one per wake-up without)
    goodput = 2_000_000 / sim.now
    assert goodput > 0.9 * 180_000 * MSS / (MSS + 40 + 28)
    # The queue below us grows by about one rest, no more.
    assert queue_delay(sent, 1.0, sim.now) < 0.03 + line_budget.MAX_READ_REST


def test_while_someone_types_bulk_segments_are_small_and_few() -> None:
    budget = LineBudget(MSS)
    sim, sent = transfer(budget, interactive_from=3.0)
    typing = [(t, size, queued) for t, size, queued in sent if 3.1 <= t < 12.0 and size > 100]
    assert typing and max(size for _, size, _ in typing) <= 40 + int(180_000 * line_budget.SEGMENT_TIME)
    # A keystroke's echo would wait behind about two small segments: under 10 ms.
    assert queue_delay(typing, 3.1, 12.0) < 0.01
    assert queue_delay(sent, 1.0, 3.0) > queue_delay(typing, 3.1, 12.0)
