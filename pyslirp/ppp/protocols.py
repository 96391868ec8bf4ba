"""What every part of the PPP link shares: Protocol numbers, the defaults that hold until LCP has
negotiated others, the authentication method names, and how text a peer sent is shown.
"""

from __future__ import annotations

__all__ = [
    "AUTH_CHAP",
    "AUTH_PAP",
    "CHAP_MD5",
    "DEFAULT_ACCM",
    "DEFAULT_MRU",
    "MIN_MRU",
    "PROTO_CHAP",
    "PROTO_IP",
    "PROTO_IPCP",
    "PROTO_LCP",
    "PROTO_PAP",
    "PROTO_VJ_COMP",
    "PROTO_VJ_UNCOMP",
    "printable",
]

# PPP Protocol field values (RFC 1661 §2).
PROTO_IP = 0x0021
PROTO_VJ_COMP = 0x002D  # Van Jacobson compressed TCP/IP (RFC 1144, RFC 1332 §3.2)
PROTO_VJ_UNCOMP = 0x002F  # Van Jacobson uncompressed TCP/IP
PROTO_IPCP = 0x8021
PROTO_LCP = 0xC021
PROTO_PAP = 0xC023
PROTO_CHAP = 0xC223

# Link defaults until LCP is Opened, and for LCP's own frames always (RFC 1661 §6.1, RFC 1662 §7.1).
DEFAULT_MRU = 1500
DEFAULT_ACCM = 0xFFFFFFFF
MIN_MRU = 128  # pppd's floor: LCP Naks a smaller MRU up to it, the configuration refuses one

# Authentication methods, as the configuration names them and LCP negotiates them (RFC 1661 §6.2).
AUTH_PAP = "pap"
AUTH_CHAP = "chap"
CHAP_MD5 = 5  # the CHAP Algorithm octet of the Authentication-Protocol option (RFC 1994 §3)


def printable(data: bytes, limit: int = 64) -> str:
    """Text from the peer (a user name, a Terminate-Request reason), safe for logs and events."""
    text = data[:limit].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)
