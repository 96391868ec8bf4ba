"""The counter declarations: keys, reasons, labels and included sets."""

from collections import Counter

import pytest

from pyslirp.counters import CounterSet, CounterSpec


def _fsm() -> CounterSet:
    return CounterSet("fsm", [CounterSpec("bad_ack", "Configure-Acks that did not match")])


def test_plain_and_reason_keys() -> None:
    spec = CounterSpec("ip_drop", "datagrams dropped", reasons=("truncated", "bad_version"))
    assert spec.key("truncated") == "ip_drop_truncated"
    assert CounterSpec("x", "", reasons=("out_of_window",), prefix="").key("out_of_window") == "out_of_window"
    assert CounterSpec("ip_in", "datagrams in").key() == "ip_in"
    with pytest.raises(KeyError):
        spec.key("bogus")


def test_samples_map_keys_to_labels_without_parsing() -> None:
    stack = CounterSet("stack", [
        CounterSpec("ip_in", "datagrams in"),
        CounterSpec("ip_drop", "datagrams dropped", reasons=("truncated", "bad_version")),
    ])
    counts = Counter({"ip_in": 7, "ip_drop_truncated": 2})
    samples = {(spec.name, tuple(labels.items())): value for spec, labels, value in stack.samples(counts)}
    assert samples == {
        ("ip_in", ()): 7,
        ("ip_drop", (("reason", "truncated"),)): 2,
        ("ip_drop", (("reason", "bad_version"),)): 0,
    }
    assert stack.undeclared(counts) == []
    assert stack.undeclared({"ip_drop_bogus": 1}) == ["ip_drop_bogus"]


def test_included_sets_carry_their_prefix_and_labels() -> None:
    link = CounterSet("link", [CounterSpec("rx_frames", "frames in")])
    link.include("lcp_", _fsm(), protocol="lcp").include("ipcp_", _fsm(), protocol="ipcp")
    samples = [(spec.name, labels, value) for spec, labels, value in link.samples({"lcp_bad_ack": 3})]
    assert ("bad_ack", {"protocol": "lcp"}, 3) in samples
    assert ("bad_ack", {"protocol": "ipcp"}, 0) in samples
    assert link.all_keys() == {"rx_frames", "lcp_bad_ack", "ipcp_bad_ack"}


def test_a_key_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError):
        CounterSet("x", [CounterSpec("a_b", ""), CounterSpec("a", "", reasons=("b",))])
    with pytest.raises(ValueError):
        CounterSet("x", [CounterSpec("a", ""), CounterSpec("a", "")])
