"""How `runs list --where` scales: typical queries on registries of 1,000 and 10,000 runs.

Each run gets a realistic resolved config (the schema's defaults with the CRL ratio, seed, learning rate,
CRL scale, model and tags varied), a sweep (100 runs per sweep), a status, and ``--rows-per-run`` metric
rows (10 keys, 500 rows by default: 5 million rows at 10,000 runs) with their summaries. Rows are
inserted in bulk, not through runs' journals (one transaction per step would take hours here):
executemany through SQLAlchemy Core on SQLite, ``COPY`` on PostgreSQL; the summaries are computed in
Python from the same values, as the journal's ``metrics`` records would have kept them. Then each query runs through
``find_runs`` (parse, key checks, SQL, building the records: what ``runs list`` does before printing),
once to warm up and ``--repeat`` times timed; the table shows the median, the runs found and the growth
from the smaller registry to the larger. The target is at most 200 ms per query at 10,000 runs. The last
row times the write path at that size: a run's ``metrics`` record of every key, applied as its writer does.

    python benchmarks/registry_scale.py [--pg URL] [--runs 1000,10000] [--rows-per-run 500] [--repeat 5]

PostgreSQL: the server in ``--pg`` or ``CRLAB_TEST_PG_URL`` (a scratch database is created on it and
dropped afterwards); without either, SQLite only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from crlab import config as cfgmod
from crlab.registry import Registry
from crlab.registry.db import resolve_db_url
from crlab.registry.journal import Journal, apply_records
from crlab.registry.models import MetricRow, MetricSummaryRow, RunRow, SweepRow
from crlab.registry.query import find_runs

KEYS = ("reward/rl_mean", "reward/crl_mean", "critique/accuracy", "eval/pass@1", "loss", "kl", "entropy",
        "response/length_mean", "time/step_s", "perf/tokens_per_s")  # fmt: skip
RATIOS, LRS, TAGS = (0.0, 0.2, 0.5, 1.0), (1e-6, 2e-6, 5e-6), ("tiny", "ablation", "paper", "debug")
STATUSES = ("completed",) * 14 + ("failed", "failed", "running", "preempted", "pending", "killed")
RUNS_PER_SWEEP = 100
WRITE = "write: metrics, 10 keys"  # the row of the write path's time
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
QUERIES = [
    ("ratio = 0.2", {"where": "config.data.crl_ratio = 0.2"}),
    ("ratio and last reward", {"where": "config.data.crl_ratio = 0.2 and metrics.reward/rl_mean.last > 0.5"}),
    ("one sweep", {"where": "sweep = 'sweep-0003'"}),
    ("status, best eval, lr", {
        "where": "status = 'completed' and metrics.eval/pass@1.best >= 0.6 and config.grpo.lr < 3e-6"}),
    ("tag and not status", {"where": "tags = 'paper' and not status in ('failed', 'killed')"}),
    ("like or nested key", {"where": "name like 'crl-0.5-%' or config.phases.0.crl_reward_scale < 0.8"}),
    ("top 20 by best eval", {"where": "config.data.crl_ratio in (0.2, 0.5)",
                             "sort": "metrics.eval/pass@1.best:desc", "limit": 20}),
    ("newest 50, 4 columns", {"sort": "created:desc", "limit": 50,
                              "columns": ["id", "status", "config.data.crl_ratio", "metrics.reward/rl_mean.last"]}),
]  # fmt: skip


def _config(base: dict, i: int, rng: random.Random) -> dict:
    config = json.loads(json.dumps(base))
    ratio, seed = RATIOS[i % 4], (i // 4) % 3
    config["name"] = f"crl-{ratio}-seed{seed}-{i}"
    config["seed"] = seed
    config["data"]["crl_ratio"] = ratio
    config["grpo"]["lr"] = LRS[(i // 12) % 3]
    config["phases"][0]["crl_reward_scale"] = (0.8, 1.0)[(i // 36) % 2]
    config["model"]["path"] = ("Qwen/Qwen3-4B", "Qwen/Qwen3-8B")[(i // 72) % 2]
    config["tracking"]["tags"] = [t for t in TAGS if rng.random() < 0.3]
    return config


def _series(rng: random.Random, steps: int, ratio: float) -> dict[str, list[float]]:
    out = {}
    for k, key in enumerate(KEYS):
        level, slope = rng.uniform(0.1, 0.5) + 0.1 * ratio, rng.uniform(0.0, 0.5) * (1 if k < 4 else -0.3)
        out[key] = [level + slope * s / steps + rng.gauss(0, 0.03) for s in range(1, steps + 1)]
    return out


def _summary(run_id: str, key: str, values: list[float]) -> dict:
    lo, hi = min(values), max(values)
    return {"run_id": run_id, "key": key, "last": values[-1], "last_step": len(values), "min": lo,
            "min_step": values.index(lo) + 1, "max": hi, "max_step": values.index(hi) + 1, "n": len(values)}  # fmt: skip


def synthesise(first: int, count: int, steps: int) -> tuple[list[dict], list[dict], list[dict], list[tuple]]:
    """Sweeps, runs, summaries and metric rows of runs ``first`` .. ``first + count - 1``."""
    base = cfgmod.to_dict(cfgmod.load_config(None, []))
    sweeps, runs, summaries, metrics = [], [], [], []
    for i in range(first, first + count):
        rng = random.Random(i)
        run_id, created = f"r{i:07d}", START + timedelta(minutes=i)
        if i % RUNS_PER_SWEEP == 0:
            sweeps.append({"id": f"s{i // RUNS_PER_SWEEP:05d}", "name": f"sweep-{i // RUNS_PER_SWEEP:04d}",
                           "spec": {}, "spec_path": None, "created_at": created})  # fmt: skip
        config = _config(base, i, rng)
        runs.append({
            "id": run_id, "name": config["name"], "sweep_id": f"s{i // RUNS_PER_SWEEP:05d}", "cell_key": run_id,
            "config": config, "status": STATUSES[rng.randrange(len(STATUSES))], "attempt": 1, "packages": {},
            "git_commit": f"{rng.getrandbits(40):010x}", "git_dirty": False, "created_at": created,
        })  # fmt: skip
        for key, values in _series(rng, steps, config["data"]["crl_ratio"]).items():
            summaries.append(_summary(run_id, key, values))
            metrics.extend((run_id, s, key, v, created) for s, v in enumerate(values, start=1))
    return sweeps, runs, summaries, metrics


def bulk_insert(url: str, first: int, count: int, steps: int) -> float:
    """Insert runs ``first`` .. ``first + count - 1``; returns the seconds it took."""
    tables = synthesise(first, count, steps)
    t0 = time.perf_counter()
    engine = create_engine(resolve_db_url(url))
    (_copy_all if engine.dialect.name == "postgresql" else _insert_all)(engine, *tables)
    engine.dispose()
    return time.perf_counter() - t0


def _insert_all(engine, sweeps: list, runs: list, summaries: list, metrics: list) -> None:  # noqa: ANN001
    with engine.begin() as conn:
        for table, rows in ((SweepRow, sweeps), (RunRow, runs), (MetricSummaryRow, summaries)):
            if rows:
                conn.execute(insert(table.__table__), rows)
        names = ("run_id", "step", "key", "value", "time")
        for i in range(0, len(metrics), 50_000):
            chunk = [dict(zip(names, row, strict=True)) for row in metrics[i : i + 50_000]]
            conn.execute(insert(MetricRow.__table__), chunk)
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")


def _copy_all(engine, sweeps: list, runs: list, summaries: list, metrics: list) -> None:  # noqa: ANN001
    raw = engine.raw_connection()
    with raw.cursor() as cur:
        for table, rows in ((SweepRow, sweeps), (RunRow, runs), (MetricSummaryRow, summaries)):
            if rows:
                _copy(cur, table.__tablename__, list(rows[0]), [list(r.values()) for r in rows])
        _copy(cur, "metrics", ["run_id", "step", "key", "value", "time"], metrics)
        cur.execute("ANALYZE")
    raw.commit()
    raw.close()


def _copy(cur, table: str, columns: list[str], rows: list) -> None:  # noqa: ANN001 - a psycopg cursor
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([json.dumps(v) if isinstance(v, dict) else v for v in row])


def time_queries(url: str, repeat: int) -> dict[str, tuple[float, int]]:
    """Each query's median milliseconds and the number of runs it found."""
    out = {}
    with Registry(url) as reg:
        for label, query in QUERIES:
            found = len(find_runs(reg, **query))  # warm-up
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                find_runs(reg, **query)
                times.append((time.perf_counter() - t0) * 1000)
            out[label] = (statistics.median(times), found)
        out[WRITE] = (_time_writes(reg, repeat), 0)
    return out


