"""Robustness against Linux pppd: a service that never accepts, a service faster than the line,
and garbage on the line.

* A service whose listening socket's backlog is full (connects to it hang) and whose config says
  ``connect_timeout: 2``: the client's connect is answered with a RST after about 2 s, while a
  download through another service, running at the same time, completes intact.
* A host service writing as fast as its socket takes data, to a client reading through a line
  paced at 115200 baud, for 60 s: the service is held back (what its socket accepted is what
  crossed the line plus bounded buffers, and stops growing faster than the line), and pyslirp's
  own buffers (TCP send buffer, proxy, line queue) and memory stay within their bounds.
* Bytes injected on the line toward pyslirp while a ping runs — random noise, truncated frames,
  frames with a bad FCS, an aborted frame, a frame too short, one of 12 KB without a flag, and
  well-formed frames with nonsense inside: the link stays up, the ping keeps answering, and each
  damaged frame is counted by the deframer under its reason.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import select
import socket
import struct
import termios
import threading
import time
from contextlib import contextmanager

import rig
from dial import PPPD_QUIET as PPPD
from pyslirp_proc import PyslirpProcess
from shim import DOWN, UP, Frame, LineShim, fcs16
from test_data_path import FileServer, services, sha


UPTIME = "$(cut -d' ' -f1 /proc/uptime)"


# -- a. a service that never accepts -------------------------------------------------------------


@contextmanager
def unresponsive_listener():
    """A listening socket with backlog 0 whose accept queue is full: the kernel drops further
    SYNs, so a connect to it hangs. Yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    addr = listener.getsockname()
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            fillers.append(s)
            if s.connect_ex(addr) not in (0, 115):  # EINPROGRESS
                raise AssertionError("filler connect failed")
            _, writable, _ = select.select([], [s], [], 0.5)
            if not writable:
                break  # this one hangs: the queue is full
        else:
            raise AssertionError("could not fill the listener's accept queue")
        yield addr[1]
    finally:
        for s in fillers:
            s.close()
        listener.close()


def tcp_flags_to_port(frame: Frame, port: int) -> tuple[str, int] | None:
    """(direction, TCP flags) of a plain-IP frame of a TCP segment to or from ``port``."""
    if frame.protocol != 0x0021 or not frame.fcs_ok:
        return None
    ip = frame.info
    if len(ip) < 40 or ip[9] != 6:
        return None
    ihl = (ip[0] & 0x0F) * 4
    sport, dport = struct.unpack_from("!HH", ip, ihl)
    return (frame.direction, ip[ihl + 13]) if port in (sport, dport) else None


async def test_slow_service_connect_times_out_while_others_flow(rig_image, rig_accel) -> None:
    """The shim paces the line at 500 kbaud (50 kB/s) and pyslirp is told the line's rate
    (``serial.line_rate``, a little below it), so that what is on its way to the guest waits in
    pyslirp's queues, where the RST overtakes the download — not in socket buffers between
    pyslirp and the guest's UART, where it would wait behind the bulk data already there (on a
    line of unknown rate up to a 16 KiB write batch, 4 KiB of OS queue and the peer's socket
    buffer: ~0.9 s at this rate)."""
    blob = os.urandom(256 << 10)
    seen: list[tuple[float, str, int]] = []  # (time, direction, flags) of port 82 segments

    def tap(frame: Frame) -> None:
        if (hit := tcp_flags_to_port(frame, 82)) is not None:
            seen.append((time.monotonic(), *hit))

    with unresponsive_listener() as slow_port, FileServer({"blob": blob}) as http:
        config = services(p80=http.port)
        config["services"][82] = {"host": "127.0.0.1", "port": slow_port, "connect_timeout": 2}
        config["serial"] = {"line_rate": 48_000}
        async with PyslirpProcess(config, debug=False) as server:
            async with LineShim(upstream_port=server.port, baud=500_000) as shim:
                shim.tap(tap)
                script = f"""
{PPPD} &
PPPD_PID=$!
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
wget -q -O /tmp/blob http://10.0.0.1/blob & W=$!
T0={UPTIME}
OUT=$(nc -w 10 10.0.0.1 82 </dev/null 2>&1); RC=$?
T1={UPTIME}
kill -0 $W 2>/dev/null; result wget_running_after_nc $(( $? == 0 ))
result slow "$OUT rc=$RC"
result slow_seconds "$(awk -v a=$T0 -v b=$T1 'BEGIN {{ printf "%.2f", b - a }}')"
wait $W; result wget $?
result sha "$(sha256sum /tmp/blob | cut -d' ' -f1)"
kill $PPPD_PID; wait $PPPD_PID || true
"""
                res = await rig.run_vm_async(rig_image, script, line="16550", line_port=shim.port, timeout=120,
                                             accel=rig_accel, name="slow-service")
            timeouts = server.find(r"service 127\.0\.0\.1:\d+ unavailable: timeout")
    res.check()
    r = res.results
    syns = [t for t, d, flags in seen if d == UP and flags & 0x12 == 0x02]
    rsts = [t for t, d, flags in seen if d == DOWN and flags & 0x04]
    print(f"\nslow service: {r['slow']!r} after {r['slow_seconds']} s (guest clock); "
          f"download still running then: {r['wget_running_after_nc']}; on the line: "
          f"{len(syns)} SYN, {len(rsts)} RST, first RST {rsts[0] - syns[0]:.2f} s after the first SYN")
    assert "refused" in r["slow"].lower() or "reset" in r["slow"].lower()
    assert 1.9 <= rsts[0] - syns[0] <= 2.5  # connect_timeout: 2
    assert 1.5 <= float(r["slow_seconds"]) <= 4.0  # not the 10 s of nc -w
    assert len(rsts) == 1 and len(timeouts) == 1  # the first RST ended the client's connect
    assert r["wget_running_after_nc"] == "1"  # the two really overlapped
    assert r["wget"] == "0"
    assert r["sha"] == sha(blob)


