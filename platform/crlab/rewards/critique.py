"""The critique (CRL) reward: did the model judge the candidate solution correctly?

A critique response ends with ``\\conclusion{T}`` (the solution is correct) or ``\\conclusion{F}`` (wrong).
The ground truth is whether the candidate passes more than ``threshold`` of its tests.
"""

from __future__ import annotations

import re

_CONCLUSION = re.compile(r"\\conclusion\s*\{([^{}]*)\}")
_TRUE = frozenset({"t", "true", "correct"})
_FALSE = frozenset({"f", "false", "wrong"})


def parse_conclusion(text: str) -> bool | None:
    """The last ``\\conclusion{...}`` in ``text``: T/True/correct -> True, F/False/wrong -> False
    (case-insensitive, surrounding whitespace ignored); anything else, or no conclusion, -> None.
    Only the last one counts, even when it is unreadable and an earlier one was not."""
    if not isinstance(text, str):
        return None
    found = _CONCLUSION.findall(text)
    if not found:
        return None
    word = found[-1].strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None


def critique_reward(text: str, label: bool) -> float:
    """1.0 iff the parsed conclusion equals ``label``; an unparseable response scores 0.0."""
    judged = parse_conclusion(text)
    return 1.0 if judged is not None and judged == bool(label) else 0.0


def crl_label(pass_rate: float, threshold: float = 0.8) -> bool:
    """Ground truth of a critique task: the candidate is correct iff its pass rate is above ``threshold``."""
    return pass_rate > threshold
