"""The security section against the Linux kernel's TCP in the VM: a connection storm is held to
the rate limit with prompt RSTs, each refusal audited and counted once, while an SSH session
opened before the storm keeps answering; short SSH connections get the client blocked from SSH.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

import rig
from pyslirp_proc import PyslirpProcess
from metrics_scrape import scrape, total
from test_ssh import SSHD, privsep_dir, sshd

PPPD = "pppd $PPP_TTY 115200 nodetach local noauth nocrtscts nodefaultroute maxfail 1"
RATE, BURST, STORM = 10, 20, 200

STORM_SCRIPT = f"""
{PPPD} &
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
SSH="dbclient -y -i /root/.ssh/id -p 22 $SSH_USER@10.0.0.1"
# An interactive session: a line every half second, echoed back by cat on the host.
(i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); echo $i; sleep 0.5; done) | $SSH cat > /tmp/ssh.out 2>/tmp/ssh.err &
i=0; while [ ! -s /tmp/ssh.out ] && [ $i -lt 60 ]; do sleep 0.5; i=$((i+1)); done
before=$(wc -l < /tmp/ssh.out)
start=$(cut -d' ' -f1 /proc/uptime)
ok=0; refused=0; i=0
while [ $i -lt {STORM} ]; do
  if [ "$(nc 10.0.0.1 80 < /dev/null 2>/dev/null)" = "ok" ]; then ok=$((ok+1)); else refused=$((refused+1)); fi
  i=$((i+1))
