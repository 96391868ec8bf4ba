"""The line scheduler: our own queues in front of the line, so interactive traffic overtakes bulk.

Encoded frames wait here in three queues — link control, interactive, bulk — and are written in
that order of priority, as the original SLiRP's fast queue and batch queue did. Below us the OS holds
only a few frames where it tells us how many (:meth:`LineSession.os_queued`: serial ports and
sockets; a pty master always reports 0), so a keystroke never waits behind more than a few bulk
frames. Lines with a rate (``serial.line_rate``, or a serial port's baud rate) are paced with a
token bucket so that nothing piles up in buffers we can't see; on the others, the stack's line
budget (``pyslirp.net.line_budget``) bounds the bulk data in those buffers.

The bulk queue is bounded, in bytes and so in line time (one second of a rated line, 64 KiB on a
line with no rate): a frame offered past the bound is dropped and counted, as a router's queue
would, and TCP repairs it — the drop happens before the line, so the line never carries it twice.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque

from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.runtime.lines import LineSession

log = logging.getLogger(__name__)

#: how much we let the OS hold below us when the line has no known rate
DEFAULT_OS_QUEUE = 4096
#: how long a frame may wait in the OS queue on a rated line, in seconds of line time
OS_QUEUE_TIME = 0.02
#: the bulk queue's bound: seconds of line time on a rated line, bytes otherwise
BULK_QUEUE_TIME = 1
MIN_BULK_QUEUE = 16 * 1024
DEFAULT_BULK_QUEUE = 64 * 1024
#: on a line with no rate, frames are gathered into one write up to this many bytes
WRITE_BATCH = 16384


SCHEDULER_COUNTERS = CounterSet("scheduler", [
    CounterSpec("frames_sent", "frames written to the line"),
    CounterSpec("bytes_sent", "bytes written to the line", unit="bytes"),
    CounterSpec(
        "frames_dropped", "frames dropped before the line, by reason",
        reasons=("bulk_dropped", "frames_dropped_closed"), prefix="",
    ),
    CounterSpec("os_queue_waits", "times the writer waited for the OS queue below us to drain"),
])


class Priority(enum.IntEnum):
    CONTROL = 0
    INTERACTIVE = 1
    BULK = 2


# The members as module names: on Python 3.11 looking a member up on its class is a Python-level
# descriptor call (about 0.2 µs), and the per-frame paths name one several times a frame.
CONTROL, INTERACTIVE, BULK = Priority.CONTROL, Priority.INTERACTIVE, Priority.BULK


class LineScheduler:
    """Priority queues of encoded frames, drained onto one line session."""

    def __init__(self, session: LineSession, rate: int | None = None, bulk_limit: int | None = None) -> None:
        self.session = session
        self.rate = rate
        if bulk_limit is None:
            bulk_limit = max(MIN_BULK_QUEUE, rate * BULK_QUEUE_TIME) if rate else DEFAULT_BULK_QUEUE
        self.bulk_limit = bulk_limit
        self.os_queue_limit = max(256, int(rate * OS_QUEUE_TIME)) if rate else DEFAULT_OS_QUEUE
        # A rated line takes one frame at a time, so a bulk batch never delays an urgent frame.
        self.batch_limit = 1 if rate else WRITE_BATCH
        self._queues: tuple[deque[bytes], ...] = tuple(deque() for _ in Priority)
        self._queued_bytes = [0] * len(Priority)
        self._wake = asyncio.Event()
        self._tokens = 0.0
        self._token_time = 0.0
        self.counters = {
            "frames_sent": 0, "bytes_sent": 0, "bulk_dropped": 0, "frames_dropped_closed": 0, "os_queue_waits": 0,
        }
        self._closed = False
        self._partial = b""  # the rest of a batch the OS took only part of: it goes first
        #: the most the OS can hold below us: what it held when last asked, plus what we wrote
        #: since (its queue only drains in between)
        self._os_bound = 0
        self._writer_busy = False  # the writer task holds a batch: only it may write

    def send(self, frame: bytes, priority: Priority = Priority.BULK) -> bool:
        """Queue an encoded frame; False (counted) when the bulk queue is full or the line closed.
        Nothing is written until :meth:`kick`."""
        if self._closed:
            self.counters["frames_dropped_closed"] += 1
            return False
        if priority is BULK and self._queued_bytes[BULK] + len(frame) > self.bulk_limit:
            self.counters["bulk_dropped"] += 1
            return False
        self._queues[priority].append(frame)
        self._queued_bytes[priority] += len(frame)
        return True

    def kick(self) -> None:
        """Write what is queued. On an unpaced line with room in the OS this happens here and now,
        in one write (no task switch per flush); otherwise the writer task takes over."""
        if not any(self._queues):
            return
        if self.rate or self._writer_busy or self._partial or self._closed or self._os_queue_over():
            self._wake.set()
            return
        batch = self._take_batch()
        written = self.session.try_write(batch)
        self._os_bound += written
        self.counters["bytes_sent"] += written
        if written < len(batch):
            self._partial = batch[written:]
            self._wake.set()
        elif any(self._queues):
            self._wake.set()  # more than one batch: the writer task goes on

    def bulk_room(self) -> int:
        """Bytes the bulk queue can still take."""
        return max(0, self.bulk_limit - self._queued_bytes[BULK])

    def queued(self, priority: Priority) -> int:
        return self._queued_bytes[priority]

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        for queue in self._queues:
            queue.clear()
        self._queued_bytes = [0] * len(Priority)
        self._wake.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until everything queued has been handed to the line (at most ``timeout`` s)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (any(self._queues) or self._partial or self._writer_busy) and not self._closed:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def _take_batch(self) -> bytes:
        parts: list[bytes] = []
        size = 0
        for priority, queue in enumerate(self._queues):
            while queue and (not parts or size + len(queue[0]) <= self.batch_limit):
                frame = queue.popleft()
                self._queued_bytes[priority] -= len(frame)
                parts.append(frame)
                size += len(frame)
            if size >= self.batch_limit:
                break
        self.counters["frames_sent"] += len(parts)
        return b"".join(parts)

    async def _pace(self, size: int) -> None:
        """Token bucket at ``rate`` bytes/s; the burst is the OS queue bound."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        assert self.rate is not None
        self._tokens = min(float(max(size, self.os_queue_limit)), self._tokens + (now - self._token_time) * self.rate)
        self._token_time = now
        self._tokens -= size
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)

    def _os_queue_over(self) -> bool:
        """Whether the OS holds more than ``os_queue_limit`` below us. It is asked (an ioctl)
        only when what it may hold, ``_os_bound``, is over the limit: a line written a frame at a
        time is not asked at every write."""
        if self._os_bound <= self.os_queue_limit:
            return False
        self._os_bound = self.session.os_queued()
        return self._os_bound > self.os_queue_limit

    async def _os_room(self) -> None:
        while not self._closed:
            if not self._os_queue_over():
                return
            excess = self._os_bound - self.os_queue_limit
            self.counters["os_queue_waits"] += 1
            await asyncio.sleep(excess / self.rate if self.rate else 0.001)

    async def run(self) -> None:
        """Drain the queues onto the line until :meth:`close`."""
        while not self._closed:
            if self._partial:
                batch, self._partial = self._partial, b""
            else:
                if not any(self._queues):
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._os_room()
                batch = self._take_batch()
                if not batch:
                    continue
            self._writer_busy = True
            try:
                if self.rate:
                    await self._pace(len(batch))
                await self.session.write(batch)
                self._os_bound += len(batch)
            finally:
                self._writer_busy = False
            self.counters["bytes_sent"] += len(batch)
