"""How long the registry commands take to answer, against the floor of starting Python itself.

Each command runs ``--repeat`` times as a fresh process (``python -m crlab ...``) on a registry made here
with a few runs (``--runs``, written through the registry's journal as training writes them); the table
shows the median wall time of each, its ratio to ``python -c pass`` measured in the same run, and its
median CPU time (user + system: on a machine with other work on it, the wall time grows with the load, the
CPU time much less). It also says whether the command imported torch, transformers, deepspeed, vLLM or W&B (it should not).

    python benchmarks/cli_latency.py [--repeat 5] [--runs 4]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "deepspeed", "vllm", "wandb")
PROBE = (
    "import sys, runpy\nsys.argv = ['platform', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('crlab', run_name='__main__')\nexcept SystemExit:\n    pass\n"
    f"print('HEAVY', ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
)


def _registry(folder: Path, runs: int) -> tuple[str, list[str]]:
    from crlab.config import load_config
    from crlab.registry import Registry
    from crlab.registry.lifecycle import new_run_fields

    url = f"sqlite:///{folder / 'registry.db'}"
    registry = Registry(url)
    ids = []
    for seed in range(runs):
        cfg = load_config(overrides=[f"seed={seed}", f"paths.runs_dir={folder / 'runs'}"])
        fields = new_run_fields(cfg)
        run = registry.create_run(fields.pop("name"), fields.pop("config"), run_id=fields.pop("id"), **fields)
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
        commands = [["--help"], ["runs", "list"], ["runs", "list", "--json"], ["runs", "show", ids[0]],
                    ["runs", "compare", ids[0], ids[1]], ["db", "current"]]  # fmt: skip
        print(f"{'command':32} {'median s':>9} {'x python':>9} {'cpu s':>7}  heavy imports")
        print(f"{'python -c pass':32} {floor:9.3f} {1.0:9.1f} {floor_cpu:7.3f}  -")
        for args in commands:
            seconds, cpu, heavy = _time([sys.executable, "-c", PROBE, *args], env, opts.repeat)
            print(f"{'platform ' + ' '.join(a if len(a) < 12 else a[:8] for a in args):32} {seconds:9.3f} "
                  f"{seconds / floor:9.1f} {cpu:7.3f}  {heavy}")  # fmt: skip


if __name__ == "__main__":
    main()
