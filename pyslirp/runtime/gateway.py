"""The gateway: joins one line session, the HDLC framing, the PPP link and the network stack.

Bytes from the line go through the compiled deframer to :class:`PPPLink`; the IPv4 datagrams it
yields go to the stack. What the link and the stack produce is framed and queued on the
:class:`LineScheduler`. Time comes from the event loop's monotonic clock and is passed in; one
timer handle is kept at the earliest deadline of the link and the stack.

When the link goes down while the session stays (a serial port, or a client that renegotiates),
a fresh link is started on the same session; when the session hangs up, the gateway returns and the
server waits for the next one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Callable, Protocol

from pyslirp._core.hdlc import Deframer, encode_frame
from pyslirp.ppp import link as ppp_link
from pyslirp.ppp.link import LinkOptions, PPPLink
from pyslirp.runtime.lines import LineSession
from pyslirp.runtime.scheduler import LineScheduler, Priority
from pyslirp.runtime.timing import ProcessingTimes

log = logging.getLogger(__name__)
security_log = logging.getLogger("pyslirp.security")



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
    def close(self) -> None: ...


class Gateway:
    """Runs PPP links over one line session until it hangs up."""

    def __init__(
        self,
        session: LineSession,
        options: LinkOptions,
        stack_factory: Callable[[ppp_link.LinkUp, Callable[[], None]], Network],
        rate: int | None = None,
    ) -> None:
        self.session = session
        self.options = options
        self.stack_factory = stack_factory
        self.scheduler = LineScheduler(session, rate=rate)
        # The receive map is the one we ask the client for, from the start. Until LCP opens the
        # client escapes every control character anyway, so this only matters for stray
        # characters; and it avoids losing frames that follow LCP Opened in the same read, which a
        # switch from the default map at Opened would (RFC 1662 §7.1 lets the map change there).
        self.deframer = Deframer(accm=options.accm, max_frame=max(4096, options.mru + 64))
        self._loop = asyncio.get_running_loop()
        self._rng = random.SystemRandom()
        self.link = PPPLink(options, self._loop.time(), rng=self._rng)
        self.stack: Network | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None  # uvloop's handles don't expose when()
        self._deframe_errors = 0
        self._flush_pending = False
        self.links_started = 0
        #: time from a frame's arrival to its answer being queued; and per datagram a service sent
        self.rx_times = ProcessingTimes()
        self.tx_times = ProcessingTimes()

    # -- driving -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the session until the client hangs up."""
        writer = asyncio.create_task(self.scheduler.run(), name=f"line writer {self.session.name}")
        try:
            self._start_link()
            await self.session.pump(self._receive)
            log.info("%s: line hung up", self.session.name)
        finally:
            self.log_stats()
            self._cancel_timer()
            self.link.line_down(self._loop.time())
            self._handle_link_events()
            self._stop_stack()
            self.scheduler.close()
            writer.cancel()
            self.session.close()

    def stats(self) -> dict[str, object]:
        """Every counter of this session, by layer."""
        stats: dict[str, object] = {
            "line": self.session.name,
            "line_reads": dict(getattr(self.session, "counters", {})),
            "deframer": self.deframer.counters(),
            "link": self.link.counters(),
            "scheduler": {
                **self.scheduler.counters,
                **{f"queued_{p.name.lower()}": self.scheduler.queued(p) for p in Priority},
            },
            "processing": {"rx_frame": self.rx_times.stats(), "tx_datagram": self.tx_times.stats()},
        }
        network_stats = getattr(self.stack, "stats", None)
        if network_stats is not None:
            stats["network"] = network_stats()
        return stats

    def log_stats(self) -> None:
        log.info("stats: %s", json.dumps(self.stats(), sort_keys=True))

    def _start_link(self) -> None:
        self.links_started += 1
        if self.links_started > 1:
            self.link = PPPLink(self.options, self._loop.time(), rng=self._rng)
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
            link.frame_error()  # a damaged frame: VJ must resynchronise (RFC 1144 §4.3)
        stack = self.stack
        for frame in frames:
            packet = link.receive_frame(frame, now)
            if packet is not None and stack is not None:
                stack.receive(packet, now)
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
        if self.stack is not None:
            self.stack.handle_timer(now)
        self._flush()

    def _flush(self) -> int:
        """Frame and queue what the link and the stack produced, act on events, re-arm the timer;
        return how many datagrams went to the line."""
        sent = 0
        link = self.link
        for frame, accm in link.take_output():
            self.scheduler.send(encode_frame(frame, accm), Priority.CONTROL)
        self._handle_link_events()
        if self.stack is not None:
            tx_accm = link.tx_accm
            for packet, interactive in self.stack.take_output():
                priority = Priority.INTERACTIVE if interactive else Priority.BULK
                # A full bulk queue drops the datagram here, before VJ compresses it: the
                # compressor's slot moves on with every frame it encodes, so a compressed frame
                # dropped after encoding would leave the peer's decompressor a segment behind, and
                # every later header of that connection would be rebuilt wrong (bad TCP checksum)
                # until an RTO retransmission went uncompressed (RFC 1144 §4.1).
                if priority is Priority.BULK and self.scheduler.bulk_room() < _max_encoded_size(len(packet)):
                    self.scheduler.counters["bulk_dropped"] += 1
                    continue
                frame = link.encode_datagram(packet)
                if frame is not None:
                    self.scheduler.send(encode_frame(frame, tx_accm), priority)
                    sent += 1
            now = self._loop.time()
            self.session.batch_reads = not self.stack.interactive(now)
            self.session.read_rest = self.stack.read_rest(now)
        self.scheduler.kick()
        self._arm_timer()
        return sent

    def _handle_link_events(self) -> None:
        for event in self.link.events():
            if isinstance(event, ppp_link.LinkUp):
                log.info("%s: link up: we are %s, the client is %s", self.session.name, event.local_ip, event.peer_ip)
                self._stop_stack()
                self.stack = self.stack_factory(event, self.request_flush)
            elif isinstance(event, ppp_link.NetworkDown):
                log.info("%s: IPCP down", self.session.name)
                self._stop_stack()
            elif isinstance(event, ppp_link.LinkDown):
                log.info("%s: link down: %s", self.session.name, event.reason)
                self._stop_stack()
                self._restart_soon()
            elif isinstance(event, ppp_link.AuthFailed):
                security_log.warning(
                    "%s: authentication failed: user %r method %s: %s",
                    self.session.name, event.user, event.method, event.reason,
                )
            elif isinstance(event, ppp_link.AuthSucceeded):
                again = ", re-challenge" if event.rechallenge else ""
                security_log.info("%s: authenticated user %r (%s%s)", self.session.name, event.user, event.method, again)
            else:
                log.info("%s: %s", self.session.name, event)

    def _restart_soon(self) -> None:
        # The client may redial on the same session (a serial port never hangs up); give it a
        # fresh negotiation after a pause, so a terminating peer can finish hanging up first.
        self._loop.call_later(1.0, self._restart_if_idle)

    def _restart_if_idle(self) -> None:
        if self.scheduler.closed:
            return
        self._start_link()

    def _stop_stack(self) -> None:
        if self.stack is not None:
            self.stack.close()
            self.stack = None

    def _arm_timer(self) -> None:
        due = self.link.next_deadline()
        if self.stack is not None:
            stack_due = self.stack.next_deadline()
            if stack_due is not None and (due is None or stack_due < due):
                due = stack_due
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
