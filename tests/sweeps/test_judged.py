"""Sweeps and searches judged on a held-out metric: ``metric: eval/pass@1`` with ``select: best|last`` (a
run's best value of it, or its final one, from the registry's metric summaries); bad combinations are one
line naming the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from tests.registry.recording import Recording

from crlab.errors import ConfigError
from crlab.registry import Registry
from crlab.sweeps.runner import GridCells
from crlab.sweeps.search import trial_value
from crlab.sweeps.spec import expand, load_spec

EVAL_BASE = "name: base\nmodel:\n  path: tiny://coder\neval:\n  source: tiny-eval\n  every: 10\n"
GRID = "base: base.yaml\ngrid:\n  data.crl_ratio: [0.0, 0.5]\n"
SEARCH = (
    "base: base.yaml\nsearch:\n  n_trials: 2\n  metric: eval/pass@1\n  select: best\n"
    "  params:\n    data.crl_ratio: {type: float, low: 0.0, high: 0.5}\n"
)


def _spec(tmp_path: Path, text: str, base: str = EVAL_BASE) -> Path:
    (tmp_path / "base.yaml").write_text(base)
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_a_grid_judged_on_held_out_pass_at_1(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, GRID + "metric: eval/pass@1\nselect: last\n"))
    assert (spec.metric, spec.select) == ("eval/pass@1", "last")
    assert spec.to_json()["metric"] == "eval/pass@1" and len(expand(spec)) == 2
    plain = load_spec(_spec(tmp_path, GRID))
    assert (plain.metric, plain.select) == (None, "best")  # judged on the training reward, as before


def test_a_search_judged_on_the_best_held_out_pass_at_1(tmp_path: Path) -> None:
    search = load_spec(_spec(tmp_path, SEARCH)).search
    assert (search.metric, search.select, search.direction) == ("eval/pass@1", "best", "maximize")
    last = load_spec(_spec(tmp_path, SEARCH.replace("select: best", "select: last"))).search
    assert last.select == "last"
    mean = load_spec(_spec(tmp_path, SEARCH.replace("  select: best\n", "  last_k: 3\n"))).search
    assert (mean.select, mean.last_k) == (None, 3)  # no select: the mean over the last steps


@pytest.mark.parametrize(
    ("text", "base", "match"),
    [
        (GRID + "metric: eval/pass@1\nselect: top\n", EVAL_BASE, r"s\.yaml:5: select must be one of best, last, got 'top'"),
        (GRID + "select: last\n", EVAL_BASE, r"s\.yaml:4: select needs a metric"),
        (GRID + "metric: eval/pass@5\n", EVAL_BASE, r"cell \[data\.crl_ratio=0\.0 seed=0\]: metric: the runs never log 'eval/pass@5' \(their eval logs eval/pass@1\)"),
        (GRID + "metric: eval/pass@1\n", "name: base\n", r"the runs never log 'eval/pass@1' \(their eval is off: set eval\.source"),
        (SEARCH + "metric: eval/pass@1\n", EVAL_BASE, r"s\.yaml:8: a search names its objective under search:"),
        (SEARCH.replace("select: best", "select: top"), EVAL_BASE, r"s\.yaml:5: search\.select must be one of best, last"),
        (SEARCH + "  last_k: 2\n", EVAL_BASE, r"s\.yaml:8: search\.select takes the run's best or final value; last_k averages"),
        (SEARCH + "  direction: minimize\n", EVAL_BASE, r"s\.yaml:8: search\.direction: minimize, but the best 'eval/pass@1' is its highest; use direction: maximize"),
        (SEARCH, "name: base\n", r"s\.yaml:4: search\.metric: the runs never log 'eval/pass@1' \(their eval is off"),
        (SEARCH.replace("  select: best\n", "  last_k: 2\n  prune_on: eval/pass@2\n"), EVAL_BASE, r"s\.yaml:6: search\.prune_on: the runs never log 'eval/pass@2'"),
    ],
)  # fmt: skip
def test_bad_judging_is_one_line_with_file_and_line(tmp_path: Path, text: str, base: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        expand(load_spec(_spec(tmp_path, text, base)))


def test_runs_are_judged_from_their_metric_summaries(tmp_path: Path) -> None:
    with Registry(f"sqlite:///{tmp_path / 'reg.db'}") as reg:
        run = reg.create_run("r", {})
        curve = {10: (0.5, 2.0), 20: (0.75, 1.0), 30: (0.75, 1.5), 40: (0.6, 1.2)}
        with Recording(reg, run.id) as rec:
            for step, (pass1, loss) in curve.items():
                rec.metrics(step, {"eval/pass@1": pass1, "actor/pg_loss": loss, "reward/rl_mean": step / 100})
        assert reg.metric_value(run.id, "eval/pass@1", "best") == 0.75
        assert reg.metric_value(run.id, "eval/pass@1", "last") == 0.6
        assert reg.metric_value(run.id, "actor/pg_loss", "best") == 1.0  # a loss: its lowest
        assert reg.metric_value(run.id, "eval/nope", "best") is None
        search = SimpleNamespace(metric="eval/pass@1", select="best", last_k=5)
        assert trial_value(reg, run.id, search) == 0.75
        assert trial_value(reg, run.id, SimpleNamespace(metric="eval/pass@1", select="last", last_k=5)) == 0.6
        mean = SimpleNamespace(metric="reward/rl_mean", select=None, last_k=2)
        assert trial_value(reg, run.id, mean) == pytest.approx(0.35)  # the mean of steps 30 and 40
        assert trial_value(reg, run.id, SimpleNamespace(metric="eval/nope", select="best", last_k=5)) is None
        spec = load_spec(_spec(tmp_path, GRID + "metric: eval/pass@1\n"))
        grid = GridCells(reg, reg.url, "sweep", spec, expand(spec), executor=None)  # type: ignore[arg-type]
        assert grid.judged(run.id) == 0.75 and grid.judged(None) is None
        assert "eval/pass@1 (best)" in [c.header for c in grid.table().columns]
