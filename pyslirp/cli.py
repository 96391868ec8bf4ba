"""The ``pyslirp`` command: ``serve``, ``validate``, ``status``, ``reload``, ``install-service`` and
``--version``.

``serve`` validates its configuration in a child process and serves from the records it hands
back (:mod:`pyslirp.config_snapshot`): pydantic is imported by ``validate``, ``status`` and
``reload``, never by the server.

Exit status: 0 on success, 2 for a configuration or usage error (never a traceback), 1 when the
server stops on a runtime fault, the installation is broken (protocol cores partly compiled), or
``status``/``reload`` find no gateway or a reload is refused.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from pyslirp import __version__
from pyslirp.config_records import ConfigError, Record

if TYPE_CHECKING:
    from pyslirp.config import PyslirpConfig
    from pyslirp.config_snapshot import Validation

EXIT_CONFIG = 2


def _version_text() -> str:
    import pyslirp._core as core
    from pyslirp.compiled_modules import running_from_source

    source = running_from_source()
    cores = "compiled" if not source else "from source: " + ", ".join(source)
    return f"pyslirp {__version__} (core: {core.IMPLEMENTATION}; protocol cores: {cores})"


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns`` without shutil: $COLUMNS, else the terminal's, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's own, told the width: left to find it, argparse imports shutil each time a
    parser is made, and shutil bz2 and lzma, 0.6 MB of a server's memory for good."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=terminal_columns() - 2)  # as argparse narrows it


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyslirp",
        description="Userspace SLiRP: serve PPP on a serial line and proxy the client to local services.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and which core is loaded")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return subparsers.add_parser(name, help=summary, formatter_class=_HelpFormatter)

    serve = command("serve", "run the PPP server")
    serve.add_argument("--config", type=Path, help="YAML file (default: ./config.yaml, /etc/pyslirp/config.yaml)")
    serve.add_argument(
        "port",
        nargs="*",
        metavar="PORT",
        help="the line: a device (/dev/ttyUSB0, COM3), a pyserial URL (socket://host:port), "
        "tcp-listen://host:port, or pty (the default); several serve several lines in this process",
    )
    serve.add_argument(
        "--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
        help="the event loop: uvloop where installed (auto), or asyncio's own",
    )
    serve.add_argument(
        "--debug", action="store_true",
        help="log at DEBUG level, with every LCP, IPCP, PAP and CHAP packet decoded as pppd's debug option shows them",
    )

    validate = command("validate", "check a configuration, report every problem, print it")
    validate.add_argument("--config", type=Path, help="YAML file (default: ./config.yaml, /etc/pyslirp/config.yaml)")

    status = command("status", "show a running gateway: link, services, connections")
    status.add_argument("--config", type=Path, help="YAML file naming the metrics address (monitoring section)")
    status.add_argument("--url", help="the /status URL (default: http://metrics_host:metrics_port/status)")
    status.add_argument("--json", action="store_true", help="print the raw JSON document")
    status.add_argument(
        "--watch", nargs="?", type=float, const=2.0, metavar="SECONDS", help="redraw in place every SECONDS (2)"
    )
    reload = command("reload", "reload a running gateway's configuration (as SIGHUP does)")
    reload.add_argument("--config", type=Path, help="YAML file naming the metrics address (monitoring section)")
    reload.add_argument("--url", help="the /reload URL (default: http://metrics_host:metrics_port/reload)")
    install = command(
        "install-service", "write a systemd unit (pyslirp@LINE) and a starting configuration",
    )
    install.add_argument("--user", default="pyslirp", help="the unprivileged user the service runs as (pyslirp)")
    install.add_argument("--line", default="ttyUSB0", help="the device under /dev the commands shown enable (ttyUSB0)")
    install.add_argument("--root", type=Path, default=Path("/"), help="write under this directory instead of /")
    install.add_argument("--dry-run", action="store_true", help="print what would be written; write nothing")
    return parser


def _line_names(ports: list[str]) -> list[str]:
    """A name for each line given on the command line: a device's own name (ttyUSB0), else the
    port as written; lineN where that would repeat or is no valid name."""
    names: list[str] = []
    for number, port in enumerate(ports, 1):
        name = port.rsplit("/", 1)[-1] if port.startswith("/dev/") else port
        if name in names or "#" in name or len(name) > 64 or not name.isprintable():
            name = f"line{number}"
        names.append(name)
    return names


def _cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    ports = getattr(args, "port", None)
    if len(ports or ()) == 1:  # the command line's lines replace the configuration's
        overrides["serial"] = {"port": ports[0]}
        overrides["lines"] = []
    elif ports:
        overrides["lines"] = [{"name": name, "port": port} for name, port in zip(_line_names(ports), ports)]
    if getattr(args, "debug", False):
        overrides["logging"] = {"level": "DEBUG"}
    return overrides


def _setup_logging(config: Record) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.logging.file is not None:
        handlers.append(logging.FileHandler(config.logging.file))
    logging.basicConfig(
        level=config.logging.level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def _load(args: argparse.Namespace) -> PyslirpConfig:
    from pyslirp.config import load_config

    return load_config(args.config, _cli_overrides(args))


def _load_validated(args: argparse.Namespace) -> tuple[Record, list[str]]:
    """The configuration ``serve`` runs on, and its warnings (validated in a child process)."""
    return _validation(args).result()


def _validation(args: argparse.Namespace) -> Validation:
    from pyslirp.config_snapshot import Validation

    return Validation(args.config, _cli_overrides(args))


def _ask_gateway(args: argparse.Namespace) -> int:
    """``status`` and ``reload``: the running gateway at ``--url``, else on the metrics port the
    configuration names (which is read only then)."""
    from pyslirp import status_report

    url = args.url
    if url is None:
        try:
            monitoring = _load(args).monitoring
        except ConfigError as exc:
            print(f"pyslirp: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        url = status_report.monitoring_url(monitoring, f"/{args.command}")
    if args.command == "reload":
        return status_report.reload(url)
    return status_report.run(url, as_json=args.json, watch=args.watch)


def _check_admission(config: PyslirpConfig) -> None:
    """The operator's admission check imports, as serve will need it to; ConfigError if not."""
    if config.security.admission is None:
        return
    from pyslirp.admission_extension import ExtensionError, load_check

    try:
        load_check(config.security.admission)
    except ExtensionError as exc:
        raise ConfigError(str(exc)) from None


