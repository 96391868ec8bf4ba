"""A SOCKS5 server for outbound tests: Debian's ``danted`` (package dante-server) in the
foreground on 127.0.0.1:<free port>, connecting out from a given address (the test host's veth).

    async with SocksServer(external=host.host_address, login=True) as socks:
        socks.port                      # on 127.0.0.1
        socks.username, socks.password  # with login: RFC 1929 (a throwaway system user)
        await socks.wait_unread()       # a client's data that danted stopped reading
        await socks.kill()              # danted and all its children, at once (SIGKILL)
        await socks.start()             # again, on the same port

Clients from 127.0.0.0/8 may CONNECT to ``destinations`` only, and with ``udp`` also UDP
ASSOCIATE to them (and take their replies). With ``nameserver`` danted runs in a mount namespace
of its own whose /etc/resolv.conf names only that server: it resolves names (a request by name,
ATYP domain) that nothing else here can. With ``login`` danted asks for username/password and
checks them against the system's password database, so the server creates a user
``pyslirp-socks-<pid>`` with a random password and deletes it on leaving. A run killed by a
signal leaves its danted running (in its own session), its files and its user: the next start
removes them. danted logs every connection to a file: :meth:`log`, printed when the block ends
with an exception. Needs root (``useradd``, ``unshare``, and danted's privileged user for
password checks): without it, or without danted, the test is skipped, or fails under CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import rig

DANTED = "/usr/sbin/danted"
USER_PREFIX = "pyslirp-socks-"
DIR_PREFIX = "pyslirp-danted-"
READY_TIMEOUT = 10.0

CONFIG = """\
logoutput: {log}
debug: {debug}
internal: 127.0.0.1 port = {port}
external: {external}
clientmethod: none
socksmethod: {method}
user.privileged: root
user.unprivileged: nobody
client pass {{
  from: 127.0.0.0/8 to: 0.0.0.0/0
  log: error connect disconnect
}}
{rules}
"""

RULE = """\
socks pass {{
  from: 127.0.0.0/8 to: {destination}
  command: connect
  log: error connect disconnect
}}
"""

#: the association, the client's datagrams to ``destination``, and the datagrams it sends back
UDP_RULES = """\
socks pass {{
  from: 127.0.0.0/8 to: {destination}
  command: udpassociate
  log: error connect disconnect
}}
socks pass {{
  from: {destination} to: 127.0.0.0/8
  command: udpreply
  log: error connect disconnect
}}
"""

#: how often wait_unread looks, and for how long the unread data must stay unchanged
UNREAD_POLL, UNREAD_STEADY = 0.2, 1.0
ESTABLISHED = "01"  # the st column of /proc/net/tcp


def require_danted() -> None:
    """Skip (or, under CI, fail) the calling test unless danted can run here as root."""
    if not Path(DANTED).exists():
        rig.skip_or_fail("danted is missing (apt-get install dante-server)")
    if os.geteuid() != 0:
        rig.skip_or_fail("the SOCKS server fixture needs root (danted's password checks, useradd)")


def _gone(pid: str) -> bool:
    return not Path(f"/proc/{pid}").exists()


def _remove_stale() -> None:
    """Kill the danted, delete the files and the user of earlier runs whose process is gone (a
    test run killed by a signal leaves them: danted runs in its own session; its files may be
    gone already, removed by the interpreter's exit)."""
    config = re.compile(rf"{re.escape(tempfile.gettempdir())}/{DIR_PREFIX}(\d+)-[^/]+/danted\.conf")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if any((match := config.fullmatch(arg.decode(errors="replace"))) and _gone(match.group(1))
                   for arg in cmdline.read_bytes().split(b"\0")):
                os.killpg(int(cmdline.parent.name), signal.SIGKILL)  # the group leader
    for directory in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*"):
        match = re.match(rf"{DIR_PREFIX}(\d+)-", directory.name)
        if match and _gone(match.group(1)):
            shutil.rmtree(directory, ignore_errors=True)
    for entry in pwd.getpwall():
        match = re.fullmatch(rf"{USER_PREFIX}(\d+)", entry.pw_name)
        if match and _gone(match.group(1)):
            subprocess.run(["userdel", entry.pw_name], capture_output=True)


class SocksServer:
    """danted on 127.0.0.1, CONNECT (and with ``udp`` UDP ASSOCIATE) to ``destinations`` from
    ``external``, optionally with login, resolving names with ``nameserver`` (default: the
    system's resolver). ``debug``: its debug log too (each request as the client sent it, a
    name included, and what the name resolved to)."""

    def __init__(self, external: str, *, destinations: Sequence[str] = ("198.18.0.0/15",),
                 login: bool = False, udp: bool = False, nameserver: str | None = None,
                 debug: bool = False) -> None:
        self.external = external
        self.destinations = list(destinations)
        self.login = login
        self.udp = udp
        self.nameserver = nameserver
        self.debug = debug
        self.port = rig.free_port()
        self.username: str | None = f"{USER_PREFIX}{os.getpid()}" if login else None
        self.password: str | None = secrets.token_urlsafe(12) if login else None
        self._dir = tempfile.TemporaryDirectory(prefix=f"{DIR_PREFIX}{os.getpid()}-")
        self._log_file = Path(self._dir.name) / "danted.log"
        self._stderr_file = Path(self._dir.name) / "danted.stderr"
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> "SocksServer":
        require_danted()
        _remove_stale()
        try:
            if self.login:
                self._add_user()
            self._write_config()
            await self.start()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if exc[0] is not None:
                print(f"---- danted log ----\n{self.log()}", file=sys.stderr)
        finally:  # danted is killed whatever printing does (a closed stderr raises)
            await self._close()

    def log(self) -> str:
        """What danted logged (every connection) and wrote to stderr, from its first start on."""
        return "".join(path.read_text(errors="replace")
                       for path in (self._log_file, self._stderr_file) if path.exists())

    async def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first line of :meth:`log` matching ``pattern``, once danted has logged it (it logs
        a session's end when the session ends, a moment after the client left)."""
        regex = re.compile(pattern, re.M)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (match := regex.search(self.log())):
            if loop.time() > deadline:
                raise AssertionError(f"danted never logged {pattern!r} in {timeout} s:\n{self.log()}")
            await asyncio.sleep(0.1)
        return match

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start danted and wait until its port accepts connections."""
        assert not self.running, "danted is already running"
        command = [DANTED, "-f", str(Path(self._dir.name) / "danted.conf")]  # no -D: in the foreground
        if self.nameserver is not None:  # unshare and sh exec danted: the pid stays danted's
            command = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                       'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(self._resolv_conf), *command]
        with self._stderr_file.open("ab") as stderr:
            self._process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                start_new_session=True)  # its own process group: kill() ends its children too
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while True:
            if self._process.returncode is not None:
                raise RuntimeError(f"danted exited ({self._process.returncode}) at start:\n{self.log()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if loop.time() > deadline:
                    raise RuntimeError(f"danted never listened on port {self.port}:\n{self.log()}") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return

    async def wait_unread(self, timeout: float = 120.0) -> int:
        """Wait until a client's connection holds data danted no longer reads (received, unread,
        and unchanged for UNREAD_STEADY seconds: where danted sends it takes no more) and return
        how many bytes. Killed now, danted's kernel resets that connection instead of closing it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        steady_since, last = loop.time(), 0
        while True:
            unread = self._largest_unread()
            if unread != last:
                steady_since, last = loop.time(), unread
            elif unread and loop.time() - steady_since >= UNREAD_STEADY:
                return unread
            if loop.time() > deadline:
                raise AssertionError(f"no client's data stayed unread by danted within {timeout} s")
            await asyncio.sleep(UNREAD_POLL)

    def _largest_unread(self) -> int:
        """The most bytes a client has sent that danted has not read, over its connections."""
        largest = 0
        for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            local, _, state, queues = row.split()[1:5]
            if int(local.rpartition(":")[2], 16) == self.port and state == ESTABLISHED:
                largest = max(largest, int(queues.partition(":")[2], 16))
        return largest

    async def kill(self) -> None:
        """SIGKILL danted and every child it forked (the connections it relays die with them)."""
        if not self.running:
            return
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        await self._process.wait()

    @property
    def _resolv_conf(self) -> Path:
        return Path(self._dir.name) / "resolv.conf"

    def _write_config(self) -> None:
        rules = "".join(RULE.format(destination=destination) for destination in self.destinations)
        if self.udp:
            rules += "".join(UDP_RULES.format(destination=destination) for destination in self.destinations)
        if self.nameserver is not None:
            self._resolv_conf.write_text(f"nameserver {self.nameserver}\n")
        (Path(self._dir.name) / "danted.conf").write_text(CONFIG.format(
            log=self._log_file, debug=int(self.debug), port=self.port, external=self.external,
            method="username" if self.login else "none", rules=rules))

    def _add_user(self) -> None:
        assert self.username is not None and self.password is not None
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        self.username], check=True, capture_output=True)
        subprocess.run(["chpasswd"], input=f"{self.username}:{self.password}\n", text=True,
                       check=True, capture_output=True)

    async def _close(self) -> None:
        await self.kill()
        if self.username is not None:
            subprocess.run(["userdel", self.username], capture_output=True)
        self._dir.cleanup()
