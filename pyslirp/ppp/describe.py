"""A PPP control packet as one line of text, the way pppd's ``debug`` option logs it:
``[LCP ConfReq id=0x1 <asyncmap 0x0> <magic 0x5eed1234> <pcomp> <accomp>]``.

The formats are pppd's (``format_packet`` in pppd/utils.c, ``lcp_printpkt``, ``ipcp_printpkt``,
``upap_printpkt``, ``chap_print_pkt``), so a pyslirp log and the client's pppd log read alike and
compare line by line. LCP (RFC 1661 §5-§6, options of RFC 1570 and RFC 1990 too), IPCP (RFC 1332,
RFC 1877), PAP (RFC 1334 §2) and CHAP (RFC 1994 §4) are decoded; another control protocol prints
as pppd prints one it does not know, ``[proto=0x80fd]`` and its octets in hex. Data frames (IP,
VJ) are not control packets: :func:`describe_frame` gives None for them.

A malformed packet prints as pppd prints it: what decodes, then the rest in hex. Secrets never
appear: a PAP password is ``<hidden>`` (pppd's default ``hide-password``), a CHAP Response's value
(enough, with the Challenge, to guess the secret offline) is shown by its length, and octets of a
PAP or CHAP packet that did not decode are counted, never shown. Nothing here raises.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Callable

from pyslirp.ppp.auth import (
    CHAP_CHALLENGE,
    CHAP_FAILURE,
    CHAP_RESPONSE,
    CHAP_SUCCESS,
    PAP_AUTH_ACK,
    PAP_AUTH_NAK,
    PAP_AUTH_REQUEST,
)
from pyslirp.ppp.fsm import Code, parse_packet
from pyslirp.ppp.ipcp import (
    OPT_IP_ADDRESS,
    OPT_IP_ADDRESSES,
    OPT_IP_COMPRESSION,
    OPT_PRIMARY_DNS,
    OPT_PRIMARY_NBNS,
    OPT_SECONDARY_DNS,
    OPT_SECONDARY_NBNS,
)
from pyslirp.ppp.lcp import OPT_ACCM, OPT_ACFC, OPT_AUTH, OPT_MAGIC, OPT_MRU, OPT_PFC, OPT_QUALITY
from pyslirp.ppp.protocols import CHAP_MD5, PROTO_CHAP, PROTO_IPCP, PROTO_LCP, PROTO_PAP, PROTO_VJ_COMP

__all__ = ["describe_frame"]

# LCP options pppd names beyond those our LCP negotiates.
OPT_CALLBACK = 13  # RFC 1570 §2.3
OPT_MRRU = 17  # RFC 1990 §5.1.1
OPT_SSNHF = 18  # Short Sequence Number Header Format, RFC 1990 §5.1.2
OPT_ENDPOINT = 19  # Endpoint Discriminator, RFC 1990 §5.1.3
CALLBACK_CBCP = 6  # the callback operation "Callback Control Protocol"
PROTO_EAP = 0xC227  # RFC 3748
PROTO_LQR = 0xC025  # Link Quality Report, RFC 1989
CHAP_MICROSOFT = 0x80  # RFC 2433
CHAP_MICROSOFT_V2 = 0x81  # RFC 2759
PROTO_VJ_COMP_OLD = 0x0037  # the value RFC 1172 printed by mistake; old peers still send it
LCP_IDENTIFICATION = 12  # RFC 1570 §2.1
LCP_TIME_REMAINING = 13  # RFC 1570 §2.2
MAX_ENDPOINT = 20  # octets of an Endpoint Discriminator pppd shows

_LCP_CODES = ("ConfReq", "ConfAck", "ConfNak", "ConfRej", "TermReq", "TermAck", "CodeRej", "ProtRej",
              "EchoReq", "EchoRep", "DiscReq", "Ident", "TimeRem")
_IPCP_CODES = _LCP_CODES[:7]
_PAP_CODES = ("AuthReq", "AuthAck", "AuthNak")
_CHAP_CODES = ("Challenge", "Response", "Success", "Failure")
_CONFIGURE = (Code.CONFIGURE_REQUEST, Code.CONFIGURE_ACK, Code.CONFIGURE_NAK, Code.CONFIGURE_REJECT)
_TERMINATE = (Code.TERMINATE_REQUEST, Code.TERMINATE_ACK)
_ENDPOINT_CLASSES = ("null", "local", "IP", "MAC", "magic", "phone")
_CHAP_ALGORITHMS = {CHAP_MD5: "MD5", CHAP_MICROSOFT: "MS", CHAP_MICROSOFT_V2: "MS-v2"}

#: what an option's value says, and the octets of it left to print in hex; None: all in hex
OptionText = Callable[[int, bytes], tuple[str, bytes] | None]


def describe_frame(frame: bytes) -> str | None:
    """pppd's text of a control frame (address/control, protocol, information; either field
    compressed or not), or None for a data frame or one too short to name its protocol."""
    start = 2 if frame[:2] == b"\xff\x03" else 0
    if len(frame) < start + 2 or frame[start] & 1:  # a one-octet protocol field is never control
        return None
    protocol = int.from_bytes(frame[start : start + 2], "big")
    if protocol < 0x8000:  # RFC 1661 §2: below 0x8000, network-layer packets, not control
        return None
    packet = bytes(frame[start + 2 :])
    printer = _PRINTERS.get(protocol)
    if printer is None:
        return f"[proto=0x{protocol:x}]" + _hex(packet, limit=32)
    name, print_packet, secret = printer
    out = [f"[{name}"]
    used = print_packet(packet, out)
    out.append("]")
    rest = packet[used:]  # octets past the Length field, or a packet that did not parse
    out.append(_hidden(rest) if secret else _hex(rest, limit=32))
    return "".join(out)


# -- the protocols: each prints its packet and returns the octets it used (0: no valid header) ---


def _lcp(packet: bytes, out: list[str]) -> int:
    parsed = _header(packet, _LCP_CODES, out)
    if parsed is None:
        return 0
    code, data = parsed
    used = 0
    if code in _CONFIGURE:
        used = _options(data, out, _lcp_option)
    elif code in _TERMINATE:
        used = _reason(data, out)
    elif code in (Code.ECHO_REQUEST, Code.ECHO_REPLY, Code.DISCARD_REQUEST):  # RFC 1661 §5.8-§5.9
        used = _magic(data, out)
    elif code == LCP_IDENTIFICATION:  # RFC 1570 §2.1: a Magic-Number, then a Message
        used = _magic(data, out)
        used += _message(data[used:], out)
    elif code == LCP_TIME_REMAINING:  # §2.2: a Magic-Number, the Seconds-Remaining, a Message
        used = _magic(data, out)
        if len(data) - used >= 4:
            out.append(f" seconds={_long(data[used:])}")
            used += 4
            used += _message(data[used:], out)
    out.append(_hex(data[used:], limit=32))
    return 4 + len(data)


def _ipcp(packet: bytes, out: list[str]) -> int:
    parsed = _header(packet, _IPCP_CODES, out)
    if parsed is None:
        return 0
    code, data = parsed
    used = 0
    if code in _CONFIGURE:
        used = _options(data, out, _ipcp_option)
    elif code in _TERMINATE:
        used = _reason(data, out)
    out.append(_hex(data[used:]))
    return 4 + len(data)


def _pap(packet: bytes, out: list[str]) -> int:
    parsed = _header(packet, _PAP_CODES, out)
    if parsed is None:
        return 0
    code, data = parsed
    used = 0
    if code == PAP_AUTH_REQUEST and data:  # RFC 1334 §2.2.1: Peer-ID and Password, each counted
        user_end = 1 + data[0]
        if len(data) > user_end and len(data) >= user_end + 1 + data[user_end]:
            out.append(f" user={_quoted(data[1:user_end])} password=<hidden>")
            used = user_end + 1 + data[user_end]
    elif code in (PAP_AUTH_ACK, PAP_AUTH_NAK) and data and len(data) >= 1 + data[0]:  # §2.2.2
        out.append(" " + _quoted(data[1 : 1 + data[0]]))
        used = 1 + data[0]
    out.append(_hidden(data[used:]))
    return 4 + len(data)


def _chap(packet: bytes, out: list[str]) -> int:
    parsed = _header(packet, _CHAP_CODES, out)
    if parsed is None:
        return 0
    code, data = parsed
    if code in (CHAP_CHALLENGE, CHAP_RESPONSE):  # RFC 1994 §4.1: Value-Size, Value, Name
        if data and len(data) >= 1 + data[0]:
            value = data[1 : 1 + data[0]]
            shown = value.hex() if code == CHAP_CHALLENGE else f"hidden {len(value)} bytes"
            out.append(f" <{shown}>, name = {_quoted(data[1 + data[0]:])}")
    elif code in (CHAP_SUCCESS, CHAP_FAILURE):  # §4.2: a Message
        out.append(" " + _quoted(data))
    else:
        out.append(_hidden(data))
    return 4 + len(data)


_PRINTERS: dict[int, tuple[str, Callable[[bytes, list[str]], int], bool]] = {
    PROTO_LCP: ("LCP", _lcp, False),
    PROTO_IPCP: ("IPCP", _ipcp, False),
    PROTO_PAP: ("PAP", _pap, True),
    PROTO_CHAP: ("CHAP", _chap, True),
}


# -- options ----------------------------------------------------------------------------------


def _lcp_option(kind: int, value: bytes) -> tuple[str, bytes] | None:
    size = len(value)
    if kind == OPT_MRU and size == 2:
        return f"mru {_short(value)}", b""
    if kind == OPT_ACCM and size == 4:
        return f"asyncmap 0x{_long(value):x}", b""
    if kind == OPT_AUTH and size >= 2:
        protocol, rest = _short(value), value[2:]
        if protocol == PROTO_PAP:
            return "auth pap", rest
        if protocol == PROTO_CHAP:
            algorithm = _CHAP_ALGORITHMS.get(rest[0]) if rest else None
            return (f"auth chap {algorithm}", rest[1:]) if algorithm else ("auth chap", rest)
        return ("auth eap" if protocol == PROTO_EAP else f"auth 0x{protocol:x}"), rest
    if kind == OPT_QUALITY and size >= 2:
        protocol = _short(value)
        return ("quality lqr" if protocol == PROTO_LQR else f"quality 0x{protocol:x}"), value[2:]
    if kind == OPT_CALLBACK and size >= 1:
        return ("callback CBCP" if value[0] == CALLBACK_CBCP else f"callback 0x{value[0]:x}"), value[1:]
    if kind == OPT_MAGIC and size == 4:
        return f"magic 0x{_long(value):x}", b""
    if kind == OPT_PFC and size == 0:
        return "pcomp", b""
    if kind == OPT_ACFC and size == 0:
        return "accomp", b""
    if kind == OPT_MRRU and size == 2:
        return f"mrru {_short(value)}", b""
    if kind == OPT_SSNHF and size == 0:
        return "ssnhf", b""
    if kind == OPT_ENDPOINT and size >= 1:
        shown = value[1 : 1 + MAX_ENDPOINT]
        return f"endpoint [{_endpoint(value[0], shown)}]", value[1 + len(shown):]
    return None


def _ipcp_option(kind: int, value: bytes) -> tuple[str, bytes] | None:
    size = len(value)
    if kind == OPT_IP_ADDRESSES and size == 8:
        return f"addrs {IPv4Address(value[:4])} {IPv4Address(value[4:])}", b""
    if kind == OPT_IP_COMPRESSION and size >= 2:  # VJ: Max-Slot-Id and Comp-Slot-Id follow, in hex
        protocol = _short(value)
        name = {PROTO_VJ_COMP: "VJ", PROTO_VJ_COMP_OLD: "old-VJ"}.get(protocol, f"0x{protocol:x}")
        return f"compress {name}", value[2:]
    if kind == OPT_IP_ADDRESS and size == 4:
        return f"addr {IPv4Address(value)}", b""
    if kind in (OPT_PRIMARY_DNS, OPT_SECONDARY_DNS) and size >= 4:
        return f"ms-dns{1 if kind == OPT_PRIMARY_DNS else 2} {IPv4Address(value[:4])}", value[4:]
    if kind in (OPT_PRIMARY_NBNS, OPT_SECONDARY_NBNS) and size >= 4:
        return f"ms-wins {IPv4Address(value[:4])}", value[4:]
    return None


def _options(data: bytes, out: list[str], describe: OptionText) -> int:
    """Each option as `` <text rest-in-hex>``, pppd's way (RFC 1661 §6); the octets used (an
    option whose Length is wrong ends the list, and the rest prints in hex)."""
    i = 0
    while len(data) - i >= 2:
        kind, length = data[i], data[i + 1]
        if length < 2 or length > len(data) - i:
            break
        described = describe(kind, data[i + 2 : i + length])
        if described is None:
            out.append(" <" + _hex(data[i : i + length]) + ">")
        else:
            text, rest = described
            out.append(f" <{text}{_hex(rest)}>")
        i += length
    return i


# -- pieces -----------------------------------------------------------------------------------


def _header(packet: bytes, names: tuple[str, ...], out: list[str]) -> tuple[int, bytes] | None:
    """Code and Identifier printed; the code and the Data up to Length, or None when the header
    is short or Length is wrong (RFC 1661 §5)."""
    parsed = parse_packet(packet)
    if parsed is None:
        return None
    code, ident, data = parsed
    out.append(f" {names[code - 1]}" if 1 <= code <= len(names) else f" code=0x{code:x}")
    out.append(f" id=0x{ident:x}")
    return code, data


def _magic(data: bytes, out: list[str]) -> int:
    if len(data) < 4:
        return 0
    out.append(f" magic=0x{_long(data):x}")
    return 4


def _message(data: bytes, out: list[str]) -> int:
    if data:
        out.append(" " + _quoted(data))
    return len(data)


def _reason(data: bytes, out: list[str]) -> int:
    """A Terminate packet's Data, quoted when it starts as text (pppd's test)."""
    if data and 0x20 <= data[0] < 0x7F:
        out.append(" " + _quoted(data))
        return len(data)
    return 0


def _endpoint(kind: int, value: bytes) -> str:
    """pppd's ``epdisc_to_str``: an Endpoint Discriminator by class (RFC 1990 §5.1.3)."""
    if kind == 0 and not value:
        return "null"
    if kind == 2 and len(value) == 4:
        return f"IP:{IPv4Address(value)}"
    separator = ":" if kind == 3 and len(value) == 6 else "."
    group = 4 if kind == 4 and len(value) % 4 == 0 else 1
    text = _ENDPOINT_CLASSES[kind] if kind < len(_ENDPOINT_CLASSES) else str(kind)
    groups = [value[i : i + group].hex() for i in range(0, len(value), group)]
    return text + (":" + separator.join(groups) if groups else "")


def _quoted(data: bytes) -> str:
    """pppd's ``print_string``: printable ASCII as is (``"`` and ``\\`` escaped), else escapes."""
    out = ['"']
    for octet in data:
        if 0x20 <= octet <= 0x7E:
            out.append(("\\" if octet in (0x22, 0x5C) else "") + chr(octet))
        else:
            out.append({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}.get(octet, f"\\{octet:03o}"))
    out.append('"')
    return "".join(out)


def _hex(data: bytes, limit: int | None = None) -> str:
    """`` xx`` per octet; past ``limit`` octets, `` ...``."""
    if limit is not None and len(data) > limit:
        return "".join(f" {octet:02x}" for octet in data[:limit]) + " ..."
    return "".join(f" {octet:02x}" for octet in data)


def _hidden(data: bytes) -> str:
    """Octets of an authentication packet that did not decode: they may hold a secret."""
    return f" <{len(data)} bytes hidden>" if data else ""


def _short(data: bytes) -> int:
    return int.from_bytes(data[:2], "big")


def _long(data: bytes) -> int:
    return int.from_bytes(data[:4], "big")
