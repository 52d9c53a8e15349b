"""`platform runs compare`: the config keys that differ, metric summaries side by side, events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.registry.recording import Recording

from crlab.registry import Registry
from crlab.registry.compare import config_diff, flatten

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "seed": 0, "data": {"crl_ratio": 0.2, "rl_source": "tiny:64"},
    "phases": [{"name": "short", "crl_reward_scale": 0.8}, {"name": "long", "crl_reward_scale": 1.0}],
    "tracking": {"tags": ["tiny"]}, "deepspeed": {"overrides": {}},
}  # fmt: skip


def platform(*args: str, db: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CRLAB_DB_URL": db, "COLUMNS": "200"}
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def _config(**changes: object) -> dict:
    config = json.loads(json.dumps(BASE))
    config["data"]["crl_ratio"] = changes.get("ratio", 0.2)
    config["seed"] = changes.get("seed", 0)
    config["phases"][0]["crl_reward_scale"] = changes.get("scale", 0.8)
    return config


@pytest.fixture
def three(db_url: str) -> str:
    """Runs a, b, c: b differs from a in crl_ratio and phase 0's scale, c in its seed."""
    with Registry(db_url) as reg:
        reg.create_run("a", _config(), run_id="aaaa0001")
        reg.create_run("b", _config(ratio=0.5, scale=1.0), run_id="bbbb0002")
        reg.create_run("c", _config(seed=1), run_id="cccc0003")
        with Recording(reg, "aaaa0001") as a, Recording(reg, "bbbb0002") as b:
            for step in (1, 2, 3):
                a.metrics(step, {"reward/rl_mean": [0.2, 0.6, 0.4][step - 1], "loss": 1.0 / step})
                b.metrics(step, {"reward/rl_mean": 0.1 * step})
        reg.log_event("aaaa0001", "phase_switch", {"from": "short", "to": "long"}, step=2)
        reg.log_event("aaaa0001", "checkpoint", {"path": "/ck/2"}, step=2)
        reg.log_event("bbbb0002", "resume", {"attempt": 2, "from_step": 1}, step=1)
    return db_url


def test_flatten_and_config_diff() -> None:
    assert flatten(BASE) == {
        "seed": 0, "data.crl_ratio": 0.2, "data.rl_source": "tiny:64", "phases.0.name": "short",
        "phases.0.crl_reward_scale": 0.8, "phases.1.name": "long", "phases.1.crl_reward_scale": 1.0,
        "tracking.tags": ["tiny"], "deepspeed.overrides": {},
    }  # fmt: skip
    other = {**_config(ratio=0.5), "extra": 1}
    assert config_diff([_config(), other, _config()]) == {
        "data.crl_ratio": [0.2, 0.5, 0.2],
        "extra": [None, 1, None],
    }
    assert config_diff([_config(), _config()]) == {}


def test_compare_json_shows_only_differing_keys_summaries_and_events(three: str) -> None:
    res = platform("runs", "compare", "aaaa", "bbbb0002", "--json", db=three)
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout)
    assert [r["id"] for r in found["runs"]] == ["aaaa0001", "bbbb0002"]
    assert found["config"] == {"data.crl_ratio": [0.2, 0.5], "phases.0.crl_reward_scale": [0.8, 1.0]}
    reward = found["metrics"]["reward/rl_mean"]
    assert (reward[0]["last"], reward[0]["last_step"], reward[0]["max"], reward[0]["max_step"]) == (
        0.4,
        3,
        0.6,
        2,
    )
    assert (reward[0]["best"], reward[0]["best_step"], reward[0]["min"], reward[0]["n"]) == (0.6, 2, 0.2, 3)
    assert reward[1]["last"] == pytest.approx(0.3) and reward[1]["best_step"] == 3
    loss = found["metrics"]["loss"]
    assert loss[1] is None and (loss[0]["best"], loss[0]["best_step"]) == (pytest.approx(1 / 3), 3)  # lowest
    events = [(e["run"], e["step"], e["kind"]) for e in found["events"]]
    assert events == [("aaaa0001", 2, "phase_switch"), ("bbbb0002", 1, "resume")]  # checkpoints left out
    assert found["events"][0]["payload"] == {"from": "short", "to": "long"}


def test_compare_metrics_option_and_three_runs(three: str) -> None:
    res = platform(
        "runs", "compare", "aaaa0001", "bbbb0002", "cccc0003", "--json", "--metrics", "loss", db=three
    )
    found = json.loads(res.stdout)
    assert list(found["metrics"]) == ["loss"] and [s is None for s in found["metrics"]["loss"]] == [
        False,
        True,
        True,
    ]
    assert found["config"]["seed"] == [0, 0, 1] and found["config"]["data.crl_ratio"] == [0.2, 0.5, 0.2]


def test_compare_table(three: str) -> None:
    res = platform("runs", "compare", "aaaa0001", "cccc0003", db=three)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "config: 1 key(s) differ" in out and "seed" in out and "crl_ratio" not in out
    assert "reward/rl_mean" in out and "0.6 @2" in out and "phase_switch" in out
    for stat in ("last", "min", "max", "best"):
        assert stat in out


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["aaaa0001", "nope"], "no run with id 'nope'"),
        (["aaaa0001"], "compare needs two or more different runs"),
        (["aaaa0001", "aaaa"], "compare needs two or more different runs"),
        (["aaaa0001", "bbbb0002", "--metrics", "reward/rl_men"], "did you mean reward/rl_mean"),
    ],
)
def test_compare_bad_input_is_one_line_and_exit_2(three: str, args: list[str], match: str) -> None:
    res = platform("runs", "compare", *args, db=three)
    assert res.returncode == 2 and match in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not res.stdout
