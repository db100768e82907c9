"""Typed configuration: dataclasses filled from YAML once, loud on unknown keys and wrong types.

Usage::

    @dataclass
    class TrainConfig:
        steps: int = 1000
        lr: float = 1e-4

    cfg = load_config(TrainConfig, "config/train/default.yaml")

Nested dataclass fields are filled from nested mappings. An unknown key, a value of the wrong type or
an unreadable file raises :class:`ConfigError` whose message names the file and the key path.

A setting is described once, where it is declared: :func:`setting` puts its description and its
allowed range into the field's metadata, and :func:`describe` collects them under the dotted names that
the ROS parameters, the YAML files and the command lines use.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or mapping that does not fit its dataclass."""


@dataclasses.dataclass(frozen=True)
class SettingInfo:
    """What :func:`describe` knows of one setting: ``doc`` (its description, with units), ``range``
    ((min, max) inclusive for a number, None when any value of its type is allowed) and ``default``."""

    doc: str
    range: tuple[float, float] | None
    default: Any


def setting(default: Any = dataclasses.MISSING, *, doc: str, range: tuple[float, float] | None = None,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its one description: ``doc`` says what it does and its unit; ``range``
    ((min, max), inclusive) bounds a number; :func:`describe` reads both."""
    if not doc:
        raise ValueError("a setting needs a description")
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"doc": doc, "range": range})


def describe(cls: type, prefix: str = "") -> dict[str, SettingInfo]:
    """{dotted name: :class:`SettingInfo`} of every leaf field of config dataclass ``cls`` (nested
    dataclasses give ``group.name``; defaults are those of ``cls()``, so a group whose default differs
    from its own class's defaults reports the group's), in declaration order. A leaf field declared
    without :func:`setting` raises ValueError, so no setting goes undescribed."""
    return _describe(cls(), prefix)


def _describe(config: Any, prefix: str) -> dict[str, SettingInfo]:
    out: dict[str, SettingInfo] = {}
    for f in dataclasses.fields(config):
        name, value = f"{prefix}{f.name}", getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_describe(value, f"{name}."))
            continue
        if "doc" not in f.metadata:
            raise ValueError(f"setting '{name}' of {type(config).__name__} has no description "
                             "(declare it with setting())")
        out[name] = SettingInfo(f.metadata["doc"], f.metadata["range"],
                                list(value) if isinstance(value, tuple) else value)
    return out


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _group_default(f: dataclasses.Field) -> Any:
    """The default of a field that holds a settings group (a dataclass instance), else None."""
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        value = f.default
    return value if dataclasses.is_dataclass(value) and not isinstance(value, type) else None


def from_dict(cls: type[T], data: dict, where: str = "config", base: T | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise :class:`ConfigError`. Keys that
    ``data`` leaves out take ``base``'s values (None = the defaults of ``cls``); a group given in part starts from
    its field's default (which may differ from its own class's defaults, as :func:`describe` reports it)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        group = getattr(base, name) if base is not None else _group_default(fields[name])
        if isinstance(value, dict) and dataclasses.is_dataclass(hints[name]) and group is not None:
            kwargs[name] = from_dict(hints[name], value, f"{where}.{name}", group)
        else:
            kwargs[name] = _convert(value, hints[name], f"{where}.{name}")
    try:
        obj = dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where}: {e}") from e
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from e
    return obj


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Config dataclass or nested mapping (e.g. a YAML ``ros__parameters`` section) -> {dotted name: value}
    (ROS parameter names); tuples become lists."""
    if isinstance(config, dict):
        items = config.items()
    else:
        items = ((f.name, getattr(config, f.name)) for f in dataclasses.fields(config))
    out: dict[str, Any] = {}
    for name, value in items:
        if dataclasses.is_dataclass(value) or isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = list(value) if isinstance(value, (tuple, list)) else value
    return out


def unflatten(values: dict[str, Any]) -> dict:
    """{dotted name: value} -> nested dict, the inverse of :func:`flatten`'s naming (for :func:`from_dict`)."""
    out: dict = {}
    for name, value in values.items():
        d = out
        *parents, leaf = name.split(".")
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = value
    return out


def to_dict(obj: Any) -> dict:
    """Plain-dict form of a config dataclass (for logs and checkpoints)."""
    return dataclasses.asdict(obj)


def load_config(cls: type[T], path: str | Path) -> T:
    """Read YAML file ``path`` into dataclass ``cls``; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return from_dict(cls, data or {}, where=str(path))
