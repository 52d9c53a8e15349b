"""TrainEngine (DeepSpeed on CPU, gloo) and CheckpointManager, with a 2-layer Qwen3 of hidden size 32.

DeepSpeed's process group can be started once per process: a module fixture calls the idempotent
``init_distributed()`` and every test builds its own (cheap) engines. On a fresh machine DeepSpeed compiles
its shared-memory comm op once (~30 s), cached under TORCH_EXTENSIONS_DIR.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crlab.train.engine.deepspeed_engine import (
    CheckpointManager,
    TrainEngine,
    build_ds_config,
    capture_rng_state,
    init_distributed,
    resolve_precision,
    restore_rng_state,
    warmup_then_constant,
)

VOCAB = 64


@pytest.fixture(scope="module", autouse=True)
def _process_group() -> None:
    init_distributed()
    init_distributed()  # idempotent


def tiny_model() -> torch.nn.Module:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
    )
    return Qwen3ForCausalLM(config)


def make_engine(zero_stage: int = 0, **overrides) -> TrainEngine:
    kwargs = dict(
        lr=1e-3,
        warmup_steps=3,
        total_steps=100,
        weight_decay=0.01,
        max_grad_norm=1.0,
        zero_stage=zero_stage,
        precision="auto",
        offload_optimizer=False,
        offload_params=False,
        ds_overrides={},
    )
    kwargs.update(overrides)
    return TrainEngine(tiny_model(), **kwargs)


def token_mean_loss(model, mb):
    """Summed next-token cross-entropy over the micro-batch, divided by the mini-batch's token count."""
    ids, n_tokens = mb["ids"].to(next(model.parameters()).device), mb["n_tokens"]  # (B, T), int
    logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB).float(), ids[:, 1:].reshape(-1), reduction="sum")
    return loss / n_tokens, {"tokens": float(ids[:, 1:].numel())}


def split(ids: torch.Tensor, sizes: list[int]) -> list[dict]:
    """Micro-batches of ``ids`` (B, T) with the given row counts, all normalised by the mini-batch's tokens."""
    n_tokens = ids[:, 1:].numel()
    return [{"ids": part, "n_tokens": n_tokens} for part in ids.split(sizes)]


def random_minibatch() -> list[dict]:
    """A mini-batch drawn from all three global RNGs, so that exact resume needs each of them restored."""
    n_micro = random.randint(1, 3)
    length = int(np.random.randint(5, 9))
    ids = torch.randint(0, VOCAB, (2 * n_micro, length))
    return split(ids, [2] * n_micro)


def capture_grads(engine: TrainEngine) -> list[list[torch.Tensor]]:
    """Record the gradients the inner optimizer sees at each step (after reduction and clipping)."""
    seen: list[list[torch.Tensor]] = []

    def hook(optimizer, args, kwargs):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        seen.append([p.grad.detach().clone() for p in params if p.grad is not None])

    engine.ds_engine.basic_optimizer.register_step_pre_hook(hook)
    return seen


def optimizer_tensors(engine: TrainEngine) -> list:
    optimizer = engine.ds_engine.basic_optimizer
    out = []
    for group in optimizer.param_groups:
        out.append(group["lr"])
        for param in group["params"]:
            state = optimizer.state[param]
            out.extend(state[key] for key in sorted(state))
    return out


def assert_same(left: list, right: list) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
        else:
            assert a == b


# --- config ----------------------------------------------------------------------------------------------


def test_ds_config_merges_overrides_last_and_owns_accumulation():
    config = build_ds_config(
        lr=1e-6,
        weight_decay=0.01,
        max_grad_norm=1.0,
        zero_stage=2,
        precision="auto",
        offload_optimizer=False,
        offload_params=False,
        ds_overrides={"zero_optimization": {"reduce_bucket_size": 1000}, "gradient_clipping": 0.5},
    )
    assert config["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 1000}  # deep merge
    assert config["gradient_clipping"] == 0.5  # overrides win
    assert config["managed_gradient_accumulation"] is False
    assert config["gradient_accumulation_steps"] == 1
    assert "optimizer" not in config  # a torch AdamW is passed as the client optimizer
    if not torch.cuda.is_available():
        assert not config["bf16"]["enabled"] and not config["fp16"]["enabled"]  # auto = fp32 on CPU


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"zero_stage": 4}, "zero_stage"),  # no such stage
        ({"offload_optimizer": True, "zero_stage": 0}, "offload_optimizer"),  # needs ZeRO
        ({"offload_params": True, "zero_stage": 2}, "offload_params"),  # needs stage 3
        ({"precision": "fp8"}, "precision"),  # unknown precision
        ({"ds_overrides": {"scheduler": {"type": "WarmupLR"}}}, "scheduler"),  # the engine owns the LR
    ],
)
def test_ds_config_refuses_bad_arguments(changes, message):
    kwargs = dict(
        lr=1e-6,
        weight_decay=0.0,
        max_grad_norm=1.0,
        zero_stage=2,
        precision="auto",
        offload_optimizer=False,
        offload_params=False,
    )
    kwargs.update(changes)
    with pytest.raises(ValueError, match=message):
        build_ds_config(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_fp16_on_cpu_is_refused_where_the_cpu_lacks_it():
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().is_fp16_supported():  # e.g. AVX512-FP16 CPUs: DeepSpeed's CPU accelerator takes fp16
        assert resolve_precision("fp16") == "fp16"
        return
    with pytest.raises(ValueError, match="fp16.*not supported"):
        make_engine(precision="fp16")


def test_warmup_then_constant():
    factor = warmup_then_constant(4)
    assert [factor(i) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_then_constant(0)(0) == 1.0


# --- updates ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_update_runs_on_each_zero_stage_with_warmup(stage):
    engine = make_engine(stage, lr=1e-3, warmup_steps=2)
    assert engine.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    before = engine.full_parameters()
    torch.manual_seed(1)
    ids = torch.randint(0, VOCAB, (4, 8))
    lrs = [engine.update(split(ids, [2, 2]), token_mean_loss)["lr"] for _ in range(3)]
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3])  # linear warm-up over 2 steps, then constant
    assert engine.global_steps == 3
    after = engine.full_parameters()
    assert any(not torch.equal(before[name], after[name]) for name in before)
    assert all(torch.isfinite(p).all() for p in after.values())


