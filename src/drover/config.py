"""Typed configs: dataclasses loaded from YAML, with `key=value` overrides.

Each stage has one dataclass that holds every default (no `cfg.get(key, default)`
scattered through code). `load_config(SFTConfig, "recipe.yaml", ["lr=1e-5"])` merges
the file and the overrides, checks every key and type, and names the offending key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from drover.errors import ConfigError, did_you_mean

C = TypeVar("C")


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=1e-5` -> (["a", "b"], 1e-05); values are parsed as YAML scalars/lists.

    `key=@file.yaml` takes the value from a YAML file: the file's `key` entry if it has
    one at the top level, else the whole file (e.g. `mixture=@recipes/train/tulu-human-gpt.yaml`).
    """
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key=value")
    if raw.startswith("@"):
        data = read_yaml(raw[1:])
        last = key.strip().split(".")[-1]
        return key.strip().split("."), data[last] if last in data else data
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    from drover.inputs import read_text

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    text = read_text(path, "a YAML config file")
    if not text.strip():
        raise ConfigError(f"{path}: empty file: expected a mapping of config keys")
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def merge_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = dict(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
            child = dict(child)
            node[key] = child
            node = child
        node[keys[-1]] = value
    return data


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None,
                section: str | None = None) -> C:
    """Build `cls` from an optional YAML file (or one `section` of it) and overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path)
        if section is not None:
            data = data.get(section) or {}
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: section {section!r} must be a mapping")
    data = merge_overrides(data, overrides or [])
    return from_dict(cls, data, where=str(path) if path else "config")


def split_overrides(items: list[str | None]) -> tuple[list[str], list[str]]:
    """Positional arguments as (values, key=value overrides): `lr=1e-5` is an override unless
    a file of that name exists (commands whose positionals are paths take both)."""
    values, overrides = [], []
    for item in items:
        if item is None:
            continue
        key = item.partition("=")[0]
        is_override = "=" in item and key.replace(".", "_").isidentifier() and not Path(item).exists()
        (overrides if is_override else values).append(item)
    return values, overrides


def stage_config(cls: type[C], path: str | Path | None, flags: dict[str, Any], overrides: list[str] | None = None,
                 where: str = "command line") -> C:
    """A stage's config from `--config FILE.yaml`, then its flags (those given: not None),
    then `key=value` overrides: the one way every stage's command line becomes its config."""
    data = read_yaml(path) if path else {}
    for key, value in flags.items():
        if value is None:
            continue
        known = data.get(key)
        data[key] = {**known, **value} if isinstance(known, dict) and isinstance(value, dict) else value
    return from_dict(cls, merge_overrides(data, list(overrides or [])), where=str(path) if path else where)


def from_dict(cls: type[C], data: dict[str, Any], where: str = "config") -> C:
    """Recursively build a dataclass from plain data, validating keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, fields)}; "
                              f"valid keys: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(hints[key], value, f"{where}: {key}")
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if isinstance(value, bool) and value not in args:
            # YAML 1.1 reads no/off/yes/on as booleans: `mixed_precision=no` means the string
            spelled = [a for a in args if isinstance(a, str) and a.lower() in
                       (("no", "off", "false") if not value else ("yes", "on", "true"))]
            if len(spelled) == 1:
                return spelled[0]
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}"
                              f"{did_you_mean(str(value), [str(a) for a in args])}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value or {}, where)
    if origin in (list, tuple):
        if value is None:
            value = []
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        vtype = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(vtype, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def to_dict(obj: Any) -> Any:
    """A dataclass config as plain data (for config.yaml in the run directory)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)


def config_hash(obj: Any) -> str:
    """A stable short hash of a resolved config, to tell whether a stage is up to date."""
    import hashlib
    import json

    blob = json.dumps(to_dict(obj), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
