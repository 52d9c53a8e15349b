"""``switch.restart=fresh``: the phase switch goes on as the authors' 32k run did, a new run from the 16k
weights (a fresh AdamW, a new warm-up, the data from its start).

The engine's restart is checked against a new engine built on the same weights (bitwise); the trainer's
against its own records: the LR after the switch, the steps the run is given, the rows drawn again in the
same order, and a crash after the switch resumed bitwise."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from tests.train.test_engine import VOCAB, make_engine, split, tiny_model, token_mean_loss
from tests.train.test_loop import REPO, _cli, _final_weights, _only_run, _run_args

from crlab.config import load_config
from crlab.registry import Registry
from crlab.train.loop.setup import run_steps


def _batches(n: int) -> list[list[dict]]:
    gen = torch.Generator().manual_seed(5)
    return [split(torch.randint(0, VOCAB, (4, 8), generator=gen), [2, 2]) for _ in range(n)]


def _steps(engine, batches, first_index: int) -> list[float]:
    """Training steps of two updates each, from 0-based index ``first_index``; the LRs they ran at."""
    lrs = []
    for i, pair in enumerate(zip(batches[::2], batches[1::2], strict=True)):
        engine.begin_training_step(first_index + i)
        lrs += [engine.update(mb, token_mean_loss)["lr"] for mb in pair]
    return lrs


@pytest.mark.parametrize("stage", [0, 2, 3])
@pytest.mark.parametrize("unit", ["optimizer_step", "training_step"])
def test_restart_is_a_new_engine_on_the_same_weights(stage: int, unit: str) -> None:
    first, then = _batches(4), _batches(8)[4:]
    kwargs = dict(lr=1e-3, warmup_steps=3, warmup_unit=unit, precision="fp32")
    running = make_engine(stage, **kwargs)
    before = _steps(running, first, 0)
    weights = running.full_parameters()
    running.restart(training_step=2)
    assert not running.ds_engine.basic_optimizer.state  # AdamW's moments and step counts are gone
    after = _steps(running, then, 2)

    model = tiny_model()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(weights[name])
    from crlab.train.engine.deepspeed_engine import TrainEngine

    fresh = TrainEngine(
        model, total_steps=100, weight_decay=0.01, max_grad_norm=1.0, zero_stage=stage,
        offload_optimizer=False, offload_params=False, **kwargs,
    )  # fmt: skip
    assert _steps(fresh, then, 0) == after  # the warm-up starts again
    assert after == before  # ... exactly as the first one ran
    expected = [0.0, 0.0, 1e-3 / 3, 1e-3 / 3] if unit == "training_step" else [1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3]
    assert after == pytest.approx(expected)
    got, want = running.full_parameters(), fresh.full_parameters()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_set_origin_resumes_the_restarted_warmup() -> None:
    engine = make_engine(0, lr=1e-3, warmup_steps=4, precision="fp32")
    _steps(engine, _batches(6), 0)  # 6 optimizer steps: full lr
    assert engine.current_lr() == pytest.approx(1e-3)
    engine.set_origin(5, 0)  # as a checkpoint taken one update after a restart at optimizer step 5 says
    assert engine.current_lr() == pytest.approx(2.5e-4 * 2)  # the second update of the new warm-up


# --- the trainer ------------------------------------------------------------------------------------------

FRESH = [
    "grpo.max_steps=null", "data.rl_source=tiny:16", "grpo.dynamic_sampling=false", "grpo.warmup_steps=4",
    "switch.policy=fixed", "switch.at_steps=[2]", "switch.restart=fresh", "grpo.kl_coef=0.01",
    "checkpoint.every=1", "checkpoint.keep=10", "eval.source=null", "tracking.mode=disabled", "seed=4",
]  # fmt: skip
# 16 rows at 4 a step: a pass is 4 steps; the switch at step 2 starts a new pass, so 2 + 4 steps in all


def _client_state(run_dir: str, step: int) -> dict:
    return json.loads((Path(run_dir) / "checkpoints" / f"step-{step:06d}" / "client_state.json").read_text())


@pytest.mark.slow
def test_a_fresh_phase_is_a_new_run_and_resumes_bitwise(env: dict[str, str], tmp_path: Path) -> None:
    ref_env = {**env, "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'ref.db'}"}
    res = subprocess.run(_run_args(tmp_path / "ref", *FRESH), env=ref_env, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    run, events, cks, _ = _only_run(ref_env)
    assert [c.step for c in cks] == [1, 2, 3, 4, 5, 6]  # the run got a second pass of 4 steps
    assert "step 6/6 [long]" in res.stdout
    (switch,) = [e.payload for e in events if e.kind == "phase_switch"]
    assert (switch["step"], switch["restart"], switch["total_steps"]) == (2, "fresh", 6)
    with Registry(ref_env["CRLAB_DB_URL"]) as reg:
        lrs = {m.step: m.value for m in reg.metrics(run.id, ["actor/lr"])}
    lr = 5e-4  # two updates a step, warm-up over 4 updates: (1/4 + 2/4) / 2, then (3/4 + 1) / 2, then 1
    assert [lrs[s] for s in range(1, 7)] == pytest.approx(
        [0.375 * lr, 0.875 * lr, 0.375 * lr, 0.875 * lr, lr, lr]
    )
    # the data from its start: the sampler after step 3 is where it was after step 1
    assert _client_state(run.run_dir, 3)["sampler"] == _client_state(run.run_dir, 1)["sampler"]
    assert _client_state(run.run_dir, 3)["phase_start"] == {"step": 2, "optimizer_steps": 4}
    assert (Path(run.run_dir) / "reference-step-000002.pt").is_file()  # KL's reference: the step-2 policy

    crashed = subprocess.run(_run_args(tmp_path / "k", *FRESH), env={**env, "CRLAB_FAULT": "step:5"},
                             capture_output=True, text=True, timeout=900)  # fmt: skip
    assert crashed.returncode == 1 and "InjectedFault" in crashed.stderr, crashed.stderr[-3000:]
    killed, *_ = _only_run(env)
    res = subprocess.run(_cli("resume", killed.id), env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    resumed, _, resumed_cks, _ = _only_run(env)
    assert resumed.status == "completed" and resumed_cks[-1].step == 6
    final, expected = _final_weights(resumed_cks[-1].path), _final_weights(cks[-1].path)
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in final)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], (4, True)),  # keep: one pass for the whole run
        (["switch.restart=fresh"], (8, False)),  # plateau: at most a pass a phase
        (["switch.restart=fresh", "switch.policy=fixed", "switch.at_steps=[2]"], (6, True)),
        (["switch.restart=fresh", "switch.policy=fixed", "switch.at_steps=[9]"], (8, True)),  # pass ends first
        (["switch.restart=fresh", "switch.policy=never"], (4, True)),
    ],
)
def test_the_dry_run_counts_a_pass_per_fresh_phase(overrides: list[str], expected: tuple[int, bool]) -> None:
    cfg = load_config(REPO / "experiments/tiny_coder.yaml", ["grpo.max_steps=null", *overrides])
    assert run_steps(cfg, 4) == expected
