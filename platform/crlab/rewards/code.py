"""The code reward: run the code a model wrote on the problem's tests.

``extract_code`` takes the code of a response by one of two rules (``reward.code_extraction``):
``last``, the platform's, is the last fenced Python block after removing the reasoning
(``<think>...</think>``, and all of an unclosed one); ``joined``, the authors', is every parsable
```python block outside closed think blocks, joined (:func:`authors_code`). ``score_code_responses`` runs a
batch through a :class:`Sandbox` (concurrently, on the first ``max_tests`` tests, 10 as in the paper) and
turns each result into a reward; :class:`FallbackRunner` is the authors' two-pass time limit.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from .sandbox import ProgramResult, Verdict
from .spec import TestSpec


class CodeMode(StrEnum):
    """How a program's test results become its reward (``reward.code_mode``)."""

    PASS_RATE = "pass_rate"  # the fraction of tests passed
    ALL_OR_NOTHING = "all_or_nothing"  # 1.0 iff every test passed


class CodeExtraction(StrEnum):
    """How the code of a response is found (``reward.code_extraction``; see :func:`extract_code`)."""

    LAST = "last"  # the platform's: the last fenced Python block after the reasoning
    JOINED = "joined"  # the authors': every parsable ```python block, joined


MODES = tuple(m.value for m in CodeMode)
EXTRACTIONS = tuple(e.value for e in CodeExtraction)
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


def extract_code(response: str, rule: str = CodeExtraction.LAST) -> str | None:
    """The code of ``response`` by ``rule``; None when there is none or it is blank.

    ``last``: the last fenced Python block (```python, ```py, ```python3; a bare ``` block only if there is
    no tagged one) after removing ``<think>...</think>``. ``joined``: :func:`authors_code`."""
    if rule not in EXTRACTIONS:
        raise ValueError(f"extract_code: rule must be one of {EXTRACTIONS}, got {rule!r}")
    if not isinstance(response, str):
        return None
    if rule == CodeExtraction.JOINED:
        code = authors_code(response)
        return code + "\n" if code.strip() else None
    blocks = _fenced_blocks(_strip_reasoning(response))
    tagged = [body for info, body in blocks if info.split()[:1] and info.split()[0] in _PY_TAGS]
    bare = [body for info, body in blocks if not info]
    candidates = tagged or bare
    if not candidates or not candidates[-1].strip():
        return None
    return candidates[-1] + "\n"


# The authors' pattern for fenced blocks (verl_tool/workers/reward_manager/crl.py uses the `regex` module;
# the pattern means the same in `re`). Their other two patterns, r"<think>(.|\n)*?</think>" (removed) and
# r"<python>(.*?)</python>" (found), are computed by :func:`_tag_spans`: the same matches, in linear time
# (the regexes take quadratic time on a response of many unclosed tags).
_AUTHORS_FENCED = re.compile(r"```\n?python(.*?)```", re.DOTALL)
_LAST_TURN = "<|im_start|>assistant"


def _tag_spans(text: str, open_tag: str, close_tag: str) -> list[tuple[int, int]]:
    """(start, end) of each non-overlapping ``open_tag ... close_tag`` (shortest body), left to right, as
    ``re.finditer`` finds them: an open tag with no close tag after it ends the search, since no later one
    has a close tag after it either."""
    spans, pos = [], 0
    while (start := text.find(open_tag, pos)) != -1:
        end = text.find(close_tag, start + len(open_tag))
        if end == -1:
            break
        pos = end + len(close_tag)
        spans.append((start, pos))
    return spans


