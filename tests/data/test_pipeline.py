"""The paper's data preparation: test filtering, the RL/CRL split, rStar-style rows, CRL rows from
candidates run in the real sandbox."""

from __future__ import annotations

import json

import pytest

from crlab.data.crl import load_crl_rows
from crlab.data.crl_build import BuildCounts, balance, label_candidates, skew_warning
from crlab.data.formats import load_livecodebench, load_rstar
from crlab.data.pipeline import filter_tests, problem_row, split_problems, write_jsonl
from crlab.data.problems import Problem
from crlab.data.sources import load_problems
from crlab.errors import CrlabError
from crlab.rewards.spec import TestSpec


def stdin_problem(pid: str, inputs: list[str]) -> Problem:
    spec = TestSpec(
        kind="stdin", inputs=tuple(inputs), outputs=tuple(x.upper() for x in inputs), problem_id=pid
    )
    return Problem(id=pid, question=f"Upper-case {pid}.", spec=spec, source="rstar")


def test_filter_keeps_short_tests_and_samples_per_problem_seeded():
    long = "x" * 60
    problems = [
        stdin_problem("a", [f"t{i}\n" for i in range(10)] + [long]),  # 10 short, 1 long
        stdin_problem("b", [long, long]),  # nothing short: dropped
        stdin_problem("c", ["q\n"]),
    ]
    count = len  # one token per character, so "t3\n" + "T3\n" is 6 tokens and long + LONG is 120
    kept, counts = filter_tests(problems, count, max_tokens=100, per_problem=4, seed=7)
    assert [p.id for p in kept] == ["a", "c"]
    assert counts.to_json() == {
        "problems_before": 3, "problems_after": 2, "tests_before": 14, "tests_too_long": 3, "tests_after": 5,
    }  # fmt: skip
    picked = kept[0].spec.inputs
    assert len(picked) == 4 and list(picked) == sorted(picked, key=lambda t: int(t[1:]))  # original order
    assert [o for o in kept[0].spec.outputs] == [i.upper() for i in picked]  # pairs stay together
    again, _ = filter_tests(problems, count, max_tokens=100, per_problem=4, seed=7)
    other, _ = filter_tests(problems, count, max_tokens=100, per_problem=4, seed=8)
    assert again[0].spec.inputs == picked and other[0].spec.inputs != picked


def test_split_is_disjoint_seeded_and_takes_the_share():
    problems = [stdin_problem(f"p{i}", ["a\n"]) for i in range(50)]
    rl, crl = split_problems(problems, 0.2, seed=1)
    assert len(crl) == 10 and len(rl) == 40
    assert {p.id for p in rl}.isdisjoint({p.id for p in crl}) and {p.id for p in rl + crl} == {
        p.id for p in problems
    }
    assert [p.id for p in split_problems(problems, 0.2, seed=1)[1]] == [p.id for p in crl]
    with pytest.raises(CrlabError, match="appears more than once"):
        split_problems(problems + problems[:1], 0.2)
    with pytest.raises(CrlabError, match="between 0 and 1"):
        split_problems(problems, 1.5)


def test_rstar_rows_read_back_to_the_same_problems(tmp_path):
    from tests.data.test_formats import LCB_FUNCTIONAL, LCB_STDIN
    from tests.data.test_formats import write_jsonl as write_rows

    problems = load_livecodebench(
        write_rows(tmp_path / "lcb.jsonl", [LCB_STDIN, LCB_FUNCTIONAL])
    ) + load_problems("tiny:3")
    path = write_jsonl(tmp_path / "out.jsonl", [problem_row(p) for p in problems])
    back = load_rstar(path)
    assert [(p.id, p.spec.kind, p.spec.inputs, p.spec.outputs, p.spec.fn_name) for p in back] == [
        (p.id, p.spec.kind, p.spec.inputs, p.spec.outputs, p.spec.fn_name) for p in problems
    ]
    with pytest.raises(CrlabError, match="assert-style"):
        problem_row(load_problems("humaneval")[0])


