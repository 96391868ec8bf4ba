"""The hypothesis profile of the long fuzz run, and its memory report.

    pytest -m fuzz --hypothesis-profile=fuzz --hypothesis-seed=N --hypothesis-show-statistics

runs the fuzz tests (tests/unit/test_fuzz_*.py) with ``max_examples`` of this profile times each
test's weight (tests/corpus/fuzzing.py): the weights add up to 52.25, so 1 045 000 inputs in
all. In that run the terminal summary gives the resident memory of the pytest process at the
start, after each test and at the end: it must not keep growing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

FUZZ_PROFILE = "fuzz"
settings.register_profile(FUZZ_PROFILE, max_examples=20_000, deadline=None, print_blob=True)

_resident_kib: list[tuple[str, int]] = []


def _vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _fuzz_profile_loaded() -> bool:
    return settings.get_current_profile_name() == FUZZ_PROFILE


def pytest_sessionstart(session: pytest.Session) -> None:
    if _fuzz_profile_loaded():
        _resident_kib.append(("start", _vm_rss_kib()))


def pytest_collection_finish(session: pytest.Session) -> None:
    if _fuzz_profile_loaded():
        _resident_kib.append(("collected (every module imported)", _vm_rss_kib()))


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    if _fuzz_profile_loaded():
        _resident_kib.append((nodeid, _vm_rss_kib()))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _resident_kib:
        return
    terminalreporter.section("fuzz run: VmRSS of the pytest process")
    for when, kib in [*_resident_kib, ("end", _vm_rss_kib())]:
        terminalreporter.write_line(f"{kib / 1024:8.1f} MiB  {when}")
