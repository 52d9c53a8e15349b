"""`platform reproduce`: refused, one line per difference and exit 2, when code, diff or data differ from
the original's; --force goes on and says so; --dry-run shows every check. (A real reproduction, trained
and compared weight for weight: tests/train/test_reproduce_run.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from crlab import config as cfgmod
from crlab.provenance import run_provenance
from crlab.registry import Registry
from crlab.registry.lifecycle import new_run_fields
from crlab.reproduce import plan_reproduction

REPO = Path(__file__).resolve().parents[1]
ROWS = [
    {"question_id": "r1", "question": "Print n twice.", "inputs": ["3\n"], "outputs": ["6\n"],
     "solutions": ["print(2 * int(input()))"]},
    {"question_id": "r2", "question": "Print n plus one.", "inputs": ["3\n"], "outputs": ["4\n"]},
]  # fmt: skip


def platform(*args: str, db: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CRLAB_DB_URL": db, "COLUMNS": "250"}
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "rstar.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:1]))
    return path


def _cfg(data: Path, tmp_path: Path):  # noqa: ANN202
    return cfgmod.load_config(
        REPO / "experiments/tiny_coder.yaml",
        [f"data.rl_source=rstar:{data}", f"paths.runs_dir={tmp_path / 'runs'}", "tracking.mode=disabled"],
    )


def _register(db: str, cfg, **provenance: object) -> str:  # noqa: ANN001
    """A completed run of ``cfg`` as `platform run` records it, its provenance changed by ``provenance``."""
    fields = new_run_fields(cfg)
    fields["provenance"] = {**fields["provenance"], **provenance}
    with Registry(db) as reg:
        return reg.create_run(fields.pop("name"), fields.pop("config"), run_id=fields.pop("id"),
                              status="completed", **fields).id  # fmt: skip


def _nothing_written(db: str, tmp_path: Path, run_id: str) -> None:
    with Registry(db) as reg:
        assert [r.id for r in reg.list_runs()] == [run_id] and reg.events(run_id) == []
    assert not (tmp_path / "runs").exists()


def test_a_changed_data_file_is_refused_naming_it_and_both_hashes(
    db_url: str, data: Path, tmp_path: Path
) -> None:
    run_id = _register(db_url, _cfg(data, tmp_path))
    before = hashlib.sha256(data.read_bytes()).hexdigest()
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))  # a row added since
    after = hashlib.sha256(data.read_bytes()).hexdigest()
    res = platform("reproduce", run_id, db=db_url)
    assert res.returncode == 2, res.stderr
    assert f"cannot reproduce run {run_id}" in res.stderr and "--force" in res.stderr
    (line,) = [x for x in res.stderr.splitlines() if "data.rl_source" in x]
    assert str(data) in line and f"sha256 {before} (original)" in line and f"sha256 {after} (now)" in line
    _nothing_written(db_url, tmp_path, run_id)
    data.write_text(
        "".join(json.dumps(r) + "\n" for r in ROWS[:1])
    )  # the same bytes again: that check passes
    found = json.loads(platform("reproduce", run_id, "--dry-run", "--json", db=db_url).stdout)
    (check,) = [c for c in found["checks"] if c["name"].startswith("data.rl_source")]
    assert check["same"] and check["refuses"] and before in check["now"]


def test_another_commit_is_refused(db_url: str, data: Path, tmp_path: Path) -> None:
    run_id = _register(
        db_url, _cfg(data, tmp_path), git={"commit": "0" * 40, "dirty": False, "diff_sha256": None}
    )
    res = platform("reproduce", run_id, db=db_url)
    assert res.returncode == 2, res.stderr
    (line,) = [x for x in res.stderr.splitlines() if "code commit" in x]
    git = run_provenance(_cfg(data, tmp_path))["git"]
    now = git["commit"]
    assert f"code commit: {'0' * 40} (original) -> {now} (now)" in line
    # the dirty state differs only when this checkout has uncommitted changes (a clean clone in CI has none)
    assert ("dirty state: clean (original)" in res.stderr) == bool(git["dirty"])
    _nothing_written(db_url, tmp_path, run_id)


def test_force_goes_on_and_dry_run_shows_every_check(db_url: str, data: Path, tmp_path: Path) -> None:
    run_id = _register(
        db_url, _cfg(data, tmp_path), git={"commit": "0" * 40, "dirty": False, "diff_sha256": None}
    )
    refused = platform("reproduce", run_id, "--dry-run", "--json", db=db_url)
    assert refused.returncode == 2
    found = json.loads(refused.stdout)
    assert found["would"] == "refuse" and found["forced"] is False and found["run"] == run_id
    assert any(d.startswith("code commit: 0000") for d in found["differences"])
    names = [c["name"] for c in found["checks"]]
    assert names[:3] == ["code commit", "dirty state", "config"] and "data.rl_source" in names
    assert {"seed", "host"} <= set(names)
    forced = platform("reproduce", run_id, "--dry-run", "--force", "--json", db=db_url)
    assert forced.returncode == 0 and json.loads(forced.stdout)["would"] == "start"
    assert json.loads(forced.stdout)["forced"] is True
    table = platform("reproduce", run_id[:4], "--dry-run", "--force", db=db_url)
    assert table.returncode == 0 and "forced past" in table.stdout and "differs" in table.stdout
    _nothing_written(db_url, tmp_path, run_id)


def test_a_run_without_provenance_needs_force(db_url: str, data: Path, tmp_path: Path) -> None:
    cfg = _cfg(data, tmp_path)
    with Registry(db_url) as reg:  # as runs made before revision 0004 are
        run = reg.create_run("old", cfgmod.to_dict(cfg), status="completed", git_commit="abc", git_dirty=True)
    res = platform("reproduce", run.id, db=db_url)
    assert res.returncode == 2
    assert "dirty state: dirty, not recorded" in res.stderr and "data files: not recorded" in res.stderr
    assert platform("reproduce", run.id, "--dry-run", "--force", db=db_url).returncode == 0


def test_an_unknown_run_is_one_line(db_url: str) -> None:
    res = platform("reproduce", "nope", db=db_url)
    assert (
        res.returncode == 2
        and res.stderr.strip() == "error: no run with id 'nope' (see `platform runs list`)"
    )


def test_plan_compares_provenance_check_by_check(data: Path, tmp_path: Path) -> None:
    cfg = _cfg(data, tmp_path)
    now = run_provenance(cfg)
    fields = new_run_fields(cfg)
    with Registry(f"sqlite:///{tmp_path / 'reg.db'}") as reg:
        run = reg.create_run(fields.pop("name"), fields.pop("config"), run_id=fields.pop("id"), **fields)
    run = replace(run, provenance=now)
    assert plan_reproduction(run, now).differences == [] and plan_reproduction(run, now).notes == []
    other = {**now, "packages": {**now["packages"], "torch": "0.0"}, "host": "elsewhere"}
    plan = plan_reproduction(run, other)
    assert plan.differences == [] and [c.name for c in plan.notes] == ["package torch", "host"]  # noted only
    dirty = {**now, "git": {**now["git"], "diff_sha256": "f" * 64}}
    (diff,) = plan_reproduction(run, dirty).differences
    assert diff.name == "dirty state" and diff.now == f"uncommitted diff sha256 {'f' * 64}"
    stored = {**run.config, "grpo": {**run.config["grpo"], "lr": 0.5}}  # a config as another schema wrote it
    changed = replace(
        run, config={**stored, "grpo": {k: v for k, v in stored["grpo"].items() if k != "epochs"}}
    )
    (gap,) = plan_reproduction(changed, now).differences
    assert gap.name == "config.grpo.epochs" and gap.original == "None"
    record = plan.record(forced=True)
    assert record == {
        "run": run.id,
        "forced": True,
        "differences": [],
        "notes": [c.line() for c in plan.notes],
    }
