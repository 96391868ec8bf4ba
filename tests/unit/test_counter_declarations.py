"""Every component's counters are declared (pyslirp.counters): a key counted anywhere is one its
CounterSet names. Components whose mapping holds a fixed set of keys must declare exactly those;
the stack, the proxy and the relays are checked after the proxy tests' traffic (test_proxy.py)."""

from __future__ import annotations

import asyncio

from pyslirp._core.hdlc import Deframer
from pyslirp.net.line_budget import BUDGET_COUNTERS, LineBudget
from pyslirp.runtime.gateway import DEFRAMER_COUNTERS
from pyslirp.runtime.lines import LINE_COUNTERS, FdSession
from pyslirp.runtime.scheduler import SCHEDULER_COUNTERS, LineScheduler


def test_fixed_key_components_declare_exactly_their_keys() -> None:
    assert DEFRAMER_COUNTERS.all_keys() == set(Deframer(accm=0, max_frame=4096).counters())
    assert BUDGET_COUNTERS.all_keys() == set(LineBudget(1460).counters)


async def test_line_and_scheduler_declare_exactly_their_keys() -> None:
    import os

    read_fd, write_fd = os.pipe()
    try:
        session = FdSession(read_fd, "pipe", owns_fd=False)
        assert LINE_COUNTERS.all_keys() == set(session.counters)
        assert SCHEDULER_COUNTERS.all_keys() == set(LineScheduler(session).counters)
        session.close()
    finally:
        os.close(read_fd)
        os.close(write_fd)
    await asyncio.sleep(0)
