"""The service proxy in-process: a client TCP (our own, standing in for the PPP client's) talks
through the stack and the proxy to real services on loopback. FIN and RST must cross as a real
host would send them, and nothing may buffer without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import socket
import struct
import weakref
from ipaddress import IPv4Address, IPv4Network

import pytest

from pyslirp.config import PyslirpConfig
from pyslirp.net import ipv4, tcp, tcp_types, udp
from pyslirp.net.tcp_segment import parse_segment
from pyslirp.ppp.link import LinkUp
from pyslirp.net.stack import STACK_COUNTERS
from pyslirp.net.tcp_types import TCP_COUNTERS
from pyslirp.runtime.network import DISPATCH_COUNTERS, LinkNetwork
from pyslirp.runtime.pipe import SOCKET_RECEIVE_BUFFER
from pyslirp.runtime.connector import ServiceConnector
from pyslirp.runtime.breaker import ServiceBreakers
from pyslirp.runtime.observers import Observers
from pyslirp.runtime.proxy import PROXY_COUNTERS
from pyslirp.runtime.udp_relay import RELAY_COUNTERS

LOCAL = IPv4Address("10.0.0.1")


def assert_counters_declared(network: LinkNetwork) -> None:
    """Every key the traffic of a test counted is declared (pyslirp.counters)."""
    for declared, counts in (
        (STACK_COUNTERS, network.stack.counters),
        (TCP_COUNTERS, network.stack.tcp_counters),
        (PROXY_COUNTERS, network.proxy.counters),
        (RELAY_COUNTERS, network.relay.counters),
        (DISPATCH_COUNTERS, network.counters),
    ):
        assert declared.undeclared(counts) == [], declared.component
PEER = IPv4Address("10.0.0.2")


class Client:
    """The client end of the link: TCP connections from 10.0.0.2, datagrams handed across in-process."""

    def __init__(
        self, services: dict[int, int | dict], *, checks=(), observer=None, outbound=None, socks=None,
        **tcp_settings: int,
    ) -> None:
        config = PyslirpConfig(
            services={
                port: target if isinstance(target, dict) else {"host": "127.0.0.1", "port": target, "connect_timeout": 2}
                for port, target in services.items()
            },
            tcp=tcp_settings,
            dns={"enabled": False},
            outbound=outbound or {},
            socks=socks or {},
        )
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.network = LinkNetwork(config, LinkUp(LOCAL, PEER, ()), self._wake, checks=checks, observer=observer)
        self.conns: dict[int, tcp.TCPConnection] = {}
        self.events: dict[int, list[object]] = {}
        self._ports = itertools.count(40000)
        self._ident = itertools.count(1)
        self.datagrams: list[bytes] = []  # what the stack sent that is not TCP
        self._pump = self.loop.create_task(self._run())
        self._woken = asyncio.Event()

    def _wake(self) -> None:
        self._woken.set()

    def connect(self, port: int, address: IPv4Address = LOCAL) -> tcp.TCPConnection:
        local_port = next(self._ports)
        conn = tcp.TCPConnection(PEER.packed, local_port, address.packed, port, iss=1000 * local_port,
                                 config=tcp_types.TCPConfig(), now=self.loop.time())
        conn.connect(self.loop.time())
        self.conns[local_port] = conn
        self.events[local_port] = []
        self._woken.set()
        return conn

    def touch(self) -> None:
        """The test called a client connection: send what it produced."""
        self._woken.set()

    async def _run(self) -> None:
        while True:
            now = self.loop.time()
            deadline = self.network.next_deadline()
            if deadline is not None and deadline <= now:
                self.network.handle_timer(now)
            for conn in self.conns.values():
                deadline = conn.next_deadline()
                if deadline is not None and deadline <= now:
                    conn.handle_timer(now)
            moved = True
            while moved:
                moved = False
                for port, conn in self.conns.items():
                    for out in conn.take_segments():
                        packet = ipv4.build(PEER.packed, conn.remote_addr, ipv4.PROTO_TCP, out.data, next(self._ident) & 0xFFFF)
                        self.network.receive(packet, now)
                        moved = True
                    self.events[port].extend(conn.events())
                for packet, _ in self.network.take_output():
                    header = ipv4.parse(packet)
                    if header.protocol != ipv4.PROTO_TCP:
                        self.datagrams.append(packet)
                        continue
                    segment = parse_segment(packet[header.header_length :], header.src, header.dst)
                    assert segment is not None
                    conn = self.conns.get(segment.dst_port)
                    if conn is not None:
                        conn.receive_segment(segment, now)
                        moved = True
            self._woken.clear()
            try:
                await asyncio.wait_for(self._woken.wait(), 0.005)
            except asyncio.TimeoutError:
                pass

    async def until(self, predicate, timeout: float = 10.0) -> None:
        deadline = self.loop.time() + timeout
        while not predicate():
            assert self.loop.time() < deadline, "condition not reached in time"
            await asyncio.sleep(0.005)

    def kinds(self, conn: tcp.TCPConnection) -> list[str]:
        return [type(event).__name__ for event in self.events[conn.local_port]]

    async def read_all(self, conn: tcp.TCPConnection, timeout: float = 10.0) -> bytes:
        data = bytearray()

        def drained() -> bool:
            data.extend(conn.read(-1, self.loop.time()))
            self.touch()
            return conn.at_eof

        await self.until(drained, timeout)
        return bytes(data)

    def close(self) -> None:
        self._pump.cancel()
        self.network.close()
        assert_counters_declared(self.network)


async def serve(handler) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_echo_and_half_close_from_the_client() -> None:
    got_eof = asyncio.Event()

    async def echo_then_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's FIN
        got_eof.set()
        writer.write(b"you said: " + data)  # our write side is still open: a half-close
        await writer.drain()
        writer.close()

    server, port = await serve(echo_then_reply)
    client = Client({7: port})
    conn = client.connect(7)
    await client.until(lambda: conn.state == tcp_types.ESTABLISHED)
    conn.send(b"hello", client.loop.time())
    conn.shutdown_write(client.loop.time())
    client.touch()
    assert await client.read_all(conn) == b"you said: hello"
    assert got_eof.is_set()
    await client.until(lambda: "Closed" in client.kinds(conn))
    client.close()
    server.close()


async def test_service_half_close_reaches_the_client_as_fin_and_client_can_still_send() -> None:
    received = asyncio.Queue()

    async def talk_then_listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"banner")
        writer.write_eof()  # the service is done talking, not listening
        await writer.drain()
        received.put_nowait(await reader.read())
        writer.close()

    server, port = await serve(talk_then_listen)
    client = Client({22: port})
    conn = client.connect(22)
    assert await client.read_all(conn) == b"banner"  # data, then FIN
    conn.send(b"still here", client.loop.time())
    conn.shutdown_write(client.loop.time())
    client.touch()
    assert await asyncio.wait_for(received.get(), 10) == b"still here"
    await client.until(lambda: "Closed" in client.kinds(conn))
    client.close()
    server.close()


async def test_refused_unmapped_and_reset_services() -> None:
    async def reset_midstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import socket
        import struct

        writer.write(b"partial")
        await writer.drain()
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    rude, rude_port = await serve(reset_midstream)
    closed_server, closed_port = await serve(lambda r, w: None)
    closed_server.close()
    await closed_server.wait_closed()

    client = Client({90: rude_port, 91: closed_port})
    unmapped = client.connect(92)
    refused = client.connect(91)
    reset = client.connect(90)
    await client.until(lambda: all("Closed" in client.kinds(c) for c in (unmapped, refused, reset)))
    for conn in (unmapped, refused):
        assert client.events[conn.local_port][0] == tcp_types.Reset("SYN_SENT")  # connection refused
    assert "Established" in client.kinds(reset) and "Reset" in client.kinds(reset)
    assert reset.read(-1, client.loop.time()) == b"partial"
    proxy = client.network.proxy.counters
    assert proxy["refused_no_service"] == 1 and proxy["service_unavailable"] == 1 and proxy["service_reset"] == 1
    client.close()
    rude.close()


async def test_a_fast_service_is_held_back_by_a_client_that_does_not_read() -> None:
    accepted = 0
    done = asyncio.Event()

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        chunk = b"x" * 65536
        try:
            while accepted < 64 << 20:
                writer.write(chunk)
                await writer.drain()  # blocks once pyslirp stops reading
                accepted += len(chunk)
        except ConnectionError:
            pass
        done.set()

    server, port = await serve(firehose)
    client = Client({80: port}, receive_buffer=64 * 1024, send_buffer=64 * 1024)
    conn = client.connect(80)
    await client.until(lambda: conn.state == tcp_types.ESTABLISHED)
    await asyncio.sleep(1.0)
    first = accepted
    await asyncio.sleep(1.0)
    stats = client.network.state()
    # The service's writes are blocked: nothing more was accepted, and what pyslirp holds is bounded.
    assert accepted == first
    assert accepted < 16 << 20  # the client's window + our buffers + the kernel's socket buffers
    assert stats["tcp_send_buffered"] <= 64 * 1024
    assert stats["proxy_pending"] <= 256 * 1024  # at most one read of the service socket
    # pyslirp's socket to the service keeps a fixed receive buffer: autotuning would let the
    # kernel queue megabytes there behind a slow line (Linux reports twice the value set)
    (pipe,) = client.network.proxy.pipes.values()
    sock = pipe.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * SOCKET_RECEIVE_BUFFER
    # Reading on the client side lets it flow again (once the kernel's socket buffers drain).
    def reading() -> bool:
        conn.read(-1, client.loop.time())
        client.touch()
        return accepted > first

    await client.until(reading, timeout=20)
    client.close()
    server.close()


async def test_udp_to_a_port_without_relay_is_port_unreachable() -> None:
    client = Client({})
    datagram = udp.build(PEER.packed, LOCAL.packed, 5000, 9, b"?")
    udp_packet = ipv4.build(PEER.packed, LOCAL.packed, ipv4.PROTO_UDP, datagram, 1)
    client.network.receive(udp_packet, client.loop.time())
    client.touch()
    await client.until(lambda: bool(client.datagrams))
    header = ipv4.parse(client.datagrams[0])
    assert header.protocol == ipv4.PROTO_ICMP and client.datagrams[0][header.header_length] == 3  # unreachable
    client.close()


async def test_max_connections_per_service_and_idle_timeout() -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server, port = await serve(hold)
    client = Client({22: {"host": "127.0.0.1", "port": port, "max_connections": 1, "idle_timeout": 0.5}})
    first = client.connect(22)
    await client.until(lambda: first.state == tcp_types.ESTABLISHED)
    second = client.connect(22)  # over the service's limit: refused while the first is open
    await client.until(lambda: "Closed" in client.kinds(second))
    assert client.events[second.local_port][0] == tcp_types.Reset("SYN_SENT")
    assert client.network.proxy.counters["refused_service_full"] == 1
    # The first one says nothing: past idle_timeout it is reset on both sides.
    await client.until(lambda: "Reset" in client.kinds(first), timeout=15)
    assert client.network.proxy.counters["idle_closed"] == 1
    third = client.connect(22)  # the slot is free again
    await client.until(lambda: third.state == tcp_types.ESTABLISHED)
    client.close()
    server.close()


async def flood_reset_at_once(max_connections: int, waves: int = 20) -> dict[str, object]:
    """A SYN flood at a loopback service whose SYN-ACKs the client resets at once, in the same pass
    of the stack, so that each flow ends before its host socket has joined the event loop.
    Reports the most host sockets the flood held at once, the flows opened, the proxy's counters,
    and whether sockets opened meanwhile by others (bystanders) are still theirs afterwards."""
    # the host sockets the proxy made; closed (asyncio) or detached (uvloop), one says fileno -1
    made: weakref.WeakSet[socket.socket] = weakref.WeakSet()
    peak = 0

    def held() -> int:
        return sum(sock.fileno() != -1 for sock in made)

    connect_now = ServiceConnector.connect_now

    def counted_connect_now(self: ServiceConnector) -> socket.socket | None:
        nonlocal peak
        sock = connect_now(self)
        if sock is not None:
            made.add(sock)
            peak = max(peak, held())
        return sock

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server, port = await serve(hold)
    loop = asyncio.get_running_loop()
    config = PyslirpConfig(services={81: {"host": "127.0.0.1", "port": port, "max_connections": max_connections}},
                           dns={"enabled": False})
    network = LinkNetwork(config, LinkUp(LOCAL, PEER, ()), lambda: None)
    ports = itertools.count(40000)
    bystanders: list[tuple[socket.socket, int]] = []

    def exchange(conns: dict[int, tcp.TCPConnection]) -> None:
        """Segments both ways until both ends are quiet, within this one call (no loop turn)."""
        moved = True
        while moved:
            moved = False
            now = loop.time()
            for conn in conns.values():
                for out in conn.take_segments():
                    network.receive(ipv4.build(PEER.packed, LOCAL.packed, ipv4.PROTO_TCP, out.data, 1), now)
                    moved = True
            for packet, _ in network.take_output():
                header = ipv4.parse(packet)
                segment = parse_segment(packet[header.header_length :], header.src, header.dst)
                if segment is not None and segment.dst_port in conns:
                    conns[segment.dst_port].receive_segment(segment, now)
                    moved = True

    opened = 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ServiceConnector, "connect_now", counted_connect_now)
        for _ in range(waves):
            conns = {}
            for _ in range(8):
                local_port = next(ports)
                conns[local_port] = tcp.TCPConnection(PEER.packed, local_port, LOCAL.packed, 81,
                                                      iss=1000 * local_port, config=tcp_types.TCPConfig(),
                                                      now=loop.time())
                conns[local_port].connect(loop.time())
            exchange(conns)  # SYN-ACKs for as many as the service takes, RSTs for the others
            for conn in conns.values():
                if conn.state == tcp_types.ESTABLISHED:
                    opened += 1
                    conn.abort(loop.time())  # the client's kernel resets the SYN-ACK
            exchange(conns)
            await asyncio.sleep(0)  # one loop turn: the sockets are still joining the loop
            bystander = socket.socket()  # someone else's socket, likely on a number just freed
            bystanders.append((bystander, os.fstat(bystander.fileno()).st_ino))
        deadline = loop.time() + 5
        while held() or network.admission.active:
            assert loop.time() < deadline, (held(), network.admission.active)
            await asyncio.sleep(0.01)
    gc.collect()  # what the flood left behind is finalized
    intact = True
    for bystander, inode in bystanders:
        try:
            intact &= os.fstat(bystander.fileno()).st_ino == inode
        except OSError:
            intact = False
        with contextlib.suppress(OSError):  # EBADF: someone closed it already
            bystander.close()
    counters = dict(network.proxy.counters)
    network.close()
    server.close()
    return {"peak": peak, "opened": opened, "counters": counters, "bystanders_intact": intact}


async def test_a_flow_holds_its_admission_slot_until_its_host_socket_is_closed() -> None:
    """A transport closes its socket a loop turn or more after its flow ended (several, for one
    still joining the loop): the flow's admission slot is free only then, so a flood whose
    SYN-ACKs the client resets at once holds no more host sockets than max_connections."""
    flood = await flood_reset_at_once(max_connections=4)
    assert flood["opened"] >= 8  # slots were freed and used again
    assert flood["peak"] <= 4, flood


def test_under_uvloop_a_flow_reset_before_its_socket_joined_the_loop_closes_only_its_own_socket() -> None:
    """uvloop: a transport aborted from within connection_made closes its descriptor before the
    loop has taken the socket object over; that object, collected later, closes the number again,
    by then someone else's socket (and the next flow's create_connection fails with EBADF)."""
    uvloop = pytest.importorskip("uvloop")
    flood = uvloop.run(flood_reset_at_once(max_connections=4))
    assert flood["opened"] >= 8
    assert flood["counters"].get("service_reset", 0) == 0, flood
    assert flood["bystanders_intact"], flood
    assert flood["peak"] <= 4, flood


async def test_udp_service_relays_both_ways() -> None:
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data.upper(), addr)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    echo_port = transport.get_extra_info("sockname")[1]
    client = Client({5353: {"host": "127.0.0.1", "port": echo_port, "protocol": "udp"}})
    datagram = udp.build(PEER.packed, LOCAL.packed, 6000, 5353, b"hello")
    client.network.receive(ipv4.build(PEER.packed, LOCAL.packed, ipv4.PROTO_UDP, datagram, 7), loop.time())
    replies: list[bytes] = []

    def replied() -> bool:
        for packet in client.datagrams:
            header = ipv4.parse(packet)
            replies.append(udp.parse(header.src, header.dst, packet[header.header_length :])[2])
        client.datagrams.clear()
        return bool(replies)

    await client.until(replied)
    assert replies == [b"HELLO"]
    client.close()
    transport.close()


async def test_a_loopback_service_is_connected_in_the_flush_that_read_the_syn() -> None:
    """connect() to a loopback service completes within the call: the SYN-ACK leaves in the same
    flush as the SYN arrived. What the client sends before the service socket joins the event
    loop reaches the service; a client reset before then closes the service socket."""
    outcomes: asyncio.Queue[bytes | str] = asyncio.Queue()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            outcomes.put_nowait(await reader.read())  # until the client's FIN
        except ConnectionError as exc:
            outcomes.put_nowait(type(exc).__name__)
        writer.close()

    server, port = await serve(record)
    config = PyslirpConfig(services={7: {"host": "127.0.0.1", "port": port}}, dns={"enabled": False})
    network = LinkNetwork(config, LinkUp(LOCAL, PEER, ()), lambda: None)
    now = asyncio.get_running_loop().time()

    def exchange(conn: tcp.TCPConnection) -> None:
        """The client's segments to the network, then the network's answers to the client."""
        for out in conn.take_segments():
            network.receive(ipv4.build(PEER.packed, LOCAL.packed, ipv4.PROTO_TCP, out.data, 1), now)
        for packet, _ in network.take_output():
            header = ipv4.parse(packet)
            conn.receive_segment(parse_segment(packet[header.header_length :], header.src, header.dst), now)

    early = tcp.TCPConnection(PEER.packed, 40001, LOCAL.packed, 7, iss=1, config=tcp_types.TCPConfig(), now=now)
    early.connect(now)
    exchange(early)
    assert early.state == tcp_types.ESTABLISHED  # no await: the service was connected within the flush
    early.send(b"sent before the socket joined the loop", now)
    early.shutdown_write(now)
    exchange(early)
    assert await asyncio.wait_for(outcomes.get(), 5) == b"sent before the socket joined the loop"

    gone = tcp.TCPConnection(PEER.packed, 40002, LOCAL.packed, 7, iss=1, config=tcp_types.TCPConfig(), now=now)
    gone.connect(now)
    exchange(gone)
    gone.abort(now)
    exchange(gone)
    assert await asyncio.wait_for(outcomes.get(), 5) in (b"", "ConnectionResetError")
    assert network.proxy.counters["connections_opened"] == 2
    assert len(network.proxy.pipes) == 1  # the reset one is gone (the first is still closing)
    network.close()
    assert_counters_declared(network)
    server.close()


async def test_with_tcp_batch_acks_off_the_line_reader_never_rests() -> None:
    for batch_acks in (True, False):
        config = PyslirpConfig(tcp={"batch_acks": batch_acks}, dns={"enabled": False})
        network = LinkNetwork(config, LinkUp(LOCAL, PEER, ()), lambda: None)
        budget = network.stack.budget
        budget.rate, budget.flight = 180_000.0, 1460  # a 16550-like line, a download in flight
        assert (network.read_rest(0.0) > 0) is batch_acks
        network.close()


async def test_tcp_reassembly_memory_bounds_the_links_out_of_order_data() -> None:
    client = Client({}, reassembly_memory=65536)
    assert client.network.stack.reassembly.limit == 65536
    conn = client.network.stack.open_connection(40000, client.loop.time())
    assert conn.receiver.pool is client.network.stack.reassembly
    client.close()


async def test_icmp_errors_are_rate_limited() -> None:
    from pyslirp.net.stack import ICMP_ERROR_BURST, ICMP_ERROR_RATE

    client = Client({})
    now = client.loop.time()
    for port in range(1, 101):  # a port scan, all at once
        datagram = udp.build(PEER.packed, LOCAL.packed, 5000, port, b"?")
        client.network.receive(ipv4.build(PEER.packed, LOCAL.packed, ipv4.PROTO_UDP, datagram, port), now)
    counters = client.network.stack.counters
    assert counters["udp_drop_port_unreachable"] == 100
    assert (counters["icmp_errors_sent"], counters["icmp_errors_ratelimited"]) == (ICMP_ERROR_BURST, 100 - ICMP_ERROR_BURST)
    # A second later the bucket has ICMP_ERROR_RATE tokens again.
    for port in range(1, 101):
        datagram = udp.build(PEER.packed, LOCAL.packed, 5000, port, b"?")
        client.network.receive(ipv4.build(PEER.packed, LOCAL.packed, ipv4.PROTO_UDP, datagram, port), now + 1.0)
    assert counters["icmp_errors_sent"] == ICMP_ERROR_BURST + ICMP_ERROR_RATE
    client.close()


async def test_a_udp_flow_the_admission_refuses_gets_port_unreachable() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    client = Client({5353: {"host": "127.0.0.1", "port": port, "protocol": "udp", "max_connections": 1}})
    for client_port in (6000, 6001):  # the second flow is over the service's limit
        datagram = udp.build(PEER.packed, LOCAL.packed, client_port, 5353, b"hello")
        client.network.receive(ipv4.build(PEER.packed, LOCAL.packed, ipv4.PROTO_UDP, datagram, client_port), loop.time())
    client.touch()
    await client.until(lambda: bool(client.datagrams))
    header = ipv4.parse(client.datagrams[0])
    message = client.datagrams[0][header.header_length :]
    assert header.protocol == ipv4.PROTO_ICMP and message[:2] == bytes([3, 3])  # port unreachable
    quoted_header_length = (message[8] & 0x0F) * 4  # the refused datagram's header and first 8 bytes
    assert message[8 + 9] == ipv4.PROTO_UDP
    assert int.from_bytes(message[8 + quoted_header_length :][:2], "big") == 6001
    assert client.network.relay.counters["refused_service_full"] == 1
    assert client.network.admission.active == {("udp", 5353): 1}
    client.close()
    assert not client.network.admission.active  # the link's end closed the flow
    transport.close()


async def test_a_reload_keeps_allowed_connections_resets_the_others_and_routes_new_ones() -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
        writer.close()

    server, port = await serve(hold)
    loop = asyncio.get_running_loop()
    sink, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    udp_port = sink.get_extra_info("sockname")[1]
    client = Client({
        22: {"host": "127.0.0.1", "port": port, "name": "ssh"},
        23: {"host": "127.0.0.1", "port": port, "name": "going"},
        5353: {"host": "127.0.0.1", "port": udp_port, "protocol": "udp"},
    })
    staying, going = client.connect(22), client.connect(23)
    await client.until(lambda: staying.state == going.state == tcp_types.ESTABLISHED)
    datagram = udp.build(PEER.packed, LOCAL.packed, 6000, 5353, b"x")
    client.network.receive(ipv4.build(PEER.packed, LOCAL.packed, ipv4.PROTO_UDP, datagram, 1), loop.time())
    await client.until(lambda: client.network.relay.counters["flows_opened"] == 1)

    reloaded = PyslirpConfig(
        services={22: {"host": "127.0.0.1", "port": port, "name": "ssh"},
                  80: {"host": "127.0.0.1", "port": port, "name": "web"}},
        dns={"enabled": False},
    )
    client.network.reconfigure(reloaded)
    client.touch()
    await client.until(lambda: "Reset" in client.kinds(going))
    assert not client.network.relay.flows  # the UDP service is gone too
    added = client.connect(80)
    await client.until(lambda: added.state == tcp_types.ESTABLISHED)
    staying.send(b"still here", loop.time())
    client.touch()
    received = bytearray()
    await client.until(lambda: received.extend(staying.read(-1, loop.time())) or received == b"still here")
    assert client.network.proxy.counters["closed_by_reload"] == 1
    assert client.network.admission.active == {("tcp", 22): 1, ("tcp", 80): 1}
    refused = client.connect(23)  # the removed service takes no new connection
    await client.until(lambda: "Closed" in client.kinds(refused))
    client.close()
    server.close()
    sink.close()


async def test_a_dead_service_gets_rst_without_a_connect_once_its_breaker_opens() -> None:
    loop = asyncio.get_running_loop()
    services = {80: {"host": "127.0.0.1", "port": 1, "name": "web", "connect_timeout": 1,
                     "breaker": {"failures": 2, "window": 30, "cooldown": 60}}}
    breakers = ServiceBreakers(PyslirpConfig(services=services).services, loop.time)
    client = Client(services, checks=[breakers], observer=Observers(breakers))
    for _ in range(4):
        conn = client.connect(80)
        await client.until(lambda: "Closed" in client.kinds(conn))
    proxy = client.network.proxy.counters
    assert proxy["service_unavailable"] == 2  # two connects tried: nothing listens on port 1
    assert proxy["refused_breaker_open"] == 2  # then RST at once, without a connect
    assert breakers.states() == {"web": "open"}
    client.close()


async def test_when_the_link_goes_down_services_get_what_we_acknowledged_then_fin_or_rst_as_the_state_requires() -> None:
    """A connection the client had everything of ends with FIN toward its service; one whose
    service data the client never took ends with RST. Client data we acknowledged reaches the
    service either way, even what still waited in our buffers for a service slow to read."""
    endings: dict[str, tuple[int, str]] = {}
    read_now = asyncio.Event()

    def service(name: str, send: bytes, wait_to_read: bool):
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(send)
            if wait_to_read:
                await read_now.wait()
            received = 0
            try:
                while data := await reader.read(65536):
                    received += len(data)
                ending = "fin"
            except ConnectionResetError:
                ending = "rst"
            endings[name] = (received, ending)
            writer.close()
        return handler

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # what the service leaves unread
    complete = await asyncio.start_server(service("complete", b"hi", wait_to_read=True), sock=listener)
    complete_port = listener.getsockname()[1]  # waits in our buffers, not the kernel's
    stuck, stuck_port = await serve(service("stuck", b"x" * 4_000_000, wait_to_read=False))
    client = Client({22: complete_port, 80: stuck_port})
    talker, downloader = client.connect(22), client.connect(80)
    await client.until(lambda: talker.state == downloader.state == tcp_types.ESTABLISHED)
    greeting = bytearray()

    def greeted() -> bool:
        greeting.extend(talker.read(-1, client.loop.time()))
        return len(greeting) == 2

    await client.until(greeted)
    chunk, sent, acknowledged = os.urandom(262144), 0, -1
    while sent - talker.send_buffered > acknowledged:  # until the service's buffers and ours are full
        acknowledged = sent - talker.send_buffered
        sent += talker.send(chunk, client.loop.time())
        client.touch()
        await asyncio.sleep(0.1)
    assert acknowledged > 1_000_000  # the kernel holds some for the service, our buffers the rest
    client.close()  # the link is gone
    read_now.set()
    await client.until(lambda: len(endings) == 2)
    assert endings["complete"][1] == "fin"
    assert endings["complete"][0] >= acknowledged
    assert endings["stuck"][1] == "rst"
    counters = client.network.proxy.counters
    assert counters["link_down_closed"] == 1 and counters["link_down_reset"] == 1
    complete.close()
    stuck.close()


async def test_outbound_connections_are_refused_by_default_and_connect_directly_when_allowed() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server, port = await serve(echo)
    refusing = Client({})
    refused = refusing.connect(port, IPv4Address("127.0.0.1"))
    await refusing.until(lambda: "Reset" in refusing.kinds(refused))  # a RST from that address
    assert refusing.network.proxy.counters["refused_no_route"] == 1
    refusing.close()

    direct = Client({}, outbound={"mode": "direct", "allow": ["127.0.0.0/8"], "deny": ["127.0.0.2/32"]})
    conn = direct.connect(port, IPv4Address("127.0.0.1"))
    denied = direct.connect(port, IPv4Address("127.0.0.2"))
    await direct.until(lambda: conn.state == tcp_types.ESTABLISHED and "Reset" in direct.kinds(denied))
    conn.send(b"out and back", direct.loop.time())
    direct.touch()
    assert await direct.read_all(conn) == b"out and back"
    assert direct.network.proxy.counters["refused_outbound_denied"] == 1
    direct.close()
    server.close()


async def test_a_socks_reply_of_host_unreachable_reaches_the_client_as_icmp_not_rst() -> None:
    async def unreachable(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(16)
        writer.write(b"\x05\x00")
        await reader.read(64)
        writer.write(b"\x05\x04\x00\x01" + bytes(6))  # RFC 1928 §6: host unreachable
        await writer.drain()
        writer.close()

    socks, socks_port = await serve(unreachable)
    client = Client({}, outbound={"mode": "socks"}, socks={"enabled": True, "port": socks_port})
    conn = client.connect(80, IPv4Address("198.18.0.2"))
    await client.until(lambda: client.datagrams)
    header = ipv4.parse(client.datagrams[0])
    message = client.datagrams[0][header.header_length:]
    assert header.protocol == ipv4.PROTO_ICMP and message[:2] == bytes([3, 1])  # host unreachable
    quoted = ipv4.parse(message[8:])
    assert (quoted.src, quoted.dst) == (PEER.packed, IPv4Address("198.18.0.2").packed)
    assert message[8 + quoted.header_length:][:4] == struct.pack("!HH", conn.local_port, 80)
    assert not client.network.stack.connections  # dropped without a RST
    assert "Reset" not in client.kinds(conn)
    assert client.network.proxy.counters["service_unavailable"] == 1
    client.close()
    socks.close()


class UpperEcho(asyncio.DatagramProtocol):
    """A UDP service answering each datagram upper-cased (through a SOCKS5 relay: the RFC 1928
    §7 header kept as it came)."""

    def __init__(self, header_length: int = 0) -> None:
        self.header_length = header_length

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        head, body = data[: self.header_length], data[self.header_length:]
        self.transport.sendto(head + body.upper(), addr)


def send_udp(client: Client, destination: IPv4Address, port: int, payload: bytes, client_port: int = 6000) -> None:
    datagram = udp.build(PEER.packed, destination.packed, client_port, port, payload)
    client.network.receive(ipv4.build(PEER.packed, destination.packed, ipv4.PROTO_UDP, datagram, 9), client.loop.time())


async def udp_replies(client: Client) -> list[tuple[bytes, int, bytes]]:
    """The next UDP datagrams to the client: (source address, source port, payload)."""
    replies: list[tuple[bytes, int, bytes]] = []

    def replied() -> bool:
        for packet in client.datagrams:
            header = ipv4.parse(packet)
            if header.protocol == ipv4.PROTO_UDP:
                sport, _, payload = udp.parse(header.src, header.dst, packet[header.header_length:])
                replies.append((header.src, sport, payload))
        client.datagrams.clear()
        return bool(replies)

    await client.until(replied)
    return replies


async def test_outbound_udp_is_net_unreachable_by_default_and_relayed_directly_when_allowed() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(UpperEcho, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    refusing = Client({})
    send_udp(refusing, IPv4Address("127.0.0.1"), port, b"hello")
    await refusing.until(lambda: refusing.datagrams)
    header = ipv4.parse(refusing.datagrams[0])
    assert header.protocol == ipv4.PROTO_ICMP and refusing.datagrams[0][header.header_length:][:2] == bytes([3, 0])
    refusing.close()

    direct = Client({}, outbound={"mode": "direct", "allow": ["127.0.0.0/8"]})
    send_udp(direct, IPv4Address("127.0.0.1"), port, b"hello")
    assert await udp_replies(direct) == [(IPv4Address("127.0.0.1").packed, port, b"HELLO")]  # from there
    assert direct.network.relay.counters["flows_opened"] == 1
    direct.close()
    transport.close()


async def test_outbound_udp_through_a_socks5_udp_association() -> None:
    """The proxy answers UDP ASSOCIATE with its relay's address; each datagram carries the RFC
    1928 §7 header both ways; the association ends with its control connection."""
    loop = asyncio.get_running_loop()
    relay, _ = await loop.create_datagram_endpoint(lambda: UpperEcho(header_length=10), local_addr=("127.0.0.1", 0))
    relay_port = relay.get_extra_info("sockname")[1]
    requests: list[bytes] = []
    control_open = asyncio.Event()
    end_association = asyncio.Event()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.read(16))
        writer.write(b"\x05\x00")
        requests.append(await reader.read(64))
        writer.write(b"\x05\x00\x00\x01" + IPv4Address("127.0.0.1").packed + struct.pack("!H", relay_port))
        control_open.set()
        await end_association.wait()
        writer.close()

    socks, socks_port = await serve(proxy)
    client = Client({}, outbound={"mode": "socks"}, socks={"enabled": True, "port": socks_port, "udp": True})
    host = IPv4Address("198.18.0.2")
    send_udp(client, host, 7, b"echo me")
    assert await udp_replies(client) == [(host.packed, 7, b"ECHO ME")]
    assert requests[1] == b"\x05\x03\x00\x01" + bytes(6)  # UDP ASSOCIATE, from an address not known yet
    end_association.set()
    await client.until(lambda: not client.network.relay.flows)
    client.close()
    socks.close()
    relay.close()


async def test_with_remote_dns_the_client_resolves_a_name_and_its_connection_hands_the_proxy_the_name() -> None:
    requests: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.read(16))
        writer.write(b"\x05\x00")
        requests.append(await reader.read(300))
        writer.write(b"\x05\x00\x00\x01" + bytes(6) + b"hello from files.test")
        await writer.drain()
        writer.close()

    socks, socks_port = await serve(proxy)
    client = Client({}, outbound={"mode": "socks"}, socks={"enabled": True, "port": socks_port, "remote_dns": True})
    query = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x05files\x04test\x00" + struct.pack("!HH", 1, 1)
    send_udp(client, LOCAL, 53, query, client_port=5300)
    [(source, port, answer)] = await udp_replies(client)
    assert (source, port) == (LOCAL.packed, 53)
    address = IPv4Address(answer[-4:])
    assert address in IPv4Network("100.64.0.0/10")
    conn = client.connect(80, address)
    assert await client.read_all(conn) == b"hello from files.test"
    assert requests[1] == b"\x05\x01\x00\x03\x0afiles.test\x00\x50"  # CONNECT to the name (RFC 1928 §5)
    assert client.network.relay.counters["dns_names_for_proxy"] == 1
    client.close()
    socks.close()
