"""extract_code, code_reward, score_code_responses, parse_conclusion, critique_reward, crl_label."""

from __future__ import annotations

import pytest

from crlab.rewards import (
    ProgramResult,
    TestResult,
    TestSpec,
    Verdict,
    code_reward,
    critique_reward,
    crl_label,
    extract_code,
    parse_conclusion,
    score_code_responses,
)

F = "```"
EXTRACT_CASES = [
    # one python block
    (f"Here:\n{F}python\nprint(1)\n{F}\n", "print(1)\n"),
    # the last python block wins
    (f"{F}python\nprint(1)\n{F}\nbetter:\n{F}python\nprint(2)\n{F}", "print(2)\n"),
    # blocks inside <think> are ignored
    (
        f"<think>\n{F}python\nprint('draft')\n{F}\n</think>\n{F}python\nprint('final')\n{F}",
        "print('final')\n",
    ),
    # only a block inside <think>: no code
    (f"<think>{F}python\nprint(1)\n{F}</think>The answer is above.", None),
    # reasoning opened in the prompt: only text after </think> counts
    (f"{F}python\nprint('draft')\n{F}\n</think>\n{F}python\nprint('final')\n{F}", "print('final')\n"),
    # reasoning never closed (truncated response): nothing counts
    (f"<think>\nlet me think\n{F}python\nprint(1)\n{F}", None),
    # py and python3 tags, any case
    (f"{F}Py\nx = 1\n{F}", "x = 1\n"),
    (f"{F}python3\nx = 3\n{F}", "x = 3\n"),
    # a bare fence is used when no block is tagged python
    (f"{F}\nprint(5)\n{F}", "print(5)\n"),
    # a tagged block is preferred over a later bare one
    (f"{F}python\nprint(1)\n{F}\n{F}\noutput: 1\n{F}", "print(1)\n"),
    # other languages are not python
    (f"{F}cpp\nint main() {{}}\n{F}", None),
    # unclosed final block (truncated): not used
    (f"{F}python\nprint(1)\n{F}\n{F}python\nprint(2", "print(1)\n"),
    # indentation inside the block is kept
    (f"{F}python\ndef f():\n    return 1\n{F}", "def f():\n    return 1\n"),
    # an empty block is no code
    (f"{F}python\n\n{F}", None),
    # no fence at all
    ("print(1)", None),
    # empty response
    ("", None),
    # not a string
    (None, None),
]


@pytest.mark.parametrize(("response", "code"), EXTRACT_CASES)
def test_extract_code(response, code):
    assert extract_code(response) == code


CONCLUSION_CASES = [
    # T / F
    (r"... \conclusion{T}", True),
    (r"... \conclusion{F}", False),
    # words, any case, with whitespace
    (r"\conclusion{ True }", True),
    (r"\conclusion{false}", False),
    (r"\conclusion{Correct}", True),
    (r"\conclusion{WRONG}", False),
    (r"\conclusion { T }", True),
    (r"\conclusion{\nF\n}", None),  # a literal backslash-n is not whitespace
    ("\\conclusion{\nF\n}", False),  # real newlines are
    # the last conclusion wins
    (r"\conclusion{T} on reflection \conclusion{F}", False),
    # the last one decides even when unreadable
    (r"\conclusion{T} \conclusion{maybe}", None),
    # anything else
    (r"\conclusion{}", None),
    (r"\conclusion{yes}", None),
    (r"\conclusion{TF}", None),
    # no conclusion
    ("The code is correct.", None),
    (r"\boxed{T}", None),
    # not a string
    (None, None),
]


@pytest.mark.parametrize(("text", "judged"), CONCLUSION_CASES)
def test_parse_conclusion(text, judged):
    assert parse_conclusion(text) is judged


REWARD_CASES = [
    # right judgment of a correct solution
    (r"\conclusion{T}", True, 1.0),
    # right judgment of a wrong solution
    (r"\conclusion{F}", False, 1.0),
    # wrong judgments
    (r"\conclusion{T}", False, 0.0),
    (r"\conclusion{F}", True, 0.0),
    # no readable judgment scores 0 whatever the label
    ("no idea", True, 0.0),
    ("no idea", False, 0.0),
]


@pytest.mark.parametrize(("text", "label", "reward"), REWARD_CASES)
def test_critique_reward(text, label, reward):
    assert critique_reward(text, label) == reward


@pytest.mark.parametrize(
    ("rate", "threshold", "label"),
    [
        (1.0, 0.8, True),  # all tests pass
        (0.9, 0.8, True),  # above the threshold
        (0.8, 0.8, False),  # exactly the threshold is not above it
        (0.0, 0.8, False),  # nothing passes
        (0.5, 0.4, True),  # custom threshold
    ],
)
def test_crl_label(rate, threshold, label):
    assert crl_label(rate, threshold) is label


def _result(*verdicts):
    return ProgramResult(tuple(TestResult(Verdict(v), 0.0) for v in verdicts))


@pytest.mark.parametrize(
    ("result", "mode", "reward"),
    [
        (None, "pass_rate", 0.0),  # no code
        (None, "all_or_nothing", 0.0),
        (_result(), "pass_rate", 0.0),  # no tests
        (_result("passed", "passed"), "pass_rate", 1.0),
        (_result("passed", "wrong_answer", "timeout", "passed"), "pass_rate", 0.5),
        (_result("passed", "wrong_answer"), "all_or_nothing", 0.0),
        (_result("passed", "passed"), "all_or_nothing", 1.0),
    ],
)
def test_code_reward(result, mode, reward):
    assert code_reward(result, mode) == reward


def test_code_reward_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        code_reward(_result("passed"), "partial")


class _FakeSandbox:
    def __init__(self):
        self.calls = []

    def run_many(self, jobs, max_tests=None):
        self.calls.append((list(jobs), max_tests))
        return [_result("passed", "wrong_answer") for _ in jobs]


def test_score_code_responses_batches_and_skips_missing_code():
    spec = TestSpec(kind="stdin", inputs=("1",), outputs=("1",))
    fake = _FakeSandbox()
    responses = [f"{F}python\nprint(1)\n{F}", "no code here", f"{F}python\nprint(2)\n{F}"]
    assert score_code_responses(fake, responses, [spec] * 3) == [0.5, 0.0, 0.5]
    ((jobs, max_tests),) = fake.calls
    assert [code for code, _ in jobs] == ["print(1)\n", "print(2)\n"] and max_tests == 10


def test_score_code_responses_checks_lengths():
    with pytest.raises(ValueError):
        score_code_responses(_FakeSandbox(), ["a"], [])


def test_score_code_responses_in_a_real_sandbox(sandbox):
    spec = TestSpec(
        kind="stdin",
        inputs=tuple(f"{i}\n" for i in range(12)),
        outputs=tuple(f"{2 * i}\n" for i in range(12)),
    )
    good = f"{F}python\nprint(2 * int(input()))\n{F}"
    half = f"{F}python\nn = int(input())\nprint(2 * n if n < 5 else n)\n{F}"
    assert score_code_responses(sandbox, [good, half, "none"], [spec] * 3) == [1.0, 0.5, 0.0]
    assert score_code_responses(sandbox, [half], [spec], mode="all_or_nothing") == [0.0]
