"""A remote host for outbound tests: a network namespace behind a veth pair, so that a connection
pyslirp (or a SOCKS server) makes "out" reaches a real host with its own address, and nothing
leaves this machine.

    async with TestHost({"blob": data}, names=["files.test"]) as host:
        host.address        # "198.18.0.2": HTTP on port 80 (GET /blob), UDP echo on port 7, a
                            # TCP sink on port 9 that never reads, DNS on port 53 (with names)
        host.other_address  # "198.18.0.3": the same servers, for a test that denies one address
        host.host_address   # "198.18.0.1": this machine's side of the veth pair

The addresses are in 198.18.0.0/15 (benchmarking, RFC 2544); the first /24 of it no interface
here uses is taken (198.18.0.0/24 unless another run holds it). The namespace is named
``pyslirp-th-<pid>-<n>``; leaving the block kills its servers and deletes the veth pair and the
namespace, whatever happened inside. Namespaces left by a run that was killed are removed at the
next start. With ``names``, dnsmasq in the namespace answers each of them with ``address`` (and
knows no other name): a resolver pointed at ``address`` is the only one that can resolve them.
Needs root and ``ip`` (iproute2), and dnsmasq for ``names``: without them the test is skipped,
or fails under CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import marshal
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import rig

NETNS_PREFIX = "pyslirp-th-"
BENCHMARK_NET = ipaddress.ip_network("198.18.0.0/15")
HTTP_PORT, ECHO_PORT, SINK_PORT, DNS_PORT = 80, 7, 9, 53
#: the sink's receive buffer: small, so that a sender stalls after a few kilobytes
SINK_BUFFER = 4096
DNS_READY_TIMEOUT = 10.0

#: runs in the namespace: HTTP/1.0 on port 80 serving the files marshalled on its stdin
#: ({name: bytes}: GET /name), UDP echo on port 7, and on TCP port 9 a sink that accepts
#: connections and never reads them (a receiver that stalled: its senders' data waits in buffers)
SERVERS = """
import marshal, socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

files = marshal.load(sys.stdin.buffer)

class Files(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client (or proxy) gone mid-transfer: expected in the fault tests

httpd = Server(("0.0.0.0", %(http)d), Files)
echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
echo.bind(("0.0.0.0", %(echo)d))

def serve_echo():
    while True:
        data, peer = echo.recvfrom(65535)
        echo.sendto(data, peer)

sink = socket.socket()
sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, %(sink_buffer)d)  # accepted sockets inherit it
sink.bind(("0.0.0.0", %(sink)d))
sink.listen()
stalled = []

def serve_sink():
    while True:
        stalled.append(sink.accept()[0])  # kept open, never read

