"""Line faults with Linux pppd in the VM as the client: the serial line is cut mid-transfer and
restored. pyslirp serves a device path, as it would a USB adapter's udev name: here a link to a
pseudo-terminal whose other end is joined to the VM's serial port. The test closes the pty and
removes the link (the adapter is unplugged: reads fail, the device is gone), then plugs a new one
in. pyslirp stays up, opens the device again with backoff, renegotiates PPP from scratch, and
pppd's next transfer completes intact."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tty
from pathlib import Path

import rig
from dial import PPPD_QUIET
from pyslirp_proc import PyslirpProcess
from test_data_path import FileServer

CUT_SECONDS = 4
BLOB = os.urandom(1_000_000)

SCRIPT = f"""
{PPPD_QUIET} persist holdoff 1 maxfail 0 lcp-echo-interval 1 lcp-echo-failure 6 &
wait_ppp 60 || {{ result up 0; exit 1; }}
result up 1
rm /run/pyslirp/ppp-up
(nc 10.0.0.1 81 > /tmp/first; result first_ended "$(wc -c < /tmp/first)") &
sleep 3
result streaming 1
wait_ppp 120 || {{ result up_again 0; exit 1; }}
result up_again 1
n=0
until wget -q -O /tmp/blob http://10.0.0.1/blob && [ "$(sha256sum /tmp/blob | cut -d' ' -f1)" = "$SHA" ]; do
    n=$((n+1)); [ $n -ge 5 ] && break; sleep 2
done
result attempts "$n"
result sha "$(sha256sum /tmp/blob | cut -d' ' -f1)"
"""


class PtyCable:
    """The serial cable between pyslirp's device and the VM's serial port (QEMU's socket chardev,
    listening). Unplugged, bytes from the VM are lost, as on a cut line."""

    def __init__(self, device: Path) -> None:
        self.device = device
        self.master: int | None = None
        self._slave: int | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self.plugs = 0

    async def connect(self, vm_port: int, timeout: float = 30) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                reader, self._writer = await asyncio.open_connection("127.0.0.1", vm_port)
                break
            except OSError:
                assert loop.time() < deadline, "QEMU never listened for its serial line"
                await asyncio.sleep(0.1)
        self._pump = asyncio.create_task(self._from_vm(reader))

    def plug(self) -> None:
        """A new pty, its slave behind the device path; the pty's bytes go to the VM."""
        master, slave = os.openpty()
        tty.setraw(slave)  # held open: with no slave open, reads on the master fail
        os.set_blocking(master, False)
        self.device.symlink_to(os.ttyname(slave))
        self.master, self._slave = master, slave
        asyncio.get_running_loop().add_reader(master, self._to_vm)
        self.plugs += 1

    def unplug(self) -> None:
        assert self.master is not None and self._slave is not None
        asyncio.get_running_loop().remove_reader(self.master)
        self.device.unlink()
        os.close(self.master)
        os.close(self._slave)
        self.master = self._slave = None

    def _to_vm(self) -> None:
        try:
            data = os.read(self.master, 65536)  # type: ignore[arg-type]
        except (BlockingIOError, OSError):  # EIO: pyslirp has the device closed just now
            return
        if self._writer is not None:
            self._writer.write(data)

    async def _from_vm(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(65536):
            view = memoryview(data)
            while view and self.master is not None:
                try:
                    view = view[os.write(self.master, view):]
                except BlockingIOError:
                    await asyncio.sleep(0.001)
                except OSError:
                    break

    async def close(self) -> None:
        if self.master is not None:
            self.unplug()
        if self._pump is not None:
            self._pump.cancel()
        if self._writer is not None:
            self._writer.close()


async def endless_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A service that sends until its connection fails."""
    try:
        while True:
            writer.write(b"s" * 1024)
            await writer.drain()
            await asyncio.sleep(0.005)
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_a_line_cut_mid_transfer_and_restored_is_renegotiated_and_a_new_transfer_completes(
    rig_image, rig_accel, tmp_path: Path
) -> None:
    device = tmp_path / "ttyUSB0"
    cable = PtyCable(device)
    cable.plug()
    stream = await asyncio.start_server(endless_stream, "127.0.0.1", 0)
    stream_port = stream.sockets[0].getsockname()[1]
    vm_port = rig.free_port()
    with FileServer({"blob": BLOB}) as files:
        config = {"services": {80: {"name": "web", "port": files.port}, 81: {"name": "stream", "port": stream_port}},
                  "serial": {"baudrate": 115200}}
        async with PyslirpProcess(config, debug=False, line=str(device)) as server:
            async with rig.VM(rig_image, SCRIPT, line_port=vm_port, line_mode="server", timeout=300,
                              accel=rig_accel, env={"SHA": hashlib.sha256(BLOB).hexdigest()}) as vm:
                try:
                    await cable.connect(vm_port)
                    assert await vm.wait_result("streaming", timeout=120) == "1", vm.console_lines[-40:]
                    cable.unplug()  # mid-transfer: the stream is still flowing
                    await server.wait_log(r"serial port .*: cannot open: No such file or directory", timeout=30)
                    await asyncio.sleep(CUT_SECONDS)
                    cable.plug()
                    assert await vm.wait_result("sha", timeout=240) == hashlib.sha256(BLOB).hexdigest(), \
                        vm.console_lines[-60:]
                    results = dict(vm.results)
                    stats = await server.stats()
                    backoff_warnings = len(server.find(r"trying again with backoff"))
                finally:
                    await vm.kill()
                    await cable.close()
            assert server.returncode is None  # the process lived through the fault
    stream.close()
    assert results["up_again"] == "1"
    assert len(server.find(r": line up")) == 2
    assert len(server.find(r"link up: we are 10\.0\.0\.1")) >= 2  # PPP renegotiated on the new line
    assert backoff_warnings == 1  # logged once, not per try
    assert server.find(r"serial port .*: open again after \d+ s")
    # The stream of the old link: its service got RST (the client never had everything), counted.
    assert stats["counters"]["proxy"]["link_down_reset"] >= 1, stats["counters"]["proxy"]
