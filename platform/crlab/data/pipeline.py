"""The paper's data preparation, as pure functions over problems (the CLI is `platform data ...`).

- :func:`filter_tests`: keep the tests of at most ``max_tokens`` tokens (input and expected output counted
  together, by a given tokenizer), then at most ``per_problem`` of them, sampled with a seeded RNG
  (Critique-Coder §3.1: tests of at most 200 tokens, 30 sampled per problem). A problem left with no test
  is dropped.
- :func:`split_problems`: the paper's conversion: a fixed share of the problems (seeded) becomes the CRL
  pool, the rest the RL pool; no problem is in both.
- :func:`problem_row` writes a problem back as a row of rStar-Coder's published ``seed_testcase`` shape, which
  ``rstar:FILE`` reads, so filtered and split sets are ordinary sources.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from crlab.data.problems import Problem
from crlab.errors import CrlabError
from crlab.rewards.spec import TestKind, TestSpec


@dataclass(frozen=True)
class FilterCounts:
    problems_before: int
    problems_after: int
    tests_before: int
    tests_too_long: int
    tests_after: int

    def to_json(self) -> dict:
        return dict(self.__dict__)


def filter_tests(
    problems: Sequence[Problem], count_tokens: Callable[[str], int], max_tokens: int = 200,
    per_problem: int = 30, seed: int = 0,
) -> tuple[list[Problem], FilterCounts]:  # fmt: skip
    """Short tests only, at most ``per_problem`` per problem (a seeded sample, in the original order)."""
    rng = random.Random(seed)
    kept, before, too_long, after = [], 0, 0, 0
    for problem in problems:
        spec = problem.spec
        if spec.kind == TestKind.ASSERT:
            raise CrlabError(
                f"problem {problem.id}: assert-style tests (HumanEval) cannot be filtered per test"
            )
        before += len(spec.inputs)
        short = [
            i for i in range(len(spec.inputs)) if count_tokens(spec.inputs[i] + spec.outputs[i]) <= max_tokens
        ]
        too_long += len(spec.inputs) - len(short)
        if len(short) > per_problem:
            short = sorted(rng.sample(short, per_problem))
        if not short:
            continue
        after += len(short)
        new_spec = replace(
            spec, inputs=tuple(spec.inputs[i] for i in short), outputs=tuple(spec.outputs[i] for i in short)
        )
        kept.append(replace(problem, spec=new_spec))
    return kept, FilterCounts(len(problems), len(kept), before, too_long, after)


def split_problems(
    problems: Sequence[Problem], crl_share: float, seed: int = 0
) -> tuple[list[Problem], list[Problem]]:
    """(RL pool, CRL pool): ``round(crl_share * n)`` problems, drawn with a seeded RNG, go to the CRL pool;
    both keep the input order. Problem ids must be unique (a duplicate could land in both pools)."""
    if not 0.0 <= crl_share <= 1.0:
        raise CrlabError(f"--crl-share {crl_share}: must be between 0 and 1 (the paper converts 0.2)")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise CrlabError(f"problem id {dup!r} appears more than once; a split needs unique ids")
    chosen = set(random.Random(seed).sample(range(len(problems)), round(crl_share * len(problems))))
    rl = [p for i, p in enumerate(problems) if i not in chosen]
    crl = [p for i, p in enumerate(problems) if i in chosen]
    return rl, crl


def problem_row(problem: Problem) -> dict:
    """A problem as a row of rStar-Coder's ``seed_testcase`` config (what ``rstar:FILE`` reads back to the same
    problem), plus our ``solutions``, ``difficulty`` and ``source``.

    As rStar-Coder publishes it: ``inputs``/``outputs`` are JSON text of a list (functional tests: a list of
    JSON texts, argument list and return value); ``func_name`` and ``class_name`` are "" for a stdin problem;
    ``class_name`` is "Solution" when the starter code defines ``class Solution``. ``is_synthesized`` and
    ``test_case_type`` are not written (we do not know them). Files written before used ``fn_name`` and
    lists; ``rstar:FILE`` still reads them.
    """
    spec: TestSpec = problem.spec
    if spec.kind == TestKind.ASSERT:
        raise CrlabError(f"problem {problem.id}: assert-style tests (HumanEval) have no rStar-style form")
    functional = spec.kind == TestKind.FUNCTIONAL
    leetcode = functional and re.search(r"^\s*class\s+Solution\b", problem.starter_code, re.M) is not None
    return {
        "question_id": problem.id, "question": problem.question, "starter_code": problem.starter_code,
        "inputs": json.dumps(list(spec.inputs), ensure_ascii=False),
        "outputs": json.dumps(list(spec.outputs), ensure_ascii=False),
        "func_name": spec.fn_name if functional else "", "class_name": "Solution" if leetcode else "",
        "solutions": list(problem.solutions), "difficulty": problem.difficulty, "source": problem.source,
    }  # fmt: skip


def write_jsonl(path: str | Path, rows: Sequence[dict]) -> Path:
    """All rows at once, through a temporary file renamed into place (nothing half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    return path
