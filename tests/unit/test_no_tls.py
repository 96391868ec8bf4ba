"""The server's stand-in for ``ssl`` (pyslirp.runtime.no_tls): the event loops and the libraries
the server loads import with it, serve plain TCP, never map OpenSSL, and any use of TLS fails at
once with a message that says why."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import yaml

from pyslirp.runtime import no_tls

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(pathlib.Path(__file__).parent))
from serving import maps_of_a_server  # noqa: E402

#: run in a fresh interpreter: the stand-in only works before anything has imported ssl
PROBE = textwrap.dedent("""
    import pathlib, sys
    from pyslirp.runtime import no_tls
    assert no_tls.install()
    import asyncio, ssl
    LOOP = sys.argv[1]
    if LOOP == "uvloop":
        import uvloop

    async def echo_once():
        async def handle(reader, writer):
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"plain")
        answer = await reader.read(100)
        writer.close()
        server.close()
        return answer

    answer = uvloop.run(echo_once()) if LOOP == "uvloop" else asyncio.run(echo_once())
    assert answer == b"plain", answer
    try:
        ssl.create_default_context()
    except no_tls.TLSUnavailable as exc:
        print("refused:", exc)
    assert issubclass(ssl.SSLWantReadError, ssl.SSLError) and issubclass(ssl.SSLError, OSError)
    assert ssl.SSL_ERROR_WANT_READ == 2
    maps = pathlib.Path("/proc/self/maps").read_text()
    print("openssl mapped:", "libssl" in maps or "libcrypto" in maps)
    # metrics on: prometheus-client reads ssl's names while it loads (its urllib.request does load
    # libcrypto, for hashlib: with metrics on, not otherwise)
    import prometheus_client.exposition
    print("prometheus loaded")
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_loops_and_libraries_load_and_serve_plain_tcp_without_openssl(loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    result = subprocess.run([sys.executable, "-c", PROBE, loop], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "refused: ssl.create_default_context: pyslirp's server runs without TLS" in result.stdout
    assert "openssl mapped: False" in result.stdout
    assert "prometheus loaded" in result.stdout


def test_installing_after_ssl_was_loaded_changes_nothing() -> None:
    import ssl

    assert not no_tls.install()
    assert sys.modules["ssl"] is ssl


def test_every_name_is_a_class_that_refuses_to_be_made() -> None:
    stand_in = no_tls._stand_in()
    assert isinstance(stand_in.TLSVersion, type)  # usable in an annotation or a default at import
    with pytest.raises(no_tls.TLSUnavailable, match=r"ssl\.SSLContext: pyslirp's server runs without TLS"):
        stand_in.SSLContext()
    assert stand_in.SSLContext is stand_in.SSLContext  # made once per name
    with pytest.raises(AttributeError):
        stand_in.__path__  # noqa: B018 (not a package)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's /proc/PID/maps")
def test_a_server_started_with_an_operators_check_keeps_the_real_ssl(tmp_path: pathlib.Path) -> None:
    # the check may speak TLS (an async check asking a service over HTTPS): OpenSSL is loaded
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["forwards"] = []
    config_file = tmp_path / "config.yaml"
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")])}
    config_file.write_text(yaml.safe_dump(config))
    assert "libssl" not in maps_of_a_server(config_file, tmp_path, env=env)
    config["security"]["admission"] = "office_hours:check"
    config_file.write_text(yaml.safe_dump(config))
    assert "libssl" in maps_of_a_server(config_file, tmp_path, env=env)
