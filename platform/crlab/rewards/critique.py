"""The critique (CRL) reward: did the model judge the candidate solution correctly?

A critique response ends with ``\\conclusion{T}`` (the solution is correct) or ``\\conclusion{F}`` (wrong).
The ground truth is whether the candidate passes more than ``threshold`` of its tests. Two parsing rules
(``reward.conclusion_parse``): ``exact``, the platform's, reads whole words; ``authors`` is the authors'
release's (verl_tool/workers/reward_manager/crl.py ``get_cft_data_score``): the last
``\\conclusion{...}`` is True if it contains a capital ``T``, else False if it contains a capital ``F``.
"""

from __future__ import annotations

import re
from enum import StrEnum

_CONCLUSION = re.compile(r"\\conclusion\s*\{([^{}]*)\}")
_TRUE = frozenset({"t", "true", "correct"})
_FALSE = frozenset({"f", "false", "wrong"})
_AUTHORS = re.compile(r"\\conclusion\{(.*?)\}")  # theirs, verbatim: no spaces, no newline inside


class ConclusionParse(StrEnum):
    """How ``\\conclusion{...}`` is read (``reward.conclusion_parse``; see :func:`parse_conclusion`)."""

    EXACT = "exact"  # the platform's: whole words
    AUTHORS = "authors"  # the authors' release: 'T' in it, else 'F' in it


RULES = tuple(r.value for r in ConclusionParse)


def parse_conclusion(text: str, rule: str = ConclusionParse.EXACT) -> bool | None:
    """The last ``\\conclusion{...}`` in ``text``. ``exact``: T/True/correct -> True, F/False/wrong -> False
    (case-insensitive, surrounding whitespace ignored); anything else, or no conclusion, -> None.
    ``authors``: ``'T' in it`` -> True, else ``'F' in it`` -> False, else None (so ``{False}`` is False,
    ``{TRUE or FALSE}`` and ``{\\text{T}}`` are True, ``{t}`` and ``{correct}`` are None).
    Only the last one counts, even when it is unreadable and an earlier one was not."""
    if rule not in RULES:
        raise ValueError(f"parse_conclusion: rule must be one of {RULES}, got {rule!r}")
    if not isinstance(text, str):
        return None
    if rule == ConclusionParse.AUTHORS:
        found = _AUTHORS.findall(text)
        if not found:
            return None
        return True if "T" in found[-1] else False if "F" in found[-1] else None
    found = _CONCLUSION.findall(text)
    if not found:
        return None
    word = found[-1].strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None


def critique_reward(text: str, label: bool, rule: str = ConclusionParse.EXACT) -> float:
    """1.0 iff the conclusion parsed by ``rule`` equals ``label``; an unparseable response scores 0.0."""
    judged = parse_conclusion(text, rule)
    return 1.0 if judged is not None and judged == bool(label) else 0.0


def crl_label(pass_rate: float, threshold: float = 0.8) -> bool:
    """Ground truth of a critique task: the candidate is correct iff its pass rate is above ``threshold``."""
    return pass_rate > threshold
