"""Lines: the byte streams PPP runs over — a serial port, a TCP socket, or a pseudo-terminal.

A :class:`Line` hands out :class:`LineSession` objects, one per continuous connection of the byte
stream: each accepted TCP client, each time a client opens the pty, one for a serial port. The
gateway runs a fresh PPP link on each session, so a client that hangs up and dials again gets a new
link without restarting pyslirp.

Reads and writes never block the event loop: every descriptor is non-blocking and driven by the
loop's reader/writer callbacks. What we hand to the OS is kept small (TCP_NODELAY and a small send
buffer on sockets) and :meth:`LineSession.os_queued` reads what it still holds (TIOCOUTQ/SIOCOUTQ),
so frames wait in our own queues, where interactive traffic can overtake bulk.
"""

from __future__ import annotations

import array
import asyncio
import errno
import logging
import os
import socket
import sys
import time
from abc import ABC, abstractmethod
from typing import AsyncIterator, Callable
from urllib.parse import urlsplit

from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.runtime.listening import listen, passive_addresses

#: POSIX terminals (pseudo-terminals, termios on a serial port's descriptor); Windows has neither,
#: and serves COM ports through pyserial's threads and TCP lines through socket calls
POSIX = sys.platform != "win32"
#: the line ``pty`` stands for where there are no pseudo-terminals
WINDOWS_DEFAULT_LINE = "tcp-listen://127.0.0.1:5555"
if POSIX:
    import fcntl
    import select
    import termios
    import tty

log = logging.getLogger(__name__)

READ_SIZE = 65536
#: reads stop while this much is waiting for the gateway
MAX_BUFFERED = 256 * 1024
#: read batching (see FdSession): a read within BATCH_GAP seconds of the last one continues a
#: stream; BATCH_READS of them in a row make the reader rest BATCH_DELAY seconds between reads
BATCH_GAP = 0.002
BATCH_READS = 3
BATCH_DELAY = 0.001
SOCKET_SEND_BUFFER = 8192
PTY_POLL_INTERVAL = 0.2


LINE_COUNTERS = CounterSet("line", [
    CounterSpec("reads", "reads from the line"),
    CounterSpec("deliveries", "batches of bytes handed to the gateway"),
    CounterSpec("batch_rests", "rests the reader took to batch a busy line's reads"),
])


class LineError(Exception):
    """A line that cannot be opened; ``str()`` is a message fit for a user."""


class LineAccessError(LineError):
    """A line this process may not use (permission denied, the port taken): the message says
    how to fix it; pyslirp exits 1, as for a runtime fault rather than a configuration one."""


#: what to do about an errno when a serial device does not open, for the log and the error
SERIAL_HINTS = {
    errno.ENOENT: "is the adapter plugged in? `ls /dev/serial/by-id/` lists the ones that are",
    errno.ENODEV: "is the adapter plugged in? `ls /dev/serial/by-id/` lists the ones that are",
    errno.EBUSY: "another program has it: `fuser -v {port}` names it",
    errno.EACCES: "add the user to the dialout group: `sudo usermod -a -G dialout $USER`, then log in again",
}


class Reopen:
    """When a line is tried again: at once after a session that lasted, then with capped
    exponential backoff (``first`` seconds doubling up to ``cap``) while opening keeps failing or
    sessions keep ending at once. The log says what fails once per change of it, not per try."""

    #: a session this long resets the backoff
    STABLE = 10.0

    def __init__(self, what: str, first: float = 0.5, cap: float = 30.0) -> None:
        self.what, self.first, self.cap = what, first, cap
        self.tries = 0
        self._delay = 0.0
        self._problem: str | None = None
        self._failing_since = 0.0
        self._opened_at: float | None = None

    def opened(self) -> None:
        """The line is open (again)."""
        now = time.monotonic()
        if self._problem is not None:
            log.info("%s: open again after %.0f s", self.what, now - self._failing_since)
            self._problem = None
        self._opened_at = now

    async def wait(self, problem: str | None = None) -> None:
        """Wait before the next try. ``problem``: why opening failed (None: a session ended)."""
        now = time.monotonic()
        if self._opened_at is not None and now - self._opened_at >= self.STABLE:
            self._delay = 0.0
        self._opened_at = None
        if problem is not None and problem != self._problem:
            if self._problem is None:
                self._failing_since = now
            self._problem = problem
            log.warning("%s: %s; trying again with backoff up to %.0f s", self.what, problem, self.cap)
        self.tries += 1
        if self._delay:
            await asyncio.sleep(self._delay)
        self._delay = min(self.cap, max(self.first, self._delay * 2))


