"""Prompt templates carry the paper's wording and the format instructions."""

from dataclasses import replace

import pytest

from crlab.data.prompts import code_prompt, critique_prompt
from crlab.data.sources import load_problems
from crlab.data.tiny import generate_tiny_problems
from crlab.rewards.spec import TestSpec

CRITIQUE_OPENING = (
    "You will be given a question (problem specification) and a submitted solution. Your task is to "
    "determine whether the solution is correct and fully satisfies the specification."
)
STDIN_PHRASE = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on "
    "the sample inputs). Enclose your code within delimiters as follows."
)
STARTER_PHRASE = (
    "You will use the following starter code to write the solution to the problem and enclose your code "
    "within delimiters."
)


def test_critique_prompt_qwen3():
    text = critique_prompt("Print a + b.", "print(1)\n")
    assert text.startswith(CRITIQUE_OPENING)
    assert "Print a + b." in text and "```python\nprint(1)\n```" in text
    assert "\\conclusion{T}" in text and "\\conclusion{F}" in text


def test_code_prompt_stdin_and_functional(tmp_path):
    stdin = generate_tiny_problems(1)[0]
    text = code_prompt(stdin)
    assert stdin.question in text and STDIN_PHRASE in text and "```python\n# YOUR CODE HERE\n```" in text
    spec = TestSpec(kind="functional", inputs=("[1]",), outputs=("1",), fn_name="f")
    functional = replace(stdin, starter_code="class Solution:\n    def f(self):\n", spec=spec)
    text = code_prompt(functional)
    assert STARTER_PHRASE in text and "class Solution:\n    def f(self):" in text


def test_code_prompt_humaneval_shows_the_function_header():
    problem = load_problems("humaneval")[0]
    assert "def has_close_elements" in code_prompt(problem)


def test_tiny_style_is_short():
    problem = generate_tiny_problems(1)[0]
    code = code_prompt(problem, style="tiny")
    crit = critique_prompt(problem.question, problem.solutions[0], style="tiny")
    assert problem.question in code and len(code) < 160
    assert "\\conclusion{T}" in crit and "\\conclusion{F}" in crit and len(crit) < 300


def test_unknown_style():
    with pytest.raises(ValueError, match="valid: qwen3, tiny"):
        critique_prompt("q", "s", style="long")
