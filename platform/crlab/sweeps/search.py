"""Optuna search sweeps: each trial is one run, trained like any sweep cell and pruned on a per-step metric.

The study is named after the sweep and lives in the registry's own database (Optuna's RDB storage, its
tables beside crlab's), so it is shared by every process that points at that registry. Each trial is linked
to its run both ways: the trial's user attribute ``run_id``, and the run's ``optuna_trial`` event (study,
trial number, params); the run's cell key is derived from the trial number.

While a trial trains, the sweep reads its ``prune_on`` metric from the registry and reports each new step to
the pruner; a pruned trial's run gets SIGTERM, checkpoints, and ends ``pruned``. A finished run's objective
is the mean of ``metric`` over its last ``last_k`` steps. Rerunning the command continues the study:
trials interrupted with their runs (Ctrl-C, a crash) are resumed from their checkpoints, then new trials are
asked for until the study holds ``n_trials``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from crlab import config as cfgmod
from crlab.errors import ConfigError
from crlab.registry import Registry, resolve_db_url
from crlab.registry.claims import claim_cell
from crlab.sweeps import search_space
from crlab.sweeps.executors import CellHandle, make_executor
from crlab.sweeps.runner import ensure_sweep
from crlab.sweeps.spec import SweepSpec, yaml_scalar
from crlab.train.loop import new_run_fields, write_run_dir

POLL_S = 2.0


@dataclass
class _Active:
    trial: Any  # optuna.Trial
    run_id: str
    handle: CellHandle
    reported: set[int] = field(default_factory=set)
    pruned: bool = False


def open_study(spec: SweepSpec, url: str) -> Any:
    import optuna

    search = spec.search
    assert search is not None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=spec.name, storage=optuna.storages.RDBStorage(url), load_if_exists=True,
        direction=search.direction, sampler=search_space.sampler(search), pruner=search_space.pruner(search),
    )  # fmt: skip


def run_search(spec: SweepSpec, db_url: str | None = None, json_out: bool = False) -> int:
    """Run the search to ``n_trials`` trials; returns the number of trials that failed in this invocation."""
    executor = make_executor(spec.executor)
    if executor.name != "local":
        raise ConfigError("search sweeps run on the local executor in this version (executor.kind: local)")
    url = resolve_db_url(db_url)
    registry = Registry(url)
    sweep_id = ensure_sweep(registry, spec)
    study = open_study(spec, url)
    console = Console(stderr=json_out)
    stopping: list[int] = []
    old = {sig: signal.signal(sig, lambda s, _f: stopping.append(s)) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed = 0
    try:
        with Live(_table(study, registry), console=console, refresh_per_second=1, transient=True) as live:
            failed = _loop(spec, registry, url, sweep_id, study, executor, live, stopping)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    _summary(study, registry, console, json_out)
    return failed


def _loop(spec, registry, url, sweep_id, study, executor, live, stopping) -> int:  # noqa: ANN001
    import optuna

    search = spec.search
    active: dict[str, _Active] = {}
    failed = 0
    while True:
        while not stopping and len(active) < executor.parallel:
            started = _next_trial(spec, registry, url, sweep_id, study, executor, active)
            if started is None:
                break
            active[started.run_id] = started
        if not active:
            return failed
        if stopping:
            for item in active.values():
                item.handle.stop()
        time.sleep(POLL_S)
        for run_id, item in list(active.items()):
            _report(registry, search, item)
            code = item.handle.poll()
            if code is None:
                continue
            del active[run_id]
            state = _tell(study, registry, search, item, code, stopping=bool(stopping))
            failed += state == optuna.trial.TrialState.FAIL
        live.update(_table(study, registry))


def _next_trial(spec, registry, url, sweep_id, study, executor, active) -> _Active | None:  # noqa: ANN001
    """Resume an interrupted trial of this study, else ask a new one while the study is short of n_trials."""
    import optuna

    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for frozen in running:
        run_id = frozen.user_attrs.get("run_id")
        if run_id and run_id not in active and registry.get_run(run_id).status in ("completed", "pruned"):
            _tell_finished(study, registry, spec.search, frozen, run_id)  # ended, but was never told
        elif run_id and run_id not in active:
            trial = optuna.trial.Trial(study, frozen._trial_id)
            item = _claim_and_launch(spec, registry, url, sweep_id, executor, trial, frozen.params)
            if item is not None:
                item.reported = set(frozen.intermediate_values)
                return item
    if len(study.get_trials(deepcopy=False)) >= spec.search.n_trials:
        return None
    trial = study.ask(search_space.distributions(spec.search))
    item = _claim_and_launch(spec, registry, url, sweep_id, executor, trial, trial.params)
    if item is None:  # cannot happen for a fresh trial number; keep the study consistent anyway
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return item


def _claim_and_launch(spec, registry, url, sweep_id, executor, trial, params) -> _Active | None:  # noqa: ANN001
    overrides = {**spec.overrides, **params}
    args = [f"{k}={yaml_scalar(v)}" for k, v in overrides.items()] + [f"seed={spec.seeds[0]}"]
    cfg = cfgmod.load_config(spec.base, args)
    key = cfgmod.config_hash({"study": spec.name, "trial": trial.number})
    owner = {"host": socket.gethostname(), "pid": os.getpid()}
    claim = claim_cell(
        registry, sweep_id, key, new_run_fields(cfg), grace_s=float(spec.executor["heartbeat_grace_s"]),
        max_retries=int(spec.executor["max_retries"]), owner=owner,
    )  # fmt: skip
    if claim.action == "start":
        write_run_dir(claim.run.run_dir or "", cfg)
        trial.set_user_attr("run_id", claim.run.id)
        payload = {"study": spec.name, "trial": trial.number, "params": params}
        registry.log_event(claim.run.id, "optuna_trial", payload, step=0)
    if not claim.mine:
        return None
    return _Active(trial, claim.run.id, executor.launch(claim.run, url))


def _report(registry: Registry, search: Any, item: _Active) -> None:
    """Report the run's new ``prune_on`` values, step by step; stop the run at the first prune decision."""
    if search.prune_on is None or item.pruned:
        return
    newest = {m.step: m.value for m in registry.metrics(item.run_id, keys=[search.prune_on])}
    for step in sorted(s for s in newest if s not in item.reported):
        item.trial.report(newest[step], step)
        item.reported.add(step)
        if item.trial.should_prune():
            item.pruned = True
            item.handle.stop()
            return


