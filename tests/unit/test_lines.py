"""Lines: TCP listen/connect, the pseudo-terminal with redial, and the line scheduler's priorities."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys

import pytest

from pyslirp.runtime.lines import (
    FdSession, Line, LineError, LineSession, PtyLine, Reopen, SerialLine, TcpConnectLine, TcpListenLine, open_line,
)
from pyslirp.runtime.scheduler import LineScheduler, Priority


async def test_tcp_listen_serves_one_client_after_another() -> None:
    line = open_line("tcp-listen://127.0.0.1:0")
    assert isinstance(line, TcpListenLine)
    sessions = line.sessions()
    for round_ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", line.port)
        session = await asyncio.wait_for(sessions.__anext__(), 5)
        writer.write(b"hello %d" % round_)
        await writer.drain()
        assert await asyncio.wait_for(session.read(), 5) == b"hello %d" % round_
        await session.write(b"back")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"back"
        writer.close()
        assert await asyncio.wait_for(session.read(), 5) == b""  # hang-up
        session.close()
    line.close()


async def test_os_queued_counts_what_the_socket_still_holds() -> None:
    """What the OS holds below us (SIOCOUTQ): 0 once the client has read everything, and what
    is stuck in the send queue while the client reads nothing."""
    line = open_line("tcp-listen://127.0.0.1:0")
    reader, writer = await asyncio.open_connection("127.0.0.1", line.port)
    session = await asyncio.wait_for(line.sessions().__anext__(), 5)
    assert session.os_queued() == 0
    while session.try_write(bytes(65536)):  # until the client's window and our buffer are full
        await asyncio.sleep(0)
    assert session.os_queued() > 0
    writer.close()
    session.close()
    line.close()


async def test_tcp_connect_line_retries_until_the_server_is_there() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    line = TcpConnectLine("127.0.0.1", port)
    line.reopen.first = 0.05
    accepted: asyncio.Queue = asyncio.Queue()

    async def start_later() -> asyncio.AbstractServer:
        await asyncio.sleep(0.2)
        return await asyncio.start_server(lambda r, w: accepted.put_nowait((r, w)), "127.0.0.1", port)

    server_task = asyncio.create_task(start_later())
    session = await asyncio.wait_for(line.sessions().__anext__(), 5)
    server = await server_task
    reader, writer = await asyncio.wait_for(accepted.get(), 5)
    await session.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    session.close()
    writer.close()
    server.close()


async def test_pty_client_can_hang_up_and_dial_again() -> None:
    line = PtyLine()
    assert "pppd " + line.slave_path in line.describe()
    sessions = line.sessions()
    with pytest.raises(asyncio.TimeoutError):  # no client yet: no session
        await asyncio.wait_for(sessions.__anext__(), 0.5)
    sessions = line.sessions()
    for round_ in range(2):
        client = os.open(line.slave_path, os.O_RDWR | os.O_NOCTTY)
        session = await asyncio.wait_for(sessions.__anext__(), 5)
        os.write(client, b"\x7e\x01\x02\x7e")
        assert await asyncio.wait_for(session.read(), 5) == b"\x7e\x01\x02\x7e"
        await session.write(b"\x7e\x03\x7e")
        await asyncio.sleep(0.05)
        assert os.read(client, 100) == b"\x7e\x03\x7e"
        os.close(client)
        assert await asyncio.wait_for(session.read(), 5) == b""
        session.close()
    line.close()


def test_bad_line_names() -> None:
    with pytest.raises(LineError, match="HOST:PORT"):
        open_line("tcp-listen://127.0.0.1")
    with pytest.raises(LineError, match="cannot listen"):
        open_line("tcp-listen://192.0.2.1:5555")  # not an address of this machine


class RecordingSession(LineSession):
    name = "recording"
    native_rate = None

    def __init__(self, takes: int = 0) -> None:
        self.writes: list[bytes] = []
        self.gate = asyncio.Event()
        self.takes = takes  # how much try_write accepts at once

    def try_write(self, data: bytes) -> int:
        taken = data[: self.takes]
        if taken:
            self.writes.append(taken)
        return len(taken)

    async def read(self) -> bytes:
        return b""

    async def write(self, data: bytes) -> None:
        await self.gate.wait()
        self.writes.append(data)

    def os_queued(self) -> int:
        return 0

    def close(self) -> None:
        pass


async def test_scheduler_sends_control_then_interactive_then_bulk() -> None:
    session = RecordingSession()
    scheduler = LineScheduler(session, rate=1_000_000)  # rated: one frame per write
    task = asyncio.create_task(scheduler.run())
    scheduler.send(b"B1", Priority.BULK)
    scheduler.kick()
    await asyncio.sleep(0)  # the writer takes B1 and waits on the gate
    scheduler.send(b"B2", Priority.BULK)
    scheduler.send(b"I1", Priority.INTERACTIVE)
    scheduler.send(b"C1", Priority.CONTROL)
    scheduler.send(b"I2", Priority.INTERACTIVE)
    scheduler.kick()
    session.gate.set()
    while len(session.writes) < 5:
        await asyncio.sleep(0.001)
    assert session.writes == [b"B1", b"C1", b"I1", b"I2", b"B2"]
    scheduler.close()
    await task


async def test_unpaced_scheduler_writes_at_once_and_the_task_finishes_a_partial_write() -> None:
    session = RecordingSession(takes=5)
    scheduler = LineScheduler(session)
    task = asyncio.create_task(scheduler.run())
    scheduler.send(b"BBBB", Priority.BULK)
    scheduler.send(b"III", Priority.INTERACTIVE)
    scheduler.kick()
    assert session.writes == [b"IIIBB"]  # one write, in priority order, no task switch
    scheduler.send(b"CC", Priority.CONTROL)
    scheduler.kick()  # the OS took part of the batch: the rest goes first, through the task
    assert session.writes == [b"IIIBB"]
    session.gate.set()
    while b"".join(session.writes) != b"IIIBBBBCC":
        await asyncio.sleep(0.001)
    assert scheduler.counters["bytes_sent"] == 9
    scheduler.close()
    await task


class QueueingSession(RecordingSession):
    """Takes every write; the OS queue below holds ``held`` bytes, and each ask is counted."""

    def __init__(self) -> None:
        super().__init__(takes=1 << 20)
        self.held = 0
        self.asked = 0

    def os_queued(self) -> int:
        self.asked += 1
        return self.held


async def test_scheduler_asks_the_os_queue_only_when_it_may_be_over_its_limit() -> None:
    session = QueueingSession()
    scheduler = LineScheduler(session)
    limit = scheduler.os_queue_limit
    frame = bytes(100)

    def write() -> None:
        scheduler.send(frame, Priority.INTERACTIVE)
        scheduler.kick()

    written = 0
    while written <= limit:  # all it was given so far fits the limit: the OS is not asked
        write()
        written += len(frame)
    assert session.asked == 0 and len(session.writes) == written // len(frame)
    session.held = 150
    write()  # it may hold more than the limit now: asked, it holds 150, and the frame goes
    assert session.asked == 1 and len(session.writes) == written // len(frame) + 1
    write()  # at most 150 + 100 + 100: not asked
    assert session.asked == 1
    session.held = limit + 1
    while session.asked == 1:
        write()
    writes = len(session.writes)
    write()  # it holds more than the limit: the frame waits in our queue for the writer task
    assert len(session.writes) == writes and scheduler.queued(Priority.INTERACTIVE) == 2 * len(frame)
    scheduler.close()


async def test_scheduler_bounds_bulk_and_counts_the_drop() -> None:
    scheduler = LineScheduler(RecordingSession(), bulk_limit=3000)
    assert scheduler.send(b"x" * 1500)
    assert scheduler.send(b"x" * 1500)
    assert scheduler.bulk_room() == 0
    assert not scheduler.send(b"x" * 1500)
    assert scheduler.send(b"y" * 1500, Priority.INTERACTIVE)  # interactive is not held back
    assert scheduler.counters["bulk_dropped"] == 1
    scheduler.close()
    assert not scheduler.send(b"z")
    assert scheduler.counters["frames_dropped_closed"] == 1


async def test_serial_line_through_pyserial_on_a_pty_device() -> None:
    master, slave = os.openpty()
    line = open_line(os.ttyname(slave), baudrate=9600)
    assert isinstance(line, SerialLine)
    sessions = line.sessions()  # held: closing the generator closes the port
    session = await asyncio.wait_for(sessions.__anext__(), 5)
    assert session.native_rate == 960  # 10 bits a byte
    # A quiet line is not a hung-up one (pyserial's VMIN=0 would make it read 0 bytes at once).
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(session.read(), 0.3)
    os.write(master, b"\x7eframe\x7e")
    assert await asyncio.wait_for(session.read(), 5) == b"\x7eframe\x7e"
    await session.write(b"\x7ereply\x7e")
    await asyncio.sleep(0.05)
    assert os.read(master, 100) == b"\x7ereply\x7e"
    session.close()
    os.close(master)
    os.close(slave)


async def test_serial_url_without_a_descriptor_runs_in_threads() -> None:
    line = open_line("loop://", baudrate=115200)
    sessions = line.sessions()
    session = await asyncio.wait_for(sessions.__anext__(), 5)
    await session.write(b"\x7eloopback\x7e")
    assert await asyncio.wait_for(session.read(), 5) == b"\x7eloopback\x7e"
    session.close()


async def test_serial_settings_pyserial_rejects_are_a_clear_error() -> None:
    line = open_line("/dev/ttyS0", baudrate=-5)
    with pytest.raises(LineError, match="cannot open serial port /dev/ttyS0"):
        await line.sessions().__anext__()


async def test_a_serial_device_absent_at_start_or_unplugged_is_opened_again_with_backoff(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """The device path is a link to a pty's slave, as udev's stable names are: absent at first,
    then there, then gone (the pty closed: reads fail, as an unplugged adapter's do), then back."""
    caplog.set_level(logging.INFO)
    device = tmp_path / "ttyUSB0"
    line = open_line(str(device), baudrate=115200)
    line.reopen.first, line.reopen.cap = 0.01, 0.04
    sessions = line.sessions()
    next_session = asyncio.ensure_future(sessions.__anext__())
    await asyncio.sleep(0.3)
    assert not next_session.done() and line.reopen.tries >= 5
    for _round in range(2):
        master, slave = os.openpty()
        device.symlink_to(os.ttyname(slave))
        session = await asyncio.wait_for(next_session, 5)
        os.close(slave)
        os.write(master, b"\x7ehello\x7e")
        assert await asyncio.wait_for(session.read(), 5) == b"\x7ehello\x7e"
        os.close(master)  # unplugged
        device.unlink()
        assert await asyncio.wait_for(session.read(), 5) == b""
        session.close()
        next_session = asyncio.ensure_future(sessions.__anext__())
        await asyncio.sleep(0.2)
        assert not next_session.done()
    next_session.cancel()
    warnings = [r.getMessage() for r in caplog.records if "trying again" in r.getMessage()]
    assert len(warnings) == 3, warnings  # one per outage, not one per try
    assert f"serial port {device}: cannot open: No such file or directory" in warnings[0]
    assert any("open again after" in r.getMessage() for r in caplog.records)


async def test_reopen_backs_off_exponentially_to_its_cap_and_starts_over_after_a_stable_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    reopen = Reopen("line", first=0.5, cap=4.0)
    for _ in range(6):
        await reopen.wait("cannot open: gone")
    assert slept == [0.5, 1.0, 2.0, 4.0, 4.0]  # the first retry at once
    reopen.opened()
    await reopen.wait()  # a session that ended at once: still backing off
    assert slept[-1] == 4.0
    reopen.opened()
    reopen._opened_at -= Reopen.STABLE  # it lasted
    slept.clear()
    await reopen.wait()
    await reopen.wait()
    assert slept == [0.5]


TRICKLE_WRITER = """
import os, sys, time
fd = int(sys.argv[1])
for i in range(3000):
    os.write(fd, bytes([i % 251]))
    end = time.perf_counter() + 0.00001
    while time.perf_counter() < end:
        pass
"""


@pytest.mark.parametrize("batch", [True, False])
async def test_bytes_that_trickle_in_are_read_in_batches_unless_interactive(batch: bool) -> None:
    """An emulated UART hands over a byte per write: the session rests and batches reads,
    unless the gateway says interactive traffic is active. Nothing is lost or reordered."""
    ours, theirs = socket.socketpair()
    session = FdSession(ours.fileno(), "trickle", owns_fd=False)
    session.batch_reads = batch
    received = bytearray()
    pump = asyncio.ensure_future(session.pump(received.extend))
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", TRICKLE_WRITER, str(theirs.fileno()), pass_fds=(theirs.fileno(),))
    assert await asyncio.wait_for(writer.wait(), 30) == 0
    deadline = asyncio.get_running_loop().time() + 5
    while len(received) < 3000 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert bytes(received) == bytes(i % 251 for i in range(3000))
    if batch:
        assert session.counters["batch_rests"] > 0
        assert session.counters["reads"] < 3000 / 4
    else:
        assert session.counters["batch_rests"] == 0
    theirs.close()
    await asyncio.wait_for(pump, 5)  # the writer's end closed: the pump returns
    session.close()
    ours.close()


ACK_WRITER = """
import os, sys, time
fd = int(sys.argv[1])
for i in range(40):
    os.write(fd, bytes([i]) * 10)
    time.sleep(0.01)
"""


@pytest.mark.parametrize("interactive", [False, True])
async def test_a_slow_ack_stream_is_read_a_rest_at_a_time_unless_interactive(interactive: bool) -> None:
    """A download's ACKs on a slow line come a small read every ~10-20 ms. While the gateway
    sets ``read_rest`` (from the line budget), the session rests that long after each read and
    takes what gathered in one delivery; while interactive, every read is delivered at once."""
    ours, theirs = socket.socketpair()
    session = FdSession(ours.fileno(), "acks", owns_fd=False)
    session.batch_reads = not interactive
    session.read_rest = 0.05
    received = bytearray()
    pump = asyncio.ensure_future(session.pump(received.extend))
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ACK_WRITER, str(theirs.fileno()), pass_fds=(theirs.fileno(),))
    assert await asyncio.wait_for(writer.wait(), 30) == 0
    expected = b"".join(bytes([i]) * 10 for i in range(40))
    deadline = asyncio.get_running_loop().time() + 5
    while len(received) < len(expected) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert bytes(received) == expected
    if interactive:
        assert session.counters["batch_rests"] == 0
        assert session.counters["deliveries"] > 40 / 2
    else:
        assert session.counters["batch_rests"] > 0
        assert session.counters["deliveries"] < 40 / 2  # several ACKs per wake-up
    theirs.close()
    await asyncio.wait_for(pump, 5)
    session.close()
    ours.close()