def _time_writes(reg: Registry, repeat: int) -> float:
    """Median ms of the write path at this size: a run's ``metrics`` record of every key (built by a run's
    journal) applied in one transaction, as the run's background writer applies it."""
    run = reg.get_run("r0000000")
    times = []
    with tempfile.TemporaryDirectory() as folder:
        journal = Journal(folder, run.attempt)
        journal.seq = run.journal_seq  # after what earlier rounds applied
        for _ in range(repeat):  # new steps after the run's last (500 by default), one record each
            record = journal.append("metrics", step=1000 + journal.seq, values={k: 0.5 for k in KEYS})
            t0 = time.perf_counter()
            applied = apply_records(reg.engine, run.id, [record])
            times.append((time.perf_counter() - t0) * 1000)
            assert applied == 1, "the record was not applied: its number is not after the run's last"
        journal.close()
    return statistics.median(times)


def bench(name: str, url: str, sizes: list[int], steps: int, repeat: int) -> dict[int, dict]:
    Registry(url).close()  # the schema
    results, done = {}, 0
    for size in sizes:
        seconds = bulk_insert(url, done, size - done, steps)
        print(f"{name}: {size - done} runs, {(size - done) * steps * len(KEYS):,} metric rows in {seconds:.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip
        done = size
        results[size] = time_queries(url, repeat)
    return results


def print_table(name: str, results: dict[int, dict]) -> float:
    small, large = min(results), max(results)
    print(f"\n{name}: median ms per query (runs found), {small:,} -> {large:,} runs")
    print(f"{'query':<24} {f'{small:,} runs':>16} {f'{large:,} runs':>18} {'growth':>7}")
    worst = 0.0
    for label in results[small]:
        (a, na), (b, nb) = results[small][label], results[large][label]
        query = label != WRITE
        found_a, found_b = (f"({na})", f"({nb})") if query else ("", "")
        print(f"{label:<24} {a:>8.1f} {found_a:>7} {b:>9.1f} {found_b:>8} {b / a:>6.1f}x")
        worst = max(worst, b) if query else worst
    print(f"slowest query at {large:,} runs: {worst:.0f} ms (target 200 ms)")
    return worst


def _pg_scratch(server: str) -> tuple[str, object]:
    admin = create_engine(resolve_db_url(server), isolation_level="AUTOCOMMIT")
    name = f"crlab_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return f"{resolve_db_url(server).rpartition('/')[0]}/{name}", (admin, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", default=os.environ.get("CRLAB_TEST_PG_URL"), help="PostgreSQL server URL")
    parser.add_argument("--runs", default="1000,10000", help="registry sizes, comma-separated")
    parser.add_argument("--rows-per-run", type=int, default=500, help="metric rows per run (10 keys)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.runs.split(","))
    steps = max(1, args.rows_per_run // len(KEYS))
    print(f"{len(KEYS)} metric keys x {steps} steps per run; sizes {sizes}", file=sys.stderr)
    worst = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = bench("SQLite", f"sqlite:///{Path(tmp) / 'scale.db'}", sizes, steps, args.repeat)
        worst.append(print_table("SQLite", sqlite))
    if args.pg:
        url, (admin, name) = _pg_scratch(args.pg)
        try:
            pg = bench("PostgreSQL", url, sizes, steps, args.repeat)
            worst.append(print_table("PostgreSQL", pg))
        finally:
            with admin.connect() as conn:  # type: ignore[attr-defined]
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(f"\nslowest query at {sizes[-1]:,} runs on any database: {max(worst):.0f} ms (target 200 ms)")


if __name__ == "__main__":
    main()
