"""Listening sockets for the line and the forwards: resolved as create_server resolves a host,
without the IDNA codec for an ASCII host."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from pyslirp.runtime.listening import listen, passive_addresses


def test_an_address_literal_listens_there() -> None:
    (info,) = passive_addresses("127.0.0.1", 0)
    with listen(info, 5) as server, socket.create_connection(server.getsockname()) as client:
        accepted, _ = server.accept()
        accepted.close()
        assert bool(server.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)) == (os.name == "posix")
        assert client.getpeername() == server.getsockname()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this Python")
def test_an_ipv6_socket_is_ipv6_only_as_create_server_makes_it() -> None:
    try:
        (info,) = passive_addresses("::1", 0)
        server = listen(info, 5)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with server:
        assert server.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


def test_a_name_gives_every_address_it_resolves_to() -> None:
    assert {info[4][0] for info in passive_addresses("localhost", 80)} >= {"127.0.0.1"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")
def test_a_host_that_does_not_resolve_is_an_oserror_and_a_failed_bind_leaves_no_socket() -> None:
    with pytest.raises(OSError):
        passive_addresses("no-such-host.invalid", 80)
    (info,) = passive_addresses("127.0.0.1", 0)
    with listen(info, 1) as taken:
        busy = (*info[:4], taken.getsockname())
        taken_fds = len(os.listdir("/proc/self/fd"))
        with pytest.raises(OSError):
            listen(busy, 1)
        assert len(os.listdir("/proc/self/fd")) == taken_fds


def test_resolving_an_ascii_host_does_not_load_the_idna_codec() -> None:
    probe = ("import sys\nfrom pyslirp.runtime.listening import passive_addresses\n"
             "passive_addresses('localhost', 80); passive_addresses('127.0.0.1', 0)\n"
             "print('encodings.idna' in sys.modules, 'unicodedata' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.split() == ["False", "False"]
