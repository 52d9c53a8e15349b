"""Optuna search sweeps: spec errors (file:line, exit code 2) and a 4-trial search on the tiny coder in which
trials are pruned on the intermediate RL reward, with the study stored in the registry's database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crlab.errors import ConfigError
from crlab.registry import Registry
from crlab.sweeps.search import objective
from crlab.sweeps.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
BASE = f"name: s\nbase: {REPO}/experiments/tiny_coder.yaml\n"
GOOD = "search:\n  n_trials: 2\n  metric: reward/rl_mean\n  params:\n    data.crl_ratio: {type: float, low: 0.0, high: 0.5}\n"


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        # a misspelled search key
        (GOOD.replace("n_trials", "n_trails"), "unknown search key 'n_trails'", 4),
        # a param that is not in the config schema, with the nearest key
        (GOOD.replace("data.crl_ratio", "data.crl_ration"), "did you mean data.crl_ratio", 7),
        # an empty range
        (GOOD.replace("high: 0.5", "high: 0.0"), "low < high", 7),
        # Optuna's grid sampler is not offered: a grid sweep runs each cell exactly once
        (GOOD + "  sampler: grid\n", "tpe, random", 8),
        # a pruner option that pruner does not take
        (GOOD + "  pruner: {kind: median, lower: 0.1}\n", "median' takes", 8),
        # no objective metric
        (GOOD.replace("  metric: reward/rl_mean\n", ""), "search.metric", 3),
        # a search and a grid in one spec
        ("grid:\n  seed: [0, 1]\n" + GOOD, "drop 'grid'", 5),
    ],
)
def test_bad_search_specs_name_the_problem(tmp_path: Path, text: str, message: str, line: int) -> None:
    path = tmp_path / "search.yaml"
    path.write_text(BASE + text)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert message in err.value.message
    assert err.value.where == f"{path}:{line}"


SEARCH = """name: tiny-search
base: {base}
overrides:
  paths.runs_dir: {runs}
  grpo.max_steps: 8  # steps are fast: room for a prune decision (one poll) to land before the end
  checkpoint.every: 2
  data.rl_source: 'tiny:16'
  grpo.prompts_per_step: 4
  grpo.mini_batch_size: 2
  reward.sandbox_workers: 1
  eval.source: null  # the objective is the RL reward: no held-out evaluation
search:
  sampler: random
  seed: 6
  n_trials: 4  # seed 6 draws temperatures 1, 1, 30, 1: one hot trial after a completed one
  metric: reward/rl_mean
  last_k: 2
  prune_on: reward/rl_mean
  pruner: {{kind: median, n_startup_trials: 1, n_warmup_steps: 0}}
  params:
    rollout.temperature: {{type: categorical, choices: [1.0, 30.0]}}
    data.crl_ratio: {{type: categorical, choices: [0.0, 0.25, 0.5]}}
"""


@pytest.mark.slow
def test_a_four_trial_search_prunes_and_links_trials_to_runs(
    tiny_cache: str, tmp_path: Path, child_env: dict[str, str]
) -> None:
    import optuna

    spec = tmp_path / "search.yaml"
    spec.write_text(SEARCH.format(base=REPO / "experiments/tiny_coder.yaml", runs=tmp_path / "runs"))
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": url}
    cmd = [sys.executable, "-m", "crlab", "sweep", str(spec), "--json"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "preempted" not in res.stderr  # a pruned trial is `pruned` in every line (issue 22)

    study = optuna.load_study(study_name="tiny-search", storage=url)  # the registry's own database
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert len(trials) == 4 and optuna.trial.TrialState.RUNNING not in states
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and len(pruned) + len(complete) == 4
    # At temperature 30 the tiny coder writes no code (RL reward 0 at step 1), below the median of the
    # completed trials there: every such trial after the first completed one is pruned at its first report.
    first_done = min(t.number for t in complete)
    assert sorted(t.intermediate_values[1] for t in complete)[len(complete) // 2] > 0
    hot = [t for t in trials if t.params["rollout.temperature"] == 30.0 and t.number > first_done]
    assert hot and all(t.state == optuna.trial.TrialState.PRUNED for t in hot)
    with Registry(url) as reg:
        for trial in trials:
            run = reg.get_run(trial.user_attrs["run_id"])
            (link,) = reg.events(run.id, kind="optuna_trial")
            assert link.payload == {"study": "tiny-search", "trial": trial.number, "params": trial.params}
            assert run.config["rollout"]["temperature"] == trial.params["rollout.temperature"]
            last_step = max(m.step for m in reg.metrics(run.id, keys=["reward/rl_mean"]))
            if trial.state == optuna.trial.TrialState.PRUNED:
                assert run.status == "pruned" and last_step < 8  # stopped early
                assert f"[trial {trial.number}] pruned at step " in res.stderr  # the progress line says so
            else:
                assert run.status == "completed" and last_step == 8
                assert trial.value == pytest.approx(objective(reg, run.id, "reward/rl_mean", 2))
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(optuna.load_study(study_name="tiny-search", storage=url).get_trials()) == 4  # nothing new
