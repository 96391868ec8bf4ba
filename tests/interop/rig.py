"""Host side of the interop rig: boot the pppd guest VM in QEMU with its PPP line on a TCP socket.

A run boots Debian's kernel + the initramfs from ``build_image.py``; the guest's init runs the
shell ``script`` given here (with busybox, ``pppd``, ``dbclient``; the PPP line device in
``$PPP_TTY``), reports ``result NAME VALUE`` lines and the script's exit status on the console,
and powers off. Every run is bounded: QEMU is killed when ``timeout`` expires.

    import rig
    image = rig.ensure_image()                       # built once, cached
    res = rig.run_vm(image, "pppd $PPP_TTY 115200 nodetach local noauth ...; exit 0",
                     line="virtio", line_port=port, timeout=60)
    res.check()                                      # raises VMError with the console log
    res.results["name"], res.exit_code, res.console

Inside an asyncio program (pyslirp serving in the same event loop)::

    res = await rig.run_vm_async(image, script, line="16550", line_port=port, timeout=60)
    # or, to act while the guest runs:
    async with rig.VM(image, script, line_port=port) as vm:
        await vm.wait_result("ready", timeout=30)
        ...
        res = await vm.wait(timeout=60)

The line: QEMU's socket chardev ``-chardev socket,id=line,host=127.0.0.1,port=N,nodelay=on``
connects to ``line_port`` (``line_mode="client"``, pyslirp's ``tcp-listen://`` line) or listens
there (``line_mode="server"``). ``line="16550"`` gives the guest ``/dev/ttyS1`` (an emulated 16550
UART), ``line="virtio"`` gives ``/dev/hvc0`` (virtio console). ``line_port=None``: no line at all.

Acceleration: ``PYSLIRP_RIG_ACCEL=tcg|kvm|auto`` (default auto: KVM if a short probe boot under
KVM completes, else TCG; the probe's verdict is cached per machine boot in the cache dir).
``PYSLIRP_RIG_LOG_DIR``: if set, every run's console log is written there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

try:  # imported as part of the tests.interop package
    from . import build_image
except ImportError:  # imported with tests/interop on sys.path (conftest does this)
    import build_image  # type: ignore[no-redef]

ImagePaths = build_image.ImagePaths
LineKind = Literal["16550", "virtio"]
LineMode = Literal["client", "server"]

QEMU = os.environ.get("PYSLIRP_RIG_QEMU", "qemu-system-x86_64")
MEMORY_MB = 256
KVM_PROBE_TIMEOUT = 10.0  # a KVM boot takes ~1 s; where KVM is broken it hangs, so this bounds it

_MARK = re.compile(r"PYSLIRP-(BOOTED|RESULT|EXIT|WARN|PPP)(?: (.*))?$")


class RigError(RuntimeError):
    """The rig could not run (missing QEMU, QEMU refused its arguments, …)."""


class VMError(AssertionError):
    """A VM run did not succeed; the message carries the console log."""

    def __init__(self, result: "VMResult", why: str) -> None:
        self.result = result
        super().__init__(f"{why}\n{result.describe()}")


@dataclass
class VMResult:
    status: str | None  # what the guest printed after PYSLIRP-EXIT ("0", "3", "timeout", …)
    results: dict[str, str]  # from `result NAME VALUE` lines; a repeated NAME keeps the last
    console: str  # the whole console (ttyS0) output
    timed_out: bool  # the host killed QEMU because `timeout` expired
    qemu_returncode: int | None
    qemu_stderr: str
    duration: float  # wall seconds from QEMU start to its exit
    boot_seconds: float | None  # guest uptime when the script started
    boot_wall_seconds: float | None  # host seconds from QEMU's start to the script's start
    accel: str
    line: str
    warnings: list[str] = field(default_factory=list)
    all_results: list[tuple[str, str]] = field(default_factory=list)  # in order, repeats kept

    @property
    def exit_code(self) -> int | None:
        return int(self.status) if self.status is not None and self.status.isdigit() else None

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.exit_code == 0

    def describe(self, tail: int = 200) -> str:
        lines = self.console.splitlines()
        shown = lines[-tail:]
        cut = f"(first {len(lines) - tail} lines cut)\n" if len(lines) > tail else ""
        return (f"VM run: line={self.line} accel={self.accel} status={self.status} "
                f"timed_out={self.timed_out} qemu_rc={self.qemu_returncode} "
                f"duration={self.duration:.1f}s boot={self.boot_wall_seconds}s "
                f"(guest uptime {self.boot_seconds}s)\n"
                f"results={self.results}\n"
                + (f"qemu stderr:\n{self.qemu_stderr.strip()}\n" if self.qemu_stderr.strip() else "")
                + f"--- console ---\n{cut}" + "\n".join(shown) + "\n--- end console ---")

    def check(self) -> "VMResult":
        """Raise VMError (with the console) unless the script exited 0 within the timeout."""
        if self.timed_out:
            raise VMError(self, "VM run timed out (QEMU killed)")
        if self.exit_code != 0:
            raise VMError(self, f"guest script failed: PYSLIRP-EXIT {self.status}")
        return self


# ---------------------------------------------------------------------------------------------
# image, prerequisites, acceleration


def ensure_image(cache: str | os.PathLike[str] | None = None, force: bool = False) -> ImagePaths:
    """Build (once, cached) and return the guest image. See build_image.py."""
    return build_image.ensure_image(cache, force=force)


def missing_prerequisites(cache: str | os.PathLike[str] | None = None) -> list[str]:
    """What this machine lacks to run the rig (empty list: ready)."""
    missing = []
    if shutil.which(QEMU) is None:
        missing.append(f"{QEMU} (apt package qemu-system-x86)")
    img = ImagePaths.at(build_image.cache_dir(cache) / f"image-{build_image.cache_key()}")
    if not img.complete():
        for tool in ("apt-get", "apt-cache", "dpkg", "dpkg-deb"):
            if shutil.which(tool) is None:
                missing.append(f"{tool} (to build the guest image)")
    return missing


def in_ci() -> bool:
    """True when the CI environment variable is set (to anything but empty/0/false/no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """pytest.skip(reason) — but under CI a missing interop prerequisite is a failure: an
    interop suite that skipped itself in CI would pass without having tested anything."""
    import pytest

    if in_ci():
        pytest.fail(f"{reason} (CI is set: interop tests must not be skipped)", pytrace=False)
    pytest.skip(reason)


def require_rig(cache: str | os.PathLike[str] | None = None) -> None:
    """Skip (or, under CI, fail) the calling test if the rig cannot run on this machine."""
    missing = missing_prerequisites(cache)
    if missing:
        skip_or_fail("interop rig prerequisites missing: " + ", ".join(missing))


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for line_mode="server")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_accel_cache: dict[str, str] = {}


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


