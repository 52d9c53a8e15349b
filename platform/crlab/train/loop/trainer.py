"""The Trainer: everything one run holds, and its step loop.

A step: draw the mix of RL and CRL prompts, sample ``group_size`` responses each, reward them (sandboxed
tests for code, the judgment for critiques), compute GRPO advantages with the phase's CRL scale, keep the
groups with reward spread (refilling from the next prompts, DAPO), then one optimizer update per
mini-batch. Metrics go to the registry and W&B; the phase schedule may switch phase; checkpoints are
written every ``checkpoint.every`` steps, at every evaluated step and when the run stops. With an ``eval``
section the policy is evaluated on held-out problems every ``eval.every`` steps and at the end, and the
best checkpoint is flagged in the registry (:mod:`crlab.train.loop.evaluation`). Each step logs its time split,
as verl's ``marked_timer`` does: ``time/generate_s``, ``time/reward_s``, ``time/logprob_s``,
``time/update_s``, ``time/eval_s`` (evaluated steps), ``time/checkpoint_s`` and their total ``time/step_s``
(``perf/tokens_per_s`` leaves the evaluation out).

A run's result depends only on its config and seed: a fresh run seeds python's, numpy's and torch's global
RNGs right before its first step, after everything that set-up may draw from them; a resumed run takes
them from its checkpoint at the same point.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import TYPE_CHECKING, Any

from crlab import faults
from crlab.registry import Registry
from crlab.registry.entities import EventKind, Run
from crlab.registry.writer import RunRecorder
from crlab.train.engine import dist
from crlab.train.engine.memory import measured_peak
from crlab.train.grpo.phases import SwitchRestart
from crlab.train.loop import restart, setup
from crlab.train.loop.collect import Sources, collect_groups
from crlab.train.loop.evaluation import PROBLEMS_EVENT, TrainingEval, base_key
from crlab.train.loop.step import (
    Packed,
    fill_logprobs,
    micro_weights,
    pack,
    pad_micro_weights,
    rollout_logprob_gap,
    score,
    split_mini_batches,
    update_loss,
)
from crlab.train.loop.timing import step_line, step_values, time_metrics, timed
from crlab.train.tiny.model import TINY_URI

if TYPE_CHECKING:
    from crlab.config import ExperimentConfig, SwitchConfig


class Trainer:
    def __init__(self, cfg: ExperimentConfig, registry: Registry, run: Run | None) -> None:
        self.cfg, self.registry = cfg, registry
        # the sandboxes' context: left by close(), or by a set-up that fails (no worker outlives it)
        self._resources = contextlib.ExitStack()
        try:
            self._set_up(cfg)
        except BaseException:
            self._resources.close()
            raise
        self.engine: Any = None  # these: made in _start, once the run is known
        self.rollout: Any = None
        self.tracker: Any = None
        self.ref_model: Any = None
        self.recorder: RunRecorder | None = None
        self.step = 0
        self.examples: list[list] = []  # a table of the step's sampled rollouts (collect.example_rows)

    def _set_up(self, cfg: ExperimentConfig) -> None:
        """What the run needs before it is registered; the sandbox is entered in ``self._resources``."""
        from crlab.config_checks import has_rl
        from crlab.train.grpo.phases import PhaseSchedule

        dist.import_deepspeed()  # first, so that its log lines go to stderr
        setup.check_world(cfg, setup.launched_world())
        setup.check_model_path(cfg.model.path)
        setup.check_rollout(cfg)
        problems, crl_problems = setup.load_sources(cfg)  # bad data fails before any model is loaded
        style = "tiny" if cfg.model.path == TINY_URI else "qwen3"
        self.evals = TrainingEval(cfg, style)  # so does a bad eval source
        self._resources.callback(self.evals.close)  # its LiveCodeBench sandbox, started when first used
        model_dir = setup.resolve_model(cfg)
        self.model, self.tokenizer = setup.load_policy(cfg, model_dir)
        setup.pin_intra_op_threads(self.model)
        self.model_dir = model_dir
        self.sandbox = self._resources.enter_context(setup.make_sandbox(cfg))
        self.scorer = functools.partial(score, sandbox=self.sandbox, reward_cfg=cfg.reward)
        rows = setup.make_rows(cfg, problems, crl_problems, self.sandbox, style)
        self.rl_rows, self.crl_rows = setup.filter_overlong(cfg, self.tokenizer, *rows)
        if setup.launched_rank() == 0:
            self.evals.label(self.sandbox)  # held-out critique rows from problems: labelled once, here
        self.sampler = setup.make_sampler(self.cfg, len(self.rl_rows), len(self.crl_rows))
        self.schedule = PhaseSchedule(cfg.phases, cfg.switch, has_rl=has_rl(cfg))
        self.phase_start: dict[str, int] | None = None  # switch.restart=fresh: where the phase's run began
        self.planned_steps = setup.planned_steps(cfg, len(self.rl_rows), len(self.crl_rows))
        self.total_steps = self.planned_steps

    # -- set-up that needs the run --------------------------------------------------------------
    def _start(self, run: Run, resume: bool) -> None:
        from crlab.train.engine.checkpoint import CheckpointManager, restore_rng_state
        from crlab.train.engine.deepspeed_engine import TrainEngine, init_distributed

        cfg = self.cfg
        init_distributed()
        if self.evals.enabled:
            dist.make_wait_group()
        self.engine = TrainEngine(
            self.model, lr=cfg.grpo.lr, warmup_steps=cfg.grpo.warmup_steps, total_steps=self.total_steps,
            weight_decay=cfg.grpo.weight_decay, max_grad_norm=cfg.grpo.max_grad_norm,
            zero_stage=cfg.deepspeed.zero_stage, precision=cfg.deepspeed.precision,
            offload_optimizer=cfg.deepspeed.offload_optimizer, offload_params=cfg.deepspeed.offload_params,
            ds_overrides=dict(cfg.deepspeed.overrides), warmup_unit=cfg.grpo.warmup_unit,
        )  # fmt: skip
        self.checkpoints = CheckpointManager(f"{run.run_dir}/checkpoints", keep=cfg.checkpoint.keep)
        self.run_dir = run.run_dir  # evaluations write their samples under it
        self.rollout = self._make_rollout()
        if cfg.grpo.kl_coef > 0:
            self.ref_model, _ = setup.load_policy(cfg, self.model_dir)
            self.ref_model.eval().requires_grad_(False)
        rng = self._restore(run) if resume else None
        if rng is not None:  # the engine was built from the base weights: it samples from the restored ones
            self.rollout.sync_weights(self.engine.module)
        self.checkpoints.pinned = {self.evals.best.step} if self.evals.best else set()
        # rank 0 reports for all
        self.tracker = setup.make_tracker(cfg, self.registry, run) if dist.is_main() else None
        if dist.is_main():  # rank 0 records for all: journal first, the registry in the background
            self.recorder = RunRecorder(self.registry.engine, run.id, run.run_dir or "", run.attempt)
        if rng is not None:
            self._record(
                run.id, EventKind.RESUME, {"from_step": self.step, "attempt": run.attempt}, self.step
            )  # counted when taken
        # The first step starts from RNG states that depend only on the config and seed (or on the
        # checkpoint): whatever set-up drew from the global RNGs (building or loading the model, the data,
        # the sandbox, DeepSpeed, W&B) is overridden here.
        if rng is None:
            setup.seed_everything(cfg.seed)
        else:
            restore_rng_state(rng)

    def _make_rollout(self) -> Any:
        return setup.make_rollout(self.cfg, self.model_dir, self.tokenizer, self.engine.module, self._zero3_ranks())

    def _zero3_ranks(self) -> bool:
        """ZeRO-3 on several ranks: every forward gathers parameters from all ranks, so every rank must run
        as many forwards (in generation, in the log-prob pass and in each update)."""
        return self.cfg.deepspeed.zero_stage == 3 and dist.world() > 1

    def _restore(self, run: Run) -> dict[str, Any] | None:
        """Load the newest complete checkpoint; returns its RNG states (None: there is none)."""
        from crlab.train.engine.checkpoint import capture_rng_state

        latest = self.checkpoints.latest_complete()
        if latest is None:
            return None  # stopped before its first checkpoint: start over, same run id
        state = self.checkpoints.load(self.engine, latest)  # sets the RNGs to the checkpoint's
        self.step = int(state["step"])
        self.sampler.load_state_dict(state["sampler"])
        self.schedule.load_state_dict(state["schedule"])
        self.evals.load_state_dict(state.get("eval"))
        if state.get("phase_start"):  # past a fresh restart: its warm-up, step budget and reference
            self.phase_start = dict(state["phase_start"])
            self.engine.set_origin(self.phase_start["optimizer_steps"], self.phase_start["step"])
            self.total_steps = self._phase_total()
            restart.load_reference(self.ref_model, run.run_dir or "", self.phase_start["step"])
        return capture_rng_state()

    def _client_state(self) -> dict[str, Any]:
        return {
            "step": self.step, "sampler": self.sampler.state_dict(), "schedule": self.schedule.state_dict(),
            "phase": self.schedule.current.name, "wandb_run_id": getattr(self.tracker, "run_id", None),
            "eval": self.evals.state_dict(), "phase_start": self.phase_start,
        }  # fmt: skip

    def _save(self, run: Run) -> None:
        best = self.evals.best
        self.checkpoints.pinned = {best.step} if best else set()  # keep-K never prunes the best
        path = self.checkpoints.save(self.engine, step=self.step, client_state=self._client_state())
        if self.recorder is None:
            return
        kept = [str(p) for p in self.checkpoints.complete()]  # the registry forgets the pruned ones
        is_best = best is not None and best.step == self.step
        self.recorder.checkpoint(self.step, str(path), kept, best=self.step if is_best else None)
        self._record(run.id, EventKind.CHECKPOINT, {"path": str(path)}, self.step)

    def _record(self, run_id: str, kind: str, payload: dict[str, Any], step: int | None) -> None:
        if self.recorder is None:
            return
        self.recorder.event(kind, payload, step)
        if self.tracker is not None:
            self.tracker.event(kind, payload, step)

    # -- the loop -------------------------------------------------------------------------------
    def train(self, run: Run, resume: bool, stop: Any) -> str:
        self._start(run, resume)
        self._evaluate_base(run)
        self._evaluate_pending(run)
        every = self.cfg.checkpoint.every
        while self.step < self.total_steps:
            if setup.budget_spent(self.cfg, self.sampler, self.planned_steps):
                break  # resumed after the step that ended the data pass
            faults.at_step(self.step + 1)
            timings: dict[str, float] = {}
            with timed("step", timings):
                metrics = self._one_step(timings)
                self.step += 1
                switch = self.schedule.observe(self.step, metrics)  # its metric is the same on every rank
                if switch is None and self.cfg.switch.restart == SwitchRestart.FRESH and self._pass_over():
                    switch = self.schedule.end_of_pass(self.step, self.sampler.steps)  # a phase: a pass
                if switch is not None:
                    self._switch_phase(run, switch)
                self._end_pass_early(run)
                stopping = dist.all_reduce(float(stop.signum is not None), "max") > 0  # any rank: all stop
                evaluating = self.evals.due(self.step, self.total_steps)
                if evaluating and not stopping:
                    metrics.update(self._evaluate(timings))
                # a stop skips a due evaluation (it may outlast the grace period): the resumed run does it
                self.evals.pending = self.step if evaluating and stopping else None
                if stopping or evaluating or self.step % every == 0 or self.step == self.total_steps:
                    with timed("checkpoint", timings):
                        self._save(run)
            self._log_metrics(run, metrics, timings)
            self._log_examples()
            if stopping:
                self._record(run.id, EventKind.PREEMPTION, {"signal": stop.signum}, self.step)
                return "preempted"
        return "completed"

    def _switch_phase(self, run: Run, switch: SwitchConfig) -> None:
        """Record a phase switch. ``switch.restart=fresh``: the new phase goes on as a new run from these
        weights would (the authors' 32k run): a fresh optimizer and warm-up, the data from its start, a pass
        of steps more (``grpo.max_steps`` still bounds the whole run) and, with KL, these weights as the
        reference."""
        payload = {**switch.to_payload(), "restart": self.cfg.switch.restart}
        if self.cfg.switch.restart == SwitchRestart.FRESH:
            self.engine.restart(self.step)
            self.phase_start = {"step": self.step, "optimizer_steps": self.engine.origin[0]}
            self.sampler = setup.make_sampler(self.cfg, len(self.rl_rows), len(self.crl_rows))
            self.total_steps = self._phase_total()
            restart.reference_from_policy(self.ref_model, self.engine, run.run_dir or "", self.step)
            payload["total_steps"] = self.total_steps
        self._record(run.id, EventKind.PHASE_SWITCH, payload, self.step)

    def _pass_over(self) -> bool:
        return restart.pass_over(self.cfg, self.step, self.phase_start, self.sampler, self.planned_steps)

    def _phase_total(self) -> int:
        """The run's steps after a fresh restart: ``grpo.max_steps``, or the phase's start plus a pass."""
        start = self.phase_start["step"] if self.phase_start else 0
        return int(self.cfg.grpo.max_steps or start + self.planned_steps)

    def _end_pass_early(self, run: Run) -> None:
        """The data pass is over before the planned steps (DAPO refills drew from it): this step is the last
        (it is evaluated and checkpointed as the last step is)."""
        if setup.budget_spent(self.cfg, self.sampler, self.planned_steps) and self.step < self.total_steps:
            self.total_steps = self.step
            self._record(run.id, "data_pass_complete", {"batches": self.sampler.steps}, self.step)

    def _evaluate(self, timings: dict[str, float], base: bool = False) -> dict[str, float]:
        """Evaluate the policy as it is now (rank 0; the others wait for its metrics); track the best, or
        (``base``, before step 1) name the metrics ``base/...``, a reference and never a candidate."""
        with timed("eval", timings):
            found = None
            if dist.is_main():
                length = self.schedule.current.max_response_length
                found = self.evals.run(self.rollout, self.sandbox, length, self.step, self.run_dir)
            found = dist.from_main(found)
        if self.recorder is not None:  # per-problem verdicts: the ablation's intervals and tests read them
            for payload in found.problems:
                self.recorder.event(PROBLEMS_EVENT, payload, self.step)
        if base:
            return {base_key(k): v for k, v in found.metrics.items()}
        if self.evals.observe(self.step, found.metrics) and self.tracker is not None:
            self.tracker.best(self.step, found.metrics)
        return found.metrics

    def _evaluate_base(self, run: Run) -> None:
        """``eval.at_start``: the base model's evaluation, logged at step 0."""
        if self.evals.base_due(self.step):
            timings: dict[str, float] = {}
            values = self._evaluate(timings, base=True)
            self._write_metrics(run, {**values, "time/eval_s": timings["eval"]})
            if self.recorder is not None:
                print(f"base model (step 0): {step_values(values)} ({timings['eval']:.1f} s)", flush=True)

    def _evaluate_pending(self, run: Run) -> None:
        """A resumed run whose checkpoint's step skipped its evaluation (a stop signal) does it first."""
        if self.evals.pending != self.step:
            return
        timings: dict[str, float] = {}
        values = self._evaluate(timings)
        self.evals.pending = None
        best = self.evals.best
        if self.recorder is not None and best is not None and best.step == self.step:
            self.recorder.best(self.step)
            self.checkpoints.pinned = {self.step}
        self._write_metrics(run, {**values, "time/eval_s": timings["eval"]})

    def _one_step(self, timings: dict[str, float]) -> dict[str, float]:
        """Generate and reward (collect), then the log-prob pass and the updates, timed in ``timings``."""
        phase = self.schedule.current
        src = Sources(self.sampler, self.rl_rows, self.crl_rows, self.rollout, self.scorer)
        found = collect_groups(src, phase, self.cfg.grpo, self.cfg.tracking.rollout_table_rows)
        samples, kept, stats, self.examples = found  # time/generate_s, time/reward_s: over all ranks
        metrics = {**stats, **self._update(samples, kept, timings)}
        metrics.update({
            "phase/index": float(self.schedule.index), "phase/max_response_length": float(phase.max_response_length),
            "phase/crl_reward_scale": float(phase.crl_reward_scale), **measured_peak(),
        })  # fmt: skip
        return metrics

    def _log_metrics(self, run: Run, metrics: dict[str, float], timings: dict[str, float]) -> None:
        metrics = {**time_metrics(timings), **metrics}  # time/generate_s, time/reward_s: from collect
        train_s = metrics["time/step_s"] - metrics.get("time/eval_s", 0.0)
        metrics["perf/tokens_per_s"] = metrics.pop("_tokens", 0.0) / max(train_s, 1e-9)
        self._write_metrics(run, metrics)
        if self.recorder is not None:  # rank 0: one plain line a step (a sweep cell's train.log has them)
            phase = self.schedule.phases[int(metrics.get("phase/index", self.schedule.index))].name  # it ran in
            print(step_line(self.step, self.total_steps, phase, metrics), flush=True)

    def _log_examples(self) -> None:
        """Every ``tracking.rollout_table_every`` steps, a W&B table of this step's sampled rollouts (rank 0's)."""
        every = self.cfg.tracking.rollout_table_every
        if dist.is_main() and every and self.step % every == 0 and self.examples:
            from crlab.train.loop.collect import TABLE_COLUMNS

            self.tracker.table("rollouts/samples", TABLE_COLUMNS, self.examples, self.step)

    def _write_metrics(self, run: Run, metrics: dict[str, float]) -> None:
        """The one write path of a step's metrics: rank 0, to the registry (through the run's journal) and
        W&B, finite values only."""
        if self.recorder is not None:
            finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
            self.recorder.metrics(self.step, finite)
            self.tracker.log(finite, self.step)

    def _update(self, samples: Any, kept: list[int], timings: dict[str, float]) -> dict[str, float]:
        cfg, g = self.cfg, self.cfg.grpo
        n_groups, world = len(kept) // g.group_size, dist.world()
        self.engine.begin_training_step(self.step)  # this step's index: its LR under grpo.warmup_unit
        # as many updates as every rank can make (DeepSpeed's step is collective)
        n_updates = int(dist.all_reduce(min(g.prompts_per_step // g.mini_batch_size, n_groups), "min"))
        if n_updates == 0:
            return {}
        rollouts, advantages = samples
        self.rollout.sleep()  # vLLM (where it can) frees its memory for the update; woken by the push
        bounds = [round(i * n_groups / n_updates) * g.group_size for i in range(n_updates + 1)]
        with timed("logprob", timings):
            packed: Packed = pack(rollouts, kept, advantages, self.tokenizer.pad_token_id, g.train_eos)
            minis = split_mini_batches(packed.lengths(), bounds, g)  # one list of micro-batches per update
            chunks = [rows for mini in minis for rows in mini]
            forwards = int(dist.all_reduce(len(chunks), "max")) if self._zero3_ranks() else 0
            fill_logprobs(
                self.engine.module, packed, cfg.rollout.temperature, chunks, self.ref_model, forwards,
                # one update, sampled from these very weights (HF; vLLM's copy may differ, and its gap is
                # measured): the same on every rank (n_updates is their minimum)
                on_policy=n_updates == 1 and getattr(self.rollout, "samples_from_trainer", False),
            )
        totals: dict[str, list[float]] = {}
        # ZeRO-2/3 reduce gradients in every backward: as many micro-batches on every rank (zero-weight padding)
        pad = self.engine.zero_stage >= 2 and world > 1
        counts = dist.all_gather([len(mini) for mini in minis]) if pad else [[len(m) for m in minis]]
        with timed("update", timings):
            for i, mini in enumerate(minis):
                parts = micro_weights(packed, mini, g.loss_agg, g.micro_weight)
                out = self.engine.update(
                    pad_micro_weights(parts, max(c[i] for c in counts), packed, mini),
                    lambda model, item: update_loss(model, item, g, cfg.rollout.temperature),
                )
                for key, value in out.items():
                    totals.setdefault(key, []).append(float(value))
            self.rollout.sync_weights(self.engine.module)
        ranks = dist.all_gather({k: sum(v) / len(v) for k, v in totals.items()})
        out = {f"actor/{k}": sum(r[k] for r in ranks) / world for k in ranks[0]}
        if packed.old_logp is not None:  # no separate pass (on-policy, HF): nothing to compare with
            gap = dist.all_gather(rollout_logprob_gap(rollouts, kept, packed))  # [(sum, count)] per rank
            out["rollout/logprob_diff"] = sum(s for s, _ in gap) / max(sum(c for _, c in gap), 1)
        return out

    def finish(self, status: str, error: str | None) -> bool:
        """Record how the attempt ended (rank 0); False when the trainer has no journal yet (it failed in
        set-up): the caller then tells the registry itself."""
        if self.recorder is None:
            return False
        self.recorder.status(status, error)
        return True

    def close(self, exit_code: int = 0) -> None:
        if self.recorder is not None:
            self.recorder.close()  # sends the backlog, or leaves it in the journal (said)
            self.recorder = None
        if self.tracker is not None:
            self.tracker.finish(exit_code)
            self.tracker = None
        self._resources.close()  # the sandboxes (training's, then evaluation's)
        self.sandbox = None
        if self.rollout is not None:  # last: vLLM's shutdown also ends the process group it joined
            self.rollout.close()
            self.rollout = None

