"""Which rules judge an evaluation's code samples: ``eval.scoring`` and ``platform eval --scoring``.

- ``livecodebench``: the verdicts of LiveCodeBench's own evaluator (``evaluation/testing_util.py`` of its
  v5/v6 releases, as ``nvidia-livecodebench`` 26.3 packages it), its quirks included: the sandbox's ``lcb``
  harness (:mod:`crlab.rewards._suite` runs, :mod:`crlab.rewards.lcb` compares). Published LiveCodeBench
  numbers (the paper's Table 5 among them) come from that evaluator, so it is the default for
  LiveCodeBench sources. Its per-test time limit is 6 s, LiveCodeBench's default.
- ``strict``: the platform's own rules (:mod:`crlab.rewards.spec`, the sandbox's ``strict`` harness), the
  same as training's code reward: every test in a fresh namespace, outputs within a 1e-6 tolerance, ...
- ``auto`` (the default): ``livecodebench`` for LiveCodeBench sources, ``strict`` for the others.

Critique sets (``crl:``) are labelled by the strict rules whatever the scoring, as training's CRL rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from crlab.data.sources import SOURCES, kind_of
from crlab.errors import CrlabError
from crlab.rewards.sandbox import Harness


class Scoring(StrEnum):
    """``eval.scoring`` (see above)."""

    AUTO = "auto"
    LIVECODEBENCH = "livecodebench"
    STRICT = "strict"


SCORINGS = tuple(s.value for s in Scoring)
HARNESS = {
    Scoring.LIVECODEBENCH: Harness.LCB,
    Scoring.STRICT: Harness.STRICT,
}  # scoring -> the sandbox's harness
LCB_TIME_LIMIT_S = 6.0  # LiveCodeBench's --evaluation_timeout default


def resolve_scoring(scoring: str, problems: Sequence[Any], key: str = "--scoring") -> Scoring:
    """``livecodebench`` or ``strict`` for these problems; a scoring their kind does not support (the table of
    sources' ``scorings``: ``livecodebench`` on other sources) is an error; ``strict`` scores every kind."""
    if scoring not in SCORINGS:
        raise CrlabError(f"{key} {scoring!r}: expected one of {', '.join(SCORINGS)}")
    kinds = {kind_of(p) for p in problems}
    if scoring == Scoring.AUTO:
        picks = {k.scorings[0] if k.scorings else Scoring.STRICT for k in kinds}
        return Scoring(picks.pop()) if len(picks) == 1 else Scoring.STRICT
    if scoring != Scoring.STRICT and (not kinds or any(scoring not in (k.scorings or ()) for k in kinds)):
        able = " or ".join(k.title for k in SOURCES.values() if scoring in (k.scorings or ()))
        names = ", ".join(sorted(k.name for k in kinds)) or "none"
        raise CrlabError(f"{key} {scoring}: scores {able} problems only, not {names}; use strict or auto")
    return Scoring(scoring)
