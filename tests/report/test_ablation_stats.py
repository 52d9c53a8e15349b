"""`platform ablation` with intervals, paired tests, the base row and power, end to end: a registry filled the
way runs fill it (each run's journal, replayed into SQLite), every figure checked against values worked out
by hand (the 4 problems x 2 seeds example of test_stats.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.registry.recording import Recording

from crlab import report
from crlab.errors import CrlabError
from crlab.registry import Registry
from crlab.registry.ablation import ablation
from crlab.registry.ablation_stats import with_uncertainty
from crlab.registry.journal import Journal, replay

REPO = Path(__file__).resolve().parents[2]
N = 4  # samples per problem
PROBLEMS = ["p1", "p2", "p3", "p4"]
# (crl_ratio, seed) -> passing samples c per problem at step 10 (the best checkpoint) and step 20 (the last)
BEST = {
    (0.0, 0): [2, 2, 1, 0], (0.0, 1): [3, 4, 1, 3],  # pass@1 B of test_stats.py: seed means 0.3125, 0.6875
    (0.2, 0): [4, 2, 3, 0], (0.2, 1): [4, 4, 1, 2],  # A: 0.5625, 0.6875; A - B: delta 0.125, t-test p 0.5
    (1.0, 0): [2, 2, 1, 0], (1.0, 1): [3, 4, 1, 3],  # the baseline's verdicts: delta 0, [0, 0], p 1
}  # fmt: skip
LAST = {key: [0, 0, 0, 1] for key in BEST}  # pass@1 0.0625 everywhere
BASE = {0: [1, 0, 1, 0], 1: [2, 0, 0, 0]}  # step 0, per seed; pooled over the seed's 3 runs: n=12, c=3x
TRACKING = {"enabled": True, "mode": "offline", "project": "crlab-test"}
SWEEP_END = "from crlab.cli_report import print_sweep_ablation; import sys; print_sweep_ablation('crl-ratio', sys.argv[1])"


def journal_run(
    reg: Registry, sweep_id: str, config: dict, run_dir: Path, evals: dict, best: int = 10, problems=PROBLEMS
) -> str:
    """A completed run whose records all go through its journal: per evaluated step (``evals``: step ->
    passing samples per problem) its metric, its eval_problems event and (after step 0) a checkpoint."""
    run = reg.create_run("tiny", config, sweep_id=sweep_id, cell_key=run_dir.name, status="running", attempt=1,
                         run_dir=str(run_dir))  # fmt: skip
    journal = Journal(run.run_dir, attempt=1)
    for step, counts in evals.items():
        journal.append("metrics", step=step, values={"eval/pass@1": sum(counts) / (N * len(counts))})
        payload = {"source": "tiny-test", "prefix": "eval/", "n": N,
                   "problems": [[p, N, c] for p, c in zip(problems, counts, strict=True)]}  # fmt: skip
        journal.append("event", event="eval_problems", payload=payload, step=step)
        if step:
            journal.append("checkpoint", step=step, path=f"{run.run_dir}/ck/{step}", best=best)
    journal.append("status", status="completed", error=None)
    journal.close()
    replay(reg.engine, run.id, run.run_dir)  # what the run's writer (or `platform runs sync`) does
    return run.id


def fill(url: str, folder: Path) -> None:
    with Registry(url) as reg:
        sweep = reg.create_sweep(
            "crl-ratio", {"grid": {"data.crl_ratio": [0.0, 0.2, 0.5, 1.0]}, "seeds": [0, 1]}
        )
        for ratio, seed in BEST:
            config = {"data": {"crl_ratio": ratio}, "seed": seed, "tracking": TRACKING}
            evals = {0: BASE[seed], 10: BEST[(ratio, seed)], 20: LAST[(ratio, seed)]}
            journal_run(reg, sweep.id, config, folder / f"{ratio}-{seed}", evals)
        old = reg.create_run("tiny", {"data": {"crl_ratio": 0.5}, "seed": 0}, sweep_id=sweep.id, cell_key="o")
        reg.start_attempt(old.id, host="h", pid=1)  # a run made before per-problem records: metrics only
        with Recording(reg, old.id) as rec:
            rec.metrics(10, {"eval/pass@1": 0.4})
        reg.finish_run(old.id, "completed")


def platform(*args: str, url: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CRLAB_DB_URL": url, **env_vars}
    env.pop("WANDB_API_KEY", None)
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_ablation_json_carries_intervals_paired_tests_base_and_power(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    fill(url, tmp_path)
    done = platform(
        "ablation", "crl-ratio", "--json", "--power", "0.024", "--baseline", "data.crl_ratio=0.0", url=url
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    rows = {r["data.crl_ratio"]: r for r in data["rows"]}
    assert data["baseline"] == {"key": "data.crl_ratio", "value": 0.0}
    base, a, same, old = rows[0.0], rows[0.2], rows[1.0], rows[0.5]
    assert base["baseline"] and base["delta"] is None and base["mean"] == pytest.approx(0.5)
    assert a["mean"] == pytest.approx(0.625) and a["n"] == 2 and a["std"] == pytest.approx(0.125 / 2**0.5)
    assert a["ci95"][0] <= 0.625 <= a["ci95"][1]
    assert a["delta"] == pytest.approx(0.125) and a["p"] == pytest.approx(0.5)  # t = 1 over 2 seed means
    assert a["delta_ci95"][0] <= 0.125 <= a["delta_ci95"][1]
    assert same["delta"] == 0.0 and same["delta_ci95"] == [0.0, 0.0] and same["p"] == 1.0
    # Holm over the two comparisons: 2 * 0.5 = 1.0, then max(1.0, 1 * 1.0) = 1.0
    assert a["p_holm"] == pytest.approx(1.0) and same["p_holm"] == 1.0
    assert any("t-test of the seed means" in note for note in data["notes"])
    assert not any("on one common seed" in note for note in data["notes"])
    assert a["significant"] is False and same["significant"] is False and base["significant"] is None
    # the base model, pooled per seed (n = 12): seed 0 [3, 0, 3, 0] / 12, seed 1 [6, 0, 0, 0] / 12
    assert data["base"]["mean"] == pytest.approx(0.125) and data["base"]["n"] == 2
    assert a["gain"] == pytest.approx(0.5) and base["gain"] == pytest.approx(0.375)
    assert old["mean"] == 0.4 and old["ci95"] is None and old["p"] is None  # the older run: mean only
    assert any("no intervals for the rows of run(s)" in note for note in data["notes"])
    assert any("chosen on the reported set itself" in note for note in data["notes"])
    # power: spread pooled over the two comparisons (var_seed 0.015625 and 0; var_problem 0.0625 and 0),
    # V = 0.0078125 + 0.03125 / 4 = 0.015625; 2 seeds, the t-test's 1 degree of freedom (Cauchy quantiles):
    # detectable (t_0.975 + t_0.80) sqrt(V / 2); the seeds needed, the smallest S with k(S)^2 V / 0.024^2 <= S:
    # V / 0.024^2 = 27.13; k(215)^2 = 7.921 gives 214.87 <= 215, k(214)^2 214.88 > 214 (the normal z: 213)
    power = data["power"]
    assert (power["seeds"], power["problems"], power["comparisons"]) == (2, 4, 2)
    k = math.tan(0.475 * math.pi) + math.tan(0.3 * math.pi)
    assert power["detectable"] == pytest.approx(k * (0.015625 / 2) ** 0.5, abs=1e-8)
    assert power["delta"] == 0.024 and power["seeds_needed"] == 215


def test_markdown_against_another_baseline_and_the_sweeps_last_table_and_plot_in_wandb(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    fill(url, tmp_path)
    with Registry(url) as reg:
        result = with_uncertainty(reg, ablation(reg, "crl-ratio", "eval/pass@1"), "data.crl_ratio=0.2")
    md = report.markdown(result)
    lines = md.splitlines()
    assert lines[0].startswith("| data.crl_ratio | eval/pass@1 (best) mean | std | n | 95% CI | delta |")
    assert lines[2].startswith("| base | 0.1250 | 0.0000 | 2 | [")
    assert lines[3].startswith("| 0.0 | 0.5000 | 0.2652 | 2 | [") and "| -0.1250 | [" in lines[3]
    assert "| baseline |" in lines[4] and lines[4].startswith("| 0.2 | 0.6250 |")
    assert lines[5].startswith("| 0.5 | 0.4000 | - | 1 | - | - | - | - | - |")
    assert "against data.crl_ratio=0.2" in md and "to detect" not in md
    # the end of `platform sweep`, in its own process as a sweep runs it (its runs track to W&B, offline)
    env = {**os.environ, "WANDB_MODE": "offline", "HOME": str(tmp_path)}
    env.pop("WANDB_API_KEY", None)
    end = subprocess.run([sys.executable, "-c", SWEEP_END, url], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=300)  # fmt: skip
    assert end.returncode == 0, end.stderr
    assert "| base | 0.1250 |" in end.stdout and "| 0.2 | 0.6250 | 0.0884 | 2 | [" in end.stdout
    assert "| 0.5000 | 1.0000 | no |" in end.stdout and "smallest difference detectable" in end.stdout
    folder = tmp_path / "ablation-crl-ratio"
    assert f"W&B: the ablation (table with intervals, plot) is in {folder / 'wandb'}" in end.stderr
    assert (folder / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (table,) = (folder / "wandb").rglob("ablation/table_*.table.json")
    logged = json.loads(table.read_text())  # the W&B table: the same columns and rows, intervals included
    assert logged["columns"][4:6] == ["95% CI", "delta"]
    assert logged["data"][0][:3] == ["base", "0.1250", "0.0000"]
    assert logged["data"][2][:4] == ["0.2", "0.6250", "0.0884", "2"] and logged["data"][2][9] == "no"


def test_last_step_bad_baseline_and_a_metric_without_records(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    fill(url, tmp_path)
    with Registry(url) as reg:
        last = with_uncertainty(reg, ablation(reg, "crl-ratio", "eval/pass@1", "last"))
        assert [r.mean for r in last.rows if r.ci95] == [0.0625, 0.0625, 0.0625]
        assert all(r.delta == 0.0 and r.p == 1.0 for r in last.rows if r.delta is not None)
        with pytest.raises(CrlabError, match=r"no row has data.crl_ratio=0.3 \(values: 0.0, 0.2, 0.5, 1.0\)"):
            with_uncertainty(reg, ablation(reg, "crl-ratio", "eval/pass@1"), "data.crl_ratio=0.3")
        with pytest.raises(CrlabError, match="expected KEY=VALUE"):
            with_uncertainty(reg, ablation(reg, "crl-ratio", "eval/pass@1"), "seed=0")
        with Recording(reg, reg.list_runs()[0].id) as rec:  # after its journal's records
            rec.metrics(30, {"reward/rl_mean": 0.5})
        reward = with_uncertainty(reg, ablation(reg, "crl-ratio", "reward/rl_mean", "last"))
        assert reward.rows[0].ci95 is None and "not a pass@k" in reward.notes[0]


def test_two_swept_keys_compare_within_each_value_of_the_other_and_one_seed_says_so(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    grid = {"data.crl_ratio": [0.0, 0.2], "grpo.lr": [1e-6, 2e-6]}
    cells = {
        (0.0, 1e-6): [2, 2, 1, 0],
        (0.2, 1e-6): [4, 2, 3, 0],
        (0.0, 2e-6): [0, 0, 0, 0],
        (0.2, 2e-6): [0, 0, 0, 4],
    }
    with Registry(url) as reg:
        sweep = reg.create_sweep("two", {"grid": grid})
        for (ratio, lr), counts in cells.items():
            config = {"data": {"crl_ratio": ratio}, "grpo": {"lr": lr}, "seed": 0}
            journal_run(reg, sweep.id, config, tmp_path / f"{ratio}-{lr}", {10: counts})
        result = with_uncertainty(reg, ablation(reg, "two", "eval/pass@1"))
    rows = {r.values: r for r in result.rows}
    assert result.baseline == {"key": "data.crl_ratio", "value": 0.0}
    assert rows[(0.0, 1e-6)].baseline and rows[(0.0, 2e-6)].baseline
    # within lr 1e-6: [4,2,3,0] - [2,2,1,0] over 4 samples: d = [0.5, 0, 0.5, 0], p = 2/4 (two non-zero pairs)
    assert rows[(0.2, 1e-6)].delta == pytest.approx(0.25) and rows[(0.2, 1e-6)].p == pytest.approx(0.5)
    # within lr 2e-6: d = [0, 0, 0, 1]: one pair, p = 1; both intervals from one seed, over problems only
    assert rows[(0.2, 2e-6)].delta == pytest.approx(0.25) and rows[(0.2, 2e-6)].p == 1.0
    assert rows[(0.2, 2e-6)].ci95 == pytest.approx((0.0, 0.75)) and rows[(0.2, 2e-6)].std is None
    assert "one seed per row: the 95% CI is over problems only" in result.notes
    assert any(n.startswith("p of 2 comparison(s) on one common seed: a permutation over problems") and
               "cannot see seed-to-seed variation" in n for n in result.notes)  # fmt: skip
    assert result.base is None and "no base row: no run evaluated the base model (step 0)" in result.notes


def test_problems_not_evaluated_by_every_seed_are_left_out_and_said(tmp_path):
    with Registry(f"sqlite:///{tmp_path / 'r.db'}") as reg:
        sweep = reg.create_sweep("gap", {"grid": {"data.crl_ratio": [0.0]}})
        for seed, counts, problems in ((0, [4, 0, 0, 4], PROBLEMS), (1, [2, 2, 0], PROBLEMS[:3])):
            config = {"data": {"crl_ratio": 0.0}, "seed": seed}
            journal_run(reg, sweep.id, config, tmp_path / str(seed), {10: counts}, problems=problems)
        result = with_uncertainty(reg, ablation(reg, "gap", "eval/pass@1"))
    # on p1..p3 only: seed 0 [1, 0, 0] -> 1/3, seed 1 [0.5, 0.5, 0] -> 1/3
    assert result.rows[0].mean == pytest.approx(1 / 3) and result.rows[0].std == pytest.approx(0.0)
    assert "1 problem(s) not evaluated by every seed of their row are left out of it" in result.notes