def objective(registry: Registry, run_id: str, metric: str, last_k: int) -> float | None:
    """Mean of ``metric`` over the run's last ``last_k`` steps (a replayed step counts once, newest value)."""
    newest = {m.step: m.value for m in registry.metrics(run_id, keys=[metric])}
    steps = sorted(newest)[-last_k:]
    return sum(newest[s] for s in steps) / len(steps) if steps else None


def _tell_finished(study, registry, search, frozen, run_id: str) -> None:  # noqa: ANN001
    import optuna

    trial, state = optuna.trial.Trial(study, frozen._trial_id), optuna.trial.TrialState
    if registry.get_run(run_id).status == "pruned":
        study.tell(trial, state=state.PRUNED)
        return
    value = objective(registry, run_id, search.metric, search.last_k)
    if value is None:
        study.tell(trial, state=state.FAIL)
    else:
        study.tell(trial, value)


def _tell(study, registry, search, item: _Active, code: int, stopping: bool):  # noqa: ANN001, ANN202
    import optuna

    state = optuna.trial.TrialState
    run = registry.get_run(item.run_id)
    if run.status == "running":  # died before it could say how it ended
        run = registry.finish_run(item.run_id, "failed", error=f"exited with code {code}")
    if item.pruned:
        registry.update_run(item.run_id, status="pruned")
        study.tell(item.trial, state=state.PRUNED)
        return state.PRUNED
    if run.status == "completed":
        value = objective(registry, item.run_id, search.metric, search.last_k)
        if value is not None:
            study.tell(item.trial, value)
            return state.COMPLETE
        item.trial.set_user_attr("error", f"the run logged no {search.metric!r}")
    elif stopping or run.status == "preempted":
        return state.RUNNING  # left running in the study: the next invocation resumes it
    study.tell(item.trial, state=state.FAIL)
    return state.FAIL


def _rows(study: Any, registry: Registry) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get("run_id")
        run = registry.get_run(run_id) if run_id else None
        last = max(t.intermediate_values) if t.intermediate_values else None
        rows.append({
            "trial": t.number, "state": t.state.name, "run": run_id, "run_status": run.status if run else None,
            "params": t.params, "value": t.value, "last_step": last,
            "last_reported": t.intermediate_values.get(last) if last is not None else None,
        })  # fmt: skip
    return rows


def _table(study: Any, registry: Registry) -> Table:
    table = Table(title=f"study {study.study_name}", title_justify="left")
    for column in ("trial", "state", "run", "params", "step", "reported", "value"):
        table.add_column(column)
    for r in _rows(study, registry):
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        fmt = [("-" if r[k] is None else f"{r[k]:.3f}") for k in ("last_reported", "value")]
        step = "-" if r["last_step"] is None else str(r["last_step"])
        table.add_row(str(r["trial"]), r["state"].lower(), r["run"] or "-", params, step, *fmt)
    return table


def _summary(study: Any, registry: Registry, console: Console, json_out: bool) -> None:
    import json

    rows = _rows(study, registry)
    if json_out:
        best = None
        with contextlib.suppress(ValueError):  # no completed trial yet
            best = {"trial": study.best_trial.number, "value": study.best_value, "params": study.best_params}
        sys.stdout.write(json.dumps({"study": study.study_name, "trials": rows, "best": best}, indent=2) + "\n")
        return
    console.print(_table(study, registry))
