"""Fuzzing the HDLC-like deframer (RFC 1662 §4): the compiled deframer and its pure twin agree on
every input, frame for frame and count for count, whatever the line does to real frames."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))
import fuzzing  # noqa: E402

from pyslirp._core import hdlc as compiled  # noqa: E402
from pyslirp._core.pure import hdlc as pure  # noqa: E402

ALL = 0xFFFFFFFF
accms = st.sampled_from([0, ALL, 0x000A0000]) | st.integers(0, ALL)


def line_streams() -> list[bytes]:
    """The captured frames as the line carried them: runs of one to three consecutive frames,
    stuffed with the ACCM pppd asked for (0) or the default (all control characters), the later
    frames of a run sharing the Flag that closed the one before (as Linux ppp_async sends)."""
    captured = fuzzing.frames()
    streams = []
    for accm in (0, ALL):
        wire = [compiled.encode_frame(frame, accm) for frame in captured]
        for run in (1, 2, 3):
            for i in range(len(wire) - run + 1):
                streams.append(wire[i] + b"".join(w[1:] for w in wire[i + 1 : i + run]))
    return streams


@pytest.mark.fuzz
@fuzzing.fuzz_settings(weight=10)
@given(
    stream=fuzzing.mutated(line_streams(), max_mutations=6) | st.binary(max_size=300),
    accm=accms,
    max_frame=st.sampled_from([4, 5, 6, 64, 1502, 4096]) | st.integers(4, 2000),
    cut_lengths=st.binary(max_size=6),
    accm_change=st.none() | st.tuples(st.integers(0, 6), accms),
    reset_at=st.none() | st.integers(0, 6),
)
def test_deframer_twins_agree_on_every_stream(
    stream: bytes, accm: int, max_frame: int, cut_lengths: bytes, accm_change: tuple[int, int] | None,
    reset_at: int | None,
) -> None:
    fast = compiled.Deframer(accm, 16, max_frame)
    slow = pure.Deframer(accm, 16, max_frame)
    chunks, start = [], 0
    for length in cut_lengths:  # the stream as reads deliver it, split anywhere
        chunks.append(stream[start : start + length])
        start += length
    chunks.append(stream[start:])
    delivered: list[bytes] = []
    for index, chunk in enumerate(chunks):
        if accm_change is not None and accm_change[0] == index:
            fast.set_accm(accm_change[1])
            slow.set_accm(accm_change[1])
        if reset_at == index:
            fast.reset()
            slow.reset()
        got = fast.feed(memoryview(chunk))
        assert got == slow.feed(chunk)
        assert fast.counters() == slow.counters()
        delivered += got
    counts = fast.counters()
    assert counts["bytes_in"] == len(stream)
    assert counts["frames_ok"] == len(delivered)
    assert counts["bytes_out"] == sum(map(len, delivered))
    assert all(2 <= len(frame) <= max_frame - 2 for frame in delivered)
    assert len(slow._buf) <= max_frame  # a partial frame never holds more than max_frame octets
