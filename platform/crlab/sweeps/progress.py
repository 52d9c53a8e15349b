"""A sweep's progress, followable anywhere: a live table on a terminal, plain lines everywhere else.

Lines (timestamped, one event each): a cell started or resumed (run, attempt, log file); every
``every`` steps its step and headline metrics (off a terminal, where there is no live table); a phase
switch; a checkpoint (off a terminal); a resume from a checkpoint; the cell's end, with its error when it
failed. Everything is read from the registry, so the lines say what the runs themselves recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from crlab.registry import Registry
from crlab.registry.entities import EventKind, Run, RunStatus
from crlab.sweeps.scheduler import Watch

EVERY = 10  # steps between progress lines off a terminal
HEADLINE = ("reward/rl_mean", "critique/accuracy", "eval/pass@1")  # eval/pass@1 at the steps that evaluate


@dataclass
class _Seen:
    step: int = 0
    events: int = 0


class SweepProgress:
    """The scheduler's reporter (see :class:`crlab.sweeps.scheduler.Reporter`)."""

    def __init__(
        self, console: Console, registry: Registry, table: Callable[[], Any], every: int = EVERY
    ) -> None:
        self.console, self.registry, self.table, self.every = console, registry, table, every
        self.live_view = console.is_terminal
        self._live: Live | None = None
        self._seen: dict[str, _Seen] = {}
        self._shown: Any = None  # the live table last drawn (kept on screen while the registry is away)
        self._down_at: float | None = None

    def __enter__(self) -> SweepProgress:
        if self.live_view:
            self._shown = self.table()
            self._live = Live(self._shown, console=self.console, refresh_per_second=1, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def line(self, text: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} {escape(text)}", highlight=False, soft_wrap=True)

    # -- the scheduler's events ---------------------------------------------------------------------
    def started(self, item: Any) -> None:
        run = self.registry.get_run(item.run_id)
        self._seen[item.run_id] = _Seen(events=len(self.registry.events(run.id)))
        log = Path(run.run_dir) / "train.log" if run.run_dir else None
        how = "started" if run.attempt == 1 else f"attempt {run.attempt}"
        if item.watch is not None:  # trained by a process this sweep did not start
            step = max((s for s, _ in self.registry.latest_metrics(run.id).values()), default=0)
            whose = "adopted (its sweep is gone)" if item.watch == Watch.ADOPTED else "run by another sweep, waited for"
            how = f"{whose} at step {step} of attempt {run.attempt}"
        where = f", job {item.handle.job_id}" if getattr(item.handle, "job_id", None) else ""
        self.line(f"[{item.label}] {how}: run {run.id}{where}, log {log or '-'}")

    def polled(self, item: Any) -> None:
        seen = self._seen.setdefault(item.run_id, _Seen())
        run = self.registry.get_run(item.run_id)
        events = self.registry.events(item.run_id)
        for event in events[seen.events :]:
            text = _event_text(event)
            if text and (event.kind != EventKind.CHECKPOINT or not self.live_view):
                self.line(f"[{item.label}] {text}")
        seen.events = len(events)
        if not self.live_view:  # after the events, which happened at or before the step it reports
            self._step_line(item.label, run, seen)

    def finished(self, item: Any, run: Run) -> None:
        self.polled(item)
        latest = self.registry.latest_metrics(run.id)
        step = max((s for s, _ in latest.values()), default=0)
        if run.status == RunStatus.FAILED:
            when = f"after step {step}" if step else "before its first step"
            self.line(
                f"[{item.label}] failed {when} (attempt {run.attempt}): {run.error or 'no error recorded'}"
            )
        else:
            self.line(f"[{item.label}] {run.status} at step {step}{_headline(latest)}")

    def refresh(self) -> None:
        if self._live is not None:
            self._shown = self.table()
            self._live.update(self._shown)

    def watch(self, registry: Registry, retry_s: float) -> None:
        """Ride out registry outages: retry every call for up to ``retry_s`` and say so."""
        registry.reach.retry_s = retry_s
        registry.reach.on_change = lambda why: self.registry_state(why, retry_s)

    def registry_state(self, why: str | None, retry_s: float) -> None:
        """The registry became unreachable (``why``) or reachable again (None)."""
        if why is not None:
            self._down_at = time.monotonic()
            text = f"registry unreachable ({why}), retrying for up to {retry_s:.0f} s; the cells keep running"
        else:
            gone = time.monotonic() - (self._down_at or time.monotonic())
            text = f"registry reachable again after {gone:.0f} s"
        self.line(text)
        if self._live is not None and self._shown is not None:
            notice = [Text("registry unreachable, retrying", style="bold red")] if why is not None else []
            self._live.update(Group(self._shown, *notice))

    def _step_line(self, label: str, run: Run, seen: _Seen) -> None:
        """One line per multiple of ``every`` reached since the last poll, with that step's values."""
        latest = self.registry.latest_metrics(run.id)
        step = max((s for s, _ in latest.values()), default=0)
        reached = range((seen.step // self.every + 1) * self.every, step + 1, self.every)
        if reached:
            values = [m for m in self.registry.metrics(run.id, keys=HEADLINE) if m.step in reached]
            total = (run.config.get("grpo") or {}).get("max_steps")
            for at in reached:
                headline = _headline({m.key: (m.step, m.value) for m in values if m.step == at})
                self.line(f"[{label}] step {at}{f'/{total}' if total else ''}{headline}")
        seen.step = max(seen.step, step)


def _headline(latest: dict[str, tuple[int, float]]) -> str:
    parts = [f"{k} {latest[k][1]:.3f}" for k in HEADLINE if k in latest]
    return f": {', '.join(parts)}" if parts else ""


def _event_text(event: Any) -> str | None:
    p = event.payload
    if event.kind == EventKind.PHASE_SWITCH:
        return f"step {event.step}: phase switch {p.get('from_phase')} -> {p.get('to_phase')} ({p.get('policy')})"
    if event.kind == EventKind.CHECKPOINT:
        return f"step {event.step}: checkpoint {Path(p.get('path', '')).name}"
    if event.kind == EventKind.EVAL_PROBLEMS and event.step == 0:  # the base model, before step 1
        problems = p.get("problems") or []
        value = sum(c / n for _, n, c in problems) / len(problems) if problems else float("nan")
        return f"base model: {p.get('prefix', 'eval/')}pass@1 {value:.3f} on {p.get('source')}"
    if event.kind == EventKind.RESUME:
        return f"resumed from the checkpoint of step {p.get('from_step')}"
    if event.kind == EventKind.PREEMPTION:
        return f"step {event.step}: stopping on signal {p.get('signal')} (checkpointed)"
    return None
