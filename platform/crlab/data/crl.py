"""Critique (CRL) rows: a (question, candidate solution) pair with a label decided by running the candidate.

The label is ``crl_label(pass_rate, threshold)`` (True when the candidate passes more than ``threshold``
of the first ``max_tests`` tests), never the list the candidate came from: a "wrong" candidate that passes
every test is labelled correct.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crlab.data.formats import read_jsonl
from crlab.data.problems import DataFormatError, Problem
from crlab.data.prompts import critique_prompt
from crlab.rewards.critique import crl_label

log = logging.getLogger(__name__)


@dataclass
class CRLRow:
    """One critique task: judge ``solution`` for ``question``; ``label`` True means correct."""

    problem_id: str
    question: str
    solution: str
    label: bool
    pass_rate: float
    prompt: str


def build_crl_rows(
    problems: Sequence[Problem],
    sandbox: Any,
    threshold: float = 0.8,
    max_tests: int | None = 10,
    style: str = "qwen3",
    candidates: Mapping[str, Sequence[str]] | None = None,
    batch_size: int = 256,
    template: str = "platform",
) -> list[CRLRow]:
    """Run every candidate of every problem in ``sandbox`` and label it from its pass rate.

    Candidates are ``problem.solutions + problem.wrong_solutions`` plus ``candidates[problem.id]`` (e.g.
    from :func:`load_crl_candidates`), without duplicates. They run through ``sandbox.run_many`` in
    batches of ``batch_size`` on the first ``max_tests`` tests. Candidates whose problem id is not in
    ``problems`` are skipped (and counted in the log). Rows come out in problem order, then candidate order.
    ``template``: the critique prompt's wording (:func:`crlab.data.prompts.critique_prompt`).
    """
    extra = dict(candidates or {})
    known = {p.id for p in problems}
    unknown = [pid for pid in extra if pid not in known]
    if unknown:
        log.info(
            "skipped CRL candidates of %d problem ids not in this problem set (e.g. %s)",
            len(unknown),
            unknown[:3],
        )
    jobs: list[tuple[Problem, str]] = []
    for problem in problems:
        for solution in dict.fromkeys(problem.candidates + tuple(extra.get(problem.id, ()))):
            jobs.append((problem, solution))
    rows: list[CRLRow] = []
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        results = sandbox.run_many([(solution, p.spec) for p, solution in batch], max_tests=max_tests)
        for (problem, solution), result in zip(batch, results, strict=True):
            rate = float(result.pass_rate)
            rows.append(
                CRLRow(
                    problem_id=problem.id,
                    question=problem.question,
                    solution=solution,
                    label=bool(crl_label(rate, threshold)),
                    pass_rate=rate,
                    prompt=critique_prompt(problem.question, solution, style, template),
                )
            )
    return rows


def load_crl_candidates(path: str | Path) -> dict[str, list[str]]:
    """Read a JSONL of ``{"problem_id": ..., "solution": ...}`` rows into ``{problem_id: [solutions]}``."""
    out: dict[str, list[str]] = {}
    for line, row in read_jsonl(path):
        for field in ("problem_id", "solution"):
            if not isinstance(row.get(field), str) or not row[field]:
                raise DataFormatError(path, line, field, "missing or not a non-empty string")
        out.setdefault(row["problem_id"], []).append(row["solution"])
    return out


def _row_label(value: Any, path: str | Path, line: int) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().upper() in ("T", "F", "TRUE", "FALSE"):
        return value.strip().upper().startswith("T")
    raise DataFormatError(path, line, "label", f"expected true/false or 'T'/'F', got {value!r}")


def load_crl_rows(path: str | Path, style: str = "qwen3", template: str = "platform") -> list[CRLRow]:
    """Read labelled critique rows: JSONL of ``{"question", "solution", "label"}`` (label true/false or
    "T"/"F"; optional ``problem_id``, ``pass_rate``), e.g. a held-out set for critique accuracy."""
    rows = []
    for line, row in read_jsonl(path):
        for name in ("question", "solution"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise DataFormatError(path, line, name, "missing or not a non-empty string")
        if "label" not in row:
            raise DataFormatError(path, line, "label", "missing")
        rows.append(
            CRLRow(
                problem_id=str(row.get("problem_id") or f"{Path(path).stem}-{line}"),
                question=row["question"],
                solution=row["solution"],
                label=_row_label(row["label"], path, line),
                pass_rate=float(row.get("pass_rate", float("nan"))),
                prompt=critique_prompt(row["question"], row["solution"], style, template),
            )
        )
    return rows
