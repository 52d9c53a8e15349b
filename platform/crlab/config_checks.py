"""Cross-field checks of an experiment config; each failure names the key and how to fix it."""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from crlab.data.pool import Budget
from crlab.errors import ConfigError
from crlab.train.grpo.phases import PlateauRule, SwitchPolicy, SwitchRestart
from crlab.train.grpo.strategies import SingleSample

if TYPE_CHECKING:
    from crlab.config import EvalConfig, ExperimentConfig
    from crlab.data.sources import SourceKind


@functools.cache
def choices() -> dict[str, Collection[str]]:
    """The keys whose value is one of a few names, and those names: each an enum of the module that acts on
    it, or a registry (the names registered when the check runs, so a strategy registered by name is a valid
    choice). Read when a config is checked, so that reading this module imports none of those modules."""
    from crlab.data.mix import CrlMix
    from crlab.data.prompts import CritiquePrompt, OverlongPrompts
    from crlab.eval.scoring import Scoring
    from crlab.models import ModelDtype
    from crlab.rewards.code import CodeExtraction, CodeMode
    from crlab.rewards.critique import ConclusionParse
    from crlab.rewards.sandbox import REWARD_HARNESSES, Isolation
    from crlab.tracking import TrackingMode
    from crlab.train.engine.ds_config import Precision, WarmupUnit
    from crlab.train.grpo.phases import PLATEAU_RULES, SWITCH_POLICIES
    from crlab.train.grpo.strategies import ADV_ESTIMATORS, LOSS_AGGS, DapoQuota, MicroWeight
    from crlab.train.rollouts import RolloutEngine

    return {
        "model.dtype": tuple(ModelDtype),
        "grpo.adv_estimator": ADV_ESTIMATORS,
        "grpo.loss_agg": LOSS_AGGS,
        "grpo.micro_weight": tuple(MicroWeight),
        "grpo.warmup_unit": tuple(WarmupUnit),
        "grpo.dapo_quota": tuple(DapoQuota),
        "grpo.single_sample_advantage": tuple(SingleSample),
        "rollout.engine": tuple(RolloutEngine),
        "reward.code_mode": tuple(CodeMode),
        "reward.code_extraction": tuple(CodeExtraction),
        "reward.conclusion_parse": tuple(ConclusionParse),
        "reward.isolation": tuple(Isolation),
        "reward.harness": REWARD_HARNESSES,
        "data.overlong_prompts": tuple(OverlongPrompts),
        "data.crl_prompt": tuple(CritiquePrompt),
        "data.budget": tuple(Budget),
        "data.crl_mix": tuple(CrlMix),
        "eval.scoring": tuple(Scoring),
        "switch.policy": SWITCH_POLICIES,
        "switch.rule": PLATEAU_RULES,
        "switch.restart": tuple(SwitchRestart),
        "deepspeed.precision": tuple(Precision),
        "tracking.mode": tuple(TrackingMode),
    }


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"{key}: {message}")


