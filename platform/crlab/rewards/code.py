"""The code reward: run the code a model wrote on the problem's tests.

``extract_code`` takes the last fenced Python block of a response after removing its reasoning
(``<think>...</think>``); ``score_code_responses`` runs a batch through a :class:`Sandbox` (concurrently,
on the first ``max_tests`` tests, 10 as in the paper) and turns each result into a reward.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .sandbox import ProgramResult, Verdict
from .spec import TestSpec

MODES = ("pass_rate", "all_or_nothing")
_THINK = re.compile(r"<think>.*?</think>", re.S)
_PY_TAGS = ("python", "python3", "py")


def _strip_reasoning(response: str) -> str:
    text = _THINK.sub("", response)
    if "</think>" in text:  # the opening tag was in the prompt (e.g. a template that pre-fills <think>)
        text = text.rsplit("</think>", 1)[1]
    if "<think>" in text:  # reasoning never closed (truncated): nothing after it is an answer
        text = text.split("<think>", 1)[0]
    return text


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Closed ``` blocks as (info string in lower case, body); an unclosed last block is dropped."""
    blocks, info, body = [], None, []
    for line in text.splitlines():
        stripped = line.strip()
        if info is None:
            if stripped.startswith("```"):
                info, body = stripped[3:].strip().lower(), []
        elif stripped.startswith("```"):
            blocks.append((info, "\n".join(body)))
            info = None
        else:
            body.append(line)
    return blocks


def extract_code(response: str) -> str | None:
    """The last fenced Python block (```python, ```py, ```python3; a bare ``` block only if there is no
    tagged one) after removing ``<think>...</think>``; None when there is none or it is blank."""
    if not isinstance(response, str):
        return None
    blocks = _fenced_blocks(_strip_reasoning(response))
    tagged = [body for info, body in blocks if info.split()[:1] and info.split()[0] in _PY_TAGS]
    bare = [body for info, body in blocks if not info]
    candidates = tagged or bare
    if not candidates or not candidates[-1].strip():
        return None
    return candidates[-1] + "\n"


def code_reward(result: ProgramResult | None, mode: str = "pass_rate") -> float:
    """``pass_rate``: fraction of tests passed; ``all_or_nothing``: 1.0 iff every test passed. None -> 0.0."""
    if mode not in MODES:
        raise ValueError(f"code_reward: mode must be one of {MODES}, got {mode!r}")
    if result is None or not result.results:
        return 0.0
    if mode == "pass_rate":
        return result.pass_rate
    return 1.0 if all(r.verdict is Verdict.PASSED for r in result.results) else 0.0


def score_code_responses(
    sandbox,
    responses: Sequence[str],
    specs: Sequence[TestSpec],
    max_tests: int = 10,
    mode: str = "pass_rate",
) -> list[float]:
    """One reward per response: extract its code, run the batch with ``sandbox.run_many``, score."""
    if len(responses) != len(specs):
        raise ValueError(f"score_code_responses: {len(responses)} responses but {len(specs)} specs")
    if mode not in MODES:
        raise ValueError(f"score_code_responses: mode must be one of {MODES}, got {mode!r}")
    codes = [extract_code(r) for r in responses]
    todo = [i for i, c in enumerate(codes) if c is not None]
    results = sandbox.run_many([(codes[i], specs[i]) for i in todo], max_tests=max_tests)
    by_index = dict(zip(todo, results, strict=True))
    return [code_reward(by_index.get(i), mode) for i in range(len(responses))]
