"""The pipe: one of the client's TCP connections joined to one host socket, with flow control.

Flow control, end to end and bounded:
  client -> host: we ``read`` from the TCP connection only while the socket's transport is below
    its high-water mark; what we don't read stays in the connection's bounded receive buffer and
    closes the advertised window.
  host -> client: we hand data to the connection's bounded send buffer; when it refuses some, we
    stop reading the socket (``pause_reading``) until ``SendSpace``.
FIN and RST are carried across: a host that closes its write side half-closes toward the client,
and a client FIN half-closes toward the host; a reset on either side resets the other.

The connection tells its stack itself when a call produced output (the stack sets its
``on_change`` hook), so the pipe only calls the connection. What happens to the pipe as a whole
(opened, closed and how) goes to its owner through :class:`PipeOwner`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Callable, MutableMapping, Protocol

from pyslirp.net import tcp, tcp_types

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
#: client data the sender did not push is gathered this long (or up to PUMP_BATCH bytes) before
#: one write to the host, rather than a write per segment
PUMP_DELAY = 0.001
PUMP_BATCH = 32 * 1024
#: the host socket's transport pauses us above this many unsent bytes
WRITE_HIGH_WATER = 64 * 1024
#: the host socket's kernel receive buffer, fixed: left to autotuning it grows to megabytes
#: while the line is slow, and the host's data piles up there instead of being held back
#: (a loopback service refills it in microseconds, so this does not limit the line's rate)
SOCKET_RECEIVE_BUFFER = 256 * 1024
_LINGER_RESET = struct.pack("ii", 1, 0)


class PipeOwner(Protocol):
    """What a pipe reports to: the clock, counters, and the end of the pipe."""

    counters: MutableMapping[str, int]
    now: Callable[[], float]

    def pipe_closed(self, pipe: "Pipe", outcome: str) -> None: ...

    def socket_closed(self, pipe: "Pipe") -> None:
        """The pipe's host socket is closed (its transport lost the connection)."""