class LineSession(ABC):
    """One continuous connection of a line's byte stream."""

    name: str
    #: bytes per second the line carries, when it has a rate of its own (a serial port's baud rate)
    native_rate: int | None = None
    #: may reads be held back a moment to batch a busy line's bytes? The gateway clears it
    #: while interactive traffic is active, so a keystroke is never held.
    batch_reads: bool = True
    #: how long reads may rest between batches now, seconds: the gateway sets it from the line
    #: budget while a bulk download's ACKs come slowly (0: the session's own batching)
    read_rest: float = 0.0

    @abstractmethod
    async def read(self) -> bytes:
        """The next bytes that arrived; ``b""`` when the other end hung up."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Hand ``data`` to the OS, waiting (without blocking the loop) while it is full."""

    def try_write(self, data: bytes) -> int:
        """Hand ``data`` to the OS without waiting; how many bytes it took (0: use :meth:`write`)."""
        return 0

    async def pump(self, receive: Callable[[bytes], None]) -> None:
        """Hand everything that arrives to ``receive`` until the other end hangs up."""
        while data := await self.read():
            receive(data)

    def os_queued(self) -> int:
        """Bytes the OS still holds unsent below us (0 where it cannot tell)."""
        return 0

    @abstractmethod
    def close(self) -> None:
        """Release the session; reads return ``b""`` afterwards."""


