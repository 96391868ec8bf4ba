"""A frame-aware line shim: an asyncio TCP relay between the VM's line and pyslirp's line port.

    QEMU (PPP client) ──tcp──▶ LineShim.port ──"up"──▶ pyslirp (upstream)
                     ◀────────────────────── "down" ◀──

It cuts each direction's byte stream into HDLC frames at 0x7E flags (RFC 1662 §4.3) and can:

* pace the line to a baud rate, 10 bits per byte (start + 8 + stop), each direction on its own;
* add a constant one-way latency;
* drop, corrupt or delay (hold back while later frames pass) chosen frames: the next N, or the
  next N that a predicate on the decoded :class:`Frame` accepts;
* drop a fraction of frames at random (seeded, so a failing run can be replayed);
* stall a direction for a while (bytes queue up, order kept), or pause/resume it;
* inject raw bytes between frames (line noise, hand-made frames);
* cut the line for a while: hang up on the upstream, drop what either side sends, dial again;
* count bytes and frames each way (:class:`DirStats`), for line-efficiency benchmarks.

Usage::

    async with LineShim(upstream_port=pyslirp_port, baud=115200, seed=1) as shim:
        run the VM with line_port=shim.port
        shim.drop(UP, match=lambda f: f.protocol == 0xC021)   # drop the next LCP frame
        shim.corrupt(DOWN, count=2)                            # corrupt the next two frames
        shim.set_loss(UP, 0.05)                                # lose 5 % of frames
        shim.stall(DOWN, 2.0)
        await shim.cut(3.0)                                    # pyslirp sees a hang-up, then a new client
        shim.stats[UP].frames_out, shim.stats[DOWN].bytes_out

Frames are counted as they come in (``*_in``) and as they leave (``*_out``); a frame is the bytes
between two flags (a lone flag, e.g. the opening flag or doubled flags, counts as flag bytes,
not as a frame). Bytes that reach no flag within ``flush_after`` seconds (non-PPP text such as a
chat script) are forwarded as "junk" and never faulted. Dropping a frame drops its bytes but keeps
its closing flag, so the frames around it stay delimited.

Backpressure: while a paced direction has more than ``queue_limit`` bytes queued the shim stops
reading from its source, like a full UART FIFO/tty buffer (TCP buffers on loopback still hold
more than a real serial line would).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Coroutine, Literal

Direction = Literal["up", "down"]
UP: Direction = "up"  # from the PPP client (the VM) to the server (pyslirp)
DOWN: Direction = "down"  # from the server to the client
FLAG = 0x7E
ESC = 0x7D
#: a paced line that resumes within this long of finishing its last byte counts as never idle
#: (timer lateness, not a pause in the data), seconds
IDLE_SLACK = 0.002


# ---------------------------------------------------------------------------------------------
# minimal HDLC decoding (RFC 1662), enough to let tests pick frames


def _fcs_table() -> list[int]:
    table = []
    for b in range(256):
        v = b
        for _ in range(8):
            v = (v >> 1) ^ 0x8408 if v & 1 else v >> 1
        table.append(v)
    return table


_FCS_TABLE = _fcs_table()
PPPINITFCS16 = 0xFFFF
PPPGOODFCS16 = 0xF0B8


def fcs16(data: bytes, fcs: int = PPPINITFCS16) -> int:
    """RFC 1662 §C.2 FCS-16 over data (not complemented)."""
    for b in data:
        fcs = (fcs >> 8) ^ _FCS_TABLE[(fcs ^ b) & 0xFF]
    return fcs


def unstuff(raw: bytes) -> bytes:
    """Undo RFC 1662 byte stuffing (0x7D x -> x ^ 0x20)."""
    if ESC not in raw:
        return raw
    out = bytearray()
    esc = False
    for b in raw:
        if esc:
            out.append(b ^ 0x20)
            esc = False
        elif b == ESC:
            esc = True
        else:
            out.append(b)
    return bytes(out)


@dataclass
class Frame:
    """One frame as seen on the wire: ``raw`` is the stuffed bytes between the flags."""

    raw: bytes
    direction: Direction
    index: int  # per-direction count of frames seen so far (0-based)
    _data: bytes | None = field(default=None, repr=False)

    @property
    def data(self) -> bytes:
        """Unstuffed bytes, FCS included (control characters the peer's ACCM would ignore are
        not removed: pyslirp and pppd both send them escaped)."""
        if self._data is None:
            self._data = unstuff(self.raw)
        return self._data

    @property
    def fcs_ok(self) -> bool:
        return len(self.data) >= 4 and fcs16(self.data) == PPPGOODFCS16

    @property
    def payload(self) -> bytes:
        """Address/control/protocol/information, without the FCS."""
        return self.data[:-2]

    @property
    def protocol(self) -> int | None:
        """The PPP protocol number (handles address/control and protocol field compression)."""
        p = self.payload
        if p[:2] == b"\xff\x03":
            p = p[2:]
        if not p:
            return None
        if p[0] & 1:  # compressed 1-byte protocol field
            return p[0]
        return (p[0] << 8) | p[1] if len(p) >= 2 else None

    @property
    def info(self) -> bytes:
        """The information field (after the protocol number)."""
        p = self.payload
        if p[:2] == b"\xff\x03":
            p = p[2:]
        if not p:
            return b""
        return p[1:] if p[0] & 1 else p[2:]


def split_frames(stream: bytes) -> list[bytes]:
    """The non-empty frame bodies (still stuffed) in a captured byte stream."""
    return [f for f in stream.split(bytes([FLAG])) if f]


# ---------------------------------------------------------------------------------------------
# faults and statistics


Match = Callable[[Frame], bool]


@dataclass
class Fault:
    action: Literal["drop", "corrupt", "delay"]
    direction: Direction
    count: int
    match: Match | None = None
    seconds: float = 0.0
    offset: int | None = None
    hits: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def active(self) -> bool:
        return self.hits < self.count


@dataclass
class DirStats:
    bytes_in: int = 0  # read from the source
    bytes_out: int = 0  # written to the destination
    frames_in: int = 0
    frames_out: int = 0
    flag_bytes: int = 0  # flags that closed no frame (opening or doubled flags)
    junk_bytes: int = 0  # bytes forwarded without a closing flag (not PPP)
    dropped: int = 0  # all drops (targeted + random)
    dropped_random: int = 0
    corrupted: int = 0
    delayed: int = 0
    queued_max: int = 0  # peak bytes waiting in the shim
    injected_bytes: int = 0  # raw bytes sent by inject()
    cut_bytes: int = 0  # bytes lost to cut(): queued when the line was cut, or sent while it was

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Link:
    """One client connection as cut() sees it: a cut to make, and its end."""

    cut_requested: asyncio.Event = field(default_factory=asyncio.Event)
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    cut_seconds: float = 0.0


@dataclass
class _Unit:
    data: bytes
    ready_at: float
    is_frame: bool


class _Pipe:
    """One direction: reads the source, applies faults, paces the output."""

    def __init__(self, shim: "LineShim", direction: Direction) -> None:
        self.shim = shim
        self.direction = direction
        self.queue: deque[_Unit] = deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()  # something to send / settings changed
        self.space = asyncio.Event()  # queue below the limit
        self.space.set()
        self.line_free = 0.0  # time the paced line finishes the bytes already sent
        self.stall_until = 0.0
        self.paused = False
        self.held = 0  # delayed frames not yet queued
        self.closing = False
        self.discarding = False  # the line is cut

    @property
    def stats(self) -> DirStats:
        return self.shim.stats[self.direction]

    def baud(self) -> float | None:
        return self.shim.baud[self.direction]

    def limit(self) -> int:
        """Bytes queued before the shim stops reading the source: a UART/tty buffer's worth on a
        paced line, more on an unpaced one so that throughput is not limited by the relay."""
        return self.shim.queue_limit if self.baud() else max(self.shim.queue_limit, 1 << 18)

    def enqueue(self, data: bytes, is_frame: bool, delay: float = 0.0) -> None:
        unit = _Unit(data, time.monotonic() + self.shim.latency[self.direction], is_frame)
        if delay > 0:
            self.held += 1

            def release() -> None:
                self.held -= 1
                unit.ready_at = time.monotonic()
                self._push(unit)
            asyncio.get_running_loop().call_later(delay, release)
            return
        self._push(unit)

    def _push(self, unit: _Unit) -> None:
        if self.discarding:
            self.stats.cut_bytes += len(unit.data)
            return
        self.queue.append(unit)
        self.queued_bytes += len(unit.data)
        self.stats.queued_max = max(self.stats.queued_max, self.queued_bytes)
        if self.queued_bytes > self.limit():
            self.space.clear()
        self.wake.set()

    def discard(self) -> None:
        """The line is cut: drop what is queued, and what comes until :meth:`restore`."""
        self.discarding = True
        self.stats.cut_bytes += self.queued_bytes
        self.queue.clear()
        self.queued_bytes = 0
        self.space.set()
        self.wake.set()

    def restore(self) -> None:
        self.discarding = False

    async def reader(self, src: asyncio.StreamReader) -> None:
        buf = bytearray()
        loop = asyncio.get_running_loop()
        flush_handle: asyncio.TimerHandle | None = None

        def flush_junk() -> None:
            nonlocal flush_handle
            flush_handle = None
            if buf:
                self.stats.junk_bytes += len(buf)
                self.enqueue(bytes(buf), False)
                buf.clear()

        while True:
            await self.space.wait()
            chunk = await src.read(65536)
            if not chunk:
                break
            self.stats.bytes_in += len(chunk)
            buf += chunk
            start = 0
            while True:
                i = buf.find(FLAG, start)
                if i < 0:
                    break
                body = bytes(buf[start:i])
                if body:
                    self.shim._on_frame(self, body)
                else:
                    self.stats.flag_bytes += 1
                    self.enqueue(b"\x7e", False)
                start = i + 1
            del buf[:start]
            if flush_handle is not None:
                flush_handle.cancel()
                flush_handle = None
            if buf:
                if len(buf) > self.shim.max_frame:
                    flush_junk()
                else:
                    flush_handle = loop.call_later(self.shim.flush_after, flush_junk)
        if flush_handle is not None:
            flush_handle.cancel()
        flush_junk()

    async def writer(self, dst: asyncio.StreamWriter, source_done: asyncio.Event) -> None:
        while True:
            if not self.queue:
                if source_done.is_set() and self.held == 0:
                    return
                self.wake.clear()
                if source_done.is_set():
                    await self.wake.wait()  # a held (delayed) frame is still to come
                    continue
                waiter = asyncio.ensure_future(self.wake.wait())
                done_waiter = asyncio.ensure_future(source_done.wait())
                try:
                    await asyncio.wait({waiter, done_waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    done_waiter.cancel()
                continue
            now = time.monotonic()
            hold = max(self.queue[0].ready_at, self.stall_until) - now
            if self.paused or hold > 0:
                self.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), None if self.paused else hold)
                continue
            unit = self.queue.popleft()
            await self._transmit(dst, unit.data)
            self.queued_bytes -= len(unit.data)
            if self.queued_bytes <= self.limit():
                self.space.set()
            if unit.is_frame:
                self.stats.frames_out += 1

    async def _transmit(self, dst: asyncio.StreamWriter, data: bytes) -> None:
        baud = self.baud()
        if not baud:
            dst.write(data)
            self.stats.bytes_out += len(data)
            await dst.drain()
            return
        byte_time = 10.0 / baud
        # slices of ~10 ms of line time, each written when the line would have sent its last bit
        step = max(1, int(0.01 / byte_time))
        for i in range(0, len(data), step):
            piece = data[i:i + step]
            now = time.monotonic()
            # The line's schedule is absolute while it stays busy: a sleep that wakes late (the
            # event loop's timers count milliseconds) must not add its lateness to the line time,
            # or every slice would lose it (5% of a 115200 line). Only a gap longer than
            # IDLE_SLACK is the line standing idle.
            if now - self.line_free > IDLE_SLACK:
                self.line_free = now
            self.line_free += len(piece) * byte_time
            delay = self.line_free - now
            if delay > 0:
                await asyncio.sleep(delay)
            dst.write(piece)
            self.stats.bytes_out += len(piece)
            await dst.drain()


class LineShim:
    """See the module docstring. ``upstream_port`` is pyslirp's line port (the shim connects
    there once the VM connects to ``port``)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", *,
                 listen_host: str = "127.0.0.1", listen_port: int = 0,
                 baud: float | None = None, baud_up: float | None = None,
                 baud_down: float | None = None, latency: float = 0.0, seed: int = 0,
                 queue_limit: int = 4096, flush_after: float = 0.1, max_frame: int = 65536,
                 record: bool = False, record_limit: int = 100_000) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listen = (listen_host, listen_port)
        self.baud: dict[Direction, float | None] = {
            UP: baud_up if baud_up is not None else baud,
            DOWN: baud_down if baud_down is not None else baud}
        self.latency: dict[Direction, float] = {UP: latency, DOWN: latency}
        self.seed = seed
        self.rng = random.Random(seed)
        self.loss: dict[Direction, float] = {UP: 0.0, DOWN: 0.0}
        self.queue_limit = queue_limit
        self.flush_after = flush_after
        self.max_frame = max_frame
        self.stats: dict[Direction, DirStats] = {UP: DirStats(), DOWN: DirStats()}
        self.faults: list[Fault] = []
        self.taps: list[Callable[[Frame], None]] = []
        self.record = record
        self.record_limit = record_limit
        self.frames: dict[Direction, list[Frame]] = {UP: [], DOWN: []}
        self.connections = 0
        self.cuts = 0  # connections cut by cut() and reconnected
        self.close_flush_timeout = 10.0  # after one side closes, deliver its queued bytes
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.errors: list[str] = []
        self._server: asyncio.base_events.Server | None = None
        self._pipes: dict[Direction, list[_Pipe]] = {UP: [], DOWN: []}
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._frame_index: dict[Direction, int] = {UP: 0, DOWN: 0}
        self._stall_default: dict[Direction, float] = {UP: 0.0, DOWN: 0.0}
        self._paused: dict[Direction, bool] = {UP: False, DOWN: False}
        self._links: list[_Link] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, *self.listen)
        return self.port

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        for w in self._writers:
            w.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        # Connection handlers end once their relay tasks have; cancelling them instead would
        # make asyncio's start_server log the CancelledError.
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)
            for t in self._handlers:
                t.cancel()

    async def __aenter__(self) -> "LineShim":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_connected(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout)

    # -- line settings and faults ------------------------------------------------------------

    def set_baud(self, baud: float | None, direction: Direction | None = None) -> None:
        """Pace both directions (or one) at `baud` (10 bits/byte); None: no pacing."""
        for d in (UP, DOWN) if direction is None else (direction,):
            self.baud[d] = baud
            for p in self._pipes[d]:
                p.wake.set()
                if p.queued_bytes <= p.limit():
                    p.space.set()

    def set_latency(self, seconds: float, direction: Direction | None = None) -> None:
        for d in (UP, DOWN) if direction is None else (direction,):
            self.latency[d] = seconds

    def set_loss(self, direction: Direction | None, rate: float, seed: int | None = None) -> None:
        """Drop each frame with probability `rate` (0..1), from a Random(seed) stream."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within 0..1")
        for d in (UP, DOWN) if direction is None else (direction,):
            self.loss[d] = rate
        if seed is not None:
            self.rng = random.Random(seed)

    def drop(self, direction: Direction, count: int = 1, match: Match | None = None) -> Fault:
        """Drop the next `count` frames (that `match` accepts) going `direction`."""
        return self._add(Fault("drop", direction, count, match))

    def corrupt(self, direction: Direction, count: int = 1, match: Match | None = None,
                offset: int | None = None) -> Fault:
        """Flip bits in one byte of each of the next `count` frames: at `offset` within the
        stuffed frame if given, else at a seeded random position. The new byte is never a flag
        or an escape, so the frame keeps its length and framing and only its FCS fails."""
        return self._add(Fault("corrupt", direction, count, match, offset=offset))

    def delay(self, direction: Direction, seconds: float, count: int = 1,
              match: Match | None = None) -> Fault:
        """Hold the next `count` frames back `seconds` while later frames pass (reordering)."""
        return self._add(Fault("delay", direction, count, match, seconds=seconds))

    def stall(self, direction: Direction | None, seconds: float) -> None:
        """Send nothing `direction` for `seconds`; what arrives meanwhile waits, in order."""
        until = time.monotonic() + seconds
        for d in (UP, DOWN) if direction is None else (direction,):
            for p in self._pipes[d]:
                p.stall_until = max(p.stall_until, until)
                p.wake.set()
            self._stall_default[d] = max(self._stall_default[d], until)

    def pause(self, direction: Direction | None = None) -> None:
        self._set_paused(direction, True)

    def resume(self, direction: Direction | None = None) -> None:
        self._set_paused(direction, False)

    def _set_paused(self, direction: Direction | None, value: bool) -> None:
        for d in (UP, DOWN) if direction is None else (direction,):
            self._paused[d] = value
            for p in self._pipes[d]:
                p.paused = value
                p.wake.set()

    def inject(self, direction: Direction, data: bytes) -> int:
        """Send raw ``data`` going ``direction``, between two frames (after what is queued, paced
        like the rest), neither split into frames nor faulted; counted in ``injected_bytes``.
        Returns how many connections it went to (0: no line connected yet)."""
        pipes = self._pipes[direction]
        for p in pipes:
            p.enqueue(bytes(data), False)
            self.stats[direction].injected_bytes += len(data)
        return len(pipes)

    async def cut(self, seconds: float) -> int:
        """Cut the line for ``seconds``: close the upstream connection (pyslirp sees its client
        hang up), drop what is queued and what either side sends meanwhile, then connect to the
        upstream again (pyslirp sees a new client). The client's connection (QEMU's) stays open
        throughout. Returns once every connection is relayed again (or has ended); the result is
        how many connections were cut."""
        links = list(self._links)
        for link in links:
            link.resumed.clear()
            link.cut_seconds = seconds
            link.cut_requested.set()
        if links:
            await asyncio.wait([asyncio.create_task(link.resumed.wait()) for link in links])
        return len(links)

    def clear_faults(self) -> None:
        self.faults.clear()
        self.loss = {UP: 0.0, DOWN: 0.0}

    def tap(self, fn: Callable[[Frame], None]) -> None:
        """Call fn(frame) for every frame as it comes in (before faults)."""
        self.taps.append(fn)

    def _add(self, fault: Fault) -> Fault:
        if fault.count < 1:
            raise ValueError("count must be >= 1")
        self.faults.append(fault)
        return fault

    def summary(self) -> dict[str, dict[str, int]]:
        return {d: s.as_dict() for d, s in self.stats.items()}

    # -- relay -------------------------------------------------------------------------------

    def _tune(self, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.baud[UP] or self.baud[DOWN]:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            try:
                s_reader, s_writer = await asyncio.open_connection(*self.upstream)
            except OSError as e:
                self.errors.append(f"connect to upstream {self.upstream}: {e}")
                c_writer.close()
                return
            for w in (c_writer, s_writer):
                self._tune(w)
            self._writers += [c_writer, s_writer]
            self.connections += 1
            self.connected.set()
            self.disconnected.clear()
            up, down = _Pipe(self, UP), _Pipe(self, DOWN)
            for p in (up, down):
                p.stall_until = self._stall_default[p.direction]
                p.paused = self._paused[p.direction]
                self._pipes[p.direction].append(p)
            up_done, down_done = asyncio.Event(), asyncio.Event()
            link = _Link()
            self._links.append(link)

            async def read(p: _Pipe, r: asyncio.StreamReader, done: asyncio.Event) -> None:
                try:
                    await p.reader(r)
                except (ConnectionError, OSError):
                    pass
                finally:
                    done.set()

            async def write(p: _Pipe, w: asyncio.StreamWriter, done: asyncio.Event) -> None:
                try:
                    await p.writer(w, done)
                    if w.can_write_eof():
                        w.write_eof()
                except (ConnectionError, OSError):
                    pass

            def start(*coros: Coroutine[object, object, None]) -> list[asyncio.Task[None]]:
                started = [asyncio.create_task(c) for c in coros]
                self._tasks.update(started)
                tasks.extend(started)
                return started

            tasks: list[asyncio.Task[None]] = []
            client_reader, client_writer = start(read(up, c_reader, up_done), write(down, c_writer, down_done))
            # the upstream's reader tells the client's writer that the upstream closed, unless a
            # cut closed it
            upstream_reader, upstream_writer = start(read(down, s_reader, asyncio.Event()),
                                                     write(up, s_writer, up_done))
            try:
                while True:
                    cut = asyncio.create_task(link.cut_requested.wait())
                    await asyncio.wait({client_reader, upstream_reader, cut},
                                       return_when=asyncio.FIRST_COMPLETED)
                    cut.cancel()
                    if client_reader.done() or upstream_reader.done():
                        break
                    link.cut_requested.clear()
                    for t in (upstream_reader, upstream_writer):
                        t.cancel()
                        with contextlib.suppress(BaseException):
                            await t
                    s_writer.close()
                    up.discard()
                    down.discard()
                    await asyncio.wait({client_reader}, timeout=link.cut_seconds)
                    while not client_reader.done():
                        try:
                            s_reader, s_writer = await asyncio.open_connection(*self.upstream)
                            break
                        except OSError as e:
                            self.errors.append(f"reconnect to upstream {self.upstream}: {e}")
                            await asyncio.wait({client_reader}, timeout=0.5)
                    if client_reader.done():
                        break
                    self._tune(s_writer)
                    self._writers.append(s_writer)
                    up.restore()
                    down.restore()
                    upstream_reader, upstream_writer = start(read(down, s_reader, asyncio.Event()),
                                                             write(up, s_writer, up_done))
                    self.cuts += 1
                    if not link.cut_requested.is_set():
                        link.resumed.set()
                # When either side closes, deliver what is queued its way, then close both.
                if client_reader.done():
                    flush = upstream_writer
                else:
                    down_done.set()
                    flush = client_writer
                await asyncio.wait({flush}, timeout=self.close_flush_timeout)
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(BaseException):
                        await t
                    self._tasks.discard(t)
                for w in (c_writer, s_writer):
                    w.close()
                for p in (up, down):
                    self._pipes[p.direction].remove(p)
                self._links.remove(link)
                link.resumed.set()
                if not self._pipes[UP]:
                    self.disconnected.set()
        finally:
            self._handlers.discard(task)

    def _on_frame(self, pipe: _Pipe, body: bytes) -> None:
        d = pipe.direction
        st = self.stats[d]
        st.frames_in += 1
        frame = Frame(body, d, self._frame_index[d])
        self._frame_index[d] += 1
        if self.record and len(self.frames[d]) < self.record_limit:
            self.frames[d].append(frame)
        for fn in self.taps:
            fn(frame)
        if pipe.discarding:
            st.cut_bytes += len(body) + 1
            return
        delay = 0.0
        for fault in self.faults:
            if not fault.active or fault.direction != d:
                continue
            if fault.match is not None and not fault.match(frame):
                continue
            fault.hits += 1
            if not fault.active:
                fault.done.set()
            if fault.action == "drop":
                st.dropped += 1
                pipe.enqueue(b"\x7e", False)  # keep the closing flag
                return
            if fault.action == "corrupt":
                body = self._corrupt(body, fault.offset)
                st.corrupted += 1
            elif fault.action == "delay":
                delay = max(delay, fault.seconds)
                st.delayed += 1
        self.faults = [f for f in self.faults if f.active]
        if self.loss[d] and self.rng.random() < self.loss[d]:
            st.dropped += 1
            st.dropped_random += 1
            pipe.enqueue(b"\x7e", False)
            return
        pipe.enqueue(body + b"\x7e", True, delay)

    def _corrupt(self, body: bytes, offset: int | None) -> bytes:
        candidates = [i for i, b in enumerate(body)
                      if b != ESC and (i == 0 or body[i - 1] != ESC)]
        if not candidates:
            return body
        if offset is None:
            i = self.rng.choice(candidates)
        else:
            i = min(candidates, key=lambda j: abs(j - offset))
        b = body[i]
        for mask in (0x01, 0x02, 0x04, 0x08, 0x10, 0x40, 0x80):
            nb = b ^ mask
            if nb not in (FLAG, ESC):
                break
        return body[:i] + bytes([nb]) + body[i + 1:]
