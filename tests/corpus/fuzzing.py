"""What the fuzz tests (tests/unit/test_fuzz_*.py) share: the seed corpus, read from the capture of
a real pppd session (pppd_session.pcap, see README.md), mutations of its seeds, and their example
counts.

Example counts: a fuzz test runs ``weight`` times the loaded hypothesis profile's
``max_examples``, which is 100 in the unit run and the ``fuzz`` profile's (tests/conftest.py) in
the long run (``pytest -m fuzz --hypothesis-profile=fuzz``).

Imported by bare name (``import fuzzing``) after putting this directory on ``sys.path``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pyslirp.ppp.protocols import PROTO_IP, PROTO_VJ_COMP, PROTO_VJ_UNCOMP
from pyslirp.ppp.vj import VJDecompressor
from pyslirp.runtime.capture import FILE_HEADER, LINKTYPE_PPP_WITH_DIR, PCAP_MAGIC, RECORD_HEADER

CORPUS_PCAP = Path(__file__).resolve().with_name("pppd_session.pcap")
#: the direction octet of a PPP_WITH_DIR record (pyslirp/runtime/capture.py)
RECEIVED, SENT = 0, 1
#: both ends of the captured session asked for 16 VJ slots (Max-Slot-Id 15, RFC 1332 §4)
CAPTURED_MAX_SLOT_ID = 15

T = TypeVar("T")


@dataclass(frozen=True)
class CapturedFrame:
    """One PPP frame as it crossed the line (no flags, stuffing or FCS), and which way."""

    direction: int
    frame: bytes

    @property
    def protocol(self) -> int:
        return split_frame(self.frame)[0]

    @property
    def info(self) -> bytes:
        return split_frame(self.frame)[1]


def split_frame(frame: bytes) -> tuple[int, bytes]:
    """Protocol and Information of a well-formed frame, address/control and PFC allowed
    (RFC 1661 §2, §6.5, §6.6)."""
    i = 2 if frame[:2] == b"\xff\x03" else 0
    if frame[i] & 1:
        return frame[i], frame[i + 1 :]
    return (frame[i] << 8) | frame[i + 1], frame[i + 2 :]


def read_pcap(path: Path) -> list[CapturedFrame]:
    """The records of a classic pcap file of link type PPP_WITH_DIR, in order."""
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = FILE_HEADER.unpack_from(data)
    if magic != PCAP_MAGIC or linktype != LINKTYPE_PPP_WITH_DIR:
        raise ValueError(f"{path}: not a little-endian pcap of PPP_WITH_DIR frames")
    frames = []
    pos = FILE_HEADER.size
    while pos < len(data):
        _, _, captured, _, direction = RECORD_HEADER.unpack_from(data, pos)
        start = pos + RECORD_HEADER.size
        pos = start + captured - 1  # the direction octet counts in the captured length
        frames.append(CapturedFrame(direction, data[start:pos]))
    return frames


@functools.cache
def corpus() -> tuple[CapturedFrame, ...]:
    return tuple(read_pcap(CORPUS_PCAP))


def frames() -> list[bytes]:
    """Every captured frame, both directions."""
    return [f.frame for f in corpus()]


@functools.cache
def datagrams() -> tuple[bytes, ...]:
    """Every IPv4 datagram of the session, both directions: plain IP frames, and VJ frames
    decompressed in order, one decompressor per direction as each receiver had."""
    found = []
    for direction in (RECEIVED, SENT):
        decompressor = VJDecompressor(CAPTURED_MAX_SLOT_ID, True)
        for f in corpus():
            if f.direction == direction and f.protocol in (PROTO_IP, PROTO_VJ_COMP, PROTO_VJ_UNCOMP):
                datagram = decompressor.decompress(f.protocol, f.info)
                assert datagram is not None, f"the captured session does not decompress: {f}"
                found.append(datagram)
    return tuple(found)


def datagrams_of(ip_protocol: int) -> list[bytes]:
    return [d for d in datagrams() if d[9] == ip_protocol]


# -- mutations ------------------------------------------------------------------------------------

#: octets that framing, options and headers give a meaning to
INTERESTING_OCTETS = (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x7D, 0x7E, 0x7F, 0x80, 0xC0, 0xFE, 0xFF)
#: a mutation is four octets of the program: what, where (two octets) and an argument
_MUTATION = 4


def mutate(seed: bytes, program: bytes, seeds: Sequence[bytes]) -> bytes:
    """``seed`` after the mutations ``program`` spells, four octets each: a bit flipped, an octet
    overwritten (with one of the interesting ones or any), the end cut off, a range cut out, an
    octet inserted, the tail replaced by another seed's, a range repeated. An empty program (what
    hypothesis shrinks towards) leaves the seed as it is."""
    data = bytearray(seed)
    for i in range(0, len(program) - _MUTATION + 1, _MUTATION):
        kind, high, low, argument = program[i : i + _MUTATION]
        at = ((high << 8) | low) % (len(data) + 1)
        kind %= 8
        if kind == 0 and data:
            data[at % len(data)] ^= 1 << (argument & 7)
        elif kind == 1 and data:
            data[at % len(data)] = argument
        elif kind == 2 and data:
            data[at % len(data)] = INTERESTING_OCTETS[argument % len(INTERESTING_OCTETS)]
        elif kind == 3:
            del data[at:]
        elif kind == 4:
            del data[at : at + 1 + argument % 16]
        elif kind == 5:
            data[at:at] = bytes((argument,))
        elif kind == 6:
            other = seeds[argument % len(seeds)]
            data[at:] = other[((low << 8) | high) % (len(other) + 1) :]
        elif kind == 7:
            data[at:at] = data[at : at + 1 + argument % 32]
    return bytes(data)


def mutated(seeds: Sequence[bytes], max_mutations: int = 4) -> st.SearchStrategy[bytes]:
    """A seed, as it is or after up to ``max_mutations`` mutations (:func:`mutate`). The mutations
    are one drawn string of octets, which keeps an example cheap to generate."""
    seeds = list(seeds)
    return st.builds(
        lambda seed, program: mutate(seed, program, seeds),
        st.sampled_from(seeds),
        st.binary(max_size=_MUTATION * max_mutations),
    )


class Octets:
    """Choices read one after another from a drawn string of octets, as libFuzzer's
    FuzzedDataProvider reads them: a generator is then a plain function of one string, which
    hypothesis draws at the cost of one choice and shrinks towards zeros, that is towards the first
    option of every choice. Reading past the end gives zeros."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def octet(self) -> int:
        at = self._at
        self._at += 1
        return self._data[at] if at < len(self._data) else 0

    def number(self, size: int) -> int:
        """An unsigned number of ``size`` octets, big-endian."""
        value = 0
        for _ in range(size):
            value = (value << 8) | self.octet()
        return value

    def below(self, bound: int) -> int:
        return self.number(1 if bound <= 256 else 2 if bound <= 65536 else 4) % bound

    def choice(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]

    def chance(self, one_in: int) -> bool:
        """True one time in ``one_in`` (never for a zero octet)."""
        return self.octet() % one_in == one_in - 1

    def octets(self, most: int) -> bytes:
        """Up to ``most`` octets."""
        return bytes(self.octet() for _ in range(self.below(most + 1)))


def decoded(generator: Callable[[Octets], T], size: int = 64) -> st.SearchStrategy[T]:
    """What ``generator`` makes of a drawn string of up to ``size`` octets."""
    return st.binary(max_size=size).map(lambda data: generator(Octets(data)))


def fuzz_settings(weight: float) -> settings:
    """Settings of a fuzz test: ``weight`` times the profile's max_examples, no deadline (a run
    of the stack takes what the machine gives it) and no health check on the size or speed of
    generated data."""
    return settings(
        max_examples=max(1, round(settings.default.max_examples * weight)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )

