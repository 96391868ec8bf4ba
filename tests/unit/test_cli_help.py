"""The command line's help: argparse's own layout, at the width argparse would find, without the
shutil import argparse makes to find it."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

import pytest

from pyslirp import cli


@pytest.mark.parametrize("columns", [None, "60", "132", "0", "wide"])
def test_the_width_is_shutils(monkeypatch: pytest.MonkeyPatch, columns: str | None) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert cli.terminal_columns() == shutil.get_terminal_size().columns


def test_the_help_reads_as_argparse_lays_it_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "70")
    ours = cli._parser()
    monkeypatch.setattr(cli, "_HelpFormatter", argparse.HelpFormatter)
    argparses = cli._parser()
    assert ours.format_help() == argparses.format_help()
    serve = next(a for a in ours._actions if isinstance(a, argparse._SubParsersAction)).choices["serve"]
    plain = next(a for a in argparses._actions if isinstance(a, argparse._SubParsersAction)).choices["serve"]
    assert serve.format_help() == plain.format_help()


def test_parsing_the_command_line_does_not_import_shutil() -> None:
    probe = "import sys\nfrom pyslirp import cli\ncli._parser().parse_args(['serve'])\nprint('shutil' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == "False"
