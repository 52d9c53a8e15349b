"""Read YAML with errors that name the file and line, and map dotted keys to the lines that set them."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import yaml

from crlab.errors import ConfigError


def reject_unknown_keys(
    mapping: dict[str, Any], valid: tuple[str, ...], what: str, where: Any, prefix: str = ""
) -> None:
    """A ConfigError at the first key of ``mapping`` not in ``valid``; ``where(dotted)`` names file:line."""
    for key in mapping:
        if key not in valid:
            raise ConfigError(
                f"unknown {what} key '{key}'; valid keys: {', '.join(valid)}", where(f"{prefix}{key}")
            )


def read_yaml(path: Path, home: str = "experiments live in experiments/") -> dict[str, Any]:
    """Parse a YAML mapping; a missing file (said with ``home``, where such files live), bad syntax or a
    non-mapping top level is a ConfigError."""
    if not path.is_file():
        raise ConfigError(f"no such file (check the path; {home})", where=str(path))
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        raise ConfigError(f"invalid YAML: {problem}", where=where) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping of keys at the top level, got {type(data).__name__}", str(path)
        )
    return data


def key_lines(path: Path) -> dict[str, int]:
    """Dotted key -> 1-based line where it is written (list items as ``phases.0.name``)."""
    try:
        root = yaml.compose(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    out: dict[str, int] = {}
    _walk(root, "", out)
    return out


def _walk(node: Any, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            out[key] = key_node.start_mark.line + 1
            _walk(value_node, key + ".", out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{prefix}{i}"
            out[key] = item.start_mark.line + 1
            _walk(item, key + ".", out)


def dates_as_text(node: Any) -> Any:
    """YAML reads ``2024-08-01`` as a date; the schema keeps dates as text (``eval.since: 2024-08-01``)."""
    if isinstance(node, dict):
        return {k: dates_as_text(v) for k, v in node.items()}
    if isinstance(node, list):
        return [dates_as_text(v) for v in node]
    return node.isoformat() if isinstance(node, date) else node


def where_set(key: str, path: str | Path | None, overrides: list[str] | tuple[str, ...]) -> str | None:
    """Where the value a cross-field check names was set: the last override of that key (or of a section
    holding it), else its line in the file (or its section's line), else nowhere (a schema default)."""
    for item in reversed(overrides):
        set_key = item.partition("=")[0].strip()
        if key == set_key or key.startswith(set_key + "."):
            return f"override {item!r}"
    if path is None:
        return None
    lines = key_lines(Path(path))
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in lines:
            return f"{path}:{lines['.'.join(parts[:end])]}"
    return None
