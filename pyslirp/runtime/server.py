"""``pyslirp serve``: open the configured lines and run a gateway on each session they yield."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Awaitable, Callable

from pyslirp.admission_extension import ExtensionError
from pyslirp.config_records import ConfigError
from pyslirp.ppp.link import LinkUp
from pyslirp.runtime.admission import AdmissionCheck
from pyslirp.runtime.audit import AUDIT_COUNTERS, AuditLog, AuditLogError
from pyslirp.runtime.breaker import ServiceBreakers
from pyslirp.runtime.capture import CAPTURE_COUNTERS, PacketCapture
from pyslirp.runtime.counter_registry import CounterRegistry
from pyslirp.runtime.debug_log import PacketDebugLog
from pyslirp.runtime.forwards import FORWARD_COUNTERS, ForwardError, start_forwards
from pyslirp.runtime.gateway import Gateway
from pyslirp.runtime.lines import Line, LineAccessError, LineError, LineSession, open_line
from pyslirp.runtime.listening import MonitoringError
from pyslirp.runtime.network import LinkNetwork
from pyslirp.runtime.observers import LogObserver, Observers
from pyslirp.runtime.peer_pool import PeerPool
from pyslirp.runtime.security import SecurityPipeline, security_pipeline
from pyslirp.runtime.served_line import ServedLine
from pyslirp.runtime.settings import Applies, line_rate, line_settings, link_options, pool_reserved, reloaded
from pyslirp.runtime.status import ServiceProbe, status_document

if TYPE_CHECKING:
    from pyslirp.config import ForwardConfig, PyslirpConfig
    from pyslirp.runtime.monitoring import Monitoring

log = logging.getLogger("pyslirp")

EXIT_OK = 0
EXIT_FAULT = 1
EXIT_CONFIG = 2
#: after a line fault its own retries did not handle, seconds
LINE_RESTART_DELAY = 5.0


@dataclass(frozen=True)
class ReloadReport:
    """What a reload did: each changed field with when it applies, or why it was refused."""

    reloaded: bool
    changes: dict[str, Applies] = field(default_factory=dict)
    error: str | None = None


class Server:
    """Owns the lines and runs a gateway for each client on them, all on one event loop."""

    def __init__(
        self,
        config: PyslirpConfig,
        lines: Line | list[Line],
        debug_packets: bool = False,
        load: Callable[[], PyslirpConfig] | None = None,
    ) -> None:
        self.config = config
        opened = lines if isinstance(lines, list) else [lines]
        settings = line_settings(config)
        if len(opened) != len(settings):
            raise ValueError(f"{len(settings)} lines configured, {len(opened)} opened")
        #: every line, in the configuration's order
        self.lines = [ServedLine(each, line) for each, line in zip(settings, opened)]
        #: the clients' addresses, when a line takes them from ppp.peer_pool
        self.pool: PeerPool | None = None
        if any(each.pooled for each in settings):
            self.pool = PeerPool(*config.ppp.pool_range, reserved=pool_reserved(settings))
        #: (protocol, our port) -> flows open on every line: what a service's max_connections bounds
        self.service_flows: Counter[tuple[str, int]] = Counter()
        #: reads the configuration again (the file and the environment) for a SIGHUP reload
        self.load = load
        #: ``serve --debug``: every control packet logged decoded, as pppd's debug option does
        self.packet_log = PacketDebugLog() if debug_packets else None
        self.options = {served.name: link_options(served.settings.config) for served in self.lines}
        self.started = time.time()
        #: every counter of every gateway, live and past: what SIGUSR1, /status and /metrics read
        self.registry = CounterRegistry()
        #: everything that watches the gateways: the log, the metrics and the audit log
        self.observers = Observers(LogObserver())
        self.audit: AuditLog | None = None
        if config.security.audit_log is not None:
            self.audit = AuditLog(config.security.audit_log, time.time)  # AuditLogError: a config error
            self.registry.attach(AUDIT_COUNTERS, self.audit.counters)
            self.observers.subscribe(self.audit)
        self.forward_counters: Counter[str] = Counter()
        self.registry.attach(FORWARD_COUNTERS, self.forward_counters)
        #: the security section's admission checks, shared by every link (pyslirp.runtime.security)
        self.security = self._security_pipeline(config)  # ExtensionError: a configuration error
        if self.security.guard is not None:
            self.observers.subscribe(self.security.guard)
        #: the services' circuit breakers, shared by every link (pyslirp.runtime.breaker)
        self.breakers = ServiceBreakers({}, self._clock)
        self._replace_breakers(ServiceBreakers(config.services, self._clock))
        self.forwards: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self._reloading = asyncio.Lock()
        self.probe = ServiceProbe(config.services)
        self.monitoring: Monitoring | None = None
        capture = config.monitoring.packet_capture
        #: every frame of every gateway to a pcap file while on (SIGUSR2 toggles it)
        self.capture = PacketCapture(capture.pcap_file, capture.max_bytes, capture.keep)
        self.registry.attach(CAPTURE_COUNTERS, self.capture.counters)

    # -- what the monitoring documents read (runtime.status.GatewayView) -------------------------

    @property
    def line(self) -> Line:
        """The first line (the only one without ``lines``)."""
        return self.lines[0].line

    def line_description(self) -> str:
        return self.line.describe().splitlines()[0]

    @property
    def gateway(self) -> Gateway | None:
        """The first line's gateway, if a client is on it (the one gateway without ``lines``)."""
        return next(iter(self.lines[0].gateways.values()), None)

    def session(self) -> Gateway | None:
        return self.gateway

    @property
    def metrics_serving(self) -> bool:
        return self.monitoring is not None and self.monitoring.serving

    def log_stats(self) -> None:
        """SIGUSR1: log the status document (every counter included) on one line."""
        log.info("stats: %s", json.dumps(status_document(self), sort_keys=True))

    @staticmethod
    def _clock() -> float:
        return asyncio.get_running_loop().time()

    def admission_checks(self, served: ServedLine | None = None, label: str = "") -> list[AdmissionCheck]:
        """What every new flow passes after its route and capacity: the services' breakers (if
        any has one: a breaker refuses before a rate limit takes a token), the line's own rate
        limit (of ``served``'s client ``label``), then security's."""
        breakers: list[AdmissionCheck] = [self.breakers] if self.breakers.breakers else []
        line = served.checks(label) if served is not None else []
        return [*breakers, *line, *self.security.checks]

    def _security_pipeline(self, config: PyslirpConfig) -> SecurityPipeline:
        return security_pipeline(
            config,
            clock=self._clock,
            schedule=lambda delay, callback: asyncio.get_running_loop().call_later(delay, callback),
            record=self._record,
        )

    def _gateway(self, served: ServedLine, session: LineSession, label: str) -> Gateway:
        config = served.settings.config
        name = label  # the line's name (NAME#k on a multi-client line): bounded, unlike sessions'

        def network(up: LinkUp, wake: Callable[[], None]) -> LinkNetwork:
            return LinkNetwork(
                config, up, wake, line=name, observer=self.observers, registry=self.registry,
                checks=self.admission_checks(served, label), extension=self.security.extension,
                service_flows=self.service_flows, line_limit=served.settings.max_connections,
            )

        rate = line_rate(config, session.native_rate)
        guard = self.security.guard
        lease = self.pool.lease(name) if self.pool is not None and served.settings.pooled else None
        gateway = Gateway(
            session, self.options[served.name], network, rate=rate, observers=self.observers,
            registry=self.registry, login_refusal=guard.login_refusal if guard is not None else lambda line: None,
            name=name, lease=lease,
        )
        if self.packet_log is not None:
            gateway.attach_tap(self.packet_log)
        return gateway

    def gateways(self) -> list[Gateway]:
        """Every client's gateway, line by line."""
        return [gateway for served in self.lines for gateway in served.gateways.values()]

    def _open_reverse(self, forward: ForwardConfig, label: str) -> asyncio.Protocol | None:
        """A forward's host client: piped to the client of the forward's line (the first line's
        without 'lines'), or None when that client's link is not up."""
        wanted = forward.line
        if wanted is None:
            gateway = self.gateway
        else:
            name, _, _ = wanted.partition("#")
            served = next(served for served in self.lines if served.name == name)
            gateway = served.gateways.get(wanted)
        return gateway.open_reverse(forward.peer_port, label) if gateway is not None else None

    async def run(self) -> None:
        if self.config.monitoring.enable_metrics:
            await self._start_monitoring()
        if self.config.monitoring.packet_capture.enabled:
            self.capture.start()
        try:
            self.forwards = await self._start_forwards(self.config)
            try:
                await self._serve_lines()
            finally:
                for server in self.forwards:
                    server.close()
        finally:
            self.capture.stop()
            if self.monitoring is not None:
                self.monitoring.close()
            if self.audit is not None:
                self.audit.close()

    async def _start_monitoring(self) -> None:
        """The endpoints, and the observer counting what /metrics shows (from before the first
        session). Imported here: prometheus_client is loaded only with metrics on."""
        from pyslirp.runtime.metrics import EventStats
        from pyslirp.runtime.monitoring import Monitoring

        event_stats = EventStats()
        self.observers.subscribe(event_stats)
        reload = self.reload_report if self.load is not None else None  # POST /reload
        self.monitoring = Monitoring(self, self.config.monitoring, event_stats, reload)
        await self.monitoring.start()

    def _record(self, event: str, **fields: object) -> None:
        """An audit record, when there is an audit log."""
        if self.audit is not None:
            self.audit.record(event, **fields)

    def _start_forwards(self, config: PyslirpConfig) -> Awaitable[list[asyncio.AbstractServer]]:
        return start_forwards(config.forwards, self._open_reverse, self.forward_counters, self._record)

    def reopen_logs(self) -> None:
        """Reopen the audit log (after logrotate moved it)."""
        if self.audit is not None:
            self.audit.reopen()

    async def shutdown(self) -> None:
        """SIGTERM/SIGINT: stop listening for forwards, let the session end politely
        (:meth:`Gateway.shutdown`: ``tcp.shutdown_grace`` for open flows, then LCP
        Terminate-Request). The caller then stops :meth:`run`, which flushes the capture and
        the audit log."""
        for server in self.forwards:
            server.close()
        gateways = self.gateways()
        if gateways:
            log.info("shutting down: open connections get %.0f s", self.config.tcp.shutdown_grace)
            await asyncio.gather(*(gateway.shutdown(self.config.tcp.shutdown_grace) for gateway in gateways))

    def hangup(self) -> None:
        """SIGHUP: reopen the audit log, then reload the configuration."""
        self.reopen_logs()
        if self.load is not None:
            task = asyncio.get_running_loop().create_task(self.reload())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def reload(self) -> bool:
        """:meth:`reload_report`, whether the new configuration was taken."""
        return (await self.reload_report()).reloaded

    async def reload_report(self) -> ReloadReport:
        """Read the configuration again and put it in force without dropping the link: services,
        forwards, security, DNS and the log level at once, other changes as ``APPLIES`` says.
        An invalid configuration is refused (logged, audited) and the running one stays. One
        reload at a time (SIGHUP and ``pyslirp reload`` may come together)."""
        async with self._reloading:
            return await self._reload()

    async def _reload(self) -> ReloadReport:
        assert self.load is not None
        try:
            new = await asyncio.to_thread(self.load)  # validating takes a child process a moment
            new.ppp.auth.credentials()
            effective, changes = reloaded(self.config, new)
            security = self._security_pipeline(effective)
        except (ConfigError, ExtensionError) as exc:
            heading, *problems = (line.strip() for line in str(exc).splitlines())
            problem = " ".join([heading, "; ".join(problems)]) if problems else heading
            log.error("reload refused, the running configuration stays: %s", problem)
            self._record("config_reloaded", reason="invalid_config")
            return ReloadReport(False, error=problem)
        if not changes:
            log.info("reload: the configuration is unchanged")
            self._record("config_reloaded", reason="unchanged")
            return ReloadReport(True)
        old = self.config
        self.config = effective
        self.probe.watch(effective.services)
        self._replace_security(security)
        self._replace_breakers(ServiceBreakers(effective.services, self._clock))
        for served, settings in zip(self.lines, line_settings(effective)):
            served.settings = settings
            self.options[served.name] = link_options(settings.config)
            for label, gateway in served.gateways.items():
                gateway.link.set_options(self.options[served.name])  # from the client's next negotiation
                if isinstance(gateway.network, LinkNetwork):
                    gateway.network.reconfigure(
                        settings.config, self.admission_checks(served, label), security.extension
                    )
        if effective.forwards != old.forwards:
            await self._restart_forwards(old)
        logging.getLogger().setLevel(effective.logging.level)
        for when in Applies:
            fields = sorted(path for path, applies in changes.items() if applies is when)
            if fields:
                text = {Applies.LIVE: "in force", Applies.NEXT_LINK: "in force from the next link",
                        Applies.RESTART: "NOT in force until pyslirp restarts"}[when]
                log.log(logging.WARNING if when is Applies.RESTART else logging.INFO,
                        "reload: %s %s", ", ".join(fields), text)
        self._record("config_reloaded", changed=sorted(changes))
        return ReloadReport(True, changes)

    def _replace_security(self, security: SecurityPipeline) -> None:
        """The new pipeline takes over, with the brute-force guard's failures and blocks."""
        previous = self.security.guard
        if previous is not None:
            self.observers.unsubscribe(previous)
            if security.guard is not None:
                security.guard.adopt(previous)
        if security.guard is not None:
            self.observers.subscribe(security.guard)
        self.security = security

    def _replace_breakers(self, breakers: ServiceBreakers) -> None:
        """The new breakers take over, with the state of those unchanged. Only breakers that
        exist listen to the observers: with none configured, a connection pays nothing."""
        breakers.adopt(self.breakers)
        if self.breakers.breakers:
            self.observers.unsubscribe(self.breakers)
        if breakers.breakers:
            self.observers.subscribe(breakers)
        self.breakers = breakers

    async def _restart_forwards(self, old: PyslirpConfig) -> None:
        for server in self.forwards:
            server.close()
        try:
            self.forwards = await self._start_forwards(self.config)
        except ForwardError as exc:
            log.error("reload: %s; the previous forwards stay", exc)
            self.config = self.config.model_copy(update={"forwards": old.forwards})
            try:
                self.forwards = await self._start_forwards(self.config)
            except ForwardError as again:  # their ports were taken meanwhile
                log.error("reload: %s; no forwards until the next reload", again)
                self.forwards = []

    async def _serve_lines(self) -> None:
        ppp, outbound = self.config.ppp, self.config.outbound
        for served in self.lines:
            prefix = f"line {served.name}: " if self.config.lines else ""
            print(prefix + served.line.describe(), file=sys.stderr, flush=True)
            line_ppp = served.settings.config.ppp
            clients = f"{served.settings.max_clients} clients at once, each" if served.settings.max_clients > 1 else "the client"
            given = f"an address of {ppp.peer_pool}" if served.settings.pooled else line_ppp.peer_ip
            log.info("%sPPP: we are %s, %s gets %s", prefix, line_ppp.local_ip, clients, given)
        log.info("other destinations: %s", {
            "refuse": "refused", "socks": f"through SOCKS5 {self.config.socks.host}:{self.config.socks.port}",
            "direct": "connected directly"}[outbound.mode])
        enabled = {port: s for port, s in self.config.services.items() if s.enabled}
        if not enabled:
            log.warning("no services configured: the client can ping %s and resolve names, nothing more "
                        "(map ports under 'services' in config.yaml)", self.config.ppp.local_ip)
        for port, service in sorted(enabled.items()):
            log.info("service %s: %s:%d/%s -> %s:%d", service.name or port, self.config.ppp.local_ip, port,
                     service.protocol, service.host, service.port)
        serving = [asyncio.create_task(self._serve_line(served), name=f"line {served.name}") for served in self.lines]
        try:
            # A line the configuration does not let work (LineError) stops the server; every
            # other fault stays within its line.
            await asyncio.gather(*serving)
        finally:
            for task in serving:
                task.cancel()
            await asyncio.gather(*serving, return_exceptions=True)

    async def _serve_line(self, served: ServedLine) -> None:
        while True:
            try:
                await served.serve(self._serve_client)
            except (LineError, asyncio.CancelledError):
                raise  # a configuration the line cannot work with; a signal
            except Exception:
                # A line fault must not end the server: the line's own retries failed in a way
                # they did not foresee. Log it and open the line again.
                log.exception("%s: line failed; opening it again in %.0f s", served.name, LINE_RESTART_DELAY)
                await asyncio.sleep(LINE_RESTART_DELAY)

    async def _serve_client(self, served: ServedLine, session: LineSession, label: str) -> None:
        gateway = self._gateway(served, session, label)
        log.info("%s: line up (%s)", label, session.name)
        served.gateways[label] = gateway
        self.capture.watch(gateway)
        try:
            await gateway.run()
        except Exception:
            # A fault on one session must not end the server: log it and take the next one.
            log.exception("%s: session failed", gateway.name)
        finally:
            self.capture.unwatch(gateway)
            del served.gateways[label]


