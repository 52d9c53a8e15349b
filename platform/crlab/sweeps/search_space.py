"""The ``search:`` section of a sweep spec (an Optuna search), checked before anything runs.

search:
  sampler: tpe            # tpe | random (for a grid, use a grid sweep: exactly once per cell)
  seed: 0                 # the sampler's seed
  n_trials: 6
  direction: maximize     # maximize | minimize
  metric: reward/rl_mean  # the objective: the mean of this per-step metric over the run's last steps
  last_k: 5               # ... over this many steps
  # or, a held-out metric logged every eval.every steps, judged as the run's best or final value:
  # metric: eval/pass@1
  # select: best          # best | last (from the run's metric summary; not with last_k)
  prune_on: reward/rl_mean   # the intermediate metric reported to the pruner at every step
  pruner: {kind: median, n_startup_trials: 2, n_warmup_steps: 10}   # median | percentile | threshold | none
  params:                 # dotted config keys -> distributions
    data.crl_ratio: {type: float, low: 0.0, high: 0.8}
    phases.0.crl_reward_scale: {type: float, low: 0.3, high: 1.0, log: false}
    grpo.group_size: {type: categorical, choices: [4, 8]}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from crlab.errors import ConfigError
from crlab.yaml_lines import reject_unknown_keys

SEARCH_KEYS = (
    "sampler", "seed", "n_trials", "direction", "metric", "last_k", "select", "prune_on", "pruner", "params",
)  # fmt: skip


class Sampler(StrEnum):
    TPE = "tpe"
    RANDOM = "random"


class PrunerKind(StrEnum):
    MEDIAN = "median"
    PERCENTILE = "percentile"
    THRESHOLD = "threshold"
    NONE = "none"


class ParamType(StrEnum):
    FLOAT = "float"
    INT = "int"
    CATEGORICAL = "categorical"


SAMPLERS = tuple(s.value for s in Sampler)
PRUNERS = {  # a pruner's kind -> the options it takes
    PrunerKind.MEDIAN: ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"),
    PrunerKind.PERCENTILE: (
        "percentile",
        "n_startup_trials",
        "n_warmup_steps",
        "interval_steps",
        "n_min_trials",
    ),
    PrunerKind.THRESHOLD: ("lower", "upper", "n_warmup_steps", "interval_steps"),
    PrunerKind.NONE: (),
}
PARAM_KEYS = {  # a param's type -> the keys its distribution takes
    ParamType.FLOAT: ("low", "high", "log", "step"),
    ParamType.INT: ("low", "high", "log", "step"),
    ParamType.CATEGORICAL: ("choices",),
}


@dataclass(frozen=True)
class Search:
    sampler: str
    seed: int
    n_trials: int
    direction: str
    metric: str
    last_k: int
    prune_on: str | None
    pruner: dict[str, Any]
    params: dict[str, dict[str, Any]]
    select: str | None = None  # best | last of ``metric`` (its summary); None: the mean of its last_k steps

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_search(raw: Any, where: Callable[[str], str], check_key: Callable[[str, str], None]) -> Search:
    """Check ``raw`` (the spec's ``search`` mapping); ``where(dotted)`` names file:line for errors."""
    if not isinstance(raw, dict):
        raise ConfigError("'search' must be a mapping (see sweeps/crl_search.yaml)", where("search"))
    reject_unknown_keys(raw, SEARCH_KEYS, "search", where, prefix="search.")
    sampler = _choice(raw, "sampler", SAMPLERS, "tpe", where)
    direction = _choice(raw, "direction", ("maximize", "minimize"), "maximize", where)
    n_trials, last_k, seed = (
        _int(raw, k, d, where) for k, d in (("n_trials", None), ("last_k", 5), ("seed", 0))
    )
    metric = raw.get("metric")
    if not isinstance(metric, str) or not metric:
        raise ConfigError("search.metric must name a per-step metric, e.g. reward/rl_mean", where("search"))
    prune_on = raw.get("prune_on")
    if prune_on is not None and not isinstance(prune_on, str):
        raise ConfigError("search.prune_on must name a per-step metric", where("search.prune_on"))
    params = _params(raw.get("params"), where, check_key)
    return Search(
        sampler=sampler, seed=seed, n_trials=n_trials, direction=direction, metric=metric, last_k=last_k,
        prune_on=prune_on, pruner=_pruner(raw.get("pruner"), where), params=params,
        select=_select(raw, metric, direction, where),
    )  # fmt: skip


def _select(raw: dict, metric: str, direction: str, where: Callable[[str], str]) -> str | None:
    """``select: best|last``: judge a trial by its run's best or final value of ``metric``. Not with
    ``last_k`` (a mean over steps); ``best`` must point the way ``direction`` does."""
    from crlab.registry.entities import SELECTS, lower_is_better

    if "select" not in raw:
        return None
    select = raw["select"]
    if select not in SELECTS:
        raise ConfigError(
            f"search.select must be one of {', '.join(SELECTS)}, got {select!r}", where("search.select")
        )
    if "last_k" in raw:
        raise ConfigError(
            "search.select takes the run's best or final value; last_k averages its last steps: give one of them",
            where("search.last_k"),
        )
    wanted = "minimize" if lower_is_better(metric) else "maximize"
    if select == "best" and direction != wanted:
        raise ConfigError(
            f"search.direction: {direction}, but the best {metric!r} is its {'lowest' if wanted == 'minimize' else 'highest'}; "
            f"use direction: {wanted}",
            where("search.direction"),
        )
    return select


def _choice(raw: dict, key: str, valid: tuple[str, ...], default: str, where: Callable[[str], str]) -> str:
    value = raw.get(key, default)
    if value not in valid:
        raise ConfigError(
            f"search.{key} must be one of {', '.join(valid)}, got {value!r}", where(f"search.{key}")
        )
    return value


def _int(raw: dict, key: str, default: int | None, where: Callable[[str], str]) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "seed" else 1):
        raise ConfigError(f"search.{key} must be a positive integer, got {value!r}", where(f"search.{key}"))
    return value


