"""pyslirp configuration: pydantic models loaded from YAML with ``PYSLIRP_*`` environment overrides.

Precedence, highest first: command-line arguments, environment, the YAML file, defaults.
Environment names are ``PYSLIRP_<SECTION>__<FIELD>`` (nested with ``__``), and for every scalar
field of a section also the flat ``PYSLIRP_<SECTION>_<FIELD>`` (``PYSLIRP_SERIAL_PORT``,
``PYSLIRP_SOCKS_HOST``; ``LOG`` stands for ``logging``: ``PYSLIRP_LOG_LEVEL``).

With no ``--config``, ``./config.yaml`` and then ``/etc/pyslirp/config.yaml`` are read if present.
Every error is a :class:`ConfigError` whose message names the field path and the bad value.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError,
)

from pyslirp.config_records import (
    AuthRules, ConfigError, LineRules, PPPRules, ServiceRecord, ServiceRules, parse_address_range, read_secrets,
)
from pyslirp.ppp.protocols import MIN_MRU

DEFAULT_CONFIG_PATHS = (Path("config.yaml"), Path("/etc/pyslirp/config.yaml"))
#: the largest MRU we offer: every frame buffer is sized from it (LCP's own floor is MIN_MRU)
MAX_MRU = 16384
ENV_PREFIX = "PYSLIRP_"
#: no setting takes a number beyond 64 bits
_LARGEST_NUMBER = 2**63 - 1

Port = Annotated[int, Field(ge=1, le=65535)]
#: the most addresses ppp.peer_pool may hold (each free one is kept in a list)
MAX_POOL = 65536


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)



def _nonblank_port(value: str) -> str:
    if not value.strip():
        raise ValueError("must name a device, a URL, tcp-listen://host:port or 'pty'")
    return value.strip()


class SerialConfig(_Section):
    """The line PPP runs over."""

    port: str = Field(
        "pty",
        description="device path (/dev/ttyUSB0, COM3), pyserial URL (socket://host:port, rfc2217://...), "
        "tcp-listen://host:port, or 'pty'",
    )
    baudrate: int = Field(115200, gt=0)
    rtscts: bool = False
    xonxoff: bool = False
    line_rate: int | None = Field(
        None, gt=0, description="bytes per second to pace the line at; serial ports default to baudrate/10"
    )

    _port_not_blank = field_validator("port")(_nonblank_port)


class KeepaliveConfig(_Section):
    """LCP Echo-Request keepalive (RFC 1661 §5.8); interval 0 turns it off."""

    interval: float = Field(10.0, ge=0)
    failures: int = Field(3, ge=1)


class AuthConfig(AuthRules, _Section):
    """Server-side authentication of the client (RFC 1334 PAP, RFC 1994 CHAP-MD5)."""

    method: Literal["none", "pap", "chap"] = "none"
    users: dict[str, str] = Field(default_factory=dict, description="user name -> password/secret")
    secrets_file: Path | None = Field(None, description="file of 'user secret' lines, like pppd's pap-secrets")
    chap_rechallenge_interval: float | None = Field(None, gt=0)
    timeout: float = Field(30.0, gt=0)

    @field_validator("secrets_file")
    @classmethod
    def _secrets_readable(cls, path: Path | None) -> Path | None:
        if path is not None:
            read_secrets(path)  # a file that cannot be read is reported with every other problem
        return path

    @model_validator(mode="after")
    def _credentials_present(self) -> "AuthConfig":
        if self.method != "none" and not self.users and self.secrets_file is None:
            raise ValueError(f"method '{self.method}' needs users or a secrets_file")
        return self


class PPPConfig(PPPRules, _Section):
    """PPP link: addresses, LCP options, keepalive and authentication."""

    local_ip: IPv4Address = IPv4Address("10.0.0.1")
    peer_ip: IPv4Address = IPv4Address("10.0.0.2")
    peer_pool: str = Field(
        "10.0.0.2-10.0.0.254",
        description="FIRST-LAST or a network: the addresses clients of 'lines' get (serial's client gets peer_ip)",
    )
    dns: list[IPv4Address] | None = Field(
        None, description="DNS servers offered to the client (RFC 1877); default: our own address"
    )
    mru: int = Field(1500, ge=MIN_MRU, le=MAX_MRU)
    accm: int = Field(0, ge=0, le=0xFFFFFFFF, description="async control character map we ask the client for")
    vj: bool = True
    vj_slots: int = Field(16, ge=1, le=256)
    restart_timer: float = Field(3.0, gt=0)
    max_configure: int = Field(10, ge=1)
    max_terminate: int = Field(2, ge=1)
    max_failure: int = Field(5, ge=1)
    keepalive: KeepaliveConfig = Field(default_factory=KeepaliveConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)

    @field_validator("accm", mode="before")
    @classmethod
    def _accm_hex(cls, value: Any) -> Any:
        return int(value, 0) if isinstance(value, str) and value.strip().lower().startswith("0x") else value

    @model_validator(mode="after")
    def _distinct_addresses(self) -> "PPPConfig":
        if self.local_ip == self.peer_ip:
            raise ValueError(f"local_ip and peer_ip must differ (both {self.local_ip})")
        return self

    @field_validator("peer_pool")
    @classmethod
    def _address_range(cls, value: str) -> str:
        first, last = parse_address_range(value)
        if last < first:
            raise ValueError(f"{first} comes after {last}")
        if int(last) - int(first) >= MAX_POOL:
            raise ValueError(f"at most {MAX_POOL} addresses (a /16); got {int(last) - int(first) + 1}")
        return value.strip()


def _overlay(model: BaseModel, changes: Mapping[str, Any]) -> dict[str, Any]:
    """``model``'s fields with ``changes`` laid over them: a nested section is overlaid field by
    field, any other value (a list, the users of ``auth``) is replaced whole."""
    merged = dict(model)
    for key, value in changes.items():
        current = merged.get(key)
        merged[key] = _overlay(current, value) if isinstance(current, BaseModel) and isinstance(value, Mapping) else value
    return merged


class RateLimit(_Section):
    """A token bucket of new connections: ``burst`` at once, then ``connections_per_second``."""

    connections_per_second: float = Field(10.0, gt=0)
    burst: int = Field(20, ge=1)


class BreakerConfig(_Section):
    """A service's circuit breaker: after ``failures`` failed connects within ``window`` seconds,
    new connections get RST at once for ``cooldown`` seconds, then one probe is let through."""

    failures: int = Field(5, ge=1)
    window: float = Field(30.0, gt=0)
    cooldown: float = Field(30.0, gt=0)


class ServiceConfig(ServiceRules, _Section):
    """A local service the client reaches at local_ip:<key>."""

    host: str = "127.0.0.1"
    port: Port
    name: str = ""
    protocol: Literal["tcp", "udp"] = "tcp"
    enabled: bool = True
    max_connections: int = Field(64, ge=1)
    max_pending: int = Field(16, ge=1, description="connects to the service in progress at once")
    idle_timeout: float = Field(7200.0, gt=0, description="seconds without data before the connection is closed")
    connect_timeout: float = Field(10.0, gt=0)
    connect_retries: int = Field(
        2, ge=0, le=10,
        description="connects refused or unreachable tried again, with backoff from 0.25 s, within connect_timeout",
    )
    rate_limit: RateLimit | None = Field(None, description="this service's own limit on new connections")
    auth_service: bool | None = Field(
        None, description="logins happen here (brute-force detection watches it); default: port 22 only"
    )
    breaker: BreakerConfig | None = Field(None, description="a circuit breaker for this service (TCP); off if unset")
    backends: list[str] = Field(
        default_factory=list, description="more host:port targets, tried when host:port fails (TCP)"
    )
    balance: Literal["failover", "round_robin"] = Field(
        "failover", description="failover: host:port first, then backends in order; round_robin: a new first each time"
    )

    @field_validator("backends")
    @classmethod
    def _host_port(cls, values: list[str]) -> list[str]:
        for value in values:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port, got {value!r}")
        return values


#: a service the runtime builds itself (the DNS relay, the accounting of outbound flows) is a
#: record with the model's defaults
ServiceRecord.defaults = {
    name: field.get_default(call_default_factory=True)
    for name, field in ServiceConfig.model_fields.items() if not field.is_required()
}


class ForwardConfig(_Section):
    """A reverse forward (SLiRP's redir): a host listening port that connects into the client."""

    listen_host: str = "127.0.0.1"
    listen_port: Port
    peer_port: Port
    allowed_remotes: list[IPv4Network] = Field(
        default_factory=lambda: [IPv4Network("127.0.0.0/8")],
        description="host client networks the forward accepts; others are closed at once",
    )
    line: str | None = Field(
        None,
        description="with 'lines': the one whose client it connects to (NAME, or NAME#k of a multi-client line); "
        "default: the first line",
    )



class TCPConfig(_Section):
    """Userspace TCP tuning; every buffer is a bound."""

    # At most the largest window TCP can offer (RFC 7323 §2.3: 2**30 with window scale 14).
    receive_buffer: int = Field(256 * 1024, ge=4096, le=2**30)
    send_buffer: int = Field(256 * 1024, ge=4096, le=2**30)
    time_wait: float = Field(2.0, ge=0)
    max_connections: int = Field(16384, ge=1, le=1_000_000, description="a link's connections at once")
    reassembly_memory: int = Field(
        4 * 1024 * 1024, ge=64 * 1024,
        description="bytes of out-of-order data all connections of a link may hold together; more is dropped",
    )
    shutdown_grace: float = Field(
        10.0, ge=0, description="on SIGTERM, seconds open connections get to finish before the link is closed"
    )
    min_rto: float = Field(0.2, gt=0)
    line_budget: bool = Field(
        True, description="bound bulk data in flight by the line's measured rate, so interactive traffic stays fast"
    )
    batch_acks: bool = Field(
        True,
        description="on a slow line, read a download's ACKs a few at a time: about half the CPU per MB, "
        "but the first keystroke after a pause waits up to ~0.15 s (needs line_budget)",
    )


class DNSConfig(_Section):
    """DNS forwarding from local_ip:53 to an upstream resolver."""

    enabled: bool = True
    upstream: str | None = Field(None, description="host[:port]; default: the first nameserver in /etc/resolv.conf")
    timeout: float = Field(5.0, gt=0)


class SocksConfig(_Section):
    """The SOCKS5 proxy (RFC 1928) that ``outbound.mode: socks`` connects through."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 1080
    username: str | None = Field(
        None, min_length=1, max_length=255, description="RFC 1929 username/password authentication when set"
    )
    password: str | None = Field(None, max_length=255)
    connect_timeout: float = Field(10.0, gt=0, description="seconds for the proxy to connect a flow, handshake included")
    udp: bool = Field(False, description="outbound UDP through the proxy (UDP ASSOCIATE); off: refused")
    remote_dns: bool = Field(
        False, description="names resolved by the proxy: the DNS relay answers with outbound.fake_ip_range addresses"
    )

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> "SocksConfig":
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together (RFC 1929)")
        return self


class OutboundConfig(_Section):
    """The client's flows to addresses other than ours: refused, through SOCKS5, or direct."""

    mode: Literal["refuse", "socks", "direct"] = Field(
        "refuse", description="refuse: RST; socks: through the socks section's proxy; direct: the host connects out"
    )
    allow: list[IPv4Network] = Field(
        default_factory=list, description="destination networks; empty: everything not denied"
    )
    deny: list[IPv4Network] = Field(
        default_factory=list,
        description="always wins; the host's loopback, link-local, multicast and 0.0.0.0/8 are denied unless in allow",
    )
    ports: list[Port] | None = Field(None, description="allowed destination ports; null: any")
    max_connections: int = Field(64, ge=1, description="outbound connections open at once")
    connect_timeout: float = Field(10.0, gt=0, description="seconds for a direct connect (socks: socks.connect_timeout)")
    fake_ip_range: IPv4Network = Field(
        IPv4Network("100.64.0.0/10"), description="addresses that stand for names with socks.remote_dns (RFC 6598)"
    )

    @field_validator("fake_ip_range")
    @classmethod
    def _room_for_names(cls, network: IPv4Network) -> IPv4Network:
        if network.prefixlen > 24:
            raise ValueError("needs at least a /24: each name the client resolves takes an address")
        return network



class RateLimitConfig(RateLimit):
    enabled: bool = False


class BruteForceConfig(_Section):
    """Blocks a client that keeps failing to log in to an authentication service."""

    enabled: bool = False
    max_failures: int = Field(5, ge=1, description="failures within window that block")
    window: float = Field(60.0, gt=0)
    block_time: float = Field(300.0, gt=0, description="the first block; each repeat doubles it")
    short_connection: float = Field(
        10.0, gt=0, description="a connection to an authentication service shorter than this is a failed login"
    )


class SecurityConfig(_Section):
    allowed_ports: list[Port] | None = Field(None, description="ports the client may open; default: the services")
    blocked_ports: list[Port] = Field(default_factory=list)
    max_pending: int = Field(64, ge=1, description="connects to services in progress at once, in all")
    rate_limiting: RateLimitConfig = Field(default_factory=RateLimitConfig)
    brute_force: BruteForceConfig = Field(default_factory=BruteForceConfig)
    allowlist: list[IPv4Network] = Field(default_factory=list, description="client networks never blocked")
    allowed_sources: list[IPv4Network] = Field(
        default_factory=list, description="networks the client routes: sources accepted besides its own address"
    )
    admission: str | None = Field(
        None, description="'package.module:callable': the operator's own check, run after the built-in ones"
    )
    audit_log: Path | None = None



#: the smallest size a capture file may rotate at: one frame of the largest MRU always fits
MIN_CAPTURE_ROTATE_BYTES = 65536


class PacketCaptureConfig(_Section):
    """Every PPP frame each way to a pcap file (link type PPP_WITH_DIR); SIGUSR2 toggles it."""

    enabled: bool = Field(False, description="capture from the start; SIGUSR2 switches it on and off at runtime")
    pcap_file: Path = Path("pyslirp.pcap")
    max_bytes: int | None = Field(
        10_000_000, description="rotate before the file would grow past this many bytes; 0 or null: never"
    )
    keep: int = Field(5, ge=0, description="rotated files kept, pcap_file.1 (newest) to pcap_file.<keep>")

    @field_validator("max_bytes")
    @classmethod
    def _rotation_size(cls, value: int | None) -> int | None:
        if value and value < MIN_CAPTURE_ROTATE_BYTES:
            raise ValueError(f"must be 0 (never rotate) or at least {MIN_CAPTURE_ROTATE_BYTES}")
        return value or None


class MonitoringConfig(_Section):
    enable_metrics: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: Port = 9090
    health_port: Port = 9091
    packet_capture: PacketCaptureConfig = Field(default_factory=PacketCaptureConfig)



class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    file: Path | None = None

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


_yaml_data: ContextVar[dict[str, Any]] = ContextVar("pyslirp_yaml_data", default={})
#: what is wrong with the environment, found as the sources are read; load_config reports it with
#: the validation's problems (outside load_config, None: the first one raises)
_environment_problems: ContextVar[list[str] | None] = ContextVar("pyslirp_environment_problems", default=None)


class LineConfig(LineRules, _Section):
    """One of the lines ``lines`` serves in one process; unset fields take ``serial``'s values."""

    name: str = Field(min_length=1, max_length=64, description="the line's name in logs, metrics, status and audit")
    port: str = Field(description="as serial.port: a device, pyserial URL, tcp-listen://host:port or 'pty'")
    baudrate: int | None = Field(None, gt=0)
    rtscts: bool | None = None
    xonxoff: bool | None = None
    line_rate: int | None = Field(None, gt=0)
    max_clients: int = Field(
        1, ge=1, le=1024, description="tcp-listen:// only: clients served at once, each its own line NAME#k"
    )
    peer_ip: IPv4Address | None = Field(None, description="the client's address; default: one from ppp.peer_pool")
    max_connections: int | None = Field(
        None, ge=1, description="the client's flows at once, every service together (a service's own counts every line)"
    )
    rate_limit: RateLimit | None = Field(None, description="the client's new flows per second")
    ppp: dict[str, Any] = Field(
        default_factory=dict, description="this line's changes to the ppp section (e.g. auth.users: who may log in here)"
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value.isprintable() or "#" in value or value != value.strip():
            raise ValueError("a line name is printable, without '#' or surrounding spaces")
        return value

    _port_not_blank = field_validator("port")(_nonblank_port)

    @model_validator(mode="after")
    def _clients(self) -> "LineConfig":
        if self.max_clients > 1:
            if not self.port.startswith("tcp-listen://"):
                raise ValueError("max_clients above 1 needs a tcp-listen:// port")
            if self.peer_ip is not None:
                raise ValueError("peer_ip fixes one client's address: leave it out with max_clients above 1")
        return self

    def effective_ppp(self, base: PPPConfig) -> PPPConfig:
        """The ppp section as this line's clients see it (ValueError when the changes are invalid)."""
        changes = dict(self.ppp)
        if self.peer_ip is not None:
            changes["peer_ip"] = self.peer_ip
        return PPPConfig.model_validate(_overlay(base, changes)) if changes else base


def _environment_problem(problem: str) -> None:
    """Note a problem of the environment for load_config's report (elsewhere, raise it)."""
    problems = _environment_problems.get()
    if problems is None:
        raise SettingsError(problem)
    problems.append(problem)


class _NotJSON(ValueError):
    """A variable's value that its setting reads as JSON, and is not; ``key`` ends its name."""

    def __init__(self, key: str, value: str, reason: str) -> None:
        super().__init__(reason)
        self.key, self.value = key, value


class _EnvSource(EnvSettingsSource):
    """``PYSLIRP_<SECTION>__<FIELD>``, read as pydantic-settings does, except that a variable
    that is not the JSON its setting takes is a problem named with the others, not the end."""

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError as exc:
            raise _NotJSON(field_name, value, str(exc)) from None

    def prepare_field_value(self, field_name: str, field: Any, value: Any, value_is_complex: bool) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except _NotJSON as exc:
            section = f"{ENV_PREFIX}{field_name.upper()}"
            variable = next(
                (name for name, text in os.environ.items() if text == exc.value
                 and name.upper().startswith(section) and name.upper().endswith(exc.key.upper())),
                section,
            )
            path = ".".join(variable[len(ENV_PREFIX):].lower().split("__"))
            _environment_problem(f"{path}: {variable} must be JSON for this setting: {exc} (got {exc.value!r})")
            return None


class _YamlSource(PydanticBaseSettingsSource):
    """The already-parsed YAML file (parsed by :func:`load_config` so errors name the file)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data = _yaml_data.get()
        services = data.get("services")
        if isinstance(services, dict):
            # The environment names a service's port as text (PYSLIRP_SERVICES__80__PORT): with
            # the file's keys as text too, the two merge, and the variable overrides one field
            # instead of replacing the whole service.
            data = {**data, "services": {str(port): service for port, service in services.items()}}
        return data


class _FlatEnvSource(PydanticBaseSettingsSource):
    """``PYSLIRP_<SECTION>_<FIELD>`` for scalar fields of each section (the brief's flat names)."""

    SECTION_ALIASES = {"logging": ("LOG", "LOGGING")}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, dict[str, Any]] = {}
        for section, info in self.settings_cls.model_fields.items():
            model = info.annotation
            scalars = [] if not (isinstance(model, type) and issubclass(model, BaseModel)) else [
                name for name, sub in model.model_fields.items()
                if not (isinstance(sub.annotation, type) and issubclass(sub.annotation, BaseModel))
            ]
            for prefix in self.SECTION_ALIASES.get(section, (section.upper(),)):
                for name in scalars:
                    value = os.environ.get(f"{ENV_PREFIX}{prefix}_{name.upper()}")
                    if value is not None:
                        found.setdefault(section, {})[name] = value
                self._report_unknown(section, f"{ENV_PREFIX}{prefix}_", scalars)
        return found

    @staticmethod
    def _report_unknown(section: str, flat_prefix: str, scalars: list[str]) -> None:
        """A flat name of the section that names none of its scalar settings (a typo, or a nested
        key written with one '_') would set nothing: a problem, not silence."""
        for variable in os.environ:
            name = variable.removeprefix(flat_prefix)
            if name != variable and name and not name.startswith("_") and name.lower() not in scalars:
                _environment_problem(
                    f"{section}: {variable} sets nothing: {section} has no setting {name.lower()!r} "
                    f"(a nested key is joined by '__': {ENV_PREFIX}{section.upper()}__KEY__SUBKEY)"
                )


class PyslirpConfig(BaseSettings):
    """The whole configuration; see config.yaml for a commented example."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    serial: SerialConfig = Field(default_factory=SerialConfig)
    ppp: PPPConfig = Field(default_factory=PPPConfig)
    services: dict[Port, ServiceConfig] = Field(default_factory=dict)
    forwards: list[ForwardConfig] = Field(default_factory=list)
    tcp: TCPConfig = Field(default_factory=TCPConfig)
    dns: DNSConfig = Field(default_factory=DNSConfig)
    socks: SocksConfig = Field(default_factory=SocksConfig)
    outbound: OutboundConfig = Field(default_factory=OutboundConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    lines: list[LineConfig] = Field(
        default_factory=list, description="several lines served by this process; empty: the one line of 'serial'"
    )

    @model_validator(mode="after")
    def _lines_consistent(self) -> "PyslirpConfig":
        names: set[str] = set()
        ports: dict[str, str] = {}
        fixed: dict[IPv4Address, str] = {}
        for index, line in enumerate(self.lines):
            where = f"lines.{index}"
            if line.name in names:
                raise ValueError(f"{where}.name: another line is named {line.name!r}")
            names.add(line.name)
            if line.port != "pty" and not line.port.endswith(":0"):  # each of those opens its own
                if line.port in ports:
                    raise ValueError(f"{where}.port: line {ports[line.port]!r} has {line.port} too")
                ports[line.port] = line.name
            try:
                line.effective_ppp(self.ppp)
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(map(str, (where, "ppp", *first["loc"])))
                raise ValueError(f"{field}: {first['msg'].removeprefix('Value error, ')}") from None
            if line.peer_ip is not None:
                if line.peer_ip in fixed:
                    raise ValueError(f"{where}.peer_ip: line {fixed[line.peer_ip]!r} has {line.peer_ip} too")
                fixed[line.peer_ip] = line.name
        for index, forward in enumerate(self.forwards):
            if forward.line is None:
                continue  # the first line's client
            if not self.lines:
                raise ValueError(f"forwards.{index}.line: there is no 'lines' section; leave it out")
            line_name, _, client = forward.line.partition("#")
            target = next((line for line in self.lines if line.name == line_name), None)
            if target is None:
                raise ValueError(f"forwards.{index}.line: no line is named {line_name!r} (lines: {sorted(names)})")
            if target.max_clients > 1 and not (client.isdigit() and 1 <= int(client) <= target.max_clients):
                raise ValueError(
                    f"forwards.{index}.line: line {line_name!r} has {target.max_clients} clients; "
                    f"name one of them, {line_name}#1 to {line_name}#{target.max_clients}"
                )
            if target.max_clients == 1 and client:
                raise ValueError(f"forwards.{index}.line: line {line_name!r} has one client; name it {line_name!r}")
        return self


    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EnvSource(settings_cls), _FlatEnvSource(settings_cls), _YamlSource(settings_cls))


def find_config_file(explicit: Path | None) -> Path | None:
    """The file to read: the one named, else the first default path that exists."""
    if explicit is not None:
        return explicit
    return next((path for path in DEFAULT_CONFIG_PATHS if path.is_file()), None)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read: {reason}") from None
    import yaml  # only when there is a file: a megabyte of a server's memory otherwise

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML: nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, not {type(data).__name__}")
    if (where := _huge_number(data)) is not None:
        raise ConfigError(f"{path}: {where}: a number larger than any setting takes")
    if bad := [key for key in data if not isinstance(key, str)]:
        raise ConfigError(f"{path}: a section name must be text, not {bad[0]!r}")
    return data


def _huge_number(data: Any, where: str = "", seen: set[int] | None = None) -> str | None:
    """The path of an integer (a value or a key) beyond 64 bits, if the document holds one: no
    setting takes it, and one of thousands of digits cannot even be printed in a message."""
    if isinstance(data, int):
        return where or "(top level)" if abs(data) > _LARGEST_NUMBER else None
    if not isinstance(data, (dict, list, tuple, set)):
        return None
    seen = set() if seen is None else seen
    if id(data) in seen:  # an alias to an enclosing node
        return None
    seen.add(id(data))
    for key, value in data.items() if isinstance(data, dict) else enumerate(data):
        if _huge_number(key, where, seen) is not None:
            return where or "(top level)"
        found = _huge_number(value, f"{where}.{_shown(key)}" if where else _shown(key), seen)
        if found is not None:
            return found
    return None


def _shown(key: Any) -> str:
    """A key as a message shows it: quoted when it is not one printable line."""
    text = str(key)
    return text if text.isprintable() else repr(text)


def _format_problems(source: str, error: ValidationError | None, environment: list[str]) -> str:
    """Every problem, one line each starting with its field path: the validation's, then the
    environment's."""
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors() if error is not None else ():
        path = ".".join(_shown(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        if not item["loc"] and (named := re.match(r"([\w.#]+): (.*)", message, re.DOTALL)):
            # a check across sections names its field itself; the input is the whole document
            lines.append(f"  {named.group(1)}: {named.group(2)}")
            continue
        value = item.get("input")
        try:
            shown = repr(value)
        except ValueError:  # a validator made an integer too long to print (sys.get_int_max_str_digits)
            shown = "a number too large to show"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        if variable := _variable_setting(item["loc"]):
            shown += f" from {variable}"
        lines.append(f"  {path}: {message} (got {shown})")
    lines.extend(f"  {problem}" for problem in environment)
    return "\n".join(lines)


def _variable_setting(loc: tuple[Any, ...]) -> str | None:
    """The environment variable that gave the value at ``loc``, if one did (it wins over the file)."""
    if not loc:
        return None
    names = {name.upper(): name for name in os.environ if name.upper().startswith(ENV_PREFIX)}
    parts = [str(part).upper() for part in loc]
    candidates = [ENV_PREFIX + "__".join(parts)]
    if len(parts) == 2:
        section = str(loc[0])
        candidates += [f"{ENV_PREFIX}{prefix}_{parts[1]}"
                       for prefix in _FlatEnvSource.SECTION_ALIASES.get(section, (parts[0],))]
    return next((names[name] for name in candidates if name in names), None)


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> PyslirpConfig:
    """Load the configuration; ``overrides`` are command-line values, e.g. ``{"serial": {"port": ...}}``."""
    config_file = find_config_file(path)
    data = _read_yaml(config_file) if config_file is not None else {}
    source = f"file {config_file} + environment" if config_file else "defaults + environment"
    environment: list[str] = []
    token, environment_token = _yaml_data.set(data), _environment_problems.set(environment)
    try:
        config = PyslirpConfig(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_format_problems(source, exc, environment)) from None
    except SettingsError as exc:  # the environment, in a way pydantic-settings cannot read
        raise ConfigError(f"invalid configuration ({source}): {exc}") from None
    finally:
        _yaml_data.reset(token)
        _environment_problems.reset(environment_token)
    if environment:
        raise ConfigError(_format_problems(source, None, environment))
    return config
