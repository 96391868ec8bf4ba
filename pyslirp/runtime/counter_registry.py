"""The one home of every counter: what SIGUSR1, ``/status``, the metrics endpoint and tests read.

Components keep counting in their own plain mappings (a dict increment is all the packet path
pays). A component that comes to life registers its mapping here with its
:class:`~pyslirp.counters.CounterSet` (:meth:`CounterRegistry.attach`); nothing is read until
someone asks (:meth:`CounterRegistry.totals`, at a scrape or a SIGUSR1). When the component goes
away — a link goes down and its stack with it, a line session ends — :meth:`CounterRegistry.detach`
folds its last counts into the retained totals, so a total never goes backwards: Prometheus
counters stay monotonic across redials and reconnects.

A source is a mapping or a callable returning one (the compiled deframer's counts are C fields
behind a method). Several live sources of one component (two links over time, or many lines) add
up into one total per key.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from pyslirp.counters import CounterSet, CounterSpec

Source = Mapping[str, int] | Callable[[], Mapping[str, int]]


@dataclass(frozen=True)
class Registration:
    """What :meth:`CounterRegistry.attach` returns; hand it back to :meth:`CounterRegistry.detach`."""

    ident: int
    counters: CounterSet


class CounterRegistry:
    """Every component's counters, live and retired, by component."""

    def __init__(self) -> None:
        self._sets: dict[str, CounterSet] = {}
        self._live: dict[int, tuple[CounterSet, Source]] = {}
        self._retired: dict[str, Counter[str]] = {}
        self._ids = itertools.count(1)

    def attach(self, counters: CounterSet, source: Source) -> Registration:
        """Count ``source`` under ``counters.component`` from now on."""
        known = self._sets.setdefault(counters.component, counters)
        if known is not counters:
            raise ValueError(f"two different counter sets are named {counters.component!r}")
        registration = Registration(next(self._ids), counters)
        self._live[registration.ident] = (counters, source)
        return registration

    def detach(self, registration: Registration) -> None:
        """The component is gone: keep its final counts in the totals. Detaching twice is harmless."""
        entry = self._live.pop(registration.ident, None)
        if entry is not None:
            counters, source = entry
            self._retired.setdefault(counters.component, Counter()).update(_read(source))

    def totals(self, component: str) -> dict[str, int]:
        """Every count of ``component``, live plus retired (declared keys only, zeros included)."""
        counters = self._sets.get(component)
        if counters is None:
            return {}
        total: Counter[str] = Counter(self._retired.get(component, {}))
        for live_set, source in self._live.values():
            if live_set is counters:
                total.update(_read(source))
        return {key: total.get(key, 0) for key in sorted(counters.all_keys())}

    def components(self) -> list[str]:
        return sorted(self._sets)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Every component's totals: what SIGUSR1 logs and ``/status`` shows."""
        return {component: self.totals(component) for component in self.components()}

    def samples(self) -> Iterator[tuple[CounterSet, CounterSpec, dict[str, str], int]]:
        """Every declared counter of every component with its labels and total (for exporters)."""
        for component in self.components():
            counters = self._sets[component]
            for spec, labels, value in counters.samples(self.totals(component)):
                yield counters, spec, labels, value


def _read(source: Source) -> Mapping[str, int]:
    return source() if callable(source) else source
