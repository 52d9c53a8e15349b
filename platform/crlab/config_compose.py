"""How a config is composed with OmegaConf, and how its errors are told: the unknown key with the nearest
valid ones, the wrong type with the expected one, each with the file and line or the override it came from.
:func:`crlab.config.load_config` is the entry point; the schema itself lives in :mod:`crlab.config`."""

from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from crlab.errors import ConfigError
from crlab.yaml_lines import dates_as_text


def schema_keys(cls: type, prefix: str = "") -> list[str]:
    """All dotted keys of the schema (list items appear as ``phases.0.name``-style ``phases.N.name``)."""
    keys: list[str] = []
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if is_dataclass(default):
            keys += schema_keys(type(default), key + ".")
        elif isinstance(default, list) and default and is_dataclass(default[0]):
            keys += schema_keys(type(default[0]), key + ".N.")
        else:
            keys.append(key)
    return keys


def nearest_keys(key: str, schema: type, n: int = 3) -> list[str]:
    """The valid schema keys closest to ``key`` (for 'did you mean' messages)."""
    generic = ".".join("N" if part.isdigit() else part for part in key.split("."))
    valid = schema_keys(schema)
    close = difflib.get_close_matches(generic, valid, n=n, cutoff=0.5)
    leaf = generic.rsplit(".", 1)[-1]
    close += [k for k in valid if k.rsplit(".", 1)[-1] == leaf and k not in close]
    return close[:n]


def compose(
    schema: type, path: str | Path | None, overrides: list[str] | tuple[str, ...], recipe: dict
) -> DictConfig:
    """The schema's defaults, then ``recipe``, the YAML file at ``path`` and the ``key=value`` overrides."""
    cfg = OmegaConf.merge(OmegaConf.structured(schema), recipe)
    if path is not None:
        cfg = _merge_file(cfg, Path(path))
    for item in overrides:
        cfg = _merge_override(cfg, item)
    return cfg


def _merge_file(cfg: DictConfig, path: Path) -> DictConfig:
    from crlab.yaml_lines import key_lines, read_yaml

    data = dates_as_text(read_yaml(path))
    lines = key_lines(path)
    try:
        return OmegaConf.merge(cfg, data)
    except OmegaConfBaseException as exc:
        key = _locate_key(_error_key(exc), getattr(exc, "value", None), data)
        where = f"{path}:{lines[key]}" if key in lines else str(path)
        raise ConfigError(_explain(exc, key, OmegaConf.get_type(cfg)), where=where) from None


def _merge_override(cfg: DictConfig, item: str) -> DictConfig:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value (e.g. grpo.lr=2e-6)", where="command line")
    key, _, raw = item.partition("=")
    try:
        value = dates_as_text(yaml.safe_load(raw)) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    _check_list_index(cfg, key.strip(), item)
    cfg = cfg.copy()
    try:
        OmegaConf.update(cfg, key.strip(), value, merge=True)
    except (OmegaConfBaseException, IndexError, KeyError, AttributeError) as exc:
        err_key = _error_key(exc) if isinstance(exc, OmegaConfBaseException) else ""
        schema = OmegaConf.get_type(cfg)
        raise ConfigError(_explain(exc, err_key or key.strip(), schema), where=f"override {item!r}") from None
    return cfg


def _locate_key(key: str, value: Any, data: dict[str, Any]) -> str:
    """OmegaConf reports only the leaf key for errors inside list items; find the full dotted key."""
    if "." in key or key in data:
        return key
    for name, items in data.items():
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, dict) and key in item and (value is None or item[key] == value):
                    return f"{name}.{i}.{key}"
    return key


def _check_list_index(cfg: DictConfig, key: str, item: str) -> None:
    node: Any = cfg
    for i, part in enumerate(key.split(".")):
        if OmegaConf.is_list(node) and part.isdigit() and int(part) >= len(node):
            where = ".".join(key.split(".")[:i])
            raise ConfigError(
                f"'{where}' has {len(node)} entries, so index {part} does not exist (indices start at 0)",
                where=f"override {item!r}",
            )
        if not OmegaConf.is_config(node) or (OmegaConf.is_dict(node) and part not in node):
            return
        node = node[int(part)] if OmegaConf.is_list(node) else node[part]


def _error_key(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or ""
    return str(key).replace("[", ".").replace("]", "")


def _explain(exc: Exception, key: str, schema: type) -> str:
    first = str(exc).split("\n")[0]
    if isinstance(exc, IndexError) or "out of range" in first:
        return f"'{key}': list index out of range ({first})"
    if "not in struct" in first or first.startswith("Key '") or type(exc).__name__ == "ConfigAttributeError":
        near = nearest_keys(key, schema)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        return f"unknown config key '{key}'{hint}"
    return f"bad value for '{key}': {first}"
