"""Optuna search sweeps: each trial is one run, trained like any sweep cell and pruned on a per-step metric.

The study is named after the sweep and lives in the registry's own database (Optuna's RDB storage, its
tables beside crlab's), so it is shared by every process that points at that registry. Each trial is linked
to its run both ways: the trial's user attribute ``run_id``, and the run's ``optuna_trial`` event (study,
trial number, params); the run's cell key is derived from the trial number.

While a trial trains, the sweep reads its ``prune_on`` metric from the registry and reports each new step to
the pruner; a pruned trial's run gets SIGTERM, checkpoints, and ends ``pruned``. A finished run's objective
is the mean of ``metric`` over its last ``last_k`` steps, or, with ``select: best|last``, the run's best or
final value of it (from its metric summary: a held-out ``eval/pass@1`` is judged by its best checkpoint). Rerunning the command continues the study:
trials interrupted with their runs (Ctrl-C, a crash) are resumed from their checkpoints, then new trials are
asked for until the study holds ``n_trials``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from crlab import config as cfgmod
from crlab.errors import ConfigError
from crlab.registry import Registry, resolve_db_url
from crlab.registry.claims import ClaimAction, claim_cell
from crlab.registry.entities import EventKind, RunStatus
from crlab.registry.lifecycle import new_run_fields, owner, write_run_dir
from crlab.registry.retry import Reachability
from crlab.sweeps import search_space
from crlab.sweeps.executor_factory import make_executor
from crlab.sweeps.executors import Executor
from crlab.sweeps.progress import EVERY, SweepProgress
from crlab.sweeps.runner import ensure_sweep, stop_signals, sweep_console
from crlab.sweeps.scheduler import Active, schedule
from crlab.sweeps.spec import SweepSpec, yaml_scalar


@dataclass
class _Trial:
    trial: Any  # optuna.Trial
    reported: set[int] = field(default_factory=set)
    pruned: bool = False


def open_study(spec: SweepSpec, url: str, reach: Reachability | None = None) -> Any:
    """The search's Optuna study, in the registry's database; with ``reach``, its storage calls ride out
    registry outages as the registry's own do."""
    import optuna

    search = spec.search
    assert search is not None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = retrying_storage(url, reach) if reach is not None else optuna.storages.RDBStorage(url)
    return optuna.create_study(
        study_name=spec.name, storage=storage, load_if_exists=True,
        direction=search.direction, sampler=search_space.sampler(search), pruner=search_space.pruner(search),
    )  # fmt: skip


def run_search(spec: SweepSpec, db_url: str | None = None, json_out: bool = False, every: int = EVERY) -> int:
    """Run the search to ``n_trials`` trials; returns the number of trials that failed in this invocation."""
    executor = make_executor(spec.executor)
    if executor.name != "local":
        raise ConfigError("search sweeps run on the local executor in this version (executor.kind: local)")
    url = resolve_db_url(db_url)
    registry = Registry(url)
    study = open_study(spec, url, registry.reach)
    trials = SearchTrials(registry, url, ensure_sweep(registry, spec), spec, study, executor)
    console = sweep_console(json_out)
    progress = SweepProgress(console, registry, trials.table, every)
    progress.watch(registry, float(spec.executor.registry_retry_s))
    with stop_signals() as stopping, progress:
        try:
            schedule(registry, trials, executor, progress, stopping)
        finally:
            if registry.reach.down_since is None:  # no summary from a registry that gave out
                _summary(trials.study, registry, console, json_out)
    return trials.failed


def retrying_storage(url: str, reach: Reachability) -> Any:
    """Optuna's RDBStorage of ``url`` whose every call goes through ``reach`` (retried while away)."""
    from optuna.storages import BaseStorage, RDBStorage

    def through(method: Any) -> Any:
        return functools.wraps(method)(lambda self, *a, **k: reach.call(method, self, *a, **k))

    names = {n for base in (BaseStorage, RDBStorage) for n in vars(base) if not n.startswith("_")}
    methods = {n: through(getattr(RDBStorage, n)) for n in names if inspect.isfunction(getattr(RDBStorage, n))}
    return type("RetryingRDBStorage", (RDBStorage,), methods)(url)