@pytest.mark.parametrize("stage", [0, 2])
def test_warmup_by_training_step_as_verl(stage):
    """verl steps the schedule once per training step: every optimizer step of training step i (0-based)
    runs at lr * min(1, i / warmup), the first training step at lr 0 (its updates change nothing)."""
    engine = make_engine(stage, lr=1e-3, warmup_steps=4, warmup_unit="training_step", precision="fp32")
    torch.manual_seed(1)
    ids = torch.randint(0, VOCAB, (4, 8))
    before = engine.full_parameters()
    lrs = []
    for step in range(3):
        engine.begin_training_step(step)
        lrs += [engine.update(split(ids, [2, 2]), token_mean_loss)["lr"] for _ in range(2)]  # 2 updates
        if step == 0:
            same = engine.full_parameters()
            assert all(torch.equal(before[k], same[k]) for k in before)  # lr 0: no step at all
    assert lrs == pytest.approx([0.0, 0.0, 2.5e-4, 2.5e-4, 5e-4, 5e-4])
    with pytest.raises(ValueError, match="warmup_unit"):
        make_engine(warmup_unit="epoch")


@pytest.mark.parametrize("stage", [0, 2])
def test_two_micro_batches_give_the_one_batch_gradient(stage):
    # fp32: this checks the accumulation arithmetic, which bf16 (the GPU default) rounds at 2^-8
    engine = make_engine(stage, lr=0.0, max_grad_norm=0.0, precision="fp32")  # lr 0: weights stay put
    grads = capture_grads(engine)
    torch.manual_seed(2)
    ids = torch.randint(0, VOCAB, (4, 8))
    split_stats = engine.update(split(ids, [1, 3]), token_mean_loss)
    whole_stats = engine.update(split(ids, [4]), token_mean_loss)
    assert len(grads) == 2
    for g_split, g_whole in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(g_split, g_whole, rtol=1e-5, atol=1e-7)
    assert split_stats["loss"] == pytest.approx(whole_stats["loss"], rel=1e-5)  # sum of the parts
    assert split_stats["grad_norm"] == pytest.approx(whole_stats["grad_norm"], rel=1e-5)
    assert split_stats["tokens"] == pytest.approx(14.0)  # (7 + 21) / 2: per-micro-batch stats are averaged
    assert split_stats["n_micro_batches"] == 2


@pytest.mark.parametrize("stage", [0, 2])
def test_gradients_are_clipped_and_the_norm_before_clipping_is_reported(stage):
    engine = make_engine(stage, max_grad_norm=1e-3)
    grads = capture_grads(engine)
    torch.manual_seed(3)
    ids = torch.randint(0, VOCAB, (2, 8))
    stats = engine.update(split(ids, [1, 1]), token_mean_loss)
    clipped = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads[0]]))
    assert stats["grad_norm"] > 0.1  # the raw norm of a fresh model's gradient
    assert float(clipped) == pytest.approx(1e-3, rel=1e-2)


# --- checkpoints -----------------------------------------------------------------------------------------


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _train(engine: TrainEngine, updates: int) -> None:
    for _ in range(updates):
        engine.update(random_minibatch(), token_mean_loss)


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3)


