"""vLLM as the rollout engine, colocated with the trainer (written against vLLM 0.32; the ``gpu`` extra's range).

How each part uses vLLM, and why:

- **In-process engine.** vLLM's engine core runs in the trainer's own process
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set here before the engine is built): the weight push hands vLLM
  tensors in memory, which a child engine process cannot take (vLLM serialises what crosses to it; a
  generator of tensors does not serialise, and a copy of a model through a socket is what colocation is
  meant to avoid). One engine per data-parallel rank, so ``rollout.tensor_parallel_size`` must be 1; with
  several ranks each engine joins the ranks' process group as vLLM's "external launcher" (``RANK``,
  ``LOCAL_RANK`` from the launcher: rank ``r`` generates on its own device) and draws with seed + rank.
- **Weight push.** ``LLM.collective_rpc("reload_weights", kwargs={"weights_iterator": ...})``: vLLM's
  in-place reload (``model_executor/model_loader/reload``) loads checkpoint-format names and tensors through
  the model's own ``load_weights`` (which fuses q/k/v and gate/up) and reruns each layer's post-load
  processing (the CPU build repacks linear weights there). A layer is processed once all its parts have
  arrived, so the weights go decoder layer by decoder layer: under ZeRO-3 each decoder layer's parameters are
  gathered whole together (a collective: every rank pushes to its own engine in the same order), yielded,
  and released before the next layer is gathered. Then the prefix cache is reset.
- **Log-probs.** ``logprobs_mode="processed_logprobs"``: the log-prob of each sampled token under the
  distribution it was drawn from (after temperature, top-k and top-p), as the HF sampler reports it; vLLM's
  default is the untempered distribution.
- **Length.** ``max_model_len`` is at most the model's ``max_position_embeddings``.
- **Sleep mode** where vLLM's platform has it (CUDA, ROCm, XPU: ``Platform.is_sleep_mode_available``):
  :meth:`sleep` (level 1: weights to host memory, KV cache dropped) before the trainer's update and
  :meth:`wake` before the push. Elsewhere (CPU) ``rollout.sleep_mode`` is off, said once on stderr.
- **Greedy with n > 1**: vLLM refuses ``n > 1`` at temperature 0; the prompt is sent ``n`` times instead.
- :meth:`close` shuts the engine core down (it also tears down the process group vLLM used, so the trainer
  calls it last); a process that exits without it waits on vLLM's engine threads.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crlab.errors import ConfigError
from crlab.train.rollouts.rollout import Rollouts, render_prompt, sampling_settings

if TYPE_CHECKING:
    from crlab.config import ExperimentConfig

_LAYER = re.compile(r"^(.*\.layers\.\d+)\.")


@dataclass(frozen=True)
class VLLMSettings:
    """How the engine is built (from ``rollout.*``, ``model.dtype`` and the longest prompt + response)."""

    dtype: str = "auto"
    gpu_memory_utilization: float = 0.5
    tensor_parallel_size: int = 1
    max_model_len: int = 4096
    sleep_mode: bool = False
    enforce_eager: bool = False
    seed: int = 0


def settings_from_config(
    cfg: ExperimentConfig, *, sleep_mode: bool | None = None, gpu_memory: float | None = None
) -> VLLMSettings:
    """The engine settings a run's config asks for (``eval`` passes its own sleep mode and memory share)."""
    check_config(cfg)
    r = cfg.rollout
    return VLLMSettings(
        dtype=cfg.model.dtype, gpu_memory_utilization=r.gpu_memory_utilization if gpu_memory is None else gpu_memory,
        tensor_parallel_size=r.tensor_parallel_size,
        max_model_len=cfg.data.max_prompt_length + max(p.max_response_length for p in cfg.phases),
        sleep_mode=r.sleep_mode if sleep_mode is None else sleep_mode, enforce_eager=r.enforce_eager, seed=cfg.seed,
    )  # fmt: skip


def check_config(cfg: ExperimentConfig) -> None:
    if cfg.rollout.tensor_parallel_size != 1:
        raise ConfigError(
            f"rollout.tensor_parallel_size={cfg.rollout.tensor_parallel_size}: the colocated vLLM engine runs "
            "in each trainer process (one per GPU, weights pushed in memory); use 1"
        )