class Pipe(asyncio.Protocol):
    """One client connection joined to one host socket (the socket's asyncio protocol)."""

    # One per held connection: no instance dictionary (about 150 bytes each).
    __slots__ = (
        "owner", "wait_established", "conn", "label", "transport", "pending", "to_host", "to_client", "closed",
        "last_activity", "_host_eof", "_host_paused", "_writing_paused", "_eof_sent", "_fin_queued", "_host_gone",
        "_pump_timer", "_prepared",
    )

    def __init__(
        self, owner: PipeOwner, conn: tcp.TCPConnection, label: str, *, wait_established: bool = False
    ) -> None:
        self.owner = owner
        self.wait_established = wait_established
        self.conn = conn
        self.label = label
        self.transport: asyncio.Transport | None = None
        #: host data the connection's send buffer refused
        self.pending = b""
        #: bytes moved each way
        self.to_host = 0
        self.to_client = 0
        self.closed = False
        self.last_activity = owner.now()
        self._host_eof = False
        self._host_paused = False  # we paused reading from the host
        self._writing_paused = False  # the host's transport asked us to stop writing
        self._eof_sent = False
        self._fin_queued = False
        self._host_gone = False
        self._pump_timer: asyncio.TimerHandle | None = None
        self._prepared = False  # the socket's receive buffer is set (see prepare)

    # -- the host socket side (asyncio.Protocol) -----------------------------------------------

    def prepare(self, sock: socket.socket) -> None:
        """Set up the connected host socket before it joins the event loop as this pipe's
        transport: the same as :meth:`connection_made` does through the transport, where uvloop
        hands out a stand-in socket object whose calls cost several times more. A socket that
        refuses is left to connection_made."""
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RECEIVE_BUFFER)
        except OSError:
            return
        self._prepared = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.closed:
            # The client reset or closed before the socket joined the loop. Whoever awaited
            # create_connection aborts the transport once it has returned, not here: under uvloop
            # an abort from within connection_made closes the descriptor before the loop has
            # taken the socket object over, and that object, left holding the number, closes it
            # again when collected, by then another connection's socket.
            transport.pause_reading()
            return
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if not self._prepared:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RECEIVE_BUFFER)
        if self.wait_established:
            # A reverse forward: hold the host client's data until the client side is open.
            self._host_paused = True
            transport.pause_reading()
        elif self.conn.readable or self.conn.at_eof:
            self.pump_to_host()  # what the client sent before the socket joined the loop

    def data_received(self, data: bytes) -> None:
        now = self.owner.now()
        self.last_activity = now
        if self.pending:
            self.pending += data
        else:
            taken = self.conn.send(data, now)
            self.to_client += taken
            if taken < len(data):
                self.pending = data[taken:]
        if self.pending and not self._host_paused and self.transport is not None:
            self._host_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._host_eof = True
        self._finish_to_client()
        return True  # keep our write side open: the client may still send (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        # the transport closes the socket as this returns (asyncio and uvloop alike)
        self.transport = None
        self._host_gone = True
        self.owner.socket_closed(self)
        if self.closed:
            return
        if exc is not None:
            log.debug("%s: host connection lost: %s", self.label, exc)
            self.fail("service_reset")
        else:
            self._host_eof = True
            self._finish_to_client()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self.pump_to_host()

    # -- the client connection side ------------------------------------------------------------

    def on_event(self, event: object) -> None:
        """An event of the client's connection."""
        if isinstance(event, tcp_types.DataReceived):
            if event.push or event.available >= PUMP_BATCH:
                self.pump_to_host()
            elif self._pump_timer is None:
                self._pump_timer = asyncio.get_running_loop().call_later(PUMP_DELAY, self.pump_to_host)
        elif isinstance(event, tcp_types.PeerFinished):
            self.pump_to_host()
        elif isinstance(event, tcp_types.SendSpace):
            self._push_pending()
        elif isinstance(event, tcp_types.Established):
            if self.transport is not None and self._host_paused and not self.pending:
                self._host_paused = False
                self.transport.resume_reading()
        elif isinstance(event, (tcp_types.Reset, tcp_types.Aborted)):
            outcome = "client_reset" if isinstance(event, tcp_types.Reset) else "client_aborted"
            self.owner.counters[outcome] += 1
            self._reset_host()
            self._done(outcome)
        elif isinstance(event, tcp_types.Closed):
            self._close_host()
            self._done("closed")

    def pump_to_host(self) -> None:
        """Move what the client sent to the host while its socket takes it."""
        self._cancel_pump()
        conn, transport = self.conn, self.transport
        if self._host_gone and conn.readable:
            # Data for a host that has closed its socket: a host answers that with a reset.
            self.fail("data_after_service_closed")
            return
        if transport is None or transport.is_closing():
            return
        now = self.owner.now()
        moved = 0
        while not self._writing_paused:
            data = conn.read(READ_CHUNK, now)
            if not data:
                break
            transport.write(data)
            moved += len(data)
        if moved:
            self.to_host += moved
            self.last_activity = now
        if conn.at_eof and not self._eof_sent and transport.can_write_eof():
            self._eof_sent = True
            transport.write_eof()  # the client's FIN: half-close toward the host

    def _push_pending(self) -> None:
        if self.pending:
            taken = self.conn.send(self.pending, self.owner.now())
            self.to_client += taken
            self.pending = self.pending[taken:]
        if not self.pending:
            if self._host_paused and self.transport is not None and not self.transport.is_closing():
                self._host_paused = False
                self.transport.resume_reading()
            self._finish_to_client()

    def _finish_to_client(self) -> None:
        if self._host_eof and not self.pending and not self._fin_queued:
            self._fin_queued = True
            self.conn.shutdown_write(self.owner.now())

    # -- ending --------------------------------------------------------------------------------

    def fail(self, outcome: str) -> None:
        """The host side failed (reset, or its socket could not join the loop): reset the client
        and end the pipe."""
        self.owner.counters[outcome] += 1
        self.conn.abort(self.owner.now())
        self._done(outcome)

    def idle_close(self) -> None:
        """Idle past the service's timeout: reset both sides."""
        log.info("%s: idle, closing", self.label)
        self.reset_both("idle_closed")

    def reset_both(self, outcome: str) -> None:
        """The gateway ends the connection (idle, or no longer allowed): reset both sides."""
        self.owner.counters[outcome] += 1
        self.conn.abort(self.owner.now())
        self._reset_host()
        self._done(outcome)

    def abandon(self) -> str | None:
        """The link is gone; the owner is not told. What the client sent and we acknowledged
        still goes to the host. Then the host socket gets FIN if the connection was complete
        (the client had everything the host sent), else RST once that is written. Which of the
        two (``link_down_closed``, ``link_down_reset``); None when there was no host socket."""
        self._cancel_pump()
        self.closed = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return None
        now = self.owner.now()
        while data := self.conn.read(READ_CHUNK, now):
            transport.write(data)
            self.to_host += len(data)
        complete = not self.pending and not self.conn.send_buffered
        if not complete:
            self._set_linger_reset(transport)
        transport.close()  # the write buffer is flushed first
        return "link_down_closed" if complete else "link_down_reset"

    def _reset_host(self) -> None:
        transport = self.transport
        if transport is not None:
            self._set_linger_reset(transport)
            transport.abort()

    @staticmethod
    def _set_linger_reset(transport: asyncio.BaseTransport) -> None:
        """Closing the socket sends RST, not FIN."""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass

    def _close_host(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.pump_to_host()
            self.transport.close()

    def _cancel_pump(self) -> None:
        if self._pump_timer is not None:
            self._pump_timer.cancel()
            self._pump_timer = None

    def _done(self, outcome: str) -> None:
        self._cancel_pump()
        if not self.closed:
            self.closed = True
            self.owner.pipe_closed(self, outcome)
