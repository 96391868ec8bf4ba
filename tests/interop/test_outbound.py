"""Outbound routing with Linux pppd in the VM as the client: its connections to an address other
than ours reach a remote host (a network namespace, testhost.py) through a SOCKS5 proxy (danted,
socks_server.py), with or without a login, or directly from the host; a wrong SOCKS password, a
denied destination and the default policy get RST at once. UDP goes through the proxy's UDP
ASSOCIATE relay and comes back intact; with remote_dns a name only the proxy can resolve is
downloaded from through it. A SOCKS proxy killed mid-transfer cuts its connections short only (a
download it relayed with FIN, an upload it had stopped reading with RST): another download
carries on and pyslirp keeps serving.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re

import pytest

import rig
from dial import PPPD_QUIET as PPPD
from pyslirp_proc import PyslirpProcess
from socks_server import SocksServer
from test_data_path import sha
from test_service_faults import GatedFileServer
from testhost import BENCHMARK_NET, ECHO_PORT, SINK_PORT, TestHost

BLOB = 5 << 20
REFUSED_AT_ONCE = 10.0  # seconds: generous, a refusal takes a round trip on the line
#: datagrams of 1 to 4000 bytes: past 1472 they cross the 1500-byte PPP MTU in fragments, both ways
UDP_DATAGRAMS, UDP_MAX_SIZE = 40, 4000
NAME = "files.test"  # known to the test host's dnsmasq only
FAKE_RANGE = ipaddress.ip_network("100.64.0.0/10")  # outbound.fake_ip_range's default

#: dial, route the test host's range through the link, and define the checks the tests use
DIAL = f"""
{PPPD} &
PPPD_PID=$!
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
ip route add {BENCHMARK_NET} dev "$PPP_IFACE" || {{ result route 0; exit 1; }}
download() {{  # download URL: wget's exit status and the sha256 of what arrived
  wget -q -O /tmp/download "$1"; echo "$? $(sha256sum /tmp/download | cut -d' ' -f1)"
}}
refusal() {{  # refusal ADDRESS PORT: the seconds a connection took to fail, and nc's message
  t0=$(cut -d' ' -f1 /proc/uptime)
  message=$(timeout 30 nc "$1" "$2" </dev/null 2>&1)
  t1=$(cut -d' ' -f1 /proc/uptime)
  echo "$(awk "BEGIN {{ print $t1 - $t0 }}") $message"
}}
"""
HANG_UP = "\nkill $PPPD_PID; wait $PPPD_PID || true\n"


def socks_config(socks: SocksServer, password: str | None = None) -> dict:
    """pyslirp's configuration for mode socks through ``socks`` (``password`` replaces its own)."""
    return {"outbound": {"mode": "socks"},
            "socks": {"enabled": True, "host": "127.0.0.1", "port": socks.port,
                      "username": socks.username, "password": password or socks.password}}


def require_pbench(image: rig.ImagePaths) -> None:
    if not json.loads(image.manifest.read_text()).get("pbench"):
        rig.skip_or_fail("the rig's image has no pbench (apt-get install gcc libc6-dev, then rebuild the image)")


async def run(image: rig.ImagePaths, accel: str, server: PyslirpProcess, body: str, name: str) -> rig.VMResult:
    res = await rig.run_vm_async(image, DIAL + body + HANG_UP, line="virtio",
                                 line_port=server.port, timeout=180, guest_timeout=150, accel=accel,
                                 name=name)
    res.check()
    return res


def assert_refused_at_once(refusal: str) -> None:
    """``refusal``: what the guest's refusal() reported."""
    seconds, _, message = refusal.partition(" ")
    assert "Connection refused" in message, refusal
    assert float(seconds) < REFUSED_AT_ONCE, refusal


@pytest.mark.parametrize("login", [False, True], ids=["no-auth", "username"])
async def test_a_download_through_socks_arrives_intact(rig_image, rig_accel, login: bool) -> None:
    blob = os.urandom(BLOB)
    async with TestHost({"blob": blob}) as host, SocksServer(host.host_address, login=login) as socks:
        async with PyslirpProcess(socks_config(socks), debug=False) as server:
            res = await run(rig_image, rig_accel, server, name=f"socks-login-{login}",
                            body=f'result download "$(download http://{host.address}/blob)"')
            stats = await server.stats()
        danted_log = socks.log()
    assert res.results["download"] == f"0 {sha(blob)}"
    client = f"username%{socks.username}@127.0.0.1" if login else "127.0.0.1"
    connected_out = rf"tcp/connect \[: {re.escape(client)}\.\d+ .* {re.escape(host.address)}\.80$"
    assert re.search(connected_out, danted_log, re.M), danted_log
    assert stats["counters"]["proxy"]["connections_opened"] == 1


