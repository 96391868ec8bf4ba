"""The PPP link against Linux pppd: LCP, authentication, IPCP, keepalive — on both line types.

Each test boots the rig's VM, runs Debian's unmodified pppd against ``pyslirp serve`` (the
installed CLI in its own process) and checks what both ends report.
"""

from __future__ import annotations

import pytest

import rig
from dial import PAP_CONFIG, PPPD, assert_addresses, run_pppd
from pyslirp_proc import PyslirpProcess

LINES = ["16550", "virtio"]


@pytest.mark.parametrize("line", LINES)
async def test_default_pppd_reaches_ipcp_opened_and_pings(rig_image, rig_accel, line: str) -> None:
    async with PyslirpProcess() as server:
        res = await run_pppd(rig_image, rig_accel, server, line=line, body="""
ping -c 3 -W 3 10.0.0.1 >/dev/null; result ping $?
""")
        assert_addresses(res)
        assert res.results["ping"] == "0"
        await server.wait_log(r"link up: we are 10\.0\.0\.1, the client is 10\.0\.0\.2")


@pytest.mark.parametrize(
    "options",
    ["novj", "noaccomp nopcomp", "lcp-echo-interval 1 lcp-echo-failure 3", "novj noaccomp nopcomp asyncmap 0xffffffff"],
)
async def test_option_variants(rig_image, rig_accel, options: str) -> None:
    async with PyslirpProcess() as server:
        res = await run_pppd(rig_image, rig_accel, server, options=options, body="""
ping -c 2 -W 3 -s 200 10.0.0.1 >/dev/null; result ping $?
sleep 3
ping -c 1 -W 3 10.0.0.1 >/dev/null; result ping_later $?
""")
        assert_addresses(res)
        assert res.results["ping"] == "0"
        assert res.results["ping_later"] == "0"  # still up after several echo intervals


async def test_small_mru_fragments_what_we_send(rig_image, rig_accel) -> None:
    async with PyslirpProcess() as server:
        res = await run_pppd(rig_image, rig_accel, server, options="mru 296", body="""
ping -c 2 -W 3 -s 1000 10.0.0.1 >/dev/null; result big_ping $?
""")
        assert_addresses(res)
        assert res.results["big_ping"] == "0"  # the 1028-byte replies fit a 296-byte MRU only as fragments


async def test_asyncmap_characters_are_escaped(rig_image, rig_accel) -> None:
    # The client's receive map flags XON (0x11) and XOFF (0x13); its kernel discards them when
    # they arrive raw, so replies full of them get through only if we escape them.
    async with PyslirpProcess() as server:
        res = await run_pppd(rig_image, rig_accel, server, options="asyncmap 0xa0000", body="""
ping -c 2 -W 3 -s 100 -p 11 10.0.0.1 >/dev/null; result xon_ping $?
ping -c 2 -W 3 -s 100 -p 13 10.0.0.1 >/dev/null; result xoff_ping $?
""")
        assert_addresses(res)
        assert res.results["xon_ping"] == "0"
        assert res.results["xoff_ping"] == "0"


async def test_usepeerdns_gets_our_dns_address(rig_image, rig_accel) -> None:
    async with PyslirpProcess() as server:
        res = await run_pppd(rig_image, rig_accel, server, options="usepeerdns", body="""
result dns "$(grep -m1 nameserver /etc/ppp/resolv.conf | cut -d' ' -f2)"
""")
        assert_addresses(res)
        assert res.results["dns"] == "10.0.0.1"


CHAP_CONFIG = {"ppp": {"auth": {"method": "chap", "users": {"alice": "wonderland"}, "chap_rechallenge_interval": 2}}}


async def test_pap_login(rig_image, rig_accel) -> None:
    async with PyslirpProcess(PAP_CONFIG) as server:
        res = await run_pppd(rig_image, rig_accel, server, options="user alice password wonderland", body="""
ping -c 1 -W 3 10.0.0.1 >/dev/null; result ping $?
""")
        assert_addresses(res)
        assert res.results["ping"] == "0"
        await server.wait_log(r"authenticated user 'alice' \(pap\)")
        assert "wonderland" not in server.log()


async def test_chap_login_with_rechallenge(rig_image, rig_accel) -> None:
    secrets = {"/etc/ppp/chap-secrets": b"alice * wonderland *\n"}
    async with PyslirpProcess(CHAP_CONFIG) as server:
        res = await run_pppd(rig_image, rig_accel, server, options="user alice", files=secrets, body="""
sleep 5
ping -c 1 -W 3 10.0.0.1 >/dev/null; result ping $?
""")
        assert_addresses(res)
        assert res.results["ping"] == "0"  # still up after re-challenges every 2 s
        assert server.find(r"authenticated user 'alice' \(chap\)")
        assert server.find(r"authenticated user 'alice' \(chap, re-challenge\)")
        assert "wonderland" not in server.log()


@pytest.mark.parametrize(("config", "options", "files"), [
    (PAP_CONFIG, "user alice password rabbit", None),
    (CHAP_CONFIG, "user alice", {"/etc/ppp/chap-secrets": b"alice * rabbit *\n"}),
])
async def test_wrong_password_is_refused_and_the_link_ends(rig_image, rig_accel, config, options, files) -> None:
    async with PyslirpProcess(config) as server:
        script = f"""
{PPPD} {options}
result pppd_exit $?
"""
        res = await rig.run_vm_async(rig_image, script, line_port=server.port, timeout=90,
                                     accel=rig_accel, files=files)
        res.check()
        # pppd exits 19 (EXIT_AUTH_TOPEER_FAILED) when it handles our Failure before our LCP
        # Terminate-Request ends the link, else 16 (the link was terminated): refused either way.
        assert res.results["pppd_exit"] in ("19", "16")
        await server.wait_log(r"authentication failed: user 'alice'")
        assert not server.find(r"link up")
        assert "rabbit" not in server.log()


async def test_vanished_client_is_noticed_by_keepalive(rig_image, rig_accel) -> None:
    config = {"ppp": {"keepalive": {"interval": 1, "failures": 3}}}
    async with PyslirpProcess(config) as server:
        # Stopping pppd leaves the line open but nobody answers LCP: only keepalive can tell.
        res = await run_pppd(rig_image, rig_accel, server, body="""
kill -STOP $PPPD_PID
sleep 8
kill -CONT $PPPD_PID
""")
        res.check()
        await server.wait_log(r"link down: .*keepalive", timeout=5)
