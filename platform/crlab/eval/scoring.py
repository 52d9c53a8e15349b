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

from crlab.errors import CrlabError
from crlab.rewards.sandbox import Harness


class Scoring(StrEnum):
    """``eval.scoring`` (see above)."""

    AUTO = "auto"
    LIVECODEBENCH = "livecodebench"
    STRICT = "strict"


class EvalKind(StrEnum):
    """What an evaluation set measures: pass@k of code problems, or critique accuracy (always strict)."""

    CODE = "code"
    CRL = "crl"


SCORINGS = tuple(s.value for s in Scoring)
HARNESS = {
    Scoring.LIVECODEBENCH: Harness.LCB,
    Scoring.STRICT: Harness.STRICT,
}  # scoring -> the sandbox's harness
LCB_TIME_LIMIT_S = 6.0  # LiveCodeBench's --evaluation_timeout default


def resolve_scoring(scoring: str, problems: Sequence[Any], key: str = "--scoring") -> Scoring:
    """``livecodebench`` or ``strict`` for these problems; ``livecodebench`` on other sources is an error."""
    if scoring not in SCORINGS:
        raise CrlabError(f"{key} {scoring!r}: expected one of {', '.join(SCORINGS)}")
    lcb = bool(problems) and all(p.source == "livecodebench" for p in problems)
    if scoring == Scoring.AUTO:
        return Scoring.LIVECODEBENCH if lcb else Scoring.STRICT
    if scoring == Scoring.LIVECODEBENCH and not lcb:
        kinds = ", ".join(sorted({p.source for p in problems})) or "none"
        raise CrlabError(
            f"{key} livecodebench: scores LiveCodeBench problems only, not {kinds}; use strict or auto"
        )
    return Scoring(scoring)
