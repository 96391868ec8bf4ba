"""The service proxy: joins each of the client's TCP connections to an ordinary host socket.

Three parts, each in its own module, joined here:

* **admission** (``admission.py``) decides whether a SYN may proceed, and where to;
* a **connector** (``connector.py``) makes the host socket: a service's, and later a SOCKS5
  proxy's or a direct one;
* the **pipe** (``pipe.py``) carries bytes, FIN and RST between the connection and the socket
  with flow control both ways.

The SYN-ACK goes out only when the connector has a connected socket; a refused or unreachable
target gets the client a RST. A target the connector reaches within ``connect()`` (a loopback
service) is accepted in the same flush that read the SYN; the socket joins the event loop a
moment later, and what the client sends meanwhile waits in its connection. Reverse forwards run
a pipe the other way round: a host client connects, we open a connection to the client.

Each connection's life goes to the observers: opened (the SYN-ACK went out), refused (with the
reason, before any socket was opened, or because the target was unreachable), closed (how, and
the bytes moved each way).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Callable

from pyslirp.admission_extension import Extension
from pyslirp.counters import CounterSet, CounterSpec, Counts
from pyslirp.net import tcp, tcp_types
from pyslirp.net.stack import ConnectionEvent, ConnectionRequest, Stack
from pyslirp.runtime.admission import OUTBOUND_PORT, REFUSED, Admission, Admitted, Refused
from pyslirp.runtime.connector import RST, ConnectFailed, Connector, ServiceConnector
from pyslirp.runtime.observers import ConnectionSummary, Flow, GatewayObserver
from pyslirp.runtime.pipe import Pipe
from pyslirp.runtime.security import flow_info

if TYPE_CHECKING:
    from pyslirp.config import ServiceConfig

log = logging.getLogger(__name__)

PROXY_COUNTERS = CounterSet("proxy", [
    CounterSpec("connections_opened", "client connections accepted: the target connected and the SYN-ACK went out"),
    CounterSpec("reverse_opened", "connections opened into the client for a reverse forward"),
    REFUSED,
    CounterSpec("service_unavailable", "targets that refused, timed out or could not be resolved (the client got RST)"),
    CounterSpec(
        "ended",
        "connections that ended other than by an orderly close, by how",
        reasons=("client_reset", "client_aborted", "service_reset", "idle_closed", "data_after_service_closed",
                 "closed_by_reload", "link_down_closed", "link_down_reset"),
        prefix="",
    ),
    CounterSpec("pending_connection_reset", "client resets of connections still waiting for their target"),
    CounterSpec("connect_retries", "connects tried again after every target refused or was unreachable"),
])


@dataclass(slots=True)
class _Tracked:
    flow: Flow
    admitted: Admitted | None  # None for a reverse forward
    started: float
    opened: bool = False


class ServiceProxy:
    """Admits connection requests and runs a :class:`Pipe` for each admitted connection."""

    def __init__(
        self,
        services: dict[int, ServiceConfig],
        stack: Stack,
        now: Callable[[], float],
        admission: Admission,
        *,
        line: str = "",
        observer: GatewayObserver | None = None,
        extension: Extension | None = None,
    ) -> None:
        self.stack = stack
        self.now = now
        self.line = line
        self.observer = observer if observer is not None else GatewayObserver()
        self.local_ip = IPv4Address(stack.local)
        self._local_packed = self.local_ip.packed
        self.peer_ip = IPv4Address(stack.peer)
        self.admission = admission
        #: the operator's async check (security.admission), awaited before the connect
        self.extension = extension
        self.counters: Counts[str] = Counts()
        self.connectors: dict[int, Connector] = {
            port: ServiceConnector(service, self.counters) for port, service in services.items()
            if service.protocol == "tcp"
        }
        self.pipes: dict[tcp.TCPConnection, Pipe] = {}
        self._tracked: dict[Pipe, _Tracked] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: pipes with a host socket open (connecting, joining the event loop, or joined). A flow
        #: holds its admission slot until its socket is closed, not only until the flow ended:
        #: a transport closes its socket a loop turn or more after the pipe ended (several, for a
        #: socket still joining the loop), and a slot freed meanwhile let a SYN flood whose
        #: SYN-ACKs the client resets at once hold up to 1.6 times the sockets the caps allow
        self._sockets: set[Pipe] = set()
        #: flows that ended while their socket was still open: released by ``socket_closed``
        self._closing: dict[Pipe, tuple[Admitted, bool]] = {}

    def handle(self, event: object) -> None:
        if isinstance(event, ConnectionEvent):
            pipe = self.pipes.get(event.conn)
            if pipe is not None:
                pipe.on_event(event.event)
            elif isinstance(event.event, (tcp_types.Reset, tcp_types.Aborted)):
                self.counters["pending_connection_reset"] += 1
        elif isinstance(event, ConnectionRequest):
            self._request(event)

    def _request(self, request: ConnectionRequest) -> None:
        # Every short connection passes here: the flow is built once per outcome (no
        # dataclasses.replace), our own address is not parsed again, and a socket connected
        # within the call joins the loop through one task with one done callback.
        conn = request.conn
        address = request.address
        client = (self.peer_ip, conn.remote_port)
        destination = (self.local_ip if address == self._local_packed else IPv4Address(address), request.port)
        decision = self.admission.admit(Flow(self.line, "tcp", client, destination), self.now())
        if isinstance(decision, Refused):
            self.counters[REFUSED.key(decision.reason)] += 1
            self.observer.connection_refused(Flow(self.line, "tcp", client, destination, decision.service),
                                             decision.reason)
            conn.refuse(self.now())
            return
        label = decision.label
        flow = Flow(self.line, "tcp", client, destination, label)
        pipe = Pipe(self, conn, f"{label} <- :{conn.remote_port}")
        self.pipes[conn] = pipe
        self._tracked[pipe] = _Tracked(flow, decision, self.now())
        port = decision.port
        connector = (
            self.connectors[port] if port != OUTBOUND_PORT else self.outbound_connector(destination[0], destination[1])
        )
        if self.extension is not None:
            task = asyncio.create_task(
                self._decide_then_connect(pipe, connector, self.extension, decision.service.connect_timeout)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        sock = connector.connect_now()
        if sock is not None:
            self._sockets.add(pipe)
            self._accepted(pipe)
            pipe.prepare(sock)
            loop = asyncio.get_running_loop()
            task = loop.create_task(loop.create_connection(lambda: pipe, sock=sock))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._attached, pipe, sock))  # which discards the task
            return
        task = asyncio.create_task(self._connect(pipe, connector))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def outbound_connector(self, destination: IPv4Address, port: int) -> Connector:
        """The connector of a flow the outbound route admitted."""
        outbound = self.admission.outbound
        assert outbound is not None, "admitted by the outbound route"
        return outbound.connector(destination, port)

    def _accepted(self, pipe: Pipe) -> None:
        """The target accepted: the SYN-ACK goes to the client."""
        self.counters["connections_opened"] += 1
        pipe.conn.accept(self.now())
        tracked = self._tracked[pipe]
        tracked.opened = True
        if tracked.admitted is not None:
            self.admission.connected(tracked.admitted)
        self.observer.connection_opened(tracked.flow)

    def _attached(
        self, pipe: Pipe, sock: socket.socket, task: asyncio.Task[tuple[asyncio.Transport, asyncio.BaseProtocol]]
    ) -> None:
        """A socket ``connect_now`` connected has joined the event loop as ``pipe``'s transport,
        or failed to (the socket is closed; the transport detaches it otherwise)."""
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            try:
                sock.close()
            finally:
                self.socket_closed(pipe)
            if not task.cancelled():
                log.info("%s: service socket failed: %s", pipe.label, task.exception())
                pipe.fail("service_reset")
            return
        if pipe.closed:  # the flow ended before its socket joined the loop (see Pipe.connection_made)
            task.result()[0].abort()

    async def _decide_then_connect(
        self, pipe: Pipe, connector: Connector, extension: Extension, timeout: float
    ) -> None:
        reason = await extension.decide_async(flow_info(self._tracked[pipe].flow), timeout)
        if reason is None:
            await self._connect(pipe, connector)
            return
        self.counters[REFUSED.key(reason)] += 1
        if pipe.conn.state == tcp_types.LISTEN:
            pipe.conn.refuse(self.now())
        self._end(pipe, reason)

    async def _connect(self, pipe: Pipe, connector: Connector) -> None:
        self._sockets.add(pipe)  # the connect's socket
        try:
            sock = await connector.connect()
        except BaseException as exc:  # the connector has closed its socket
            self.socket_closed(pipe)
            if not isinstance(exc, ConnectFailed):
                raise
            log.info("%s: service %s unavailable: %s", pipe.label, connector.describe(), exc.reason)
            self.counters["service_unavailable"] += 1
            if pipe.conn.state == tcp_types.LISTEN:
                if exc.answer == RST:
                    pipe.conn.refuse(self.now())
                else:
                    self.stack.refuse_with_icmp(pipe.conn, exc.answer, self.now())
            self._end(pipe, "service_unavailable")
            return
        if pipe.conn.state != tcp_types.LISTEN:  # the client gave up meanwhile
            sock.close()
            self.socket_closed(pipe)
            self._end(pipe, "client_aborted")
            return
        self._accepted(pipe)
        pipe.prepare(sock)
        try:
            transport, _ = await asyncio.get_running_loop().create_connection(lambda: pipe, sock=sock)
        except OSError as exc:
            try:
                sock.close()
            finally:
                self.socket_closed(pipe)
            log.info("%s: service socket failed: %s", pipe.label, exc)
            pipe.fail("service_reset")
            return
        if pipe.closed:  # the flow ended before its socket joined the loop (see Pipe.connection_made)
            transport.abort()

    def open_reverse(self, peer_port: int, label: str) -> Pipe:
        """A pipe for a host client of a reverse forward: we open a connection to ``peer_port``."""
        conn = self.stack.open_connection(peer_port, self.now())
        pipe = Pipe(self, conn, label, wait_established=True)
        self.pipes[conn] = pipe
        flow = Flow(self.line, "tcp", (self.peer_ip, peer_port), (self.local_ip, conn.local_port), label, reverse=True)
        self._tracked[pipe] = _Tracked(flow, None, self.now(), opened=True)
        self.counters["reverse_opened"] += 1
        self.observer.connection_opened(flow)
        return pipe

    def pipe_closed(self, pipe: Pipe, outcome: str) -> None:
        self.pipes.pop(pipe.conn, None)
        self._end(pipe, outcome)

    def socket_closed(self, pipe: Pipe) -> None:
        """``pipe``'s host socket is closed: if its flow has ended, its admission slot is free."""
        self._sockets.discard(pipe)
        closing = self._closing.pop(pipe, None)
        if closing is not None:
            self.admission.closed(closing[0], connected=closing[1])

    def _end(self, pipe: Pipe, outcome: str) -> None:
        tracked = self._tracked.pop(pipe, None)
        if tracked is None:
            return
        pipe.closed = True
        self.pipes.pop(pipe.conn, None)
        if tracked.admitted is not None:
            if pipe in self._sockets:
                self._closing[pipe] = (tracked.admitted, tracked.opened)
            else:
                self.admission.closed(tracked.admitted, connected=tracked.opened)
        if tracked.opened:
            summary = ConnectionSummary(
                outcome, pipe.to_host, pipe.to_client, self.now() - tracked.started, pipe.conn.rtt.smoothed()
            )
            self.observer.connection_closed(tracked.flow, summary)
        else:
            self.observer.connection_refused(tracked.flow, outcome)

    def connections(self) -> list[dict[str, object]]:
        """Every connection the proxy holds: service, client port, TCP state, age and bytes."""
        now = self.now()
        return [
            {
                "service": tracked.flow.service,
                "client_port": tracked.flow.client[1],
                "destination": f"{tracked.flow.destination[0]}:{tracked.flow.destination[1]}",
                "reverse": tracked.flow.reverse,
                "state": pipe.conn.state.name if tracked.opened else "CONNECTING",
                "age": round(now - tracked.started, 3),
                "to_service": pipe.to_host,
                "to_client": pipe.to_client,
            }
            for pipe, tracked in self._tracked.items()
        ]

    def buffered(self) -> dict[str, int]:
        """Bytes the proxy itself holds: host data the connections refused, and data waiting in
        the host sockets' transports."""
        pipes = self.pipes.values()
        return {
            "proxy_pending": sum(len(pipe.pending) for pipe in pipes),
            "service_write_buffered": sum(
                pipe.transport.get_write_buffer_size() for pipe in pipes if pipe.transport is not None
            ),
        }

    def sweep_idle(self, now: float) -> None:
        """Close pipes idle past their service's idle_timeout."""
        for pipe in list(self.pipes.values()):
            tracked = self._tracked.get(pipe)
            if tracked is not None and tracked.admitted is not None:
                if now - pipe.last_activity > tracked.admitted.service.idle_timeout:
                    pipe.idle_close()

    def reconfigure(self, services: dict[int, ServiceConfig], extension: Extension | None, now: float) -> None:
        """After the admission took a new configuration (a reload): new connections go to the new
        services; a connection the configuration no longer allows is reset both ways."""
        self.connectors = {
            port: ServiceConnector(service, self.counters) for port, service in services.items()
            if service.protocol == "tcp"
        }
        self.extension = extension
        for pipe, tracked in list(self._tracked.items()):
            if tracked.admitted is not None and not self.admission.still_allowed(tracked.flow, now):
                log.info("%s: no longer allowed by the configuration, closing", pipe.label)
                if pipe.conn.state == tcp_types.LISTEN:  # still connecting: RST to the SYN; the
                    self.counters["closed_by_reload"] += 1  # connect then finds the client gone
                    pipe.conn.refuse(now)
                    self._end(pipe, "closed_by_reload")
                else:
                    pipe.reset_both("closed_by_reload")

    def close(self) -> None:
        """The link is gone: drop every host socket."""
        for task in list(self._tasks):
            task.cancel()
        for pipe in list(self.pipes.values()):
            closed = pipe.abandon()
            if closed is not None:
                self.counters[closed] += 1
            self._end(pipe, "link_down")
        self.pipes.clear()
        self._closing.clear()  # the link's admission goes with it
