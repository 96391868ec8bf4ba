"""Fuzzing the configuration loader through the command line (pyslirp/cli.py, pyslirp/config.py):
random YAML given to ``pyslirp validate --config FILE`` exits 0 with the configuration printed, or
2 with a message naming the field (or the file and what is wrong with it) and never a traceback;
``pyslirp serve --config FILE`` refuses what ``validate`` refuses, with the same message (a valid
configuration is not served here: that would start the server).

Documents are the example config.yaml and the defaults with values replaced, keys removed or
added, values of every YAML type (numbers too large to print among them), section names that
are not strings, and the YAML text itself mutated octet by octet.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))
import fuzzing  # noqa: E402

from pyslirp import cli  # noqa: E402
from pyslirp.config import ConfigError, PyslirpConfig, load_config  # noqa: E402

EXAMPLE = yaml.safe_load((Path(__file__).resolve().parents[2] / "config.yaml").read_text())
DEFAULTS = PyslirpConfig().model_dump(mode="json")
#: stand-ins for files a value may name, replaced by real paths in each run (secrets_file reads one)
FILE_STAND_INS = ("@secrets@", "@binary@", "@directory@", "@missing@")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, -1, 127, 128, 65535, 65536, 2**31, 2**32, 2**63, 2**64]),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["", " ", "0x", "0x10", "0XFFFFFFFF", "0x1_0", "pty", "none", "pap", "chap", "udp", "tcp",
                     "round_robin", "DEBUG", "debug", "10.0.0.1", "10.0.0.2", "300.1.1.1", "10.0.0.0/8", "0.0.0.0/0",
                     "127.0.0.1:53", "host:", ":80", "a:b:c", "tcp-listen://127.0.0.1:0", "os:system", *FILE_STAND_INS]),
)
keys = st.one_of(st.text(max_size=8), st.integers(-1, 70_000), st.none(), st.booleans(),
                 st.sampled_from(sorted(DEFAULTS) + sorted({k for section in DEFAULTS.values()
                                                            if isinstance(section, dict) for k in section})))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                      max_leaves=6)


def paths(document: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path of a document, sections and leaves."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))


@st.composite
def edited_documents(draw: st.DrawFn) -> str:
    """The example or the defaults, a few values replaced, keys removed or added, dumped as YAML."""
    document = yaml.safe_load(yaml.safe_dump(draw(st.sampled_from([EXAMPLE, DEFAULTS]))))
    for _ in range(draw(st.integers(1, 5))):
        path = draw(st.sampled_from(list(paths(document)) or [("serial",)]))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        operation = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if operation == "replace":
            parent[path[-1]] = draw(values)
        elif operation == "remove":
            parent.pop(path[-1], None)
        elif isinstance(parent.get(path[-1]), dict):
            parent[path[-1]][draw(keys)] = draw(values)
        else:
            parent[draw(keys)] = draw(values)
    return yaml.safe_dump(document)


#: YAML a dump never writes: integers too long to print, deep nesting, aliases, tags, a non-mapping
HANDWRITTEN = [
    "serial: {baudrate: 0x" + "f" * 4000 + "}\n",
    "tcp: {time_wait: " + "9" * 5000 + "}\n",
    "ppp: {accm: '0x" + "f" * 5000 + "'}\n",
    "0x" + "f" * 4000 + ": 1\n",
    "services: " + "[" * 400 + "]" * 400 + "\n",
    "ppp: &ppp {dns: *ppp}\n",
    "2020-01-01: 1\n",
    "? [a, b]\n: 1\n",
    "serial: !!binary aGVsbG8=\n",
    "ppp: {auth: {method: pap, secrets_file: '@binary@'}}\n",
    "security: {allowed_ports: !!set {22: null, 80: null}}\n",
    "services: !!omap [22: {port: 22}]\n",
    "- a\n- b\n",
    "\ufeffserial: {port: pty}\n",
]
documents = st.one_of(
    edited_documents(),
    fuzzing.mutated([text.encode() for text in HANDWRITTEN] + [yaml.safe_dump(EXAMPLE).encode()]),
)


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(list(args))
    return status, out.getvalue(), err.getvalue()


def top_level_keys(text: bytes) -> list[str] | None:
    """The section names of a document that loads as a mapping, as the messages show them (quoted
    when not one printable line)."""
    try:
        document = yaml.safe_load(text)
        names = [str(key) for key in document] if isinstance(document, dict) else None
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: an integer too long to print
        return None
    return None if names is None else [name if name.isprintable() else repr(name) for name in names]


def assert_names_the_problem(message: str, config_file: Path, sections: list[str] | None) -> None:
    """``pyslirp: <file>: <what>`` for a file that is no configuration at all; else, under the
    heading naming the file, one line per field, each starting with the path of that field."""
    assert message.startswith("pyslirp: ") and message.endswith("\n")
    lines = message.removeprefix("pyslirp: ").rstrip("\n").split("\n")
    if lines[0].startswith("invalid configuration (file "):
        assert sections is not None and len(lines) > 1
        for line in lines[1:]:
            assert line.startswith("  ") and any(line[2:].startswith(name) for name in sections), line
    else:
        assert lines[0].startswith(f"{config_file}: ") and len(lines) == 1


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real paths for the stand-ins: a secrets file, a binary file, a directory, nothing."""
    where = tmp_path_factory.mktemp("named-files")
    (where / "secrets").write_text("alice wonderland\n# comment\n\nbob  s3cret\n")
    (where / "binary").write_bytes(bytes(range(256)))
    return {"@secrets@": str(where / "secrets"), "@binary@": str(where / "binary"), "@directory@": str(where),
            "@missing@": str(where / "missing" / "file")}


