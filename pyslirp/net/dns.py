"""DNS messages (RFC 1035 §4), sans-IO: just enough to read a query's question and to answer it
ourselves — for names the SOCKS5 proxy resolves (``socks.remote_dns``), which the client must
still be given an address for."""

from __future__ import annotations

import struct
from dataclasses import dataclass

TYPE_A = 1
TYPE_AAAA = 28
CLASS_IN = 1
HEADER = struct.Struct("!HHHHHH")
#: RFC 1035 §4.1.1 flags: QR (a response), opcode, RD, RA; RCODE
QR = 0x8000
OPCODE_MASK = 0x7800
RD = 0x0100
RA = 0x0080
RCODE_NAME_ERROR = 3
MAX_NAME = 255


class DNSError(ValueError):
    """A message that is not a well-formed query."""


@dataclass(frozen=True, slots=True)
class Question:
    ident: int
    flags: int
    name: str  # lower case, without the final dot
    qtype: int
    qclass: int
    #: the question section as it came, which the answer repeats
    raw: bytes


def parse_query(message: bytes) -> Question:
    """The single question of a standard query (RFC 1035 §4.1.2); DNSError otherwise."""
    if len(message) < HEADER.size:
        raise DNSError("truncated header")
    ident, flags, questions, answers, authorities, _ = HEADER.unpack_from(message)
    if flags & QR or flags & OPCODE_MASK:
        raise DNSError("not a standard query")
    if questions != 1 or answers or authorities:
        raise DNSError("not one question")
    labels: list[str] = []
    offset, length = HEADER.size, 0
    while True:
        if offset >= len(message):
            raise DNSError("truncated name")
        size = message[offset]
        offset += 1
        if size == 0:
            break
        if size & 0xC0:
            raise DNSError("a compressed or extended label in a question")
        label = message[offset:offset + size]
        if len(label) < size:
            raise DNSError("truncated label")
        length += size + 1
        if length > MAX_NAME:
            raise DNSError("name too long")
        labels.append(label.decode("ascii", "replace").lower())
        offset += size
    if offset + 4 > len(message):
        raise DNSError("truncated question")
    qtype, qclass = struct.unpack_from("!HH", message, offset)
    return Question(ident, flags, ".".join(labels), qtype, qclass, message[HEADER.size:offset + 4])


def answer(question: Question, address: bytes | None, ttl: int) -> bytes:
    """The response to ``question``: one A record (``address``), or none (a name with no record
    of that type: NOERROR, as RFC 2308 §2.2 calls NODATA)."""
    flags = QR | (question.flags & RD) | RA
    header = HEADER.pack(question.ident, flags, 1, 1 if address is not None else 0, 0, 0)
    if address is None:
        return header + question.raw
    # RFC 1035 §4.1.4: the owner name points at the question's, at offset 12
    record = struct.pack("!HHHIH", 0xC000 | HEADER.size, TYPE_A, CLASS_IN, ttl, 4) + address
    return header + question.raw + record
