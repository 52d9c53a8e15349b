"""A full disk while checkpointing: CheckpointManager and a real DeepSpeed engine (CPU) on a small tmpfs.

- A save that cannot fit is refused before anything is written (the newest checkpoint's size, or for the
  first one the engine's tensors, against the free space).
- A disk that fills during the save (another program writing; the check skipped): torch's stream-writer
  error and Python's ENOSPC alike remove the partial save.
- Either way: one-line DiskFull naming the step, the folder, the space needed and free; no ``.tmp-*`` left;
  the previous checkpoint complete and loadable with the weights it had; a save succeeds once there is room.
- Two data-parallel ranks: whichever rank's write fails, both raise DiskFull; neither waits forever.
"""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crlab.errors import DiskFull
from crlab.train.engine.checkpoint import MANIFEST, CheckpointManager, check_checkpoint
from crlab.train.engine.deepspeed_engine import TrainEngine, init_distributed
from crlab.train.engine.diskspace import estimate_bytes, is_no_space

VOCAB, PAGE = 256, 4096


def make_engine(zero_stage: int = 0) -> TrainEngine:
    """A 2-layer Qwen3 of hidden size 128 (about 0.5 M parameters: a 6 MiB checkpoint with Adam's state)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=64,
    )  # fmt: skip
    return TrainEngine(
        Qwen3ForCausalLM(config), lr=1e-3, warmup_steps=1, total_steps=10, weight_decay=0.0, max_grad_norm=1.0,
        zero_stage=zero_stage, precision="fp32", offload_optimizer=False, offload_params=False, ds_overrides={},
    )  # fmt: skip


def train_once(engine: TrainEngine) -> None:
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))  # (B, T)
    engine.update([ids], lambda model, mb: model(input_ids=mb).logits.float().logsumexp(-1).mean())


@pytest.fixture(scope="module", autouse=True)
def _process_group() -> None:
    init_distributed()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _weights(engine: TrainEngine) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in engine.full_parameters().items()}


def _assert_intact(manager: CheckpointManager, checkpoint: Path, weights: dict[str, torch.Tensor]) -> None:
    """Only ``checkpoint`` under the root: complete, and it loads the weights it was saved with."""
    assert sorted(p.name for p in manager.root.iterdir()) == [checkpoint.name]  # no .tmp-* left
    assert check_checkpoint(checkpoint) is None
    fresh = make_engine()
    manager.load(fresh, checkpoint)
    assert all(torch.equal(fresh.full_parameters()[k], v) for k, v in weights.items())


def _one_line(error: DiskFull, *parts: str) -> str:
    line = str(error)
    assert "\n" not in line and "platform resume RUN" in line and "free" in line
    for part in parts:
        assert part in line, line
    return line


def _pages(checkpoint: Path, but: str = MANIFEST) -> int:
    """Bytes the checkpoint's files take on a tmpfs (whole pages), leaving out ``but``."""
    files = [p for p in checkpoint.rglob("*") if p.is_file() and p.name != but]
    return sum(math.ceil(p.stat().st_size / PAGE) * PAGE for p in files)


def test_full_disk_errors_are_recognised(small_disk) -> None:
    small_disk.resize(1 << 20)
    with pytest.raises(OSError) as plain:
        (small_disk.path / "a").write_bytes(b"x" * (2 << 20))
    assert is_no_space(plain.value, small_disk.path)
    (small_disk.path / "a").unlink()
    with pytest.raises(RuntimeError) as torch_error:  # torch's writer drops the errno
        torch.save(torch.zeros(1 << 19), small_disk.path / "b.pt")
    assert "ENOSPC" not in str(torch_error.value) and is_no_space(torch_error.value, small_disk.path)
    assert not is_no_space(RuntimeError("CUDA error: device-side assert"), small_disk.path)
    assert not is_no_space(FileNotFoundError(2, "No such file"), small_disk.path)


