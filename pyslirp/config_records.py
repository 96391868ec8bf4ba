"""The validated configuration as plain records: what a serving process reads, without pydantic.

pydantic and pydantic-settings take about 15 MB of a process's memory once imported, more than the
rest of a serving pyslirp together. So ``pyslirp serve`` validates its configuration in a
short-lived child process (:mod:`pyslirp.config_snapshot`) and serves from the records that
child hands back; the pydantic models of :mod:`pyslirp.config` never load in the server.

A record has a model's fields as attributes and the two model methods the runtime calls,
``model_copy(update=...)`` and ``model_dump(mode=...)``. What a section derives from its fields
(the DNS servers offered, a service's targets, a line's view of the ppp section, ...) is written
once, in the ``*Rules`` mixins here, which the pydantic models and the records share: the runtime
reads either alike. Nothing here validates; a record holds what the models accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, ClassVar, TypeVar

RecordT = TypeVar("RecordT", bound="Record")


class ConfigError(Exception):
    """A configuration that cannot be used; ``str()`` is a message fit for a user."""


def parse_address_range(text: str) -> tuple[IPv4Address, IPv4Address]:
    """``FIRST-LAST``, or a network whose host addresses are the range; ValueError if neither."""
    text = text.strip()
    if "-" in text:
        first, _, last = text.partition("-")
        return IPv4Address(first.strip()), IPv4Address(last.strip())
    network = IPv4Network(text, strict=False)
    if network.num_addresses <= 2:
        return network.network_address, network.broadcast_address
    return network.network_address + 1, network.broadcast_address - 1


def read_secrets(path: Path) -> dict[str, str]:
    """The 'user secret' lines of a secrets file; ValueError says what is wrong with it."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ValueError(f"cannot read {path}: {reason}") from None
    creds = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 2:
            raise ValueError(f"{path}:{number}: expected 'user secret'")
        creds[fields[0]] = fields[1]
    return creds


def replaced(section: Any, path: tuple[str, ...] | list[str], value: Any) -> Any:
    """``section`` (a model or a record) with the field at ``path`` set to ``value``, unchecked."""
    head = path[0]
    if len(path) == 1:
        return section.model_copy(update={head: value})
    return section.model_copy(update={head: replaced(getattr(section, head), path[1:], value)})


# The mixins read their section's fields as attributes; they declare none, so that pydantic,
# which builds fields from annotations, sees only the model's own.


class AuthRules:
    def credentials(self) -> dict[str, str]:
        """The users from the config merged with the secrets file (the file wins), read now."""
        creds = dict(self.users)
        if self.secrets_file is not None:
            try:
                creds.update(read_secrets(self.secrets_file))
            except ValueError as exc:
                raise ConfigError(f"ppp.auth.secrets_file: {exc}") from None
        return creds


class PPPRules:
    @property
    def dns_servers(self) -> list[IPv4Address]:
        return list(self.dns) if self.dns is not None else [self.local_ip]

    @property
    def pool_range(self) -> tuple[IPv4Address, IPv4Address]:
        """The first and last address of ``peer_pool``."""
        return parse_address_range(self.peer_pool)


class ServiceRules:
    def targets(self) -> list[tuple[str, int]]:
        """host:port, then each backend."""
        return [(self.host, self.port), *((b.rpartition(":")[0], int(b.rpartition(":")[2])) for b in self.backends)]

    def is_auth_service(self, port: int) -> bool:
        """``auth_service`` as configured, else whether it is SSH's port (ours, ``port``, or the host's)."""
        if self.auth_service is not None:
            return self.auth_service
        return port == 22 or self.port == 22


class LineRules:
    def effective_serial(self, base: Any) -> Any:
        """``serial`` with this line's port and whatever it sets of its own."""
        own = {key: getattr(self, key) for key in ("baudrate", "rtscts", "xonxoff", "line_rate")}
        return base.model_copy(update={"port": self.port, **{k: v for k, v in own.items() if v is not None}})