done
end=$(cut -d' ' -f1 /proc/uptime)
during=$(wc -l < /tmp/ssh.out)
sleep 2
after=$(wc -l < /tmp/ssh.out)
touch /tmp/stop
result ok $ok
result refused $refused
result storm "$start $end"
result ticks "$before $during $after"
result ssh_err "$(cat /tmp/ssh.err | tr '\\n' ' ')"
"""


def need_ssh_tools() -> None:
    for tool in ("dropbearkey", "ssh-keygen", SSHD):
        if shutil.which(tool) is None:
            reason = f"{tool} is missing (apt-get install dropbear-bin openssh-server)"
            pytest.fail(reason) if rig.in_ci() else pytest.skip(reason)


def client_key(tmp: Path) -> tuple[Path, str]:
    key = tmp / "id_dropbear"
    subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(key)], check=True, capture_output=True)
    public = subprocess.run(["dropbearkey", "-y", "-f", str(key)], check=True, capture_output=True, text=True).stdout
    return key, next(line for line in public.splitlines() if line.startswith("ssh-ed25519 "))


async def ok_service() -> asyncio.AbstractServer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


def audit_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def seconds(record: dict) -> float:
    return datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()


async def test_a_connection_storm_is_held_to_the_rate_limit_while_ssh_keeps_answering(
    rig_image, rig_accel, tmp_path: Path
) -> None:
    need_ssh_tools()
    key, public = client_key(tmp_path)
    web = await ok_service()
    audit = tmp_path / "audit.jsonl"
    metrics_port = rig.free_port()
    with privsep_dir():
        async with sshd(tmp_path, public) as (ssh_port, sshd_log):
            config = {
                "services": {
                    22: {"host": "127.0.0.1", "port": ssh_port, "name": "SSH"},
                    80: {"host": "127.0.0.1", "port": web.sockets[0].getsockname()[1], "name": "web"},
                },
                "security": {
                    "rate_limiting": {"enabled": True, "connections_per_second": RATE, "burst": BURST},
                    "audit_log": str(audit),
                },
                "monitoring": {"enable_metrics": True, "metrics_port": metrics_port, "health_port": metrics_port},
            }
            async with PyslirpProcess(config, debug=False) as server:
                res = await rig.run_vm_async(
                    rig_image, STORM_SCRIPT, line="virtio", line_port=server.port, timeout=600, accel=rig_accel,
                    files={"/root/.ssh/id": key.read_bytes()}, env={"SSH_USER": getpass.getuser()}, name="storm",
                )
                metrics = await scrape(metrics_port)
    web.close()
    res.check()
    r = res.results
    ok, refused = int(r["ok"]), int(r["refused"])
    print(f"\nstorm results: {r}")
    assert ok + refused == STORM

    records = audit_records(audit)
    storm = [rec for rec in records if rec.get("service") in ("web", None) and rec.get("dport") == 80
             and rec["event"] in ("connection_opened", "connection_refused")]
    refusals = [rec for rec in storm if rec["event"] == "connection_refused"]
    opened = [rec for rec in storm if rec["event"] == "connection_opened"]
    assert len(refusals) == refused and {rec["reason"] for rec in refusals} == {"rate_limit"}
    assert len(opened) == ok
    assert total(metrics, "pyslirp_proxy_refused_total", reason="rate_limit") == refused
    # At most the burst plus the rate over the storm (the SSH session took one token before it).
    elapsed = seconds(storm[-1]) - seconds(storm[0])
    assert ok <= BURST + RATE * elapsed + 1, (ok, elapsed)
    assert refused > STORM / 2  # the limit bit: the VM connects far faster than 10 a second
    # Refused promptly: the whole storm took nowhere near a SYN timeout per refusal.
    start, end = (float(x) for x in r["storm"].split())
    assert end - start < 3 * refused  # a SYN timeout would be 1-3 s per connection; an RST is ms
    # The SSH session answered throughout: its ticks (2 a second) kept coming back during the storm.
    before, during, after = (int(x) for x in r["ticks"].split())
    assert during - before >= 2 * (end - start) * 0.5, (before, during, after, end - start, r["ssh_err"])
    assert after > during
    assert any("Accepted publickey" in line for line in sshd_log)


BRUTE_SCRIPT = f"""
{PPPD} &
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
attempt() {{ [ "$(nc 10.0.0.1 $1 < /dev/null 2>/dev/null)" = "ok" ] && echo 1 || echo 0; }}
answered=""; i=0
while [ $i -lt 20 ]; do answered="$answered$(attempt 2200)"; i=$((i+1)); done
sleep 3  # a connection counts when it has ended: after TIME-WAIT (2 s) when the service closed first
result storm "$answered$(attempt 2200)"
result other_service "$(attempt 80)"
sleep 6
result after_block "$(attempt 2200)"
"""


@pytest.mark.parametrize("allowlisted", [False, True])
async def test_short_connections_to_an_auth_service_block_the_client_until_the_block_ends(
    rig_image, rig_accel, tmp_path: Path, allowlisted: bool
) -> None:
    banner = await ok_service()
    port = banner.sockets[0].getsockname()[1]
    audit = tmp_path / "audit.jsonl"
    config = {
        "services": {2200: {"port": port, "name": "login", "auth_service": True}, 80: {"port": port, "name": "web"}},
        "security": {
            "brute_force": {"enabled": True, "max_failures": 20, "window": 60, "block_time": 5},
            "allowlist": ["10.0.0.2/32"] if allowlisted else [],
            "audit_log": str(audit),
        },
    }
    async with PyslirpProcess(config, debug=False) as server:
        res = await rig.run_vm_async(rig_image, BRUTE_SCRIPT, line="virtio", line_port=server.port, timeout=300,
                                     accel=rig_accel, name="brute")
    banner.close()
    res.check()
    r = res.results
    events = [(rec["event"], rec.get("reason")) for rec in audit_records(audit)]
    if allowlisted:
        assert r["storm"] == "1" * 21  # never blocked
        assert ("blocked", "brute_force") not in events
    else:
        assert r["storm"] == "1" * 20 + "0"  # the 20th short connection blocked the 21st
        assert events.count(("connection_refused", "brute_force")) == 1
        assert events.count(("blocked", "brute_force")) == 1 and events.count(("unblocked", "brute_force")) == 1
        assert server.find(r"blocked 10\.0\.0\.2 from the authentication services for 5 s")
    assert r["other_service"] == "1"  # only the authentication services are blocked
    assert r["after_block"] == "1"


CHAP_BLOCK_SCRIPT = f"""
for i in 1 2 3; do {PPPD} user alice; done
echo 'alice * wonderland *' > /etc/ppp/chap-secrets
{PPPD} user alice debug logfile /tmp/blocked.log; result blocked_exit $?
result refusal "$(grep -o 'CHAP authentication failed: .*' /tmp/blocked.log | head -n 1)"
sleep 9
{PPPD} user alice &
wait_ppp 40 && result up_after_block 1 || result up_after_block 0
"""


async def test_repeated_chap_failures_refuse_the_link_until_the_block_ends(rig_image, rig_accel,
                                                                          tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    config = {
        "ppp": {"auth": {"method": "chap", "users": {"alice": "wonderland"}}},
        "security": {"brute_force": {"enabled": True, "max_failures": 3, "window": 60, "block_time": 8},
                     "audit_log": str(audit)},
    }
    async with PyslirpProcess(config, debug=False) as server:
        res = await rig.run_vm_async(rig_image, CHAP_BLOCK_SCRIPT, line_port=server.port, timeout=300,
                                     accel=rig_accel, files={"/etc/ppp/chap-secrets": b"alice * rabbit *\n"},
                                     name="chap-block")
        res.check()
        r = res.results
        # Blocked: the right secret is refused, and pppd shows why.
        assert r["blocked_exit"] in ("19", "16")
        assert r["refusal"].startswith("CHAP authentication failed: blocked after too many failed logins")
        assert r["up_after_block"] == "1"  # the block ended
        await server.wait_log(r"blocked logins on .* for 8 s: 3 failed within 60 s")
    events = [(rec["event"], rec.get("reason")) for rec in audit_records(audit)]
    before_block = events[: events.index(("blocked", "brute_force"))]
    assert [reason for event, reason in before_block if event == "auth_failed"][-2:] == ["wrong response"] * 2
    assert sum(event == "auth_failed" for event, _ in before_block) == 3, events
    assert ("auth_failed", "blocked") in events
    assert events.count(("blocked", "brute_force")) == 1 and ("auth_ok", None) in events
    assert "wonderland" not in audit.read_text() and "rabbit" not in audit.read_text()


SPOOF_SCRIPT = f"""
{PPPD} &
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
ip addr add 10.0.0.77/32 dev ppp0
ping -c 3 -W 1 -I 10.0.0.77 10.0.0.1 > /dev/null 2>&1; result spoofed_ping $?
ping -c 1 -W 3 10.0.0.1 > /dev/null 2>&1; result ping $?
"""


async def test_a_spoofed_source_address_is_dropped_and_counted(rig_image, rig_accel) -> None:
    async with PyslirpProcess({}, debug=False) as server:
        res = await rig.run_vm_async(rig_image, SPOOF_SCRIPT, line="virtio", line_port=server.port, timeout=120,
                                     accel=rig_accel, name="spoof")
        res.check()
        stats = await server.stats()
    assert res.results["spoofed_ping"] != "0" and res.results["ping"] == "0"
    assert stats["counters"]["stack"]["ip_drop_spoofed_source"] == 3
