"""One training run end to end on the tiny coder, as the `platform` command runs it (subprocesses).

Covers: a completed run with metrics, checkpoints and W&B offline files; a plateau switch recorded in the
registry and in W&B; exact resume after SIGKILL (bitwise-identical weights, same W&B run id); SIGTERM
during a step (complete checkpoint, status preempted, exit code 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "data.rl_source=tiny:48", "grpo.prompts_per_step=4", "grpo.mini_batch_size=2", "grpo.group_size=4",
    "grpo.micro_batch_size=8", "phases.0.max_response_length=48", "phases.1.max_response_length=64",
    "grpo.max_refill_rounds=1", "reward.sandbox_workers=1",
]  # fmt: skip


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from crlab.cli import main; main()", *args]


def _run_args(tmp_path: Path, *extra: str) -> list[str]:
    return _cli(
        "run",
        str(REPO / "experiments/tiny_coder.yaml"),
        *SMALL,
        f"paths.runs_dir={tmp_path / 'runs'}",
        *extra,
    )


def _only_run(env: dict[str, str]):  # noqa: ANN202
    with Registry(env["CRLAB_DB_URL"]) as reg:
        (run,) = reg.list_runs()
        return (
            run,
            reg.events(run.id),
            reg.checkpoints(run.id, complete_only=True),
            reg.latest_metrics(run.id),
        )


def _final_weights(checkpoint: str) -> dict[str, torch.Tensor]:
    (states,) = Path(checkpoint).rglob("mp_rank_00_model_states.pt")
    return torch.load(states, map_location="cpu", weights_only=False)["module"]


def _wandb_bytes(run_dir: str) -> bytes:
    return b"".join(p.read_bytes() for p in Path(run_dir).rglob("run-*.wandb"))


def test_a_run_completes_and_records_everything(env: dict[str, str], tmp_path: Path) -> None:
    # window 1 + min_delta 1.0: every step counts as flat, so the monitor fires right after min_steps
    switch = ["switch.rule=mean", "switch.window=1", "switch.min_delta=1.0", "switch.patience=1",
              "switch.min_steps=2"]
    res = subprocess.run(_run_args(tmp_path, "grpo.max_steps=4", "checkpoint.every=2", *switch),
                         env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    run, events, checkpoints, latest = _only_run(env)
    assert run.status == "completed" and run.attempt == 1 and run.git_commit
    assert [c.step for c in checkpoints] == [2, 4]
    assert latest["phase/index"] == (4, 1.0)  # switched to the second phase
    assert {"reward/rl_mean", "reward/crl_mean", "reward/rl_mean_se", "reward/crl_mean_se", "critique/accuracy", "actor/clip_frac", "actor/entropy",
            "response/length_mean", "time/step_s", "perf/tokens_per_s"} <= set(latest)  # fmt: skip
    (switch_event,) = [e for e in events if e.kind == "phase_switch"]
    assert switch_event.payload["from_phase"] == "short" and switch_event.payload["to_phase"] == "long"
    assert (Path(run.run_dir) / "config.yaml").is_file()
    blob = _wandb_bytes(run.run_dir)
    assert run.id.encode() in blob and b"reward/rl_mean" in blob
    assert b"event/phase_switch" in blob and b'"to_phase":"long"' in blob.replace(b" ", b"")


def _wait_for(predicate, timeout: float) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError("timed out waiting")


def _completed_steps(env: dict[str, str]) -> list[int]:
    with Registry(env["CRLAB_DB_URL"]) as reg:
        runs = reg.list_runs()
        return [c.step for c in reg.checkpoints(runs[0].id, complete_only=True)] if runs else []


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(env: dict[str, str], tmp_path: Path) -> None:
    steps = ["grpo.max_steps=5", "checkpoint.every=1", "seed=3"]
    ref_env = {**env, "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'ref.db'}"}
    ref = subprocess.run(
        _run_args(tmp_path / "ref", *steps), env=ref_env, capture_output=True, text=True, timeout=900
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_run, _, ref_cks, _ = _only_run(ref_env)

    kill_after = 1 + int.from_bytes(os.urandom(1), "little") % 3  # a random step in 1..3
    proc = subprocess.Popen(
        _run_args(tmp_path / "k", *steps), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _wait_for(lambda: kill_after in _completed_steps(env), timeout=600)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    run, _, _, _ = _only_run(env)
    assert run.status == "running"  # killed: nobody marked it
    res = subprocess.run(_cli("resume", run.id), env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    run, events, cks, _ = _only_run(env)
    assert run.status == "completed" and run.attempt == 2
    assert any(e.kind == "resume" for e in events)
    assert run.wandb_run_id == run.id
    assert {p.name.rsplit("-", 1)[-1] for p in Path(run.run_dir, "wandb").glob("offline-run-*")} == {run.id}
    final, expected = _final_weights(cks[-1].path), _final_weights(ref_cks[-1].path)
    assert cks[-1].step == ref_cks[-1].step == 5
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in final), f"killed after step {kill_after}"


def test_sigterm_during_a_step_checkpoints_and_exits_0(env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _run_args(tmp_path, "grpo.max_steps=50", "checkpoint.every=100"), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def stepped() -> bool:
        with Registry(env["CRLAB_DB_URL"]) as reg:
            runs = reg.list_runs()
            return bool(runs) and reg.metric_count(runs[0].id) > 0

    _wait_for(stepped, timeout=600)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    run, events, checkpoints, latest = _only_run(env)
    assert run.status == "preempted"
    last_step = max(step for step, _ in latest.values())
    assert [c.step for c in checkpoints] == [last_step]  # a complete checkpoint of the step it was in
    assert any(e.kind == "preemption" for e in events)