threading.Thread(target=serve_echo, daemon=True).start()
threading.Thread(target=serve_sink, daemon=True).start()
print("ready", flush=True)
httpd.serve_forever()
""" % {"http": HTTP_PORT, "echo": ECHO_PORT, "sink": SINK_PORT, "sink_buffer": SINK_BUFFER}

_hosts = itertools.count()


def require_netns() -> None:
    """Skip (or, under CI, fail) the calling test unless namespaces and veth pairs can be made."""
    if os.geteuid() != 0:
        rig.skip_or_fail("the outbound test host needs root (a network namespace and a veth pair)")
    if shutil.which("ip") is None:
        rig.skip_or_fail("ip is missing (apt-get install iproute2)")


def require_dnsmasq() -> None:
    if shutil.which("dnsmasq") is None:
        rig.skip_or_fail("dnsmasq is missing (apt-get install dnsmasq-base)")


def _a_query(name: str) -> bytes:
    """A DNS query (RFC 1035 §4.1) for ``name``'s A record, id 0x7e57, recursion desired."""
    labels = b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    return struct.pack("!6H", 0x7E57, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!2H", 1, 1)


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _remove_namespace(name: str) -> None:
    """Kill what runs in namespace ``name``, delete its veth pair (at once: a namespace is
    destroyed asynchronously, its interfaces with it), then the namespace."""
    with contextlib.suppress(RuntimeError):
        for pid in _ip("netns", "pids", name).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(RuntimeError):
        for veth in re.findall(r"^\d+: ([^@:]+)", _ip("-n", name, "-o", "link", "show", "type", "veth"), re.M):
            _ip("-n", name, "link", "delete", veth)
    with contextlib.suppress(RuntimeError):
        _ip("netns", "delete", name)


def _remove_stale_namespaces() -> None:
    """Delete the namespaces of earlier runs whose process no longer exists."""
    for name in _ip("netns", "list").split():
        match = re.fullmatch(rf"{NETNS_PREFIX}(\d+)-\d+", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _remove_namespace(name)


def _free_subnet() -> ipaddress.IPv4Network:
    """The first /24 of the benchmarking range that no interface here has an address in."""
    used = {ipaddress.ip_interface(address).ip
            for address in re.findall(r"inet (\S+)", _ip("-4", "-o", "address", "show"))}
    for subnet in BENCHMARK_NET.subnets(new_prefix=24):
        if not any(address in subnet for address in used):
            return subnet
    raise RuntimeError(f"every /24 of {BENCHMARK_NET} is in use on this machine")


class TestHost:
    """A network namespace on a veth pair running an HTTP server (``files``) and a UDP echo."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, files: dict[str, bytes], *, names: Sequence[str] = ()) -> None:
        self.files = files
        self.names = list(names)
        number = next(_hosts)
        self.name = f"{NETNS_PREFIX}{os.getpid()}-{number}"
        self._host_veth = f"pth{os.getpid()}h{number}"  # at most 15 characters: pids are < 2**22
        self._peer_veth = f"pth{os.getpid()}n{number}"
        self.host_address = self.address = self.other_address = ""
        self._servers: asyncio.subprocess.Process | None = None
        self._dnsmasq: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> "TestHost":
        require_netns()
        if self.names:
            require_dnsmasq()
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _start(self) -> None:
        _remove_stale_namespaces()
        subnet = _free_subnet()
        host_ip, peer_ip, other_ip = (str(subnet[i]) for i in (1, 2, 3))
        prefix = f"/{subnet.prefixlen}"
        _ip("netns", "add", self.name)
        _ip("link", "add", self._host_veth, "type", "veth", "peer", "name", self._peer_veth,
            "netns", self.name)
        _ip("address", "add", host_ip + prefix, "dev", self._host_veth)
        _ip("link", "set", self._host_veth, "up")
        inside = ("-n", self.name)
        _ip(*inside, "address", "add", peer_ip + prefix, "dev", self._peer_veth)
        _ip(*inside, "address", "add", other_ip + prefix, "dev", self._peer_veth)
        _ip(*inside, "link", "set", self._peer_veth, "up")
        _ip(*inside, "link", "set", "lo", "up")
        self.host_address, self.address, self.other_address = host_ip, peer_ip, other_ip

        self._servers = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.name, sys.executable, "-c", SERVERS,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self._servers.stdin is not None and self._servers.stdout is not None
        self._servers.stdin.write(marshal.dumps(self.files))
        await self._servers.stdin.drain()
        self._servers.stdin.close()
        ready = await asyncio.wait_for(self._servers.stdout.readline(), 30)
        if ready != b"ready\n":
            raise RuntimeError(f"the test host's servers did not start (exit {await self._servers.wait()})")
        if self.names:
            await self._start_dns()

    async def _start_dns(self) -> None:
        """dnsmasq on ``address`` port 53, answering each of ``names`` with ``address``, then wait
        until it answers the first."""
        self._dnsmasq = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.name, "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
            "--pid-file", "--user=root", f"--listen-address={self.address}", "--bind-interfaces",
            *(f"--address=/{name}/{self.address}" for name in self.names),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)  # a few lines at start
        expected = socket.inet_aton(self.address)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DNS_READY_TIMEOUT
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.setblocking(False)
            while True:
                if self._dnsmasq.returncode is not None:
                    assert self._dnsmasq.stderr is not None
                    error = (await self._dnsmasq.stderr.read()).decode(errors="replace")
                    raise RuntimeError(f"dnsmasq exited ({self._dnsmasq.returncode}) at start: {error}")
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await loop.sock_sendto(probe, _a_query(self.names[0]), (self.address, DNS_PORT))
                    answer = await asyncio.wait_for(loop.sock_recv(probe, 512), 0.2)
                    if answer.endswith(expected):
                        return
                if loop.time() > deadline:
                    raise RuntimeError(f"dnsmasq did not answer for {self.names[0]} in {DNS_READY_TIMEOUT} s")
                await asyncio.sleep(0.05)

    async def _stop(self) -> None:
        for process in (self._dnsmasq, self._servers):  # `ip netns exec` execs them: these pids are theirs
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
        _remove_namespace(self.name)