def test_a_checkpoint_that_does_not_fit_is_refused_before_writing(small_disk) -> None:
    engine = make_engine()
    train_once(engine)
    manager = CheckpointManager(small_disk.path / "checkpoints", keep=2)
    first, weights = manager.save(engine, step=1), _weights(engine)
    small_disk.fill(leave=_pages(first) // 2)
    train_once(engine)
    with pytest.raises(DiskFull) as caught:
        manager.save(engine, step=2)
    _one_line(caught.value, "checkpoint step-000002 does not fit in", str(manager.root), "nothing written",
              "step-000001 intact")  # fmt: skip
    _assert_intact(manager, first, weights)
    (small_disk.path / "filler").unlink()
    assert check_checkpoint(manager.save(engine, step=2)) is None


def test_the_first_checkpoint_is_checked_against_the_engines_tensors(small_disk) -> None:
    engine = make_engine()
    train_once(engine)
    needed = estimate_bytes(engine)  # weights and Adam's two moments: three copies of the parameters
    assert needed >= 3 * sum(p.numel() * 4 for p in engine.module.parameters())
    small_disk.fill(leave=needed - PAGE)
    manager = CheckpointManager(small_disk.path / "checkpoints")
    with pytest.raises(DiskFull) as caught:
        manager.save(engine, step=1)
    _one_line(caught.value, "step-000001 does not fit", "no checkpoint yet")
    assert not manager.root.exists() or not any(manager.root.iterdir())


@pytest.mark.parametrize("fails_in", ["deepspeed", "manifest"])
def test_a_disk_that_fills_during_the_save_leaves_the_previous_checkpoint(
    small_disk, caplog, fails_in: str
) -> None:
    engine = make_engine()
    train_once(engine)
    manager = CheckpointManager(small_disk.path / "checkpoints", keep=1)
    first, weights = manager.save(engine, step=1), _weights(engine)
    manager.check_space = False  # as if another program filled the disk after the check
    # half a checkpoint: torch.save of DeepSpeed's model states fails; every file but the manifest: json fails
    small_disk.fill(leave=_pages(first) // 2 if fails_in == "deepspeed" else _pages(first))
    train_once(engine)
    with pytest.raises(DiskFull) as caught:
        manager.save(engine, step=2)
    cause = "RuntimeError: [enforce fail" if fails_in == "deepspeed" else "OSError: [Errno 28]"
    assert f"the disk filled while saving (rank 0: {cause}" in caplog.text
    _one_line(caught.value, "checkpoint step-000002 ran out of space in", str(manager.root),
              "partial save removed", "step-000001 intact")  # fmt: skip
    _assert_intact(manager, first, weights)


WORKER = """
import os, shutil, sys
from pathlib import Path
import torch
from crlab.errors import DiskFull
from crlab.train.engine.checkpoint import CheckpointManager
from crlab.train.engine.deepspeed_engine import init_distributed
sys.path.insert(0, sys.argv[4])
from test_disk_full import make_engine, train_once
init_distributed()
root, stage, check = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "check"
engine = make_engine(stage)
train_once(engine)
manager = CheckpointManager(root / "checkpoints", keep=1)
first = manager.save(engine, step=1)
manager.check_space = check
if os.environ["RANK"] == "0":  # another program fills the disk: half of one checkpoint left
    size = sum(p.stat().st_size for p in first.rglob("*") if p.is_file())
    with open(root / "filler", "wb") as handle:
        handle.write(b"\\0" * (shutil.disk_usage(root).free - size // 2))
torch.distributed.barrier()
train_once(engine)
try:
    manager.save(engine, step=2)
    print("SAVED")
except DiskFull as exc:
    print("DISKFULL", exc)
sys.stdout.flush()
os._exit(0)  # past gloo's threads at teardown, which may abort ("terminate called without an active exception")
"""


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "check"), [(0, "check"), (0, "nocheck"), (2, "nocheck")])
def test_two_ranks_both_stop_when_one_cannot_write(small_disk, tmp_path, child_env, stage, check) -> None:
    """ZeRO 0: rank 0 alone writes the weights, so its write fails inside DeepSpeed's save while rank 1 waits
    at DeepSpeed's closing barrier; ZeRO 2: both write optimizer shards, either may fail first."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**child_env, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    args = [sys.executable, str(script), str(small_disk.path), str(stage), check, str(Path(__file__).parent)]
    ranks = [
        subprocess.Popen(
            args,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]
    try:
        outputs = [rank.communicate(timeout=150) for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    for rank, (out, err) in zip(ranks, outputs, strict=True):
        assert rank.returncode == 0 and "DISKFULL checkpoint step-000002" in out, (out, err[-3000:])
    kind = "does not fit" if check == "check" else "ran out of space"
    assert all(kind in out for out, _ in outputs)
    root = small_disk.path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-000001"]
    assert check_checkpoint(root / "step-000001") is None
