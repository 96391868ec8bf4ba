"""The counter registry: live sources read when asked, retired ones kept, totals never go back."""

from __future__ import annotations

from collections import Counter

import pytest

from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.runtime.counter_registry import CounterRegistry

STACK = CounterSet("stack", [
    CounterSpec("ip_in", "datagrams in"),
    CounterSpec("ip_drop", "dropped", reasons=("truncated", "no_route")),
])


def test_live_sources_add_up_and_retired_ones_are_kept() -> None:
    registry = CounterRegistry()
    first: Counter[str] = Counter({"ip_in": 5, "ip_drop_truncated": 1})
    one = registry.attach(STACK, first)
    second: Counter[str] = Counter({"ip_in": 2})
    registry.attach(STACK, lambda: second)  # a callable source, read when asked
    assert registry.totals("stack") == {"ip_drop_no_route": 0, "ip_drop_truncated": 1, "ip_in": 7}
    first["ip_in"] += 10  # nothing is copied on the packet path: the next read sees it
    assert registry.totals("stack")["ip_in"] == 17
    registry.detach(one)
    first["ip_in"] += 100  # a detached source is no longer read...
    assert registry.totals("stack")["ip_in"] == 17  # ...but its last counts stay in the total
    registry.detach(one)  # harmless twice
    assert registry.totals("stack")["ip_in"] == 17


def test_samples_label_reasons_and_snapshot_covers_every_component() -> None:
    registry = CounterRegistry()
    registry.attach(STACK, {"ip_drop_no_route": 3})
    samples = {(spec.name, tuple(labels.items())): v for _, spec, labels, v in registry.samples()}
    assert samples[("ip_drop", (("reason", "no_route"),))] == 3
    assert samples[("ip_in", ())] == 0
    assert registry.snapshot() == {"stack": {"ip_drop_no_route": 3, "ip_drop_truncated": 0, "ip_in": 0}}
    assert registry.totals("unknown") == {}


def test_two_different_sets_may_not_share_a_name() -> None:
    registry = CounterRegistry()
    registry.attach(STACK, {})
    with pytest.raises(ValueError):
        registry.attach(CounterSet("stack", [CounterSpec("other", "")]), {})


def test_sources_on_lines_are_counted_per_line_and_kept_per_line_when_retired() -> None:
    registry = CounterRegistry()
    a = registry.attach(STACK, Counter({"ip_in": 5}), line="a")
    registry.attach(STACK, Counter({"ip_in": 2, "ip_drop_truncated": 1}), line="b#1")
    registry.detach(a)
    a_again: Counter[str] = Counter({"ip_in": 1})  # the next client on line a
    registry.attach(STACK, a_again, line="a")
    per_line = registry.by_line("stack")
    assert per_line["a"] == {"ip_drop_no_route": 0, "ip_drop_truncated": 0, "ip_in": 6}  # retired + live
    assert per_line["b#1"]["ip_in"] == 2
    assert registry.totals("stack") == {"ip_drop_no_route": 0, "ip_drop_truncated": 1, "ip_in": 8}
    assert registry.snapshot()["stack"] == registry.totals("stack")  # SIGUSR1 and /status: over every line
    samples = {(spec.name, tuple(sorted(labels.items()))): v for _, spec, labels, v in registry.samples()}
    assert samples[("ip_in", (("line", "a"),))] == 6 and samples[("ip_in", (("line", "b#1"),))] == 2
    assert samples[("ip_drop", (("line", "b#1"), ("reason", "truncated")))] == 1
    assert ("ip_in", ()) not in samples  # a component on lines is exported per line only
    # A server-wide component has no line label.
    registry.attach(CounterSet("audit", [CounterSpec("records", "")]), {"records": 4})
    assert {labels.get("line") for counters, _, labels, _ in registry.samples() if counters.component == "audit"} == {None}