FRAME_WRITER = """
import os, sys, time
fd = int(sys.argv[1])
for i in range(400):
    block = bytes([i % 251]) * 1500
    while block:
        block = block[os.write(fd, block):]
    end = time.perf_counter() + 0.0001
    while time.perf_counter() < end:
        pass
"""


async def test_full_frames_streaming_through_a_pty_are_drained_in_batches() -> None:
    """An upload streams full frames, one per read of a pty; resting between reads takes several
    per wake-up, and each rest drains all that gathered although a pty read returns at most
    4 KB. Nothing is lost or reordered, and the writer is never held up for good."""
    import pty
    import tty

    master, slave = pty.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    session = FdSession(master, "pty-upload", owns_fd=False)
    session.batch_reads = True
    received = bytearray()
    pump = asyncio.ensure_future(session.pump(received.extend))
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FRAME_WRITER, str(slave), pass_fds=(slave,))
    assert await asyncio.wait_for(writer.wait(), 30) == 0
    expected = b"".join(bytes([i % 251]) * 1500 for i in range(400))
    deadline = asyncio.get_running_loop().time() + 5
    while len(received) < len(expected) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert bytes(received) == expected
    assert session.counters["batch_rests"] > 0
    assert session.counters["deliveries"] < 400 / 2  # several frames per wake-up
    assert session.counters["reads"] > session.counters["deliveries"]  # a rest drains with several reads
    os.close(slave)
    await asyncio.wait_for(pump, 5)
    session.close()
    os.close(master)


