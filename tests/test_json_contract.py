"""One output contract: with ``--json``, a command's stdout is exactly one JSON document, on a fresh home and
model cache too; progress and notes go to stderr, as plain lines when stderr is not a terminal.

Every command that takes ``--json`` (found in the Typer app, so a new one cannot slip past) runs as a real
subprocess with an empty ``HOME``, ``CRLAB_HOME`` and ``CRLAB_CACHE``, against a registry holding a sweep of
two runs written through the run's journal (as training writes them). The first use of ``smollm2://`` (a
conversion of about a minute) is checked in tests/test_models.py, on its module's one conversion.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.registry.recording import Recording

REPO = Path(__file__).resolve().parents[1]
METRIC = "reward/rl_mean"


def _json_commands() -> set[str]:
    """Every command of the `platform` app that has a ``--json`` option, as "runs list", "data filter", ..."""
    import typer.main

    from crlab.cli import app

    found: set[str] = set()

    def walk(command, path: list[str]) -> None:  # noqa: ANN001
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        if not hasattr(command, "commands") and any(
            "--json" in getattr(p, "opts", ()) for p in command.params
        ):
            found.add(" ".join(path))

    walk(typer.main.get_command(app), [])
    return found


def _seed_registry(url: str, runs_dir: Path) -> list[str]:
    """A sweep of two completed runs (crl_ratio 0 and 0.5), their metrics and events sent by their journals."""
    from crlab.config import load_config
    from crlab.registry import Registry
    from crlab.registry.lifecycle import new_run_fields

    ids = []
    with Registry(url) as reg:
        sweep = reg.create_sweep("contract", {"grid": {"data.crl_ratio": [0.0, 0.5]}})
        for i, ratio in enumerate((0.0, 0.5)):
            cfg = load_config(overrides=[f"data.crl_ratio={ratio}", f"paths.runs_dir={runs_dir}"])
            fields = new_run_fields(cfg)
            run = reg.create_run(
                fields.pop("name"), fields.pop("config"), run_id=fields.pop("id"), sweep_id=sweep.id,
                cell_key=f"k{i}", **fields,
            )  # fmt: skip
            reg.start_attempt(run.id, host="h", pid=1)
            with Recording(reg, run.id) as rec:  # the run's journal, applied as a run's writer applies it
                for step in (1, 2):
                    rec.metrics(step, {METRIC: 0.25 * step + ratio / 4})
                rec.event("phase_switch", {"from_phase": 0, "to_phase": 1}, 2)
                rec.status("completed", None)
            ids.append(run.id)
    return ids


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """Each command's result: run once, on a home and a model cache that start empty."""
    tmp = tmp_path_factory.mktemp("contract")
    home, cache = tmp / "home", tmp / "cache"
    url = f"sqlite:///{tmp / 'registry.db'}"
    first, second = _seed_registry(url, tmp / "runs")
    samples = tmp / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": f"HumanEval/{i}", "completion": "    return None\n"}) + "\n"
                               for i in (0, 1)))  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "CRLAB_HOME": str(home / ".crlab"),
           "CRLAB_CACHE": str(cache), "CRLAB_DB_URL": url, "WANDB_MODE": "offline",
           "PYTHONPATH": str(REPO / "platform")}  # fmt: skip
    tiny = str(REPO / "experiments/tiny_coder.yaml")
    spec = tmp / "one_cell.yaml"  # one cell: the dry run plans each cell's data
    spec.write_text(f"name: one-cell\nbase: {tiny}\ngrid:\n  data.crl_ratio: [0.2]\n")
    commands = {
        "runs list": ["runs", "list"],
        "runs show": ["runs", "show", first],
        "runs compare": ["runs", "compare", first, second],
        "runs sync": ["runs", "sync", first],
        "ablation": ["ablation", "contract", "--metric", METRIC, "--at", "last"],
        "sync": ["sync", "contract", "--dry-run"],
        "reproduce": ["reproduce", first, "--dry-run"],
        "db current": ["db", "current"],
        "db upgrade": ["db", "upgrade"],
        "doctor": ["doctor"],
        "run": ["run", tiny, "--dry-run"],
        "sweep": ["sweep", str(spec), "--dry-run"],
        "model build-tiny": ["model", "build-tiny"],
        "eval": ["eval", "tiny://coder", "--on", "tiny-eval:2", "--max-new-tokens", "48"],
        "eval --samples": ["eval", "--samples", str(samples), "--on", "humaneval", "--k", "1"],
        "data filter": ["data", "filter", "tiny:4", "--out", str(tmp / "filtered.jsonl")],
        "data split": ["data", "split", "tiny:4", "--out-dir", str(tmp / "split")],
        "data build-crl": ["data", "build-crl", "--problems", "tiny:2", "--model", "tiny://coder", "--n", "1",
                           "--max-new-tokens", "48", "--out", str(tmp / "crl.jsonl")],
    }  # fmt: skip
    results = {}
    for name, args in commands.items():
        cmd = [sys.executable, "-m", "crlab", *args, "--json"]
        results[name] = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    return results


def test_every_json_command_prints_one_json_document_on_a_fresh_cache(outputs: dict) -> None:
    assert _json_commands() <= outputs.keys(), "a command with --json that this test does not run"
    bad = {}
    for name, res in outputs.items():
        # reproduce --dry-run exits 2 when the code differs from the run's recorded commit: its plan is the result
        if res.returncode not in ((0, 2) if name == "reproduce" else (0,)):
            bad[name] = f"exit {res.returncode}: {res.stderr[-1500:]}"
            continue
        try:
            json.loads(res.stdout)  # the whole of stdout: one document, nothing before or after it
        except json.JSONDecodeError as exc:
            bad[name] = f"{exc}: {res.stdout[:300]!r}"
    assert bad == {}
    assert json.loads(outputs["runs list"].stdout)[0]["latest_metrics"] == {METRIC: 0.5}
    assert json.loads(outputs["eval"].stdout)["problems"] == 2


def test_long_commands_print_plain_progress_lines_to_stderr_off_a_terminal(outputs: dict) -> None:
    """Generation (eval, build-crl) and labelling say where they are, one plain line each, on stderr."""
    evaluated = outputs["eval"].stderr.splitlines()
    assert "loading tiny://coder ..." in evaluated
    assert [line for line in evaluated if line.startswith("eval tiny://coder: ")][-1].startswith(
        "eval tiny://coder: 2/2 in "
    ), evaluated
    built = outputs["data build-crl"].stderr.splitlines()
    assert any(line.startswith("generate tiny://coder: 2/2 in ") for line in built), built
    assert any(line.startswith("labelling 2 candidates of 2 problems") for line in built), built
    scored = outputs["eval --samples"].stderr.splitlines()
    assert any(re.fullmatch(r"eval .*samples\.jsonl: 2/2 in \d+ s", line) for line in scored), scored
    for res in (outputs["eval"], outputs["data build-crl"]):
        assert "\r" not in res.stderr and "\x1b[" not in res.stderr  # no bar drawn into a pipe
