"""The footprint of ``pyslirp serve`` beside SLiRP's: the server process's VmRSS with the shipped
config.yaml (metrics off) on a ``tcp-listen://`` line, idle with no client, idle with a PPP link
up, and holding 1,000 TCP connections through the link to a loopback service.

Run: .venv/bin/pytest benchmarks/test_footprint_bench.py -s. No VM: the client is the scripted pppd
and our own TCP of benchmarks/datapath.py (VJ, ACFC, PFC, as pppd negotiates them), talking to the
server's line over a TCP socket. The environment maps port 80 to a loopback echo service of this
process allowed 1,000 connections (in place of config.yaml's HTTP service) and moves the reverse
forward to a free port; everything else is config.yaml as shipped. Each held connection is
echo-verified with a 4-byte token, as the e2e scale phase's ``pbench hold`` does.

pyslirp's modules are byte-compiled first, as pip does when it installs the package: a checkout
run with PYTHONDONTWRITEBYTECODE would compile them at each start, and the compiler's memory
(about 1 MB) would stay in the figures. The issue's targets, idle with the link up at most
25 MB and at most 4.4 KB per held connection, are printed with their verdicts, not asserted.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import datapath  # noqa: E402
from server_process import Echo, compile_bytecode, free_port, start_server, stop_server, vm_rss_kb  # noqa: E402

#: SLiRP (Debian's slirp-fullbolt) idle with the link up, from the e2e scale phase
#: (benchmarks/e2e/run.py, row "RSS idle, link up (MB)"), the figure the issue quotes
SLIRP_IDLE_MB = 2.1
#: SLiRP's memory per held connection at 1,000 held, same source (benchmarks/e2e/README.md, Scale)
SLIRP_KB_PER_CONNECTION = 18
#: the issue's target for idle with the link up, MB
TARGET_IDLE_MB = 25
#: the issue's target for memory per held connection, KB (the figure of the e2e scale phase then)
TARGET_PER_CONNECTION_KB = 4.4
HELD = 1000
#: connections opened at once: a service's max_pending (16 by default)
OPENING_AT_ONCE = 16
#: seconds the server is left alone before each reading
SETTLE = 2.0
#: the port at 10.0.0.1 the held connections go to
HELD_SERVICE = 80


async def measure(workdir: pathlib.Path) -> dict[str, float]:
    """VmRSS of the server, MB: with no client, with the link up, with HELD connections."""
    loop = asyncio.get_running_loop()
    service = await loop.create_server(Echo, "127.0.0.1", 0)
    env = {
        f"PYSLIRP_SERVICES__{HELD_SERVICE}__PORT": str(service.sockets[0].getsockname()[1]),
        f"PYSLIRP_SERVICES__{HELD_SERVICE}__MAX_CONNECTIONS": str(HELD),
        "PYSLIRP_FORWARDS": json.dumps([{"listen_port": free_port(), "peer_port": 22}]),
    }
    server, (line_port,) = start_server(workdir, ["tcp-listen://127.0.0.1:0"], env)
    transport: asyncio.Transport | None = None
    try:
        await asyncio.sleep(SETTLE)
        no_link = vm_rss_kb(server.pid)
        path, transport = await datapath.dial(line_port, HELD_SERVICE)
        await asyncio.sleep(SETTLE)
        link_up = vm_rss_kb(server.pid)
        for first in range(0, HELD, OPENING_AT_ONCE):
            batch = range(first, min(first + OPENING_AT_ONCE, HELD))
            await asyncio.gather(*(path.exchange(n.to_bytes(4, "big"), close=False) for n in batch))
        await asyncio.sleep(SETTLE)
        held = vm_rss_kb(server.pid)
        assert sum(conn.state == datapath.tcp_types.ESTABLISHED for conn in path.conns.values()) == HELD
        path._client_task.cancel()
    finally:
        if transport is not None:
            transport.close()
        stop_server(server)
        service.close()
    return {"no link": no_link / 1024, "link up": link_up / 1024, "held": held / 1024}


def test_footprint(benchmark, tmp_path: pathlib.Path) -> None:
    compile_bytecode()
    results: list[dict[str, float]] = []
    benchmark.pedantic(lambda: results.append(asyncio.run(measure(tmp_path))), rounds=1, iterations=1)
    rss = results[0]
    per_connection_kb = (rss["held"] - rss["link up"]) * 1024 / HELD
    slirp_held = SLIRP_IDLE_MB + SLIRP_KB_PER_CONNECTION * HELD / 1024
    info = {
        "RSS idle, no client (MB)": round(rss["no link"], 1),
        "RSS idle, link up (MB)": round(rss["link up"], 1),
        "SLiRP RSS idle, link up (MB)": SLIRP_IDLE_MB,
        f"RSS at {HELD} held (MB)": round(rss["held"], 1),
        f"SLiRP RSS at {HELD} held (MB, from its KB per connection)": round(slirp_held, 1),
        "KB per held connection": round(per_connection_kb, 1),
        "SLiRP KB per held connection": SLIRP_KB_PER_CONNECTION,
        f"target: idle, link up <= {TARGET_IDLE_MB} MB": "PASS" if rss["link up"] <= TARGET_IDLE_MB else "FAIL",
        f"target: per held connection <= {TARGET_PER_CONNECTION_KB} KB":
            "PASS" if per_connection_kb <= TARGET_PER_CONNECTION_KB else "FAIL",
    }
    benchmark.extra_info.update(info)
    print("\n" + "\n".join(f"{name:58s} {value}" for name, value in info.items()))