async def choose_accel_async(image: ImagePaths) -> str:
    """'kvm' or 'tcg', from $PYSLIRP_RIG_ACCEL or a bounded probe boot under KVM."""
    forced = os.environ.get("PYSLIRP_RIG_ACCEL", "auto").strip().lower()
    if forced in ("tcg", "kvm"):
        return forced
    if forced not in ("", "auto"):
        raise RigError(f"PYSLIRP_RIG_ACCEL={forced!r}: expected tcg, kvm or auto")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    key = f"{_boot_id()}:{image.dir.name}:{shutil.which(QEMU)}"
    if key in _accel_cache:
        return _accel_cache[key]
    probe_file = image.dir.parent / "kvm-probe.json"
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads(probe_file.read_text())
        if saved.get("key") == key and saved.get("accel") in ("kvm", "tcg"):
            _accel_cache[key] = saved["accel"]
            return saved["accel"]
    res = await run_vm_async(image, "exit 0", line_port=None, timeout=KVM_PROBE_TIMEOUT,
                             accel="kvm", name="kvm-probe")
    accel = "kvm" if res.ok else "tcg"
    _accel_cache[key] = accel
    with contextlib.suppress(OSError):
        probe_file.write_text(json.dumps({"key": key, "accel": accel,
                                          "probe": {"status": res.status,
                                                    "timed_out": res.timed_out,
                                                    "duration": round(res.duration, 2)}}))
    return accel


# ---------------------------------------------------------------------------------------------
# one VM