async def test_a_wrong_socks_password_is_refused_at_once(rig_image, rig_accel) -> None:
    async with TestHost({}) as host, SocksServer(host.host_address, login=True) as socks:
        async with PyslirpProcess(socks_config(socks, password="not-the-password"), debug=False) as server:
            res = await run(rig_image, rig_accel, server, name="socks-wrong-password",
                            body=f'result refusal "$(refusal {host.address} 80)"')
            stats = await server.stats()
        danted_log = socks.log()
    assert_refused_at_once(res.results["refusal"])
    assert f'system password authentication failed for user "{socks.username}"' in danted_log
    assert stats["counters"]["proxy"]["service_unavailable"] == 1


async def test_direct_reaches_the_destination_and_deny_refuses_at_once(rig_image, rig_accel) -> None:
    blob = os.urandom(BLOB)
    async with TestHost({"blob": blob}) as host:
        config = {"outbound": {"mode": "direct", "deny": [f"{host.other_address}/32"]}}
        async with PyslirpProcess(config, debug=False) as server:
            res = await run(rig_image, rig_accel, server, name="direct", body=f"""
result download "$(download http://{host.address}/blob)"
result denied "$(refusal {host.other_address} 80)"
""")
            stats = await server.stats()
    assert res.results["download"] == f"0 {sha(blob)}"
    assert_refused_at_once(res.results["denied"])
    proxy = stats["counters"]["proxy"]
    assert proxy["refused_outbound_denied"] == 1
    assert proxy["connections_opened"] == 1


async def test_by_default_other_destinations_are_refused_at_once(rig_image, rig_accel) -> None:
    async with TestHost({}) as host:  # reachable from the host: refused by policy, not by the network
        async with PyslirpProcess({}, debug=False) as server:
            res = await run(rig_image, rig_accel, server, name="outbound-default",
                            body=f'result refusal "$(refusal {host.address} 80)"')
            stats = await server.stats()
    assert_refused_at_once(res.results["refusal"])
    assert stats["counters"]["proxy"]["refused_no_route"] == 1


async def test_udp_through_the_socks_relay_comes_back_intact(rig_image, rig_accel) -> None:
    require_pbench(rig_image)
    async with TestHost({}) as host, SocksServer(host.host_address, udp=True) as socks:
        config = socks_config(socks)
        config["socks"]["udp"] = True
        async with PyslirpProcess(config, debug=False) as server:
            echo = f"pbench udpecho {host.address} {ECHO_PORT} {UDP_DATAGRAMS} {UDP_MAX_SIZE}"
            res = await run(rig_image, rig_accel, server, name="socks-udp", body=f'result udp "$({echo})"')
            stats = await server.stats()
        # the association's end (pyslirp closed it at hang-up) names where its datagrams went
        await socks.wait_log(rf"udp/udpassociate \]: .* {re.escape(host.address)}\.{ECHO_PORT} ")
    assert res.results["udp"].startswith(f"sent={UDP_DATAGRAMS} intact={UDP_DATAGRAMS} "), res.results["udp"]
    relay = stats["counters"]["udp_relay"]
    assert relay["flows_opened"] == 1  # one socket in the guest: one flow, one association
    assert relay["replies"] >= UDP_DATAGRAMS


async def test_with_remote_dns_a_name_only_the_proxy_resolves_is_reached_through_it(rig_image, rig_accel) -> None:
    require_pbench(rig_image)
    blob = os.urandom(1 << 20)
    async with (TestHost({"blob": blob}, names=[NAME]) as host,
                SocksServer(host.host_address, udp=True, nameserver=host.address, debug=True) as socks):
        config = socks_config(socks)
        config["socks"].update(remote_dns=True, udp=True)
        config["dns"] = {"upstream": f"127.0.0.1:{rig.free_port()}"}  # nothing there: only remote_dns answers
        async with PyslirpProcess(config, debug=False) as server:
            res = await run(rig_image, rig_accel, server, name="socks-remote-dns", body=f"""
ip route add {FAKE_RANGE} dev "$PPP_IFACE" || {{ result route 0; exit 1; }}
echo "nameserver $PPP_REMOTE" >/etc/resolv.conf
address=$(nslookup {NAME} 2>&1 | grep -A1 '^Name:' | grep '^Address' | head -1 | cut -d' ' -f2)
result address "$address"
result download "$(download http://{NAME}/blob)"
result udp "$(pbench udpecho "$address" {ECHO_PORT} 10 1000)"
""")
            stats = await server.stats()
        danted_log = socks.log()
    assert ipaddress.ip_address(res.results["address"]) in FAKE_RANGE, res.results["address"]
    assert res.results["download"] == f"0 {sha(blob)}"
    assert res.results["udp"].startswith("sent=10 intact=10 "), res.results["udp"]
    # danted got the name (ATYP 3, a domain name), resolved it with the test host's dnsmasq, and
    # took the datagrams to the name too
    assert re.search(rf"ATYP: 3 address: {re.escape(NAME)}\.80\b", danted_log), danted_log
    assert f"hostname {NAME}.80 in connect-request resolved to address {host.address}.80" in danted_log
    assert f"Destination {NAME}.{ECHO_PORT}." in danted_log
    assert stats["counters"]["udp_relay"]["dns_names_for_proxy"] >= 1
    assert stats["counters"]["proxy"]["connections_opened"] == 1


