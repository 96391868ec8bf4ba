"""Unit tests of the line shim (no QEMU needed): relay, counts, faults, pacing."""

from __future__ import annotations

import asyncio
import time

import pytest

from shim import DOWN, UP, Frame, LineShim, fcs16, split_frames, unstuff

def hdlc(payload: bytes) -> bytes:
    """A frame with FCS, every control character escaped (ACCM 0xffffffff), closing flag only."""
    fcs = fcs16(payload) ^ 0xFFFF
    body = payload + bytes([fcs & 0xFF, fcs >> 8])
    out = bytearray()
    for b in body:
        if b in (0x7E, 0x7D) or b < 0x20:
            out += bytes([0x7D, b ^ 0x20])
        else:
            out.append(b)
    return bytes(out) + b"\x7e"


def lcp(ident: int, extra: bytes = b"") -> bytes:
    opts = bytes([5, 6, 0x12, 0x34, 0x56, ident]) + extra  # magic number
    return b"\xff\x03\xc0\x21" + bytes([1, ident]) + (4 + len(opts)).to_bytes(2, "big") + opts


class Upstream:
    """Stands in for pyslirp: records what arrives, can send back."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.arrivals: list[tuple[float, int]] = []  # (time, total bytes so far)
        self.writer: asyncio.StreamWriter | None = None
        self.connections = 0
        self.connected = asyncio.Event()
        self.eof = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.writer = w
        self.connections += 1
        self.connected.set()
        while chunk := await r.read(65536):
            self.data += chunk
            self.arrivals.append((time.monotonic(), len(self.data)))
        self.eof.set()

    async def wait_bytes(self, n: int, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while len(self.data) < n:
            if time.monotonic() > end:
                raise AssertionError(f"only {len(self.data)} of {n} bytes arrived: {bytes(self.data)!r}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self.writer:
            self.writer.close()
        if self.server:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def link():  # type: ignore[no-untyped-def]
    """(upstream, shim factory) — the factory starts a shim and connects a client to it."""
    up = Upstream()
    port = await up.start()
    made: list[tuple[LineShim, asyncio.StreamWriter]] = []

    async def make(**kw):  # type: ignore[no-untyped-def]
        shim = LineShim(upstream_port=port, **kw)
        await shim.start()
        r, w = await asyncio.open_connection("127.0.0.1", shim.port)
        await shim.wait_connected(5)
        await asyncio.wait_for(up.connected.wait(), 5)
        made.append((shim, w))
        return shim, r, w

    yield up, make
    for shim, w in made:
        w.close()
        await shim.close()
    await up.close()


def test_fcs16_check_value() -> None:
    # CRC-16/X-25 (the PPP FCS) of "123456789" is 0x906E (RFC 1662 FCS, complemented).
    assert fcs16(b"123456789") ^ 0xFFFF == 0x906E
    f = Frame(hdlc(lcp(1))[:-1], UP, 0)
    assert f.fcs_ok and f.protocol == 0xC021 and f.info[0] == 1
    assert unstuff(b"\x7d\x5e\x7d\x5d\x7d\x23") == b"\x7e\x7d\x03"


async def test_relay_counts_both_directions(link) -> None:  # type: ignore[no-untyped-def]
    up, make = link
    shim, r, w = await make()
    frames = [hdlc(lcp(i)) for i in range(10)]
    stream = b"\x7e" + b"".join(frames)
    w.write(stream)
    await up.wait_bytes(len(stream))
    assert bytes(up.data) == stream
    # and back down
    assert up.writer is not None
    up.writer.write(b"\x7e" + frames[0] + frames[1])
    got = await asyncio.wait_for(r.readexactly(1 + len(frames[0]) + len(frames[1])), 5)
    assert got == b"\x7e" + frames[0] + frames[1]
    s = shim.stats
    assert (s[UP].frames_in, s[UP].frames_out, s[UP].bytes_in, s[UP].bytes_out) == \
        (10, 10, len(stream), len(stream))
    assert s[UP].flag_bytes == 1
    assert (s[DOWN].frames_in, s[DOWN].frames_out) == (2, 2)
    assert shim.summary()[DOWN]["bytes_out"] == len(got)


async def test_drop_and_corrupt(link) -> None:  # type: ignore[no-untyped-def]
    up, make = link
    shim, r, w = await make(seed=7)
    drop = shim.drop(UP, match=lambda f: f.info[:2] == bytes([1, 3]))  # ConfReq id 3
    shim.corrupt(UP, count=2, match=lambda f: f.index >= 5)
    frames = [hdlc(lcp(i)) for i in range(8)]
    w.write(b"\x7e" + b"".join(frames))
    expected_len = 1 + sum(len(f) for f in frames) - (len(frames[3]) - 1)
    await up.wait_bytes(expected_len)
    await asyncio.sleep(0.05)
    assert len(up.data) == expected_len
    assert drop.done.is_set()
    got = [Frame(b, UP, i) for i, b in enumerate(split_frames(bytes(up.data)))]
    ids = [f.data[5] for f in got]
    assert ids == [0, 1, 2, 4, 5, 6, 7]
    assert [f.fcs_ok for f in got] == [True, True, True, True, False, False, True]
    # corruption keeps the frame's length (no flag or escape was made)
    assert [len(f.raw) for f in got] == [len(frames[i]) - 1 for i in (0, 1, 2, 4, 5, 6, 7)]
    s = shim.stats[UP]
    assert (s.frames_in, s.frames_out, s.dropped, s.corrupted) == (8, 7, 1, 2)


async def test_corrupt_at_offset(link) -> None:  # type: ignore[no-untyped-def]
    up, make = link
    shim, r, w = await make()
    f = hdlc(lcp(9))
    at = f.index(b"\x34")  # inside the magic number: not an escape, not escaped
    shim.corrupt(UP, offset=at, match=lambda fr: fr.index == 0)
    # on the escape 0x7D of the control field: moves to a byte next to it
    shim.corrupt(UP, offset=1, match=lambda fr: fr.index == 1)
    w.write(f + f)
    await up.wait_bytes(2 * len(f))
    diff = [i for i in range(len(f)) if f[i] != up.data[i]]
    assert diff == [at]
    diff2 = [i for i in range(len(f)) if f[i] != up.data[len(f) + i]]
    assert len(diff2) == 1 and diff2[0] in (0, 3)


async def test_random_loss_is_seeded(link) -> None:  # type: ignore[no-untyped-def]
    up, make = link
    outcomes = []
    for _ in range(2):
        shim, r, w = await make()
        shim.set_loss(UP, 0.5, seed=42)
        n0 = len(up.data)
        frames = [hdlc(lcp(i % 250)) for i in range(200)]
        w.write(b"".join(frames))
        end = time.monotonic() + 5
        while shim.stats[UP].frames_in < 200 and time.monotonic() < end:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        kept = shim.stats[UP].frames_out
        assert len(up.data) - n0 == shim.stats[UP].bytes_out
        got = split_frames(bytes(up.data[n0:]))
        assert len(got) == kept
        outcomes.append([Frame(b, UP, 0).data[5] for b in got])
        assert shim.stats[UP].dropped_random == 200 - kept
        assert 60 < shim.stats[UP].dropped < 140
        w.close()
    assert outcomes[0] == outcomes[1]


async def test_delay_reorders(link) -> None:  # type: ignore[no-untyped-def]
    up, make = link
    shim, r, w = await make()
    shim.delay(UP, 0.3, match=lambda f: f.index == 0)
    a, b = hdlc(lcp(1)), hdlc(lcp(2))
    t0 = time.monotonic()
    w.write(a + b)
    await up.wait_bytes(len(a) + len(b))
    assert bytes(up.data) == b + a
    assert up.arrivals[-1][0] - t0 >= 0.25
    assert shim.stats[UP].delayed == 1


async def test_stall_keeps_order(link) -> None:  # type: ignore[no-untyped-def]
    up, make = link
    shim, r, w = await make()
    assert up.writer is not None
    shim.stall(DOWN, 0.4)
    t0 = time.monotonic()
    payload = hdlc(lcp(1)) + hdlc(lcp(2)) + hdlc(lcp(3))
    up.writer.write(payload)
    got = await asyncio.wait_for(r.readexactly(len(payload)), 5)
    assert got == payload
    assert time.monotonic() - t0 >= 0.35


async def test_pacing(link) -> None:  # type: ignore[no-untyped-def]
    up, make = link
    shim, r, w = await make(baud=9600)
    # 960 bytes at 9600 baud, 10 bits a byte: one second of line time
    frames = []
    while sum(map(len, frames)) < 960:
        frames.append(hdlc(b"\xff\x03\x00\x21" + bytes(range(32, 32 + 80))))
    data = b"".join(frames)[:960]
    data = data[:data.rindex(b"\x7e") + 1]
    t0 = time.monotonic()
    w.write(data)
    await up.wait_bytes(len(data))
    elapsed = time.monotonic() - t0
    line_time = len(data) * 10 / 9600
    assert elapsed >= line_time * 0.9, (elapsed, line_time)
    assert elapsed < line_time + 2.0, (elapsed, line_time)
    # bytes trickle in, not in one burst at the end
    assert len(up.arrivals) >= 10


async def test_junk_is_flushed_unfaulted(link) -> None:  # type: ignore[no-untyped-def]
    up, make = link
    shim, r, w = await make(flush_after=0.05)
    shim.drop(UP)
    w.write(b"ATZ\r")
    await up.wait_bytes(4)
    assert bytes(up.data) == b"ATZ\r"
    assert shim.stats[UP].junk_bytes == 4 and shim.stats[UP].dropped == 0
    f = hdlc(lcp(1))
    w.write(b"\x7e" + f)
    await up.wait_bytes(5)  # only the flag: the frame was dropped
    await asyncio.sleep(0.1)
    assert bytes(up.data) == b"ATZ\r\x7e\x7e"


async def test_close_propagates(link) -> None:  # type: ignore[no-untyped-def]
    up, make = link
    shim, r, w = await make()
    w.write(hdlc(lcp(1)))
    w.close()
    await asyncio.wait_for(up.eof.wait(), 5)
    await asyncio.wait_for(shim.disconnected.wait(), 5)
    assert shim.stats[UP].frames_out == 1


async def test_cut_hangs_up_drops_meanwhile_and_reconnects(link) -> None:  # type: ignore[no-untyped-def]
    up, make = link
    shim, r, w = await make()
    before, during, after, answer = hdlc(lcp(1)), hdlc(lcp(2)), hdlc(lcp(3)), hdlc(lcp(4))
    w.write(before)
    await up.wait_bytes(len(before))
    cut = asyncio.create_task(shim.cut(1.0))
    await asyncio.wait_for(up.eof.wait(), 5)  # the upstream saw its client hang up
    w.write(during)
    assert await asyncio.wait_for(cut, 5) == 1
    assert up.connections == 2 and shim.connections == 1 and shim.cuts == 1
    w.write(after)
    await up.wait_bytes(len(before) + len(after))
    assert bytes(up.data) == before + after
    assert up.writer is not None
    up.writer.write(answer)  # the new upstream connection reaches the client, still connected
    assert await asyncio.wait_for(r.readexactly(len(answer)), 5) == answer
    assert shim.stats[UP].cut_bytes == len(during)