def _script_blob(script: str, env: Mapping[str, str] | None,
                 files: Mapping[str, bytes | str] | None) -> bytes:
    """The script as the guest gets it: env exports and file drops, then the test's script."""
    pre = []
    for k, v in (env or {}).items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise ValueError(f"bad env name {k!r}")
        pre.append(f"export {k}={shlex.quote(str(v))}")
    for path, content in (files or {}).items():
        data = content.encode() if isinstance(content, str) else content
        import base64
        b64 = base64.b64encode(data).decode()
        wrapped = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
        q = shlex.quote(path)
        pre.append(f"mkdir -p \"$(dirname {q})\"\nbase64 -d > {q} <<'PYSLIRP_EOF'\n{wrapped}\n"
                   f"PYSLIRP_EOF\nchmod 600 {q}")
    return ("\n".join(pre) + "\n" + script + "\n").encode()


def qemu_command(image: ImagePaths, script_file: Path, *, line: LineKind, line_port: int | None,
                 line_mode: LineMode, accel: str, guest_timeout: float | None,
                 reconnect: int | None, kernel_quiet: bool,
                 extra_args: tuple[str, ...] | list[str] = ()) -> list[str]:
    tty = "/dev/ttyS1" if line == "16550" else "/dev/hvc0"
    append = ["console=ttyS0,115200", "panic=-1", f"pyslirp.tty={tty}"]
    if kernel_quiet:
        append.append("quiet")
    if guest_timeout:
        append.append(f"pyslirp.timeout={max(1, int(guest_timeout))}")
    cmd = [QEMU, "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
           "-m", str(MEMORY_MB), "-smp", "1",
           "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-kernel", str(_kernel_file(image)), "-initrd", str(image.initrd),
           "-append", " ".join(append),
           "-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
           "-fw_cfg", f"name=opt/pyslirp/script,file={script_file}"]
    if line_port is None:
        chardev = "null,id=line"
    else:
        chardev = f"socket,id=line,host=127.0.0.1,port={int(line_port)},nodelay=on"
        if line_mode == "server":
            chardev += ",server=on,wait=off"
        elif reconnect:
            chardev += f",reconnect={int(reconnect)}"
    cmd += ["-chardev", chardev]
    if line == "16550":
        cmd += ["-serial", "chardev:line"]
    elif line == "virtio":
        cmd += ["-device", "virtio-serial-pci", "-device", "virtconsole,chardev=line"]
    else:
        raise ValueError(f"line must be '16550' or 'virtio', not {line!r}")
    return cmd + list(extra_args)


@dataclass(frozen=True)
class RunRecord:
    name: str
    line: str
    accel: str
    boot_wall_seconds: float | None
    boot_seconds: float | None
    duration: float
    status: str | None
    timed_out: bool


RUNS: list[RunRecord] = []  # every finished VM run in this process (for reports)


def _kernel_file(image: ImagePaths) -> Path:
    """The decompressed ELF kernel (PVH boot, ~3 s faster under TCG) unless
    PYSLIRP_RIG_BOOT=bzimage asks for Debian's bzImage as is."""
    mode = os.environ.get("PYSLIRP_RIG_BOOT", "pvh").strip().lower()
    if mode not in ("pvh", "bzimage"):
        raise RigError(f"PYSLIRP_RIG_BOOT={mode!r}: expected pvh or bzimage")
    return image.vmlinux if mode == "pvh" and image.has_pvh else image.kernel


