"""The service proxy: joins each of the client's TCP connections to an ordinary host socket.

A SYN to ``local_ip:P`` is admitted only if the config maps P to an enabled service with room
under its ``max_connections``; then we connect to the service, and the SYN-ACK goes out only
when the service accepted (a refused or timed-out service gets the client a RST). A service on
a loopback address is connected within ``connect()`` itself (the kernel completes the handshake
there), so its SYN-ACK goes out in the same flush as the SYN was read; the socket joins the
event loop a moment later, and what the client sends meanwhile waits in its connection. Reverse
forwards run the same pipe the other way round: a host client connects, we open a connection
to the client.

Flow control, end to end and bounded:
  client -> service: we ``read`` from the TCP connection only while the service socket's
    transport is below its high-water mark; what we don't read stays in the connection's
    bounded receive buffer and closes the advertised window.
  service -> client: we hand data to the connection's bounded send buffer; when it refuses
    some, we stop reading the service socket (``pause_reading``) until ``SendSpace``.
FIN and RST are carried across: a service that closes its write side half-closes toward the
client, and a client FIN half-closes toward the service; a reset on either side resets the other.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import logging
import socket
import struct
from collections import Counter
from typing import Callable

from pyslirp.config import ServiceConfig
from pyslirp.net import tcp
from pyslirp.net.stack import ConnectionEvent, ConnectionRequest, Stack

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
#: client data the sender did not push is gathered this long (or up to PUMP_BATCH bytes) before
#: one write to the service, rather than a write per segment
PUMP_DELAY = 0.001
PUMP_BATCH = 32 * 1024
#: the service socket's transport pauses us above this many unsent bytes
WRITE_HIGH_WATER = 64 * 1024
#: the host socket's kernel receive buffer, fixed: left to autotuning it grows to megabytes
#: while the line is slow, and the service's data piles up there instead of being held back
#: (a loopback service refills it in microseconds, so this does not limit the line's rate)
SOCKET_RECEIVE_BUFFER = 256 * 1024
_LINGER_RESET = struct.pack("ii", 1, 0)


def _connect_at_once(service: ServiceConfig) -> socket.socket | None:
    """A socket already connected to ``service`` if it listens on a loopback address, where the
    kernel completes the handshake within ``connect()``; None when it is elsewhere, by name, or
    not (yet) accepting, and the connection goes the asynchronous way."""
    try:
        address = ipaddress.ip_address(service.host)
    except ValueError:
        return None  # a name: resolving it would block
    if not address.is_loopback:
        return None
    sock = socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if sock.connect_ex((service.host, service.port)) in (0, errno.EINPROGRESS):
            sock.getpeername()  # raises unless the handshake is done
            return sock
    except OSError:
        pass
    sock.close()
    return None


class Pipe(asyncio.Protocol):
    """One client connection joined to one host socket."""

    def __init__(
        self, proxy: "ServiceProxy", conn: tcp.TCPConnection, label: str, *, wait_established: bool = False
    ) -> None:
        self.proxy = proxy
        self.wait_established = wait_established
        self.conn = conn
        self.label = label
        self.transport: asyncio.Transport | None = None
        self._pending = b""  # service data the connection's send buffer refused
        self._service_eof = False
        self._service_paused = False  # we paused reading from the service
        self._writing_paused = False  # the service's transport asked us to stop writing
        self._eof_sent = False
        self._fin_queued = False
        self._service_gone = False
        self.closed = False
        self.last_activity = proxy.now()
        self._pump_timer: asyncio.TimerHandle | None = None

    # -- the host socket side (asyncio.Protocol) -----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.closed:
            transport.abort()  # the client reset or closed before the socket joined the loop
            return
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RECEIVE_BUFFER)
        if self.wait_established:
            # A reverse forward: hold the host client's data until the client side is open.
            self._service_paused = True
            transport.pause_reading()
        elif self.conn.readable or self.conn.at_eof:
            self.pump_to_service()  # what the client sent before the socket joined the loop

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.proxy.now()
        if self._pending:
            self._pending += data
        else:
            taken = self.conn.send(data, self.proxy.now())
            if taken < len(data):
                self._pending = data[taken:]
        if self._pending and not self._service_paused and self.transport is not None:
            self._service_paused = True
            self.transport.pause_reading()
        self.proxy.stack.changed(self.conn)

    def eof_received(self) -> bool:
        self._service_eof = True
        self._finish_to_client()
        return True  # keep our write side open: the client may still send (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._service_gone = True
        if self.closed:
            return
        if exc is not None:
            log.debug("%s: service connection lost: %s", self.label, exc)
            self.proxy.counters["service_reset"] += 1
            self._reset_client()
        else:
            self._service_eof = True
            self._finish_to_client()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self.pump_to_service()

    # -- the client connection side ------------------------------------------------------------

    def on_event(self, event: object) -> None:
        if isinstance(event, tcp.DataReceived):
            if event.push or event.available >= PUMP_BATCH:
                self.pump_to_service()
            elif self._pump_timer is None:
                self._pump_timer = asyncio.get_running_loop().call_later(PUMP_DELAY, self.pump_to_service)
        elif isinstance(event, tcp.PeerFinished):
            self.pump_to_service()
        elif isinstance(event, tcp.SendSpace):
            self._push_pending()
        elif isinstance(event, tcp.Established):
            if self.transport is not None and self._service_paused and not self._pending:
                self._service_paused = False
                self.transport.resume_reading()
        elif isinstance(event, (tcp.Reset, tcp.Aborted)):
            self.proxy.counters["client_reset" if isinstance(event, tcp.Reset) else "client_aborted"] += 1
            self._reset_service()
        elif isinstance(event, tcp.Closed):
            self._close_service()

    def pump_to_service(self) -> None:
        """Move what the client sent to the service while its socket takes it."""
        self._cancel_pump()
        conn, transport = self.conn, self.transport
        if self._service_gone and conn.readable:
            # Data for a service that has closed its socket: a host answers that with a reset.
            self.proxy.counters["data_after_service_closed"] += 1
            self._reset_client()
            return
        if transport is None or transport.is_closing():
            return
        now = self.proxy.now()
        moved = False
        while not self._writing_paused:
            data = conn.read(READ_CHUNK, now)
            if not data:
                break
            transport.write(data)
            moved = True
        if moved:
            self.last_activity = now
            self.proxy.stack.changed(conn)  # the window reopened
        if conn.at_eof and not self._eof_sent and transport.can_write_eof():
            self._eof_sent = True
            transport.write_eof()  # the client's FIN: half-close toward the service

    def _push_pending(self) -> None:
        if self._pending:
            taken = self.conn.send(self._pending, self.proxy.now())
            self._pending = self._pending[taken:]
            self.proxy.stack.changed(self.conn)
        if not self._pending:
            if self._service_paused and self.transport is not None and not self.transport.is_closing():
                self._service_paused = False
                self.transport.resume_reading()
            self._finish_to_client()

    def _finish_to_client(self) -> None:
        if self._service_eof and not self._pending and not self._fin_queued:
            self._fin_queued = True
            self.conn.shutdown_write(self.proxy.now())
            self.proxy.stack.changed(self.conn)

    def _reset_client(self) -> None:
        self.conn.abort(self.proxy.now())
        self.proxy.stack.changed(self.conn)

    def _reset_service(self) -> None:
        transport = self.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except OSError:
                    pass
            transport.abort()
        self._done()

    def _close_service(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.pump_to_service()
            self.transport.close()
        self._done()

    def _cancel_pump(self) -> None:
        if self._pump_timer is not None:
            self._pump_timer.cancel()
            self._pump_timer = None

    def _done(self) -> None:
        self._cancel_pump()
        if not self.closed:
            self.closed = True
            self.proxy.pipe_closed(self)

    def idle_close(self) -> None:
        log.info("%s: idle, closing", self.label)
        self.proxy.counters["idle_closed"] += 1
        self._reset_client()
        self._reset_service()


class ServiceProxy:
    """Admits connection requests and runs a :class:`Pipe` for each admitted connection."""

    def __init__(self, services: dict[int, ServiceConfig], stack: Stack, now: Callable[[], float]) -> None:
        self.services = services
        self.stack = stack
        self.now = now
        self.pipes: dict[tcp.TCPConnection, Pipe] = {}
        self.active: Counter[int] = Counter()  # service port -> open pipes
        self._service_of: dict[Pipe, int] = {}
        self.counters: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- admission (the hook the security layer will extend) ------------------------------------

    def admit(self, port: int) -> tuple[ServiceConfig | None, str]:
        """The service for a connection to ``port``, or None and the reason it is refused."""
        service = self.services.get(port)
        if service is None or service.protocol != "tcp":
            return None, "no_service"
        if not service.enabled:
            return None, "service_disabled"
        if self.active[port] >= service.max_connections:
            return None, "service_full"
        return service, ""

    def handle(self, event: object) -> None:
        if isinstance(event, ConnectionEvent):
            pipe = self.pipes.get(event.conn)
            if pipe is not None:
                pipe.on_event(event.event)
            elif isinstance(event.event, (tcp.Reset, tcp.Aborted)):
                self.counters["pending_connection_reset"] += 1
        elif isinstance(event, ConnectionRequest):
            self._request(event)

    def _request(self, request: ConnectionRequest) -> None:
        conn = request.conn
        service, reason = self.admit(request.port)
        if service is None:
            self.counters[f"refused_{reason}"] += 1
            log.info("refused connection to port %d from port %d: %s", request.port, conn.remote_port, reason)
            conn.refuse(self.now())
            self.stack.changed(conn)
            return
        label = f"{service.name or 'port ' + str(request.port)} <- :{conn.remote_port}"
        pipe = Pipe(self, conn, label)
        self.pipes[conn] = pipe
        self.active[request.port] += 1
        self._service_of[pipe] = request.port
        sock = _connect_at_once(service)
        if sock is not None:
            self._accepted(pipe)
            loop = asyncio.get_running_loop()
            task = loop.create_task(loop.create_connection(lambda: pipe, sock=sock))
            task.add_done_callback(functools.partial(self._attached, pipe, sock))
        else:
            task = asyncio.create_task(self._connect(pipe, service))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _accepted(self, pipe: Pipe) -> None:
        """The service accepted: the SYN-ACK goes to the client."""
        self.counters["connections_opened"] += 1
        pipe.conn.accept(self.now())
        self.stack.changed(pipe.conn)

    def _attached(self, pipe: Pipe, sock: socket.socket, task: asyncio.Task[object]) -> None:
        """A socket ``_connect_at_once`` connected has joined the event loop as ``pipe``'s
        transport, or failed to (the socket is closed; the transport detaches it otherwise)."""
        if task.cancelled():
            sock.close()
            return
        exc = task.exception()
        if exc is not None:
            sock.close()
            log.info("%s: service socket failed: %s", pipe.label, exc)
            self.counters["service_reset"] += 1
            pipe._reset_client()
            pipe._done()

    async def _connect(self, pipe: Pipe, service: ServiceConfig) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: pipe, service.host, service.port), service.connect_timeout
            )
        except (OSError, asyncio.TimeoutError) as exc:
            reason = "timeout" if isinstance(exc, asyncio.TimeoutError) else (exc.strerror or str(exc))
            log.info("%s: service %s:%d unavailable: %s", pipe.label, service.host, service.port, reason)
            self.counters["service_unavailable"] += 1
            if pipe.conn.state == tcp.LISTEN:
                pipe.conn.refuse(self.now())
                self.stack.changed(pipe.conn)
            pipe._done()
            return
        if pipe.conn.state != tcp.LISTEN:  # the client gave up meanwhile
            pipe._reset_service()
            return
        self._accepted(pipe)

    def reverse_pipe(self, peer_port: int, label: str) -> Pipe:
        """A pipe for a host client of a reverse forward: we open a connection to ``peer_port``."""
        conn = self.stack.open_connection(peer_port, self.now())
        pipe = Pipe(self, conn, label, wait_established=True)
        self.pipes[conn] = pipe
        self.counters["reverse_opened"] += 1
        return pipe

    def pipe_closed(self, pipe: Pipe) -> None:
        self.pipes.pop(pipe.conn, None)
        port = self._service_of.pop(pipe, None)
        if port is not None:
            self.active[port] -= 1

    def buffered(self) -> dict[str, int]:
        """Bytes the proxy itself holds: service data the connections refused, and data
        waiting in the service sockets' transports."""
        pipes = self.pipes.values()
        return {
            "proxy_pending": sum(len(pipe._pending) for pipe in pipes),
            "service_write_buffered": sum(
                pipe.transport.get_write_buffer_size() for pipe in pipes if pipe.transport is not None
            ),
        }

    def sweep_idle(self, now: float) -> None:
        """Close pipes idle past their service's idle_timeout."""
        for pipe in list(self.pipes.values()):
            port = self._service_of.get(pipe)
            service = self.services.get(port) if port is not None else None
            if service is not None and now - pipe.last_activity > service.idle_timeout:
                pipe.idle_close()

    def close(self) -> None:
        """The link is gone: drop every service socket."""
        for task in list(self._tasks):
            task.cancel()
        for pipe in list(self.pipes.values()):
            pipe._cancel_pump()
            pipe.closed = True
            if pipe.transport is not None:
                pipe.transport.abort()
        self.pipes.clear()
        self.active.clear()
        self._service_of.clear()