@pytest.mark.parametrize("stage", [0, 2])
def test_resume_is_exact(tmp_path: Path, stage: int):
    straight = make_engine(stage)
    _seed_all(1)
    _train(straight, 6)

    first = make_engine(stage)
    _seed_all(1)
    _train(first, 3)
    manager = CheckpointManager(tmp_path / "checkpoints", keep=3)
    saved = manager.save(first, step=3, client_state={"step": 3, "phase": "16k"})
    assert saved == tmp_path / "checkpoints" / "step-000003"
    expected_draws = _draws()
    del first

    _seed_all(99)  # the new process starts from other RNG states
    resumed = make_engine(stage)
    assert manager.load(resumed, manager.latest_complete()) == {"step": 3, "phase": "16k"}
    state = capture_rng_state()
    got = _draws()
    assert got[:2] == expected_draws[:2] and torch.equal(got[2], expected_draws[2])
    restore_rng_state(state)
    assert resumed.global_steps == 3
    _train(resumed, 3)

    final, reference = resumed.full_parameters(), straight.full_parameters()
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[name], reference[name]) for name in reference)
    assert_same(optimizer_tensors(resumed), optimizer_tensors(straight))
    assert resumed.current_lr() == straight.current_lr()
    assert resumed.scheduler.state_dict() == straight.scheduler.state_dict()


def test_latest_complete_skips_partial_and_corrupt_checkpoints(tmp_path: Path):
    engine = make_engine(0)
    root = tmp_path / "checkpoints"
    manager = CheckpointManager(root, keep=5)
    manager.save(engine, step=1, client_state={})
    good = manager.save(engine, step=2, client_state={})

    partial = root / ".tmp-step-000009-deadbeef"
    shutil.copytree(good, partial)
    no_manifest = root / "step-000008"
    shutil.copytree(good, no_manifest)
    (no_manifest / "COMPLETE.json").unlink()
    wrong_size = root / "step-000007"
    shutil.copytree(good, wrong_size)
    manifest = json.loads((wrong_size / "COMPLETE.json").read_text())
    (wrong_size / "COMPLETE.json").write_text(json.dumps({**manifest, "step": 7}))  # only a size is wrong
    with open(wrong_size / "client_state.json", "a") as handle:
        handle.write(" ")
    wrong_step = root / "step-000006"
    shutil.copytree(good, wrong_step)  # its manifest still says step 2

    with pytest.warns(UserWarning) as caught:
        assert manager.latest_complete() == good
    messages = "\n".join(str(w.message) for w in caught)
    for bad in (partial, no_manifest, wrong_size, wrong_step):
        assert str(bad) in messages
    assert "client_state.json" in messages  # says which file has the wrong size
    assert manager.complete() == [root / "step-000001", good]
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        manager.load(engine, wrong_size)


def test_keep_prunes_old_checkpoints_and_leftovers(tmp_path: Path):
    engine = make_engine(0)
    root = tmp_path / "checkpoints"
    manager = CheckpointManager(root, keep=2)
    (root / ".tmp-step-000001-00000000").mkdir(parents=True)  # an interrupted save
    for step in (1, 2, 3, 4):
        manager.save(engine, step=step, client_state={"step": step})
    assert sorted(p.name for p in root.iterdir()) == ["step-000003", "step-000004"]
    manifest = json.loads((root / "step-000004" / "COMPLETE.json").read_text())
    assert manifest["step"] == 4 and "client_state.json" in manifest["files"]
    assert any(name.startswith("ds/") for name in manifest["files"])

    again = manager.save(engine, step=4, client_state={"step": 4, "again": True})  # replaces step 4
    assert manager.load(engine, again) == {"step": 4, "again": True}
    assert manager.complete() == [root / "step-000003", root / "step-000004"]


def test_keep_never_prunes_a_pinned_checkpoint(tmp_path: Path):
    """The trainer pins its best checkpoint: keep-K leaves it alone, and prunes it once it is unpinned."""
    engine = make_engine(0)
    root = tmp_path / "checkpoints"
    manager = CheckpointManager(root, keep=1)
    manager.save(engine, step=1, client_state={})
    manager.pinned = {2}
    for step in (2, 3, 4):
        manager.save(engine, step=step, client_state={})
    assert sorted(p.name for p in root.iterdir()) == ["step-000002", "step-000004"]  # best + newest
    manager.pinned = {5}  # a newer best
    manager.save(engine, step=5, client_state={})
    assert sorted(p.name for p in root.iterdir()) == ["step-000005"]


def test_save_refuses_a_client_state_that_is_not_json(tmp_path: Path):
    engine = make_engine(0)
    manager = CheckpointManager(tmp_path / "checkpoints")
    with pytest.raises(TypeError, match="JSON"):
        manager.save(engine, step=1, client_state={"bad": object()})
    assert manager.latest_complete() is None
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_rng_state_round_trip():
    state = capture_rng_state()
    first = _draws()
    restore_rng_state(state)
    second = _draws()
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_zero3_bf16_on_gpu_saves_and_resumes(tmp_path: Path):
    engine = make_engine(3, precision="auto")
    assert engine.ds_config["bf16"]["enabled"]
    _seed_all(1)
    _train(engine, 2)
    manager = CheckpointManager(tmp_path / "checkpoints")
    path = manager.save(engine, step=2, client_state={"step": 2})
    weights = engine.full_parameters()
    fresh = make_engine(3, precision="auto")
    assert manager.load(fresh, path) == {"step": 2}
    loaded = fresh.full_parameters()
    assert all(torch.equal(weights[name], loaded[name]) for name in weights)
