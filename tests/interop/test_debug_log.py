"""``serve --debug`` against Linux pppd's ``debug``: every LCP, IPCP, PAP and CHAP packet pppd logs
as sent, pyslirp logs as received with the same text, and the other way round."""

from __future__ import annotations

import re

import pytest

from pyslirp_proc import PyslirpProcess
from dial import PAP_CONFIG, assert_addresses, run_pppd

PACKET = re.compile(r"\b(sent|rcvd) (\[(?:LCP|IPCP|PAP|CHAP) .*\])\s*$")
MIRROR = {"sent": "rcvd", "rcvd": "sent"}
CHAP_CONFIG = {"ppp": {"auth": {"method": "chap", "users": {"alice": "wonderland"}}}}
CHAP_SECRETS = {"/etc/ppp/chap-secrets": b"alice * wonderland *\n"}


def packets(lines: list[str]) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for line in lines if (m := PACKET.search(line))]


@pytest.mark.parametrize(("config", "options", "files"), [
    ({}, "", None),
    (PAP_CONFIG, "user alice password wonderland", None),
    (CHAP_CONFIG, "user alice", CHAP_SECRETS),
], ids=["noauth", "pap", "chap"])
async def test_our_packet_lines_mirror_pppds(rig_image, rig_accel, config, options, files) -> None:
    async with PyslirpProcess(config) as server:
        res = await run_pppd(rig_image, rig_accel, server, options=options, files=files)
        assert_addresses(res)
        await server.wait_log(r"sent \[LCP TermAck")  # pppd hung up when the script ended
    theirs = packets(res.console.splitlines())
    ours = set(packets(server.lines))
    assert len(theirs) >= 8, res.describe()
    for direction, text in theirs:
        if text.startswith("[CHAP Response"):  # pppd shows the value; we show its length only
            text = re.sub(r"<[0-9a-f]{32}>", "<hidden 16 bytes>", text)
        assert (MIRROR[direction], text) in ours, f"pppd {direction} {text}"
    assert "wonderland" not in server.log()