class VM:
    """One guest run, driven from asyncio. Use as ``async with VM(...) as vm`` or start()/wait()."""

    def __init__(self, image: ImagePaths, script: str, *, line: LineKind = "16550",
                 line_port: int | None = None, line_mode: LineMode = "client",
                 timeout: float = 120.0, accel: str | None = None,
                 env: Mapping[str, str] | None = None,
                 files: Mapping[str, bytes | str] | None = None,
                 guest_timeout: float | None = None, reconnect: int | None = None,
                 kernel_quiet: bool = True, extra_args: tuple[str, ...] = (),
                 name: str = "vm") -> None:
        self.image = image
        self.script = script
        self.line = line
        self.line_port = line_port
        self.line_mode = line_mode
        self.timeout = timeout
        self.accel = accel
        self.env = env
        self.files = files
        self.guest_timeout = guest_timeout
        self.reconnect = reconnect
        self.kernel_quiet = kernel_quiet
        self.extra_args = extra_args
        self.name = name
        self.console_lines: list[str] = []
        self.results: dict[str, str] = {}
        self.all_results: list[tuple[str, str]] = []
        self.warnings: list[str] = []
        self.status: str | None = None
        self.boot_seconds: float | None = None
        self.boot_wall_seconds: float | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[bytes] | None = None
        self._changed = asyncio.Event()
        self._t0 = 0.0
        self._deadline = 0.0
        self._result: VMResult | None = None
        self.timed_out = False

    async def __aenter__(self) -> "VM":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.kill()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        if self.accel is None:
            self.accel = await choose_accel_async(self.image)
        if shutil.which(QEMU) is None:
            raise RigError(f"{QEMU} not found (apt package qemu-system-x86)")
        self._tmp = tempfile.TemporaryDirectory(prefix="pyslirp-vm-")
        script_file = Path(self._tmp.name) / "script.sh"
        script_file.write_bytes(_script_blob(self.script, self.env, self.files))
        cmd = qemu_command(self.image, script_file, line=self.line, line_port=self.line_port,
                           line_mode=self.line_mode, accel=self.accel,
                           guest_timeout=self.guest_timeout, reconnect=self.reconnect,
                           kernel_quiet=self.kernel_quiet, extra_args=self.extra_args)
        self.command = cmd
        self._t0 = time.monotonic()
        self._deadline = self._t0 + self.timeout
        self._proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        self._reader = asyncio.create_task(self._read_console())
        self._stderr_task = asyncio.create_task(self._proc.stderr.read())  # type: ignore[union-attr]

    async def _read_console(self) -> None:
        assert self._proc and self._proc.stdout
        buf = b""
        while True:
            chunk = await self._proc.stdout.read(65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                self._line(raw.decode("utf-8", "replace").rstrip("\r"))
            self._changed.set()
            self._changed = asyncio.Event()
        if buf:
            self._line(buf.decode("utf-8", "replace").rstrip("\r"))
        self._changed.set()

    def _line(self, text: str) -> None:
        self.console_lines.append(text)
        # Markers may share a line with kernel messages: search, don't anchor at the start.
        idx = text.find("PYSLIRP-")
        if idx < 0:
            return
        m = _MARK.match(text[idx:])
        if not m:
            return
        kind, rest = m.group(1), (m.group(2) or "")
        if kind == "RESULT":
            name, _, value = rest.partition(" ")
            self.results[name] = value
            self.all_results.append((name, value))
        elif kind == "EXIT":
            self.status = rest.strip()
        elif kind == "BOOTED":
            self.boot_wall_seconds = round(time.monotonic() - self._t0, 2)
            with contextlib.suppress(ValueError, IndexError):
                self.boot_seconds = float(rest.split()[0])
        elif kind == "WARN":
            self.warnings.append(rest)

    async def _wait_until(self, pred, timeout: float | None) -> bool:
        end = self._deadline if timeout is None else min(self._deadline, time.monotonic() + timeout)
        while not pred():
            if self._reader is None or self._reader.done():
                return pred()
            ev = self._changed
            left = end - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ev.wait(), left)
        return True

    async def wait_result(self, name: str, timeout: float | None = None) -> str:
        """Wait for `result NAME ...` from the guest; return its value.

        Raises VMError if the VM ends or the time runs out first (the VM is killed then only if
        the run's own timeout expired)."""
        ok = await self._wait_until(lambda: name in self.results, timeout)
        if not ok:
            if time.monotonic() >= self._deadline:
                await self.kill()
            raise VMError(self._snapshot(), f"no result {name!r} from the guest")
        return self.results[name]

    async def wait_console(self, pattern: str, timeout: float | None = None) -> re.Match[str]:
        """Wait for a console line matching the regex `pattern`; return the match."""
        rx = re.compile(pattern)
        found: list[re.Match[str]] = []

        def pred() -> bool:
            for line in self.console_lines:
                m = rx.search(line)
                if m:
                    found.append(m)
                    return True
            return False
        if not await self._wait_until(pred, timeout):
            raise VMError(self._snapshot(), f"console never matched {pattern!r}")
        return found[0]

    async def wait(self, timeout: float | None = None) -> VMResult:
        """Wait for the VM to power off (at most until the run's deadline, or `timeout` more
        seconds if given); kill QEMU if it is still running then. Returns the result."""
        if self._result is not None:
            return self._result
        assert self._proc is not None, "start() first"
        end = self._deadline if timeout is None else min(self._deadline, time.monotonic() + timeout)
        try:
            await asyncio.wait_for(self._proc.wait(), max(0.0, end - time.monotonic()))
        except asyncio.TimeoutError:
            self.timed_out = True
        return await self._finish()

    async def kill(self) -> VMResult:
        """Stop QEMU now (no-op if it already ended). Returns the result."""
        if self._result is not None:
            return self._result
        if self._proc is not None and self._proc.returncode is None:
            self.timed_out = True
        return await self._finish()

    async def _finish(self) -> VMResult:
        if self._result is not None:
            return self._result
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 5)
        stderr = b""
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                stderr = await asyncio.wait_for(self._stderr_task, 5)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._result = self._snapshot(stderr.decode("utf-8", "replace"))
        self._save_log(self._result)
        RUNS.append(RunRecord(self.name, self.line, str(self.accel),
                              self._result.boot_wall_seconds, self._result.boot_seconds,
                              round(self._result.duration, 2), self._result.status,
                              self._result.timed_out))
        return self._result

    def _snapshot(self, stderr: str = "") -> VMResult:
        rc = self._proc.returncode if self._proc else None
        return VMResult(status=self.status, results=dict(self.results),
                        console="\n".join(self.console_lines), timed_out=self.timed_out,
                        qemu_returncode=rc, qemu_stderr=stderr,
                        duration=time.monotonic() - self._t0 if self._t0 else 0.0,
                        boot_seconds=self.boot_seconds, boot_wall_seconds=self.boot_wall_seconds,
                        accel=str(self.accel), line=self.line,
                        warnings=list(self.warnings), all_results=list(self.all_results))

    def _save_log(self, res: VMResult) -> None:
        d = os.environ.get("PYSLIRP_RIG_LOG_DIR")
        if not d:
            return
        with contextlib.suppress(OSError):
            Path(d).mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            p = Path(d) / f"{stamp}-{self.name}-{self.line}-{os.getpid()}-{id(self):x}.log"
            p.write_text(res.describe(tail=10**9) + "\n")


