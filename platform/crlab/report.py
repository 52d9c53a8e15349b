"""Ablation tables and plots from registry queries (:mod:`crlab.registry.ablation`, with the intervals and
paired tests of :mod:`crlab.registry.ablation_stats`): markdown, CSV, JSON, and a matplotlib figure (bars with
95% intervals per group and the base model as a line, and the metric's curves per run).

``--paper`` puts the paper's Table 5 beside a CRL-ratio ablation: Critique-Coder (arXiv 2509.22824),
Qwen3-4B, LiveCodeBench v5 pass@1 of the best checkpoint, in percent.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crlab.registry.ablation import Ablation, AblationRow

PAPER_TABLE5 = {0.0: 56.6, 0.2: 59.0, 0.5: 56.0, 1.0: 56.6}  # data.crl_ratio -> LCB v5 pass@1 (%)
PAPER_KEY = "data.crl_ratio"
PAPER_COLUMN = "paper (Qwen3-4B, LCB v5 %)"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _key(value: Any) -> str:
    """A group's config value as the config would spell it (0.2, true, 'name')."""
    return "-" if value is None else json.dumps(value) if not isinstance(value, str) else value


STATS_COLUMNS = ["95% CI", "delta", "delta 95% CI", "p", "p (Holm)", "differs at 0.05", "gain over base",
                 "gain 95% CI"]  # fmt: skip


def _interval(pair: tuple[float, float] | None) -> str:
    return "-" if pair is None else f"[{pair[0]:.4f}, {pair[1]:.4f}]"


def _stats_cells(row: AblationRow) -> list[str]:
    differs = (
        "baseline" if row.baseline else "-" if row.significant is None else "yes" if row.significant else "no"
    )
    return [_interval(row.ci95), _fmt(row.delta), _interval(row.delta_ci95), _fmt(row.p), _fmt(row.p_holm),
            differs, _fmt(row.gain), _interval(row.gain_ci95)]  # fmt: skip


def table_rows(result: Ablation, paper: bool = False) -> tuple[list[str], list[list[str]]]:
    """The header and the rows as text: the base model first (when evaluated), then one row per group (by
    values, mean, std, n, [paper], 95% CI, paired difference from the baseline, its interval, p, Holm's p,
    whether it differs at 0.05, gain over the base model, its interval, runs)."""
    header = [*result.by, f"{result.metric} ({result.at}) mean", "std", "n", *STATS_COLUMNS, "runs"]
    paper = paper and PAPER_KEY in result.by
    if paper:
        header.insert(len(result.by) + 3, PAPER_COLUMN)
    rows = []
    for row, found in zip(result.rows, paper_values(result), strict=True):
        cells = [_key(v) for v in row.values] + [_fmt(row.mean), _fmt(row.std), str(row.n)]
        if paper:
            cells.append("-" if found is None else f"{found:.1f}")
        rows.append(cells + _stats_cells(row) + [" ".join(row.runs)])
    if result.base is not None:
        base = result.base
        cells = ["base"] + ["-"] * (len(result.by) - 1) + [_fmt(base.mean), _fmt(base.std), str(base.n)]
        cells += ["-"] * paper + [_interval(base.ci95)] + ["-"] * (len(STATS_COLUMNS) - 1)
        rows.insert(0, cells + [" ".join(base.runs)])
    return header, rows


def power_line(power: dict[str, Any] | None) -> str | None:
    """The sweep's power in one sentence (None when it was not computed)."""
    if not power:
        return None
    if "error" in power:
        return f"power: {power['error']}"
    line = (
        f"power ({power['power']:.0%}, alpha {power['alpha']}; {power['seeds']} seed(s) x {power['problems']} "
        f"problems, spread pooled over {power['comparisons']} comparison(s): sd between seeds "
        f"{power['sd_seed']:.4f}, over problems {power['sd_problem']:.4f}): the smallest difference "
        f"detectable is {power['detectable']:.4f}"
    )
    if power.get("seeds_needed") is not None:
        line += f"; to detect {power['delta']}: {power['seeds_needed']} seeds"
    return line + (f" ({power['note']})" if power.get("note") else "")


def paper_values(result: Ablation) -> list[float | None]:
    """The paper's Table 5 value beside each row of a ``data.crl_ratio`` ablation (None elsewhere)."""
    if PAPER_KEY not in result.by:
        return [None] * len(result.rows)
    ratios = [row.values[result.by.index(PAPER_KEY)] for row in result.rows]
    return [PAPER_TABLE5.get(float(r)) if isinstance(r, (int, float)) else None for r in ratios]


def markdown(result: Ablation, paper: bool = False) -> str:
    header, rows = table_rows(result, paper)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if result.left_out:
        lines.append("")
        lines.append(
            "not counted (not completed): "
            + ", ".join(f"{n} {s}" for s, n in sorted(result.left_out.items()))
        )
    power = power_line(result.power)
    if result.notes or power:
        lines.append("")
        lines += [f"- {note}" for note in result.notes] + ([f"- {power}"] if power else [])
    return "\n".join(lines) + "\n"


def to_csv(result: Ablation, paper: bool = False) -> str:
    header, rows = table_rows(result, paper)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _error_bars(rows: Sequence[AblationRow]) -> tuple[list[list[float]], str]:
    """(2, rows) error bar lengths below and above each mean: the 95% interval when the rows have them (no
    bar for a row without: no per-problem records), else the std (no bar for a group of one)."""
    nan = float("nan")
    if any(r.ci95 is not None for r in rows):
        below = [nan if r.ci95 is None else r.mean - r.ci95[0] for r in rows]
        above = [nan if r.ci95 is None else r.ci95[1] - r.mean for r in rows]
        return [below, above], "95% CI"
    std = [nan if r.std is None else r.std for r in rows]
    return [std, std], "± std over seeds"


def plot(result: Ablation, curves: Mapping[str, Sequence[tuple[int, float]]], path: str | Path) -> Path:
    """Bars (mean over seeds, with the 95% interval as error bars; the std where a row has no interval) per
    group and the base model (step 0) as a horizontal line on the left; the metric against the step for
    every run on the right, one colour per group. ``curves``: run id -> (step, value) points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, lines) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [", ".join(_key(v) for v in row.values) for row in result.rows]
    colours = plt.get_cmap("tab10")
    errors, shown = _error_bars(result.rows)
    bars.bar(
        range(len(result.rows)), [r.mean for r in result.rows], yerr=errors, capsize=4,
        color=[colours(i % 10) for i in range(len(result.rows))],
    )  # fmt: skip
    if result.base is not None:
        bars.axhline(
            result.base.mean, color="black", linestyle="--", linewidth=1, label="base model (step 0)"
        )
        if result.base.ci95 is not None:
            bars.axhspan(*result.base.ci95, color="black", alpha=0.08, linewidth=0)
        bars.legend(fontsize=8, loc="lower right")
    bars.set_xticks(range(len(result.rows)), labels)
    bars.set_xlabel(", ".join(result.by))
    bars.set_ylabel(f"{result.metric} ({result.at}), mean, {shown}")
    for i, row in enumerate(result.rows):
        for j, run in enumerate(row.runs):
            points = curves.get(run) or []
            if points:
                steps, values = zip(*points, strict=True)
                lines.plot(
                    steps, values, color=colours(i % 10), alpha=0.8, label=labels[i] if j == 0 else None
                )
    lines.set_xlabel("step")
    lines.set_ylabel(result.metric)
    lines.legend(title=", ".join(result.by), fontsize=8)
    fig.suptitle(f"{result.sweep}: {result.metric}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
