"""Recipes: named presets of config values, applied under an experiment's own keys.

``recipe: platform`` (the default) is the schema's defaults alone. ``recipe: authors`` adds
``authors.yaml``: every knob where the platform's default differs from the authors' released run
(TIGER-AI-Lab/Critique-Coder on verl) and that the platform can switch, set to the authors' value.
:func:`crlab.config.load_config` merges a recipe after the schema defaults and before the experiment
file and the command-line overrides, so those still win. docs/fidelity.md lists each knob.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from crlab.errors import ConfigError

DEFAULT = "platform"


def names() -> list[str]:
    """The recipes there are: ``platform`` and one per YAML file shipped here."""
    shipped = sorted(
        f.name[: -len(".yaml")] for f in resources.files(__name__).iterdir() if f.name.endswith(".yaml")
    )
    return [DEFAULT, *shipped]


def overlay(name: str) -> dict[str, Any]:
    """The config values ``name`` sets (empty for ``platform``); ConfigError for an unknown recipe."""
    if name == DEFAULT:
        return {}
    if name not in names():
        raise ConfigError(f"recipe: unknown recipe {name!r}; valid: {', '.join(names())}")
    text = (resources.files(__name__) / f"{name}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text) or {}
