"""Ablation tables and plots from registry queries (:mod:`crlab.registry.ablation`): markdown, CSV, JSON,
and a matplotlib figure (bars with error bars per group, and the metric's curves per run).

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

from crlab.registry.ablation import Ablation

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


def table_rows(result: Ablation, paper: bool = False) -> tuple[list[str], list[list[str]]]:
    """The header and the rows as text: one row per group (by values, mean, std, n, runs)."""
    header = [*result.by, f"{result.metric} ({result.at}) mean", "std", "n", "runs"]
    paper = paper and PAPER_KEY in result.by
    if paper:
        header.insert(len(result.by) + 3, PAPER_COLUMN)
    rows = []
    for row in result.rows:
        cells = [_key(v) for v in row.values] + [_fmt(row.mean), _fmt(row.std), str(row.n)]
        if paper:
            ratio = row.values[result.by.index(PAPER_KEY)]
            found = PAPER_TABLE5.get(float(ratio)) if isinstance(ratio, (int, float)) else None
            cells.append("-" if found is None else f"{found:.1f}")
        rows.append(cells + [" ".join(row.runs)])
    return header, rows


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
    return "\n".join(lines) + "\n"


def to_csv(result: Ablation, paper: bool = False) -> str:
    header, rows = table_rows(result, paper)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def plot(result: Ablation, curves: Mapping[str, Sequence[tuple[int, float]]], path: str | Path) -> Path:
    """Bars (mean, with the std as error bars) per group on the left; the metric against the step for every
    run on the right, one colour per group. ``curves``: run id -> (step, value) points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, lines) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [", ".join(_key(v) for v in row.values) for row in result.rows]
    colours = plt.get_cmap("tab10")
    bars.bar(
        range(len(result.rows)), [r.mean for r in result.rows],
        yerr=[float("nan") if r.std is None else r.std for r in result.rows],  # no bar for a group of one
        capsize=4, color=[colours(i % 10) for i in range(len(result.rows))],
    )  # fmt: skip
    bars.set_xticks(range(len(result.rows)), labels)
    bars.set_xlabel(", ".join(result.by))
    bars.set_ylabel(f"{result.metric} ({result.at}), mean ± std over seeds")
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
