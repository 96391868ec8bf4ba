"""A real ``pyslirp serve`` process for the tests that look at what it loaded."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence


def maps_of_a_server(config_file: pathlib.Path, cwd: pathlib.Path, args: Sequence[str] = (),
                     env: Mapping[str, str] | None = None) -> str:
    """/proc/PID/maps of ``pyslirp serve`` on ``config_file`` (with ``args``, and ``env`` over
    this process's environment), read once it listens for its line; the server is then stopped."""
    server = subprocess.Popen(
        [sys.executable, "-m", "pyslirp", "serve", "tcp-listen://127.0.0.1:0", "--config", str(config_file), *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        assert server.stdout is not None
        deadline = time.monotonic() + 30
        while b"listening for the line" not in server.stdout.readline():
            assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
        return pathlib.Path(f"/proc/{server.pid}/maps").read_text()
    finally:
        server.terminate()
        server.communicate(timeout=15)
