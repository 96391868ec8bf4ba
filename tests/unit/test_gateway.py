"""The gateway on a scripted line session: garbage never crashes it, and every drop is counted."""

from __future__ import annotations

import asyncio
import random

from pyslirp._core.hdlc import encode_frame
from pyslirp.ppp.lcp import LCPOptions
from pyslirp.ppp.link import LinkOptions
from pyslirp.runtime.gateway import Gateway
from pyslirp.runtime.lines import LineSession


class ScriptedSession(LineSession):
    """A line session whose incoming bytes the test supplies; what pyslirp writes is kept."""

    name = "scripted"
    native_rate = None

    def __init__(self, chunks: list[bytes]) -> None:
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        for chunk in chunks:
            self.incoming.put_nowait(chunk)
        self.incoming.put_nowait(b"")  # then hang up
        self.written = bytearray()

    async def read(self) -> bytes:
        await asyncio.sleep(0.001)  # a line delivers over time: let the writer run
        return await self.incoming.get()

    async def write(self, data: bytes) -> None:
        self.written += data

    def os_queued(self) -> int:
        return 0

    def close(self) -> None:
        pass


def no_network(*args: object) -> None:
    raise AssertionError("garbage must not bring IPCP up")


async def test_garbage_truncated_and_bad_fcs_frames_are_counted_not_fatal() -> None:
    rng = random.Random(7)
    good_lcp = encode_frame(b"\xff\x03\xc0\x21\x01\x01\x00\x04")  # an empty Configure-Request
    chunks = [
        bytes(rng.randrange(256) for _ in range(5000)),  # noise
        good_lcp[:-3] + b"\x7e",  # truncated frame: bad FCS
        b"\x7e\xff\x03\x7e",  # too short
        b"\x7e" + b"\x55" * 10000 + b"\x7e",  # too long for the MRU
        b"\x7e\xff\x03\xc0\x21\x7d\x7e",  # aborted
        good_lcp[:5] + bytes([good_lcp[5] ^ 0x01]) + good_lcp[6:],  # one bit flipped
    ]
    # the same stream again, split at random points
    stream = b"".join(chunks)
    cuts = sorted(rng.sample(range(1, len(stream)), 50))
    chunks += [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    session = ScriptedSession(chunks)
    gateway = Gateway(session, LinkOptions(lcp=LCPOptions(echo_interval=0)), no_network)
    await asyncio.wait_for(gateway.run(), 10)
    counters = gateway.deframer.counters()
    assert counters["bad_fcs"] >= 4
    assert counters["too_short"] >= 2
    assert counters["too_long"] >= 2
    assert counters["aborted"] >= 2
    assert session.written.startswith(b"\x7e")  # we still sent our LCP Configure-Request


class BulkOnlyNetwork:
    """A network on a slow line with a download running: its line budget asks for rests, until
    an interactive flow starts."""

    def __init__(self) -> None:
        self.typing = False

    def receive(self, packet: bytes, now: float) -> None: ...
    def take_output(self) -> list[tuple[bytes, bool]]:
        return []
    def interactive(self, now: float) -> bool:
        return self.typing
    def read_rest(self, now: float) -> float:
        return 0.0 if self.typing else 0.064
    def next_deadline(self) -> float | None:
        return None
    def handle_timer(self, now: float) -> None: ...
    def open_reverse(self, peer_port: int, label: str) -> asyncio.Protocol:
        raise AssertionError("no reverse forward in this test")
    def close(self) -> None: ...


async def test_each_flush_passes_the_budgets_read_rest_and_interactivity_to_the_line() -> None:
    session = ScriptedSession([])
    gateway = Gateway(session, LinkOptions(lcp=LCPOptions(echo_interval=0)), no_network)
    network = BulkOnlyNetwork()
    gateway.network = network
    gateway._flush()
    assert (session.batch_reads, session.read_rest) == (True, 0.064)
    network.typing = True
    gateway._flush()
    assert (session.batch_reads, session.read_rest) == (False, 0.0)
    gateway.scheduler.close()


async def test_shutdown_refuses_new_flows_waits_for_open_ones_then_terminates_the_link() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import datapath
    from pyslirp.net import tcp_types
    from pyslirp.ppp.link import Phase

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
        writer.close()

    service = await asyncio.start_server(echo, "127.0.0.1", 0)
    path = datapath.DataPath()
    await path.start(service.sockets[0].getsockname()[1])
    loop = asyncio.get_running_loop()
    held = await path.exchange(b"before the signal", close=False)
    shutdown = asyncio.ensure_future(path.gateway.shutdown(grace=5.0))
    await asyncio.sleep(0.2)
    late = path.connect()  # after the signal: refused at once
    while late.state != tcp_types.CLOSED:
        await asyncio.sleep(0.01)
    assert not shutdown.done() and path.gateway.link.phase is Phase.NETWORK  # the open one may finish
    held.close(loop.time())  # it does: FIN, and the service's FIN back
    path.flush_client()
    started = loop.time()
    await asyncio.wait_for(shutdown, 5)
    assert loop.time() - started < 2.0  # no wait for the rest of the grace
    assert path.ppp.terminated and path.gateway.link.phase is Phase.DEAD  # Terminate-Request, Ack
    counters = path.registry.snapshot()
    assert counters["proxy"]["refused_shutting_down"] == 1
    await asyncio.sleep(1.2)
    assert path.gateway.link.phase is Phase.DEAD  # not negotiated again
    await path.close()
    service.close()