async def test_a_line_fault_its_retries_did_not_foresee_never_ends_the_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from pyslirp.config import PyslirpConfig
    from pyslirp.runtime import server as server_module

    monkeypatch.setattr(server_module, "LINE_RESTART_DELAY", 0.01)
    served: list[str] = []

    class FlakyLine(Line):
        """Fails twice as no line class expects, then gives a session that hangs up at once."""

        def __init__(self) -> None:
            self.opened = 0

        async def sessions(self):
            self.opened += 1
            if self.opened <= 2:
                raise RuntimeError("driver bug")
            ours, theirs = socket.socketpair()
            theirs.close()
            served.append("session")
            yield FdSession(ours.detach(), "flaky")
            await asyncio.Event().wait()  # no further client

        def describe(self) -> str:
            return "a flaky line"

    server = server_module.Server(PyslirpConfig(dns={"enabled": False}), FlakyLine())
    serving = asyncio.ensure_future(server._serve_line(server.lines[0]))
    deadline = asyncio.get_running_loop().time() + 5
    while not served or server.gateway is not None:
        assert asyncio.get_running_loop().time() < deadline and not serving.done()
        await asyncio.sleep(0.01)
    assert not serving.done()
    serving.cancel()
    failures = [r for r in caplog.records if "line failed; opening it again" in r.getMessage()]
    assert len(failures) == 2