def model_length_limit(model_path: str, trust_remote_code: bool = False) -> int | None:
    """The model's ``max_position_embeddings`` (None when its config has none)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    config = getattr(config, "get_text_config", lambda: config)()
    limit = getattr(config, "max_position_embeddings", None)
    return int(limit) if limit else None


def _vllm_environment() -> None:
    """Before vLLM is imported: its engine in this process (see the module doc), its log lines on stderr
    (stdout carries a command's result; vLLM configures its logging when imported)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")


def sleep_mode_available() -> bool:
    _vllm_environment()
    from vllm.platforms import current_platform

    return bool(current_platform.is_sleep_mode_available())


def layer_groups(model: Any) -> list[list[tuple[str, Any]]]:
    """``model``'s named parameters in groups that vLLM processes together: one group per decoder layer
    (``....layers.N.``, which holds the parts of the fused q/k/v and gate/up projections), and one of the
    rest (embeddings, final norm, LM head), first."""
    groups: dict[str, list[tuple[str, Any]]] = {}
    for name, param in model.named_parameters():
        found = _LAYER.match(name)
        groups.setdefault(found.group(1) if found else "", []).append((name, param))
    return list(groups.values())


def _partitioned(model: Any) -> bool:
    return any(hasattr(p, "ds_id") for p in model.parameters())


def pushed_weights(model: Any) -> Iterator[tuple[str, Any]]:
    """(name, tensor) pairs of ``model``'s weights, layer group by layer group; under ZeRO-3 each group is
    gathered whole while its tensors are read (copied: the gathered storage is released after the group)."""
    if not _partitioned(model):
        for name, param in model.named_parameters():
            yield name, param.detach()
        return
    import deepspeed

    for group in layer_groups(model):
        with deepspeed.zero.GatheredParameters([p for _, p in group], modifier_rank=None):
            for name, param in group:
                yield name, param.detach().clone()


def refresh_tied_head(model: Any) -> None:
    """Rerun the post-load step of an LM head tied to the embedding (in vLLM's worker, on its model).

    A tied head gets no weights of its own in a reload, so vLLM leaves it as it was; it shares the embedding's
    (reloaded) weight tensor, but the CPU build's post-load step packs a copy of that weight for its GEMM
    (``dispatch_cpu_unquantized_gemm``), which then stays the old one: the head must be packed again. On
    CUDA the step does nothing to an unquantized head."""
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or embed is None or getattr(head, "weight", None) is not getattr(embed, "weight", 0):
        return
    method = getattr(head, "quant_method", None)
    if method is not None:
        method.process_weights_after_loading(head)


class VLLMRollout:
    """vLLM colocated with the trainer; the same ``generate`` contract as :class:`HFRollout`."""

    def __init__(
        self, model_path: str, tokenizer: Any, *, temperature: float, top_p: float, top_k: int,
        settings: VLLMSettings,
    ) -> None:  # fmt: skip
        self.tokenizer, self.settings = tokenizer, settings
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.llm: Any = None
        self._asleep = False
        _vllm_environment()
        self.sleep_mode = settings.sleep_mode and sleep_mode_available()
        if settings.sleep_mode and not self.sleep_mode:
            print("rollout.sleep_mode: vLLM has no sleep mode on this platform; its memory stays held "
                  "during updates", file=sys.stderr)  # fmt: skip
        self.llm = self._build(model_path)

    def _build(self, model_path: str) -> Any:
        _vllm_environment()
        from vllm import LLM

        s = self.settings
        limit = model_length_limit(model_path)
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        rank = int(os.environ.get("RANK", "0") or 0)
        extra: dict[str, Any] = {"distributed_executor_backend": "external_launcher"} if world > 1 else {}
        return LLM(
            model=model_path, tokenizer=getattr(self.tokenizer, "name_or_path", None) or model_path,
            dtype=s.dtype, gpu_memory_utilization=s.gpu_memory_utilization,
            tensor_parallel_size=s.tensor_parallel_size,
            max_model_len=min(s.max_model_len, limit) if limit else s.max_model_len,
            enable_sleep_mode=self.sleep_mode, seed=s.seed + rank, enable_prefix_caching=True,
            logprobs_mode="processed_logprobs", enforce_eager=s.enforce_eager, **extra,
        )  # fmt: skip

    @property
    def max_model_len(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    def sync_weights(self, model: Any) -> None:
        """Push ``model``'s weights into vLLM (a collective call under ZeRO-3: every rank makes it)."""
        self.wake()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": pushed_weights(model)})
        self.llm.apply_model(refresh_tied_head)
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Free vLLM's accelerator memory until the next :meth:`wake` (where sleep mode is on)."""
        if self.sleep_mode and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def close(self) -> None:
        """End the engine (idempotent)."""
        if self.llm is None:
            return
        llm, self.llm = self.llm, None
        llm.llm_engine.engine_core.shutdown()

    def generate(self, prompts: list[str], n: int, max_new_tokens: int, **overrides: Any) -> Rollouts:
        """``n`` samples per prompt, grouped by prompt (see :class:`Rollouts`)."""
        from vllm import SamplingParams

        self.wake()
        settings = sampling_settings(self, overrides)
        greedy = settings["temperature"] == 0
        per_request = 1 if greedy else n
        params = SamplingParams(
            n=per_request, temperature=settings["temperature"], top_p=settings["top_p"],
            top_k=settings["top_k"] if settings["top_k"] > 0 else -1, max_tokens=max_new_tokens, logprobs=0,
        )  # fmt: skip
        rendered = [render_prompt(self.tokenizer, p) for p in prompts]
        if greedy:  # vLLM takes n=1 only when greedy: each prompt n times
            rendered = [text for text in rendered for _ in range(n)]
        out = Rollouts([], [], [], [], [])
        for result in self.llm.generate(rendered, params, use_tqdm=False):
            for sample in result.outputs:
                ids = list(sample.token_ids)
                out.prompt_ids.append(list(result.prompt_token_ids))
                out.response_ids.append(ids)
                out.logprobs.append([lp[t].logprob for lp, t in zip(sample.logprobs, ids, strict=True)])
                out.texts.append(sample.text)
                out.truncated.append(sample.finish_reason == "length")
        return out
