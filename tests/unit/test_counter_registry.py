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
