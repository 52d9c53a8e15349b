"""`scoring: livecodebench` gives LiveCodeBench's own verdicts: the sandbox's ``lcb`` harness against
LiveCodeBench's evaluator itself (``codegen_metrics`` from the ``nvidia-livecodebench`` wheel, the path its
CLI takes), on LiveCodeBench-format problems and samples written to probe each of its rules
(``lcb/make_fixtures.py`` says which sample probes which rule). Every sample must get the same per-test
results (LiveCodeBench stops at a program's first failure: later tests are ``not_run`` here), so the
same pass@1; the platform's strict scorer disagrees on the probes, which shows they probe something."""

from __future__ import annotations

import base64
import json
import pickle
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from crlab.data.formats import load_livecodebench
from crlab.rewards.sandbox import Sandbox, Verdict

HERE = Path(__file__).parent / "lcb"
PROBLEMS, SAMPLES = HERE / "problems.jsonl", HERE / "samples.jsonl"
TIMEOUT = 1  # seconds per test, both evaluators (LiveCodeBench's signal.alarm takes whole seconds)
# LiveCodeBench's per-test results: True, a wrong answer (False for functional tests, -2 for stdin), -3, -4
CODES = {Verdict.PASSED: True, Verdict.TIMEOUT: -3, Verdict.RUNTIME_ERROR: -4}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _their_sample(row: dict) -> dict:
    """What LiveCodeBench's ``CodeGenerationProblem.get_evaluation_sample`` makes of a row (that module
    imports ``datasets`` at the top, so the five lines are restated here)."""
    private = row["private_test_cases"]
    try:
        private = json.loads(private)
    except ValueError:
        private = json.loads(pickle.loads(zlib.decompress(base64.b64decode(private.encode()))))
    tests = json.loads(row["public_test_cases"]) + private
    io = {"inputs": [t["input"] for t in tests], "outputs": [t["output"] for t in tests]}
    return {"input_output": json.dumps({**io, "fn_name": json.loads(row["metadata"]).get("func_name")})}


@pytest.fixture(scope="module")
def theirs() -> tuple[dict, float]:
    """LiveCodeBench's results: {(question_id, sample index): [per-test results]}, its pass@1 and the
    samples whose test process died (its results then say [-2], its metadata error code -5)
    (``evaluate_generations`` and ``compute_metrics_from_results``, what its ``codegen_metrics`` runs; that
    one wants the same number of samples for every problem)."""
    digits = sys.get_int_max_str_digits()
    from livecodebench.evaluation.compute_code_generation_metrics import evaluate_generations
    from livecodebench.evaluation.pass_k_utils import compute_metrics_from_results

    rows = {r["question_id"]: r for r in _rows(PROBLEMS)}
    keys, samples, codes = [], [], []
    for s in _rows(SAMPLES):  # one generation per job, as codegen_metrics lays them out
        for j, code in enumerate(s["code_list"]):
            keys.append((s["question_id"], j))
            samples.append(_their_sample(rows[s["question_id"]]))
            codes.append([code])
    try:  # (importing it set 50000 digits for this process, which its workers inherit, as in its CLI)
        results, metadata = evaluate_generations(samples, codes, num_process_evaluate=2, timeout=TIMEOUT)
    finally:
        sys.set_int_max_str_digits(digits)
    by_sample = {key: list(results[i][0]) for i, key in enumerate(keys)}
    died = {key for i, key in enumerate(keys) if metadata[i][0].get("error_code") == -5}
    per_problem: dict = {}
    for (qid, _), res in by_sample.items():
        per_problem.setdefault(qid, []).append(res)
    metrics = compute_metrics_from_results(per_problem, k_list=[1])
    return by_sample, float(metrics["pass@1"]), died


@pytest.fixture(scope="module")
def lcb_sandbox():
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not on PATH; install it: apt-get install bubblewrap")
    with Sandbox(workers=2, time_limit_s=TIMEOUT, harness="lcb") as sb:
        yield sb


def _ours(sandbox) -> dict:
    problems = {p.id: p for p in load_livecodebench(PROBLEMS)}
    keys, jobs = [], []
    for s in _rows(SAMPLES):
        for j, code in enumerate(s["code_list"]):
            keys.append((s["question_id"], j))
            jobs.append((code, problems[s["question_id"]].spec))
    return dict(zip(keys, sandbox.run_many(jobs), strict=True))


