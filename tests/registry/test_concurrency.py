"""8 processes x 500 metric writes each: every row lands, no process fails, on both backends."""

from __future__ import annotations

import multiprocessing as mp

from crlab.registry import Registry

N_PROCS, N_WRITES = 8, 500


def _writer(url: str, run_id: str, worker: int, errors) -> None:  # noqa: ANN001
    try:
        with Registry(url) as reg:
            for i in range(N_WRITES):
                reg.log_metrics(run_id, i, {f"worker{worker}/loss": float(i)})
    except Exception as exc:  # reported to the parent, which fails the test
        errors.put(f"worker {worker}: {type(exc).__name__}: {exc}")


def test_concurrent_metric_writes(db_url: str) -> None:
    with Registry(db_url) as reg:
        run = reg.create_run("concurrency", {})
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(db_url, run.id, w, errors)) for w in range(N_PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    assert errors.empty(), errors.get()
    with Registry(db_url) as reg:
        assert reg.metric_count(run.id) == N_PROCS * N_WRITES
        rows = reg.metrics(run.id)
    per_worker = {}
    for m in rows:
        per_worker.setdefault(m.key, set()).add(m.step)
    assert len(per_worker) == N_PROCS
    assert all(steps == set(range(N_WRITES)) for steps in per_worker.values())
