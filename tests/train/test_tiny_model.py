"""The tiny coder's build is deterministic: the same seed gives the same tokenizer and the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crlab.train.tiny_model import TINY_URI, build_tiny, resolve_model_path, tiny_dir


@pytest.mark.slow
def test_same_seed_same_model(tmp_path: Path) -> None:
    a = build_tiny(tmp_path / "a", seed=0, sft_steps=3, log=None)
    b = build_tiny(tmp_path / "b", seed=0, sft_steps=3, log=None)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    info = json.loads((a / "build.json").read_text())
    assert info["seed"] == 0 and info["sft_steps"] == 3 and info["examples"] > 300
    assert not list((tmp_path / "a").glob(".tmp-*"))  # built in a temporary folder, then renamed
    # a second call finds it built and returns it without rebuilding
    assert build_tiny(tmp_path / "a", seed=0, sft_steps=3, log=None) == a == tiny_dir(tmp_path / "a", 0)
    assert resolve_model_path(TINY_URI, tmp_path / "a") == str(a)
    assert resolve_model_path("Qwen/Qwen3-4B", tmp_path / "a") == "Qwen/Qwen3-4B"
