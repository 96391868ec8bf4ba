"""RTTEstimator (pyslirp/net/tcp_rtt.py) on its own: RFC 6298's SRTT, RTTVAR and RTO, the
backoff, and the reordering window loss detection derives from the lowest RTT. Expected
values are worked out here from the RFC formulas (alpha 1/8, beta 1/4, K 4)."""

from __future__ import annotations

import pytest

from pyslirp.net.tcp_rtt import CLOCK_GRANULARITY, SYN_RETRANSMITTED_RTO, RTTEstimator


def estimator(initial_rto: float = 1.0, min_rto: float = 0.2, max_rto: float = 60.0) -> RTTEstimator:
    return RTTEstimator(initial_rto, min_rto, max_rto)


def test_before_the_first_sample():
    # RFC 6298 §2.1: until a sample, the RTO is the initial one and SRTT is undefined.
    e = estimator(initial_rto=1.0)
    assert e.smoothed() is None
    assert not e.measured
    assert e.rto() == 1.0
    assert e.min_rtt == 0.0
    assert e.reordering_window() == 0.0
    # Loss age falls back to the initial RTO when there is no SRTT.
    assert e.loss_age() == 1.0


def test_first_sample_rfc6298_2_2():
    # §2.2: SRTT <- R, RTTVAR <- R/2, RTO <- SRTT + max(G, K*RTTVAR).
    e = estimator()
    e.sample(0.5)
    assert e.measured
    assert e.smoothed() == 0.5
    assert e.srtt == 0.5
    assert e.rttvar == 0.25
    assert e.rto() == pytest.approx(0.5 + 4 * 0.25)      # 1.5
    assert e.min_rtt == 0.5


def test_subsequent_samples_rfc6298_2_3():
    # §2.3: RTTVAR uses the SRTT before this sample's update.
    e = estimator()
    e.sample(0.5)
    e.sample(0.3)
    rttvar = 0.75 * 0.25 + 0.25 * abs(0.5 - 0.3)             # 0.2375
    srtt = 0.875 * 0.5 + 0.125 * 0.3                          # 0.475
    assert e.rttvar == pytest.approx(rttvar)
    assert e.srtt == pytest.approx(srtt)
    assert e.rto() == pytest.approx(srtt + 4 * rttvar)        # 1.425
    # A longer sample: the deviation is taken as an absolute value.
    e.sample(0.9)
    rttvar2 = 0.75 * rttvar + 0.25 * abs(srtt - 0.9)
    srtt2 = 0.875 * srtt + 0.125 * 0.9
    assert e.rttvar == pytest.approx(rttvar2)
    assert e.srtt == pytest.approx(srtt2)
    assert e.rto() == pytest.approx(srtt2 + 4 * rttvar2)
    assert e.min_rtt == 0.3                                   # the lowest sample so far


def test_min_rto_floors_the_variance_term():
    # The floor applies to K*RTTVAR, as Linux does: RTO >= SRTT + min_rto.
    e = estimator(min_rto=0.2)
    e.sample(0.01)                       # 4*RTTVAR = 0.02 < 0.2
    assert e.rto() == pytest.approx(0.01 + 0.2)
    for _ in range(50):                  # a steady RTT: RTTVAR decays towards 0
        e.sample(0.01)
    assert e.rttvar < 0.001
    assert e.rto() == pytest.approx(0.01 + 0.2)


def test_rto_capped_at_max_rto():
    # §2.5: a maximum value may be placed on RTO (60 s here).
    e = estimator(max_rto=60.0)
    e.sample(40.0)                       # 40 + 4*20 = 120
    assert e.rto_base == 60.0
    assert e.rto() == 60.0


def test_zero_sample_is_clock_granularity():
    e = estimator()
    e.sample(0.0)
    assert e.srtt == CLOCK_GRANULARITY
    assert e.min_rtt == CLOCK_GRANULARITY


def test_backoff_doubles_and_caps_at_max_rto():
    # §5.5: each expiry doubles the RTO; §2.5 caps it.
    e = estimator(initial_rto=1.0, max_rto=60.0)
    expected = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    got = []
    for backoff in range(len(expected)):
        e.backoff = backoff
        got.append(e.rto())
    assert got == expected
    # backed_off() is the same curve for any backoff count (the persist timer uses it).
    assert e.backed_off(3) == 8.0
    assert e.backed_off(16) == 60.0
    assert e.backed_off(40) == 60.0


def test_a_valid_sample_ends_the_backoff():
    # §5.7 note / Karn: the backed-off RTO is kept until a valid sample, which resets it.
    e = estimator()
    e.sample(0.5)
    e.backoff = 3
    assert e.rto() == pytest.approx(1.5 * 8)
    e.sample(0.5)
    assert e.backoff == 0
    assert e.rto() == pytest.approx(0.5 + max(0.2, 4 * (0.75 * 0.25)))


def test_retransmitted_syn_leaves_the_rto_at_three_seconds():
    # §5.7: after a retransmitted SYN and no sample, the RTO is at least 3 s once established.
    e = estimator(initial_rto=1.0)
    e.backoff = 2
    e.on_established(syn_retransmitted=True)
    assert SYN_RETRANSMITTED_RTO == 3.0
    assert e.backoff == 0
    assert e.rto() == 3.0


def test_established_without_syn_retransmission_keeps_the_rto():
    e = estimator(initial_rto=1.0)
    e.backoff = 1
    e.on_established(syn_retransmitted=False)
    assert e.backoff == 0
    assert e.rto() == 1.0


def test_syn_rule_does_not_apply_after_a_sample_or_above_three_seconds():
    e = estimator()
    e.sample(0.1)                        # rto 0.1 + 0.2
    e.on_established(syn_retransmitted=True)
    assert e.rto() == pytest.approx(0.3)
    slow = estimator(initial_rto=5.0)
    slow.on_established(syn_retransmitted=True)
    assert slow.rto() == 5.0


def test_reordering_window_and_loss_age():
    # RFC 8985 §6.2: the reordering window is a quarter of the minimum RTT; the RTO marks lost
    # what was sent more than SRTT plus that window ago.
    e = estimator()
    e.sample(0.4)
    e.sample(0.8)
    assert e.min_rtt == 0.4
    assert e.reordering_window() == pytest.approx(0.1)
    assert e.loss_age() == pytest.approx(e.srtt + 0.1)
    assert e.srtt == pytest.approx(0.875 * 0.4 + 0.125 * 0.8)
