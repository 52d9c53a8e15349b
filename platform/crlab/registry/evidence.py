"""The per-problem evaluation records of a run, as the ablation's statistics read them.

Every evaluation during training writes, per evaluated set, one registry event of kind ``eval_problems`` at
the evaluated step (step 0: the base model, evaluated before step 1), payload ``{"source": ..., "prefix":
"eval/" (the reported set) or "val/" (the selection set, ``eval.select_source``), "n": samples per problem,
"problems": [[problem id, n, c], ...]}``, where ``c`` of the ``n`` samples passed every test. They live in
the registry's ``events`` table with the run (and in the run's ``journal.jsonl``), so any figure of an
ablation can be recomputed from them. ``eval/pass@k`` of a run at a step is the mean over its problems of
the unbiased pass@k(n, c, k) (:mod:`crlab.eval.passk`).

Which step a run reports: ``at="best"`` the step of its checkpoint flagged best (chosen on ``val/`` when the
run has a selection set, else on the reported set itself); a run with no best checkpoint falls back to the
step of its best logged value of the metric. ``at="last"``: its last evaluated step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crlab.registry.entities import EventKind, Run
from crlab.registry.store import Registry

KIND = EventKind.EVAL_PROBLEMS.value  # (a plain string: a bound parameter of the query)
PASS_AT = re.compile(r"^(eval|val)/pass@([1-9][0-9]*)$")
Counts = dict[str, tuple[int, int]]  # problem id -> (n, c)


@dataclass(frozen=True)
class RunEvidence:
    """One run's per-problem counts at its reported step, and of the base model (step 0)."""

    run_id: str
    seed: Any
    step: int | None  # the reported step; None when the run has no record to report
    counts: Counts | None  # at ``step`` (None: no record there)
    base: Counts | None  # step 0 (None: the base model was not evaluated)
    selected_on: str  # "val/" (a selection set), "eval/" (the reported set itself) or "" (at=last)
    step_from: str  # "checkpoint", "metric" (no best checkpoint: best logged value) or "last"


def pass_metric(metric: str) -> tuple[str, int] | None:
    """``("eval/", 1)`` for ``eval/pass@1``; None for a metric that per-problem records cannot give."""
    found = PASS_AT.match(metric)
    return (f"{found.group(1)}/", int(found.group(2))) if found else None


def _counts(payload: dict[str, Any]) -> Counts:
    return {str(pid): (int(n), int(c)) for pid, n, c in payload.get("problems") or []}


def run_evidence(registry: Registry, run: Run, metric: str, at: str) -> RunEvidence:
    """The counts ``run`` reports for ``metric`` (a ``pass@k`` of ``eval/`` or ``val/``) at ``at``."""
    prefix = metric.split("/", 1)[0] + "/"
    steps: dict[int, Counts] = {}
    has_val = False
    for event in registry.events(run.id, kind=KIND):  # in write order: a re-evaluated step keeps its last
        payload = event.payload or {}
        has_val = has_val or payload.get("prefix") == "val/"
        if payload.get("prefix") == prefix and event.step is not None:
            steps[int(event.step)] = _counts(payload)
    if at == "last":
        step, step_from, selected_on = (max(steps) if steps else None), "last", ""
    else:
        best = registry.best_checkpoint(run.id)
        step_from = "checkpoint" if best is not None else "metric"
        step = best.step if best is not None else _best_metric_step(registry, run.id, metric)
        selected_on = "val/" if has_val else prefix
    return RunEvidence(
        run.id, run.config.get("seed"), step, steps.get(step) if step is not None else None, steps.get(0),
        selected_on, step_from,
    )  # fmt: skip


def _best_metric_step(registry: Registry, run_id: str, metric: str) -> int | None:
    for summary in registry.summaries(run_id):
        if summary.key == metric:
            return summary.max_step  # pass@k: higher is better
    return None


def pool_by_seed(items: Iterable[tuple[Any, Counts]]) -> dict[Any, Counts]:
    """Counts of several runs per seed, pooled: per problem, the sums of n and of c over the runs of a seed
    (one run per seed, as a sweep has, is kept as it is)."""
    pooled: dict[Any, Counts] = {}
    for seed, counts in items:
        into = pooled.setdefault(seed, {})
        for pid, (n, c) in counts.items():
            had_n, had_c = into.get(pid, (0, 0))
            into[pid] = (had_n + n, had_c + c)
    return pooled
