"""A SOCKS5 client (RFC 1928) with username/password authentication (RFC 1929): CONNECT and UDP
ASSOCIATE on non-blocking sockets, driven by the event loop (no thread per connection).

The messages are built and parsed by pure functions; :func:`socks5_connect` runs the exchange.
Every way the proxy can fail (refusing, closing, answering garbage) is a :class:`ConnectFailed`
whose ``answer`` says what the client sees: the reply codes of RFC 1928 §6 map to RST or to the
ICMP error a router would send.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from ipaddress import IPv4Address

from pyslirp.runtime.connector import (
    HOST_UNREACHABLE, NET_UNREACHABLE, RST, TTL_EXPIRED, ConnectFailed, open_tcp,
)

VERSION = 5
NO_AUTHENTICATION = 0x00
USERNAME_PASSWORD = 0x02
NO_ACCEPTABLE_METHOD = 0xFF
CONNECT = 0x01
UDP_ASSOCIATE = 0x03
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 0x01, 0x03, 0x04
#: RFC 1929 §2: the subnegotiation's own version
AUTH_VERSION = 1
SUCCEEDED = 0x00

#: RFC 1928 §6: each failure reply, and what the client gets for it
REPLIES: dict[int, tuple[str, str]] = {
    0x01: ("general SOCKS server failure", RST),
    0x02: ("connection not allowed by ruleset", RST),
    0x03: ("network unreachable", NET_UNREACHABLE),
    0x04: ("host unreachable", HOST_UNREACHABLE),
    0x05: ("connection refused", RST),
    0x06: ("TTL expired", TTL_EXPIRED),
    0x07: ("command not supported", RST),
    0x08: ("address type not supported", RST),
}


def greeting(authenticate: bool) -> bytes:
    """RFC 1928 §3: the methods we offer (username/password only when we have credentials)."""
    methods = bytes([NO_AUTHENTICATION, USERNAME_PASSWORD] if authenticate else [NO_AUTHENTICATION])
    return bytes([VERSION, len(methods)]) + methods


def credentials(username: str, password: str) -> bytes:
    """RFC 1929 §2: VER, ULEN, UNAME, PLEN, PASSWD (each 1-255 octets)."""
    name, secret = username.encode(), password.encode()
    if not 0 < len(name) < 256 or not 0 < len(secret) < 256:
        raise ConnectFailed("socks: username and password must be 1-255 bytes each")
    return bytes([AUTH_VERSION, len(name)]) + name + bytes([len(secret)]) + secret


def connect_request(destination: IPv4Address | str, port: int) -> bytes:
    """RFC 1928 §4: CONNECT to an IPv4 address, or to a name the proxy resolves."""
    return request(CONNECT, destination, port)


def request(command: int, destination: IPv4Address | str, port: int) -> bytes:
    """RFC 1928 §4: ``command`` for an IPv4 address, or for a name the proxy resolves."""
    if isinstance(destination, IPv4Address):
        address = bytes([ATYP_IPV4]) + destination.packed
    else:
        name = destination.encode("idna")
        if not 0 < len(name) < 256:
            raise ConnectFailed(f"socks: cannot send the name {destination!r}")
        address = bytes([ATYP_DOMAIN, len(name)]) + name
    return bytes([VERSION, command, 0]) + address + struct.pack("!H", port)


def reply_failure(code: int) -> ConnectFailed:
    """The failure a reply code other than success stands for."""
    text, answer = REPLIES.get(code, (f"unassigned reply code {code:#04x}", RST))
    return ConnectFailed(f"socks: {text}", answer)


async def socks5_connect(
    proxy_host: str,
    proxy_port: int,
    destination: IPv4Address | str,
    port: int,
    timeout: float,
    username: str | None = None,
    password: str | None = None,
) -> socket.socket:
    """A socket connected through the proxy to ``destination:port`` (the exchange done; what
    follows is the destination's stream), all within ``timeout`` seconds."""
    sock, _ = await _exchange(proxy_host, proxy_port, CONNECT, destination, port, timeout, username, password)
    return sock


async def socks5_udp_associate(
    proxy_host: str, proxy_port: int, timeout: float, username: str | None = None, password: str | None = None
) -> tuple[socket.socket, tuple[str, int]]:
    """RFC 1928 §4 UDP ASSOCIATE: the control connection (the association lasts while it is
    open) and the relay's address, where datagrams go wrapped by :func:`udp_header`."""
    sock, (host, port) = await _exchange(
        proxy_host, proxy_port, UDP_ASSOCIATE, IPv4Address(0), 0, timeout, username, password
    )
    if host in ("0.0.0.0", "::"):  # "the same address as the proxy"
        host = sock.getpeername()[0]
    return sock, (host, port)


def udp_header(destination: IPv4Address | str, port: int) -> bytes:
    """RFC 1928 §7: RSV, FRAG (0: not fragmented), the destination (an address or a name)."""
    return b"\0\0\0" + request(0, destination, port)[3:]


def parse_udp_reply(datagram: bytes) -> tuple[str, int, bytes] | None:
    """A datagram from the relay: (source address, source port, payload), or None when it is
    malformed or a fragment (RFC 1928 §7: a client that does not reassemble drops those)."""
    if len(datagram) < 10 or datagram[2] != 0:
        return None
    address_type = datagram[3]
    if address_type == ATYP_IPV4:
        start = 8
        host = str(IPv4Address(datagram[4:8]))
    elif address_type == ATYP_DOMAIN:
        start = 5 + datagram[4]
        host = datagram[5:start].decode("ascii", "replace")
    elif address_type == ATYP_IPV6 and len(datagram) >= 22:
        start = 20
        host = socket.inet_ntop(socket.AF_INET6, datagram[4:20])
    else:
        return None
    if len(datagram) < start + 2:
        return None
    return host, struct.unpack_from("!H", datagram, start)[0], datagram[start + 2:]


async def _exchange(
    proxy_host: str,
    proxy_port: int,
    command: int,
    destination: IPv4Address | str,
    port: int,
    timeout: float,
    username: str | None,
    password: str | None,
) -> tuple[socket.socket, tuple[str, int]]:
    """Connect to the proxy, authenticate, send ``command``: the socket and the reply's bound
    address, all within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sock = await open_tcp(proxy_host, proxy_port, timeout)
    try:
        bound = await asyncio.wait_for(
            _negotiate(sock, command, destination, port, username, password), max(0.0, deadline - loop.time())
        )
    except asyncio.TimeoutError:
        sock.close()
        raise ConnectFailed("socks: timeout") from None
    except OSError as exc:  # the proxy reset the connection
        sock.close()
        raise ConnectFailed(f"socks: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock, bound


async def _negotiate(
    sock: socket.socket, command: int, destination: IPv4Address | str, port: int,
    username: str | None, password: str | None,
) -> tuple[str, int]:
    loop = asyncio.get_running_loop()
    authenticate = username is not None and password is not None
    await loop.sock_sendall(sock, greeting(authenticate))
    version, method = await _receive(sock, 2)
    if version != VERSION:
        raise ConnectFailed("socks: not a SOCKS5 proxy")
    if method == USERNAME_PASSWORD and authenticate:
        await loop.sock_sendall(sock, credentials(username, password))  # type: ignore[arg-type]
        _, status = await _receive(sock, 2)
        if status != SUCCEEDED:
            raise ConnectFailed("socks: authentication failed")
    elif method == NO_ACCEPTABLE_METHOD:
        raise ConnectFailed("socks: the proxy accepts none of our authentication methods")
    elif method != NO_AUTHENTICATION:
        raise ConnectFailed(f"socks: the proxy chose a method we did not offer ({method:#04x})")
    await loop.sock_sendall(sock, request(command, destination, port))
    version, code, _, address_type = await _receive(sock, 4)
    if version != VERSION:
        raise ConnectFailed("socks: a malformed reply")
    if code != SUCCEEDED:
        raise reply_failure(code)
    if address_type == ATYP_DOMAIN:
        name = await _receive(sock, (await _receive(sock, 1))[0])
        host = name.decode("ascii", "replace")
    elif address_type == ATYP_IPV4:
        host = str(IPv4Address(await _receive(sock, 4)))
    elif address_type == ATYP_IPV6:
        host = socket.inet_ntop(socket.AF_INET6, await _receive(sock, 16))
    else:
        raise ConnectFailed(f"socks: a reply with an unknown address type ({address_type:#04x})")
    bound_port = struct.unpack("!H", await _receive(sock, 2))[0]  # where the proxy is bound
    return host, bound_port


async def _receive(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes from the proxy."""
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise ConnectFailed("socks: the proxy closed the connection")
        data += chunk
    return data
