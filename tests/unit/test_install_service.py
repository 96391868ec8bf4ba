"""``pyslirp install-service``: the unit it writes is the one shipped in contrib/, systemd accepts
it, and a starting configuration is written only where none exists."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyslirp import cli
from pyslirp.config import load_config
from pyslirp.install_service import installed_command, unit_text

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "contrib" / "systemd" / "pyslirp@.service"


def test_the_shipped_unit_is_the_one_install_service_writes() -> None:
    assert SHIPPED.read_text() == unit_text("/usr/local/bin/pyslirp", "pyslirp")


def test_dry_run_prints_the_unit_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["install-service", "--dry-run", "--root", str(tmp_path), "--user", "gw", "--line", "ttyS1"]) == 0
    out = capsys.readouterr().out
    assert unit_text(installed_command(), "gw") in out
    assert "systemctl enable --now pyslirp@ttyS1" in out
    assert not any(tmp_path.iterdir())


def test_install_writes_the_unit_and_a_valid_starting_config_but_keeps_an_existing_one(tmp_path: Path) -> None:
    assert cli.main(["install-service", "--root", str(tmp_path)]) == 0
    unit = tmp_path / "etc/systemd/system/pyslirp@.service"
    config = tmp_path / "etc/pyslirp/config.yaml"
    assert unit.read_text() == unit_text(installed_command(), "pyslirp")
    assert load_config(config).security.audit_log == Path("/var/log/pyslirp/audit.jsonl")
    config.write_text("services: {}\n")
    assert cli.main(["install-service", "--root", str(tmp_path)]) == 0
    assert config.read_text() == "services: {}\n"


def test_install_into_a_directory_it_cannot_write_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "etc"
    blocker.write_text("a file where a directory should be")
    assert cli.main(["install-service", "--root", str(tmp_path)]) == 1
    assert "cannot write the service" in capsys.readouterr().err


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        missing = "systemd-analyze is not installed (Debian package systemd)"
        pytest.fail(missing) if os.environ.get("CI") else pytest.skip(missing)
    instance = tmp_path / "pyslirp@ttyUSB0.service"  # verify needs an instance to expand %i
    instance.write_text(SHIPPED.read_text())
    result = subprocess.run(["systemd-analyze", "verify", str(instance)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert str(instance) not in result.stderr + result.stdout, result.stderr  # no warning about the unit


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `pyslirp install-service --dry-run | head -1` once head has exited
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pyslirp", "install-service", "--user", "x", "--dry-run"],
            stdout=write_end, stderr=subprocess.PIPE, timeout=60,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (1, b"")