def _pruner(raw: Any, where: Callable[[str], str]) -> dict[str, Any]:
    raw = {"kind": "none"} if raw is None else raw
    if not isinstance(raw, dict) or raw.get("kind") not in PRUNERS:
        raise ConfigError(f"search.pruner needs kind: one of {', '.join(PRUNERS)}", where("search.pruner"))
    for key in raw:
        if key != "kind" and key not in PRUNERS[raw["kind"]]:
            raise ConfigError(
                f"pruner '{raw['kind']}' takes {', '.join(PRUNERS[raw['kind']]) or 'no options'}, not '{key}'",
                where(f"search.pruner.{key}"),
            )
    return dict(raw)


def _params(raw: Any, where: Callable[[str], str], check_key: Callable[[str, str], None]) -> dict[str, dict]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("search.params must map config keys to distributions", where("search.params"))
    out = {}
    for key, dist in raw.items():
        at = where(f"search.params.{key}")
        check_key(str(key), at)
        kind = dist.get("type") if isinstance(dist, dict) else None
        if kind not in PARAM_KEYS:
            raise ConfigError(f"param '{key}' needs type: float, int or categorical", at)
        extra = set(dist) - {"type", *PARAM_KEYS[kind]}
        if extra:
            raise ConfigError(f"param '{key}' ({kind}) does not take {sorted(extra)}", at)
        if kind == ParamType.CATEGORICAL:
            if not isinstance(dist.get("choices"), list) or not dist["choices"]:
                raise ConfigError(f"param '{key}' needs a non-empty list of choices", at)
        elif (
            not all(isinstance(dist.get(b), int | float) for b in ("low", "high"))
            or dist["low"] >= dist["high"]
        ):
            raise ConfigError(f"param '{key}' needs numbers low < high", at)
        out[str(key)] = dict(dist)
    return out


def distributions(search: Search) -> dict[str, Any]:
    """Optuna distributions of the params."""
    from optuna import distributions as d

    out: dict[str, Any] = {}
    for key, p in search.params.items():
        if p["type"] == ParamType.CATEGORICAL:
            out[key] = d.CategoricalDistribution(p["choices"])
        elif p["type"] == ParamType.INT:
            out[key] = d.IntDistribution(
                int(p["low"]), int(p["high"]), log=bool(p.get("log")), step=p.get("step", 1)
            )
        else:
            out[key] = d.FloatDistribution(
                float(p["low"]), float(p["high"]), log=bool(p.get("log")), step=p.get("step")
            )
    return out


def sampler(search: Search) -> Any:
    import optuna

    if search.sampler == Sampler.RANDOM:
        return optuna.samplers.RandomSampler(seed=search.seed)
    return optuna.samplers.TPESampler(seed=search.seed)


def pruner(search: Search) -> Any:
    import optuna

    options = {k: v for k, v in search.pruner.items() if k != "kind"}
    kind = search.pruner["kind"]
    if kind == PrunerKind.MEDIAN:
        return optuna.pruners.MedianPruner(**options)
    if kind == PrunerKind.PERCENTILE:
        return optuna.pruners.PercentilePruner(**options)
    if kind == PrunerKind.THRESHOLD:
        return optuna.pruners.ThresholdPruner(**options)
    return optuna.pruners.NopPruner()
