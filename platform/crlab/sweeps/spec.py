"""Sweep specs: a base experiment plus the dimensions to vary, expanded into cells.

A spec is a YAML file::

    name: crl-ratio
    base: ../experiments/tiny_coder.yaml   # relative to this file, else to the working directory
    grid:                                  # dotted config keys -> lists; the cross product is run
      data.crl_ratio: [0.0, 0.2, 0.5, 1.0]
    variants:                              # optional: a list of override sets, crossed with the grid
      - {switch.policy: never}
      - {switch.policy: fixed, switch.at_steps: [20]}
    seeds: [0]
    overrides: {}                          # fixed key=value overrides for every cell
    metric: eval/pass@1                    # optional: what the cells are judged on (summary and ablation) ...
    select: best                           # ... each run's best value of it (best) or its final one (last)
    executor: {kind: local, parallel: 1, max_retries: 2, heartbeat_grace_s: 300}   # see ExecutorConfig
    # or, one Slurm job per cell (submitit parameters under `slurm`):
    # executor: {kind: slurm, slurm: {slurm_partition: gpu, timeout_min: 1440, gpus_per_node: 1}}

Each cell is one run; its key is a hash of its resolved overrides and seed, so the same cell gets the same
key in every invocation (that is what makes reruns skip finished cells).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crlab import config as cfgmod
from crlab.errors import ConfigError
from crlab.sweeps.executors import ExecutorConfig
from crlab.sweeps.search_space import Search, parse_search
from crlab.yaml_lines import key_lines, read_yaml, reject_unknown_keys

if TYPE_CHECKING:
    from crlab.config import ExperimentConfig

SPEC_KEYS = (
    "name", "base", "grid", "variants", "seeds", "overrides", "executor", "search", "description", "metric", "select",
)  # fmt: skip


@dataclass(frozen=True)
class Cell:
    key: str  # stable hash of (overrides, seed)
    label: str  # human-readable, e.g. "data.crl_ratio=0.2 seed=0"
    overrides: dict[str, Any]  # dotted key -> value, grid values and fixed overrides
    seed: int
    config: dict[str, Any] = field(repr=False)  # the resolved config of this cell

    def override_args(self) -> list[str]:
        return [f"{k}={yaml_scalar(v)}" for k, v in self.overrides.items()] + [f"seed={self.seed}"]

    @property
    def run_name(self) -> str:
        """The cell's run (and W&B) name: its swept values with short keys, then the seed:
        ``crl_ratio=0.2 s1`` for the label ``data.crl_ratio=0.2 seed=1``."""
        parts = [part for part in self.label.split(" ") if not part.startswith("seed=")]
        short = [f"{k.rsplit('.', 1)[-1]}={v}" for k, _, v in (p.partition("=") for p in parts)]
        return " ".join([*short, f"s{self.seed}"])


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: Path
    grid: dict[str, list[Any]]
    variants: list[dict[str, Any]]
    seeds: list[int]
    overrides: dict[str, Any]
    executor: ExecutorConfig
    search: Search | None
    path: Path | None
    metric: str | None = None  # what the cells are judged on (None: the training reward, as before)
    select: str = "best"  # best | last: a run's best value of ``metric`` or its final one

    def base_config(self) -> Any:
        """The base experiment with the fixed overrides and the first seed (a search's trials start here)."""
        args = [f"{k}={yaml_scalar(v)}" for k, v in self.overrides.items()] + [f"seed={self.seeds[0]}"]
        return cfgmod.load_config(self.base, args)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "base": str(self.base), "grid": self.grid, "variants": self.variants, "seeds": self.seeds,
            "overrides": self.overrides, "executor": self.executor.to_json(),
            "search": self.search.to_json() if self.search else None, "metric": self.metric, "select": self.select,
        }  # fmt: skip


