"""A registry outage costs a run nothing: PostgreSQL stopped mid-run, mid-sweep, and for longer than the
heartbeat grace period with a second sweep process looking on (issue: faults never kill training).

The outages last OUTAGE_S: long enough for the run to train on meanwhile and for the writer's backoff
(1, 2, 4, 8 s) to fail several times, which is all a 60 s outage adds (a longer one only repeats the
15 s retry)."""

from __future__ import annotations

import json
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
    "grpo.max_refill_rounds=1", "reward.sandbox_workers=1", "tracking.enabled=false", "seed=3",
    "eval.source=null",  # what is checked is training and its records: no held-out evaluation (4 a run)
]  # fmt: skip
OUTAGE_S = 20


def _env(child_env: dict[str, str], tiny_cache: str, url: str) -> dict[str, str]:
    return {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": url}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "crlab", *args]


def _journal_step(runs_dir: Path) -> int:
    """The newest step any run under ``runs_dir`` has journaled metrics for."""
    steps = [0]
    for journal in runs_dir.glob("*/journal.jsonl"):
        for line in journal.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record["kind"] == "metrics":
                steps.append(record["step"])
    return max(steps)


def _wait_for_step(runs_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while _journal_step(runs_dir) < step:
        assert proc.poll() is None, f"exited with {proc.returncode} before step {step}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no step {step} after {timeout} s"
        time.sleep(0.2)


def _steps_of(reg: Registry, run_id: str, key: str = "reward/rl_mean") -> list[int]:
    return [m.step for m in reg.metrics(run_id, keys=[key])]


def _weights(reg: Registry, run_id: str) -> dict[str, torch.Tensor]:
    newest = max(reg.checkpoints(run_id, complete_only=True), key=lambda c: c.step)
    (states,) = Path(newest.path).rglob("mp_rank_00_model_states.pt")
    return torch.load(states, map_location="cpu", weights_only=False)["module"]


@pytest.mark.slow
def test_postgres_stopped_at_step_8_costs_the_run_nothing(
    pg_server, tiny_cache: str, tmp_path: Path, child_env: dict[str, str]
) -> None:
    env = _env(child_env, tiny_cache, pg_server.url)
    args = [
        "run",
        str(REPO / "experiments/tiny_coder.yaml"),
        *SMALL,
        "grpo.max_steps=30",
        "checkpoint.every=10",
    ]
    calm = subprocess.run(
        _cli(*args, f"paths.runs_dir={tmp_path / 'calm'}"),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert calm.returncode == 0, calm.stderr[-3000:]
    runs_dir = tmp_path / "disturbed"
    proc = subprocess.Popen(
        _cli(*args, f"paths.runs_dir={runs_dir}"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_step(runs_dir, 8, proc)
    pg_server.stop()
    stopped_at = _journal_step(runs_dir)
    time.sleep(OUTAGE_S)
    trained_meanwhile = _journal_step(runs_dir) - stopped_at
    pg_server.start()
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert trained_meanwhile > 0, "the run waited on the registry instead of training"
    assert err.count("registry unreachable") == 1 and "registry reachable again" in err  # said once
    with Registry(pg_server.url) as reg:
        (run,) = [r for r in reg.list_runs() if str(r.run_dir).startswith(str(runs_dir))]
        (undisturbed,) = [r for r in reg.list_runs() if r.id != run.id]
        assert (run.status, run.attempt, run.error) == ("completed", 1, None)
        assert _steps_of(reg, run.id) == list(range(1, 31))  # exactly one row per step
        assert _steps_of(reg, run.id, "actor/loss") == _steps_of(reg, undisturbed.id, "actor/loss")
        ours, theirs = _weights(reg, run.id), _weights(reg, undisturbed.id)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def _sweep_spec(tmp_path: Path, name: str, cells: str, steps: int, executor: str = "") -> Path:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\nbase: {REPO}/experiments/tiny_coder.yaml\ngrid:\n  data.crl_ratio: [{cells}]\n"
        f"overrides:\n  paths.runs_dir: {tmp_path / 'runs'}\n  grpo.max_steps: {steps}\n"
        + "".join(f"  {a.replace('=', ': ')}\n" for a in SMALL)
        + executor
    )
    return spec


@pytest.mark.slow
def test_postgres_stopped_during_a_sweep_both_cells_complete_once(
    pg_server, tiny_cache: str, tmp_path: Path, child_env: dict[str, str]
) -> None:
    env = _env(child_env, tiny_cache, pg_server.url)
    spec = _sweep_spec(tmp_path, "outage", "0.0, 0.5", steps=12)
    proc = subprocess.Popen(
        _cli("sweep", str(spec)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for_step(tmp_path / "runs", 4, proc)
    pg_server.stop()
    time.sleep(OUTAGE_S)
    pg_server.start()
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert "registry unreachable" in out and "registry reachable again" in out  # the sweep said so
    with Registry(pg_server.url) as reg:
        runs = reg.list_runs()
        assert sorted((r.status, r.attempt) for r in runs) == [("completed", 1), ("completed", 1)]
        for run in runs:
            assert _steps_of(reg, run.id) == list(range(1, 13))


@pytest.mark.slow
def test_an_outage_longer_than_the_grace_period_does_not_make_a_cell_run_twice(
    pg_server, tiny_cache: str, tmp_path: Path, child_env: dict[str, str]
) -> None:
    """The heartbeat is stale once the registry is back (no beat got through for longer than the grace
    period); a second sweep process started then must leave the cell to the one that runs it."""
    env = {**_env(child_env, tiny_cache, pg_server.url), "CRLAB_FAULT": "sleep:2"}  # still training after it
    spec = _sweep_spec(tmp_path, "long", "0.2", steps=20, executor="executor: {heartbeat_grace_s: 5}\n")
    first = subprocess.Popen(
        _cli("sweep", str(spec)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for_step(tmp_path / "runs", 3, first)
    pg_server.stop()
    time.sleep(12)  # more than two grace periods
    pg_server.start()
    second = subprocess.run(
        _cli("sweep", str(spec), "--json", "--no-wait"), env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 3, second.stderr[-3000:]  # returned before the end (issue 22)
    (cell,) = json.loads(second.stdout)["cells"]
    assert cell["this_invocation"] == "running elsewhere"
    _, err = first.communicate(timeout=900)
    assert first.returncode == 0, err[-3000:]
    with Registry(pg_server.url) as reg:
        (run,) = reg.list_runs()
        assert (run.status, run.attempt) == ("completed", 1)  # trained once, by the first sweep
        assert _steps_of(reg, run.id) == list(range(1, 21))


@pytest.mark.slow
def test_a_sweep_gives_up_after_registry_retry_s_and_its_cell_carries_on(
    pg_server, tiny_cache: str, tmp_path: Path, child_env: dict[str, str]
) -> None:
    """PostgreSQL stopped for 15 minutes, scaled down: the sweep retries for ``executor.registry_retry_s``
    (10 s here, 600 s by default), then stops with one line; its cell trains on, and its records reach the
    registry when it is back. Rerunning the sweep finds the cell completed (trained once)."""
    env = {**_env(child_env, tiny_cache, pg_server.url), "CRLAB_FAULT": "sleep:1"}
    spec = _sweep_spec(tmp_path, "gives-up", "0.2", steps=20, executor="executor: {registry_retry_s: 10}\n")
    sweep = subprocess.Popen(
        _cli("sweep", str(spec)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for_step(tmp_path / "runs", 2, sweep)
    pg_server.stop()
    try:
        out, err = sweep.communicate(timeout=120)
    finally:
        pg_server.start()
    assert sweep.returncode == 3, err[-3000:]  # returned before the end (issue 22)
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert "registry unreachable for" in line and "running cells carry on" in line
    assert "still running: data.crl_ratio=0.2 seed=0" in line
    assert "registry unreachable (" in out and _journal_step(tmp_path / "runs") < 20  # gave up mid-run
    deadline = time.monotonic() + 300
    while True:
        with Registry(pg_server.url) as reg:
            (run,) = reg.list_runs()
        if run.status == "completed" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert (run.status, run.attempt) == ("completed", 1)  # the cell finished without its sweep
    again = subprocess.run(
        _cli("sweep", str(spec), "--json"), env=env, capture_output=True, text=True, timeout=300
    )
    assert (
        again.returncode == 0
        and json.loads(again.stdout)["cells"][0]["this_invocation"] == "already completed"
    )
    with Registry(pg_server.url) as reg:
        assert _steps_of(reg, run.id) == list(range(1, 21))
