"""Held-out evaluation sets: which problems (or labelled critique rows) an evaluation runs on.

Sources are those of the table of sources (:mod:`crlab.data.sources`): ``livecodebench:FILE``, ``humaneval``,
``rstar:FILE``, ``tiny-eval``, ... and ``crl:FILE`` for critique accuracy: a JSONL of labelled rows
(:func:`crlab.data.crl.load_crl_rows`), or ``crl:SOURCE`` naming a problem source whose candidates are
labelled by running them (as training's CRL rows are).

``since``/``until`` keep LiveCodeBench problems whose ``contest_date`` lies in ``[since, until]``, both
ends included and compared as LiveCodeBench's own loader does (a date means its midnight): the v5 window
is ``--since 2024-08-01 --until 2025-02-01``. ``max_problems`` keeps a fixed, seeded subset.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from crlab.data.crl import CRLRow, load_crl_rows
from crlab.data.problems import DataFormatError, Problem
from crlab.data.sources import SOURCES, UnknownSource, is_rows_file, kind_of, load_problems, resolve
from crlab.errors import CrlabError


class EvalInputError(CrlabError):
    """Bad input to an evaluation (a source, a window, a samples file): one line, exit code 2."""


class SetKind(StrEnum):
    """What an evaluation set measures."""

    CODE = "code"  # pass@k on problems
    CRL = "crl"  # critique accuracy on labelled rows


@dataclass
class EvalSet:
    source: str
    kind: SetKind
    problems: list[Problem] = field(default_factory=list)  # code problems, or CRL rows still to label
    crl_rows: list[CRLRow] | None = None  # labelled critique rows, when read from a file

    def __len__(self) -> int:
        return len(self.crl_rows) if self.crl_rows is not None else len(self.problems)


def _parse_day(text: str, flag: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise EvalInputError(f"{flag} {text!r}: expected a date YYYY-MM-DD") from None


def filter_dates(problems: list[Problem], path: str, since: str | None, until: str | None) -> list[Problem]:
    """The problems dated within ``[since, until]``; none left is an error naming the file and the field."""
    if since is None and until is None:
        return problems
    low = _parse_day(since, "--since") if since else None
    high = _parse_day(until, "--until") if until else None
    undated = [p.id for p in problems if not p.contest_date]
    if undated:
        raise EvalInputError(
            f"{path}: field 'contest_date': missing on problem {undated[0]!r} ({len(undated)} undated); "
            "--since/--until need LiveCodeBench rows with contest_date"
        )
    dates = {p.id: datetime.fromisoformat(p.contest_date).replace(tzinfo=None) for p in problems}
    kept = [p for p in problems if (not low or low <= dates[p.id]) and (not high or dates[p.id] <= high)]
    if not kept:
        span = f"{min(dates.values()):%Y-%m-%d}..{max(dates.values()):%Y-%m-%d}" if dates else "none"
        raise EvalInputError(
            f"{path}: field 'contest_date': no problem between {since or 'the start'} and {until or 'the end'} "
            f"({len(problems)} problems, dated {span}); widen --since/--until"
        )
    return kept


def dated_titles() -> str:
    """The benchmarks whose problems carry a contest date (``since``/``until`` apply), for messages."""
    return " or ".join(k.title for k in SOURCES.values() if k.dated)


def load_eval_set(
    source: str, since: str | None = None, until: str | None = None, seed: int = 0, style: str = "qwen3"
) -> EvalSet:
    """Read an evaluation source; bad rows raise DataFormatError (file, line, field)."""
    try:
        kind, arg = resolve(source)
        if kind.critique:
            if is_rows_file(arg):
                return EvalSet(source, SetKind.CRL, crl_rows=load_crl_rows(arg, style))
            return EvalSet(source, SetKind.CRL, problems=load_problems(arg, seed=seed))
        problems = load_problems(source, seed=seed)
    except UnknownSource as exc:
        raise EvalInputError(f"--on {source!r}: {exc}") from None
    except (DataFormatError, CrlabError):
        raise
    except (ValueError, OSError) as exc:
        raise EvalInputError(f"--on {source!r}: {exc}") from None
    if since or until:
        if not problems or not all(kind_of(p).dated for p in problems):
            raise EvalInputError(
                f"--since/--until filter {dated_titles()} sources by contest_date, not {source!r}"
            )
        problems = filter_dates(problems, arg, since, until)
    if not problems:
        raise EvalInputError(f"--on {source!r}: no problems")
    return EvalSet(source, SetKind.CODE, problems=problems)


def subset(items: list, max_items: int | None, seed: int) -> list:
    """A fixed, seeded subset of ``max_items`` items, in their original order (all when None or larger)."""
    if not max_items or max_items >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), max_items))
    return [items[i] for i in keep]
