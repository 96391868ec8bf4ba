"""The settings layer: the validated configuration turned into each part's settings, and when a
changed field takes effect."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from pyslirp.config import ConfigError, PyslirpConfig, load_config
from pyslirp.runtime.settings import (
    Applies,
    applies,
    changed_fields,
    deframer_max_frame,
    line_rate,
    link_options,
    tcp_config,
)


def test_link_options_carry_the_ppp_section() -> None:
    config = PyslirpConfig(ppp={
        "local_ip": "10.1.0.1", "peer_ip": "10.1.0.9", "mru": 1000, "accm": "0x000a0000", "vj_slots": 8,
        "keepalive": {"interval": 5, "failures": 2},
        "auth": {"method": "chap", "users": {"u": "s"}, "chap_rechallenge_interval": 60},
    })
    options = link_options(config)
    lcp, ipcp, auth = options.lcp, options.ipcp, options.auth
    assert (ipcp.local_ip, ipcp.peer_ip) == (IPv4Address("10.1.0.1"), IPv4Address("10.1.0.9"))
    assert ipcp.dns == (IPv4Address("10.1.0.1"),)  # default: we forward DNS ourselves
    assert (lcp.mru, lcp.accm, ipcp.vj_slots) == (1000, 0xA0000, 8)
    assert (lcp.echo_interval, lcp.echo_failures, lcp.auth_methods) == (5, 2, ("chap",))
    assert (dict(auth.credentials), auth.chap_rechallenge_interval) == ({"u": "s"}, 60)
    assert options.fsm.restart_interval == 3.0


def test_tcp_mss_fits_both_mrus() -> None:
    config = PyslirpConfig(ppp={"mru": 1000}, tcp={"receive_buffer": 65536, "min_rto": 0.3})
    assert tcp_config(config, peer_mru=1500).mss == 960
    assert tcp_config(config, peer_mru=576).mss == 536
    assert (tcp_config(config, 1500).rcv_buf, tcp_config(config, 1500).min_rto) == (65536, 0.3)


def test_frame_bound_and_line_rate() -> None:
    assert deframer_max_frame(1500) == 4096 and deframer_max_frame(16384) == 16448
    assert line_rate(PyslirpConfig(), None) is None
    assert line_rate(PyslirpConfig(), 11520) == 11520
    assert line_rate(PyslirpConfig(serial={"line_rate": 5000}), 11520) == 5000


def test_each_rule_is_checked_once_by_the_configuration() -> None:
    # The configuration is the one layer that checks; its error names the field.
    with pytest.raises(ConfigError, match="ppp.mru"):
        load_config(overrides={"ppp": {"mru": 100000}})
    with pytest.raises(ConfigError, match="local_ip and peer_ip must differ"):
        load_config(overrides={"ppp": {"local_ip": "10.0.0.1", "peer_ip": "10.0.0.1"}})


def test_when_a_change_applies() -> None:
    assert applies("serial.port") is Applies.RESTART
    assert applies("ppp.mru") is Applies.NEXT_LINK
    assert applies("services.22.host") is Applies.LIVE
    assert applies("logging.level") is Applies.LIVE and applies("logging.file") is Applies.RESTART
    old = PyslirpConfig(services={22: {"port": 22}})
    new = PyslirpConfig(services={22: {"port": 2222}}, ppp={"mru": 1400}, logging={"level": "DEBUG"})
    assert changed_fields(old, new) == {
        "services.22.port": Applies.LIVE,
        "ppp.mru": Applies.NEXT_LINK,
        "logging.level": Applies.LIVE,
    }
    assert changed_fields(old, old) == {}
