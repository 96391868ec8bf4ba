"""The one home of every counter: what SIGUSR1, ``/status``, the metrics endpoint and tests read.

Components keep counting in their own plain mappings (a dict increment is all the packet path
pays). A component that comes to life registers its mapping here with its
:class:`~pyslirp.counters.CounterSet` (:meth:`CounterRegistry.attach`); nothing is read until
someone asks (:meth:`CounterRegistry.totals`, at a scrape or a SIGUSR1). When the component goes
away — a link goes down and its stack with it, a line session ends — :meth:`CounterRegistry.detach`
folds its last counts into the retained totals, so a total never goes backwards: Prometheus
counters stay monotonic across redials and reconnects.

A source is a mapping or a callable returning one (the compiled deframer's counts are C fields
behind a method). A source that belongs to one line's client (its deframer, link, scheduler,
stack...) is attached with that client's ``line`` label; server-wide ones (the audit log, forwards,
capture) without. Several sources of one component on one line (links over time) add up into one
count per key and line, kept per line after they detach (:meth:`CounterRegistry.by_line`, what
``/metrics`` exports with a ``line`` label); :meth:`CounterRegistry.totals` sums over every line.
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
    line: str | None = None


class CounterRegistry:
    """Every component's counters, live and retired, by component and line."""

    def __init__(self) -> None:
        self._sets: dict[str, CounterSet] = {}
        self._live: dict[int, tuple[CounterSet, Source, str | None]] = {}
        #: (component, line) -> the final counts of its detached sources
        self._retired: dict[tuple[str, str | None], Counter[str]] = {}
        self._ids = itertools.count(1)

    def attach(self, counters: CounterSet, source: Source, line: str | None = None) -> Registration:
        """Count ``source`` under ``counters.component`` from now on, on ``line`` (a client's label)
        if it belongs to one, else server-wide."""
        known = self._sets.setdefault(counters.component, counters)
        if known is not counters:
            raise ValueError(f"two different counter sets are named {counters.component!r}")
        registration = Registration(next(self._ids), counters, line)
        self._live[registration.ident] = (counters, source, line)
        return registration

    def detach(self, registration: Registration) -> None:
        """The component is gone: keep its final counts in its line's totals. Detaching twice is
        harmless."""
        entry = self._live.pop(registration.ident, None)
        if entry is not None:
            counters, source, line = entry
            self._retired.setdefault((counters.component, line), Counter()).update(_read(source))

    def by_line(self, component: str) -> dict[str | None, dict[str, int]]:
        """Every count of ``component`` per line (None: its server-wide sources), live plus
        retired (declared keys only, zeros included); a line appears once a source was attached
        on it."""
        counters = self._sets.get(component)
        if counters is None:
            return {}
        per_line: dict[str | None, Counter[str]] = {}
        for (retired_component, line), retired in self._retired.items():
            if retired_component == component:
                per_line.setdefault(line, Counter()).update(retired)
        for live_set, source, line in self._live.values():
            if live_set is counters:
                per_line.setdefault(line, Counter()).update(_read(source))
        keys = sorted(counters.all_keys())
        return {line: {key: total.get(key, 0) for key in keys} for line, total in per_line.items()}

    def totals(self, component: str) -> dict[str, int]:
        """Every count of ``component`` over every line, live plus retired (declared keys only,
        zeros included)."""
        counters = self._sets.get(component)
        if counters is None:
            return {}
        total: Counter[str] = Counter()
        for counts in self.by_line(component).values():
            total.update(counts)
        return {key: total.get(key, 0) for key in sorted(counters.all_keys())}

    def components(self) -> list[str]:
        return sorted(self._sets)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Every component's totals: what SIGUSR1 logs and ``/status`` shows."""
        return {component: self.totals(component) for component in self.components()}

    def samples(self) -> Iterator[tuple[CounterSet, CounterSpec, dict[str, str], int]]:
        """Every declared counter of every component with its labels and count (for exporters):
        a component counted on lines once per line, with a ``line`` label ("" for a server-wide
        source of it, if any); a server-wide component once, without."""
        for component in self.components():
            counters = self._sets[component]
            per_line = self.by_line(component)
            if set(per_line) <= {None}:
                for spec, labels, value in counters.samples(per_line.get(None, {})):
                    yield counters, spec, labels, value
                continue
            for line, counts in sorted(per_line.items(), key=lambda item: item[0] or ""):
                for spec, labels, value in counters.samples(counts):
                    yield counters, spec, {**labels, "line": line or ""}, value


def _read(source: Source) -> Mapping[str, int]:
    return source() if callable(source) else source
