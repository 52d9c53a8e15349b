"""The bundled tiny task: determinism, splits, SFT examples, and every problem checked in the sandbox."""

import re

import pytest

from crlab.data.crl import CRLRow, build_crl_rows
from crlab.data.tiny import generate_tiny_problems, sft_examples, tiny_splits
from crlab.data.tiny_templates import TEMPLATES


def template_of(problem):
    """The template whose question pattern (constants as wildcards) matches the problem's question."""
    names = [
        t.name
        for t in TEMPLATES
        if re.fullmatch(re.sub(r"\\\{\w+\\\}", ".+?", re.escape(t.question)), problem.question)
    ]
    assert len(names) == 1, (problem.question, names)
    return names[0]


def test_deterministic_for_a_seed_and_prefix_stable():
    assert generate_tiny_problems(30, seed=0) == generate_tiny_problems(30, seed=0)
    assert generate_tiny_problems(30, seed=0) != generate_tiny_problems(30, seed=1)
    # the order does not depend on n: the first 10 of 40 are the 10
    assert generate_tiny_problems(40, seed=2)[:10] == generate_tiny_problems(10, seed=2)


def test_shape_of_problems():
    problems = generate_tiny_problems(100, seed=0)
    assert [p.id for p in problems[:2]] == ["tiny-0000", "tiny-0001"]
    for p in problems:
        assert p.source == "tiny" and p.spec.kind == "stdin" and p.spec.problem_id == p.id
        assert 5 <= len(p.spec.inputs) == len(p.spec.outputs) <= 8
        assert len(set(p.spec.inputs)) == len(p.spec.inputs)
        assert len(p.solutions) == 1 and 2 <= len(p.wrong_solutions) <= 3
    # round-robin over templates: the first 10 problems come from 10 different families
    assert len({template_of(p) for p in problems[:10]}) == 10


def test_splits_are_disjoint():
    everything = {p.question for p in generate_tiny_problems(398, split="all")}
    train = {p.question for p in tiny_splits(300, 70)[0]}
    held = {p.question for p in tiny_splits(300, 70)[1]}
    assert not train & held and train | held <= everything
    assert all(p.id.startswith("tiny-eval-") for p in tiny_splits(2, 2)[1])
    with pytest.raises(ValueError, match="distinct problems; asked for 100000"):
        generate_tiny_problems(100000)


def test_the_held_out_split_is_val_plus_test_and_they_are_disjoint():
    from crlab.data.sources import load_problems

    val, test = load_problems("tiny-val"), load_problems("tiny-test")
    held_out = generate_tiny_problems(len(val) + len(test), split="eval")
    questions = lambda problems: {p.question for p in problems}  # noqa: E731
    assert (len(val), len(test)) == (20, 53)  # every instance of each part
    assert not questions(val) & questions(test)
    assert questions(val) | questions(test) == questions(held_out)
    assert val[0].id == "tiny-val-0000" and test[0].id == "tiny-test-0000"
    assert [p.id for p in load_problems("tiny-test:5")] == [p.id for p in test[:5]]
    with pytest.raises(ValueError, match="'val' split has 20 distinct problems"):
        generate_tiny_problems(21, split="val")


def test_sft_examples_are_short_and_end_right():
    problems = generate_tiny_problems(398, split="all")
    rows = [
        CRLRow(p.id, p.question, p.wrong_solutions[0], label, 0.5, f"judge {p.id}")
        for p, label in zip(problems[:4], [True, False, True, False], strict=True)
    ]
    examples = sft_examples(problems, rows)
    assert len(examples) == len(problems) + 4
    for prompt, target in examples[: len(problems)]:
        assert target.startswith("```python\n") and target.endswith("\n```")
        assert len(prompt) + len(target) < 300  # fits a 512-token context even character by character
    assert [t.endswith("\\conclusion{T}") for _, t in examples[len(problems) :]] == [True, False, True, False]


@pytest.mark.parametrize("seed", [0, 1])
def test_references_pass_and_some_candidate_fails_in_the_sandbox(sandbox, seed):
    # the "all" split interleaves templates round-robin: the first len(TEMPLATES) problems are one per family
    problems = generate_tiny_problems(len(TEMPLATES), seed=seed, split="all")
    assert {template_of(p) for p in problems} == {t.name for t in TEMPLATES}
    rows = build_crl_rows(problems, sandbox, max_tests=None, style="tiny")
    for p in problems:
        mine = {r.solution: r for r in rows if r.problem_id == p.id}
        assert mine[p.solutions[0]].pass_rate == 1.0, p
        assert min(mine[w].pass_rate for w in p.wrong_solutions) < 1.0, p
    rates = {round(r.pass_rate, 2) for r in rows}
    assert any(0.0 < rate < 1.0 for rate in rates)  # some wrong candidates pass a subset