@pytest.mark.fuzz
@fuzzing.fuzz_settings(weight=0.25)
@given(document=documents)
def test_any_yaml_is_accepted_or_refused_with_exit_status_2_naming_the_field(
    document: str | bytes, files: dict[str, str]
) -> None:
    text = document.encode() if isinstance(document, str) else document
    for stand_in, path in files.items():
        text = text.replace(stand_in.encode(), path.encode())
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYSLIRP_")}
    with tempfile.TemporaryDirectory() as where, mock.patch.dict(os.environ, environment, clear=True):
        config_file = Path(where) / "config.yaml"
        config_file.write_bytes(text)
        status, out, err = run_cli("validate", "--config", str(config_file))
        assert status in (0, 2), err
        if status == 0:
            assert out.startswith(f"configuration OK ({config_file})\n")
            return
        assert_names_the_problem(err, config_file, top_level_keys(text))
        assert run_cli("serve", "--config", str(config_file)) == (2, "", err)


# -- what the fuzzing found -------------------------------------------------------------------------


def refusal(text: str, tmp_path: Path) -> str:
    """What ``pyslirp validate`` says of a configuration it refuses (exit status 2)."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(text)
    status, out, err = run_cli("validate", "--config", str(config_file))
    assert (status, out) == (2, ""), err
    return err.replace(str(config_file), "FILE")


def test_a_secrets_file_that_is_not_text_is_refused_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "secrets").write_bytes(b"alice \xff\xfe\n")
    text = f"ppp: {{auth: {{method: pap, secrets_file: {tmp_path / 'secrets'}}}}}\n"
    assert refusal(text, tmp_path).startswith(
        "pyslirp: invalid configuration (file FILE + environment):\n"
        f"  ppp.auth.secrets_file: cannot read {tmp_path / 'secrets'}: not text (got "
    )


def test_yaml_nested_too_deeply_is_malformed_not_a_recursion_error(tmp_path: Path) -> None:
    assert refusal("services: " + "[" * 1000, tmp_path) == "pyslirp: FILE: malformed YAML: nested too deeply\n"


@pytest.mark.parametrize("name", ["1", "null", "true", "2020-01-01"])
def test_a_section_name_that_is_not_text_is_refused_not_a_type_error(name: str, tmp_path: Path) -> None:
    assert refusal(f"{name}: {{}}\n", tmp_path).startswith("pyslirp: FILE: a section name must be text, not ")


@pytest.mark.parametrize(("text", "message"), [
    ("tcp: {time_wait: " + "9" * 5000 + "}\n", "FILE: malformed YAML: Exceeds the limit (4300 digits)"),
    ("tcp: {time_wait: 0x" + "f" * 5000 + "}\n", "FILE: tcp.time_wait: a number larger than any setting takes"),
    ("serial: {baudrate: 0x" + "f" * 5000 + "}\n", "FILE: serial.baudrate: a number larger than any setting takes"),
    ("serial:\n  ? 0x" + "f" * 5000 + "\n  : 1\n", "FILE: serial: a number larger than any setting takes"),
    ("ppp: {accm: '0x" + "f" * 5000 + "'}\n", "invalid configuration (file FILE + environment):\n"
     "  ppp.accm: Input should be less than or equal to 4294967295 (got a number too large to show)"),
])
def test_an_integer_too_long_to_print_is_refused_naming_its_field(text: str, message: str, tmp_path: Path) -> None:
    assert refusal(text, tmp_path).startswith(f"pyslirp: {message}")


def test_a_key_that_is_not_one_printable_line_is_shown_quoted(tmp_path: Path) -> None:
    assert refusal('dns: {"\\n": 1}\n', tmp_path).endswith("\n  dns.'\\n': unknown key (got 1)\n")


def test_a_connection_count_beyond_what_the_stack_holds_is_refused_naming_the_field(tmp_path: Path) -> None:
    """tcp.max_connections reaches a C int of the compiled stack: 3,000,000,000 validated, then
    the stack raised OverflowError when the link came up."""
    path = tmp_path / "config.yaml"
    path.write_text("tcp:\n  max_connections: 3000000000\n")
    with pytest.raises(ConfigError, match="tcp.max_connections"):
        load_config(path)
