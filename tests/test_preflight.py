"""Preflight and `platform doctor`: a part that cannot work stops a command before anything is registered.

Real checks on this machine: the sandbox is started (bwrap hidden by a PATH without it), data files are
read, the registry is opened.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crlab.preflight import check_data, check_registry, check_runs_dir, check_sandbox, preflight

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "crlab", *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def no_bwrap(child_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A PATH with this Python's folder only: no bwrap (nor anything else a fresh machine may lack)."""
    return {**child_env, "PATH": str(Path(sys.executable).parent), "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'reg.db'}"}


def test_the_main_command_without_bwrap_stops_in_one_line_and_registers_nothing(
    no_bwrap: dict[str, str], tmp_path: Path
) -> None:
    started = time.time()
    done = _cli("sweep", "sweeps/crl_ratio.yaml", f"overrides={{paths.runs_dir: {tmp_path / 'runs'}}}", env=no_bwrap)
    assert time.time() - started < 30
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "bwrap" in lines[0] and "reward.isolation=rlimit" in lines[0]
    assert not (tmp_path / "reg.db").exists() and not (tmp_path / "runs").exists()  # nothing registered


def test_doctor_shows_the_missing_sandbox_and_the_way_out(no_bwrap: dict[str, str]) -> None:
    done = _cli("doctor", "sweeps/crl_ratio.yaml", "--json", env=no_bwrap)
    assert done.returncode == 2
    checks = {c["part"]: c for c in json.loads(done.stdout)}
    assert not checks["sandbox"]["ok"] and "bwrap" in checks["sandbox"]["detail"]
    assert "doctor --fix" in checks["sandbox"]["fix"]
    assert checks["data"]["ok"] and checks["model"]["ok"] and checks["registry"]["ok"]
    table = _cli("doctor", env={**no_bwrap, "COLUMNS": "200"})
    assert table.returncode == 2 and "missing" in table.stdout and "bubblewrap" in table.stdout
    rlimit = _cli("doctor", "experiments/tiny_coder.yaml", "reward.isolation=rlimit", "--json", env=no_bwrap)
    assert rlimit.returncode == 0, rlimit.stdout  # the explicit way out works without bwrap


def test_every_part_is_checked_for_real(tmp_path: Path) -> None:
    from crlab.config import load_config

    assert check_sandbox("bwrap").ok  # started, and ran a program
    bad = tmp_path / "lcb.jsonl"
    bad.write_text('{"question_id": "q1"}\n')  # a LiveCodeBench row without its fields
    cfg = load_config(REPO / "experiments/tiny_coder.yaml", [f"data.rl_source=livecodebench:{bad}"])
    data = check_data(cfg)
    assert not data.ok and f"{bad}:1" in data.detail  # the file and line of the bad row
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    if not check_runs_dir(str(locked / "runs")).ok:  # root can write anywhere: then only the free space is checked
        assert "read-only" in check_runs_dir(str(locked / "runs")).detail
    unreachable = check_registry("postgresql://nobody@127.0.0.1:9/none", None)
    assert not unreachable.ok and unreachable.fix
    cells = [load_config(REPO / "experiments/tiny_coder.yaml", [f"data.crl_ratio={r}"]) for r in (0.0, 0.2, 0.5)]
    parts = [c.part for c in preflight(cells, f"sqlite:///{tmp_path / 'reg.db'}")]
    assert parts.count("sandbox") == 1 and parts.count("model") == 1  # shared parts are checked once
    assert parts.count("data") == 2  # with and without CRL rows
    assert not (tmp_path / "reg.db").exists()


def test_a_bad_data_file_stops_the_sweep_before_anything_is_registered(
    child_env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "lcb.jsonl"
    bad.write_text("not json\n")
    env = {**child_env, "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'reg.db'}"}
    overrides = f"overrides={{data.rl_source: 'livecodebench:{bad}', paths.runs_dir: {tmp_path / 'runs'}}}"
    done = _cli("sweep", "sweeps/crl_ratio.yaml", overrides, env=env)
    assert done.returncode == 2 and f"{bad}:1" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "reg.db").exists()
