"""`platform runs show` names the run's best checkpoint (its step, and the metric that picked it with its
value there), in the table and in --json; a run without evaluations has none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.registry.recording import Recording

from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[1]


def _show(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CRLAB_DB_URL": url, "COLUMNS": "200"}
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", "runs", "show", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_runs_show_flags_the_best_checkpoint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    with Registry(url) as reg:
        run = reg.create_run("tiny", {"eval": {"select": "eval/critique_acc"}}, run_id="feed0001")
        plain = reg.create_run("plain", {}, run_id="feed0002")
        kept = ["/ck/20", "/ck/40", "/ck/60"]
        with Recording(reg, run.id) as rec, Recording(reg, plain.id) as rec_plain:
            for i, (step, acc) in enumerate(((20, 0.5), (40, 0.75), (60, 0.625))):
                rec.metrics(step, {"eval/critique_acc": acc, "eval/pass@1": 0.1})
                rec.checkpoint(step, f"/ck/{step}", kept=kept[: i + 1], best=None)
            rec.best(40)  # its evaluation ended after the checkpoint at 60 was saved
            rec_plain.checkpoint(5, "/ck/p5", kept=["/ck/p5"], best=None)
    shown = _show(url, "feed0001", "--json")
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert found["best_checkpoint"] == {
        "step": 40,
        "path": "/ck/40",
        "metric": "eval/critique_acc",
        "value": 0.75,
        "selected_on": None, "reported_on": None, "same_set": True,  # no eval section: nothing to name
        "reported": {"metric": "eval/critique_acc", "value": 0.75},
    }  # fmt: skip
    assert [(c["step"], c["best"]) for c in found["checkpoints"]] == [(20, False), (40, True), (60, False)]
    table = _show(url, "feed0001").stdout
    assert "best checkpoint" in table and "step 40 (eval/critique_acc 0.75)" in table
    (row,) = [line for line in table.splitlines() if "/ck/40" in line]
    assert "best" in row and "eval/critique_acc 0.75" in row
    assert json.loads(_show(url, "feed0002", "--json").stdout)["best_checkpoint"] is None
    assert "best checkpoint" not in _show(url, "feed0002").stdout
