"""Building CRL rows as the paper did (Critique-Coder §2.2): candidates from a generator model, run on the
problem's (filtered) tests in the sandbox, labelled correct when their pass rate is above 0.8.

The paper's candidates come from a strong model other than the policy (Qwen3-Coder-30B-A3B-Instruct, 32%
pass@1), so about two thirds of its labels are False. A generator that solves almost everything (or
nothing) gives one-sided labels and a critic that learns to answer one way: :func:`skew_warning` names it.
``balance`` downsamples the majority label to the minority's count (seeded), as ``--balance`` does.

Rows are JSON objects that :func:`crlab.data.crl.load_crl_rows` reads (``question``, ``solution``,
``label``), with their provenance: the problem, the pass rate and test count, and the generator with its
sampling settings.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crlab.data.problems import Problem
from crlab.data.programs import program_for
from crlab.data.prompts import code_prompt
from crlab.rewards.critique import crl_label

SKEW = 0.9  # warn when more than this share of the labels is one way


@dataclass(frozen=True)
class Generation:
    """How candidates are sampled; recorded in every row's provenance."""

    generator: str
    n: int = 4
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    max_new_tokens: int = 1024
    style: str = "qwen3"
    seed: int = 0
    batch_problems: int = 8

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}


@dataclass
class BuildCounts:
    problems: int = 0
    candidates: int = 0
    no_code: int = 0
    duplicates: int = 0
    labelled_true: int = 0
    labelled_false: int = 0
    kept_true: int = 0
    kept_false: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def generate_candidates(
    policy: Any,
    problems: Sequence[Problem],
    gen: Generation,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[str]]:
    """``gen.n`` responses per problem from ``policy`` (``generate(prompts, n, max_new_tokens, **sampling)``)."""
    out: dict[str, list[str]] = {}
    for first in range(0, len(problems), gen.batch_problems):
        batch = list(problems[first : first + gen.batch_problems])
        result = policy.generate(
            [code_prompt(p, gen.style) for p in batch], gen.n, gen.max_new_tokens, **gen.sampling()
        )
        for i, problem in enumerate(batch):
            out[problem.id] = list(result.texts[i * gen.n : (i + 1) * gen.n])
        if on_progress is not None:
            on_progress(first + len(batch), len(problems))
    return out


def label_candidates(
    problems: Sequence[Problem], responses: Mapping[str, Sequence[str]], sandbox: Any, kind: str,
    provenance: Mapping[str, Any], threshold: float = 0.8,
) -> tuple[list[dict], BuildCounts]:  # fmt: skip
    """Run each candidate's code on all of its problem's tests; one row per distinct candidate with code.
    ``kind`` is what the texts are: ``response`` (a model's answer: its code block) or ``code``."""
    counts, jobs = BuildCounts(problems=len(problems)), []
    for problem in problems:
        seen = set()
        for text in responses.get(problem.id, ()):
            counts.candidates += 1
            program = program_for(problem, text, kind)
            if program is None:
                counts.no_code += 1
            elif program in seen:
                counts.duplicates += 1
            else:
                seen.add(program)
                jobs.append((problem, program))
    results = sandbox.run_many([(program, p.spec) for p, program in jobs]) if jobs else []
    rows = []
    for (problem, program), result in zip(jobs, results, strict=True):
        label = crl_label(result.pass_rate, threshold)
        counts.labelled_true += label
        counts.labelled_false += not label
        rows.append({
            "problem_id": problem.id, "question": problem.question, "solution": program, "label": label,
            "pass_rate": result.pass_rate, "tests": len(result.results), "source": problem.source,
            "provenance": {**provenance, "threshold": threshold},
        })  # fmt: skip
    return rows, counts


def balance(rows: list[dict], seed: int = 0) -> list[dict]:
    """Downsample the majority label to the minority's count (a seeded choice); order kept."""
    true = [i for i, r in enumerate(rows) if r["label"]]
    false = [i for i, r in enumerate(rows) if not r["label"]]
    small, large = sorted((true, false), key=len)
    keep = set(small) | set(random.Random(seed).sample(large, len(small)))
    return [r for i, r in enumerate(rows) if i in keep]


def skew_warning(counts: BuildCounts) -> str | None:
    """A warning when the labels are over 90% one way, naming the likely cause."""
    total = counts.labelled_true + counts.labelled_false
    if total == 0:
        return "no candidate had code to run: the generator's answers have no ```python block (check --style and --max-new-tokens)"
    share = counts.labelled_true / total
    if share > SKEW:
        return (
            f"{share:.0%} of the labels are True: the generator solves nearly every problem, so a critic can "
            "score by always answering T; use a weaker generator, harder problems, or --balance"
        )
    if share < 1 - SKEW:
        return (
            f"{1 - share:.0%} of the labels are False: the generator rarely passes the tests (too weak, or its "
            "answers are cut off: raise --max-new-tokens); a critic can score by always answering F; use --balance"
        )
    return None
