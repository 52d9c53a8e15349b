"""8 runs written at once, as a sweep's cells write theirs: 8 processes x 500 metric records each, each
through its run's own recorder (its journal, then the registry from a background writer: the one write
path); every row lands once, nothing is left unsent, no process fails, on both backends."""

from __future__ import annotations

import multiprocessing as mp

from crlab.registry import Registry
from crlab.registry.writer import RunRecorder

N_PROCS, N_WRITES = 8, 500


def _writer(url: str, run_id: str, run_dir: str, worker: int, errors, ready) -> None:  # noqa: ANN001
    try:
        with Registry(url) as reg:
            ready.wait(timeout=240)  # every process has opened the registry: the writes start together
            recorder = RunRecorder(reg.engine, run_id, run_dir, attempt=0, say=lambda _m: None)
            for i in range(N_WRITES):
                recorder.metrics(i, {f"worker{worker}/loss": float(i)})
            left = recorder.close(flush_s=120.0)
            if left:
                errors.put(f"worker {worker}: {left} record(s) left unsent")
    except Exception as exc:  # reported to the parent, which fails the test
        errors.put(f"worker {worker}: {type(exc).__name__}: {exc}")


def test_concurrent_metric_writes(db_url: str, tmp_path) -> None:  # noqa: ANN001
    with Registry(db_url) as reg:
        runs = [
            reg.create_run(f"concurrency-{w}", {}, run_dir=str(tmp_path / str(w))).id for w in range(N_PROCS)
        ]
    ctx = mp.get_context("spawn")
    errors, ready = ctx.Queue(), ctx.Barrier(N_PROCS)
    procs = [
        ctx.Process(target=_writer, args=(db_url, run_id, str(tmp_path / str(w)), w, errors, ready))
        for w, run_id in enumerate(runs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    assert errors.empty(), errors.get()
    with Registry(db_url) as reg:
        for w, run_id in enumerate(runs):
            assert reg.metric_count(run_id) == N_WRITES
            found = {(m.key, m.step) for m in reg.metrics(run_id)}
            assert found == {(f"worker{w}/loss", i) for i in range(N_WRITES)}
            assert reg.get_run(run_id).journal_seq == N_WRITES  # every record applied once, in order