def _codes(result, functional: bool) -> list:
    wrong = False if functional else -2
    return [CODES.get(r.verdict, wrong) for r in result.results if r.verdict is not Verdict.NOT_RUN]


def test_every_sample_gets_livecodebench_verdicts(lcb_sandbox, theirs) -> None:
    their, _, died = theirs
    ours = _ours(lcb_sandbox)
    functional = {p.id for p in load_livecodebench(PROBLEMS) if p.spec.kind == "functional"}
    assert ours.keys() == their.keys() and len(ours) >= 60 and died
    wrong = []
    for key, result in ours.items():
        expected = their[key]
        if key in died:  # its test process ended (SystemExit in a call...): the whole program failed here too
            same = result.results[0].verdict in (Verdict.RUNTIME_ERROR, Verdict.TIMEOUT) and all(
                r.verdict is Verdict.NOT_RUN for r in result.results[1:]
            )
        else:
            same = _codes(result, key[0] in functional) == expected
        if not same:
            wrong.append(f"{key}: LiveCodeBench {expected}, ours {[r.verdict.value for r in result.results]}")
    assert not wrong, "\n".join(wrong)


def test_platform_eval_scores_a_samples_file_as_livecodebench_by_default(theirs) -> None:
    """`platform eval --samples FILE --on livecodebench:FILE`: LiveCodeBench's scoring and its pass@1."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not on PATH")
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", "eval", "--samples", str(SAMPLES)]
    cmd += ["--on", f"livecodebench:{PROBLEMS}", "--k", "1", "--time-limit", str(TIMEOUT), "--workers", "2"]
    res = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["scoring"] == "livecodebench"
    assert report["pass_at"]["pass@1"] == pytest.approx(theirs[1], abs=1e-9)
    assert 0.3 < theirs[1] < 0.7  # (the fixtures pass and fail in about equal parts)


def test_scoring_resolves_per_source_and_refuses_livecodebench_elsewhere() -> None:
    from crlab.data.formats import load_humaneval
    from crlab.errors import CrlabError
    from crlab.eval.scoring import resolve_scoring

    lcb, humaneval = load_livecodebench(PROBLEMS), load_humaneval()[:3]
    assert resolve_scoring("auto", lcb) == "livecodebench" and resolve_scoring("auto", humaneval) == "strict"
    assert resolve_scoring("strict", lcb) == "strict"
    with pytest.raises(
        CrlabError, match="--scoring livecodebench: scores LiveCodeBench problems only, not humaneval"
    ):
        resolve_scoring("livecodebench", humaneval)


@pytest.mark.slow
def test_the_strict_scorer_differs_on_the_probes(theirs) -> None:
    """The fixtures probe LiveCodeBench's rules: the platform's own scorer passes or fails many differently."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not on PATH")
    their = theirs[0]
    with Sandbox(workers=2, time_limit_s=TIMEOUT) as strict:
        ours = _ours(strict)
    differ = [k for k, r in ours.items() if (r.pass_rate == 1.0) != all(x is True for x in their[k])]
    assert len(differ) >= 25, differ  # (31 of 81 when written)


def test_training_evaluation_scores_livecodebench_sets_with_its_evaluators_rules() -> None:
    """eval.scoring in a run: auto gives LiveCodeBench sets a sandbox with the lcb harness (6 s a test,
    LiveCodeBench's default), strict keeps the run's own sandbox."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not on PATH")
    from crlab.config import load_config
    from crlab.train.loop.evaluation import TrainingEval

    source = f"livecodebench:{PROBLEMS}"
    evals = TrainingEval(load_config(overrides=[f"eval.source={source}"]), "qwen3")
    try:
        assert evals.scoring == {source: "livecodebench"}
        sandbox = evals.sandbox_for(evals.sets[0][1], "the run's sandbox")
        assert sandbox.harness == "lcb" and sandbox.time_limit_s == 6.0
        add = {p.id: p for p in evals.sets[0][1].problems}["add"]
        passed = sandbox.run("print(sum(Counter(map(int, input().split())).elements()))", add.spec)
        assert passed.pass_rate == 1.0  # (Counter from LiveCodeBench's prelude)
    finally:
        evals.close()
    strict = TrainingEval(load_config(overrides=[f"eval.source={source}", "eval.scoring=strict"]), "qwen3")
    assert strict.sandbox_for(strict.sets[0][1], "the run's sandbox") == "the run's sandbox"
