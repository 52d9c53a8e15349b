"""Rollouts: the protocol, sampling with transformers, the Qwen3 decoding forward, vLLM."""

from enum import StrEnum


class RolloutEngine(StrEnum):
    """``rollout.engine``: who samples. auto: vLLM on a GPU where it is installed, transformers otherwise."""

    AUTO = "auto"
    HF = "hf"
    VLLM = "vllm"
