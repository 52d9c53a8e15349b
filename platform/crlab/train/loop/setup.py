"""What a run needs before its first step, each checked before any compute starts.

Model path, data sources and the CRL rows are resolved here; a bad one raises a CrlabError naming it.
"""

from __future__ import annotations

import logging
import math
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from crlab import models
from crlab.data.pool import Budget
from crlab.data.prompts import OverlongPrompts
from crlab.errors import ConfigError
from crlab.rewards._harness import Harness
from crlab.train.grpo.phases import SwitchPolicy, SwitchRestart, transition_steps
from crlab.train.loop.step import PromptRow, RowKind
from crlab.train.rollouts import RolloutEngine, resolve_engine
from crlab.train.tiny.model import TINY_URI, resolve_model_path

if TYPE_CHECKING:
    from crlab.config import ExperimentConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_model_path(path: str) -> None:
    """A local-looking path must exist; a hub id (org/name) must be in the local cache when offline;
    ``smollm2://NAME`` must name a known model (whether it can be converted here is preflight's check)."""
    if path == TINY_URI:
        return
    if models.is_smollm2(path):
        models.smollm2_model(path)
        return
    local = path.startswith(("/", ".", "~")) or Path(path).expanduser().exists()
    if local and not Path(path).expanduser().is_dir():
        raise ConfigError(
            f"model.path: {path!r} does not exist (give a model folder, a hub id, or {TINY_URI})"
        )


def resolve_model(cfg: ExperimentConfig) -> str:
    """The model folder for ``model.path`` (building the tiny coder, or converting a ``smollm2://`` model,
    if needed); call check_model_path first."""
    if models.is_smollm2(cfg.model.path):
        if cfg.model.gguf_file:
            raise ConfigError(
                f"model.gguf_file: not used with {cfg.model.path} (it is converted); leave it unset"
            )
        return models.resolve_smollm2(cfg.model.path, cfg.paths.cache_dir)
    return resolve_model_path(cfg.model.path, cfg.paths.cache_dir, seed=0)


