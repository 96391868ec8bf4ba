"""Circuit breakers: open after failed connects within the window, refuse at once while open,
let one probe through after the cooldown, close when the service accepts again."""

from __future__ import annotations

from ipaddress import IPv4Address

from pyslirp.config import PyslirpConfig
from pyslirp.runtime.admission import Admission, Admitted, Refused
from pyslirp.runtime.breaker import BreakerState, ServiceBreakers
from pyslirp.runtime.observers import Flow

LOCAL = IPv4Address("10.0.0.1")
PEER = IPv4Address("10.0.0.2")


def flow(port: int = 80, service: str = "web") -> Flow:
    return Flow("test", "tcp", (PEER, 40000), (LOCAL, port), service)


def setup(clock: list[float]) -> tuple[ServiceBreakers, Admission]:
    config = PyslirpConfig(services={
        80: {"port": 8080, "name": "web", "connect_timeout": 2, "breaker": {"failures": 3, "window": 10, "cooldown": 5}},
        22: {"port": 2222, "name": "ssh"},
    })
    breakers = ServiceBreakers(config.services, lambda: clock[0])
    return breakers, Admission(config.services, LOCAL, [breakers])


def test_opens_after_failures_within_the_window_then_half_opens_and_closes() -> None:
    clock = [0.0]
    breakers, admission = setup(clock)
    assert set(breakers.states()) == {"web"}  # only the service that has one
    for t in (0.0, 20.0, 21.0):  # the first is outside the window of the last two
        clock[0] = t
        breakers.connection_refused(flow(), "service_unavailable")
    assert breakers.states() == {"web": "closed"}
    clock[0] = 22.0
    breakers.connection_refused(flow(), "rate_limit")  # not a failed connect
    breakers.connection_refused(flow(), "service_unavailable")
    assert breakers.states() == {"web": "open"}
    assert admission.admit(flow(), 22.5) == Refused("breaker_open")
    assert isinstance(admission.admit(flow(22, "ssh"), 22.5), Admitted)  # other services unaffected
    # After the cooldown one probe goes through; the others wait for its answer.
    assert isinstance(probe := admission.admit(flow(), 27.0), Admitted)
    assert breakers.states() == {"web": "half_open"}
    assert admission.admit(flow(), 27.1) == Refused("breaker_open")
    clock[0] = 27.2
    breakers.connection_refused(flow(), "service_unavailable")  # the probe failed: open again
    admission.closed(probe)
    assert breakers.states() == {"web": "open"} and admission.admit(flow(), 30.0) == Refused("breaker_open")
    assert isinstance(admission.admit(flow(), 32.3), Admitted)
    breakers.connection_opened(flow())  # the service is back
    assert breakers.states() == {"web": "closed"}
    assert isinstance(admission.admit(flow(), 32.4), Admitted)


def test_a_probe_that_never_connects_is_replaced_after_the_connect_timeout() -> None:
    clock = [0.0]
    breakers, admission = setup(clock)
    for _ in range(3):
        breakers.connection_refused(flow(), "service_unavailable")
    assert isinstance(admission.admit(flow(), 5.0), Admitted)  # the probe; its client gives up
    assert admission.admit(flow(), 6.9) == Refused("breaker_open")
    assert isinstance(admission.admit(flow(), 7.1), Admitted)  # connect_timeout (2 s) later


def test_a_reload_keeps_the_state_of_an_unchanged_breaker() -> None:
    clock = [0.0]
    breakers, _ = setup(clock)
    for _ in range(3):
        breakers.connection_refused(flow(), "service_unavailable")
    again, _ = setup(clock)
    again.adopt(breakers)
    assert again.breakers[80].state is BreakerState.OPEN
