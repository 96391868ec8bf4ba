"""Proof that the rig works: the guest boots on both line types, runs a script, reports, powers
off by itself, and its pppd speaks PPP on the line (an LCP Configure-Request with a good FCS).

No pyslirp here: the far end of the line is a capture server (conftest.line_capture).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

import rig
from shim import DOWN, UP, Frame, LineShim, split_frames

LINES = ["16550", "virtio"]

# pppd as a client would dial, but giving up fast: 3 Configure-Requests 1 s apart, then exit.
PPPD_LCP_ONLY = (
    "pppd $PPP_TTY 115200 nodetach debug local noauth nocrtscts nodefaultroute "
    "lcp-restart 1 lcp-max-configure 3 maxfail 1\n"
    "result pppd_exit $?\n"
)


def decode_frames(stream: bytes) -> list[Frame]:
    return [Frame(raw, UP, i) for i, raw in enumerate(split_frames(stream))]


def lcp_configure_requests(stream: bytes) -> list[Frame]:
    return [f for f in decode_frames(stream)
            if f.fcs_ok and f.protocol == 0xC021 and f.info[:1] == b"\x01"]


def parse_lcp_options(info: bytes) -> dict[int, bytes]:
    code, ident, length = info[0], info[1], int.from_bytes(info[2:4], "big")
    assert code == 1 and length == len(info), (code, length, len(info))
    opts, i = {}, 4
    while i < length:
        t, n = info[i], info[i + 1]
        assert n >= 2 and i + n <= length
        opts[t] = info[i + 2:i + n]
        i += n
    return opts


def test_skip_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Missing prerequisites skip locally but fail under CI (no QEMU needed for this test)."""
    monkeypatch.setattr(rig, "missing_prerequisites", lambda cache=None: ["qemu-system-x86_64"])
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="qemu-system-x86_64"):
        rig.require_rig()
    for value in ("true", "1"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.fail.Exception, match="must not be skipped"):
            rig.require_rig()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        rig.require_rig()
    monkeypatch.setattr(rig, "missing_prerequisites", lambda cache=None: [])
    monkeypatch.setenv("CI", "true")
    rig.require_rig()


def test_image_manifest(rig_image: rig.ImagePaths) -> None:
    m = json.loads(rig_image.manifest.read_text())
    assert m["kernel_package"].startswith("linux-image-") and m["kernel_version"]
    for mod in ("slhc", "ppp_generic", "ppp_async", "virtio_console", "qemu_fw_cfg", "virtio_pci"):
        assert mod in m["modules"]
    for pkg in ("ppp", "busybox-static", "dropbear-bin", "libc6", "libssl3", "libpcap0.8"):
        assert pkg in m["packages"]
    assert rig_image.kernel.stat().st_size > 1_000_000
    assert rig_image.initrd.stat().st_size > 1_000_000


async def test_guest_runs_script_and_reports(rig_image: rig.ImagePaths, rig_accel: str) -> None:
    script = r"""
result nofile "$(ulimit -n)"
result tty "$PPP_TTY"
result greeting "$GREETING"
result file "$(cat /root/.ssh/note)"
result mods "$(lsmod | awk 'NR>1 {print $1}' | sort | tr '\n' ' ')"
result devppp "$([ -c /dev/ppp ] && echo yes)"
result pppd "$(pppd --version 2>&1)"
result dbclient "$(dbclient -V 2>&1 | head -n1)"
result fwcfg "$(ls /sys/firmware/qemu_fw_cfg/by_name/opt/pyslirp)"
exit 7
"""
    res = await rig.run_vm_async(rig_image, script, line="virtio", line_port=None, timeout=90,
                                 env={"GREETING": "hello 'guest' $x"},
                                 files={"/root/.ssh/note": "a note\n"}, accel=rig_accel)
    assert not res.timed_out, res.describe()
    assert res.exit_code == 7, res.describe()
    r = res.results
    assert int(r["nofile"]) > 10000
    assert r["tty"] == "/dev/hvc0"
    assert r["greeting"] == "hello 'guest' $x"
    assert r["file"] == "a note"
    for mod in ("ppp_async", "ppp_generic", "slhc", "virtio_console", "qemu_fw_cfg"):
        assert mod in r["mods"].split(), r["mods"]
    assert r["devppp"] == "yes"
    assert r["pppd"].startswith("pppd version 2.4"), r["pppd"]
    assert r["dbclient"].startswith("Dropbear"), r["dbclient"]
    assert r["fwcfg"] == "script"
    assert res.boot_seconds is not None and res.boot_seconds > 0
    assert not res.warnings, res.warnings


