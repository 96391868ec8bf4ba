"""Packet capture: a frame tap that writes every PPP frame, each way, to a pcap file.

The file is classic pcap (magic 0xa1b2c3d4, version 2.4, microsecond timestamps) with link type
``LINKTYPE_PPP_WITH_DIR`` (204): each record is one direction octet, 0 for a frame this host
received (from the client) and 1 for one it sent, then the frame as it crossed the line: RFC 1662
§3.1 without flags, stuffing and FCS (address and control unless they were compressed, RFC 1661
§6.6; the protocol field, one octet when compressed, §6.5; the information). Wireshark and tshark
decode LCP, IPCP, PAP, CHAP, IP and TCP from it and show each frame's direction.

Frames of one turn of the event loop are written together, with one write and a flush, on the
next turn (``loop.call_soon``): a reader of the growing file sees them at once. Timestamps are
the loop's monotonic time moved to the wall clock by an offset taken when capture starts.

When the file would grow past ``max_bytes`` it becomes ``<file>.1`` (``.1`` to ``.<keep>``,
newest first; the oldest is removed) and a fresh file with its own header takes its place; a
start also moves an existing file aside, so a capture never overwrites an earlier one.

A failed write (disk full, the directory gone) stops the capture: it is logged once and counted
(``write_errors``), the taps are detached, and the gateway carries on. SIGUSR2 toggles capture
(:meth:`PacketCapture.toggle`); the server starts it at launch when
``monitoring.packet_capture.enabled``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from pathlib import Path
from typing import BinaryIO, Callable, Protocol

from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.runtime.observers import Direction, FrameTap

log = logging.getLogger(__name__)

LINKTYPE_PPP_WITH_DIR = 204
#: records are never cut short: this bounds any PPP frame an MRU allows, as tcpdump's default
SNAPLEN = 262144
#: magic, version 2.4, UTC, timestamp accuracy (always 0), snaplen, link type
FILE_HEADER = struct.Struct("<IHHiIII")
#: seconds, microseconds, captured length, original length; then the direction octet
RECORD_HEADER = struct.Struct("<IIIIB")
PCAP_MAGIC = 0xA1B2C3D4

CAPTURE_COUNTERS = CounterSet("capture", [
    CounterSpec("frames", "frames written to the capture file"),
    CounterSpec("bytes", "bytes written to capture files, pcap headers included", unit="bytes"),
    CounterSpec("rotations", "capture files set aside as <file>.1 when full"),
    CounterSpec("write_errors", "failed writes, each of which stopped the capture"),
])


class TapHost(Protocol):
    """What shows a tap its frames (a :class:`~pyslirp.runtime.gateway.Gateway`)."""

    def attach_tap(self, tap: FrameTap) -> None: ...
    def detach_tap(self, tap: FrameTap) -> None: ...


class PacketCapture:
    """Writes the frames of the gateways it watches to ``path`` while capture is on."""

    def __init__(
        self, path: Path, max_bytes: int | None = None, keep: int = 0, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.counters = dict.fromkeys(CAPTURE_COUNTERS.all_keys(), 0)
        self._wall_clock = wall_clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock_offset = 0.0
        self._file: BinaryIO | None = None
        self._size = 0  # bytes in the current file, written and pending
        self._pending: list[bytes] = []
        self._pending_frames = 0
        self._flush_scheduled = False
        self._watched: list[TapHost] = []

    @property
    def capturing(self) -> bool:
        return self._file is not None

    # -- which gateways --------------------------------------------------------------------------

    def watch(self, gateway: TapHost) -> None:
        """Capture ``gateway``'s frames whenever capture is on, from now until :meth:`unwatch`."""
        self._watched.append(gateway)
        if self.capturing:
            gateway.attach_tap(self)

    def unwatch(self, gateway: TapHost) -> None:
        self._watched.remove(gateway)
        gateway.detach_tap(self)

    # -- on and off ------------------------------------------------------------------------------

    def start(self) -> bool:
        """Start writing a fresh file; False (logged) if it cannot be opened."""
        if self.capturing:
            return True
        self._loop = asyncio.get_running_loop()
        self._clock_offset = self._wall_clock() - self._loop.time()
        try:
            self._set_aside()
            self._open()
        except OSError as exc:
            self._fail(exc)
            return False
        for gateway in self._watched:
            gateway.attach_tap(self)
        log.info("packet capture on: writing %s", self.path)
        return True

    def stop(self) -> None:
        """Write what is pending, close the file and detach from the gateways."""
        if not self.capturing:
            return
        self.flush()
        if self._file is not None:  # the last flush did not fail
            self._close()
            log.info("packet capture off: %s closed", self.path)

    def toggle(self) -> None:
        """SIGUSR2: capture off if on, on if off."""
        if self.capturing:
            self.stop()
        else:
            self.start()

    # -- the tap -----------------------------------------------------------------------------------

    def frame(self, direction: Direction, frame: bytes, now: float) -> None:
        stamp = now + self._clock_offset
        seconds = int(stamp)
        length = len(frame) + 1  # the direction octet is part of the record's data
        header = RECORD_HEADER.pack(
            seconds, int((stamp - seconds) * 1_000_000), length, length, direction is Direction.SENT
        )
        size = len(header) + len(frame)
        if self.max_bytes is not None and self._size + size > self.max_bytes and self._size > FILE_HEADER.size:
            try:
                self._rotate()
            except OSError as exc:
                self._fail(exc)
                return
        self._pending.append(header)
        self._pending.append(frame)
        self._pending_frames += 1
        self._size += size
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)  # type: ignore[union-attr]

    def flush(self) -> None:
        """Write this batch of frames through to the file, where a reader sees them."""
        self._flush_scheduled = False
        if self._file is None or not self._pending:
            return
        try:
            self._write_pending()
        except OSError as exc:
            self._fail(exc)

    # -- the file ----------------------------------------------------------------------------------

    def _open(self) -> None:
        self._file = open(self.path, "wb")
        self._size = FILE_HEADER.size
        self._pending.append(FILE_HEADER.pack(PCAP_MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_PPP_WITH_DIR))
        self._write_pending()  # a reader finds a valid, empty capture at once

    def _write_pending(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        self._file.write(data)  # type: ignore[union-attr]
        self._file.flush()  # type: ignore[union-attr]
        self.counters["bytes"] += len(data)
        self.counters["frames"] += self._pending_frames
        self._pending_frames = 0

    def _rotate(self) -> None:
        self._write_pending()
        self._file.close()  # type: ignore[union-attr]
        self._file = None
        self._set_aside()
        self._open()
        self.counters["rotations"] += 1

    def _set_aside(self) -> None:
        """Move the file to ``.1`` and each older one up a number, dropping the oldest. With
        ``keep`` 0 the file is replaced; one removed meanwhile leaves nothing to move."""
        if self.keep == 0 or not self.path.exists():
            return
        for number in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{number + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def _fail(self, exc: OSError) -> None:
        self.counters["write_errors"] += 1
        log.error("packet capture stopped: cannot write %s: %s", self.path, exc.strerror or exc)
        self._close()

    def _close(self) -> None:
        self._pending.clear()
        self._pending_frames = 0
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # its buffer could not be written either; the error was reported
                pass
            self._file = None
        for gateway in self._watched:
            gateway.detach_tap(self)