class Record:
    """A validated section: its fields as attributes. ``defaults`` fill the fields a record
    built in the runtime leaves out (set from the model by whoever validated)."""

    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(self.defaults)
        self.__dict__.update(fields)

    def model_copy(self: RecordT, update: Mapping[str, Any] | None = None) -> RecordT:
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(update or {})
        return copy

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        """The fields, nested records as dicts; ``mode="json"`` as pydantic's: addresses and
        paths as text, mapping keys as text."""
        return {name: _dumped(value, mode == "json") for name, value in self.__dict__.items() if not name.startswith("_")}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.__dict__.items() if not name.startswith("_"))
        return f"{type(self).__name__}({fields})"


def _dumped(value: Any, as_json: bool) -> Any:
    if isinstance(value, Record):
        return value.model_dump("json" if as_json else "python")
    if isinstance(value, Mapping):
        return {(str(key) if as_json else key): _dumped(item, as_json) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dumped(item, as_json) for item in value] if as_json else type(value)(_dumped(i, False) for i in value)
    if as_json and isinstance(value, (IPv4Address, IPv4Network, Path)):
        return str(value)
    return value


class Section(Record):
    """A section whose values are all it has."""


class AuthRecord(AuthRules, Record):
    pass


class PPPRecord(PPPRules, Record):
    pass


class ServiceRecord(ServiceRules, Record):
    pass


class LineRecord(LineRules, Record):
    """A line; ``_ppp_changes`` are its ``ppp`` changes as validated values, by field path."""

    _ppp_changes: list[tuple[tuple[str, ...], Any]]

    def effective_ppp(self, base: Any) -> Any:
        """The ppp section as this line's clients see it: ``base`` with the line's changes, each
        a nested field or a whole value as the model's overlay lays it."""
        for path, value in self._ppp_changes:
            base = replaced(base, path, value)
        return base


#: the record type of each model, by the model's class name; others are a :class:`Section`
RECORD_TYPES: dict[str, type[Record]] = {
    "AuthConfig": AuthRecord, "PPPConfig": PPPRecord, "ServiceConfig": ServiceRecord, "LineConfig": LineRecord,
}


# --- records as JSON: the validating child's answer --------------------------------------------------

#: the values a record holds besides JSON's own, each written as its text under its tag
_AS_TEXT: dict[str, type] = {"address": IPv4Address, "network": IPv4Network, "path": Path}
_RECORD_CLASSES: dict[str, type[Record]] = {kind.__name__: kind for kind in (Section, *RECORD_TYPES.values())}


def to_json(value: Any) -> Any:
    """``value`` (records and what they hold) as a tree of JSON values that :func:`from_json`
    turns back into equal values: JSON's own types as they are, anything else as a one-key
    object naming its kind (a mapping keeps its keys' types; a tuple stays a tuple)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [to_json(item) for item in value]
    if isinstance(value, Record):
        return {"record": [type(value).__name__, {name: to_json(item) for name, item in value.__dict__.items()}]}
    if isinstance(value, Mapping):
        return {"mapping": [[to_json(key), to_json(item)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [to_json(item) for item in value]}
    for tag, kind in _AS_TEXT.items():
        if isinstance(value, kind):
            return {tag: str(value)}
    raise TypeError(f"a configuration value of type {type(value).__name__} has no JSON form")


def from_json(tree: Any) -> Any:
    """The values :func:`to_json` wrote; ValueError for a tree it did not write."""
    if isinstance(tree, list):
        return [from_json(item) for item in tree]
    if not isinstance(tree, dict):
        return tree
    if len(tree) != 1:
        raise ValueError(f"not a tagged value: {sorted(tree)}")
    ((tag, content),) = tree.items()
    if tag == "record":
        name, fields = content
        if name not in _RECORD_CLASSES:
            raise ValueError(f"no record type {name!r}")
        record = object.__new__(_RECORD_CLASSES[name])
        record.__dict__.update({field: from_json(item) for field, item in fields.items()})
        return record
    if tag == "mapping":
        return {from_json(key): from_json(item) for key, item in content}
    if tag == "tuple":
        return tuple(from_json(item) for item in content)
    if tag in _AS_TEXT:
        return _AS_TEXT[tag](content)
    raise ValueError(f"no value kind {tag!r}")
