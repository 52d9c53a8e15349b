"""An ablation table with its uncertainty: intervals, paired tests against a baseline, the base model's row
and the sweep's power, from the runs' per-problem evaluation records (:mod:`crlab.registry.evidence`).

The statistics are :mod:`crlab.stats` (the exact procedure is in its docstring). What this module decides:

- a row's figures come from its runs' counts at the reported step (``best``: the best checkpoint; ``last``);
  runs of one seed in a row are pooled (sums of n and c per problem), so a row is a (seeds, problems)
  matrix of pass@k per problem, on the problems every one of its seeds evaluated. Its ``mean`` is the mean
  over seeds, ``std`` the sample std over seeds of each seed's mean, ``n`` its seeds;
- the baseline (``--baseline KEY=VALUE``; default: the first value of the first swept key) is compared
  within each combination of the other ``--by`` keys; a difference pairs the seeds both rows have and the
  problems all of them evaluated; Holm's correction runs over every row that has a p-value;
- the ``base`` row is the step-0 evaluation of the base model, pooled per seed over all the table's runs of
  that seed; each row's ``gain`` is its paired difference from it;
- a row with a run that has no records (older runs), or a metric that is not a ``pass@k``, keeps the
  summary's mean and std with the interval columns empty, and a note says why.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import yaml

from crlab import stats
from crlab.errors import CrlabError
from crlab.eval.passk import pass_at_k
from crlab.registry.ablation import Ablation, AblationRow, swept_keys
from crlab.registry.evidence import Counts, RunEvidence, pass_metric, pool_by_seed, run_evidence
from crlab.registry.store import Registry

Pooled = dict[Any, Counts]  # seed -> problem id -> (n, c)
METHOD = (
    "95% CI: two-level bootstrap (seeds, then problems; {b} resamples, numpy default_rng({s})); p: two-sided "
    "t-test of the seed means of the paired differences (S - 1 degrees of freedom; with one seed, a sign-flip "
    "permutation test over problems), Holm-adjusted; power: the t-test's quantiles (crlab.stats)"
)


def with_uncertainty(
    registry: Registry, result: Ablation, baseline: str | None = None, delta: float | None = None
) -> Ablation:
    """``result`` with intervals, paired tests, the base row and the sweep's power (the smallest difference
    it detects; with ``delta``, also the seeds that difference needs), wherever the runs' per-problem
    records allow."""
    key, value = _baseline(registry, result, baseline)  # a bad --baseline is an error even without records
    pk = pass_metric(result.metric)
    if pk is None:
        why = f"no intervals: {result.metric} is not a pass@k of eval/ or val/ (per-problem records)"
        return replace(result, notes=[why])
    found = {r.id: run_evidence(registry, r, result.metric, result.at) for row in result.rows for r in
             [registry.get_run(i) for i in row.runs]}  # fmt: skip
    cells = [_pooled(row, found) for row in result.rows]
    notes = _missing(result, found, cells)
    if all(c is None for c in cells):
        return replace(result, notes=notes)
    k = pk[1]
    base = _base(found, k)
    rows = [_row(row, cell, k) for row, cell in zip(result.rows, cells, strict=True)]
    comparisons = _compare(result, rows, cells, key, value, k)
    rows = _holm(rows)
    rows = [_gain(r, c, base, k) for r, c in zip(rows, cells, strict=True)]
    notes = [METHOD.format(b=stats.RESAMPLES, s=stats.SEED), *notes]
    notes += _notes(result, found, cells, base, key, value, comparisons)
    return replace(
        result, rows=rows, base=base[0] if base else None, baseline={"key": key, "value": value},
        notes=notes, power=power_of(comparisons, delta),
    )  # fmt: skip


def _missing(result: Ablation, found: dict[str, RunEvidence], cells: list[Pooled | None]) -> list[str]:
    """A note naming the runs without per-problem records at their reported step, if any."""
    missing = sorted(i for row, c in zip(result.rows, cells, strict=True) if c is None for i in row.runs
                     if found[i].counts is None)  # fmt: skip
    if not missing:
        return []
    shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    return [
        f"no intervals for the rows of run(s) {shown}: no per-problem record (eval_problems) at the reported "
        f"step ({result.at}); runs made before those records show mean and std only"
    ]


def _baseline(registry: Registry, result: Ablation, spec: str | None) -> tuple[str, Any]:
    if spec is None:
        key = result.by[0]
        grid = registry.get_sweep(result.sweep).spec.get("grid") or {}
        values = [r.values[0] for r in result.rows]
        first = (grid.get(key) or [None])[0] if key in swept_keys({"grid": grid}) else None
        return key, first if first in values else (values[0] if values else None)
    key, sep, text = spec.partition("=")
    key = key.strip()
    if not sep or key not in result.by:
        raise CrlabError(f"--baseline {spec!r}: expected KEY=VALUE with KEY one of {', '.join(result.by)}")
    at = result.by.index(key)
    value = yaml.safe_load(text)
    for row in result.rows:
        if row.values[at] == value or json.dumps(row.values[at]) == text.strip():
            return key, row.values[at]
    shown = ", ".join(sorted({json.dumps(r.values[at]) for r in result.rows}))
    raise CrlabError(f"--baseline {spec!r}: no row has {key}={text.strip()} (values: {shown})")


def _pooled(row: AblationRow, found: dict[str, RunEvidence]) -> Pooled | None:
    if any(found[i].counts is None for i in row.runs):
        return None
    return pool_by_seed((found[i].seed, found[i].counts) for i in row.runs)


def _matrix(pooled: Pooled, seeds: list[Any], problems: list[str], k: int) -> np.ndarray:
    fewest = min(pooled[s][p][0] for s in seeds for p in problems)
    if fewest < k:
        raise CrlabError(f"pass@{k} needs at least {k} samples per problem; the records have {fewest}: "
                         "pick a smaller k with --metric")  # fmt: skip
    return np.array([[pass_at_k(*pooled[s][p], k) for p in problems] for s in seeds])  # (S, P)


def _common(*cells: Pooled) -> tuple[list[Any], list[str]]:
    """The seeds every cell has, and the problems every one of those seeds evaluated in every cell."""
    seeds = sorted(set.intersection(*(set(c) for c in cells)), key=lambda s: (str(type(s)), s))
    problems = set.intersection(*(set(c[s]) for c in cells for s in seeds)) if seeds else set()
    return seeds, sorted(problems)


def _summary(cell: Pooled, k: int) -> dict[str, Any] | None:
    """A cell's mean over seeds, their std, the seed count and the 95% interval; None without problems."""
    seeds, problems = _common(cell)
    if not problems:
        return None
    x = _matrix(cell, seeds, problems, k)  # (S, P)
    means = x.mean(axis=1)  # (S,)
    std = float(means.std(ddof=1)) if len(seeds) > 1 else None
    return {"mean": float(means.mean()), "std": std, "n": len(seeds), "ci95": stats.bootstrap_ci(x)}