class SearchTrials:
    """An Optuna study's trials as a :class:`~crlab.sweeps.scheduler.CellSource`: interrupted trials are
    resumed first, then new ones are asked for while the study is short of ``n_trials``."""

    def __init__(self, registry: Registry, url: str, sweep_id: str, spec: SweepSpec, study: Any,
                 executor: Executor) -> None:  # fmt: skip
        self.registry, self.url, self.sweep_id, self.spec = registry, url, sweep_id, spec
        self.study, self.executor = study, executor
        self.search = spec.search
        self.running: set[str] = set()  # run ids of trials this process runs
        self.failed = 0

    def next_cell(self) -> Active | None:
        import optuna

        study = self.study
        for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            run_id = frozen.user_attrs.get("run_id")
            if not run_id or run_id in self.running:
                continue
            if self.registry.get_run(run_id).status.final:
                _tell_finished(study, self.registry, self.search, frozen, run_id)  # ended, but was never told
                continue
            item = self._claim_and_launch(optuna.trial.Trial(study, frozen._trial_id), frozen.params)
            if item is not None:
                item.payload.reported = set(frozen.intermediate_values)
                return item
        if len(study.get_trials(deepcopy=False)) >= self.search.n_trials:
            return None
        trial = study.ask(search_space.distributions(self.search))
        item = self._claim_and_launch(trial, trial.params)
        if item is None:  # cannot happen for a fresh trial number; keep the study consistent anyway
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return item

    def _claim_and_launch(self, trial: Any, params: dict[str, Any]) -> Active | None:
        spec = self.spec
        overrides = {**spec.overrides, **params}
        args = [f"{k}={yaml_scalar(v)}" for k, v in overrides.items()] + [f"seed={spec.seeds[0]}"]
        cfg = cfgmod.load_config(spec.base, args)
        key = cfgmod.config_hash({"study": spec.name, "trial": trial.number})
        claim = claim_cell(
            self.registry, self.sweep_id, key, new_run_fields(cfg),
            grace_s=float(spec.executor.heartbeat_grace_s), max_retries=spec.executor.max_retries, owner=owner(),
        )  # fmt: skip
        if claim.action == ClaimAction.START:
            write_run_dir(claim.run.run_dir or "", cfg)
            trial.set_user_attr("run_id", claim.run.id)
            payload = {"study": spec.name, "trial": trial.number, "params": params}
            self.registry.log_event(claim.run.id, EventKind.OPTUNA_TRIAL.value, payload, step=0)
        if not claim.mine:
            return None
        self.running.add(claim.run.id)
        label = f"trial {trial.number}"
        return Active(label, claim.run.id, self.executor.launch(claim.run, self.url), payload=_Trial(trial))

    def on_poll(self, item: Active) -> None:
        _report(self.registry, self.search, item)

    def on_finish(self, item: Active, run: Any, stopping: bool) -> None:
        import optuna

        self.running.discard(item.run_id)
        state = _tell(self.study, self.registry, self.search, item, run, stopping)
        self.failed += state == optuna.trial.TrialState.FAIL

    def table(self) -> Table:
        return _table(self.study, self.registry)


def _report(registry: Registry, search: Any, item: Active) -> None:
    """Report the run's new ``prune_on`` values, step by step; stop the run at the first prune decision."""
    trial: _Trial = item.payload
    if search.prune_on is None or trial.pruned:
        return
    newest = {m.step: m.value for m in registry.metrics(item.run_id, keys=[search.prune_on])}
    for step in sorted(s for s in newest if s not in trial.reported):
        trial.trial.report(newest[step], step)
        trial.reported.add(step)
        if trial.trial.should_prune():
            trial.pruned = True
            item.handle.stop()
            return


def objective(registry: Registry, run_id: str, metric: str, last_k: int) -> float | None:
    """Mean of ``metric`` over the run's last ``last_k`` steps (a replayed step counts once, newest value)."""
    newest = {m.step: m.value for m in registry.metrics(run_id, keys=[metric])}
    steps = sorted(newest)[-last_k:]
    return sum(newest[s] for s in steps) / len(steps) if steps else None


def trial_value(registry: Registry, run_id: str, search: Any) -> float | None:
    """A finished trial's objective: its run's best or last value of ``search.metric`` (``select``), else
    the mean over its last ``last_k`` steps; None when the run never logged the metric."""
    if search.select is not None:
        return registry.metric_value(run_id, search.metric, search.select)
    return objective(registry, run_id, search.metric, search.last_k)


def _tell_finished(study, registry, search, frozen, run_id: str) -> None:  # noqa: ANN001
    import optuna

    trial, state = optuna.trial.Trial(study, frozen._trial_id), optuna.trial.TrialState
    if registry.get_run(run_id).status == RunStatus.PRUNED:
        study.tell(trial, state=state.PRUNED)
        return
    value = trial_value(registry, run_id, search)
    if value is None:
        study.tell(trial, state=state.FAIL)
    else:
        study.tell(trial, value)


def _tell(study, registry, search, item: Active, run, stopping: bool):  # noqa: ANN001, ANN202
    """Tell the study how the trial's run ended (the run is settled); returns the trial's state."""
    import optuna

    state, trial = optuna.trial.TrialState, item.payload.trial
    if item.payload.pruned:
        registry.update_run(item.run_id, status=RunStatus.PRUNED)
        study.tell(trial, state=state.PRUNED)
        return state.PRUNED
    if run.status == RunStatus.COMPLETED:
        value = trial_value(registry, item.run_id, search)
        if value is not None:
            study.tell(trial, value)
            return state.COMPLETE
        trial.set_user_attr("error", f"the run logged no {search.metric!r}")
    elif stopping or run.status == RunStatus.PREEMPTED:
        return state.RUNNING  # left running in the study: the next invocation resumes it
    study.tell(trial, state=state.FAIL)
    return state.FAIL


def _rows(study: Any, registry: Registry) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get("run_id")
        run = registry.get_run(run_id) if run_id else None
        last = max(t.intermediate_values) if t.intermediate_values else None
        rows.append({
            "trial": t.number, "state": t.state.name, "run": run_id, "run_status": str(run.status) if run else None,
            "params": t.params, "value": t.value, "last_step": last,
            "last_reported": t.intermediate_values.get(last) if last is not None else None,
        })  # fmt: skip
    return rows


def _table(study: Any, registry: Registry) -> Table:
    table = Table(title=f"study {study.study_name}", title_justify="left")
    for column in ("trial", "state", "run", "params", "step", "reported", "value"):
        table.add_column(column)
    for r in _rows(study, registry):
        params = " ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items()
        )
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
        sys.stdout.write(
            json.dumps({"study": study.study_name, "trials": rows, "best": best}, indent=2) + "\n"
        )
        return
    console.print(_table(study, registry))