@pytest.mark.parametrize("line", LINES)
async def test_pppd_sends_lcp_configure_request(rig_image: rig.ImagePaths, rig_accel: str,
                                                line_capture, line: str) -> None:  # type: ignore[no-untyped-def]
    res = await rig.run_vm_async(rig_image, PPPD_LCP_ONLY, line=line,  # type: ignore[arg-type]
                                 line_port=line_capture.port, timeout=120, accel=rig_accel)
    assert not res.timed_out, res.describe()  # pppd gave up and the VM powered off by itself
    assert res.exit_code == 0, res.describe()
    assert line_capture.connections == 1
    reqs = lcp_configure_requests(bytes(line_capture.data))
    assert len(reqs) >= 2, (bytes(line_capture.data[:400]), res.describe())
    opts = parse_lcp_options(reqs[0].info)
    assert 5 in opts and len(opts[5]) == 4, opts  # Magic-Number
    assert opts.get(2) == b"\x00\x00\x00\x00", opts  # ACCM 0 (Debian's "asyncmap 0")
    assert reqs[0].payload[:2] == b"\xff\x03"  # no ACFC before it is negotiated
    # every frame on the line decodes
    assert all(f.fcs_ok for f in decode_frames(bytes(line_capture.data)))
    assert "LCP: timeout sending Config-Requests" in res.console, res.describe()
    assert res.results["pppd_exit"] != "0"


async def test_line_through_shim(rig_image: rig.ImagePaths, rig_accel: str,
                                 line_capture) -> None:  # type: ignore[no-untyped-def]
    """VM → shim (paced, first frame dropped) → capture: the shim's counts match the wire."""
    async with LineShim(upstream_port=line_capture.port, baud=38400, seed=1, record=True) as shim:
        shim.drop(UP, match=lambda f: f.index == 0)
        res = await rig.run_vm_async(rig_image, PPPD_LCP_ONLY, line="16550",
                                     line_port=shim.port, timeout=120, accel=rig_accel)
        await asyncio.wait_for(shim.disconnected.wait(), 10)
    assert res.ok, res.describe()
    st = shim.stats[UP]
    assert st.frames_in >= 3 and st.dropped == 1 and st.frames_out == st.frames_in - 1
    dropped = shim.frames[UP][0]
    assert st.bytes_out == st.bytes_in - len(dropped.raw)  # its closing flag was kept
    got = decode_frames(bytes(line_capture.data))
    assert len(got) == st.frames_out
    assert dropped.protocol == 0xC021 and dropped.info[:1] == b"\x01"
    assert [f.raw for f in got] == [f.raw for f in shim.frames[UP][1:]]
    assert shim.stats[DOWN].bytes_in == 0


async def test_qemu_as_line_server(rig_image: rig.ImagePaths, rig_accel: str) -> None:
    """line_mode="server": QEMU listens, the host connects (after the guest is up)."""
    port = rig.free_port()
    script = PPPD_LCP_ONLY
    async with rig.VM(rig_image, script, line="virtio", line_port=port, line_mode="server",
                      timeout=120, accel=rig_accel) as vm:
        for _ in range(100):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("QEMU never listened")
        data = bytearray()
        try:
            while not lcp_configure_requests(bytes(data)):
                chunk = await asyncio.wait_for(reader.read(4096), 90)
                if not chunk:
                    break
                data += chunk
        finally:
            writer.close()
        res = await vm.wait()
    assert lcp_configure_requests(bytes(data)), res.describe()
    assert not res.timed_out, res.describe()


async def test_wait_result_while_running(rig_image: rig.ImagePaths, rig_accel: str) -> None:
    script = "result ready 1\nwhile [ ! -e /tmp/never ]; do sleep 1; done\n"
    async with rig.VM(rig_image, script, line_port=None, timeout=120, accel=rig_accel) as vm:
        assert await vm.wait_result("ready", timeout=90) == "1"
        m = await vm.wait_console(r"PYSLIRP-BOOTED (\S+)", timeout=1)
        assert float(m.group(1)) > 0
        res = await vm.kill()
    assert res.timed_out and res.results == {"ready": "1"}


async def test_guest_watchdog(rig_image: rig.ImagePaths, rig_accel: str) -> None:
    res = await rig.run_vm_async(rig_image, "sleep 600", line_port=None, timeout=120,
                                 guest_timeout=2, accel=rig_accel)
    assert res.status == "timeout" and not res.timed_out, res.describe()
    assert res.duration < 60


async def test_host_timeout_kills_qemu(rig_image: rig.ImagePaths, rig_accel: str) -> None:
    t0 = time.monotonic()
    res = await rig.run_vm_async(rig_image, "sleep 600", line_port=None, timeout=3,
                                 accel=rig_accel)
    assert res.timed_out and res.status is None
    assert res.qemu_returncode is not None  # QEMU is gone
    assert time.monotonic() - t0 < 20
    with pytest.raises(rig.VMError, match="timed out"):
        res.check()


def test_sync_run_vm(rig_image: rig.ImagePaths, rig_accel: str) -> None:
    res = rig.run_vm(rig_image, "result x 42", line_port=None, timeout=90, accel=rig_accel)
    assert res.check().results == {"x": "42"}


def test_bzimage_boot(rig_image: rig.ImagePaths, rig_accel: str,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian's bzImage as shipped boots too (the default is the same kernel via PVH)."""
    monkeypatch.setenv("PYSLIRP_RIG_BOOT", "bzimage")
    res = rig.run_vm(rig_image, "result cmdline \"$(cat /proc/cmdline)\"", line="virtio",
                     line_port=None, timeout=120, accel=rig_accel, name="bzimage")
    assert res.check().results["cmdline"].startswith("console=ttyS0")
