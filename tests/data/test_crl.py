"""CRL rows: labels come from running the candidates, never from the list they were listed in."""

from dataclasses import dataclass

import pytest

from crlab.data.crl import build_crl_rows, load_crl_candidates
from crlab.data.problems import DataFormatError, Problem
from crlab.data.tiny import generate_tiny_problems
from crlab.rewards.spec import TestSpec


@dataclass
class FakeResult:
    pass_rate: float


class FakeSandbox:
    """Pass rates looked up by program text; records each run_many call."""

    def __init__(self, rates):
        self.rates = rates
        self.calls = []

    def run_many(self, jobs, max_tests=None):
        self.calls.append((len(jobs), max_tests))
        return [FakeResult(self.rates[program]) for program, _ in jobs]


SPEC = TestSpec(kind="stdin", inputs=("1\n",), outputs=("1\n",), problem_id="p")
PROBLEM = Problem(
    id="p",
    question="Echo n.",
    spec=SPEC,
    source="test",
    solutions=("good", "listed-good-fails"),
    wrong_solutions=("listed-wrong-passes", "at-threshold", "bad"),
)
RATES = {
    "good": 1.0,  # passes everything -> True
    "listed-good-fails": 0.5,  # in `solutions` but fails half -> False
    "listed-wrong-passes": 0.9,  # in `wrong_solutions` but 0.9 > 0.8 -> True
    "at-threshold": 0.8,  # 0.8 is not above 0.8 -> False
    "bad": 0.0,  # -> False
    "extra": 1.0,  # from a candidates file -> True
}


def test_labels_come_from_running():
    sandbox = FakeSandbox(RATES)
    rows = build_crl_rows([PROBLEM], sandbox, threshold=0.8, max_tests=10)
    assert [(r.solution, r.label, r.pass_rate) for r in rows] == [
        ("good", True, 1.0),
        ("listed-good-fails", False, 0.5),
        ("listed-wrong-passes", True, 0.9),
        ("at-threshold", False, 0.8),
        ("bad", False, 0.0),
    ]
    assert sandbox.calls == [(5, 10)]
    assert all(r.problem_id == "p" and "Echo n." in r.prompt and r.solution in r.prompt for r in rows)


def test_candidates_batches_and_threshold():
    sandbox = FakeSandbox(RATES)
    # "good" again is a duplicate (run once); "extra" is added; ids not in the problem set are skipped
    extra = {"p": ["good", "extra"], "unknown-id": ["x"]}
    rows = build_crl_rows([PROBLEM], sandbox, threshold=0.95, candidates=extra, batch_size=4, style="tiny")
    assert [r.solution for r in rows] == [
        "good",
        "listed-good-fails",
        "listed-wrong-passes",
        "at-threshold",
        "bad",
        "extra",
    ]
    assert sandbox.calls == [(4, 10), (2, 10)]
    # threshold 0.95: only the 1.0 candidates are labelled correct
    assert [r.label for r in rows] == [True, False, False, False, False, True]
    assert rows[0].prompt.startswith("Is the solution correct?")


def test_load_crl_candidates(tmp_path):
    path = tmp_path / "cands.jsonl"
    path.write_text(
        '{"problem_id": "p", "solution": "a"}\n\n{"problem_id": "p", "solution": "b"}\n'
        '{"problem_id": "q", "solution": "c"}\n'
    )
    assert load_crl_candidates(path) == {"p": ["a", "b"], "q": ["c"]}
    path.write_text('{"problem_id": "p", "solution": "a"}\n{"problem_id": "p"}\n')
    with pytest.raises(DataFormatError, match=r"cands\.jsonl:2: field 'solution'"):
        load_crl_candidates(path)


def test_real_sandbox_labels_a_listed_wrong_candidate_true(sandbox):
    # "print it 2 times": the listed-wrong `s + s` is in fact right -> True; `s * (2 - 1)` fails -> False
    problem = next(p for p in generate_tiny_problems(398, split="all") if "Print it 2 times" in p.question)
    rows = build_crl_rows([problem], sandbox, max_tests=None)
    labels = {r.solution.splitlines()[-1]: (r.label, r.pass_rate) for r in rows}
    assert labels == {
        "print(s * 2)": (True, 1.0),
        "print(s * (2 - 1))": (False, 0.0),
        "print(s + s)": (True, 1.0),
    }
