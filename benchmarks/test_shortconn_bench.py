"""Short connections through the gateway, one at a time as the e2e rig's ``pbench short`` makes
them (benchmarks/shortconn.py): the server's CPU per connection, without a VM.

Run: PYTHONPATH=. pytest benchmarks/test_shortconn_bench.py -s. ``serve`` runs ``pyslirp serve``
in its own process and records that process's CPU µs per connection (median of the rounds), the
figure to set beside ``server CPU ms per short conn`` of benchmarks/e2e; ``inprocess`` runs the
gateway in the benchmark's own process, client and echo service included in the CPU figure.
``instructions`` counts the server's instructions per connection under valgrind (skipped without
it): the figure to compare two builds by on a machine whose other load moves CPU times.
``event_loop_floor`` runs benchmarks/loop_floor.py: a stand-in server with the same line traffic
and the same service socket per connection, and none of pyslirp's work; its CPU per connection
is the part of ``serve``'s that the event loop and the kernel take whatever pyslirp does.
"""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import sys

import pytest
import uvloop

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import loop_floor  # noqa: E402
import shortconn  # noqa: E402

N = 1000
ROUNDS = 5


@pytest.mark.parametrize("mode", ["serve", "inprocess"])
def test_short_connections(benchmark, mode: str) -> None:
    results: list[shortconn.Result] = []

    def once() -> None:
        results.append(uvloop.run(shortconn.run(mode, N, ROUNDS)))

    benchmark.pedantic(once, rounds=1, iterations=1)
    r = results[0]
    assert len(r.rounds_us) == ROUNDS  # every connection echoed its byte and closed
    who = "server process" if mode == "serve" else "whole process, client included"
    info = {
        f"CPU µs per connection ({who}), median": round(r.median_us, 1),
        "CPU µs per connection, rounds": [round(x, 1) for x in r.rounds_us],
        "wall µs per connection, median": round(r.median_wall_us),
        "CPU % in the kernel": None if r.kernel_pct is None else round(r.kernel_pct),
    }
    benchmark.extra_info.update(info)
    print(f"\nshort connections ({mode}, {N} x {ROUNDS}): " + ", ".join(f"{k} {v}" for k, v in info.items()))


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind (apt-get install valgrind)")
def test_short_connection_instructions(benchmark) -> None:
    results: list[float] = []
    benchmark.pedantic(lambda: results.append(asyncio.run(shortconn.run_instructions(N))), rounds=1, iterations=1)
    assert results[0] > 0
    benchmark.extra_info["server instructions per connection"] = round(results[0])
    print(f"\nshort connections: {results[0]:,.0f} instructions per connection (server process, user space)")


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_event_loop_floor(benchmark, loop_name: str) -> None:
    results: list[loop_floor.Result] = []
    benchmark.pedantic(lambda: results.append(uvloop.run(loop_floor.run(N, ROUNDS, loop_name))), rounds=1, iterations=1)
    r = results[0]
    assert len(r.rounds_us) == ROUNDS  # every connection's messages were answered
    info = {
        "CPU µs per connection (stand-in server process), median": round(r.median_us, 1),
        "CPU µs per connection, rounds": [round(x, 1) for x in r.rounds_us],
        "CPU % in the kernel": None if r.kernel_pct is None else round(r.kernel_pct),
    }
    benchmark.extra_info.update(info)
    print(f"\nevent-loop floor ({loop_name}, {N} x {ROUNDS}): " + ", ".join(f"{k} {v}" for k, v in info.items()))