#: A (a download through SOCKS) reads its first bytes and stalls, mid-transfer, while nobody
#: reads its fifo; U (an upload through SOCKS to the test host's sink, which never reads) runs
#: until danted stops reading it; B (a service of ours, gated by the host) starts. The host kills
#: danted, restarts it, releases B; once B is done, U has ended and A is read to its end.
KILL_BODY = """
estab_resets() {{ grep '^Tcp: [0-9]' /proc/net/snmp | cut -d' ' -f9; }}  # field 9: EstabResets
resets_before=$(estab_resets)
mkfifo /tmp/a.fifo
wget -q -O /tmp/a.fifo http://{address}/big 2>/tmp/a.err & A=$!
exec 3</tmp/a.fifo
dd bs=64k count=1 <&3 >/tmp/a 2>/dev/null
dd if=/dev/zero bs=64k count=16384 2>/dev/null | nc {address} {sink} 2>/tmp/u.err & U=$!
wget -q -O /tmp/b http://10.0.0.1/blob & B=$!
wait $B; result b_exit $?
result b_sha "$(sha256sum /tmp/b | cut -d' ' -f1)"
wait $U; result u_exit $?
result u_error "$(cat /tmp/u.err)"
cat <&3 >>/tmp/a
wait $A; result a_exit $?
result a_error "$(cat /tmp/a.err)"
result a_bytes "$(wc -c < /tmp/a)"
result resets $(($(estab_resets) - resets_before))
result after "$(download http://{address}/blob)"
"""


async def test_a_socks_proxy_killed_midtransfer_cuts_its_connections_short_only(rig_image, rig_accel) -> None:
    big = os.urandom(4 * BLOB)  # more than the sockets between the test host and the guest hold
    blob = os.urandom(BLOB)
    files = GatedFileServer(blob)
    try:
        async with TestHost({"big": big, "blob": blob}) as host, SocksServer(host.host_address) as socks:
            config = socks_config(socks) | {"services": {80: {"name": "files", "port": await files.start()}}}
            async with PyslirpProcess(config, debug=False) as server:
                script = DIAL + KILL_BODY.format(address=host.address, sink=SINK_PORT) + HANG_UP
                async with rig.VM(rig_image, script, line="virtio", line_port=server.port, timeout=300,
                                  guest_timeout=270, accel=rig_accel, name="socks-killed") as vm:
                    try:  # then A stalls mid-transfer, U has data danted does not read, B is halfway
                        await asyncio.wait_for(files.half_sent.wait(), 120)
                        await socks.wait_unread(timeout=120)
                    except (asyncio.TimeoutError, AssertionError) as exc:
                        raise rig.VMError(await vm.kill(), f"the transfers never got under way: {exc}") from None
                    await socks.kill()
                    await socks.start()
                    files.release.set()
                    res = await vm.wait()
                stats = await server.stats()
    finally:
        files.release.set()
        files.close()
    res.check()
    assert res.results["b_exit"] == "0"
    assert res.results["b_sha"] == sha(blob)
    # danted's kernel ends the connection to pyslirp of U, whose data it had not read, with RST,
    # and that of A (it had read all pyslirp sent) with FIN; pyslirp passes each on.
    assert res.results["u_exit"] != "0"
    assert "reset by peer" in res.results["u_error"], res.results["u_error"]
    assert res.results["resets"] == "1"  # the guest's kernel saw one RST on an established connection
    assert res.results["a_exit"] != "0"
    assert res.results["a_error"] == "wget: connection closed prematurely"
    assert 0 < int(res.results["a_bytes"]) < len(big)
    assert res.results["after"] == f"0 {sha(blob)}"  # pyslirp carries on, through the restarted proxy
    proxy = stats["counters"]["proxy"]
    assert proxy["service_reset"] == 1
    assert proxy["connections_opened"] == 4