def _row(row: AblationRow, cell: Pooled | None, k: int) -> AblationRow:
    found = _summary(cell, k) if cell is not None else None
    return row if found is None else replace(row, **found)


def _base(found: dict[str, RunEvidence], k: int) -> tuple[AblationRow, Pooled] | None:
    runs = sorted(i for i, e in found.items() if e.base is not None)
    if not runs:
        return None
    pooled = pool_by_seed((found[i].seed, found[i].base) for i in runs)
    summary = _summary(pooled, k)
    if summary is None:
        return None
    return AblationRow(("base",), runs=tuple(runs), **summary), pooled


def _paired(a: Pooled, b: Pooled, k: int) -> tuple[stats.Paired, np.ndarray] | None:
    seeds, problems = _common(a, b)
    if not problems:
        return None
    x_a, x_b = _matrix(a, seeds, problems, k), _matrix(b, seeds, problems, k)  # (S, P) each
    return stats.paired(x_a, x_b), x_a - x_b


def _compare(
    result: Ablation, rows: list[AblationRow], cells: list[Pooled | None], key: str, value: Any, k: int
) -> list[np.ndarray]:
    """Fill delta, its interval and p in ``rows`` (in place) against each row's baseline; returns the
    paired differences (S, P) of every comparison made (for the power)."""
    at = result.by.index(key)
    others = lambda values: values[:at] + values[at + 1 :]  # noqa: E731
    index = {others(r.values): i for i, r in enumerate(rows) if r.values[at] == value}
    diffs = []
    for i, row in enumerate(rows):
        j = index.get(others(row.values))
        if j == i:
            rows[i] = replace(row, baseline=True)
            continue
        if j is None or cells[i] is None or cells[j] is None:
            continue
        done = _paired(cells[i], cells[j], k)
        if done is not None:
            paired, d = done
            rows[i] = replace(row, delta=paired.delta, delta_ci95=paired.ci95, p=paired.p)
            diffs.append(d)
    return diffs


