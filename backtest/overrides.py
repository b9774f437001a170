"""A backtest's overrides: lifecycle thresholds (`Policy`) and playbook settings, from a
policy file (JSON or TOML) and `KEY=VALUE` pairs, each key routed to where it belongs."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.kit.settings import PlaybookSettings
from laer_domain.policy import Policy

SECTIONS = {"policy": "policy", "playbook": "playbook", "playbooks": "playbook"}
# fixed by the simulator: a playbook day is a day of event time, the clock is simulated
FIXED = frozenset({"day_seconds", "clock"})


class BadOverride(ValueError):
    """An override naming no setting, or with a value the setting refuses."""


@dataclass
class Overrides:
    """Policy thresholds and playbook settings to replay with."""

    policy: dict[str, Any] = field(default_factory=dict)
    playbook: dict[str, Any] = field(default_factory=dict)

    def put(self, key: str, value: Any) -> None:
        """Route one setting to the policy or the playbook settings by its name."""
        if key in Policy.model_fields:
            self.policy[key] = value
        elif key in PlaybookSettings.model_fields and key not in FIXED:
            self.playbook[key] = value
        else:
            raise BadOverride(f"{key!r} is neither a policy threshold nor a playbook setting")

    def merged(self, other: Overrides) -> Overrides:
        """These overrides with `other`'s on top."""
        return Overrides({**self.policy, **other.policy}, {**self.playbook, **other.playbook})

    def build_policy(self, base: Policy | None = None) -> Policy:
        """The policy with these thresholds (validated)."""
        values = {**(base or Policy()).model_dump(), **self.policy}
        try:
            return Policy.model_validate(values)
        except ValueError as exc:
            raise BadOverride(str(exc)) from None

    def check(self) -> None:
        """Validate both parts now, before anything runs."""
        self.build_policy()
        try:
            PlaybookSettings(**self.playbook)
        except ValueError as exc:
            raise BadOverride(str(exc)) from None

    def as_dict(self) -> dict[str, Any]:
        """For summary.json."""
        return {"policy": {k: str(v) for k, v in self.policy.items()},
                "playbook": {k: str(v) for k, v in self.playbook.items()}}


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a plain string: pydantic converts it (times, decimals, ...)


def from_pairs(pairs: Sequence[str]) -> Overrides:
    """`KEY=VALUE` pairs, e.g. `frequency_cap=3`, `renewal_window_days=120`."""
    out = Overrides()
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadOverride(f"{pair!r}: expected KEY=VALUE")
        out.put(key.strip().replace("-", "_"), _parse_value(value.strip()))
    return out


def from_mapping(data: Mapping[str, Any]) -> Overrides:
    """A policy file's content: flat keys, or `policy` and `playbook` sections."""
    out = Overrides()
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, Mapping):
            for inner, v in value.items():
                out.put(inner, v)
        else:
            out.put(key, value)
    return out


def from_file(path: Path) -> Overrides:
    """A policy file, TOML (`.toml`) or JSON."""
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    if not isinstance(data, dict):
        raise BadOverride(f"{path}: expected a table of settings")
    return from_mapping(data)
