"""Every command block of README.md that is marked as tested runs here, as written.

The mark is an HTML comment (GitHub does not show it) on the line before the block's fence:

    <!-- tested -->                   the block runs in bash (-e -o pipefail) and exits 0
    <!-- tested: prints "TEXT" -->    ... and its output, stdout and stderr, holds TEXT
    <!-- tested: exits N -->          ... and exits N instead of 0
    <!-- tested: runs N s -->         each line of the block is a server, started on its own: once
                                      it has printed something, it keeps running N s more, and then
                                      SIGINT ends it cleanly (exit status 0)
    <!-- tested: with a server -->    the block runs while ``pyslirp serve`` is up, metrics on
    <!-- tested: in .ci/run -->       an install, too slow for a unit test: .ci/run holds the block
                                      verbatim and runs it (checked here)

Clauses combine with commas (``runs 3 s, prints "attach a client with:"``). The blocks run in a
directory laid out as a checkout after README's install: ``.venv`` (the environment running these
tests, its ``bin`` first on PATH) and the example ``config.yaml``, with no ``PYSLIRP_`` variable
but those the harness sets: with a server, ``PYSLIRP_MONITORING__*`` turn metrics on at free
ports, for the server and the block alike.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MARK = "<!-- tested"
MARKED_BLOCK = re.compile(r"^<!-- tested(?::(?P<clauses>[^\n]*?))? -->\n```[a-z]*\n(?P<body>.*?)^```$", re.M | re.S)
#: clauses are separated by commas outside quotes
CLAUSES = re.compile(r'(?:[^,"]|"[^"]*")+')
CLAUSE = re.compile(
    r'runs (?P<runs>\d+(?:\.\d+)?) s|prints "(?P<prints>[^"]+)"|exits (?P<exits>\d+)'
    r"|(?P<server>with a server)|(?P<ci>in \.ci/run)"
)
#: a block that runs once, a server started for it, or a line of a server block, at most
BLOCK_TIMEOUT = 120.0
#: after SIGINT, a server shuts down politely: no connection is open, so it is quick
STOP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Block:
    line: int  # of the marker, in README.md
    body: str
    runs: float | None = None
    prints: tuple[str, ...] = ()
    exits: int = 0
    with_server: bool = False
    in_ci: bool = False

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"

    @property
    def commands(self) -> list[str]:
        """The block's lines but blank and comment lines."""
        return [line for line in self.body.splitlines() if line.strip() and not line.startswith("#")]


def marked_blocks(text: str) -> tuple[list[Block], list[str]]:
    """The marked blocks of a README, and what is wrong with its marks (a mark on no block, a
    clause this harness does not know)."""
    blocks, problems = [], []
    for match in MARKED_BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        runs, prints, exits, with_server, in_ci = None, [], 0, False, False
        for clause in (part.strip() for part in CLAUSES.findall(match["clauses"] or "")):
            known = CLAUSE.fullmatch(clause)
            if known is None:
                problems.append(f"README.md:{line}: unknown clause {clause!r}")
            elif known["runs"]:
                runs = float(known["runs"])
            elif known["prints"]:
                prints.append(known["prints"])
            elif known["exits"]:
                exits = int(known["exits"])
            else:
                with_server, in_ci = with_server or bool(known["server"]), in_ci or bool(known["ci"])
        blocks.append(Block(line, match["body"], runs, tuple(prints), exits, with_server, in_ci))
    if text.count(MARK) != len(blocks):
        marked = {block.line for block in blocks}
        problems += [
            f"README.md:{number}: the mark is not on the line before a fenced block"
            for number, line in enumerate(text.splitlines(), 1) if line.startswith(MARK) and number not in marked
        ]
    return blocks, problems


BLOCKS, MARK_PROBLEMS = marked_blocks(README.read_text(encoding="utf-8"))


def test_every_mark_is_on_a_block_with_clauses_the_harness_knows() -> None:
    assert MARK_PROBLEMS == []
    assert any(block.runs for block in BLOCKS) and any(block.with_server for block in BLOCKS)