def _holm(rows: list[AblationRow]) -> list[AblationRow]:
    adjusted = stats.holm([r.p for r in rows])
    return [
        r if q is None else replace(r, p_holm=q, significant=q < stats.ALPHA)
        for r, q in zip(rows, adjusted, strict=True)
    ]


def _gain(
    row: AblationRow, cell: Pooled | None, base: tuple[AblationRow, Pooled] | None, k: int
) -> AblationRow:
    if cell is None or base is None:
        return row
    done = _paired(cell, base[1], k)
    return row if done is None else replace(row, gain=done[0].delta, gain_ci95=done[0].ci95)


def power_of(diffs: list[np.ndarray], delta: float | None) -> dict[str, Any]:
    """The sweep's power, from the variance components of its paired differences pooled over the
    comparisons (their mean): the smallest difference it detects, and the seeds ``delta`` needs."""
    if not diffs:
        return {"error": "no paired difference to measure the spread from (one row, or no records)"}
    parts = [stats.variance_components(d) for d in diffs]
    var_seed, var_problem = float(np.mean([p[0] for p in parts])), float(np.mean([p[1] for p in parts]))
    seeds, problems = min(d.shape[0] for d in diffs), min(d.shape[1] for d in diffs)
    out: dict[str, Any] = {
        "alpha": stats.ALPHA, "power": stats.POWER, "seeds": seeds, "problems": problems,
        "sd_seed": var_seed**0.5, "sd_problem": var_problem**0.5, "comparisons": len(diffs),
        "detectable": stats.detectable(var_seed, var_problem, seeds, problems),
        "delta": delta, "seeds_needed": None,
    }  # fmt: skip
    if delta is not None:
        out["seeds_needed"] = stats.seeds_needed(delta, var_seed, var_problem, problems)
    if seeds < 2:
        out["note"] = "one seed: the spread between seeds is unknown (taken as 0), so these are lower bounds"
    return out


def _notes(
    result: Ablation, found: dict[str, RunEvidence], cells: list[Pooled | None],
    base: tuple[AblationRow, Pooled] | None, key: str, value: Any, diffs: list[np.ndarray],
) -> list[str]:  # fmt: skip
    notes = [f"delta: paired (same seeds, same problems) against {key}={json.dumps(value)}; "
             f"Holm over {len(diffs)} comparison(s)"]  # fmt: skip
    single = sum(1 for d in diffs if d.shape[0] == 1)
    if single:
        notes.append(f"p of {single} comparison(s) on one common seed: a permutation over problems, which holds "
                     "the two runs fixed and cannot see seed-to-seed variation (run more seeds for that)")  # fmt: skip
    used = [e for c, row in zip(cells, result.rows, strict=True) if c is not None for e in
            (found[i] for i in row.runs)]  # fmt: skip
    if used and max(len(c) for c in cells if c is not None) == 1:
        notes.append("one seed per row: the 95% CI is over problems only")
    if result.at == "best" and any(e.selected_on == "val/" for e in used):
        notes.append("best: the checkpoint chosen on val/ (eval.select_source), reported on eval/")
    if result.at == "best" and any(e.selected_on == result.metric.split("/")[0] + "/" for e in used):
        notes.append(
            f"best: the checkpoint chosen on the reported set itself ({result.metric.split('/')[0]}/): "
            "selection and report used the same problems, so best is biased upward"
        )
    dropped = sum(len(set().union(*c.values())) - len(_common(c)[1]) for c in cells if c is not None)
    if dropped:
        notes.append(f"{dropped} problem(s) not evaluated by every seed of their row are left out of it")
    if any(e.step_from == "metric" for e in used):
        notes.append("runs without a best checkpoint report the step of their best logged value")
    notes.append(
        "base: the base model (step 0), pooled per seed over the runs of that seed; gain: paired against it"
        if base else "no base row: no run evaluated the base model (step 0)"
    )  # fmt: skip
    return notes