class FdSession(LineSession):
    """A session on a non-blocking file descriptor (socket, pty master, serial port).

    One reader callback stays registered while we want data (no epoll change per read). Under
    :meth:`pump` it hands each read straight to the gateway's receive function (no task switch
    per read); under :meth:`read` bytes gather in a buffer that is handed out whole.

    Read batching: each wake-up of the event loop costs far more than the bytes it brings (a
    Python process woken per frame runs cold), and a busy line wakes us often: an emulated UART
    (QEMU's 16550) hands its socket one byte per write, so a 1,500-byte frame would cost hundreds
    of reads and even a 10-byte ACK ten; a download's ACKs come back a small frame per read, and
    an upload's data a full frame per read. When reads keep coming (BATCH_READS of them, each
    within BATCH_GAP of the last) and :attr:`batch_reads` allows it, the reader hands over what it
    has and then rests BATCH_DELAY (1-2 ms: the event loop's timers count milliseconds) between
    reads, draining what gathered meanwhile (a pty hands over at most 4 KB per read, and holds
    about 18 KB before its writer blocks: a few milliseconds of the fastest line); when a rest
    brings nothing, it reads as bytes arrive again. A slow line's ACK stream comes a read every
    ~18 ms instead: while :attr:`read_rest` is set, the reader rests that long after every read,
    so one wake-up takes several ACKs. Bulk traffic only: the gateway clears :attr:`batch_reads`
    while an interactive flow is active.
    """

    def __init__(
        self, fd: int, name: str, *, owns_fd: bool = True, native_rate: int | None = None, counts_os_queue: bool = True
    ) -> None:
        self.fd = fd
        self.name = name
        self.native_rate = native_rate
        #: False where the OS has no output queue to count (a pty master's TIOCOUTQ is always 0)
        self.counts_os_queue = counts_os_queue
        self._owns_fd = owns_fd
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        #: TIOCOUTQ's answer; a writable buffer, which ioctl takes without first trying (and
        #: failing, with a formatted TypeError) to parse a read-only one
        self._os_queue = array.array("i", [0])
        self._eof = False
        self._reading = False
        self._waiter: asyncio.Future[None] | None = None
        self._receive: Callable[[bytes], None] | None = None
        self._last_read = 0.0
        self._stream_reads = 0
        self._resting = False
        self.counters = {"reads": 0, "deliveries": 0, "batch_rests": 0}
        if POSIX:  # a Windows socket is made non-blocking by its own call (SocketSession)
            os.set_blocking(fd, False)

    async def read(self) -> bytes:
        while not self._buffer:
            if self._eof or self._closed:
                return b""
            self._waiter = self._loop.create_future()
            self._start_reading()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buffer)
        self._buffer.clear()
        if not self._resting:
            self._start_reading()  # it stops while the buffer is full
        return data

    async def pump(self, receive: Callable[[bytes], None]) -> None:
        self._receive = receive
        try:
            while not (self._eof or self._closed):
                if self._buffer:
                    self._deliver()
                    continue
                self._waiter = self._loop.create_future()
                self._start_reading()
                try:
                    await self._waiter  # only hang-up, close, or a failed receive wakes us
                finally:
                    self._waiter = None
        finally:
            self._receive = None

    def _deliver(self) -> None:
        """Hand the buffer to the pump's receive function, or wake :meth:`read`."""
        receive = self._receive
        if receive is None:
            self._wake()
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        self.counters["deliveries"] += 1
        try:
            receive(data)
        except BaseException as exc:
            self._stop_reading()
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)  # raised out of pump(), in the gateway's task
            else:
                raise

    def _start_reading(self) -> None:
        if not self._reading and not self._closed and not self._eof:
            self._reading = True
            self._loop.add_reader(self.fd, self._on_readable)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self.fd)

    def _read_once(self) -> bytes | None:
        """One read into the buffer: the bytes, None when there were none, b"" at the end."""
        try:
            data = self._read_bytes(READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            # EIO: the pty's client closed it; anything else: the device or peer failed.
            if exc.errno != errno.EIO:
                log.warning("%s: read failed: %s", self.name, exc.strerror or exc)
            data = b""
        if not data:
            self._eof = True
            self._stop_reading()
            self._wake()
            return b""
        self.counters["reads"] += 1
        self._buffer += data
        return data

    def _read_bytes(self, size: int) -> bytes:
        return os.read(self.fd, size)

    def _write_bytes(self, data: bytes | memoryview) -> int:
        return os.write(self.fd, data)

    def _on_readable(self) -> None:
        data = self._read_once()
        if not data:
            return
        now = time.monotonic()
        self._stream_reads = self._stream_reads + 1 if now - self._last_read < BATCH_GAP else 0
        self._last_read = now
        if self.batch_reads and (self._stream_reads >= BATCH_READS or self.read_rest):
            self._rest()
        elif len(self._buffer) >= MAX_BUFFERED:
            self._stop_reading()  # the gateway is behind: let the line's flow control act
        self._deliver()

    def _rest(self) -> None:
        """Stop reading for BATCH_DELAY or :attr:`read_rest`; :meth:`_end_rest` takes what
        gathered meanwhile."""
        self.counters["batch_rests"] += 1
        self._stop_reading()
        self._resting = True
        rest = self.read_rest
        self._loop.call_later(rest if rest > BATCH_DELAY else BATCH_DELAY, self._end_rest)

    def _end_rest(self) -> None:
        self._resting = False
        if self._closed or self._eof:
            return
        data = self._read_once()
        if data:
            while data and len(self._buffer) < MAX_BUFFERED:
                data = self._read_once()  # what gathered may take more than one read
            if self._eof:
                self._deliver()
                return
            self._last_read = time.monotonic()
            if self.batch_reads:
                self._rest()  # still streaming: the next batch after another rest
            else:
                self._start_reading()
            self._deliver()
        elif data is None:
            self._stream_reads = 0  # the stream paused: back to reading as bytes arrive
            self._start_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def try_write(self, data: bytes) -> int:
        if self._closed:
            return len(data)
        try:
            return self._write_bytes(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            log.info("%s: write failed: %s", self.name, exc.strerror or exc)
            self.close()
            return len(data)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._closed:
            try:
                sent = self._write_bytes(view)
            except BlockingIOError:
                await self._wait(self._loop.add_writer, self._loop.remove_writer)
                continue
            except OSError as exc:
                log.info("%s: write failed: %s", self.name, exc.strerror or exc)
                self.close()
                return
            view = view[sent:]

    async def _wait(self, add, remove) -> None:
        ready = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        add(self.fd, wake)
        try:
            await ready
        finally:
            if not self._closed:
                remove(self.fd)

    def os_queued(self) -> int:
        if not self.counts_os_queue or not POSIX:
            return 0
        try:
            fcntl.ioctl(self.fd, termios.TIOCOUTQ, self._os_queue, True)
        except OSError:
            return 0
        return self._os_queue[0]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        self._loop.remove_writer(self.fd)
        self._wake()
        if self._owns_fd:
            os.close(self.fd)


class SocketSession(FdSession):
    """A TCP connection; keeps the socket object alive and tunes it for a line."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)
        sock.setblocking(False)
        self._sock = sock
        super().__init__(sock.fileno(), name, owns_fd=False)

    # A socket's own calls: on Windows a socket is not a file descriptor.
    def _read_bytes(self, size: int) -> bytes:
        return self._sock.recv(size)

    def _write_bytes(self, data: bytes | memoryview) -> int:
        return self._sock.send(data)

    def close(self) -> None:
        if not self._closed:
            super().close()
            self._sock.close()


class Line(ABC):
    """A source of sessions; ``describe()`` says how a client attaches."""

    @abstractmethod
    def sessions(self) -> AsyncIterator[LineSession]:
        """Each continuous connection, one at a time."""

    @abstractmethod
    def describe(self) -> str:
        """A line for the log: where the line is and how to attach a client."""

    def close(self) -> None:
        """Stop accepting sessions."""


class TcpListenLine(Line):
    """``tcp-listen://host:port``: accept one client at a time (QEMU's socket chardev, ser2net);
    when it hangs up, the next."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server: socket.socket | None = None
        self.reopen = Reopen(f"line tcp {host}:{port}")

    def open(self) -> None:
        try:
            server = listen(passive_addresses(self.host, self.port)[0], 1)
        except OSError as exc:
            message = f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            if exc.errno == errno.EADDRINUSE:
                raise LineAccessError(f"{message}: another program listens there "
                                      f"(`ss -ltnp 'sport = :{self.port}'` names it)") from None
            if exc.errno == errno.EACCES:
                raise LineAccessError(f"{message}: ports below 1024 need privileges; choose another") from None
            raise LineError(message) from None
        server.setblocking(False)
        self._server = server
        self.port = server.getsockname()[1]

    async def sessions(self) -> AsyncIterator[LineSession]:
        if self._server is None:
            self.open()
        assert self._server is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(self._server)
            except OSError as exc:  # EMFILE, ENOBUFS, ...: the listening socket stays
                await self.reopen.wait(f"accept failed: {exc.strerror or exc}")
                continue
            self.reopen.opened()
            yield SocketSession(sock, f"tcp {peer[0]}:{peer[1]}")

    def describe(self) -> str:
        return f"listening for the line on tcp {self.host}:{self.port} (e.g. qemu -serial tcp:{self.host}:{self.port})"

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


class TcpConnectLine(Line):
    """``socket://host:port``: connect out, and reconnect after a hang-up."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reopen = Reopen(f"line tcp {host}:{port}")

    async def sessions(self) -> AsyncIterator[LineSession]:
        loop = asyncio.get_running_loop()
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (self.host, self.port))
            except OSError as exc:
                sock.close()
                await self.reopen.wait(f"connect failed: {exc.strerror or exc}")
                continue
            self.reopen.opened()
            yield SocketSession(sock, f"tcp {self.host}:{self.port}")
            await self.reopen.wait()

    def describe(self) -> str:
        return f"connecting the line to tcp {self.host}:{self.port}"


class PtyLine(Line):
    """A pseudo-terminal: the client runs ``pppd`` on its slave side.

    While no client has the slave open, the master polls as hung up; we poll until a client opens
    it, and treat EIO on a read after that as a hang-up. The pty itself stays, so the client can dial
    the same path again.
    """

    def __init__(self, baudrate: int = 115200) -> None:
        self.baudrate = baudrate
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.slave_path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)

    async def _client_present(self) -> None:
        # With no process holding the slave side, the master polls as hung up (POLLHUP).
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        while any(events & select.POLLHUP for _, events in poller.poll(0)):
            await asyncio.sleep(PTY_POLL_INTERVAL)

    async def sessions(self) -> AsyncIterator[LineSession]:
        while True:
            await self._client_present()
            yield FdSession(self.master, f"pty {self.slave_path}", owns_fd=False, counts_os_queue=False)
            # A session ends on EIO, i.e. when the client closed the slave; wait out its close.
            await asyncio.sleep(PTY_POLL_INTERVAL)

    def describe(self) -> str:
        return (
            f"serving PPP on pseudo-terminal {self.slave_path}; attach a client with:\n"
            f"    pppd {self.slave_path} {self.baudrate} local noauth nodetach nocrtscts noipdefault defaultroute"
        )

    def close(self) -> None:
        os.close(self.master)


class SerialLine(Line):
    """A serial device through pyserial (any baud rate, optional RTS/CTS), or a pyserial URL.

    A device that is not there (yet), fails to open, or disappears (a USB adapter unplugged: its
    reads fail) is opened again with backoff; only settings pyserial rejects are an error."""

    def __init__(self, port: str, baudrate: int, rtscts: bool = False, xonxoff: bool = False) -> None:
        self.port, self.baudrate, self.rtscts, self.xonxoff = port, baudrate, rtscts, xonxoff
        self.reopen = Reopen(f"serial port {port}")

    def _open(self):
        """The open port; LineError for settings pyserial rejects, SerialException (an
        OSError) when the device cannot be opened now."""
        import serial

        try:
            return serial.serial_for_url(
                self.port, baudrate=self.baudrate, rtscts=self.rtscts, xonxoff=self.xonxoff, timeout=0
            )
        except ValueError as exc:
            raise LineError(f"cannot open serial port {self.port}: {exc}") from None

    async def sessions(self) -> AsyncIterator[LineSession]:
        # 10 bits per byte on the wire: start, 8 data, stop.
        rate = self.baudrate // 10
        opened_once = False
        while True:
            try:
                port = self._open()
            except OSError as exc:  # pyserial's SerialException is one
                problem = f"cannot open: {os.strerror(exc.errno) if exc.errno else exc}"
                hint = SERIAL_HINTS.get(exc.errno or 0)
                if hint is not None:
                    problem += f" ({hint.format(port=self.port)})"
                if exc.errno == errno.EACCES and not opened_once:  # a setup to fix, not a fault to wait out
                    raise LineAccessError(f"serial port {self.port}: {problem}") from None
                await self.reopen.wait(problem)
                continue
            opened_once = True
            self.reopen.opened()
            try:
                fd = port.fileno()
            except Exception:  # pyserial URL handlers without a descriptor (rfc2217://, loop://)
                fd = None
            if fd is not None:
                _read_at_least_one_byte(fd)
            try:
                if fd is not None:
                    yield FdSession(fd, f"serial {self.port}", owns_fd=False, native_rate=rate)
                else:
                    yield ThreadedSerialSession(port, f"serial {self.port}", native_rate=rate)
            finally:
                try:
                    port.close()
                except OSError:
                    pass  # the device is gone
            await self.reopen.wait()

    def describe(self) -> str:
        flow = " rtscts" if self.rtscts else ""
        return f"serving PPP on serial port {self.port} at {self.baudrate} baud{flow}"


def _read_at_least_one_byte(fd: int) -> None:
    """VMIN=1, VTIME=0 on a tty: pyserial's ``timeout=0`` sets VMIN=0, with which a tty polls as
    readable while it has nothing and a read returns 0 bytes, which would look like a hang-up. With
    VMIN=1 a non-blocking read of nothing fails with EAGAIN, and 0 bytes means the device hung up."""
    if not POSIX:
        return
    try:
        attributes = termios.tcgetattr(fd)
        attributes[6][termios.VMIN], attributes[6][termios.VTIME] = 1, 0
        termios.tcsetattr(fd, termios.TCSANOW, attributes)
    except termios.error:
        pass  # not a tty (a pyserial URL over a socket)


class ThreadedSerialSession(LineSession):
    """A pyserial port with no file descriptor, driven from worker threads."""

    def __init__(self, port, name: str, native_rate: int | None = None) -> None:
        self._port = port
        self.name = name
        self.native_rate = native_rate
        self._closed = False
        port.timeout = 0.2

    async def read(self) -> bytes:
        while not self._closed:
            try:
                data = await asyncio.to_thread(self._port.read, READ_SIZE)
            except Exception as exc:  # pyserial raises SerialException and OSError subclasses
                log.warning("%s: read failed: %s", self.name, exc)
                return b""
            if data:
                return data
        return b""

    async def write(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            await asyncio.to_thread(self._port.write, data)
        except Exception as exc:
            log.warning("%s: write failed: %s", self.name, exc)
            self.close()

    def close(self) -> None:
        self._closed = True


def open_line(port: str, baudrate: int = 115200, rtscts: bool = False, xonxoff: bool = False) -> Line:
    """The line the ``serial.port`` setting names."""
    if port == "pty":
        if not POSIX:  # no pseudo-terminals (Windows): still something a client can attach to
            log.warning("pseudo-terminals need a POSIX system: serving the line on %s instead "
                        "(name a COM port to serve one: pyslirp serve COM3)", WINDOWS_DEFAULT_LINE)
            return open_line(WINDOWS_DEFAULT_LINE)
        return PtyLine(baudrate)
    if "://" in port:
        url = urlsplit(port)
        if url.scheme in ("tcp-listen", "socket"):
            if url.hostname is None or url.port is None:
                raise LineError(f"{port}: expected {url.scheme}://HOST:PORT")
            if url.scheme == "tcp-listen":
                line = TcpListenLine(url.hostname, url.port)
                line.open()
                return line
            return TcpConnectLine(url.hostname, url.port)
    return SerialLine(port, baudrate, rtscts, xonxoff)