def test_serve_runs_on_the_event_loop_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyslirp.runtime import server as server_module

    monkeypatch.setattr(asyncio, "set_event_loop_policy", lambda policy: None)  # this process keeps its own
    for choice, running in (("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")):
        assert server_module._install_event_loop_policy(choice) == running
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed
    assert server_module._install_event_loop_policy("auto") == "asyncio"
    with pytest.raises(server_module.LoopError, match="uvloop is not installed"):
        server_module._install_event_loop_policy("uvloop")
    # Windows: asyncio's selector loop, whose add_reader the lines use (its default, Proactor, has none)
    policies: list[object] = []
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(asyncio, "WindowsSelectorEventLoopPolicy", lambda: "selector", raising=False)
    monkeypatch.setattr(asyncio, "set_event_loop_policy", policies.append)
    assert server_module._install_event_loop_policy("auto") == "asyncio" and policies == ["selector"]


WINDOWS_SIMULATION = """
import asyncio, sys
sys.platform = "win32"
for posix_only in ("fcntl", "termios", "tty", "select"):
    sys.modules[posix_only] = None  # ImportError, as on Windows
from pyslirp.runtime.lines import POSIX, TcpListenLine, open_line
assert not POSIX
default = open_line("pty")  # the default line: no pseudo-terminals, a TCP line to attach to
assert isinstance(default, TcpListenLine) and (default.host, default.port) == ("127.0.0.1", 5555), default
default.close()

async def round_trip():
    line = open_line("tcp-listen://127.0.0.1:0")
    reader, writer = await asyncio.open_connection("127.0.0.1", line.port)
    session = await line.sessions().__anext__()
    writer.write(b"\\x7eframe\\x7e")
    assert await session.read() == b"\\x7eframe\\x7e"
    await session.write(b"\\x7ereply\\x7e")
    assert await reader.readexactly(7) == b"\\x7ereply\\x7e"
    assert session.os_queued() == 0
    session.close()
    line.close()

asyncio.run(round_trip())
print("ok")
"""


