"""Benchmark helpers: throughput bookkeeping and a summary of the acceptance ratios.

Each benchmark records its throughput (MB/s, from the median round) in
``benchmark.extra_info`` and in a session table; at the end the table is printed with the
ratios the compiled core is held to (fcs16 vs binascii.crc_hqx, checksum vs zlib.crc32,
framing vs the pure twins), all measured in the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

_RESULTS: dict[tuple[str, str], float] = {}

# (group, subject, reference or None, minimum ratio, minimum MB/s)
TARGETS = [
    ("fcs16 1MiB", "compiled", "binascii.crc_hqx", 3.0, 0.0),
    ("internet_checksum 1MiB", "compiled", "zlib.crc32", 2.0, 0.0),
    ("encode_frame 1MiB", "compiled", "pure", 40.0, 400.0),
    ("Deframer.feed 1MiB", "compiled", "pure", 40.0, 400.0),
]


@pytest.fixture
def throughput(benchmark) -> Callable[..., Any]:
    """throughput(group, name, fn, arg, nbytes, rounds=None): benchmark fn(arg) over nbytes."""

    def run(group: str, name: str, fn: Callable[[Any], Any], arg: Any, nbytes: int, rounds: int | None = None) -> Any:
        benchmark.group = group
        benchmark.name = name
        if rounds is None:
            result = benchmark(fn, arg)
        else:
            result = benchmark.pedantic(fn, args=(arg,), rounds=rounds, iterations=1, warmup_rounds=1)
        median = benchmark.stats.stats.median
        mbps = nbytes / median / 1e6
        benchmark.extra_info["bytes"] = nbytes
        benchmark.extra_info["MB/s"] = round(mbps, 1)
        _RESULTS[(group, name)] = mbps
        return result

    return run


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("pyslirp core throughput (MB/s, median round)")
    for group in sorted({g for g, _ in _RESULTS}):
        row = ", ".join(f"{name} {mbps:,.0f}" for (g, name), mbps in sorted(_RESULTS.items()) if g == group)
        tr.write_line(f"{group:28s} {row}")
    tr.section("pyslirp core acceptance targets")
    for group, subject, ref, ratio, floor in TARGETS:
        a, b = _RESULTS.get((group, subject)), _RESULTS.get((group, ref))
        if a is None or b is None:
            tr.write_line(f"{group:28s} not measured")
            continue
        ok = a / b >= ratio and a >= floor
        floor_txt = f", >= {floor:.0f} MB/s" if floor else ""
        tr.write_line(
            f"{group:28s} {subject} {a:,.0f} MB/s = {a / b:,.1f}x {ref} "
            f"(target >= {ratio:g}x{floor_txt}): {'PASS' if ok else 'FAIL'}"
        )