def _parses(code: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning on odd escapes: not the model's reward's business
        try:
            ast.parse(code)
        except Exception:
            return False
    return True


def authors_code(response: str) -> str:
    """The code the authors' reward runs, exactly as their release computes it.

    verl_tool/workers/reward_manager/crl.py: closed ``<think>...</think>`` blocks are removed (an unclosed,
    truncated one stays, so code written while thinking can still score); then ``parse_code`` in its
    ``all_in_last_turn`` mode: the text after the last ``<|im_start|>assistant`` if there is one, its
    ``<python>...</python>`` bodies, or if there are none the bodies of ```python blocks (``_AUTHORS_FENCED``:
    a newline may come between the backticks and ``python``, ```python3 keeps a leading ``3``, an unclosed
    block is dropped), the ones ``ast.parse`` accepts joined with newlines, stripped of spaces and newlines;
    finally verl's prime_code ``compute_score`` keeps ``code.split("```python")[-1].split("```")[0]``.
    "" when there is none.
    """
    kept, pos = [], 0
    for start, end in _tag_spans(response, "<think>", "</think>"):
        kept.append(response[pos:start])
        pos = end
    text = "".join(kept) + response[pos:]
    start = text.rfind(_LAST_TURN)
    if start != -1:
        text = text[start:]
    tagged = [
        text[a + len("<python>") : b - len("</python>")] for a, b in _tag_spans(text, "<python>", "</python>")
    ]
    blocks = tagged or _AUTHORS_FENCED.findall(text)
    code = "\n".join(b for b in blocks if _parses(b)).strip(" \n")
    return code.split("```python")[-1].split("```")[0]


def code_reward(result: ProgramResult | None, mode: str = CodeMode.PASS_RATE) -> float:
    """``pass_rate``: fraction of tests passed; ``all_or_nothing``: 1.0 iff every test passed. None -> 0.0."""
    if mode not in MODES:
        raise ValueError(f"code_reward: mode must be one of {MODES}, got {mode!r}")
    if result is None or not result.results:
        return 0.0
    if mode == CodeMode.PASS_RATE:
        return result.pass_rate
    return 1.0 if all(r.verdict is Verdict.PASSED for r in result.results) else 0.0


def score_code_responses(
    sandbox,
    responses: Sequence[str],
    specs: Sequence[TestSpec],
    max_tests: int = 10,
    mode: str = CodeMode.PASS_RATE,
    extraction: str = CodeExtraction.LAST,
) -> list[float]:
    """One reward per response: extract its code (``extraction``: :func:`extract_code`'s rule), run the
    batch with ``sandbox.run_many``, score."""
    if len(responses) != len(specs):
        raise ValueError(f"score_code_responses: {len(responses)} responses but {len(specs)} specs")
    if mode not in MODES:
        raise ValueError(f"score_code_responses: mode must be one of {MODES}, got {mode!r}")
    codes = [extract_code(r, extraction) for r in responses]
    todo = [i for i, c in enumerate(codes) if c is not None]
    results = sandbox.run_many([(codes[i], specs[i]) for i in todo], max_tests=max_tests)
    by_index = dict(zip(todo, results, strict=True))
    return [code_reward(by_index.get(i), mode) for i in range(len(responses))]


class FallbackRunner:
    """The authors' time limits (verl's prime_code ``compute_score`` with ``continuous=True``): every
    program runs on ``fast`` (their 5 s per test); one that does not pass every test runs again on
    ``slow`` (their 20 s per test; each test in its own process there, a fresh fork per test here) and
    that second result is the one scored. Same interface as :class:`Sandbox` for the callers that score.

    They run every test in the first pass and only the first 10 in the second; since the first pass
    counts only when every test passes, running the first ``max_tests`` in both gives the same score.
    """

    def __init__(self, fast: Any, slow: Any) -> None:
        self.fast, self.slow = fast, slow
        self.time_limit_s = fast.time_limit_s

    def __enter__(self) -> FallbackRunner:
        self.fast.__enter__()
        try:
            self.slow.__enter__()
        except BaseException:
            self.fast.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.fast.__exit__(*exc)
        finally:
            self.slow.__exit__(*exc)

    def run(self, program: str, spec: TestSpec, max_tests: int | None = None) -> ProgramResult:
        return self.run_many([(program, spec)], max_tests)[0]

    def run_many(
        self, jobs: Sequence[tuple[str, TestSpec]], max_tests: int | None = None
    ) -> list[ProgramResult]:
        results = list(self.fast.run_many(jobs, max_tests))
        redo = [i for i, r in enumerate(results) if not all(t.verdict is Verdict.PASSED for t in r.results)]
        if redo:
            again = self.slow.run_many([jobs[i] for i in redo], max_tests)
            for i, result in zip(redo, again, strict=True):
                results[i] = result
        return results