def _get(cfg: ExperimentConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def _check_range(cfg: ExperimentConfig, key: str, lo: float | None = None, hi: float | None = None) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        _fail(key, f"{value} is outside {bounds}")


def _check_choices(cfg: ExperimentConfig) -> None:
    for key, allowed in choices().items():
        value = _get(cfg, key)
        if value not in allowed:
            _fail(key, f"{value!r} is not one of {', '.join(allowed)}")


def _check_grpo(cfg: ExperimentConfig) -> None:
    g = cfg.grpo
    if g.group_size < 2 and not (g.group_size == 1 and g.single_sample_advantage == SingleSample.RAW):
        _fail(
            "grpo.group_size",
            f"{g.group_size} is outside [2, inf]: GRPO needs 2 rollouts per prompt or more (a group of one "
            "has advantage 0; grpo.single_sample_advantage=raw trains it on its raw reward, as verl does)",
        )
    _check_range(cfg, "grpo.prompts_per_step", 1)
    _check_range(cfg, "grpo.mini_batch_size", 1)
    _check_range(cfg, "grpo.micro_batch_size", 1)
    _check_range(cfg, "grpo.micro_batch_tokens", 1)
    if g.prompts_per_step % g.mini_batch_size:
        _fail(
            "grpo.mini_batch_size",
            f"{g.mini_batch_size} does not divide grpo.prompts_per_step={g.prompts_per_step}; "
            "choose a divisor so each step is a whole number of updates",
        )
    _check_range(cfg, "grpo.lr", 0)
    _check_range(cfg, "grpo.warmup_steps", 0)
    _check_range(cfg, "grpo.clip_low", 0, 1)
    _check_range(cfg, "grpo.clip_high", 0)
    if cfg.grpo.dual_clip_c is not None and cfg.grpo.dual_clip_c <= 1:
        _fail(
            "grpo.dual_clip_c",
            f"{cfg.grpo.dual_clip_c} must be above 1 (verl's default: 3), or null for no dual-clip",
        )
    _check_range(cfg, "grpo.kl_coef", 0)
    _check_range(cfg, "grpo.epochs", 1)
    _check_range(cfg, "grpo.max_steps", 1)
    _check_range(cfg, "grpo.max_refill_rounds", 0)


def _check_phases(cfg: ExperimentConfig) -> None:
    phases = cfg.phases
    if len(phases) == 0:
        _fail("phases", "the phase list is empty; give at least one phase (name, max_response_length)")
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        _fail("phases", f"phase names must be unique, got {names}")
    for i, phase in enumerate(phases):
        _check_range(cfg, f"phases.{i}.max_response_length", 1)
        _check_range(cfg, f"phases.{i}.crl_reward_scale", 0)
        if phase.scale_on not in ("advantages", "rewards"):
            _fail(f"phases.{i}.scale_on", f"{phase.scale_on!r} is not one of advantages, rewards")
    sw = cfg.switch
    _check_range(cfg, "switch.window", 1)
    _check_range(cfg, "switch.patience", 1)
    _check_range(cfg, "switch.min_steps", 0)
    if not 0.5 <= sw.confidence < 1:
        _fail("switch.confidence", f"{sw.confidence} is outside [0.5, 1); give a one-sided level such as 0.95")
    if sw.rule == PlateauRule.CONFIDENT and sw.window < 2:
        _fail("switch.window", f"{sw.window}: the confident rule fits a line to 2*window steps and needs "
                               "window >= 2; raise it, or set switch.rule=mean")  # fmt: skip
    if sw.policy == SwitchPolicy.FIXED:
        steps = list(sw.at_steps)
        if len(steps) != len(phases) - 1:
            _fail("switch.at_steps", f"the fixed policy needs {len(phases) - 1} step(s), one per transition")
        if any(s < 1 for s in steps) or steps != sorted(set(steps)):
            _fail("switch.at_steps", f"{steps} must be positive and strictly increasing")


def _check_rest(cfg: ExperimentConfig) -> None:
    if not str(cfg.model.path).strip():
        _fail("model.path", "is empty; give a Hugging Face id, a local directory or tiny://coder")
    _check_range(cfg, "data.crl_ratio", 0, 1)
    for other in ("crl_source", "crl_candidates"):
        if cfg.data.crl_rows and getattr(cfg.data, other):
            _fail(
                f"data.{other}",
                "is set with data.crl_rows, which holds labelled rows already; unset one of them",
            )
    if cfg.data.budget == Budget.POOL and cfg.data.crl_source:
        _fail("data.crl_source", "is set with data.budget=pool, whose one pool is data.rl_source (its problems "
                                 "become CRL rows by the ratio); unset data.crl_source, or use data.budget=rows")  # fmt: skip
    _check_range(cfg, "data.max_prompt_length", 1)
    _check_range(cfg, "data.max_problems", 1)
    _check_range(cfg, "rollout.temperature", 0)
    _check_range(cfg, "rollout.top_p", 0, 1)
    _check_range(cfg, "rollout.top_k", -1)
    _check_range(cfg, "rollout.gpu_memory_utilization", 0.05, 0.95)
    _check_range(cfg, "rollout.tensor_parallel_size", 1)
    _check_range(cfg, "reward.max_tests", 1)
    _check_range(cfg, "reward.time_limit_s", 0.01)
    fallback = cfg.reward.fallback_time_limit_s
    if fallback is not None and fallback <= cfg.reward.time_limit_s:
        _fail(
            "reward.fallback_time_limit_s",
            f"{fallback} must be above reward.time_limit_s={cfg.reward.time_limit_s} (the authors: 5 then "
            "20), or null for a single pass",
        )
    _check_range(cfg, "reward.memory_mb", 64)
    _check_range(cfg, "reward.crl_label_threshold", 0, 1)
    _check_range(cfg, "reward.sandbox_workers", 0)
    _check_range(cfg, "deepspeed.zero_stage", 0, 3)
    _check_range(cfg, "checkpoint.every", 1)
    _check_range(cfg, "checkpoint.keep", 1)
    _check_range(cfg, "preempt_grace_s", 1)


def _kind(source: str | None) -> SourceKind | None:
    """The entry of the table of sources (:mod:`crlab.data.sources`) that reads ``source``; None if none."""
    from crlab.data.sources import find

    found = find(str(source)) if source else None
    return found[0] if found else None


def _critique(source: str | None) -> bool:
    kind = _kind(source)
    return kind is not None and kind.critique


def eval_metric_keys(ev: EvalConfig) -> list[str]:
    """The metrics an ``eval`` section makes (as :mod:`crlab.eval.report` names them): pass@k for each k of
    a problem source, critique accuracy and parse rate for a ``crl:`` source or ``crl_source``."""
    keys = []
    if ev.source and not _critique(ev.source):
        keys += [f"eval/pass@{k}" for k in sorted(set(ev.k))]
    if ev.select_source:
        keys += [f"val/pass@{k}" for k in sorted(set(ev.k))]
    if (ev.source and _critique(ev.source)) or ev.crl_source:
        keys += ["eval/critique_acc", "eval/critique_parsable"]
    return keys


# the keys that name a source, and whether each must be a problem source (not a critique set)
SOURCE_KEYS = {"data.rl_source": True, "data.crl_source": True, "eval.source": False,
               "eval.select_source": False, "eval.crl_source": False}  # fmt: skip


def _check_sources(cfg: ExperimentConfig) -> None:
    """Each source a key names is one the table of sources reads (no file is read here)."""
    from crlab.data.sources import UnknownSource, as_critique, check

    for key, problems in SOURCE_KEYS.items():
        value = _get(cfg, key)
        if value is None or not str(value).strip():
            continue
        try:
            check(as_critique(str(value)) if key == "eval.crl_source" else str(value), problems)
        except UnknownSource as exc:
            _fail(key, exc.message)


def _check_eval(cfg: ExperimentConfig) -> None:
    ev = cfg.eval
    _check_range(cfg, "eval.every", 1)
    _check_range(cfg, "eval.n", 1)
    _check_range(cfg, "eval.temperature", 0)
    _check_range(cfg, "eval.top_p", 0.0001, 1)
    _check_range(cfg, "eval.top_k", 0)
    _check_range(cfg, "eval.max_new_tokens", 1)
    _check_range(cfg, "eval.max_problems", 1)
    if len(ev.k) == 0:
        _fail("eval.k", "is empty; give the k of each pass@k to report, e.g. [1]")
    for k in ev.k:
        if k < 1:
            _fail("eval.k", f"{list(ev.k)}: each k must be at least 1 (pass@1 is k=1)")
        if k > ev.n:
            _fail("eval.k", f"pass@{k} needs at least {k} samples per problem, but eval.n={ev.n}; "
                            f"raise eval.n to {k} or drop {k} from eval.k")  # fmt: skip
    for key in ("eval.source", "eval.crl_source", "eval.select_source"):
        if _get(cfg, key) is not None and not str(_get(cfg, key)).strip():
            _fail(key, "is empty; name a source (e.g. tiny-eval) or leave it unset (null)")
    _check_selection(ev)


def selection_metric(ev: EvalConfig | dict[str, Any]) -> str:
    """The metric that picks a run's best checkpoint (``eval.select``, or its default); ``ev`` is the eval
    section, a config or a plain dict (a stored run's config)."""
    get = ev.get if isinstance(ev, dict) else lambda key: getattr(ev, key, None)
    return get("select") or ("val/pass@1" if get("select_source") else "eval/pass@1")


def _check_selection(ev: EvalConfig) -> None:
    if ev.select_source and _critique(ev.select_source):
        _fail("eval.select_source", f"{ev.select_source!r}: checkpoints are selected on pass@k of problems, "
                                    "not on critique rows; name a problem source (e.g. tiny-val)")  # fmt: skip
    if ev.select_source and ev.select_source == ev.source:
        _fail("eval.select_source", f"{ev.select_source!r} is eval.source itself; name a disjoint source (e.g. "
                                    "tiny-val beside tiny-test), or unset it to select on eval.source")  # fmt: skip
    made, select = eval_metric_keys(ev), selection_metric(ev)
    if made and select not in made:
        _fail("eval.select", f"{select!r} is not a metric this eval makes ({', '.join(made)}); "
                             "choose one of them, or add its k to eval.k")  # fmt: skip
    _check_source_support(ev)


def _check_source_support(ev: EvalConfig) -> None:
    """``eval.scoring`` and a date window on a source whose kind supports them (the table's ``scorings``,
    ``dated``); a kind known only once its file is read (a guessed ``.jsonl``) is checked when it loads."""
    from crlab.data.sources import SOURCES
    from crlab.eval.scoring import Scoring

    kind = _kind(ev.source)
    if ev.scoring != Scoring.AUTO and kind is not None and ev.scoring not in (kind.scorings or (ev.scoring,)):
        able = " or ".join(k.title for k in SOURCES.values() if ev.scoring in (k.scorings or ()))
        _fail("eval.scoring", f"{ev.scoring} scores {able} sources, not {ev.source!r}; use auto or strict")
    if (ev.since or ev.until) and not (kind is not None and kind.dated):
        dated = " or ".join(k.forms[0].replace("/path.jsonl", "FILE") for k in SOURCES.values() if k.dated)
        _fail("eval.since", f"a contest_date window needs eval.source: {dated}; unset since/until")


def check_config(cfg: ExperimentConfig) -> None:
    from crlab import recipes

    if cfg.recipe not in recipes.names():
        _fail("recipe", f"unknown recipe {cfg.recipe!r}; valid: {', '.join(recipes.names())}")
    _check_choices(cfg)
    _check_grpo(cfg)
    _check_phases(cfg)
    _check_rest(cfg)
    _check_sources(cfg)
    _check_eval(cfg)


def config_warnings(cfg: ExperimentConfig) -> list[str]:
    """Legal but probably unintended settings; the run prints and records them."""
    out = []
    for i, phase in enumerate(cfg.phases):
        if phase.scale_on == "rewards" and cfg.grpo.norm_adv_by_std and phase.crl_reward_scale != 1.0:
            out.append(
                f"phases.{i}.scale_on=rewards with grpo.norm_adv_by_std=true: a constant CRL reward scale "
                f"({phase.crl_reward_scale}) cancels out exactly in std-normalised advantages of all-CRL "
                "groups; use scale_on=advantages to weigh CRL rows less"
            )
    if cfg.data.crl_ratio > 0 and cfg.data.crl_ratio * cfg.grpo.prompts_per_step < 0.5:
        out.append(
            f"data.crl_ratio={cfg.data.crl_ratio} x grpo.prompts_per_step={cfg.grpo.prompts_per_step} "
            "rounds to 0 CRL prompts per step"
        )
    sw = cfg.switch
    if sw.policy == SwitchPolicy.PLATEAU and len(cfg.phases) > 1 and sw.metric.startswith("reward/rl") and not has_rl(cfg):
        out.append(
            f"switch.metric={sw.metric} is never logged when every prompt is a critique (data.crl_ratio="
            f"{cfg.data.crl_ratio}): the plateau never fires, so the phase "
            + ("switches only when its data pass ends" if sw.restart == SwitchRestart.FRESH else "never switches")
            + "; set switch.metric=auto (or reward/crl_mean), or "
            "switch.policy=fixed with switch.at_steps"
        )
    out += _budget_warnings(cfg)
    ev = cfg.eval
    if (ev.source or ev.crl_source) and ev.n > 1 and ev.temperature == 0:
        out.append(
            f"eval.n={ev.n} with eval.temperature=0: greedy samples of a problem are all the same, so pass@k "
            "equals pass@1; raise eval.temperature (e.g. 0.6) for pass@k > 1, or set eval.n=1"
        )
    return out


def has_rl(cfg: ExperimentConfig) -> bool:
    """Whether the steps have RL prompts: not when every prompt is a critique (``data.crl_ratio`` 1, or a
    ratio that rounds to every prompt of a step under ``data.crl_mix: exact``)."""
    from crlab.data.mix import CrlMix

    pps = cfg.grpo.prompts_per_step
    exact_all = round(cfg.data.crl_ratio * pps) >= pps and cfg.data.crl_mix == CrlMix.EXACT
    return not (exact_all or cfg.data.crl_ratio >= 1)


def _budget_warnings(cfg: ExperimentConfig) -> list[str]:
    """A token budget below the longest row a phase allows: the run stops on the first such row."""
    budget = cfg.grpo.micro_batch_tokens
    if budget is None:
        return []
    longest = max(cfg.data.max_prompt_length + p.max_response_length for p in cfg.phases)
    if longest <= budget:
        return []
    return [
        f"grpo.micro_batch_tokens={budget} is below data.max_prompt_length + the longest phase's "
        f"max_response_length ({longest} tokens): the run stops with an error on the first row over the "
        f"budget (verl refuses such a budget at its first update); raise it to {longest} or more"
    ]
