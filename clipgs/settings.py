"""Declarative settings: each setting is one dataclass field with its default, help text and check.

A settings group is a dataclass deriving from :class:`Settings` whose fields are made with :func:`setting`.
The help text and the check live only there: validation, the shipped ``config/mapping.yaml``, the ROS
parameter descriptors and error messages are all generated from them.

    @dataclass
    class MySettings(Settings):
        rate_hz: float = setting(2.0, "publishing rate (0: off)", at_least(0))
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from clipgs.errors import SettingsError


@dataclass(frozen=True)
class Check:
    """A validity rule for one value; ``text`` is what people read (errors, ROS additional_constraints)."""

    text: str
    test: Callable[[Any], bool]


def at_least(low: float) -> Check:
    return Check(f">= {low}", lambda v: v >= low)


def greater_than(low: float) -> Check:
    return Check(f"> {low}", lambda v: v > low)


def in_range(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Check:
    """low <= v <= high, with either end open when asked."""
    text = f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    return Check(text, lambda v: (v > low if open_low else v >= low) and (v < high if open_high else v <= high))


def one_of(choices: Iterable[str]) -> Check:
    choices = tuple(choices)
    return Check("one of " + ", ".join(choices), lambda v: v in choices)


def setting(default: Any, help: str, check: Check | None = None) -> Any:
    """A settings field: its default, a one-line help text (units in it) and an optional check."""
    return field(default=default, metadata={"help": help, "check": check})


@dataclass(frozen=True)
class SettingSpec:
    """One setting as the outside world sees it (ROS parameter, YAML line, CLI help)."""

    name: str
    default: Any
    help: str
    constraints: str  # '' when any value of the type is fine


def coerce(name: str, kind: type, value: Any) -> Any:
    """``value`` as ``kind`` (YAML and ROS give 2 where 2.0 is meant, strings from the command line), or a
    SettingsError that names the setting."""
    def fail(expected: str):
        return SettingsError(f"setting {name}: expected {expected}, got {value!r}")

    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise fail("true or false")
    if kind is int:
        if isinstance(value, bool):
            raise fail("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise fail("an integer") from None
        raise fail("an integer")
    if kind is float:
        if isinstance(value, bool):
            raise fail("a number")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise fail("a number") from None
        if not math.isfinite(out):
            raise fail("a finite number")
        return out
    if kind is str:
        if value is None or isinstance(value, (list, dict, bool)):
            raise fail("a string")
        return str(value)
    return value


class Settings:
    """Base of every settings group: fields are validated on construction, with the check's text on failure."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = coerce(f.name, type(f.default), getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            check = f.metadata.get("check")
            if check is not None and not check.test(value):
                raise SettingsError(f"setting {f.name} must be {check.text}, got {value!r}")
        self.validate()

    def validate(self) -> None:
        """Checks across fields (one field's checks are in its ``setting``); raise SettingsError."""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def specs(cls) -> list[SettingSpec]:
        return [SettingSpec(f.name, f.default, f.metadata.get("help", ""),
                            f.metadata["check"].text if f.metadata.get("check") else "") for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, ignore_unknown: bool = False):
        """Build from a flat dict. Unknown keys are an error (a typo must not be silently ignored) unless
        ``ignore_unknown`` (keys of other groups in a shared file)."""
        known = set(cls.names())
        unknown = sorted(set(values) - known)
        if unknown and not ignore_unknown:
            raise SettingsError(f"unknown {cls.__name__} setting(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def from_yaml(cls, path: str | Path, *, ignore_unknown: bool = False):
        """Read this group's keys from a flat YAML or a ROS 2 params file (see ``read_settings_file``)."""
        return cls.from_dict(read_settings_file(path), ignore_unknown=ignore_unknown)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any):
        """A validated copy with some settings changed."""
        return dataclasses.replace(self, **changes)


ROS_NODE_NAME = "clipgs_mapping"


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """The flat settings of a YAML file: flat keys, or the ROS 2 params layout
    ``clipgs_mapping: {ros__parameters: {...}}``. A file that is not such a mapping is a SettingsError."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"{path}: no such settings file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not valid YAML ({type(exc).__name__})") from None
    data = {} if data is None else data
    if isinstance(data, dict) and ROS_NODE_NAME in data:
        node = data[ROS_NODE_NAME]
        data = (node.get("ros__parameters") or {}) if isinstance(node, dict) else node
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise SettingsError(f"{path}: expected a mapping of setting names to values (flat, or under "
                            f"{ROS_NODE_NAME}: ros__parameters:)")
    return data


def split_overrides(pairs: Iterable[str], groups: Iterable[type[Settings]]) -> list[dict[str, str]]:
    """'NAME=VALUE' strings (a command line's ``--set``) -> one dict per settings group, each name in the first
    group that has it; the values stay strings (the settings coerce them). A malformed pair or a name no group
    has is a SettingsError."""
    groups = list(groups)
    out: list[dict[str, str]] = [{} for _ in groups]
    for pair in pairs:
        name, sep, value = pair.partition("=")
        owner = next((i for i, group in enumerate(groups) if name in group.names()), None)
        if not sep or owner is None:
            known = " or ".join(group.__name__ for group in groups)
            raise SettingsError(f"--set {pair!r}: expected NAME=VALUE with NAME a {known} setting")
        out[owner][name] = value
    return out
