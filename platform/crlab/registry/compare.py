"""``platform runs compare``: two or more runs side by side, read from the registry.

:func:`compare_runs` gathers, for the runs named (ids or unique prefixes, in the order given):

- **config**: the flattened config keys (dotted, as queries name them: ``data.crl_ratio``,
  ``phases.0.crl_reward_scale``; a list of plain values, such as ``tracking.tags``, is one value) whose
  values differ between the runs, one value per run (``None`` where a run's config lacks the key);
- **metrics**: each metric key's summary per run (last, min, max, best, each with its step, and n), from
  the registry's metric summaries (never the metric rows); ``None`` where a run never logged the key;
- **events**: every event but checkpoints (phase switches with their step, resumes, preemptions, the run
  a run reproduces), in each run's order.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from crlab.errors import RegistryError
from crlab.registry.entities import EventKind, MetricSummary, Run
from crlab.registry.store import Registry

HIDDEN_EVENTS = (EventKind.CHECKPOINT,)  # one per save: the runs' checkpoints are in `runs show`
_MISSING = object()


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "p": [{"x": 2}], "t": ["u"]}`` -> ``{"a.b": 1, "p.0.x": 2, "t": ["u"]}``: dicts
    and lists of dicts are walked, any other value (a list of plain values too) is a leaf."""
    walk = isinstance(value, dict) or (
        isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
    )
    if not walk:
        return {prefix: value} if prefix else {}
    items = value.items() if isinstance(value, dict) else enumerate(value)
    out: dict[str, Any] = {}
    for key, inner in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(inner, dict) and not inner:
            out[name] = {}
        else:
            out.update(flatten(inner, name))
    return out


def config_diff(configs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The flattened keys whose values are not the same in every config, sorted; ``None`` where absent."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat))
    diff = {}
    for key in keys:
        values = [f.get(key, _MISSING) for f in flat]
        if any(v != values[0] for v in values[1:]):
            diff[key] = [None if v is _MISSING else v for v in values]
    return diff


def summary_json(summary: MetricSummary) -> dict[str, Any]:
    out = summary.to_json()
    del out["run_id"], out["key"]
    return {**out, "best": summary.best, "best_step": summary.best_step}


def resolve_runs(registry: Registry, refs: Sequence[str]) -> list[Run]:
    """The runs named (ids or unique prefixes), each once, in order; two or more of them."""
    runs: list[Run] = []
    for ref in refs:
        run = registry.get_run(ref)
        if run.id not in {r.id for r in runs}:
            runs.append(run)
    if len(runs) < 2:
        raise RegistryError(f"compare needs two or more different runs; got {', '.join(refs) or 'none'}")
    return runs


def compare_runs(
    registry: Registry, refs: Sequence[str], metrics: Sequence[str] | None = None
) -> dict[str, Any]:
    """The comparison of the runs ``refs`` (see the module docstring) as plain JSON-able data. ``metrics``
    restricts the metric keys; a key that none of the runs logged is an error naming the nearest ones."""
    runs = resolve_runs(registry, refs)
    summaries = [{s.key: s for s in registry.summaries(r.id)} for r in runs]
    logged = sorted(set().union(*summaries))
    keys = list(dict.fromkeys(metrics)) if metrics else logged
    for key in keys:
        if key not in logged:
            near = difflib.get_close_matches(key, logged, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(near)}?" if near else f"they logged {len(logged)} keys"
            raise RegistryError(f"--metrics {key!r}: none of these runs logged it; {hint}")
    events = [
        {"run": r.id, **e.to_json()}
        for r in runs
        for e in registry.events(r.id)
        if e.kind not in HIDDEN_EVENTS
    ]
    for event in events:
        event.pop("run_id")
    return {
        "runs": [_run_json(r) for r in runs],
        "config": config_diff([r.config for r in runs]),
        "metrics": {k: [summary_json(s[k]) if k in s else None for s in summaries] for k in keys},
        "events": events,
    }


def _run_json(run: Run) -> dict[str, Any]:
    return {
        "id": run.id, "name": run.name, "status": str(run.status), "sweep_id": run.sweep_id,
        "git_commit": run.git_commit, "reproduces": run.reproduces,
        "created_at": run.created_at.isoformat() if run.created_at else None,
    }  # fmt: skip