def load_policy(cfg: ExperimentConfig, model_dir: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": cfg.model.trust_remote_code}
    if cfg.model.gguf_file:
        kwargs["gguf_file"] = cfg.model.gguf_file
    try:
        tok = AutoTokenizer.from_pretrained(cfg.model.tokenizer or model_dir, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[cfg.model.dtype], **kwargs)
    except OSError as exc:
        raise ConfigError(f"model.path: cannot load {model_dir!r}: {str(exc).splitlines()[0]}") from None
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def load_sources(cfg: ExperimentConfig) -> tuple[list[Any], list[Any]]:
    """(RL problems, CRL problems), read and checked; cheap, so it runs before any model is loaded."""
    problems = _load(cfg.data.rl_source, "data.rl_source", cfg.seed)
    if cfg.data.max_problems:
        problems = problems[: cfg.data.max_problems]
    if not problems and cfg.data.crl_ratio < 1:
        raise ConfigError(f"data.rl_source {cfg.data.rl_source!r} has no problems")
    crl_problems: list[Any] = []
    if cfg.data.crl_ratio > 0 and not cfg.data.crl_rows:
        crl_problems = (
            _load(cfg.data.crl_source, "data.crl_source", cfg.seed) if cfg.data.crl_source else problems
        )
    return problems, crl_problems


def make_rows(
    cfg: ExperimentConfig, problems: list[Any], crl_problems: list[Any], sandbox: Any, style: str
) -> tuple[list[PromptRow], list[PromptRow]]:
    """The RL prompt rows and the CRL prompt rows (CRL labels come from running the candidates)."""
    from crlab.data.crl import build_crl_rows, load_crl_candidates
    from crlab.data.prompts import code_prompt

    rl = [PromptRow(RowKind.RL, code_prompt(p, style), p.id, spec=p.spec) for p in problems]
    if cfg.data.crl_rows and cfg.data.crl_ratio > 0:
        return pool_rows(cfg, problems, rl, labelled_rows(cfg, style))
    if not crl_problems:
        return rl, []
    extra = load_crl_candidates(cfg.data.crl_candidates) if cfg.data.crl_candidates else None
    rows = build_crl_rows(  # labelled on every test, as `platform data build-crl` and the paper label them
        crl_problems, sandbox, threshold=cfg.reward.crl_label_threshold, max_tests=None, style=style,
        candidates=extra, template=cfg.data.crl_prompt,
    )  # fmt: skip
    if not rows:
        raise ConfigError("data.crl_ratio > 0 but the CRL source gave no (problem, candidate) pairs")
    return pool_rows(cfg, problems, rl, [PromptRow(RowKind.CRL, r.prompt, r.problem_id, label=r.label) for r in rows])


def pool_rows(
    cfg: ExperimentConfig, problems: list[Any], rl: list[PromptRow], crl: list[PromptRow]
) -> tuple[list[PromptRow], list[PromptRow]]:
    """``data.budget=pool``: round(ratio N) of the pool's problems become one CRL row each, the rest RL rows
    (:mod:`crlab.data.pool`); other budgets: the rows as they are."""
    if cfg.data.budget != Budget.POOL:
        return rl, crl
    from crlab.data.pool import split_pool

    rl_ids, chosen = split_pool([p.id for p in problems], crl, lambda row: row.problem_id, cfg.data.crl_ratio)
    keep = set(rl_ids)
    return [row for row in rl if row.problem_id in keep], chosen


def labelled_rows(cfg: ExperimentConfig, style: str) -> list[PromptRow]:
    """``data.crl_rows``: CRL rows already labelled (``platform data build-crl``), read as they are."""
    from crlab.data.crl import load_crl_rows

    try:
        rows = load_crl_rows(cfg.data.crl_rows, style, cfg.data.crl_prompt)
    except (ValueError, OSError) as exc:  # DataFormatError included: it names the file, line and field
        raise ConfigError(f"data.crl_rows: {exc}") from None
    if not rows:
        raise ConfigError(f"data.crl_rows: {cfg.data.crl_rows} has no rows")
    return [PromptRow(RowKind.CRL, r.prompt, r.problem_id, label=r.label) for r in rows]


def filter_overlong(
    cfg: ExperimentConfig, tokenizer: Any, rl: list[PromptRow], crl: list[PromptRow]
) -> tuple[list[PromptRow], list[PromptRow]]:
    """``data.overlong_prompts=filter``: drop the rows whose prompt, chat template applied as the rollout
    sends it, is over ``data.max_prompt_length`` tokens (verl's ``data.filter_overlong_prompts``, which the
    authors set); the counts are logged once. ``keep``: the rows as they are."""
    if cfg.data.overlong_prompts != OverlongPrompts.FILTER:
        return rl, crl
    from crlab.train.rollouts.rollout import render_prompt

    limit = cfg.data.max_prompt_length

    def fits(row: PromptRow) -> bool:
        return (
            len(tokenizer(render_prompt(tokenizer, row.prompt), add_special_tokens=False)["input_ids"])
            <= limit
        )

    kept_rl, kept_crl = [r for r in rl if fits(r)], [r for r in crl if fits(r)]
    if launched_rank() == 0:
        log.warning(
            "data.overlong_prompts=filter: dropped %d of %d RL and %d of %d CRL rows whose prompt is over "
            "data.max_prompt_length=%d tokens", len(rl) - len(kept_rl), len(rl), len(crl) - len(kept_crl),
            len(crl), limit,
        )  # fmt: skip
    for kind, before, after in (("RL", rl, kept_rl), ("CRL", crl, kept_crl)):
        if before and not after:
            raise ConfigError(
                f"data.max_prompt_length: every {kind} prompt is over {limit} tokens, so "
                "data.overlong_prompts=filter drops them all; raise data.max_prompt_length or use keep"
            )
    return kept_rl, kept_crl


def make_sandbox(cfg: ExperimentConfig) -> Any:
    """The run's sandbox, not yet entered (its owner enters it: it starts the workers); with ``reward.fallback_time_limit_s``, the authors' two passes
    (:class:`crlab.rewards.code.FallbackRunner`: a second pool of workers at the longer limit). With
    ``reward.harness: authors`` the sandbox's authors harness makes both passes itself, as prime_code."""
    from crlab.rewards.code import FallbackRunner
    from crlab.rewards.sandbox import Sandbox

    r = cfg.reward

    def pool(limit: float) -> Sandbox:
        return Sandbox(sandbox_workers(cfg), limit, r.memory_mb, r.isolation)

    if r.harness == Harness.AUTHORS:
        return Sandbox(
            sandbox_workers(cfg), r.time_limit_s, r.memory_mb, r.isolation, harness="authors",
            second_time_limit_s=r.fallback_time_limit_s,
        )  # fmt: skip
    if r.fallback_time_limit_s is None:
        return pool(r.time_limit_s)
    return FallbackRunner(pool(r.time_limit_s), pool(r.fallback_time_limit_s))


def make_sampler(cfg: ExperimentConfig, n_rl: int, n_crl: int) -> Any:
    """The data sampler over ``n_rl`` RL and ``n_crl`` CRL rows at the start of its first pass (seeded: the
    same order every time)."""
    from crlab.data.mix import MixSampler

    g = cfg.grpo
    return MixSampler(n_rl, n_crl, g.prompts_per_step, cfg.data.crl_ratio, cfg.seed, mix=cfg.data.crl_mix)


def _load(source: str, key: str, seed: int) -> list[Any]:
    from crlab.data.sources import load_problems

    try:
        return load_problems(source, seed=seed)
    except (ValueError, OSError) as exc:  # DataFormatError, TestSpecError, UnknownSource: name the key
        raise ConfigError(f"{key}: {exc}") from None


def planned_steps(cfg: ExperimentConfig, n_rl: int, n_crl: int) -> int:
    """A run's steps: ``grpo.max_steps`` when set, else ``grpo.epochs`` passes over the data budget.

    ``data.budget=pool``: the pool's N problems, however the ratio splits them into RL and CRL rows.
    ``data.budget=rows`` (default): the budget is the RL pool's row count (the CRL pool's when there is no
    RL pool), drawn ``prompts_per_step`` at a time whatever the ratio, so every
    cell of a ratio sweep sees the same number of rows and a higher ratio means fewer RL rows, not more
    steps. ``rl_rows``: one pass over the RL rows at ``rl_per_step`` a step (steps grow as 1/(1-ratio); a
    100% CRL cell draws one "RL row" a step)."""
    g = cfg.grpo
    if g.max_steps:
        return int(g.max_steps)
    if cfg.data.budget == Budget.RL_ROWS:
        rl_per_step = max(1, g.prompts_per_step - round(cfg.data.crl_ratio * g.prompts_per_step))
        return math.ceil(max(n_rl, 1) / rl_per_step) * g.epochs
    rows = n_rl + n_crl if cfg.data.budget == Budget.POOL else n_rl or n_crl
    return math.ceil(max(rows, 1) / g.prompts_per_step) * g.epochs


def plan(cfg: ExperimentConfig) -> dict[str, Any]:
    """What a run of ``cfg`` will draw, before it starts (a sweep's dry run shows it per cell): its steps,
    and the rows they draw (all, RL, CRL), refills not counted; with ``data.budget=pool`` also the pool's
    split (``pool``: "RL problems + CRL problems"). Reads the data sources (no model)."""
    problems, crl_problems = load_sources(cfg)
    n_rl, n_crl = len(problems), len(crl_problems)
    if cfg.data.budget == Budget.POOL:  # the pool's N problems, round(ratio N) of them converted
        n_rl, n_crl = pool_counts(cfg, problems)
    steps, exact = run_steps(cfg, planned_steps(cfg, n_rl, n_crl))
    pps = cfg.grpo.prompts_per_step
    crl_per_step = math.floor(cfg.data.crl_ratio * pps + 0.5)  # as MixSampler rounds it
    return {
        "steps": steps,
        "rows": steps * pps,
        "rl_rows": steps * (pps - crl_per_step),
        "crl_rows": steps * crl_per_step,
        "exact": exact,
        **({"pool": f"{n_rl} + {n_crl}"} if cfg.data.budget == Budget.POOL else {}),  # the pool's N, split
    }


def pool_counts(cfg: ExperimentConfig, problems: list[Any]) -> tuple[int, int]:
    """``data.budget=pool``: (RL problems, CRL problems) of the pool; with ``data.crl_rows``, the rows are read
    and the split made, so that too few problems with a row fails here, in a sweep's dry run."""
    from crlab.data.pool import converted_count, split_pool

    if cfg.data.crl_rows and cfg.data.crl_ratio > 0:
        rl_ids, chosen = split_pool([p.id for p in problems], labelled_rows(cfg, "qwen3"), lambda r: r.problem_id, cfg.data.crl_ratio)
        return len(rl_ids), len(chosen)
    n_crl = converted_count(len(problems), cfg.data.crl_ratio)
    return len(problems) - n_crl, n_crl


def run_steps(cfg: ExperimentConfig, planned: int) -> tuple[int, bool]:
    """A run's steps for ``planned`` steps a pass, and whether the count is exact (else: at most).

    ``switch.restart=fresh`` makes each phase a pass of its own, which its switch may cut short: the fixed
    policy's steps are known (a phase ends at its switch step or at its pass's end, whichever comes first),
    the plateau's (and any other registered policy's) are not (at most a whole pass a phase).
    ``grpo.max_steps`` bounds the whole run."""
    sw = cfg.switch
    if cfg.grpo.max_steps or sw.restart != SwitchRestart.FRESH or sw.policy == SwitchPolicy.NEVER or len(cfg.phases) == 1:
        return planned, True
    if sw.policy != SwitchPolicy.FIXED:  # switches not known ahead
        return planned * len(cfg.phases), False
    start = 0
    for at in transition_steps(sw, len(cfg.phases)):
        start = min(at, start + planned)
    return start + planned, True


def budget_spent(cfg: ExperimentConfig, sampler: Any, planned: int) -> bool:
    """``data.budget=rows`` without ``max_steps``: the pass is over once the sampler has drawn the budget's
    batches. DAPO refills draw from the same pass, so a run that refills ends in fewer update steps."""
    return cfg.data.budget in (Budget.ROWS, Budget.POOL) and not cfg.grpo.max_steps and sampler.steps >= planned


def sandbox_workers(cfg: ExperimentConfig) -> int:
    """``reward.sandbox_workers``, or the machine's cores shared among the data-parallel ranks."""
    return cfg.reward.sandbox_workers or max(1, (os.cpu_count() or 1) // launched_world())


def launched_world() -> int:
    """How many data-parallel ranks the launcher started (WORLD_SIZE; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched_rank() -> int:
    """This process's rank among them (RANK; 0 without a launcher)."""
    return int(os.environ.get("RANK", "0") or 0)


def check_rollout(cfg: ExperimentConfig) -> None:
    """The rollout settings that can be refused before any model loads (vLLM: ``rollout.tensor_parallel_size``)."""
    if resolve_engine(cfg.rollout.engine) == RolloutEngine.VLLM:
        from crlab.train.rollouts.vllm_rollout import check_config

        check_config(cfg)


def make_rollout(cfg: ExperimentConfig, model_dir: str, tokenizer: Any, module: Any, synced: bool) -> Any:
    """The run's rollout engine: vLLM (built from ``model_dir``, weights pushed after each update) or the HF
    sampler on the training ``module`` itself (``synced``: ZeRO-3 on several ranks)."""
    from crlab.train.rollouts.rollout import HFRollout

    r = cfg.rollout
    sampling = {"temperature": r.temperature, "top_p": r.top_p, "top_k": r.top_k}
    if resolve_engine(cfg.rollout.engine) == RolloutEngine.VLLM:
        from crlab.train.rollouts.vllm_rollout import VLLMRollout, settings_from_config

        return VLLMRollout(model_dir, tokenizer, **sampling, settings=settings_from_config(cfg))
    return HFRollout(module, tokenizer, **sampling, synced=synced)


def check_world(cfg: ExperimentConfig, world: int) -> None:
    """Refuse a data-parallel run whose batch does not split evenly over its ranks, or that would deadlock
    (held-out evaluation on rank 0 alone, with the HF engine, while ZeRO-3 partitions the parameters)."""
    from crlab.errors import ConfigError

    if world <= 1:
        return
    g = cfg.grpo
    for key, value in (
        ("grpo.prompts_per_step", g.prompts_per_step),
        ("grpo.mini_batch_size", g.mini_batch_size),
    ):
        if value % world:
            raise ConfigError(
                f"{key}={value} does not split over {world} data-parallel ranks; use a multiple"
            )
    keys = ("eval.source", "eval.select_source", "eval.crl_source")  # select_source: unused without source
    evals = [key for key in keys if getattr(cfg.eval, key.split(".")[1]) and (key != keys[1] or cfg.eval.source)]
    if cfg.deepspeed.zero_stage == 3 and evals and resolve_engine(cfg.rollout.engine) == RolloutEngine.HF:
        raise ConfigError(
            f"{' and '.join(evals)} with deepspeed.zero_stage=3 on {world} ranks and rollout.engine=hf: the "
            "held-out evaluation runs on rank 0 alone, and each HF forward under ZeRO-3 gathers parameters "
            "from every rank; use rollout.engine=vllm, deepspeed.zero_stage=2, or evaluate after training "
            "(platform eval)"
        )


SMALL_MODEL_PARAMS = 50_000_000


def pin_intra_op_threads(model: Any) -> None:
    """One intra-op thread for a small model on CPU, unless OMP_NUM_THREADS says otherwise.

    A small model's ops are too small to gain from splitting over cores, and a split op waits for its
    slowest thread: on a busy machine (sandbox workers, another cell, anything else) a descheduled thread
    stalls every op, and a tiny-coder step took 10.8 s with 2 threads against 1.6 s with one
    (benchmarks/step_time.py). The thread count is fixed here, not by the load, so a run stays
    deterministic. Larger models and GPU runs keep torch's default.
    """
    if "OMP_NUM_THREADS" in os.environ or torch.cuda.is_available():
        return
    if sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS:
        torch.set_num_threads(1)


def make_tracker(cfg: ExperimentConfig, registry: Any, run: Any) -> Any:
    """The run's W&B tracker: its id the run's, grouped by its sweep (job type: the cell without its seed),
    with the events the run has had (an offline run cannot read its summary back)."""
    from crlab.tracking import Tracker, job_type

    t = cfg.tracking
    prior = [{"kind": e.kind, "step": e.step, **e.payload} for e in registry.events(run.id)]
    sweep = registry.get_sweep(run.sweep_id).name if run.sweep_id else None
    return Tracker(
        enabled=t.enabled, mode=t.mode, project=t.project, entity=t.entity, tags=list(t.tags),
        run_id=run.wandb_run_id or run.id, name=run.name, run_dir=run.run_dir, config=run.config,
        group=sweep, job_type=job_type(run.name, cfg.seed) if sweep else "train", prior_events=prior,
    )  # fmt: skip