def yaml_scalar(value: Any) -> str:
    import json

    return json.dumps(value) if not isinstance(value, str) else value


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Read and check a sweep spec; ``overrides`` are ``key=value`` for spec keys (e.g. base=...).

    ``overrides=`` and ``executor=`` mappings are merged into the file's, key by key; others replace it.
    """
    path = Path(path)
    data = read_yaml(path, home="sweep files live in sweeps/")
    lines = key_lines(path)

    def where(key: str) -> str:
        return f"{path}:{lines[key]}" if key in lines else str(path)

    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in SPEC_KEYS:
            hint = f"; a config key of every cell goes in overrides={{{key}: {value}}}" if "." in key and sep else ""
            raise ConfigError(f"sweep override {item!r} must be one of {', '.join(SPEC_KEYS)}=VALUE{hint}")
        parsed = value if key in ("base", "name") else _parse(value, item)
        if key in ("overrides", "executor") and isinstance(parsed, dict) and isinstance(data.get(key), dict):
            parsed = {**data[key], **parsed}  # merged into the file's, key by key
        data[key] = parsed
    reject_unknown_keys(data, SPEC_KEYS, "sweep", where)
    base = _resolve_base(
        data.get("base"), path, where("base"), from_cli=any(o.startswith("base=") for o in overrides)
    )
    variants = _check_variants(data.get("variants") or [], where)
    grid = _check_grid(data.get("grid") or {}, where, others=bool(data.get("search") or variants))
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"seeds must be a non-empty list of integers, got {seeds!r}", where("seeds"))
    executor = ExecutorConfig.from_mapping(data.get("executor") or {}, where)
    search = parse_search(data["search"], where, _check_key) if data.get("search") is not None else None
    if search and (grid or variants or len(seeds) > 1):
        raise ConfigError(
            "a search sweep takes its cells from the search: drop 'grid' and 'variants', and give one seed",
            where("search"),
        )
    metric, select = _check_metric(data, where)
    spec = SweepSpec(
        name=str(data.get("name") or path.stem), base=base, grid=grid, variants=variants, seeds=seeds,
        overrides=dict(data.get("overrides") or {}), executor=executor, search=search, path=path,
        metric=metric, select=select,
    )  # fmt: skip
    if search is not None:
        base_cfg = spec.base_config()
        check_eval_metric(search.metric, base_cfg, "search.metric", where("search.metric"))
        check_eval_metric(search.prune_on, base_cfg, "search.prune_on", where("search.prune_on"))
    return spec


def check_eval_metric(metric: str | None, cfg: ExperimentConfig, what: str, where: str | None) -> None:
    """A held-out metric (``eval/...``) that judges runs must be one their ``eval`` section logs."""
    from crlab.config_checks import eval_metric_keys

    if not metric or not metric.startswith("eval/"):
        return
    made = eval_metric_keys(cfg.eval)
    if metric not in made:
        fix = (
            f"their eval logs {', '.join(made)}"
            if made
            else "their eval is off: set eval.source (e.g. tiny-eval)"
        )
        raise ConfigError(f"{what}: the runs never log {metric!r} ({fix})", where)


def _check_metric(data: dict[str, Any], where: Any) -> tuple[str | None, str]:
    """A grid sweep's ``metric`` (a per-step metric key) and ``select`` (best | last)."""
    from crlab.registry.entities import SELECTS

    metric, select = data.get("metric"), data.get("select", "best")
    if metric is not None and (not isinstance(metric, str) or not metric.strip()):
        raise ConfigError(
            f"metric must name a per-step metric (e.g. eval/pass@1), got {metric!r}", where("metric")
        )
    if select not in SELECTS:
        raise ConfigError(f"select must be one of {', '.join(SELECTS)}, got {select!r}", where("select"))
    if "select" in data and metric is None:
        raise ConfigError("select needs a metric to select from (e.g. metric: eval/pass@1)", where("select"))
    if data.get("search") is not None and (metric is not None or "select" in data):
        raise ConfigError(
            "a search names its objective under search: (search.metric, search.select)",
            where("metric" if metric else "select"),
        )
    return metric, select


