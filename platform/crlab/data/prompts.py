"""Prompt templates: the code-generation prompt (Qwen3 / LiveCodeBench style) and the critique prompt.

Two styles: ``"qwen3"`` (the paper's wording, for real models) and ``"tiny"`` (a compact variant for the
bundled tiny model, whose context is ~512 tokens). Both return plain text; applying a chat template is
the rollout's job.

Two critique templates (``data.crl_prompt``): ``platform`` (the style's own: section headers, the
solution in a fence, "Reason step by step") and ``paper``: App. A, Table 6 of the paper, word for word
(:data:`PAPER_CRITIQUE_TEMPLATE`), whatever the style. The authors' code holds no prompt (their CRL
prompts are stored in their data set, TIGER-Lab/rStar-Critique-Data); the words are the paper's, the line
breaks our reading of the table (a blank line after the instruction, a line break before each field).
"""

from __future__ import annotations

from enum import StrEnum

from crlab.data.problems import Problem
from crlab.rewards.spec import TestKind


class PromptStyle(StrEnum):
    """The wording of the prompts: the paper's (real models) or a compact one (the bundled tiny model)."""

    QWEN3 = "qwen3"
    TINY = "tiny"


class CritiquePrompt(StrEnum):
    """The critique template (``data.crl_prompt``): the style's own, or the paper's Table 6 word for word."""

    PLATFORM = "platform"
    PAPER = "paper"


class OverlongPrompts(StrEnum):
    """What happens to a row whose chat-templated prompt is over ``data.max_prompt_length`` tokens
    (``data.overlong_prompts``): kept, or dropped at start-up (verl's ``data.filter_overlong_prompts``)."""

    KEEP = "keep"
    FILTER = "filter"


STYLES = tuple(s.value for s in PromptStyle)

CRITIQUE_INSTRUCTION = (
    "You will be given a question (problem specification) and a submitted solution. Your task is to "
    "determine whether the solution is correct and fully satisfies the specification."
)

CRITIQUE_TEMPLATE = (
    CRITIQUE_INSTRUCTION + "\n\n"
    "### Question:\n{question}\n\n"
    "### Solution:\n```python\n{solution}\n```\n\n"
    "Reason step by step about whether the solution is correct. Then conclude with \\conclusion{{T}} if the "
    "solution is correct, or \\conclusion{{F}} if it is wrong."
)

STDIN_FORMAT = (
    "### Format: Read the inputs from stdin solve the problem and write the answer to stdout (do not directly "
    "test on the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python "
    "program runs, it reads the inputs, runs the algorithm and writes output to STDOUT.\n"
    "```python\n# YOUR CODE HERE\n```"
)

STARTER_FORMAT = (
    "### Format: You will use the following starter code to write the solution to the problem and enclose "
    "your code within delimiters.\n```python\n{starter_code}\n```"
)

COMPLETE_FORMAT = (
    "### Format: Complete the following Python function and enclose the whole function within delimiters.\n"
    "```python\n{starter_code}\n```"
)

ANSWER_SUFFIX = "### Answer: (use the provided format with backticks)\n"

PAPER_CRITIQUE_TEMPLATE = (
    CRITIQUE_INSTRUCTION + "\n\n"
    "Question: {question}\n"
    "Solution: {solution}\n"
    "Conclude with \\conclusion{{T}} for correct, \\conclusion{{F}} for wrong."
)
TEMPLATES = tuple(t.value for t in CritiquePrompt)

TINY_CODE_TEMPLATE = "Solve in Python (stdin to stdout).\n{question}\n"

TINY_CRITIQUE_TEMPLATE = (
    "Is the solution correct? End with \\conclusion{{T}} or \\conclusion{{F}}.\n"
    "{question}\n```python\n{solution}\n```\n"
)


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; valid: {', '.join(STYLES)}")


def code_prompt(problem: Problem, style: str = PromptStyle.QWEN3) -> str:
    """The prompt asking for a program that solves ``problem``.

    stdin problems get the "read from stdin, write to stdout" format; functional problems (LeetCode style)
    get their starter code; assert problems (HumanEval) get the function header to complete.
    """
    _check_style(style)
    question = problem.question.strip()
    if style == PromptStyle.TINY:
        return TINY_CODE_TEMPLATE.format(question=question)
    kind = problem.spec.kind
    if kind == TestKind.STDIN and not problem.starter_code.strip():
        fmt = STDIN_FORMAT
    elif kind == TestKind.ASSERT:
        fmt = COMPLETE_FORMAT.format(starter_code=problem.starter_code.rstrip())
    else:
        fmt = STARTER_FORMAT.format(starter_code=problem.starter_code.rstrip())
    return f"### Question:\n{question}\n\n{fmt}\n\n{ANSWER_SUFFIX}"


def critique_prompt(
    question: str, solution: str, style: str = PromptStyle.QWEN3, template: str = CritiquePrompt.PLATFORM
) -> str:
    """The CRL prompt: judge ``solution`` against ``question`` and end with \\conclusion{T} or {F}.
    ``template``: ``platform`` (the style's own) or ``paper`` (Table 6, for every style)."""
    _check_style(style)
    if template not in TEMPLATES:
        raise ValueError(f"unknown critique template {template!r}; valid: {', '.join(TEMPLATES)}")
    if template == CritiquePrompt.PAPER:
        return PAPER_CRITIQUE_TEMPLATE.format(question=question.strip(), solution=solution.strip("\n"))
    template = TINY_CRITIQUE_TEMPLATE if style == PromptStyle.TINY else CRITIQUE_TEMPLATE
    return template.format(question=question.strip(), solution=solution.strip("\n"))
