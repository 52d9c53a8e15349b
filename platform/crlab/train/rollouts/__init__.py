"""Rollouts: the protocol, sampling with transformers, the Qwen3 decoding forward, vLLM."""
