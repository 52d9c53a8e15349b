"""Evaluation during training on the tiny coder: held-out pass@1 logged at its steps in the registry and in
the W&B offline files, one checkpoint flagged best that keep-K pruning leaves alone; evaluating never
changes the training (its RNG draws are put back), and a run preempted at an evaluated step evaluates that
step when it resumes, with the numbers of an uninterrupted run."""

from __future__ import annotations

import math
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.train.test_loop import SMALL  # the small run shape the loop tests use

from crlab.config import load_config
from crlab.registry import Registry
from crlab.train.loop.run import StopFlag, register_run
from crlab.train.loop.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
# sampled, two samples a problem: the evaluation draws from the global RNGs, which must be put back
SAMPLED_EVAL = [
    "eval.source=tiny-eval", "eval.select_source=null", "eval.every=2", "eval.max_problems=8", "eval.n=2",
    "eval.k=[1,2]", "eval.temperature=1.0",
]  # fmt: skip
EVAL_KEYS = ("eval/pass@1", "eval/pass@2")


def wandb_history(run_dir: str) -> list[dict[str, str]]:
    """Every history row of the run's W&B offline files (``*.wandb``: W&B's record log, a LevelDB-style log
    of 32 KiB blocks of records, each a protobuf ``Record``), as key -> JSON text."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for path in sorted(Path(run_dir).rglob("run-*.wandb")):
        data, pos, parts = path.read_bytes(), 7, b""  # a 7-byte header: ":W&B", magic, version
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a record header is padding
                pos += 32768 - pos % 32768
                continue
            _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            body, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
            parts = body if kind in (1, 2) else parts + body  # full, first | middle, last
            if kind in (1, 4):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(parts)
                if record.WhichOneof("record_type") == "history":
                    rows.append({i.key or "/".join(i.nested_key): i.value_json for i in record.history.item})
    return rows


class StopAfter:
    """A stop flag that is up once the trainer has finished step ``step`` (SIGTERM during that step)."""

    def __init__(self, step: int) -> None:
        self.step, self.trainer = step, None

    @property
    def signum(self) -> int | None:
        return signal.SIGTERM if self.trainer is not None and self.trainer.step >= self.step else None


def _train(tmp: Path, extra: list[str], stop_after: int | None = None) -> tuple[Registry, str]:
    """Train in this process (4 steps); with ``stop_after``, preempt there and resume as a new attempt."""
    args = [*SMALL, "grpo.max_steps=4", "checkpoint.every=100", "tracking.enabled=false", "seed=5"]
    cfg = load_config(REPO / "experiments/tiny_coder.yaml", [*args, *extra, f"paths.runs_dir={tmp / 'runs'}"])
    registry = Registry(f"sqlite:///{tmp / 'reg.db'}")
    trainer = Trainer(cfg, registry, run=None)
    run = register_run(registry, cfg)
    stop = StopAfter(stop_after) if stop_after else StopFlag()
    stop.trainer = trainer
    try:
        assert trainer.train(run, resume=False, stop=stop) == ("preempted" if stop_after else "completed")
    finally:
        trainer.close()
    if stop_after:
        resumed = Trainer(cfg, registry, run=registry.get_run(run.id))
        try:
            assert resumed.train(registry.get_run(run.id), resume=True, stop=StopFlag()) == "completed"
        finally:
            resumed.close()
    return registry, run.id


def _by_step(registry: Registry, run_id: str, evals: bool) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for m in registry.metrics(run_id):
        if m.key.startswith(("time/", "perf/")) or m.key.startswith(("eval/", "base/")) != evals:
            continue
        out.setdefault(m.step, {})[m.key] = m.value
    return out


def _same(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]]) -> None:
    assert sorted(a) == sorted(b)
    for step in a:
        assert a[step].keys() == b[step].keys(), step
        for key, value in a[step].items():
            other = b[step][key]
            assert value == other or (math.isnan(value) and math.isnan(other)), (step, key, value, other)


@pytest.mark.slow
def test_evaluating_changes_no_training_and_a_preempted_eval_step_is_evaluated_on_resume(
    tiny_cache: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, final_weights
) -> None:  # noqa: ANN001
    monkeypatch.setenv("CRLAB_CACHE", tiny_cache)
    plain_reg, plain = _train(tmp_path / "plain", ["eval.source=null"])
    eval_reg, evald = _train(tmp_path / "eval", SAMPLED_EVAL)
    _same(_by_step(plain_reg, plain, evals=False), _by_step(eval_reg, evald, evals=False))
    ours, theirs = final_weights(eval_reg, evald), final_weights(plain_reg, plain)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    evals = _by_step(eval_reg, evald, evals=True)
    # the base model at step 0 (eval.at_start, the default; its draws are put back too), then steps 2 and 4
    assert sorted(evals) == [0, 2, 4] and set(evals[0]) == {"base/pass@1", "base/pass@2"}
    assert all(set(EVAL_KEYS) <= set(evals[s]) for s in (2, 4))
    assert plain_reg.best_checkpoint(plain) is None  # no evaluation, no best
    # preempted as step 2 (an evaluated step) ends: the evaluation is skipped, then done on resume
    cut_reg, cut = _train(tmp_path / "cut", SAMPLED_EVAL, stop_after=2)
    _same(_by_step(cut_reg, cut, evals=True), evals)
    _same(_by_step(cut_reg, cut, evals=False), _by_step(eval_reg, evald, evals=False))
    assert sorted(m.step for m in cut_reg.metrics(cut, keys=["time/eval_s"])) == [0, 2, 4]  # base: once
    best, cut_best = eval_reg.best_checkpoint(evald), cut_reg.best_checkpoint(cut)
    assert best is not None and cut_best is not None and best.step == cut_best.step
    pass1 = {s: v["eval/pass@1"] for s, v in evals.items() if s > 0}  # the base is never a candidate
    assert best.step == min(
        s for s in pass1 if pass1[s] == max(pass1.values())
    )  # the best, the earlier on ties


# -- the acceptance (eval.every=20 over 80 steps, checkpoints every 30), scaled down ten times: eval.every=2
# over 8 steps, checkpoints every 3 -- the same schedule (an evaluated step on the checkpoint schedule, three off
# it), through the `platform run` command
def _cli_run(tmp_path: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    args = [
        sys.executable, "-m", "crlab", "run", str(REPO / "experiments/tiny_coder.yaml"), *SMALL,
        f"paths.runs_dir={tmp_path / 'runs'}", *extra,
    ]  # fmt: skip
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
def test_eval_every_2_logs_pass_at_1_at_2_4_6_8_and_flags_one_best_checkpoint(
    tiny_cache: str, tmp_path: Path, child_env: dict[str, str]
) -> None:
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    env = {
        **child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": url, "WANDB_MODE": "offline",
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions")),
    }  # fmt: skip
    # checkpoints every 3 steps, keep 1: the evaluated steps add 2, 4, 8 (6 is on the schedule)
    res = _cli_run(
        tmp_path, env, "grpo.max_steps=8", "checkpoint.every=3", "checkpoint.keep=1", "eval.source=tiny-eval",
        "eval.select_source=null", "eval.every=2", "eval.max_problems=16",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    with Registry(url) as reg:
        (run,) = reg.list_runs()
        assert run.status == "completed"
        pass1 = {m.step: m.value for m in reg.metrics(run.id, keys=["eval/pass@1"])}
        assert sorted(pass1) == [2, 4, 6, 8]
        assert sorted(m.step for m in reg.metrics(run.id, keys=["time/eval_s"])) == [0, 2, 4, 6, 8]  # 0: the base
        checkpoints = reg.checkpoints(run.id)
        (best,) = [c for c in checkpoints if c.best]  # exactly one
        assert reg.best_checkpoint(run.id) == best
    top = max(pass1.values())
    assert best.step == min(s for s, v in pass1.items() if v == top)  # the best, the earlier on ties
    # keep 1: the newest and the best are all that is left, on disk and in the registry
    on_disk = sorted(p.name for p in Path(run.run_dir, "checkpoints").iterdir() if p.name.startswith("step-"))
    assert on_disk == sorted({f"step-{best.step:06d}", "step-000008"})
    assert sorted(c.step for c in checkpoints) == sorted({best.step, 8})
    assert Path(best.path, "COMPLETE.json").is_file()
    history = [row for row in wandb_history(run.run_dir) if "eval/pass@1" in row]
    assert {int(row["_step"]): float(row["eval/pass@1"]) for row in history} == pass1


@pytest.mark.slow
def test_select_source_picks_the_best_on_val_reports_test_at_it_and_keeps_per_problem_records(
    tiny_cache: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``eval.select_source``: the best checkpoint is the best ``val/pass@1`` (the earlier on ties), whatever the
    test set says; every evaluation (the base model's at step 0 too) leaves its per-problem records, from which
    each logged pass@1 is recomputed exactly, and its samples in the run's ``eval/`` folder."""
    from crlab.cli_views import best_checkpoint_json

    monkeypatch.setenv("CRLAB_CACHE", tiny_cache)
    sets = ["eval.source=tiny-test:6", "eval.select_source=tiny-val:5", "eval.every=2", "eval.temperature=1.0"]
    reg, run_id = _train(tmp_path / "sel", sets)
    by_key: dict[str, dict[int, float]] = {}
    for m in reg.metrics(run_id, keys=["val/pass@1", "eval/pass@1", "base/pass@1", "base/val_pass@1"]):
        by_key.setdefault(m.key, {})[m.step] = m.value
    val, test = by_key["val/pass@1"], by_key["eval/pass@1"]
    assert sorted(val) == sorted(test) == [2, 4] and list(by_key["base/pass@1"]) == [0]
    best = reg.best_checkpoint(run_id)
    assert best is not None and best.step == min(s for s, v in val.items() if v == max(val.values()))
    shown = best_checkpoint_json(reg, reg.get_run(run_id))
    assert shown["metric"] == "val/pass@1" and shown["same_set"] is False
    assert shown["reported"] == {"metric": "eval/pass@1", "value": test[best.step]}
    assert (shown["selected_on"], shown["reported_on"]) == ("tiny-val:5", "tiny-test:6")
    events = reg.events(run_id, kind="eval_problems")
    assert sorted((e.step, e.payload["prefix"]) for e in events) == [
        (s, p) for s in (0, 2, 4) for p in ("eval/", "val/")
    ]
    logged = {("eval/", s): v for s, v in test.items()} | {("val/", s): v for s, v in val.items()}
    logged |= {("eval/", 0): by_key["base/pass@1"][0], ("val/", 0): by_key["base/val_pass@1"][0]}
    for e in events:
        problems = e.payload["problems"]
        assert len(problems) == (6 if e.payload["prefix"] == "eval/" else 5) and e.payload["n"] == 1
        assert sum(c / n for _, n, c in problems) / len(problems) == pytest.approx(logged[e.payload["prefix"], e.step])
    samples = Path(reg.get_run(run_id).run_dir, "eval", "step-000002-val.jsonl").read_text().splitlines()
    assert len(samples) == 5 and all("response" in line for line in samples)