# -- b. a service faster than the line ---------------------------------------------------------


class FastService:
    """A TCP service on 127.0.0.1 that writes to its first client as fast as its socket takes
    data, counting the bytes the socket accepted."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.connected = threading.Event()
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.conn = conn
        self.connected.set()
        chunk = os.urandom(64 * 1024)
        try:
            while True:
                self.accepted += conn.send(chunk)
        except OSError:
            pass

    def __enter__(self) -> "FastService":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        if self.conn is not None:
            try:
                self.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.conn.close()
        self.thread.join(5)


def unsent(sock: socket.socket) -> int:
    """Bytes in a TCP socket's send queue not yet acknowledged by the peer (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def unread(local_port: int, remote_port: int) -> int:
    """Bytes waiting in the receive queue of the loopback TCP socket local_port -> remote_port
    (another process's: from /proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, queues = fields[1], fields[2], fields[4]
            if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
                return int(queues.split(":")[1], 16)
    return 0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


MEASURE = 60.0
SAMPLE_EVERY = 10.0
SEND_BUFFER = 256 * 1024  # tcp.send_buffer
READ_SIZE = 256 * 1024  # the most one read from the service socket brings (the proxy holds it)
BULK_LIMIT = 64 * 1024  # the line scheduler's bulk queue on a line of unknown rate


async def test_memory_stays_bounded_behind_a_slow_line(rig_image, rig_accel) -> None:
    """What the service's socket accepted is split, at each sample, into where it is: still in
    the service's own kernel send queue (its business, up to net.ipv4.tcp_wmem's 4 MiB), in the
    kernel receive queue of pyslirp's socket, in pyslirp's buffers (the connection's send buffer,
    the proxy's pending read, the line queue), or gone over the line."""
    samples: list[dict] = []
    with FastService() as service:
        async with PyslirpProcess(services(p83=service.port), debug=False) as server:
            async with LineShim(upstream_port=server.port, baud=115200) as shim:
                script = f"""
{PPPD} &
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
nc 10.0.0.1 83 > /dev/null &
sleep 600
"""
                async with rig.VM(rig_image, script, line="16550", line_port=shim.port, timeout=MEASURE + 120,
                                  accel=rig_accel, name="slow-line") as vm:
                    await vm.wait_result("up", timeout=60)
                    assert await asyncio.to_thread(service.connected.wait, 30), "the client never connected"
                    assert service.conn is not None
                    pyslirp_port = service.conn.getpeername()[1]
                    t0 = time.monotonic()
                    while len(samples) <= MEASURE / SAMPLE_EVERY:  # at 0, 10, ... 60 s
                        await asyncio.sleep(max(0.0, len(samples) * SAMPLE_EVERY - (time.monotonic() - t0)))
                        stats = await server.stats()
                        net = stats["session"]["network"]
                        samples.append({
                            "t": round(time.monotonic() - t0, 1),
                            "accepted": service.accepted,
                            "service_unsent": unsent(service.conn),
                            "pyslirp_unread": unread(pyslirp_port, service.port),
                            "tcp_send_buffered": net["tcp_send_buffered"],
                            "proxy_pending": net["proxy_pending"],
                            "queued_bulk": stats["session"]["queued"]["bulk"],
                            "line_down": shim.stats[DOWN].bytes_out,
                            "rss_kib": rss_kib(server._proc.pid),
                            "connections": net["connections"],
                            "bulk_dropped": stats["counters"]["scheduler"]["bulk_dropped"],
                        })
                    final_stats = stats
                    await vm.kill()
            assert server.returncode is None  # still serving
    print()
    for s in samples:
        print(s)
    print(f"tcp {final_stats['counters']['tcp']}")
    first, last = samples[0], samples[-1]
    # the line carried what 115200 baud carries: 11.5 kB/s
    rate = (last["line_down"] - first["line_down"]) / (last["t"] - first["t"])
    assert 9_000 < rate < 12_000, rate
    for s in samples:
        # pyslirp's own buffers stay within their bounds
        assert s["connections"] == 1
        assert s["tcp_send_buffered"] <= SEND_BUFFER, s
        assert s["proxy_pending"] <= READ_SIZE, s
        assert s["queued_bulk"] <= BULK_LIMIT, s
        # what pyslirp took off the service's socket is what crossed the line plus bounded buffers
        taken = s["accepted"] - s["service_unsent"]
        assert taken <= s["line_down"] + (4 << 20), s
        held = s["pyslirp_unread"] + s["tcp_send_buffered"] + s["proxy_pending"] + s["queued_bulk"]
        assert held <= 4 << 20, s
    # the service is held back: over the last 20 s what its socket accepted grew no faster than
    # the line carried data away, give or take one read of pyslirp's socket (the kernel refills
    # its fixed receive buffer at once, and the read drains over the line for ~20 s)
    before = next(s for s in samples if s["t"] >= last["t"] - 20 - 1)
    grown = last["accepted"] - before["accepted"]
    assert grown <= last["line_down"] - before["line_down"] + READ_SIZE + 64 * 1024, (before, last)
    # and pyslirp's memory did not grow with what the service tried to send
    assert last["rss_kib"] - samples[1]["rss_kib"] < 8 * 1024, (samples[1], last)


# -- c. garbage on the line --------------------------------------------------------------------


def stuff(data: bytes) -> bytes:
    """RFC 1662 byte stuffing, escaping every control character (any ACCM accepts it)."""
    out = bytearray()
    for b in data:
        if b < 0x20 or b in (0x7D, 0x7E):
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def with_fcs(frame: bytes) -> bytes:
    fcs = fcs16(frame) ^ 0xFFFF
    return frame + bytes((fcs & 0xFF, fcs >> 8))


def ip_checksum(header: bytes) -> int:
    s = sum(int.from_bytes(header[i:i + 2], "big") for i in range(0, len(header), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def echo_request_datagram() -> bytes:
    """An ICMP echo request from the client (10.0.0.2) to us (10.0.0.1)."""
    icmp = bytearray(b"\x08\x00\x00\x00\x12\x34\x00\x01" + b"pyslirp garbage test")
    icmp[2:4] = ip_checksum(bytes(icmp)).to_bytes(2, "big")
    header = bytearray(b"\x45\x00" + (20 + len(icmp)).to_bytes(2, "big") + b"\x00\x01\x00\x00\x40\x01\x00\x00"
                       + bytes([10, 0, 0, 2]) + bytes([10, 0, 0, 1]))
    header[10:12] = ip_checksum(bytes(header)).to_bytes(2, "big")
    return bytes(header + icmp)


def expected_counts(raw: bytes, max_frame: int = 4096) -> dict[str, int]:
    """What an RFC 1662 deframer with an empty receive ACCM makes of ``raw``, which starts just
    after a flag: a test-side oracle for the deframer's counters."""
    counts = {"bad_fcs": 0, "too_short": 0, "too_long": 0, "aborted": 0, "frames_ok": 0}
    buf = bytearray()
    esc = overflow = False
    for b in raw:
        if b == 0x7E:
            if overflow:
                counts["too_long"] += 1
            elif esc:
                counts["aborted"] += 1
            elif not buf:
                pass
            elif len(buf) < 4:
                counts["too_short"] += 1
            elif fcs16(bytes(buf)) != 0xF0B8:
                counts["bad_fcs"] += 1
            else:
                counts["frames_ok"] += 1
            buf.clear()
            esc = overflow = False
        elif overflow:
            continue
        elif b == 0x7D:
            esc = True  # "7d 7d" is no escaped 0x5d: a sender escapes 0x7d; as in Linux's ppp_async
        elif esc:
            buf.append(b ^ 0x20)
            esc = False
        else:
            buf.append(b)
        if len(buf) > max_frame:
            overflow = True
            buf.clear()
    return counts


def garbage(rng: random.Random) -> list[tuple[str, bytes]]:
    """(name, bytes to inject): each opens and closes with a flag, so frames around it are kept."""
    ip_frame = with_fcs(b"\xff\x03\x00\x21" + echo_request_datagram())
    no_flags = bytes(rng.choice([b for b in range(256) if b not in (0x7D, 0x7E)]) for _ in range(300))
    bad_ip = bytearray(echo_request_datagram())
    bad_ip[10] ^= 0xFF  # the IP header checksum no longer holds
    return [
        ("noise", b"\x7e" + no_flags + b"\x7e"),
        ("noise with flags and escapes", b"\x7e" + bytes(rng.randrange(256) for _ in range(1500)) + b"\x7e"),
        ("truncated frame", b"\x7e" + stuff(ip_frame)[:len(ip_frame) // 2] + b"\x7e"),
        ("bad fcs", b"\x7e" + stuff(ip_frame[:-1] + bytes([ip_frame[-1] ^ 0x01])) + b"\x7e"),
        ("too short", b"\x7e\x21\x45\x7e"),
        ("aborted", b"\x7e" + stuff(ip_frame)[:30].rstrip(b"\x7d") + b"\x7d\x7e"),
        ("12 KB without a flag", b"\x7e" + no_flags * 40 + b"\x7e"),
        ("unknown protocol, good fcs", b"\x7e" + stuff(with_fcs(b"\xff\x03\x43\x21" + b"nonsense")) + b"\x7e"),
        ("bad ip header, good fcs", b"\x7e" + stuff(with_fcs(b"\xff\x03\x00\x21" + bytes(bad_ip))) + b"\x7e"),
    ]


async def test_garbage_on_the_line_is_counted_and_the_link_stays_up(rig_image, rig_accel) -> None:
    rng = random.Random(1662)
    chunks = garbage(rng)
    expected = {"bad_fcs": 0, "too_short": 0, "too_long": 0, "aborted": 0, "frames_ok": 0}
    for _, raw in chunks:
        for k, v in expected_counts(raw[1:]).items():
            expected[k] += v
    async with PyslirpProcess(debug=False) as server:
        async with LineShim(upstream_port=server.port) as shim:
            script = f"""
{PPPD} &
PPPD_PID=$!
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
ping -c 40 -i 0.25 -W 2 10.0.0.1 > /tmp/ping 2>&1 &
P=$!
result pinging 1
wait $P; result ping_rc $?
result ping "$(grep 'packets transmitted' /tmp/ping)"
ping -c 2 -W 2 10.0.0.1 >/dev/null; result ping_after $?
kill $PPPD_PID; wait $PPPD_PID || true
"""
            async with rig.VM(rig_image, script, line="16550", line_port=shim.port, timeout=120,
                              accel=rig_accel, name="garbage") as vm:
                await vm.wait_result("pinging", timeout=60)
                pinging_from = len(server.lines)
                await asyncio.sleep(1)
                before = await server.stats()
                for _, raw in chunks:
                    assert shim.inject(UP, raw) == 1
                    await asyncio.sleep(0.3)
                await asyncio.sleep(1)
                after = await server.stats()
                # Only the garbage's doing counts: while pppd opens its tty the tty may echo our
                # frames back (a loop indication) before the link first comes up.
                link_downs = [line for line in server.lines[pinging_from:] if "link down" in line]
                early = [line for line in server.lines[:pinging_from] if "link down" in line or "loopback" in line]
                res = await vm.wait(timeout=60)
            assert server.returncode is None  # pyslirp is still running
    res.check()
    r = res.results
    def delta(component: str) -> dict[str, int]:
        was, now = before["counters"][component], after["counters"][component]
        return {k: v - was.get(k, 0) for k, v in now.items() if v != was.get(k, 0)}

    deframer, link, ip = delta("deframer"), delta("link"), delta("stack")
    print(f"\ninjected {shim.stats[UP].injected_bytes} bytes in {len(chunks)} pieces; expected {expected}")
    print(f"before the link came up: {early}")
    print(f"deframer delta {deframer}\nlink delta {link}\nip delta {ip}\nping: {r['ping']}")

    # the link stayed up, the ping answered throughout
    assert r["ping_rc"] == "0" and r["ping_after"] == "0"
    assert "40 packets transmitted, 40 packets received" in r["ping"]
    assert not link_downs, "\n".join(server.lines)
    # every damaged frame counted under its reason, as the test's own deframer predicts
    for reason in ("bad_fcs", "too_short", "too_long", "aborted"):
        assert deframer.get(reason, 0) == expected[reason], (reason, deframer, expected)
    assert expected["too_long"] >= 1 and expected["aborted"] >= 1 and expected["too_short"] >= 1
    # the well-formed frames with nonsense inside were counted where they were refused
    assert link.get("protocol_rejected", 0) == 1
    assert sum(v for k, v in ip.items() if k.startswith("ip_drop_")) == 1
