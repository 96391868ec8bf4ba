"""A packet capture of a real session with Linux pppd: tshark reads it without an error, it shows
that session's LCP, IPCP and TCP, and what the client sent is marked received."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import rig
from pyslirp_proc import PyslirpProcess
from test_data_path import PPPD, FileServer, run, services


async def test_tshark_reads_a_capture_of_a_pppd_session(rig_image, rig_accel, tmp_path: Path) -> None:
    tshark = shutil.which("tshark")
    if tshark is None:
        reason = "tshark is missing (apt-get install tshark)"
        pytest.fail(reason) if rig.in_ci() else pytest.skip(reason)
    pcap = tmp_path / "session.pcap"
    with FileServer({"page": b"captured\n" * 100}) as http:
        config = {**services(p80=http.port), "monitoring": {"packet_capture": {"enabled": True, "pcap_file": str(pcap)}}}
        async with PyslirpProcess(config, debug=False) as server:
            res = await run(rig_image, rig_accel, server, body="""
wget -q -O /tmp/page http://10.0.0.1/page; result wget $?
""")
    assert res.results["wget"] == "0"
    fields = ["frame.p2p_dir", "_ws.col.Protocol", "ip.src", "tcp.flags.str", "_ws.col.Info"]
    done = subprocess.run(
        [tshark, "-r", str(pcap), "-T", "fields", "-E", "separator=|", *(x for f in fields for x in ("-e", f))],
        capture_output=True, text=True, timeout=120,
    )
    errors = [line for line in done.stderr.splitlines() if not line.startswith("Running as user")]
    assert done.returncode == 0 and not errors, done.stderr  # tshark warns when run as root, nothing else
    rows = [dict(zip(fields, line.split("|"))) for line in done.stdout.splitlines()]
    seen = {(row["_ws.col.Protocol"], row["frame.p2p_dir"]) for row in rows}
    # p2p_dir: 1 received from the client, 0 sent to it.
    assert {("PPP LCP", "1"), ("PPP LCP", "0"), ("PPP IPCP", "1"), ("PPP IPCP", "0")} <= seen
    client_syn = next(r for r in rows if r["_ws.col.Protocol"] == "TCP" and r["tcp.flags.str"].endswith("S·"))
    assert (client_syn["ip.src"], client_syn["frame.p2p_dir"]) == ("10.0.0.2", "1")
    assert any(r["_ws.col.Protocol"] == "HTTP" and r["frame.p2p_dir"] == "1" for r in rows)  # the GET
    assert any("Configuration Request" in r["_ws.col.Info"] and r["frame.p2p_dir"] == "1" for r in rows)