class LoopError(Exception):
    """The event loop asked for cannot run here."""


def _install_event_loop_policy(choice: str) -> str:
    """The event loop ``serve --loop`` asks for (``auto``: uvloop where it is installed, else
    asyncio's own); which one runs. LoopError when uvloop is asked for and not installed."""
    if sys.platform == "win32":  # no uvloop; the lines need add_reader, which Proactor lacks
        if choice == "uvloop":
            raise LoopError("--loop uvloop: uvloop does not run on Windows")
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())  # type: ignore[attr-defined]
        return "asyncio"
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise LoopError("--loop uvloop: uvloop is not installed (pip install uvloop)") from None
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def install_signal_handlers(loop: asyncio.AbstractEventLoop, handlers: dict[str, Callable[[], None]]) -> list[str]:
    """Each signal of ``handlers`` that this platform has runs its handler in the loop. Where the
    loop takes no signal handlers (Windows: only SIGINT, SIGTERM and SIGBREAK exist, and Ctrl+C
    arrives as SIGINT), ``signal.signal`` takes them and hands them to the loop. The names taken."""
    taken = []
    for name, handler in handlers.items():
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            loop.add_signal_handler(signum, handler)
        except NotImplementedError:
            signal.signal(signum, lambda _signum, _frame, handler=handler: loop.call_soon_threadsafe(handler))
        taken.append(name)
    return taken


