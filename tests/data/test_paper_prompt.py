"""``data.crl_prompt: paper``: App. A, Table 6 of the paper, word for word, for every prompt style."""

from __future__ import annotations

import pytest

from crlab.data.prompts import critique_prompt

TABLE_6 = (
    "You will be given a question (problem specification) and a submitted solution. Your task is to "
    "determine whether the solution is correct and fully satisfies the specification.\n\n"
    "Question: Add two numbers.\n"
    "Solution: a, b = map(int, input().split())\nprint(a + b)\n"
    "Conclude with \\conclusion{T} for correct, \\conclusion{F} for wrong."
)


@pytest.mark.parametrize("style", ["qwen3", "tiny"])
def test_the_paper_template(style: str) -> None:
    solution = "\na, b = map(int, input().split())\nprint(a + b)\n"
    assert critique_prompt("  Add two numbers.\n", solution, style, "paper") == TABLE_6


def test_the_platform_template_stays_the_default() -> None:
    prompt = critique_prompt("Q", "print(1)")
    assert prompt == critique_prompt("Q", "print(1)", "qwen3", "platform")
    assert "### Question:" in prompt and "```python" in prompt and "Reason step by step" in prompt
    with pytest.raises(ValueError, match="unknown critique template 'table6'"):
        critique_prompt("Q", "print(1)", template="table6")
