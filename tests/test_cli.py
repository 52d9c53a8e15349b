"""The `platform` command end to end, as a subprocess: exit codes, one-line errors, --json."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from tests.registry.recording import Recording

from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[1]
TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def platform(*args: str, db: str | None = None, columns: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if db:
        env["CRLAB_DB_URL"] = db
    if columns:
        env["COLUMNS"] = str(columns)
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


@pytest.fixture
def seeded(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    with Registry(url) as reg:
        sweep = reg.create_sweep("crl-ratio", {"grid": {}})
        run = reg.create_run("tiny", {"seed": 0}, sweep_id=sweep.id, cell_key="k0", run_id="abcd1234")
        reg.start_attempt(run.id, host="h", pid=1)
        with Recording(reg, run.id) as rec:  # as the run's trainer writes them
            rec.metrics(3, {"reward/rl_mean": 0.625})
            rec.event("phase_switch", {"to": "long"}, step=3)
            rec.checkpoint(3, "/ck/3", kept=["/ck/3"], best=None)
            rec.event("checkpoint", {"path": "/ck/3"}, step=3)
        reg.create_run("other", {}, run_id="ffff0000")
    return url


def test_help_of_every_command() -> None:
    for args in (
        [],
        ["run"],
        ["sweep"],
        ["resume"],
        ["runs", "list"],
        ["runs", "show"],
        ["runs", "compare"],
        ["reproduce"],
        ["db", "upgrade"],
        ["db", "current"],
    ):
        res = platform(*args, "--help")
        assert res.returncode == 0, (args, res.stderr)
        assert "Usage" in res.stdout
        assert "<bool>" not in res.stdout  # a flag is listed without a type
    assert "<int range>" in platform("sweep", "--help").stdout  # other options keep theirs


def test_runs_list_and_show_json(seeded: str) -> None:
    res = platform("runs", "list", "--json", db=seeded)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["id"] for r in rows] == ["abcd1234", "ffff0000"]
    assert rows[0]["latest_metrics"] == {"reward/rl_mean": 0.625} and "config" not in rows[0]
    res = platform("runs", "list", "--json", "--sweep", "crl-ratio", db=seeded)
    assert [r["id"] for r in json.loads(res.stdout)] == ["abcd1234"]
    res = platform("runs", "show", "abcd", "--json", db=seeded)
    shown = json.loads(res.stdout)
    assert shown["id"] == "abcd1234" and shown["config"] == {"seed": 0} and shown["status"] == "running"
    assert shown["events"][0]["kind"] == "phase_switch" and shown["checkpoints"][0]["complete"] is True
    table = platform("runs", "show", "abcd1234", db=seeded)
    assert table.returncode == 0 and "phase_switch" in table.stdout and "0.625" in table.stdout
    assert "to=long" in table.stdout and f"crl-ratio ({shown['sweep_id']}) / k0" in table.stdout
    events = table.stdout[table.stdout.index("events (") : table.stdout.index("\ncheckpoints\n")]
    assert "phase_switch" in events and "checkpoint " not in events  # checkpoints are listed in their table


def test_runs_list_fits_the_terminal(seeded: str) -> None:
    with Registry(seeded) as reg:
        sweep = reg.create_sweep("crl-ratio-at-a-fixed-budget-with-switching", {"grid": {}})
        for i, status in enumerate(("completed", "failed", "preempted", "running")):
            name = f"tiny-coder-crl-ratio-0.{i}-scale-0.8-switch-on-plateau-seed{i}"
            run = reg.create_run(name, {}, sweep_id=sweep.id, cell_key=f"k{i}")
            reg.start_attempt(run.id, host="h", pid=1)
            with Recording(reg, run.id) as rec:
                rec.metrics(100 + i, {"reward/rl_mean": 0.5})
            if status != "running":
                reg.finish_run(run.id, status)
        reg.create_run("x" * 150, {})
        ids = [r.id for r in reg.list_runs()]
    res = platform("runs", "list", db=seeded, columns=80)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, res.stdout
    assert "…" not in res.stdout and all(i in res.stdout for i in ids)  # ids in full, nothing cut
    assert "heartbeat" not in res.stdout and not re.search(TIMESTAMP, res.stdout)  # dropped, not cut
    assert "reward/rl_mean" in res.stdout and "0.500" in res.stdout and "0.625" in res.stdout
    roomy = platform("runs", "list", db=seeded, columns=200).stdout
    assert "heartbeat" in roomy and " ago " in roomy and "crl-ratio-at-a-fixed-budget-with-switching" in roomy
    wide = platform("runs", "list", "--wide", db=seeded, columns=200).stdout
    assert "heartbeat" in wide and "created" in wide and " ago" not in wide
    assert re.search(TIMESTAMP, wide) and "tiny-coder-crl-ratio-0.3" in wide


def test_relative_times() -> None:
    from crlab.cli_views import ago

    now = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    cases = {timedelta(seconds=9): "9s ago", timedelta(minutes=3, seconds=59): "3m ago"}
    cases |= {timedelta(hours=2, minutes=5): "2h ago", timedelta(days=5, hours=23): "5d ago"}
    assert {d: ago(now - d, now) for d in cases} == cases
    assert ago(None, now) == "-" and ago(now + timedelta(seconds=5), now) == "0s ago"  # clock skew


def test_model_build_tiny_points_at_the_shipped_model(tmp_path: Path) -> None:
    res = platform("model", "build-tiny", "--json", "--cache-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["shipped"] is True and info["seed"] == 0 and Path(info["path"]).parent.name == "assets"
    text = platform("model", "build-tiny", "--cache-dir", str(tmp_path)).stdout
    assert "ships with the package" in text and "--force" in text
    assert not list(tmp_path.iterdir())  # nothing built


def test_db_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    up = platform("db", "upgrade", "--db", url, "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["from"] is None
    cur = json.loads(platform("db", "current", "--db", url, "--json").stdout)
    assert cur["up_to_date"] is True and cur["current"] == cur["head"]
    assert "already at revision" in platform("db", "upgrade", "--db", url).stdout


def _one_error_line(res: subprocess.CompletedProcess, match: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert match in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (
            ["run", "experiments/tiny_coder.yaml", "grpo.lrr=1", "--dry-run"],
            "did you mean grpo.lr",
        ),  # unknown key
        (
            ["run", "experiments/tiny_coder.yaml", "seed=abc", "--dry-run"],
            "bad value for 'seed'",
        ),  # wrong type
        (["run", "experiments/nope.yaml", "--dry-run"], "no such file"),  # missing file
        (["run", "experiments/tiny_coder.yaml", "data.crl_ratio=2", "--dry-run"], "data.crl_ratio"),  # range
        (["runs", "show", "nosuchrun"], "no run with id"),  # unknown run
        (
            ["sweep", "sweeps/nope.yaml", "--dry-run"],
            "no such file (check the path; sweep files live in sweeps/)",
        ),
        (["sweep", "sweeps/crl_ratio.yaml", "--dry-run", "grpo.lr=1"], "goes in overrides={grpo.lr: 1}"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], match: str, seeded: str) -> None:
    _one_error_line(platform(*args, db=seeded), match)


def test_bad_yaml_syntax_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngrpo:\n  lr: [1\n")
    _one_error_line(platform("run", str(bad), "--dry-run"), f"{bad}:")


def test_unreachable_database() -> None:
    res = platform("runs", "list", "--db", "postgresql://nobody@127.0.0.1:1/none")
    _one_error_line(res, "cannot reach the registry database")


def test_old_schema_is_refused_and_left_unchanged(seeded: str) -> None:
    from sqlalchemy import create_engine, text

    from crlab.registry.db import VERSION_TABLE

    engine = create_engine(seeded)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0000old'"))
    res = platform("runs", "list", db=seeded)
    _one_error_line(res, "platform db upgrade")
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == "0000old"
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 2
    engine.dispose()


def test_run_dry_run_prints_the_resolved_config() -> None:
    res = platform("run", "experiments/tiny_coder.yaml", "grpo.lr=1e-3", "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    cfg = json.loads(res.stdout)
    assert cfg["grpo"]["lr"] == 1e-3 and cfg["model"]["path"] == "tiny://coder"
    warned = platform("run", "experiments/tiny_coder.yaml", "phases.0.scale_on=rewards", "--dry-run")
    assert warned.returncode == 0 and "cancels out" in warned.stderr


def test_sweep_dry_run_lists_cells_and_registers_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dry.db'}"
    res = platform("sweep", "sweeps/crl_ratio.yaml", "--dry-run", "--json", db=url)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    cells = [(c["overrides"]["data.crl_ratio"], c["seed"]) for c in data["cells"]]
    assert cells == [(r, s) for r in (0.0, 0.2, 0.5, 1.0) for s in (0, 1, 2)]
    assert not (tmp_path / "dry.db").exists()


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("model.path=/no/such/model", "model.path: '/no/such/model' does not exist"),  # missing model
        ("--nproc=3", "does not split over 3 data-parallel ranks"),  # 10 prompts per step over 3 ranks
        (
            "model.path=/no/model grpo.mini_batch_size=2 --nproc=2",
            "does not exist",
        ),  # checked before registering
        ("data.rl_source=rstar:{bad}", "bad.jsonl:2"),  # a data file in the wrong format: file and line
        ("data.rl_source=nosuchformat:x", "data.rl_source"),  # an unknown source
    ],
)
def test_run_checks_model_and_data_before_any_compute(override: str, match: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "inputs": ["1"], "outputs": ["1"]}\n{"question": 3}\n')
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    args = [
        "run",
        "experiments/tiny_coder.yaml",
        *override.format(bad=bad).split(),
        f"paths.runs_dir={tmp_path / 'runs'}",
    ]
    _one_error_line(platform(*args, db=url), match)
    with Registry(url) as reg:
        assert reg.list_runs() == []  # nothing registered
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_a_run_that_looks_alive(seeded: str) -> None:
    import socket

    with Registry(seeded) as reg:  # a live process of this host holds it: a second trainer would corrupt it
        reg.update_run("abcd1234", host=socket.gethostname(), pid=os.getpid())
    _one_error_line(platform("resume", "abcd1234", db=seeded), "looks alive")
    with Registry(seeded) as reg:  # another host's run with a fresh heartbeat
        reg.update_run("abcd1234", host="elsewhere-node-7", pid=1)
    _one_error_line(platform("resume", "abcd1234", db=seeded), "looks alive")


def test_runs_list_where_columns_sort(seeded: str) -> None:
    with Registry(seeded) as reg:
        sweep = reg.get_sweep("crl-ratio")
        for i, ratio in enumerate((0.0, 0.2, 0.5)):
            config = {"data": {"crl_ratio": ratio}, "seed": i, "tracking": {"tags": ["tiny"] if i else []}}
            reg.create_run(f"ratio-{ratio}", config, sweep_id=sweep.id, cell_key=f"c{i}", run_id=f"cc{i}")
            with Recording(reg, f"cc{i}") as rec:
                for step in (1, 2):
                    rec.metrics(step, {"reward/rl_mean": ratio + step / 10})
        reg.finish_run("cc2", "failed", error="boom")
    where = "config.data.crl_ratio >= 0.2 or (tags = 'tiny' and not status = 'failed')"
    columns = "id,status,config.data.crl_ratio,metrics.reward/rl_mean.last,metrics.reward/rl_mean.max_step"
    sort = "metrics.reward/rl_mean.last:desc"
    args = ["runs", "list", "--where", where, "--columns", columns, "--sort", sort]
    res = platform(*args, "--json", db=seeded)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [
        {"id": "cc2", "status": "failed", "config.data.crl_ratio": 0.5, "metrics.reward/rl_mean.last": 0.7,
         "metrics.reward/rl_mean.max_step": 2},
        {"id": "cc1", "status": "pending", "config.data.crl_ratio": 0.2, "metrics.reward/rl_mean.last": 0.4,
         "metrics.reward/rl_mean.max_step": 2},
    ]  # fmt: skip
    limited = platform(*args, "--limit", "1", "--json", db=seeded)
    assert [r["id"] for r in json.loads(limited.stdout)] == ["cc2"]
    table = platform(*args, db=seeded, columns=200)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "2 run(s)" in lines[0] and "config.data.crl_ratio" in table.stdout
    order = [line.split()[1] for line in lines if line.startswith("│ cc")]
    assert order == ["cc2", "cc1"]  # by the last reward, highest first
    assert "0.7" in table.stdout and "abcd1234" not in table.stdout
    plain = platform("runs", "list", "--where", "status = 'running'", "--json", db=seeded)
    (row,) = json.loads(plain.stdout)  # without --columns: the usual fields and latest metrics
    assert row["id"] == "abcd1234" and row["latest_metrics"] == {"reward/rl_mean": 0.625}


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--where", "config.data.crl_ratio >= "], "column 26: config.data.crl_ratio >= ^"),
        (["--where", "status > 3"], "type mismatch: status is text but 3 is a number"),
        (["--where", "config.data.crl_ration = 0.2"], "did you mean config.data.crl_ratio"),
        (["--where", "metrics.reward/rl_men.last > 0"], "did you mean reward/rl_mean"),
        (["--columns", "id,stauts"], "--columns: unknown key 'stauts'; did you mean status"),
        (["--sort", "created:sideways"], "--sort: sort by KEY or KEY:desc"),
    ],
)
def test_runs_list_bad_queries_are_one_line_and_exit_2(seeded: str, args: list[str], match: str) -> None:
    _one_error_line(platform("runs", "list", *args, db=seeded), match)