def test_problem_rows_have_the_published_seed_testcase_columns(tmp_path):
    from tests.data.test_formats import LCB_FUNCTIONAL, LCB_STDIN, SEED_FUNCTIONAL, SEED_STDIN
    from tests.data.test_formats import write_jsonl as write_rows

    stdin, func = load_livecodebench(write_rows(tmp_path / "lcb.jsonl", [LCB_STDIN, LCB_FUNCTIONAL]))
    s_row, f_row = problem_row(stdin), problem_row(func)
    published = {"question_id", "question", "starter_code", "inputs", "outputs", "func_name", "class_name"}
    assert published <= s_row.keys() and "fn_name" not in s_row and "fn_name" not in f_row
    assert (s_row["func_name"], s_row["class_name"]) == ("", "")
    assert (s_row["inputs"], s_row["outputs"]) == ('["1 2\\n", "5 5\\n"]', '["3\\n", "10\\n"]')
    assert (f_row["func_name"], f_row["class_name"]) == ("twoSum", "Solution")
    assert json.loads(f_row["inputs"]) == ["[[2, 7, 11, 15], 9]", "[[3, 2, 4], 6]"]  # JSON texts in JSON text
    assert json.loads(f_row["outputs"]) == ["[0, 1]", "[1, 2]"]
    # the same encoding as the published rows: each value is a string, as in SEED_FUNCTIONAL / SEED_STDIN
    for ours, theirs in ((f_row, SEED_FUNCTIONAL), (s_row, SEED_STDIN)):
        assert {k: type(ours[k]) for k in published} == {k: type(theirs[k]) for k in published}
    # a functional problem without class Solution in its starter code: class_name ""
    top = problem_row(
        Problem(id="t", question="q", spec=func.spec, source="rstar", starter_code="def twoSum(")
    )
    assert (top["func_name"], top["class_name"]) == ("twoSum", "")
    # older files (fn_name, lists) still read to the same problem
    old = {**f_row, "fn_name": "twoSum", "inputs": json.loads(f_row["inputs"])}
    del old["func_name"], old["class_name"]
    again, back = load_rstar(write_rows(tmp_path / "rows.jsonl", [f_row, old]))
    assert again.spec == back.spec == func.spec


def test_candidates_are_labelled_by_running_them(tmp_path, sandbox):
    problem = load_problems("tiny:1")[0]
    right = problem.solutions[0].rstrip("\n") + "\n"  # as extract_code returns a block
    wrong = "print('nope')\n"
    responses = {
        problem.id: [
            f"```python\n{right}```",
            f"```python\n{right}```",
            "no code here",
            f"```python\n{wrong}```",
        ]
    }
    rows, counts = label_candidates([problem], responses, sandbox, "response", {"generator": "test"})
    assert [(r["solution"], r["label"], r["pass_rate"]) for r in rows] == [
        (right, True, 1.0),
        (wrong, False, 0.0),
    ]
    assert (counts.candidates, counts.no_code, counts.duplicates) == (4, 1, 1)
    assert (counts.labelled_true, counts.labelled_false) == (1, 1)
    assert rows[0]["provenance"] == {"generator": "test", "threshold": 0.8} and rows[0]["tests"] == len(
        problem.spec
    )
    path = write_jsonl(tmp_path / "crl.jsonl", rows)
    read = load_crl_rows(path, style="tiny")
    assert [(r.solution, r.label) for r in read] == [
        (right, True),
        (wrong, False),
    ] and "\\conclusion" in read[0].prompt


def test_balance_and_the_skew_warning():
    rows = [{"label": True, "i": i} for i in range(8)] + [{"label": False, "i": i} for i in range(8, 10)]
    kept = balance(rows, seed=0)
    assert (
        sum(r["label"] for r in kept) == 2 and len(kept) == 4 and kept == sorted(kept, key=lambda r: r["i"])
    )
    assert "95% of the labels are True" in skew_warning(BuildCounts(labelled_true=19, labelled_false=1))
    assert "95% of the labels are False" in skew_warning(BuildCounts(labelled_true=1, labelled_false=19))
    assert skew_warning(BuildCounts(labelled_true=1, labelled_false=2)) is None
    assert "no candidate had code" in skew_warning(BuildCounts())
    assert json.dumps(BuildCounts().to_json())
