"""RFC 1662 octet-stuffed framing, plain per-byte twin of pyslirp._core.hdlc."""

from __future__ import annotations

from .fcs import GOOD, INIT, fcs16

DEFAULT_MAX_FRAME = 4096
FLAG = 0x7E
ESC = 0x7D


def _check_accm(accm: int) -> int:
    if not 0 <= accm <= 0xFFFFFFFF:
        raise ValueError(f"accm must be a 32-bit map, got {accm!r}")
    return accm


def _check_fcs_bits(fcs_bits: int) -> None:
    if fcs_bits != 16:
        raise ValueError(f"fcs_bits={fcs_bits} is not supported: only the 16-bit FCS is implemented")


def _in_accm(c: int, accm: int) -> bool:
    return c < 0x20 and bool((accm >> c) & 1)


def encode_frame(frame: bytes | bytearray | memoryview, accm: int = 0xFFFFFFFF, fcs_bits: int = 16) -> bytes:
    """Flag + stuffed(frame + FCS) + Flag."""
    _check_accm(accm)
    _check_fcs_bits(fcs_bits)
    frame = bytes(frame)
    fcs = ~fcs16(frame) & 0xFFFF
    out = bytearray([FLAG])
    for c in frame + bytes([fcs & 0xFF, fcs >> 8]):
        if c == FLAG or c == ESC or _in_accm(c, accm):
            out.append(ESC)
            out.append(c ^ 0x20)
        else:
            out.append(c)
    out.append(FLAG)
    return bytes(out)


class Deframer:
    """Streaming deframer; see pyslirp._core.hdlc for the rules."""

    def __init__(self, accm: int = 0xFFFFFFFF, fcs_bits: int = 16, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        _check_fcs_bits(fcs_bits)
        if not 4 <= max_frame <= 1 << 24:
            raise ValueError(f"max_frame must be 4..16777216 octets (FCS included), got {max_frame}")
        self.accm = _check_accm(accm)
        self.max_frame = max_frame
        self.fcs_bits = 16
        self._buf = bytearray()
        self._hunting = True   # before the first Flag
        self._tossing = False  # frame too long: discard up to the next Flag
        self._escaped = False
        self.frames_ok = self.bad_fcs = self.too_short = self.too_long = self.aborted = 0
        self.bytes_in = self.bytes_out = self.hunt_bytes = self.ctrl_ignored = 0

    def set_accm(self, accm: int) -> None:
        self.accm = _check_accm(accm)

    def reset(self) -> None:
        self._buf = bytearray()
        self._hunting = True
        self._tossing = False
        self._escaped = False

    def counters(self) -> dict[str, int]:
        return {
            "frames_ok": self.frames_ok,
            "bad_fcs": self.bad_fcs,
            "too_short": self.too_short,
            "too_long": self.too_long,
            "aborted": self.aborted,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "hunt_bytes": self.hunt_bytes,
            "ctrl_ignored": self.ctrl_ignored,
        }

    def _end_frame(self, out: list[bytes]) -> None:
        buf = self._buf
        if self._escaped:
            self.aborted += 1
        elif len(buf) == 0:
            pass
        elif len(buf) < 4:
            self.too_short += 1
        elif fcs16(buf, INIT) != GOOD:
            self.bad_fcs += 1
        else:
            self.frames_ok += 1
            self.bytes_out += len(buf) - 2
            out.append(bytes(buf[:-2]))
        self._buf = bytearray()
        self._escaped = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        out: list[bytes] = []
        data = bytes(data)
        self.bytes_in += len(data)
        for c in data:
            if self._hunting or self._tossing:
                if c == FLAG:
                    if self._tossing:
                        self.too_long += 1
                    self._hunting = self._tossing = False
                    self._buf = bytearray()
                    self._escaped = False
                elif self._hunting:
                    self.hunt_bytes += 1
                continue
            if c == FLAG:
                self._end_frame(out)
            elif _in_accm(c, self.accm):
                self.ctrl_ignored += 1          # RFC 1662 §7.1: inserted by a DCE, delete
            elif c == ESC:
                self._escaped = True
            else:
                if self._escaped:
                    c ^= 0x20
                    self._escaped = False
                if len(self._buf) == self.max_frame:
                    self._tossing = True
                    self._buf = bytearray()
                    self._escaped = False
                else:
                    self._buf.append(c)
        return out
