"""The gateway: joins one line session, the HDLC framing, the PPP link and the network stack.

Bytes from the line go through the compiled deframer to :class:`PPPLink`; the IPv4 datagrams it
yields go to the stack. What the link and the stack produce is framed and queued on the
:class:`LineScheduler`. Time comes from the event loop's monotonic clock and is passed in; one
timer handle is kept at the earliest deadline of the link and the stack.

The gateway owns its link for the whole session: when the link goes down while the session stays
(a serial port, or a client that renegotiates), the same :class:`PPPLink` negotiates afresh (its
counters carry on); when the session hangs up, the gateway returns and the server waits for the
next one.

What happens on the link goes to the :class:`~pyslirp.runtime.observers.Observers` it is given
(logging, and later metrics and the audit log); every frame each way passes the attached
:class:`~pyslirp.runtime.observers.FrameTap` objects, if any.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Callable, Protocol

from pyslirp._core.hdlc import Deframer, encode_frame
from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.ppp.link import LINK_COUNTERS, LinkDown, LinkOptions, LinkUp, NetworkDown, Phase, PPPLink
from pyslirp.runtime.counter_registry import CounterRegistry
from pyslirp.runtime.lines import LINE_COUNTERS, LineSession
from pyslirp.runtime.observers import Direction, FrameTap, LogObserver, Observers
from pyslirp.runtime.peer_pool import AddressLease
from pyslirp.runtime.scheduler import BULK, CONTROL, INTERACTIVE, SCHEDULER_COUNTERS, LineScheduler, Priority
from pyslirp.runtime.settings import deframer_max_frame
from pyslirp.runtime.timing import ProcessingTimes

log = logging.getLogger(__name__)

#: the compiled deframer's counters (``Deframer.counters()``)
DEFRAMER_COUNTERS = CounterSet("deframer", [
    CounterSpec("frames_ok", "frames received with a good FCS"),
    CounterSpec(
        "frames_dropped", "frames dropped by the deframer, by reason",
        reasons=("bad_fcs", "too_short", "too_long", "aborted"), prefix="",
    ),
    CounterSpec("bytes_in", "bytes read from the line", unit="bytes"),
    CounterSpec("bytes_out", "bytes of frames delivered, unstuffed", unit="bytes"),
    CounterSpec("hunt_bytes", "bytes skipped while hunting for a flag", unit="bytes"),
    CounterSpec("ctrl_ignored", "control characters the ACCM deleted"),
])


def _max_encoded_size(datagram_size: int) -> int:
    """The most bytes a datagram can take on the line: address, control, protocol and FCS
    added, every octet stuffed, two flags (VJ compression only makes it shorter)."""
    return 2 * (datagram_size + 6) + 2


class Network(Protocol):
    """What the gateway drives on a link that is up (the stack with the proxy on it)."""

    def receive(self, packet: bytes, now: float) -> None: ...
    def take_output(self) -> list[tuple[bytes, bool]]: ...
    def interactive(self, now: float) -> bool: ...
    def read_rest(self, now: float) -> float: ...
    def next_deadline(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def open_reverse(self, peer_port: int, label: str) -> asyncio.Protocol: ...
    def stop_accepting(self) -> None: ...
    def open_flows(self) -> int: ...
    def close(self) -> None: ...


#: how long a shutdown waits for the client's Terminate-Ack (pppd answers at once; RFC 1661's
#: restart timer is 3 s)
TERMINATE_WAIT = 3.0
SHUTDOWN_POLL = 0.05

#: builds the network of a link that came up; the callable it is given asks for a flush
NetworkFactory = Callable[[LinkUp, Callable[[], None]], Network]


class Gateway:
    """Runs PPP links over one line session until it hangs up."""

    def __init__(
        self,
        session: LineSession,
        options: LinkOptions,
        network_factory: NetworkFactory,
        rate: int | None = None,
        observers: Observers | None = None,
        registry: CounterRegistry | None = None,
        login_refusal: Callable[[str], str | None] = lambda line: None,
        name: str | None = None,
        lease: AddressLease | None = None,
    ) -> None:
        self.session = session
        #: the line as logs, observers and the audit log name it (default: the session's name)
        self.name = name if name is not None else session.name
        #: the client's address from the pool, leased at each network phase and returned at
        #: each link down; None: the options' peer_ip
        self.lease = lease
        self.options = options
        self.network_factory = network_factory
        self.observers = observers if observers is not None else Observers(LogObserver())
        self.registry = registry if registry is not None else CounterRegistry()
        self.scheduler = LineScheduler(session, rate=rate)
        # The receive map is the one we ask the client for, from the start. Until LCP opens the
        # client escapes every control character anyway, so this only matters for stray
        # characters; and it avoids losing frames that follow LCP Opened in the same read, which a
        # switch from the default map at Opened would (RFC 1662 §7.1 lets the map change there).
        self.deframer = Deframer(accm=options.lcp.accm, max_frame=deframer_max_frame(options.lcp.mru))
        self._loop = asyncio.get_running_loop()
        self.link = PPPLink(options)
        self.link.login_refusal = lambda: login_refusal(self.name)
        if lease is not None:
            self.link.peer_address = lease.acquire
        #: the network of the link that is up (the stack with the proxy on it), else None
        self.network: Network | None = None
        self._taps: tuple[FrameTap, ...] = ()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None  # uvloop's handles don't expose when()
        self._deframe_errors = 0
        self._flush_pending = False
        self.links_started = 0
        #: shutting down: a link that ends is not negotiated again
        self.closing = False
        #: time from a frame's arrival to its answer being queued; and per datagram a service sent
        self.rx_times = ProcessingTimes()
        self.tx_times = ProcessingTimes()

    # -- driving -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the session until the client hangs up."""
        writer = asyncio.create_task(self.scheduler.run(), name=f"line writer {self.name}")
        registrations = [
            self.registry.attach(DEFRAMER_COUNTERS, self.deframer.counters, line=self.name),
            self.registry.attach(LINK_COUNTERS, self.link.counters, line=self.name),
            self.registry.attach(SCHEDULER_COUNTERS, self.scheduler.counters, line=self.name),
        ]
        if isinstance(getattr(self.session, "counters", None), dict):
            registrations.append(
                self.registry.attach(LINE_COUNTERS, self.session.counters, line=self.name)  # type: ignore[attr-defined]
            )
        try:
            self._start_link()
            await self.session.pump(self._receive)
            log.info("%s: line hung up", self.name)
        finally:
            log.info("%s: session ended: %s", self.name, json.dumps(self.stats(), sort_keys=True))
            self._cancel_timer()
            self.link.line_down(self._loop.time())
            self._handle_link_events()
            self._stop_network()
            self.scheduler.close()
            writer.cancel()
            self.session.close()
            if self.lease is not None:
                self.lease.release()
            for registration in registrations:
                self.registry.detach(registration)

    async def shutdown(self, grace: float, terminate_wait: float = TERMINATE_WAIT) -> None:
        """End the session politely (SIGTERM): refuse new flows, give the open ones up to
        ``grace`` seconds to finish, then close the link with LCP Terminate-Request (RFC 1661
        §3.7) and wait up to ``terminate_wait`` seconds for the Ack. The caller then ends the
        session; what is still open is reset then."""
        self.closing = True
        network = self.network
        deadline = self._loop.time() + grace
        if network is not None:
            network.stop_accepting()
            while network is self.network and network.open_flows() and self._loop.time() < deadline:
                await asyncio.sleep(SHUTDOWN_POLL)
            if network is self.network and network.open_flows():
                log.info("%s: %d flows still open after %.0f s; closing them", self.name,
                         network.open_flows(), grace)
        self.link.close("shutdown", self._loop.time())
        self._flush()
        deadline = self._loop.time() + terminate_wait
        while self.link.phase is not Phase.DEAD and self._loop.time() < deadline:
            await asyncio.sleep(SHUTDOWN_POLL)
        await self.scheduler.drain(max(0.0, deadline - self._loop.time()))

    def stats(self) -> dict[str, object]:
        """This session's state beyond its counters (those are in the registry): queues, per-frame
        processing times, and the network's connections and buffers."""
        stats: dict[str, object] = {
            "line": self.name,
            "queued": {p.name.lower(): self.scheduler.queued(p) for p in Priority},
            "processing": {"rx_frame": self.rx_times.stats(), "tx_datagram": self.tx_times.stats()},
        }
        network_state = getattr(self.network, "state", None)  # a test's stand-in may have none
        if network_state is not None:
            stats["network"] = network_state()
        return stats

    def attach_tap(self, tap: FrameTap) -> None:
        """Show ``tap`` every frame from now on, each way."""
        self._taps = (*self._taps, tap)

    def detach_tap(self, tap: FrameTap) -> None:
        self._taps = tuple(t for t in self._taps if t is not tap)

    def open_reverse(self, peer_port: int, label: str) -> asyncio.Protocol | None:
        """A reverse forward's host client connects: a protocol that pipes it to the client's
        ``peer_port``, or None when no link is up."""
        return self.network.open_reverse(peer_port, label) if self.network is not None else None

    def _start_link(self) -> None:
        self.links_started += 1
        self.link.open(self._loop.time())
        self._flush()

    def _receive(self, data: bytes) -> None:
        started = time.perf_counter()
        now = self._loop.time()
        link = self.link
        frames = self.deframer.feed(data)
        errors = self.deframer.bad_fcs + self.deframer.aborted + self.deframer.too_long
        if not frames and errors == self._deframe_errors:
            return  # part of a frame: nothing to act on yet
        if errors != self._deframe_errors:
            self._deframe_errors = errors
            link.frame_error()  # a damaged frame: VJ must resynchronise (RFC 1144 §4.2)
        network = self.network
        taps = self._taps
        for frame in frames:
            if taps:
                self._tap(Direction.RECEIVED, frame, now)
            packet = link.receive_frame(frame, now)
            if packet is not None and network is not None:
                network.receive(packet, now)
        self._flush()
        self.rx_times.add(time.perf_counter() - started, len(frames))

    def request_flush(self) -> None:
        """The stack has output that did not come from a received frame (a service sent data)."""
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        started = time.perf_counter()
        self._flush_pending = False
        sent = self._flush()
        self.tx_times.add(time.perf_counter() - started, sent)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._loop.time()
        self.link.handle_timer(now)
        if self.network is not None:
            self.network.handle_timer(now)
        self._flush()

    def _flush(self) -> int:
        """Frame and queue what the link and the network produced, act on events, re-arm the
        timer; return how many datagrams went to the line."""
        sent = 0
        link = self.link
        taps = self._taps
        for frame, accm in link.take_output():
            if taps:
                self._tap(Direction.SENT, frame, self._loop.time())
            self.scheduler.send(encode_frame(frame, accm), CONTROL)
        self._handle_link_events()
        network = self.network
        if network is not None:
            tx_accm = link.tx_accm
            for packet, interactive in network.take_output():
                priority = INTERACTIVE if interactive else BULK
                # A full bulk queue drops the datagram here, before VJ compresses it: the
                # compressor's slot moves on with every frame it encodes, so a compressed frame
                # dropped after encoding would leave the peer's decompressor a segment behind, and
                # every later header of that connection would be rebuilt wrong (bad TCP checksum)
                # until an RTO retransmission went uncompressed (RFC 1144 §4.1).
                if priority is BULK and self.scheduler.bulk_room() < _max_encoded_size(len(packet)):
                    self.scheduler.counters["bulk_dropped"] += 1
                    continue
                frame = link.encode_datagram(packet)
                if frame is not None:
                    if taps:
                        self._tap(Direction.SENT, frame, self._loop.time())
                    self.scheduler.send(encode_frame(frame, tx_accm), priority)
                    sent += 1
            now = self._loop.time()
            self.session.batch_reads = not network.interactive(now)
            self.session.read_rest = network.read_rest(now)
        self.scheduler.kick()
        self._arm_timer()
        return sent

    def _tap(self, direction: Direction, frame: bytes, now: float) -> None:
        for tap in self._taps:
            try:
                tap.frame(direction, frame, now)
            except Exception:  # a capture that fails must not take the line down
                log.exception("frame tap %s failed; detaching it", type(tap).__name__)
                self.detach_tap(tap)

    def _handle_link_events(self) -> None:
        line = self.name
        for event in self.link.events():
            # The gateway's own part: a network for each link that is up.
            if isinstance(event, LinkUp):
                self._stop_network()
                self.network = self.network_factory(event, self.request_flush)
            elif isinstance(event, (NetworkDown, LinkDown)):
                self._stop_network()
                if isinstance(event, LinkDown):
                    if self.lease is not None:
                        self.lease.release()  # a redial leases again
                    self._restart_soon()
            self.observers.link_event(line, event)

    def _restart_soon(self) -> None:
        # The client may redial on the same session (a serial port never hangs up); give it a
        # fresh negotiation after a pause, so a terminating peer can finish hanging up first.
        self._loop.call_later(1.0, self._restart_if_idle)

    def _restart_if_idle(self) -> None:
        if self.scheduler.closed or self.closing:
            return
        self._start_link()

    def _stop_network(self) -> None:
        if self.network is not None:
            self.network.close()
            self.network = None

    def _arm_timer(self) -> None:
        due = self.link.next_deadline()
        if self.network is not None:
            network_due = self.network.next_deadline()
            if network_due is not None and (due is None or network_due < due):
                due = network_due
        if due is None:
            return  # a timer already armed fires early and harmlessly, then re-arms
        if self._timer is not None:
            if due >= self._timer_due:  # type: ignore[operator]
                # Later deadlines (the retransmission timer moves with every ACK) keep the
                # armed timer: it fires early, finds nothing due, and re-arms. No cancel and
                # re-arm per ACK.
                return
            self._timer.cancel()
        self._timer_due = due
        self._timer = self._loop.call_at(due, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