async def run_vm_async(image: ImagePaths, script: str, *, line: LineKind = "16550",
                       line_port: int | None = None, line_mode: LineMode = "client",
                       timeout: float = 120.0, accel: str | None = None,
                       env: Mapping[str, str] | None = None,
                       files: Mapping[str, bytes | str] | None = None,
                       guest_timeout: float | None = None, reconnect: int | None = None,
                       kernel_quiet: bool = True, extra_args: tuple[str, ...] = (),
                       name: str = "vm") -> VMResult:
    """Boot the guest, run `script`, wait until it powers off or `timeout` expires.

    line: "16550" (/dev/ttyS1) or "virtio" (/dev/hvc0); the script sees it as $PPP_TTY.
    line_port: 127.0.0.1 port of the line (None: no line). line_mode: QEMU connects ("client")
    or listens ("server"). env: exported to the script. files: {guest path: content} written
    before the script runs (mode 600). guest_timeout: the guest's own watchdog (reports
    status "timeout"). reconnect: client mode only, QEMU retries the connection every N s (so
    the server may start after QEMU). Never raises for a failed script: check the result.
    """
    vm = VM(image, script, line=line, line_port=line_port, line_mode=line_mode, timeout=timeout,
            accel=accel, env=env, files=files, guest_timeout=guest_timeout, reconnect=reconnect,
            kernel_quiet=kernel_quiet, extra_args=extra_args, name=name)
    await vm.start()
    try:
        return await vm.wait()
    finally:
        await vm.kill()


def dial_with_upload(pppd: str, blocks: int) -> str:
    """Guest script lines for a transfer test: write /tmp/up (``blocks`` x 64 KiB of random data)
    and report its sha256 as ``up_local``, start ``pppd`` in the background (``$PPPD_PID``), wait
    for the link and report ``up 1`` (or ``up 0`` and exit 1). :data:`HANG_UP` ends such a script."""
    return f"""
dd if=/dev/urandom of=/tmp/up bs=64k count={blocks} 2>/dev/null
result up_local "$(sha256sum /tmp/up | cut -d' ' -f1)"
{pppd} &
PPPD_PID=$!
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
"""


#: the end of a :func:`dial_with_upload` script: let the last results out, then hang up
HANG_UP = """
sleep 2
kill $PPPD_PID; wait $PPPD_PID || true
"""


def run_vm(image: ImagePaths, script: str, **kw) -> VMResult:
    """Blocking run_vm_async (same arguments). Not for use inside a running event loop: there,
    await run_vm_async so that the server under test keeps running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_vm_async(image, script, **kw))
    raise RuntimeError("run_vm() called inside a running event loop: use await run_vm_async()")