def test_the_parser_reads_each_clause_and_refuses_a_stray_mark() -> None:
    text = (
        '<!-- tested: runs 2.5 s, prints "a, b", prints "c", exits 3 -->\n```sh\nserve one\n# note\nserve two\n```\n'
        "<!-- tested: with a server, in .ci/run -->\n```\nstatus\n```\n"
        "<!-- tested -->\nprose, not a block\n<!-- tested: runs soon -->\n```sh\nx\n```\n"
    )
    blocks, problems = marked_blocks(text)
    assert blocks[0] == Block(1, "serve one\n# note\nserve two\n", runs=2.5, prints=("a, b", "c"), exits=3)
    assert blocks[0].commands == ["serve one", "serve two"]
    assert blocks[1] == Block(7, "status\n", with_server=True, in_ci=True)
    assert problems == ["README.md:13: unknown clause 'runs soon'",
                        "README.md:11: the mark is not on the line before a fenced block"]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory as README's commands expect their working directory: the venv, config.yaml."""
    where = tmp_path_factory.mktemp("readme")
    venv = Path(sys.prefix)
    assert (venv / "bin" / "pyslirp").exists(), f"pyslirp is not installed in {venv}"
    (where / ".venv").symlink_to(venv, target_is_directory=True)
    shutil.copy(REPO / "config.yaml", where / "config.yaml")
    return where


def environment(**extra: str) -> dict[str, str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("PYSLIRP_")}
    return {**clean, "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{clean.get('PATH', '')}", **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def interrupt(server: subprocess.Popen[bytes], output: Path, what: str) -> None:
    """SIGINT to the server's process group; it must exit 0 in time."""
    os.killpg(server.pid, signal.SIGINT)
    try:
        status = server.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        pytest.fail(f"{what}: still running {STOP_TIMEOUT:.0f} s after SIGINT:\n{output.read_text()}")
    assert status == 0, f"{what}: exit status {status} after SIGINT:\n{output.read_text()}"


def start(command: list[str], cwd: Path, env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    with output.open("wb") as sink:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)


@pytest.fixture
def metrics_server(checkout: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """``pyslirp serve`` with metrics on at free ports, in the checkout, for one block (the
    example configuration's forward takes a port a later block's server needs); the environment
    that finds it."""
    port, health = free_port(), free_port()
    env = environment(PYSLIRP_MONITORING__ENABLE_METRICS="true", PYSLIRP_MONITORING__METRICS_PORT=str(port),
                      PYSLIRP_MONITORING__HEALTH_PORT=str(health))
    output = tmp_path / "server.log"
    server = start([str(checkout / ".venv" / "bin" / "pyslirp"), "serve"], checkout, env, output)
    try:
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while True:
            assert server.poll() is None, f"the server exited {server.returncode}:\n{output.read_text()}"
            assert time.monotonic() < deadline, f"the server never served metrics:\n{output.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield env
    finally:
        if server.poll() is None:
            interrupt(server, output, "the server")


def run_once(block: Block, checkout: Path, env: dict[str, str]) -> str:
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.body], cwd=checkout, env=env,
                            capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == block.exits, f"{block.name}: exit status {result.returncode}:\n{output}"
    return output


def run_servers(block: Block, checkout: Path, env: dict[str, str], tmp_path: Path) -> str:
    assert block.runs is not None
    outputs = []
    for number, command in enumerate(block.commands):
        output = tmp_path / f"server-{number}.log"
        server = start(["bash", "-c", command], checkout, env, output)
        deadline = time.monotonic() + BLOCK_TIMEOUT  # a slow machine's start, imports and all
        while server.poll() is None and not output.stat().st_size and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            status = server.wait(block.runs)
        except subprocess.TimeoutExpired:
            interrupt(server, output, f"{block.name}: {command}")
        else:
            pytest.fail(f"{block.name}: {command}: ended (exit status {status}) within {block.runs:g} s of its "
                        f"first output:\n{output.read_text()}")
        outputs.append(output.read_text())
    return "".join(outputs)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_a_marked_block_runs_as_written(block: Block, checkout: Path, request: pytest.FixtureRequest,
                                         tmp_path: Path) -> None:
    if block.in_ci:
        assert block.body in (REPO / ".ci" / "run").read_text(), f"{block.name}: .ci/run does not run it verbatim"
        return
    env = request.getfixturevalue("metrics_server") if block.with_server else environment()
    output = run_servers(block, checkout, env, tmp_path) if block.runs else run_once(block, checkout, env)
    for text in block.prints:
        assert text in output, f"{block.name}: {text!r} not in the output:\n{output}"
