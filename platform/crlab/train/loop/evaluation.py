"""Evaluation during training, and the run's best checkpoint.

With ``eval.source`` set (and/or ``eval.crl_source``), every ``eval.every`` steps and after the last step the
trainer evaluates its current policy on held-out problems with its own rollout engine and sandbox
(:func:`crlab.eval.runner.evaluate`: ``eval.n`` samples per problem, scored on all of each problem's tests;
critique accuracy on held-out critique rows). The metrics (``eval/pass@1``, ...) are logged at that step
with the step's other metrics, plus ``time/eval_s``.

- **The set.** Loaded and checked before any model is loaded (a bad source is one line naming
  ``eval.source``). ``eval.max_problems`` keeps a fixed subset, drawn with seed 0 and not the run's seed,
  so every seed of a config is judged on the same problems (the tiny task's held-out split is also made
  with seed 0). A ``crl:`` set of problems is labelled once, at set-up, by running its candidates on all
  their tests.
- **Determinism.** The RNG states (python, numpy, torch) are saved before an evaluation and put back after
  it, so an evaluation, greedy or sampled, leaves the training stream exactly as it was: a run with
  evaluations trains exactly as one without (on the HF engine; vLLM draws from its own generator, which a
  greedy evaluation does not touch). The weights and the RNG states of a step are in its checkpoint, so a
  resumed run logs the same evaluation numbers as an uninterrupted one.
- **Ranks.** With several data-parallel ranks, rank 0 evaluates alone and the others wait for its metrics
  (:func:`crlab.train.engine.dist.from_main`).
- **The base model.** With ``eval.at_start`` (the default) the policy is evaluated before step 1, as the
  reference: logged at step 0 as ``base/pass@k`` (``base/val_pass@k``, ``base/critique_acc``), never a
  candidate for the best checkpoint. A resumed run past step 0 does not evaluate it again.
- **Per-problem records.** Every evaluation of a problem set writes one registry event ``eval_problems`` at
  its step (the run's journal, then the registry's ``events`` table), payload ``{"source", "prefix"
  ("eval/" for ``eval.source``, "val/" for ``eval.select_source``), "n", "problems": [[id, n, c], ...]}``,
  c being how many of the n samples passed every test; every pass@k the run logs is a function of them, and
  ``platform ablation`` computes its intervals and tests from them. The samples themselves (responses,
  per-test verdicts) go to ``<run dir>/eval/step-NNNNNN-<eval|val>.jsonl``.
- **Selection apart from the report.** ``eval.select_source`` is a second set, disjoint from
  ``eval.source``, evaluated at the same steps and logged as ``val/pass@k``; the best checkpoint is picked
  on it (``eval.select`` defaults to ``val/pass@1`` then) and reported on ``eval.source``, so the reported
  number is not the maximum of noisy evaluations of itself. Without it, selection and report use the same
  set, as the paper did on LiveCodeBench, and ``platform runs show`` and the ablation say so.
- **The best checkpoint.** A step that is evaluated gets a checkpoint. The checkpoint whose ``eval.select``
  value is best (higher is better, lower for a loss: :func:`crlab.registry.entities.improves`; on a tie the
  earlier) is flagged best in the registry and pinned: keep-K pruning never deletes it. The best so far
  travels in each checkpoint's client state, so a resumed run knows it.
- **Preemption.** An evaluation due at the step a stop signal ends is skipped (it may take longer than the
  grace period); the checkpoint records it as pending, and the resumed run evaluates that step first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crlab.config_checks import selection_metric
from crlab.errors import ConfigError, CrlabError
from crlab.eval.sources import SetKind
from crlab.registry.entities import EventKind, improves

if TYPE_CHECKING:
    from crlab.config import EvalConfig, ExperimentConfig

EVAL_SEED = 0  # the eval set (its subset, the tiny task's split) does not depend on the run's seed
REPORT, SELECT = "eval/", "val/"  # metric prefixes: the reported set, the selection set
PROBLEMS_EVENT = EventKind.EVAL_PROBLEMS


@dataclass
class EvalOutcome:
    """What one evaluation found: its metrics and, per problem set, the ``eval_problems`` payload."""

    metrics: dict[str, float]
    problems: list[dict[str, Any]] = field(default_factory=list)


def base_key(key: str) -> str:
    """The base model's name for an evaluation metric: ``eval/pass@1`` -> ``base/pass@1``,
    ``val/pass@1`` -> ``base/val_pass@1``."""
    prefix, _, name = key.partition("/")
    return f"base/{name}" if prefix + "/" == REPORT else f"base/{prefix}_{name}"


@dataclass(frozen=True)
class Best:
    step: int
    value: float

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "value": self.value}


def _clean(message: str, source: str) -> str:
    """The eval loaders speak to the ``platform eval`` command line; here the keys are config keys."""
    message = message.removeprefix(f"--on {source!r}: ")
    return message.replace("--since", "eval.since").replace("--until", "eval.until")


def load_set(source: str, key: str, ev: EvalConfig, style: str) -> Any:
    """One evaluation set, checked (errors name ``key``) and cut to ``eval.max_problems``."""
    from crlab.eval.sources import load_eval_set, subset

    dated = key == "eval.source"
    try:
        found = load_eval_set(
            source, since=ev.since if dated else None, until=ev.until if dated else None, seed=EVAL_SEED,
            style=style,
        )  # fmt: skip
    except (CrlabError, ValueError, OSError) as exc:
        raise ConfigError(f"{key}: {_clean(str(exc), source)}") from None
    if found.crl_rows is not None:
        found.crl_rows = subset(found.crl_rows, ev.max_problems, EVAL_SEED)
    else:
        found.problems = subset(found.problems, ev.max_problems, EVAL_SEED)
    return found


def load_sets(cfg: ExperimentConfig, style: str) -> list[tuple[str, Any]]:
    """The run's evaluation sets with their metric prefix: ``eval.source``, ``eval.select_source`` and
    ``eval.crl_source`` (as ``crl:...``); none when off."""
    ev = cfg.eval
    sets = []
    if ev.source:
        sets.append((REPORT, load_set(ev.source, "eval.source", ev, style)))
    if ev.source and ev.select_source:  # with no eval.source nothing is evaluated (a config warning says so)
        chosen = load_set(ev.select_source, "eval.select_source", ev, style)
        reported = {p.question for p in sets[0][1].problems} if sets else set()
        shared = [p.id for p in chosen.problems if p.question in reported]
        if shared:
            raise ConfigError(
                f"eval.select_source: {len(shared)} of its problems are also in eval.source ({shared[0]!r}, "
                "...); selection and report need disjoint sets (e.g. tiny-val and tiny-test)"
            )
        sets.append((SELECT, chosen))
    if ev.crl_source:
        from crlab.data.sources import as_critique

        sets.append((REPORT, load_set(as_critique(ev.crl_source), "eval.crl_source", ev, style)))
    return sets


def _records_file(out_dir: str | None, step: int, prefix: str, kind: str) -> Path | None:
    if not out_dir or kind != SetKind.CODE:
        return None
    path = Path(out_dir) / "eval" / f"step-{step:06d}-{prefix.rstrip('/')}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class TrainingEval:
    """When to evaluate, how, and the best checkpoint so far; its state travels in the checkpoints."""

    def __init__(self, cfg: ExperimentConfig, style: str) -> None:
        from crlab.eval.scoring import resolve_scoring

        self.cfg, self.ev, self.style = cfg, cfg.eval, style
        self.crl_threshold = cfg.reward.crl_label_threshold
        self.select = selection_metric(cfg.eval)
        self.sets = load_sets(cfg, style)
        try:  # eval.scoring, per code set: livecodebench (LiveCodeBench's verdicts) or strict (the reward's)
            self.scoring = {
                found.source: resolve_scoring(self.ev.scoring, found.problems, "eval.scoring")
                for _, found in self.sets
                if found.kind == SetKind.CODE
            }
        except CrlabError as exc:
            raise ConfigError(str(exc)) from None
        self._lcb: Any = None  # the sandbox of livecodebench scoring, started when first needed
        self.best: Best | None = None
        self.pending: int | None = None  # a step whose evaluation a preemption skipped

    @property
    def enabled(self) -> bool:
        return bool(self.sets)

    def due(self, step: int, total_steps: int) -> bool:
        return self.enabled and (step % self.ev.every == 0 or step == total_steps)

    def settings(self, max_response_length: int) -> Any:
        from crlab.eval.runner import EvalSettings

        ev = self.ev
        return EvalSettings(
            n=ev.n, ks=tuple(ev.k), temperature=ev.temperature, top_p=ev.top_p, top_k=ev.top_k,
            max_new_tokens=ev.max_new_tokens or max_response_length, style=self.style, max_tests=None,
            crl_threshold=self.crl_threshold,
        )  # fmt: skip

    def label(self, sandbox: Any) -> None:
        """Label the ``crl:`` sets given as problems, once (running their candidates on all tests)."""
        from crlab.eval.runner import critique_rows

        for _, found in self.sets:
            if found.kind == SetKind.CRL and found.crl_rows is None:
                found.crl_rows = critique_rows(found, sandbox, self.settings(1))
                if not found.crl_rows:
                    raise ConfigError(f"eval.crl_source: {found.source!r} gave no (problem, candidate) pairs")

    def base_due(self, step: int) -> bool:
        """Whether the base model is evaluated now: before step 1, with ``eval.at_start``."""
        return self.enabled and bool(self.ev.at_start) and step == 0

    def run(
        self, policy: Any, sandbox: Any, max_response_length: int, step: int = 0, out_dir: str | None = None
    ) -> EvalOutcome:
        """Evaluate ``policy`` on every set (the samples to ``out_dir``/eval/ when given); the global RNG
        states are as they were afterwards."""
        from crlab.eval.runner import evaluate
        from crlab.train.engine.checkpoint import capture_rng_state, restore_rng_state

        self.label(sandbox)
        settings = self.settings(max_response_length)
        state = capture_rng_state()
        try:
            outcome = EvalOutcome({})
            for prefix, found in self.sets:
                path = _records_file(out_dir, step, prefix, found.kind)
                with _Samples(path) as sink:
                    report = evaluate(
                        policy, found, self.sandbox_for(found, sandbox), settings, on_record=sink.write_record
                    )
                outcome.metrics.update(report.metrics(prefix))
                if found.kind == SetKind.CODE:
                    outcome.problems.append({
                        "source": found.source, "prefix": prefix, "n": settings.n,
                        "problems": [[p.id, p.n, p.c] for p in report.problems],
                    })  # fmt: skip
            return outcome
        finally:
            restore_rng_state(state)

    def sandbox_for(self, found: Any, sandbox: Any) -> Any:
        """The run's sandbox, or for a set scored as LiveCodeBench scores it, a sandbox with its harness
        (its 6 s per test; the run's workers and isolation), started once and kept until :meth:`close`."""
        if self.scoring.get(found.source) != "livecodebench":
            return sandbox
        if self._lcb is None:
            from crlab.eval.scoring import LCB_TIME_LIMIT_S
            from crlab.rewards.sandbox import Sandbox
            from crlab.train.loop.setup import sandbox_workers

            self._lcb = Sandbox(
                sandbox_workers(self.cfg),
                LCB_TIME_LIMIT_S,
                isolation=self.cfg.reward.isolation,
                harness="lcb",
            ).__enter__()
        return self._lcb

    def close(self) -> None:
        if self._lcb is not None:
            self._lcb.__exit__(None, None, None)
            self._lcb = None

    def observe(self, step: int, metrics: dict[str, float]) -> bool:
        """Take this step's metrics; True when its checkpoint is the new best."""
        value = metrics.get(self.select)
        if value is None or not improves(self.select, value, self.best.value if self.best else None):
            return False
        self.best = Best(step, float(value))
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best.to_json() if self.best else None, "pending": self.pending}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        best = state.get("best")
        self.best = Best(int(best["step"]), float(best["value"])) if best else None
        self.pending = state.get("pending")


class _Samples:
    """An evaluation's samples file (one JSON line per problem), or nowhere when ``path`` is None."""

    def __init__(self, path: Path | None) -> None:
        self.file = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> _Samples:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()

    def write_record(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
