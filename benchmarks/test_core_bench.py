"""Throughput of the compiled core beside its pure twins and C references (pytest-benchmark).

Run: PYTHONPATH=. pytest benchmarks/ [--benchmark-json=out.json]. Every benchmark records
MB/s in extra_info; the summary at the end prints the acceptance ratios of this run.
Pure twins run on a smaller slice of the same buffer (they are ~100x slower); MB/s is
normalised to the bytes each one processes.
"""

from __future__ import annotations

import binascii
import random
import zlib

import pytest

from pyslirp._core import checksum, fcs, hdlc
from pyslirp._core.pure import checksum as pure_checksum
from pyslirp._core.pure import fcs as pure_fcs
from pyslirp._core.pure import hdlc as pure_hdlc

MIB = 1 << 20
FRAME = 1500
PURE_BYTES = 64 * 1024   # slice the pure twins work on
PURE_ROUNDS = 3

_rng = random.Random(1662)
BUF = _rng.randbytes(MIB)
PKT = BUF[:FRAME]
FRAMES = [BUF[i : i + FRAME] for i in range(0, MIB - FRAME + 1, FRAME)]          # 699 frames
FRAMES_BYTES = FRAME * len(FRAMES)
PURE_FRAMES = FRAMES[: PURE_BYTES // FRAME]
STREAM = b"".join(hdlc.encode_frame(f) for f in FRAMES)
PURE_STREAM = b"".join(hdlc.encode_frame(f) for f in PURE_FRAMES)


def crc_hqx(b: bytes) -> int:
    return binascii.crc_hqx(b, 0xFFFF)


# --- FCS-16 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,fn,size,rounds",
    [
        ("compiled", fcs.fcs16, MIB, None),
        ("pure", pure_fcs.fcs16, PURE_BYTES, PURE_ROUNDS),
        ("binascii.crc_hqx", crc_hqx, MIB, None),
        ("zlib.crc32", zlib.crc32, MIB, None),
    ],
)
def test_fcs16_1mib(throughput, name, fn, size, rounds) -> None:
    throughput("fcs16 1MiB", name, fn, BUF[:size], size, rounds)


@pytest.mark.parametrize(
    "name,fn", [("compiled", fcs.fcs16), ("pure", pure_fcs.fcs16), ("binascii.crc_hqx", crc_hqx), ("zlib.crc32", zlib.crc32)]
)
def test_fcs16_frame(throughput, name, fn) -> None:
    throughput("fcs16 1500B", name, fn, PKT, FRAME)


# --- Internet checksum -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,fn,size,rounds",
    [
        ("compiled", checksum.internet_checksum, MIB, None),
        ("pure", pure_checksum.internet_checksum, PURE_BYTES, PURE_ROUNDS),
        ("binascii.crc_hqx", crc_hqx, MIB, None),
        ("zlib.crc32", zlib.crc32, MIB, None),
    ],
)
def test_checksum_1mib(throughput, name, fn, size, rounds) -> None:
    throughput("internet_checksum 1MiB", name, fn, BUF[:size], size, rounds)


@pytest.mark.parametrize(
    "name,fn",
    [
        ("compiled", checksum.internet_checksum),
        ("pure", pure_checksum.internet_checksum),
        ("binascii.crc_hqx", crc_hqx),
        ("zlib.crc32", zlib.crc32),
    ],
)
def test_checksum_frame(throughput, name, fn) -> None:
    throughput("internet_checksum 1500B", name, fn, PKT, FRAME)


# --- HDLC encoder ------------------------------------------------------------------------------


def _encode_all(encode):
    def run(frames):
        return [encode(f) for f in frames]

    return run


def _crc_hqx_all(frames):
    return [binascii.crc_hqx(f, 0xFFFF) for f in frames]


def _crc32_all(frames):
    return [zlib.crc32(f) for f in frames]


@pytest.mark.parametrize(
    "name,fn,frames,rounds",
    [
        ("compiled", _encode_all(hdlc.encode_frame), FRAMES, None),
        ("pure", _encode_all(pure_hdlc.encode_frame), PURE_FRAMES, PURE_ROUNDS),
        ("binascii.crc_hqx", _crc_hqx_all, FRAMES, None),
        ("zlib.crc32", _crc32_all, FRAMES, None),
    ],
)
def test_encode_frame_1mib(throughput, name, fn, frames, rounds) -> None:
    out = throughput("encode_frame 1MiB", name, fn, frames, FRAME * len(frames), rounds)
    assert len(out) == len(frames)


@pytest.mark.parametrize("name,fn", [("compiled", hdlc.encode_frame), ("pure", pure_hdlc.encode_frame)])
def test_encode_frame_single(throughput, name, fn) -> None:
    throughput("encode_frame 1500B", name, fn, PKT, FRAME)


# --- HDLC deframer -----------------------------------------------------------------------------


def _deframe(impl):
    def run(stream):
        return impl.Deframer().feed(stream)

    return run


@pytest.mark.parametrize(
    "name,fn,stream,nframes,rounds",
    [
        ("compiled", _deframe(hdlc), STREAM, len(FRAMES), None),
        ("pure", _deframe(pure_hdlc), PURE_STREAM, len(PURE_FRAMES), PURE_ROUNDS),
        ("binascii.crc_hqx", crc_hqx, STREAM, None, None),
        ("zlib.crc32", zlib.crc32, STREAM, None, None),
    ],
)
def test_deframer_feed_1mib(throughput, name, fn, stream, nframes, rounds) -> None:
    # MB/s of frame content (1500-octet frames) for the deframers; of the stream for the CRCs.
    size = FRAME * nframes if nframes is not None else len(stream)
    out = throughput("Deframer.feed 1MiB", name, fn, stream, size, rounds)
    if nframes is not None:
        assert len(out) == nframes


@pytest.mark.parametrize("impl_name,impl", [("compiled", hdlc), ("pure", pure_hdlc)])
def test_deframer_feed_single(throughput, impl_name, impl) -> None:
    d = impl.Deframer()
    wire = hdlc.encode_frame(PKT)[1:]  # frames share one Flag, as Linux ppp_async sends them
    d.feed(b"~")
    out = throughput("Deframer.feed 1500B", impl_name, d.feed, wire, FRAME)
    assert out == [PKT]
