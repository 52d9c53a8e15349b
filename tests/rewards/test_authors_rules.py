"""The authors' reward rules, as switches: code extraction ``joined``, conclusion parsing ``authors``, the
two-pass time limit (FallbackRunner). Cases worked out by hand from their release (verl_tool
reward_manager/crl.py, verl prime_code); the extraction is also checked against a reference written from
their three regular expressions, on random responses."""

from __future__ import annotations

import ast
import random
import re

import pytest

from crlab.rewards import ProgramResult, TestResult, Verdict, critique_reward, parse_conclusion
from crlab.rewards.code import FallbackRunner, authors_code, extract_code, score_code_responses

F = "```"
JOINED_CASES = [
    # (response, joined, last)
    # closed think blocks are removed; one block outside
    (
        f"<think>\n{F}python\nprint(0)\n{F}\n</think>\nAnswer:\n{F}python\nprint(1)\n{F}",
        "print(1)\n",
        "print(1)\n",
    ),
    # every parsable block outside thinking, joined with a newline (each keeps its own newlines)
    (
        f"{F}python\nimport sys\n{F}\nthen\n{F}python\nprint(sys.argv)\n{F}",
        "import sys\n\n\nprint(sys.argv)\n",
        "print(sys.argv)\n",
    ),
    # a block that does not parse is left out
    (f"{F}python\ndef f(:\n{F}\n{F}python\nprint(2)\n{F}", "print(2)\n", "print(2)\n"),
    # a truncated (unclosed) think block stays: the code written while thinking scores
    (f"<think>\nLet me try\n{F}python\nprint(3)\n{F}\nhmm", "print(3)\n", None),
    # ```python3: the pattern ends at 'python', so the body starts with '3' (which parses)
    (f"{F}python3\nprint(4)\n{F}", "3\nprint(4)\n", "print(4)\n"),
    # ```py, a bare fence, another language: not theirs
    (f"{F}py\nprint(5)\n{F}", None, "print(5)\n"),
    (f"{F}\nprint(5)\n{F}", None, "print(5)\n"),
    (f"{F}cpp\nint main() {{}}\n{F}", None, None),
    # <python> tags come first: the fences are not looked at
    (f"<python>print(6)</python>\n{F}python\nprint(7)\n{F}", "print(6)\n", "print(7)\n"),
    # an unclosed last block is dropped
    (f"{F}python\nprint(8)\n{F}\n{F}python\nprint(9)", "print(8)\n", "print(8)\n"),
    # a newline between the backticks and 'python' still opens a block
    (f"{F}\npython\nprint(10)\n{F}", "print(10)\n", "python\nprint(10)\n"),
    # a closed think block, code, then a truncated one with more code: both blocks count
    (f"<think>a</think>{F}python\nx=1\n{F}<think>b\n{F}python\ny=2\n{F}", "x=1\n\n\ny=2\n", "x=1\n"),
    # verl's prime_code keeps what follows the last ```python inside the joined code
    ("<python>s = '```python'\nprint(s)</python>", "'\nprint(s)\n", None),
    # only the text after the last '<|im_start|>assistant' is read
    (f"{F}python\nprint(1)\n{F}<|im_start|>assistant\n{F}python\nprint(2)\n{F}", "print(2)\n", "print(2)\n"),
    # blank: no code (their harness scores an empty program 0: its wrapped function has no body)
    (f"{F}python\n\n{F}", None, None),
    ("no code at all", None, None),
    ("", None, None),
]


@pytest.mark.parametrize("response,joined,last", JOINED_CASES)
def test_extraction_rules(response: str, joined: str | None, last: str | None) -> None:
    assert extract_code(response, "joined") == joined
    assert extract_code(response, "last") == last
    assert extract_code(response) == last  # the platform's rule stays the default


def test_unknown_extraction_rule() -> None:
    with pytest.raises(ValueError, match="rule must be one of"):
        extract_code("x", "first")


def _reference(action: str) -> str:
    """Their steps, with their patterns (crl.py __call__ and parse_code, prime_code compute_score)."""
    action = re.sub(r"<think>(.|\n)*?</think>", "", action)
    found = re.findall(r"```\n?python(.*?)```", action, re.DOTALL)
    if not re.findall(r"<python>(.*?)</python>", action, re.DOTALL) and not found:
        return ""
    start = action.rfind("<|im_start|>assistant")
    last_turn = action if start == -1 else action[start:]
    blocks = re.findall(r"<python>(.*?)</python>", last_turn, re.DOTALL)
    if not blocks:
        blocks = re.findall(r"```\n?python(.*?)```", last_turn, re.DOTALL)
    if not blocks:
        return ""

    def parses(code: str) -> bool:
        try:
            ast.parse(code)
        except Exception:
            return False
        return True

    code = "\n".join(c for c in blocks if parses(c)).strip(" \n")
    return code.split("```python")[-1].split("```")[0]


