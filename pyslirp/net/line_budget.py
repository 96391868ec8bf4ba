"""The line budget: how much bulk TCP data may be in flight on the link at once.

Below the line scheduler lie queues we can neither see nor size: a pty's buffer, socat's and
QEMU's socket buffers, a UART's FIFO. Whatever bulk data waits there delays every interactive
frame queued after it — behind a download, a keystroke's echo took a second on an emulated 16550
before this budget. The connections' own windows do not bound those queues: the client's
receive window grows to megabytes.

So the bulk connections of a link share one budget of bytes in flight (sent, not yet
acknowledged), sized from what the line is measured to deliver:

    limit = delivery_rate x (min_rtt + TARGET_DELAY) + ACK_SEGMENTS segments

the bandwidth-delay product plus a small standing queue (the model of BBR, with LEDBAT's fixed
queuing-delay target, RFC 6817 §2.1). ``delivery_rate`` is the highest rate sample of the last
RATE_WINDOW (bytes acknowledged over an interval of at least one ``min_rtt``), ``min_rtt`` the
lowest round trip seen. While the limit binds, about TARGET_DELAY of data waits below us; when
the line could carry more, the next samples are larger by (min_rtt + TARGET_DELAY) / min_rtt and
the limit follows within a few round trips, so the budget does not cap throughput for long.

While an interactive flow is active (a small data segment sent within INTERACTIVE_HOLD), bulk
segments shrink to about SEGMENT_TIME of line time (never below TCP's default MSS of 536) and
the budget to two of them plus INTERACTIVE_DELAY's worth: a keystroke's echo then waits behind a
few milliseconds of bulk data, at the price of some bulk throughput while someone types.

On a slow line each of the client's ACKs (one per two segments: every 18 ms on an emulated
16550) wakes the process that reads the line, and a wake-up of a Python process costs far more
than the ACK it brings. While bulk data is in flight and no interactive flow is active,
:meth:`update_read_rest` tells the line's reader it may rest REST_ACKS ACK intervals between
reads, so that one wake-up takes several ACKs, and the limit grows by the line time of that rest,
so the line stays busy while ACKs wait to be read. The price: the first keystroke after a pause
waits up to one rest to be read, and behind that much more bulk data; the interactive flow it
starts ends the rests.

Sans-IO: connections call :meth:`admit`, :meth:`release`, :meth:`rtt_sample`; the stack resumes
the connections the budget held back (:meth:`take_waiting`) when room returns.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Hashable

from pyslirp.counters import CounterSet, CounterSpec

#: queuing delay we allow below us while the budget binds, seconds
TARGET_DELAY = 0.002
#: segments added to the bandwidth-delay product: the client ACKs every second one
ACK_SEGMENTS = 2
#: the budget never shrinks below this many segments...
FLOOR_SEGMENTS = 2
#: ...and while an interactive flow is active it is at most this many plus INTERACTIVE_DELAY's worth
INTERACTIVE_SEGMENTS = 2
INTERACTIVE_DELAY = 0.0005
#: rate samples are kept this long; the estimate is their maximum
RATE_WINDOW = 1.0
#: shortest interval a rate sample is taken over, seconds
MIN_INTERVAL = 0.01
#: a slow line's reader may rest this many of the client's ACK intervals between reads...
REST_ACKS = 4
#: ...at most this long, seconds (a rest that cannot take two ACKs saves no wake-up)...
MAX_READ_REST = 0.08
#: ...and a rest shorter than this is left to the reader's own batching (a fast line)
MIN_READ_REST = 0.002
#: while reads rest, ACKs are taken in lumps: a rate sample spans at least this many rests
SAMPLE_RESTS = 4
#: line time of one bulk segment while an interactive flow is active, seconds
SEGMENT_TIME = 0.003
#: smallest bulk segment (RFC 9293 §3.7.1 default MSS)
MIN_SEGMENT = 536
#: an interactive flow counts as active this long after its last small segment, seconds
INTERACTIVE_HOLD = 1.0


BUDGET_COUNTERS = CounterSet("line_budget", [
    CounterSpec("budget_blocked", "bulk segments held back because the budget was full"),
    CounterSpec("budget_samples", "delivery rate samples taken"),
])


class LineBudget:
    """Bytes of bulk data in flight on one link, and the limit the line's delivery rate sets."""

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.flight = 0
        #: None until the first rate sample: no limit while nothing is measured
        self.limit: int | None = None
        self.rate = 0.0
        self.min_rtt: float | None = None
        self._rates: deque[tuple[float, float]] = deque()
        self._interval_start: float | None = None
        self._interval_bytes = 0
        self._interactive_until = float("-inf")
        self._waiting: dict[Hashable, None] = {}
        #: how long the line's reader may rest between reads now (see update_read_rest), seconds
        self.read_rest = 0.0
        self.counters = {"budget_blocked": 0, "budget_samples": 0}

    # -- what connections call -----------------------------------------------------------------

    def segment_size(self, now: float) -> int:
        """The largest bulk segment to send now."""
        if now >= self._interactive_until or not self.rate:
            return self.mss
        size = int(self.rate * SEGMENT_TIME)
        return self.mss if size >= self.mss else (MIN_SEGMENT if size < MIN_SEGMENT else size)

    def interactive(self, now: float) -> bool:
        """Has an interactive flow been active within INTERACTIVE_HOLD?"""
        return now < self._interactive_until

    def note_interactive(self, now: float) -> None:
        """A small data segment went out: an interactive flow is active."""
        self._interactive_until = now + INTERACTIVE_HOLD

    def admit(self, conn: Hashable, size: int, now: float) -> bool:
        """May ``conn`` send ``size`` more bulk bytes? If not, it waits for :meth:`take_waiting`.
        Connections already waiting go first, so a flow whose ACK freed room does not take it
        from the others."""
        if self._fits(size, now) and not self._waiting:
            self.flight += size
            return True
        if conn not in self._waiting:
            self.counters["budget_blocked"] += 1
            self._waiting[conn] = None
        return False

    def _fits(self, size: int, now: float) -> bool:
        limit = self.limit
        if limit is None or self.flight == 0:
            return True
        # The client ACKs every second segment: min_rtt is the round trip of a segment it ACKed
        # at once, so two more segments keep the line busy while an ACK is on its way back.
        limit += ACK_SEGMENTS * size
        # ACKs may wait a rest to be read: keep that much more line time in flight meanwhile.
        limit += int(self.rate * self.read_rest)
        if now < self._interactive_until:
            # A keystroke waits behind what is in flight: keep two segments (the client ACKs
            # at once on the second) and a sliver of queue, not a whole round trip's worth.
            interactive = INTERACTIVE_SEGMENTS * size + int(self.rate * INTERACTIVE_DELAY)
            if interactive < limit:
                limit = interactive
        floor = FLOOR_SEGMENTS * size  # never so small that the client's ACKs wait on a timer
        return self.flight + size <= (limit if limit > floor else floor)

    def release(self, size: int, now: float, *, delivered: bool = True) -> None:
        """``size`` bulk bytes left the flight: acknowledged (``delivered``) or abandoned."""
        self.flight -= size
        if self.flight < 0:
            self.flight = 0
        if delivered:
            self._delivered(size, now)

    def rtt_sample(self, rtt: float) -> None:
        """A round trip measured on bulk data."""
        if rtt > 0 and (self.min_rtt is None or rtt < self.min_rtt):
            self.min_rtt = rtt
            self._update_limit()

    def update_read_rest(self, now: float) -> float:
        """How long the line's reader may rest between reads now, so that one wake-up takes
        several ACKs: REST_ACKS of the client's ACK intervals while bulk data is in flight and no
        interactive flow is active, within MAX_READ_REST; 0 on a fast line (under MIN_READ_REST)
        or one so slow that a rest would take fewer than two ACKs. The limit follows it."""
        rest = 0.0
        if self.flight and self.rate and now >= self._interactive_until:
            ack_interval = ACK_SEGMENTS * self.mss / self.rate
            rest = REST_ACKS * ack_interval
            if rest > MAX_READ_REST:
                rest = MAX_READ_REST if 2 * ack_interval <= MAX_READ_REST else 0.0
            elif rest < MIN_READ_REST:
                rest = 0.0
        self.read_rest = rest
        return rest

    # -- what the stack calls ------------------------------------------------------------------

    def take_waiting(self, now: float) -> list[Any]:
        """Connections held back (what :meth:`admit` was given), oldest first, while there is
        room for one more segment."""
        if not self._waiting or not self._fits(self.segment_size(now), now):
            return []
        waiting = list(self._waiting)
        self._waiting.clear()
        return waiting

    def forget(self, conn: Hashable) -> None:
        self._waiting.pop(conn, None)

    def stats(self) -> dict[str, float | int | None]:
        return {
            "flight": self.flight,
            "limit": self.limit,
            "rate": round(self.rate),
            "min_rtt_ms": None if self.min_rtt is None else round(self.min_rtt * 1000, 3),
            "waiting": len(self._waiting),
            **self.counters,
        }

    # -- the estimate --------------------------------------------------------------------------

    def _delivered(self, size: int, now: float) -> None:
        start = self._interval_start
        if start is None:
            self._interval_start = now
            return
        self._interval_bytes += size
        elapsed = now - start
        min_rtt = self.min_rtt or 0.0
        shortest = min_rtt if min_rtt > MIN_INTERVAL else MIN_INTERVAL
        if shortest < SAMPLE_RESTS * self.read_rest:
            shortest = SAMPLE_RESTS * self.read_rest
        if elapsed < shortest:
            return
        sample = self._interval_bytes / elapsed
        self._interval_start = now
        self._interval_bytes = 0
        self.counters["budget_samples"] += 1
        rates = self._rates
        # Keep a monotonically decreasing deque of (time, rate): its head is the window's max.
        while rates and rates[-1][1] <= sample:
            rates.pop()
        rates.append((now, sample))
        while len(rates) > 1 and rates[0][0] < now - RATE_WINDOW:
            rates.popleft()
        self.rate = rates[0][1]
        self._update_limit()

    def _update_limit(self) -> None:
        if not self.rate or self.min_rtt is None:
            return
        self.limit = int(self.rate * (self.min_rtt + TARGET_DELAY))
