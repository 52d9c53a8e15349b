"""Rollouts: the protocol, sampling with transformers, the Qwen3 decoding forward, vLLM."""

from enum import StrEnum


class RolloutEngine(StrEnum):
    """``rollout.engine``: who samples. auto: vLLM on a GPU where it is installed, transformers otherwise."""

    AUTO = "auto"
    HF = "hf"
    VLLM = "vllm"


def resolve_engine(engine: str) -> RolloutEngine:
    """``engine`` as this machine resolves it: ``auto`` is vLLM where CUDA and vLLM are, else hf."""
    import importlib.util

    import torch

    chosen = RolloutEngine(engine)
    if chosen != RolloutEngine.AUTO:
        return chosen
    on_gpu = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
    return RolloutEngine.VLLM if on_gpu else RolloutEngine.HF