PIECES = ["<think>", "</think>", "<python>", "</python>", F, "python", "\n", "x = 1", " ", "(", "3"]
PIECES += ["<|im_start|>assistant", "print(x)", "```python\n"]


@pytest.mark.filterwarnings("ignore::SyntaxWarning")
def test_joined_matches_their_regular_expressions_on_random_responses() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        response = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 30)))
        assert authors_code(response) == _reference(response), response


def test_joined_is_linear_on_many_unclosed_tags() -> None:
    assert authors_code("<think>" * 5000 + "x" * 100_000) == ""
    assert authors_code("<python>" * 5000 + f"{F}python\nprint(1)\n{F}") == "print(1)"


CONCLUSION_CASES = [
    # (text, authors, exact)
    ("\\conclusion{T}", True, True),
    ("\\conclusion{F}", False, False),
    ("\\conclusion{True}", True, True),
    ("\\conclusion{False}", False, False),  # no capital T in 'False'
    ("\\conclusion{TRUE or FALSE}", True, None),  # 'T' is looked for first
    ("\\conclusion{FT}", True, None),
    ("\\conclusion{Not True}", True, None),
    ("\\conclusion{t}", None, True),  # lower case: neither letter
    ("\\conclusion{correct}", None, True),
    ("\\conclusion{wrong}", None, False),
    ("\\conclusion{\\text{T}}", True, None),  # theirs stops at the first '}'
    ("\\conclusion{ T }", True, True),
    ("\\conclusion {T}", None, True),  # theirs allows no space before the brace
    ("\\conclusion{T\n}", None, True),  # nor a newline inside
    ("\\conclusion{T} on reflection \\conclusion{F}", False, False),  # the last one counts
    ("\\conclusion{F}\n\\conclusion{maybe}", None, None),  # even when unreadable
    ("<think>\\conclusion{T}</think> no final verdict", True, True),  # thinking is not removed
    ("no conclusion", None, None),
]


@pytest.mark.parametrize("text,authors,exact", CONCLUSION_CASES)
def test_conclusion_rules(text: str, authors: bool | None, exact: bool | None) -> None:
    assert parse_conclusion(text, "authors") is authors
    assert parse_conclusion(text, "exact") is exact
    assert parse_conclusion(text) is exact
    for label in (True, False):
        assert critique_reward(text, label, "authors") == (1.0 if authors is label else 0.0)


def test_unknown_conclusion_rule() -> None:
    with pytest.raises(ValueError, match="rule must be one of"):
        parse_conclusion("\\conclusion{T}", "loose")


def _result(*verdicts: Verdict) -> ProgramResult:
    return ProgramResult(tuple(TestResult(v, 0.1) for v in verdicts))


class _Pool:
    """A stand-in sandbox: the program text names the verdicts it gets from this pool."""

    def __init__(self, time_limit_s: float, verdicts: dict[str, ProgramResult]) -> None:
        self.time_limit_s, self.verdicts, self.calls = time_limit_s, verdicts, []
        self.entered = self.exited = 0

    def __enter__(self) -> _Pool:
        self.entered += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.exited += 1

    def run_many(self, jobs, max_tests=None):  # noqa: ANN001, ANN201
        self.calls.append(([program for program, _ in jobs], max_tests))
        return [self.verdicts[program] for program, _ in jobs]


P, W, T = Verdict.PASSED, Verdict.WRONG_ANSWER, Verdict.TIMEOUT


def test_fallback_reruns_only_what_did_not_pass_everything() -> None:
    fast = _Pool(5.0, {"ok": _result(P, P), "slow": _result(P, T), "wrong": _result(W, P), "none": _result()})
    slow = _Pool(20.0, {"slow": _result(P, P), "wrong": _result(W, P)})
    with FallbackRunner(fast, slow) as runner:
        out = runner.run_many([(name, None) for name in ("ok", "slow", "wrong", "none")], max_tests=10)
        assert runner.run("ok", None).pass_rate == 1.0
    assert [r.pass_rate for r in out] == [
        1.0,
        1.0,
        0.5,
        0.0,
    ]  # 'slow' passes at 20 s: its second result counts
    assert slow.calls == [(["slow", "wrong"], 10)]  # the same first max_tests tests, again
    assert fast.calls[0] == (["ok", "slow", "wrong", "none"], 10)
    assert (fast.entered, fast.exited, slow.entered, slow.exited) == (1, 1, 1, 1)
    assert runner.time_limit_s == 5.0


def test_score_code_responses_with_the_joined_rule() -> None:
    pool = _Pool(5.0, {"3\nprint(4)\n": _result(P, W)})
    responses = [f"{F}python3\nprint(4)\n{F}", f"{F}py\nprint(5)\n{F}"]
    assert score_code_responses(pool, responses, [None, None], extraction="joined") == [0.5, 0.0]
    assert pool.calls == [(["3\nprint(4)\n"], 10)]  # no code: not run, reward 0
