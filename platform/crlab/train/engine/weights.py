"""A checkpoint's policy weights, for evaluation: read without building a DeepSpeed engine.

ZeRO stages 0-2 keep the whole module's state dict in ``ds/mp_rank_00_model_states.pt`` (the weights the
policy samples with, in the training dtype). ZeRO-3 partitions the parameters across ranks; their fp32
copies are gathered with DeepSpeed's own ``get_fp32_state_dict_from_zero_checkpoint``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import torch

from crlab.errors import CrlabError
from crlab.train.engine.checkpoint import DS_TAG, check_checkpoint
from crlab.train.engine.dist import import_deepspeed


def checkpoint_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The module weights saved in the complete checkpoint folder ``path`` (``.../step-000040``)."""
    path = Path(path)
    problem = check_checkpoint(path)
    if problem:
        raise CrlabError(f"checkpoint {path}: {problem}")
    import_deepspeed()  # unpickling the states imports DeepSpeed: its start-up line goes to stderr, not stdout
    whole = path / DS_TAG / "mp_rank_00_model_states.pt"  # ZeRO-3 writes zero_pp_rank_R_mp_rank_00_... instead
    if whole.is_file():
        states = torch.load(whole, map_location="cpu", weights_only=False)
        stage = int((states.get("ds_config") or {}).get("zero_optimization", {}).get("stage", 0))
        if stage < 3:
            return {k: v for k, v in states["module"].items() if isinstance(v, torch.Tensor)}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with contextlib.redirect_stdout(sys.stderr):  # it prints its progress; stdout carries a command's result
        return get_fp32_state_dict_from_zero_checkpoint(str(path), tag=DS_TAG)


def load_checkpoint_weights(model: Any, path: str | Path) -> None:
    """Put the checkpoint's weights into ``model`` (a transformers model of the run's base); every saved
    tensor must have a place, and every parameter of the model must be saved (tied weights excepted)."""
    state = checkpoint_state_dict(path)
    dtype = next(model.parameters()).dtype
    missing, unexpected = model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise CrlabError(
            f"checkpoint {path}: its weights do not fit the run's model "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was the model changed since the run?"
        )
