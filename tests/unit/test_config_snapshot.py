"""The server's configuration, validated in a child process and served from records: the records
say what the pydantic models say, field for field, and the serving process never loads pydantic."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import yaml

from pyslirp.config import PyslirpConfig, ServiceConfig, load_config
from pyslirp.config_records import ConfigError, LineRecord, PPPRecord, ServiceRecord, from_json, to_json
from pyslirp import config_snapshot
from pyslirp.config_snapshot import load_validated, snapshot
from pyslirp.runtime.settings import Applies, line_settings, reloaded

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(pathlib.Path(__file__).parent))
from serving import maps_of_a_server  # noqa: E402

#: every kind of value the configuration holds: addresses, networks, paths, nested sections,
#: optional sections, lists, mappings keyed by port, and lines with their own ppp changes
BUSY = {
    "serial": {"port": "tcp-listen://127.0.0.1:0", "baudrate": 57600},
    "ppp": {
        "dns": ["10.0.0.1", "192.0.2.53"],
        "peer_pool": "10.0.0.0/28",
        "auth": {"method": "pap", "users": {"alice": "a-secret", "bob": "b-secret"}},
        "keepalive": {"interval": 5},
    },
    "services": {
        22: {"port": 2222, "name": "SSH", "breaker": {"failures": 3}},
        80: {"port": 8080, "backends": ["127.0.0.2:8080"], "rate_limit": {"connections_per_second": 2, "burst": 4}},
        5353: {"port": 53, "protocol": "udp"},
    },
    "forwards": [{"listen_port": 2022, "peer_port": 22, "line": "hub#2", "allowed_remotes": ["10.9.0.0/16"]}],
    "outbound": {"mode": "socks", "deny": ["198.51.100.0/24"], "ports": [80, 443]},
    "socks": {"enabled": True, "username": "u", "password": "p", "remote_dns": True},
    "security": {"allowlist": ["127.0.0.0/8"], "brute_force": {"enabled": True}},
    "monitoring": {"packet_capture": {"pcap_file": "/tmp/x.pcap", "max_bytes": 0}},
    "lines": [
        {"name": "hub", "port": "tcp-listen://127.0.0.1:0", "max_clients": 3,
         "ppp": {"auth": {"users": {"carol": "c-secret"}}, "mru": 1400}},
        {"name": "desk", "port": "pty", "peer_ip": "10.0.0.200", "rate_limit": {"burst": 2}},
    ],
}


@pytest.fixture()
def busy_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "busy.yaml"
    path.write_text(yaml.safe_dump(BUSY))
    return path


def test_the_records_hold_every_field_the_models_hold(busy_file: pathlib.Path) -> None:
    config = load_config(busy_file)
    records = snapshot(config)
    assert records.model_dump(mode="json") == config.model_dump(mode="json")
    assert records.model_dump() == config.model_dump()
    assert records.ppp.dns_servers == config.ppp.dns_servers
    assert records.ppp.pool_range == config.ppp.pool_range
    assert records.services[80].targets() == config.services[80].targets()
    assert records.services[22].is_auth_service(22) and not records.services[80].is_auth_service(80)
    assert records.ppp.auth.credentials() == config.ppp.auth.credentials()


def test_each_line_sees_the_ppp_section_as_the_models_lay_its_changes(busy_file: pathlib.Path) -> None:
    config = load_config(busy_file)
    records = snapshot(config)
    for record, model in zip(records.lines, config.lines):
        assert isinstance(record, LineRecord)
        assert record.effective_ppp(records.ppp).model_dump() == model.effective_ppp(config.ppp).model_dump()
        assert record.effective_serial(records.serial).model_dump() == model.effective_serial(config.serial).model_dump()
    hub = records.lines[0].effective_ppp(records.ppp)
    assert hub.auth.users == {"carol": "c-secret"} and hub.auth.method == "pap" and hub.mru == 1400
    # a reload may keep the running lines (they need a restart) over a new ppp section: the
    # line's changes are laid over that one, as the model does
    new_ppp = config.ppp.model_copy(update={"vj": False, "mru": 1200})
    assert (records.lines[0].effective_ppp(snapshot(config.model_copy(update={"ppp": new_ppp})).ppp).model_dump()
            == config.lines[0].effective_ppp(new_ppp).model_dump())
    assert [s.config.model_dump() for s in line_settings(records)] == [s.config.model_dump() for s in line_settings(config)]


def test_a_reload_between_records_keeps_what_needs_a_restart(busy_file: pathlib.Path) -> None:
    old = snapshot(load_config(busy_file))
    changed = {**BUSY, "serial": {**BUSY["serial"], "baudrate": 9600}, "tcp": {"min_rto": 0.5}}
    busy_file.write_text(yaml.safe_dump(changed))
    effective, changes = reloaded(old, snapshot(load_config(busy_file)))
    assert changes == {"serial.baudrate": Applies.RESTART, "tcp.min_rto": Applies.NEXT_LINK}
    assert effective.serial.baudrate == 57600 and effective.tcp.min_rto == 0.5
    assert type(effective.ppp) is PPPRecord


def test_the_records_come_back_from_json_as_they_were(busy_file: pathlib.Path) -> None:
    records = snapshot(load_config(busy_file))
    again = from_json(json.loads(json.dumps(to_json(records))))
    assert again == records  # types included: ports as int keys, tuples, addresses, networks, paths
    assert again.lines[0]._ppp_changes == records.lines[0]._ppp_changes
    assert again.lines[0].effective_ppp(again.ppp) == records.lines[0].effective_ppp(records.ppp)


def test_what_json_cannot_carry_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="of type complex has no JSON form"):
        to_json({"x": 1j})
    for tree, reason in (({"record": ["Nothing", {}]}, "no record type"), ({"frozenset": []}, "no value kind"),
                         ({"a": 1, "b": 2}, "not a tagged value")):
        with pytest.raises(ValueError, match=reason):
            from_json(tree)


def test_a_service_the_runtime_builds_takes_the_models_defaults() -> None:
    built = ServiceRecord(name="dns", host="192.0.2.53", port=53, protocol="udp")
    assert built.model_dump() == ServiceConfig(name="dns", host="192.0.2.53", port=53, protocol="udp").model_dump()


def test_the_child_hands_back_the_configuration_its_warnings_and_its_refusals(busy_file: pathlib.Path) -> None:
    overrides = {"logging": {"level": "DEBUG"}}
    records, warnings = load_validated(busy_file, overrides)
    assert records == snapshot(load_config(busy_file, overrides))
    assert all(isinstance(warning, str) for warning in warnings)
    busy_file.write_text(yaml.safe_dump({**BUSY, "tcp": {"min_rto": -1}, "ppp": {"mru": 1}}))
    with pytest.raises(ConfigError) as refused:
        load_validated(busy_file, {})
    with pytest.raises(ConfigError) as expected:
        load_config(busy_file)
    assert str(refused.value) == str(expected.value)
    assert "tcp.min_rto" in str(refused.value) and "ppp.mru" in str(refused.value)


def test_what_else_the_child_prints_goes_with_its_messages_not_into_its_answer(
    busy_file: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    import pyslirp.config

    def chatty_load(path: pathlib.Path | None, overrides: dict) -> PyslirpConfig:
        print("a library's note on stdout")
        return load_config(path, overrides)

    monkeypatch.setattr(pyslirp.config, "load_config", chatty_load)
    assert config_snapshot.main([json.dumps({"path": str(busy_file), "overrides": {}})]) == 0
    answer, messages = capfdbinary.readouterr()
    assert from_json(json.loads(answer))["config"] == snapshot(load_config(busy_file))
    assert b"a library's note on stdout" in messages


def test_an_answer_that_is_no_configuration_is_a_config_error_not_a_traceback(busy_file: pathlib.Path) -> None:
    validation = config_snapshot.Validation(busy_file, {})
    validation.child.communicate()  # the real answer, set aside
    validation.child = subprocess.Popen(
        [sys.executable, "-c", "print('not a configuration')"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    with pytest.raises(ConfigError, match="could not be validated: the validating process answered"):
        validation.result()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's /proc/PID/maps")
@pytest.mark.parametrize("loop", ["auto", "asyncio"])
def test_the_serving_process_never_loads_pydantic_or_openssl(tmp_path: pathlib.Path, loop: str) -> None:
    maps = maps_of_a_server(ROOT / "config.yaml", tmp_path, ["--loop", loop])
    assert "uvloop" in maps or "_asyncio" in maps  # the server is up and its modules loaded
    assert "pydantic" not in maps
    # no TLS anywhere (pyslirp.runtime.no_tls): neither the event loop nor the ISN's PRF loads OpenSSL
    assert "libssl" not in maps and "libcrypto" not in maps
    # nor the IDNA codec's unicodedata (pyslirp.runtime.listening), for the line and the forward,
    # nor pickle's accelerator (the records come back in JSON)
    assert "unicodedata" not in maps and "_pickle" not in maps
    # nor random's (the PPP link draws from os.urandom, pyslirp.ppp.randomness)
    assert "_random" not in maps