async def _serve(config: PyslirpConfig, debug_packets: bool, load: Callable[[], PyslirpConfig] | None) -> int:
    lines: list[Line] = []
    try:
        for settings in line_settings(config):
            serial = settings.config.serial
            lines.append(open_line(serial.port, serial.baudrate, serial.rtscts, serial.xonxoff))
    except LineError as exc:
        for line in lines:
            line.close()
        prefix = f"line {settings.name}: " if config.lines else ""
        print(f"pyslirp: {prefix}{exc}", file=sys.stderr)
        return EXIT_FAULT if isinstance(exc, LineAccessError) else EXIT_CONFIG
    try:
        server = Server(config, lines, debug_packets, load)
    except (AuditLogError, ExtensionError) as exc:
        for line in lines:
            line.close()
        print(f"pyslirp: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    task = asyncio.ensure_future(server.run())
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def stop() -> None:
        """The first signal shuts down politely; a second one at once."""
        if stopping:
            task.cancel()
            return

        async def stop_politely() -> None:
            try:
                await server.shutdown()
            finally:
                task.cancel()

        stopping.append(asyncio.ensure_future(stop_politely()))

    install_signal_handlers(loop, {
        "SIGINT": stop, "SIGTERM": stop, "SIGBREAK": stop,  # SIGBREAK: Ctrl+Break on Windows
        "SIGUSR1": server.log_stats, "SIGHUP": server.hangup, "SIGUSR2": server.capture.toggle,
    })
    try:
        await task
    except asyncio.CancelledError:
        log.info("stopping")
        return EXIT_OK
    except (LineError, MonitoringError, ForwardError) as exc:
        print(f"pyslirp: {exc}", file=sys.stderr)
        return EXIT_FAULT if isinstance(exc, LineAccessError) else EXIT_CONFIG
    finally:
        for line in lines:
            line.close()
    return EXIT_OK


def run_server(
    config: PyslirpConfig,
    debug_packets: bool = False,
    load: Callable[[], PyslirpConfig] | None = None,
    loop: str = "auto",
) -> int:
    """Run until interrupted; the process exit status. ``debug_packets``: log every control
    packet decoded (``serve --debug``); ``load`` reads the configuration again on SIGHUP;
    ``loop``: the event loop (``auto``, ``uvloop``, ``asyncio``)."""
    try:
        running = _install_event_loop_policy(loop)
    except LoopError as exc:
        print(f"pyslirp: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    log.info("event loop: %s", running)
    try:
        return asyncio.run(_serve(config, debug_packets, load))
    except ConfigError as exc:
        print(f"pyslirp: {exc}", file=sys.stderr)
        return EXIT_CONFIG
