"""Configuration: precedence, environment names, the example file, and error messages."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pyslirp.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("PYSLIRP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./config.yaml unless a test writes one


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = load_config(None)
    assert config.serial.port == "pty"
    assert config.ppp.local_ip == IPv4Address("10.0.0.1")
    assert config.ppp.peer_ip == IPv4Address("10.0.0.2")
    assert config.ppp.dns_servers == [IPv4Address("10.0.0.1")]
    assert config.services == {}


def test_packet_capture_rotates_at_10_mb_by_default_and_0_means_never() -> None:
    assert load_config(None).monitoring.packet_capture.max_bytes == 10_000_000
    never = load_config(None, {"monitoring": {"packet_capture": {"max_bytes": 0}}})
    assert never.monitoring.packet_capture.max_bytes is None


def test_example_config_validates() -> None:
    config = load_config(REPO / "config.yaml")
    assert config.services[22].name == "SSH"
    assert config.services[80].port == 8080
    assert config.forwards[0].peer_port == 22


def test_precedence_cli_env_yaml_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "serial:\n  port: /dev/ttyS1\n  baudrate: 9600\nppp:\n  mru: 1000\n")
    config = load_config(path)
    assert (config.serial.port, config.serial.baudrate, config.ppp.mru) == ("/dev/ttyS1", 9600, 1000)

    monkeypatch.setenv("PYSLIRP_SERIAL__BAUDRATE", "57600")
    monkeypatch.setenv("PYSLIRP_PPP__MRU", "1200")
    config = load_config(path)
    assert (config.serial.port, config.serial.baudrate, config.ppp.mru) == ("/dev/ttyS1", 57600, 1200)

    config = load_config(path, {"serial": {"port": "tcp-listen://127.0.0.1:5555"}})
    assert config.serial.port == "tcp-listen://127.0.0.1:5555"
    assert config.serial.baudrate == 57600  # the rest of the section still merges


def test_flat_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSLIRP_SERIAL_PORT", "/dev/ttyUSB1")
    monkeypatch.setenv("PYSLIRP_LOG_LEVEL", "debug")
    monkeypatch.setenv("PYSLIRP_SOCKS_HOST", "192.0.2.7")
    config = load_config(None)
    assert config.serial.port == "/dev/ttyUSB1"
    assert config.logging.level == "DEBUG"
    assert config.socks.host == "192.0.2.7"


def test_default_file_is_read_from_cwd(tmp_path: Path) -> None:
    write(tmp_path, "ppp:\n  peer_ip: 10.0.0.9\n", "config.yaml")
    assert load_config(None).ppp.peer_ip == IPv4Address("10.0.0.9")


def test_accm_accepts_hex(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSLIRP_PPP__ACCM", "0x000a0000")
    assert load_config(None).ppp.accm == 0xA0000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("serial:\n  baudrate: fast\n", ["serial.baudrate", "'fast'"]),
        ("serial:\n  speed: 9600\n", ["serial.speed", "unknown key"]),
        ("bogus: 1\n", ["bogus", "unknown key"]),
        ("services:\n  22:\n    port: 70000\n", ["services.22.port", "70000"]),
        ("services:\n  0:\n    port: 22\n", ["services.0", "0"]),
        ("ppp:\n  local_ip: 10.0.0.300\n", ["ppp.local_ip", "10.0.0.300"]),
        ("ppp:\n  peer_ip: 10.0.0.1\n", ["ppp", "must differ"]),
        ("ppp:\n  auth:\n    method: pap\n", ["ppp.auth", "needs users"]),
        ("monitoring:\n  packet_capture:\n    max_bytes: 1000\n", ["monitoring.packet_capture.max_bytes", "at least"]),
        ("monitoring:\n  packet_capture:\n    keep: -1\n", ["monitoring.packet_capture.keep", "-1"]),
        ("serial: [1, 2\n", ["malformed YAML", "line"]),
        ("- just\n- a list\n", ["top level must be a mapping"]),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    for fragment in expected:
        assert fragment in message
    assert len(message.splitlines()) < 25  # one screen


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)  # a directory


def test_secrets_file(tmp_path: Path) -> None:
    secrets = write(tmp_path, "# user secret\nalice s3cret\nbob  hunter2 extra\n", "secrets")
    config = load_config(write(tmp_path, f"ppp:\n  auth:\n    method: chap\n    secrets_file: {secrets}\n"))
    assert config.ppp.auth.credentials() == {"alice": "s3cret", "bob": "hunter2"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyslirp", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_cli_validate_ok_and_errors(tmp_path: Path) -> None:
    ok = run_cli("validate", "--config", str(REPO / "config.yaml"), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "configuration OK" in ok.stdout

    bad = run_cli("validate", "--config", str(write(tmp_path, "serial:\n  baudrate: -5\n")), cwd=tmp_path)
    assert bad.returncode == 2
    assert "serial.baudrate" in bad.stderr and "-5" in bad.stderr
    assert "Traceback" not in bad.stderr

    unreadable = run_cli("serve", "--config", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert unreadable.returncode == 2
    assert "no such file" in unreadable.stderr and "Traceback" not in unreadable.stderr


def test_cli_version_names_the_core(tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("pyslirp ")
    assert "core:" in result.stdout and "protocol cores:" in result.stdout


def test_cli_secrets_never_printed(tmp_path: Path) -> None:
    path = write(tmp_path, "ppp:\n  auth:\n    method: pap\n    users:\n      alice: topsecret\n")
    result = run_cli("validate", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "topsecret" not in result.stdout + result.stderr


def test_nested_environment_names_at_any_depth_with_json_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSLIRP_SERVICES__2000__PORT", "2001")
    monkeypatch.setenv("PYSLIRP_SERVICES__2000__RATE_LIMIT__BURST", "3")
    monkeypatch.setenv("PYSLIRP_SERVICES__2000__BACKENDS", '["127.0.0.1:2002"]')
    monkeypatch.setenv("PYSLIRP_PPP__AUTH__METHOD", "pap")
    monkeypatch.setenv("PYSLIRP_PPP__AUTH__USERS", '{"alice": "s3cret"}')
    monkeypatch.setenv("pyslirp_security__blocked_ports", "[25, 26]")  # names in any case
    monkeypatch.setenv("PYSLIRP_FORWARDS", '[{"listen_port": 2222, "peer_port": 22}]')
    config = load_config(None)
    service = config.services[2000]
    assert (service.port, service.rate_limit.burst if service.rate_limit else None) == (2001, 3)
    assert service.targets() == [("127.0.0.1", 2001), ("127.0.0.1", 2002)]
    assert config.ppp.auth.credentials() == {"alice": "s3cret"}
    assert config.security.blocked_ports == [25, 26]
    assert [(f.listen_port, f.peer_port) for f in config.forwards] == [(2222, 22)]


def test_a_section_as_json_merges_with_its_nested_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSLIRP_SERIAL", '{"Port": "/dev/ttyS3", "baudrate": 9600}')
    monkeypatch.setenv("PYSLIRP_SERIAL__BAUDRATE", "57600")
    config = load_config(None)
    assert (config.serial.port, config.serial.baudrate) == ("/dev/ttyS3", 57600)


def test_environment_json_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSLIRP_OUTBOUND__PORTS", "80,443")  # may be null: text that is no JSON stays text
    with pytest.raises(ConfigError, match="outbound.ports"):
        load_config(None)
    monkeypatch.setenv("PYSLIRP_SECURITY__BLOCKED_PORTS", "25,26")  # a list only: must be JSON
    with pytest.raises(ConfigError) as refused:  # an error naming the variable, with the others; no traceback
        load_config(None)
    assert "\n  outbound.ports: " in str(refused.value)
    assert "\n  security.blocked_ports: PYSLIRP_SECURITY__BLOCKED_PORTS must be JSON for this setting: " in str(refused.value)


def test_an_environment_variable_overrides_one_field_of_a_service_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("services:\n  80:\n    port: 8080\n    name: HTTP\n    idle_timeout: 600\n")
    monkeypatch.setenv("PYSLIRP_SERVICES__80__PORT", "8081")
    service = load_config(path).services[80]
    assert (service.port, service.name, service.idle_timeout) == (8081, "HTTP", 600)


def test_validate_reports_every_problem_at_once_each_with_its_field_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, (
        "services:\n  22:\n    port: 70000\n  80:\n    port: 8080\n    colour: blue\n"
        f"ppp:\n  local_ip: 10.0.0.300\n  auth:\n    method: pap\n    secrets_file: {tmp_path / 'absent'}\n"
        "monitorng:\n  enable_metrics: true\n"
    ))
    monkeypatch.setenv("PYSLIRP_TCP__MIN_RTO", "-1")
    monkeypatch.setenv("PYSLIRP_SECURITY__BLOCKED_PORTS", "25,26")  # a list: JSON only
    monkeypatch.setenv("PYSLIRP_PPP_AUTH_METHOD", "chap")  # flat names are for scalar settings only
    result = run_cli("validate", "--config", str(path), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    heading, *problems = result.stderr.splitlines()
    assert heading == f"pyslirp: invalid configuration (file {path} + environment):"
    secrets = f"  ppp.auth.secrets_file: cannot read {tmp_path / 'absent'}: No such file or directory (got "
    assert problems[1].startswith(secrets)  # read as the file is validated, reported with the rest
    assert problems[:1] + problems[2:] == [
        "  ppp.local_ip: Input is not a valid IPv4 address (got '10.0.0.300')",
        "  services.22.port: Input should be less than or equal to 65535 (got 70000)",
        "  services.80.colour: unknown key (got 'blue')",
        "  tcp.min_rto: Input should be greater than 0 (got '-1' from PYSLIRP_TCP__MIN_RTO)",
        "  monitorng: unknown key (got {'enable_metrics': True})",
        "  security.blocked_ports: PYSLIRP_SECURITY__BLOCKED_PORTS must be JSON for this setting: "
        "Extra data: line 1 column 3 (char 2) (got '25,26')",
        "  ppp: PYSLIRP_PPP_AUTH_METHOD sets nothing: ppp has no setting 'auth_method' "
        "(a nested key is joined by '__': PYSLIRP_PPP__KEY__SUBKEY)",
    ]


def test_validate_imports_the_admission_check_serve_would_need(tmp_path: Path) -> None:
    path = write(tmp_path, "security:\n  admission: 'no_such_module_here:check'\n")
    result = run_cli("validate", "--config", str(path), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "pyslirp: security.admission: cannot import no_such_module_here: No module named 'no_such_module_here'\n"
    )
