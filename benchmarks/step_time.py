"""Where a tiny-coder training step spends its time, per phase, for a few ways of running it.

Every arm runs the same steps of ``experiments/tiny_coder.yaml`` (10 prompts x 4 samples, DAPO refill,
two updates): before each arm the model, optimizer, sampler and RNG are restored from one checkpoint. The
arms differ in how they sample and in torch's intra-op threads:

- ``baseline: generate``: transformers' ``model.generate`` (what the rollout used before its own
  sampler), torch's default thread count (one per core), and one micro-batch per ``micro_batch_size``
  rows, each padded to the longest row of the whole step (what the update did before it grouped rows of
  similar length) -- the step as it was;
- ``generate, 1 thread``: the same with ``torch.set_num_threads(1)``;
- ``sampler``: the rollout's sampler (:mod:`crlab.train.rollouts.sampling`) and micro-batches of rows of similar
  length (:func:`crlab.train.loop.step.micro_batches`), with the default thread count and with one thread
  (what the trainer sets for a small model on CPU: the step as it is).

The generate arms draw other random numbers than the sampler arms, so their trajectories differ (alike in
distribution); arms of the same sampler run the same trajectory.

    python benchmarks/step_time.py [--steps 4] [--rounds 3] [--set phases.0.max_response_length=160]

Rounds rotate the order of the arms. Prints seconds per step by phase, from each arm's fastest round (the
least disturbed by other work on the machine), and each arm's step time against the baseline's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PHASES = ("generate", "reward", "logprob", "update", "step")


class GenerateRollout:
    """The rollout as it was: ``model.generate`` with ``num_return_sequences``, scores for the log-probs."""

    def __init__(self, rollout) -> None:  # noqa: ANN001
        self.inner = rollout

    def generate(self, prompts: list[str], n: int, max_new_tokens: int):  # noqa: ANN201
        from crlab.train.rollouts.rollout import Rollouts, append_samples, render_prompt

        r, tok, out = self.inner, self.inner.tokenizer, Rollouts([], [], [], [], [])
        r.model.eval()
        encoded = [tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"] for p in prompts]
        width = max(len(ids) for ids in encoded)
        ids = torch.tensor([[r.pad_id] * (width - len(e)) + e for e in encoded])
        attention = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        with torch.no_grad():
            gen = r.model.generate(
                input_ids=ids, attention_mask=attention, do_sample=True, temperature=r.temperature,
                top_p=r.top_p, top_k=r.top_k, num_return_sequences=n, max_new_tokens=max_new_tokens,
                pad_token_id=r.pad_id, eos_token_id=list(r.eos_ids), output_scores=True,
                return_dict_in_generate=True,
            )  # fmt: skip
        sequences = gen.sequences[:, width:]
        chosen = torch.stack(gen.scores, 1).log_softmax(-1).gather(-1, sequences[..., None])[..., 0]
        append_samples(out, encoded, sequences, chosen, n, r.eos_ids, tok)
        r.model.train()
        return out


def _setup(tmp: Path, overrides: list[str]):  # noqa: ANN202
    from crlab.config import load_config
    from crlab.registry import Registry
    from crlab.train.loop.run import register_run
    from crlab.train.loop.trainer import Trainer

    cfg = load_config(
        REPO / "experiments/tiny_coder.yaml",
        ["grpo.max_steps=1000", "tracking.enabled=false", f"paths.runs_dir={tmp / 'runs'}", *overrides],
    )
    registry = Registry(f"sqlite:///{tmp / 'bench.db'}")
    trainer = Trainer(cfg, registry, run=None)
    run = register_run(registry, cfg)
    trainer._start(run, resume=False)
    start = trainer.checkpoints.save(trainer.engine, step=0, client_state=trainer._client_state())
    return trainer, start


@contextlib.contextmanager
def _padded_to_the_step(on: bool) -> Iterator[None]:
    """The update's micro-batches as they were: ``micro_batch_size`` rows in order, all padded alike."""
    from crlab.train.loop import step, trainer

    if not on:
        yield
        return
    grouped, trimmed = trainer.micro_batches, step.Packed.trimmed
    trainer.micro_batches = lambda _lengths, rows, size: [
        list(rows[i : i + size]) for i in range(0, len(rows), size)
    ]
    step.Packed.trimmed = lambda self: self
    try:
        yield
    finally:
        trainer.micro_batches, step.Packed.trimmed = grouped, trimmed


def _arm(trainer, start, steps: int, rollout, threads: int, padded: bool) -> dict[str, float]:  # noqa: ANN001
    """Seconds per step by phase, from the starting checkpoint."""
    from crlab.train.loop.timing import timed

    state = trainer.checkpoints.load(trainer.engine, start)
    trainer.sampler.load_state_dict(state["sampler"])
    trainer.schedule.load_state_dict(state["schedule"])
    trainer.rollout, before = rollout, torch.get_num_threads()
    torch.set_num_threads(threads)
    sums = dict.fromkeys(PHASES, 0.0)
    try:
        with _padded_to_the_step(padded):
            for _ in range(steps):
                timings: dict[str, float] = {}
                with timed("step", timings):
                    metrics = trainer._one_step(timings)
                timings.update(generate=metrics["time/generate_s"], reward=metrics["time/reward_s"])
                for name in PHASES:
                    sums[name] += timings.get(name, 0.0)
    finally:
        torch.set_num_threads(before)
    return {name: value / steps for name, value in sums.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps per arm and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every arm, rotating the order")
    parser.add_argument("--set", action="append", default=[], help="a config override, key=value")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    cores = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        trainer, start = _setup(Path(tmp), args.set)
        sampler = trainer.rollout
        arms = {
            f"baseline: generate, {cores} threads": (GenerateRollout(sampler), cores, True),
            "generate, 1 thread": (GenerateRollout(sampler), 1, True),
            f"sampler, {cores} threads": (sampler, cores, False),
            "sampler, 1 thread": (sampler, 1, False),
        }
        _arm(trainer, start, 1, sampler, 1, False)  # warm-up: first-call costs out of the way
        results: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
        names = list(arms)
        t0 = time.perf_counter()
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                results[name].append(_arm(trainer, start, args.steps, *arms[name]))
        trainer.close()
    print(f"{args.rounds} rounds x {args.steps} steps per arm in {time.perf_counter() - t0:.0f} s")
    print(f"{'s/step (fastest round)':<34}" + "".join(f"{p:>10}" for p in PHASES) + f"{'vs base':>10}")
    fastest = {name: min(results[name], key=lambda r: r["step"]) for name in names}
    base = fastest[names[0]]["step"]
    for name in names:
        row = fastest[name]
        print(f"{name:<34}" + "".join(f"{row[p]:>10.3f}" for p in PHASES) + f"{base / row['step']:>9.2f}x")
    medians = ", ".join(f"{statistics.median(r['step'] for r in results[n]):.2f}" for n in names)
    print(f"median s/step over the rounds, same order: {medians}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