def test_on_windows_lines_import_without_posix_terminals_and_tcp_lines_use_socket_calls() -> None:
    """Windows cannot run here: a process that looks like it (sys.platform, and the POSIX-only
    modules failing to import) imports the lines, serves the default line on TCP, and moves bytes
    over a TCP line with socket calls."""
    result = subprocess.run([sys.executable, "-c", WINDOWS_SIMULATION], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_where_the_loop_takes_no_signal_handlers_ctrl_c_still_reaches_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows: the loop's add_signal_handler is not implemented and only SIGINT, SIGTERM and
    SIGBREAK exist; Ctrl+C (SIGINT) must still run the shutdown in the loop."""
    import signal

    from pyslirp.runtime.server import install_signal_handlers

    for posix_only in ("SIGHUP", "SIGUSR1", "SIGUSR2"):
        monkeypatch.delattr(signal, posix_only)
    previous = signal.getsignal(signal.SIGINT)
    loop = asyncio.new_event_loop()

    def not_implemented(signum: int, callback) -> None:
        raise NotImplementedError

    monkeypatch.setattr(loop, "add_signal_handler", not_implemented)
    stopped: list[str] = []
    try:
        taken = install_signal_handlers(loop, {
            "SIGINT": lambda: stopped.append("stop"), "SIGHUP": lambda: stopped.append("reload"),
        })
        assert taken == ["SIGINT"]
        signal.raise_signal(signal.SIGINT)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert stopped == ["stop"]
    finally:
        signal.signal(signal.SIGINT, previous)
        loop.close()


def test_a_taken_tcp_port_exits_1_with_the_fix_and_no_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "pyslirp", "serve", f"tcp-listen://127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, cwd="/",
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use: another program listens there" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_serial_port_the_user_may_not_open_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import serial

    from pyslirp.runtime.lines import LineAccessError

    def denied(*args: object, **kwargs: object) -> None:
        raise serial.SerialException(errno.EACCES, "could not open port /dev/ttyUSB0: [Errno 13] Permission denied")

    monkeypatch.setattr(serial, "serial_for_url", denied)
    line = open_line("/dev/ttyUSB0")
    with pytest.raises(LineAccessError, match="Permission denied .*dialout group"):
        await line.sessions().__anext__()