def _validate(args: argparse.Namespace) -> int:
    """Every problem of the configuration at once (each line names its field), exit status 2;
    else the configuration, with the warnings of config_warnings."""
    try:
        config = _load(args)
        _check_admission(config)
    except ConfigError as exc:
        print(f"pyslirp: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from pyslirp.config import find_config_file
    from pyslirp.config_warnings import config_warnings

    source = find_config_file(args.config)
    print(f"configuration OK ({source if source else 'defaults'})")
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    shown = config.model_dump(mode="json", exclude={"ppp": {"auth": {"users"}}, "socks": {"password"}})
    import yaml

    print(yaml.safe_dump(shown, sort_keys=False), end="")
    return 0


def status_main() -> int:
    """The ``pyslirp-status`` console script: ``pyslirp status`` with the same options."""
    return main(["status", *sys.argv[1:]])


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _command(argv)
    except BrokenPipeError:
        # The reader of our output went away (`pyslirp status --json | head`): stop quietly,
        # with stdout pointed at nothing so that the interpreter's own flush at exit is silent.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _command(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        print(_version_text())
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    if args.command == "install-service":
        from pyslirp.install_service import install

        try:
            return install(args.root, args.user, args.line, args.dry_run)
        except BrokenPipeError:
            raise  # main's: the reader of our output went away
        except OSError as exc:
            print(f"pyslirp: cannot write the service: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
            return 1
    if args.command in ("status", "reload"):
        return _ask_gateway(args)
    if args.command == "validate":
        return _validate(args)
    validation = _validation(args)
    from pyslirp.compiled_modules import partly_compiled

    source = partly_compiled()
    try:
        config, warnings = validation.result()
    except ConfigError as exc:
        print(f"pyslirp: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if source:
        print(f"pyslirp: protocol cores partly compiled ({', '.join(source)} from source, the rest "
              "compiled): reinstall pyslirp so that they are built together", file=sys.stderr)
        return 1
    if config.security.admission is None:  # an operator's check may speak TLS: it gets the real ssl
        from pyslirp.runtime import no_tls

        no_tls.install()  # before the event loop's import loads OpenSSL for nothing
    from pyslirp.runtime.server import run_server
    _setup_logging(config)
    for warning in warnings:
        logging.getLogger("pyslirp").warning("configuration: %s", warning)
    return run_server(config, debug_packets=args.debug, load=lambda: _load_validated(args)[0], loop=args.loop)
