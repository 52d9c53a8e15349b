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
  (:func:`crlab.train.dist.from_main`).
- **The best checkpoint.** A step that is evaluated gets a checkpoint. The checkpoint whose ``eval.select``
  value is best (higher is better, lower for a loss: :func:`crlab.registry.entities.improves`; on a tie the
  earlier) is flagged best in the registry and pinned: keep-K pruning never deletes it. The best so far
  travels in each checkpoint's client state, so a resumed run knows it.
- **Preemption.** An evaluation due at the step a stop signal ends is skipped (it may take longer than the
  grace period); the checkpoint records it as pending, and the resumed run evaluates that step first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crlab.errors import ConfigError, CrlabError
from crlab.registry.entities import improves

EVAL_SEED = 0  # the eval set (its subset, the tiny task's split) does not depend on the run's seed


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


def load_set(source: str, key: str, ev: Any, style: str) -> Any:
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


def load_sets(cfg: Any, style: str) -> list[Any]:
    """The run's evaluation sets: ``eval.source``, then ``eval.crl_source`` (as ``crl:...``); none when off."""
    ev = cfg.eval
    sets = []
    if ev.source:
        sets.append(load_set(ev.source, "eval.source", ev, style))
    if ev.crl_source:
        source = ev.crl_source if ev.crl_source.startswith("crl:") else f"crl:{ev.crl_source}"
        sets.append(load_set(source, "eval.crl_source", ev, style))
    return sets


class TrainingEval:
    """When to evaluate, how, and the best checkpoint so far; its state travels in the checkpoints."""

    def __init__(self, cfg: Any, style: str) -> None:
        from crlab.eval.scoring import resolve_scoring

        self.cfg, self.ev, self.style = cfg, cfg.eval, style
        self.crl_threshold = cfg.reward.crl_label_threshold
        self.select = cfg.eval.select
        self.sets = load_sets(cfg, style)
        try:  # eval.scoring, per code set: livecodebench (LiveCodeBench's verdicts) or strict (the reward's)
            self.scoring = {
                found.source: resolve_scoring(self.ev.scoring, found.problems, "eval.scoring")
                for found in self.sets
                if found.kind == "code"
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

        for found in self.sets:
            if found.kind == "crl" and found.crl_rows is None:
                found.crl_rows = critique_rows(found, sandbox, self.settings(1))
                if not found.crl_rows:
                    raise ConfigError(f"eval.crl_source: {found.source!r} gave no (problem, candidate) pairs")

    def run(self, policy: Any, sandbox: Any, max_response_length: int) -> dict[str, float]:
        """Evaluate ``policy`` on every set; the global RNG states are as they were afterwards."""
        from crlab.eval.runner import evaluate
        from crlab.train.checkpoint import capture_rng_state, restore_rng_state

        self.label(sandbox)
        settings = self.settings(max_response_length)
        state = capture_rng_state()
        try:
            metrics: dict[str, float] = {}
            for found in self.sets:
                metrics.update(evaluate(policy, found, self.sandbox_for(found, sandbox), settings).metrics())
            return metrics
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
            from crlab.train.setup import sandbox_workers

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
