"""The configuration a server runs on, validated in a short-lived child process.

``pyslirp serve`` (and each reload) runs ``python -m pyslirp.config_snapshot`` with the config file
and the command line's overrides. The child loads and validates them with the pydantic models of
:mod:`pyslirp.config`, environment included, and writes back the result as records
(:mod:`pyslirp.config_records`) in JSON, with the configuration's warnings (JSON, not pickle:
the server's memory need not hold the pickle machinery, 0.6 MB); a configuration it refuses
comes back as its message, exit status :data:`REFUSED`. The server never imports pydantic, which
would hold about 15 MB of its memory for as long as it runs.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pyslirp.config_records import RECORD_TYPES, ConfigError, Record, Section, ServiceRecord, from_json, to_json

#: the child's exit status for a configuration it refuses; the message is its standard error
REFUSED = 2


class Validation:
    """The child validating a configuration: started at once, so that the caller can go on (import
    the runtime) meanwhile; :meth:`result` waits for its answer."""

    def __init__(self, path: Path | None, overrides: Mapping[str, Any]) -> None:
        request = json.dumps({"path": None if path is None else str(path), "overrides": overrides})
        self.child = subprocess.Popen(
            [sys.executable, "-m", "pyslirp.config_snapshot", request],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )

    def result(self) -> tuple[Record, list[str]]:
        """The configuration as ``load_config(path, overrides)`` makes it, as records, and its
        warnings; ConfigError with the validation's message if it is refused."""
        answer, errors = self.child.communicate()
        problems = errors.decode(errors="replace").strip()
        if self.child.returncode == REFUSED:
            raise ConfigError(problems)
        if self.child.returncode != 0:
            last = problems.splitlines()[-1] if problems else "no message"
            raise ConfigError(f"the configuration could not be validated: the validating process exited "
                              f"with status {self.child.returncode}: {last}")
        if problems:  # what the child printed besides its answer (a library's warning): not ours to drop
            print(problems, file=sys.stderr)
        try:
            snapshot = from_json(json.loads(answer))
        except Exception as exc:  # not what main() writes: a broken installation
            raise ConfigError(f"the configuration could not be validated: the validating process "
                              f"answered {len(answer)} bytes that are no configuration ({exc})") from None
        ServiceRecord.defaults = snapshot["service_defaults"]
        return snapshot["config"], snapshot["warnings"]


def load_validated(path: Path | None, overrides: Mapping[str, Any]) -> tuple[Record, list[str]]:
    """:meth:`Validation.result`, waited for now."""
    return Validation(path, overrides).result()


def snapshot(config: Any) -> Record:
    """A validated :class:`~pyslirp.config.PyslirpConfig` as records."""
    top = records(config)
    for line_record, line in zip(top.lines, config.lines):
        line_record._ppp_changes = ppp_changes(line, config.ppp)
    return top


def records(value: Any) -> Any:
    """``value`` with each pydantic model in it turned into its record."""
    fields = getattr(type(value), "model_fields", None)
    if fields is not None:
        record = object.__new__(RECORD_TYPES.get(type(value).__name__, Section))
        record.__dict__.update({name: records(getattr(value, name)) for name in fields})
        return record
    if isinstance(value, dict):
        return {key: records(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(records(item) for item in value)
    return value


def ppp_changes(line: Any, base: Any) -> list[tuple[tuple[str, ...], Any]]:
    """A line's changes to the ppp section ``base`` as (field path, validated value): a nested
    section's changes field by field, anything else whole, as the model's overlay lays them."""
    effective = line.effective_ppp(base)
    changes = dict(line.ppp)
    if line.peer_ip is not None:
        changes["peer_ip"] = line.peer_ip
    found = []
    for path in _leaf_paths(changes, base, ()):
        value = effective
        for name in path:
            value = getattr(value, name)
        found.append((path, records(value)))
    return found


def _leaf_paths(changes: Mapping[str, Any], section: Any, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for key, value in changes.items():
        current = getattr(section, key, None)
        if isinstance(value, Mapping) and hasattr(type(current), "model_fields"):
            yield from _leaf_paths(value, current, (*prefix, key))
        else:
            yield (*prefix, key)


def main(argv: list[str]) -> int:
    """The child: validate what ``argv[0]`` (JSON: path, overrides) names, answer on stdout."""
    from pyslirp.config import load_config
    from pyslirp.config_warnings import config_warnings

    request = json.loads(argv[0])
    answer_to = sys.stdout.buffer
    with contextlib.redirect_stdout(sys.stderr):  # what else prints goes with the messages, not the answer
        try:
            path = None if request["path"] is None else Path(request["path"])
            config = load_config(path, request["overrides"])
            answer = {
                "config": snapshot(config),
                "warnings": config_warnings(config),
                "service_defaults": records(ServiceRecord.defaults),
            }
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return REFUSED
    answer_to.write(json.dumps(to_json(answer)).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
