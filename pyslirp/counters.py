"""Counter declarations: every count a component keeps, named once with its meaning and reasons.

Components count in plain mappings of ``str`` to ``int`` (a ``dict`` or ``collections.Counter``),
because an increment of a dict entry is the cheapest thing a packet path can do. What a key means
is declared here, beside nothing else: each component module builds one :class:`CounterSet`
from :class:`CounterSpec` entries, and every key its mapping may hold comes from that set.

A spec is either a plain counter (``ip_in``: one key, the spec's name) or a counter with a
reason label (``ip_drop`` with reasons ``truncated``, ``bad_version``...: one key per reason,
``prefix + reason``). An exporter reads a mapping through :meth:`CounterSet.samples`, which
yields ``(spec, labels, value)`` for every declared key: a Prometheus collector turns that into
``pyslirp_<component>_<name>_total{reason="..."}`` without parsing a key. A set may include
another component's set under a key prefix and an extra label (the PPP link's ``lcp_`` and
``ipcp_`` automaton counters carry ``protocol="lcp"``), so a composite mapping stays flat.

The standard library only: protocol cores and the runtime both import this module.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

__all__ = ["CounterSet", "CounterSpec", "Counts"]


class Counts(Counter):  # type: ignore[type-arg]
    """A :class:`collections.Counter` (a missing key reads 0) whose item assignment costs what a
    dict's does. ``Counter`` defines ``__delitem__`` in Python, which makes every ``c[key] = n``
    and ``c[key] += 1`` go through a generic slot that looks ``__setitem__`` up and calls it:
    several times the cost of the dict's own, on every packet of a protocol core written in C.
    Here deleting is dict's own too, so a key must be there to be deleted."""

    __delitem__ = dict.__delitem__


@dataclass(frozen=True)
class CounterSpec:
    """One counter: a plain count, or a count per reason.

    ``prefix`` builds a reason's key (default ``name + "_"``); an empty prefix keeps the bare
    reason as the key, for counts whose names already say what they are.
    """

    name: str
    help: str
    reasons: tuple[str, ...] = ()
    unit: str = ""  # "" for events; "bytes" for octet counts
    prefix: str | None = None
    _keys: dict[str | None, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefix = self.name + "_" if self.prefix is None else self.prefix
        keys: dict[str | None, str] = (
            {reason: prefix + reason for reason in self.reasons} if self.reasons else {None: self.name}
        )
        object.__setattr__(self, "_keys", keys)

    def key(self, reason: str | None = None) -> str:
        """The mapping key for ``reason`` (None for a plain counter); KeyError if undeclared."""
        return self._keys[reason]

    def keys(self) -> Iterator[tuple[str | None, str]]:
        """``(reason, key)`` for every key of this spec (reason None for a plain counter)."""
        return iter(self._keys.items())


@dataclass(frozen=True)
class _Included:
    key_prefix: str
    labels: tuple[tuple[str, str], ...]
    counters: CounterSet


class CounterSet:
    """The counters of one component (``stack``, ``tcp``, ``link``...)."""

    def __init__(self, component: str, specs: Iterable[CounterSpec]) -> None:
        self.component = component
        self.specs: tuple[CounterSpec, ...] = tuple(specs)
        self._included: list[_Included] = []
        by_name = {spec.name for spec in self.specs}
        if len(by_name) != len(self.specs):
            raise ValueError(f"{component}: a counter is declared twice")
        self._check_unique()

    def include(self, key_prefix: str, counters: CounterSet, **labels: str) -> CounterSet:
        """Count ``counters``'s keys too, each prefixed by ``key_prefix`` and carrying ``labels``."""
        self._included.append(_Included(key_prefix, tuple(sorted(labels.items())), counters))
        self._check_unique()
        return self

    def spec(self, name: str) -> CounterSpec:
        """The spec named ``name``, of this set itself."""
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(f"{self.component}: no counter {name!r}")

    def key(self, name: str, reason: str | None = None) -> str:
        """The mapping key of counter ``name`` (with ``reason``); KeyError if undeclared."""
        return self.spec(name).key(reason)

    def samples(self, counts: Mapping[str, int]) -> Iterator[tuple[CounterSpec, dict[str, str], int]]:
        """Every declared key's value in ``counts`` (0 where absent), with its labels."""
        for spec, labels, key in self._entries():
            yield spec, labels, counts.get(key, 0)

    def all_keys(self) -> frozenset[str]:
        return frozenset(key for _, _, key in self._entries())

    def undeclared(self, counts: Mapping[str, int]) -> list[str]:
        """Keys of ``counts`` that no spec declares (a test asserts there are none)."""
        declared = self.all_keys()
        return sorted(key for key in counts if key not in declared)

    def _entries(self, key_prefix: str = "", extra: tuple[tuple[str, str], ...] = ()) -> Iterator[
        tuple[CounterSpec, dict[str, str], str]
    ]:
        for spec in self.specs:
            for reason, key in spec.keys():
                labels = dict(extra)
                if reason is not None:
                    labels["reason"] = reason
                yield spec, labels, key_prefix + key
        for inc in self._included:
            yield from inc.counters._entries(key_prefix + inc.key_prefix, extra + inc.labels)

    def _check_unique(self) -> None:
        seen: set[str] = set()
        for _, _, key in self._entries():
            if key in seen:
                raise ValueError(f"{self.component}: key {key!r} is declared twice")
            seen.add(key)