def _parse(value: str, item: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"sweep override {item!r}: value is not valid YAML") from None


def _resolve_base(base: Any, spec_path: Path, where: str, from_cli: bool) -> Path:
    if not base:
        raise ConfigError(
            "the sweep has no 'base' experiment (e.g. base: ../experiments/tiny_coder.yaml)", where
        )
    candidates = [Path(base)] if from_cli else [spec_path.parent / base, Path(base)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"base experiment {base!r} does not exist (looked at {', '.join(map(str, candidates))})", where
    )


def _check_key(key: str, where: str) -> None:
    generic = ".".join("N" if p.isdigit() else p for p in str(key).split("."))
    if generic not in set(cfgmod.schema_keys()):
        near = cfgmod.nearest_keys(str(key))
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"key '{key}' is not in the config schema{hint}", where)


def _check_variants(variants: Any, where: Any) -> list[dict[str, Any]]:
    if not isinstance(variants, list) or not all(isinstance(v, dict) and v for v in variants):
        raise ConfigError("'variants' must be a list of non-empty mappings of config keys", where("variants"))
    for i, variant in enumerate(variants):
        for key in variant:
            _check_key(str(key), where(f"variants.{i}.{key}"))
    return [{str(k): v for k, v in variant.items()} for variant in variants]


def _check_grid(grid: Any, where: Any, others: bool) -> dict[str, list[Any]]:
    if not isinstance(grid, dict):
        raise ConfigError("'grid' must map dotted config keys to lists of values", where("grid"))
    if not grid and not others:
        raise ConfigError("the grid is empty: give at least one key with a list of values", where("grid"))
    for key, values in grid.items():
        _check_key(str(key), where(f"grid.{key}"))
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid key '{key}' needs a non-empty list of values", where(f"grid.{key}"))
    return {str(k): list(v) for k, v in grid.items()}


def expand(spec: SweepSpec) -> list[Cell]:
    """Grid x variants x seeds, each cell resolved and validated against the schema."""
    keys = list(spec.grid)
    cells = []
    for combo in itertools.product(*(spec.grid[k] for k in keys)):
        for variant in spec.variants or [{}]:
            for seed in spec.seeds:
                overrides = {**spec.overrides, **variant, **dict(zip(keys, combo, strict=True))}
                cells.append(_make_cell(spec, overrides, seed))
    return cells


def _make_cell(spec: SweepSpec, overrides: dict[str, Any], seed: int) -> Cell:
    args = [f"{k}={yaml_scalar(v)}" for k, v in overrides.items()] + [f"seed={seed}"]
    varied = set(spec.grid).union(*spec.variants) if spec.variants else set(spec.grid)
    label = " ".join(f"{k}={yaml_scalar(v)}" for k, v in overrides.items() if k in varied)
    label = f"{label} seed={seed}".strip()
    try:
        cfg = cfgmod.load_config(spec.base, args)
        check_eval_metric(spec.metric, cfg, "metric", None)
    except ConfigError as exc:
        raise ConfigError(
            f"cell [{label}]: {exc.message}", exc.where or (str(spec.path) if spec.path else None)
        ) from None
    key = cfgmod.config_hash({"base": spec.base.name, "overrides": overrides, "seed": seed})
    return Cell(key=key, label=label, overrides=overrides, seed=seed, config=cfgmod.to_dict(cfg))


def configs_of_file(path: Path, overrides: list[str]) -> list[Any]:
    """The configs a file stands for: an experiment (one), a grid sweep (its cells) or a search (its base)."""
    data = read_yaml(path)
    if "base" in data and set(data) <= set(SPEC_KEYS):
        spec = load_spec(path, overrides)
        return (
            [spec.base_config()]
            if spec.search is not None
            else [cfgmod.from_dict(c.config) for c in expand(spec)]
        )
    return [cfgmod.load_config(path, overrides)]
