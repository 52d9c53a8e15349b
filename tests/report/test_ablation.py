"""The ablation table: grouped and aggregated in the database, the same on SQLite and PostgreSQL; the CLI's
markdown, CSV, JSON, plot and --paper column."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.registry.recording import Recording

from crlab.errors import CrlabError
from crlab.registry import Registry
from crlab.registry.ablation import ablation

REPO = Path(__file__).resolve().parents[2]
# (crl_ratio, seed) -> eval/pass@1 at steps 10, 20, 30: best is the max, last the step-30 value
CURVES = {
    (0.0, 0): [0.10, 0.30, 0.20], (0.0, 1): [0.20, 0.40, 0.40], (0.0, 2): [0.50, 0.20, 0.10],
    (0.2, 0): [0.30, 0.60, 0.50], (0.2, 1): [0.40, 0.50, 0.70],
    (0.5, 0): [0.25, 0.25, 0.25],
}  # fmt: skip


def seed_sweep(url: str) -> dict[tuple[float, int], str]:
    ids = {}
    with Registry(url) as reg:
        sweep = reg.create_sweep(
            "crl-ratio", {"grid": {"data.crl_ratio": [0.0, 0.2, 0.5]}, "seeds": [0, 1, 2]}
        )
        for (ratio, seed), values in CURVES.items():
            run = reg.create_run(
                "tiny",
                {"data": {"crl_ratio": ratio}, "seed": seed},
                sweep_id=sweep.id,
                cell_key=f"{ratio}-{seed}",
            )
            reg.start_attempt(run.id, host="h", pid=1)
            with Recording(reg, run.id) as rec:
                for step, value in zip((10, 20, 30), values, strict=True):
                    rec.metrics(step, {"eval/pass@1": value, "train/pg_loss": 1 - value})
            reg.finish_run(run.id, "completed")
            ids[(ratio, seed)] = run.id
        failed = reg.create_run(
            "tiny", {"data": {"crl_ratio": 0.5}, "seed": 1}, sweep_id=sweep.id, cell_key="x"
        )
        reg.start_attempt(failed.id, host="h", pid=1)
        with Recording(reg, failed.id) as rec:
            rec.metrics(10, {"eval/pass@1": 0.99})
        reg.finish_run(failed.id, "failed", error="boom")
    return ids


def sample_std(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_best_and_last_mean_std_n_per_ratio(db_url):
    ids = seed_sweep(db_url)
    with Registry(db_url) as reg:
        best = ablation(reg, "crl-ratio", "eval/pass@1", "best")
        last = ablation(reg, "crl-ratio", "eval/pass@1", "last")
        loss = ablation(reg, "crl-ratio", "train/pg_loss", "best")
    assert best.by == ("data.crl_ratio",) and [r.values for r in best.rows] == [(0.0,), (0.2,), (0.5,)]
    expected_best = {0.0: [0.30, 0.40, 0.50], 0.2: [0.60, 0.70], 0.5: [0.25]}
    expected_last = {0.0: [0.20, 0.40, 0.10], 0.2: [0.50, 0.70], 0.5: [0.25]}
    for result, expected in ((best, expected_best), (last, expected_last)):
        for row in result.rows:
            values = expected[row.values[0]]
            assert row.n == len(values) and row.mean == pytest.approx(sum(values) / len(values), abs=1e-12)
            assert (
                row.std is None
                if len(values) == 1
                else row.std == pytest.approx(sample_std(values), abs=1e-9)
            )
    assert best.rows[1].runs == tuple(sorted([ids[(0.2, 0)], ids[(0.2, 1)]]))
    assert best.left_out == {"failed": 1}  # the failed run's 0.99 is not in any mean
    assert loss.rows[0].mean == pytest.approx(1 - sum(expected_best[0.0]) / 3)  # a loss's best is its minimum


def test_unknown_metric_and_sweep_are_one_line_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    seed_sweep(url)
    with Registry(url) as reg:
        with pytest.raises(CrlabError, match="eval/pass@2"):
            ablation(reg, "crl-ratio", "eval/pass@2")
        with pytest.raises(CrlabError, match="no sweep"):
            ablation(reg, "nope", "eval/pass@1")


def platform(*args, url):
    env = {**os.environ, "CRLAB_DB_URL": url}
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_cli_markdown_paper_csv_json_and_plot(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    seed_sweep(url)
    md = platform("ablation", "crl-ratio", "--paper", url=url)
    assert md.returncode == 0, md.stderr
    lines = md.stdout.splitlines()
    assert lines[0].startswith(
        "| data.crl_ratio | eval/pass@1 (best) mean | std | n | paper (Qwen3-4B, LCB v5 %) |"
    )
    assert lines[2].startswith("| 0.0 | 0.4000 | 0.1000 | 3 | 56.6 |")
    assert lines[3].startswith("| 0.2 | 0.6500 | 0.0707 | 2 | 59.0 |")
    assert lines[4].startswith("| 0.5 | 0.2500 | - | 1 | 56.0 |")
    assert "not counted (not completed): 1 failed" in md.stdout
    csv_out = platform("ablation", "crl-ratio", "--format", "csv", "--at", "last", url=url)
    assert csv_out.stdout.splitlines()[1].startswith("0.0,0.2333,")
    data = json.loads(platform("ablation", "crl-ratio", "--json", url=url).stdout)
    assert [r["n"] for r in data["rows"]] == [3, 2, 1] and data["rows"][0]["data.crl_ratio"] == 0.0
    with_paper = json.loads(platform("ablation", "crl-ratio", "--json", "--paper", url=url).stdout)
    assert [r["paper"] for r in with_paper["rows"]] == [56.6, 59.0, 56.0]
    png = tmp_path / "ablation.png"
    drawn = platform("ablation", "crl-ratio", "--plot", str(png), url=url)
    assert drawn.returncode == 0, drawn.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    bad = platform("ablation", "crl-ratio", "--metric", "eval/nope", url=url)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_a_sweep_ends_with_its_ablation_table(tmp_path, capsys):
    from crlab.cli_report import print_sweep_ablation

    url = f"sqlite:///{tmp_path / 'r.db'}"
    seed_sweep(url)
    print_sweep_ablation("crl-ratio", url)
    shown = capsys.readouterr()
    assert "| 0.2 | 0.6500 | 0.0707 | 2 |" in shown.out and shown.err == ""
    with Registry(url) as reg:  # a sweep whose cells logged no eval: the training reward, said on stderr
        sweep = reg.create_sweep("no-eval", {"grid": {"data.crl_ratio": [0.0]}})
        run = reg.create_run("tiny", {"data": {"crl_ratio": 0.0}}, sweep_id=sweep.id, cell_key="a")
        reg.start_attempt(run.id, host="h", pid=1)
        with Recording(reg, run.id) as rec:
            rec.metrics(1, {"reward/rl_mean": 0.5})
        reg.finish_run(run.id, "completed")
    print_sweep_ablation("no-eval", url)
    shown = capsys.readouterr()
    assert "| 0.0 | 0.5000 | - | 1 |" in shown.out and "showing reward/rl_mean (last) instead" in shown.err
