"""Every component's counters are declared (pyslirp.counters): a key counted anywhere is one its
CounterSet names. Components whose mapping holds a fixed set of keys must declare exactly those;
the stack, the proxy and the relays are checked after the proxy tests' traffic (test_proxy.py)."""

from __future__ import annotations

import asyncio
import re

from pyslirp._core.hdlc import Deframer
from pyslirp.counters import CounterSet
from pyslirp.net.line_budget import BUDGET_COUNTERS, LineBudget
from pyslirp.ppp import auth, fsm, lcp, link
from pyslirp.compiled_modules import source_path
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


def _counted_keys(source: str) -> set[str]:
    """The string keys a module counts under: ``counters["key"]``, ``_drop("key")``."""
    keys: set[str] = set()
    for subscript, argument in re.findall(r"counters\[([^\]]*)\]|_drop\(([^)]*)\)", source):
        keys.update(re.findall(r'"(\w+)"', subscript + argument))
    return keys


def test_every_key_the_ppp_modules_count_is_declared() -> None:
    # Also the keys no test's traffic reaches (the link's internal_error, say).
    sets: list[tuple[object, CounterSet]] = [
        (fsm, fsm.FSM_COUNTERS), (lcp, lcp.LCP_COUNTERS), (auth, auth.AUTH_COUNTERS), (link, link.LINK_COUNTERS)
    ]
    for module, counters in sets:
        keys = _counted_keys(source_path(module.__name__).read_text())  # type: ignore[attr-defined]
        assert keys and counters.undeclared(dict.fromkeys(keys, 1)) == [], module


def test_the_link_names_each_count_once() -> None:
    # A collector makes one metric per spec name: where a name recurs (the automaton's counts for
    # LCP and IPCP, VJ's both ways) it is the same spec, told apart by a label.
    specs: dict[str, object] = {}
    series = set()
    for spec, labels, _ in link.LINK_COUNTERS.samples({}):
        assert specs.setdefault(spec.name, spec) is spec, spec.name
        assert (spec.name, tuple(sorted(labels.items()))) not in series
        series.add((spec.name, tuple(sorted(labels.items()))))
