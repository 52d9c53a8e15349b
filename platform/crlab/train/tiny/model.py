"""The bundled tiny coder: a small Qwen3-architecture model with a short supervised warm start.

``tiny://coder`` in ``model.path`` names it. The seed-0 build ships with the package
(``crlab/assets/tiny-coder-v{BUILD_VERSION}-seed0``), so a fresh machine has it at once; other seeds, and
``platform model build-tiny --force``, build into the cache from the bundled tiny task:

1. the train split of :mod:`crlab.data.tiny` problems, and CRL rows made by running every candidate in
   the sandbox (labels come from the tests, as in training);
2. a byte-level BPE tokenizer trained with ``tokenizers`` on those texts, with a Qwen-style chat template;
3. a 4-layer Qwen3 model (about a million parameters) initialised from the seed;
4. a short supervised warm start on (prompt, completion) pairs, the loss on completion tokens only, so
   that RL starts with signal: the model solves some problems some of the time, not all of them.

The same seed gives the same model, bitwise, on any x86-64 machine with the same torch: the build runs in
a child process with its numerics pinned (:data:`PINNED_ENV`: one thread, AVX2 kernels in torch, MKL and
oneDNN), because thread count and vector width change the order of float sums. A slow test rebuilds seed
0 and compares it with the shipped copy. The build writes into a temporary folder and renames it into
place, so a half-built model is never used.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from crlab.errors import CrlabError
from crlab.models import default_cache_dir

TINY_URI = "tiny://coder"
BUILD_VERSION = 2
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
N_TRAIN_PROBLEMS = 320
SFT_BATCH = 32
SFT_STEPS = 800
ASSETS = Path(__file__).resolve().parents[2] / "assets"
# Numerics of the build process: the same bytes whatever the machine's thread count or vector width.
PINNED_ENV = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
    "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2",
}  # fmt: skip


def tiny_dir(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Where :func:`build_tiny` puts the model of ``seed`` in the cache."""
    return Path(cache_dir or default_cache_dir()) / f"tiny-coder-v{BUILD_VERSION}-seed{seed}"


def shipped_dir(seed: int = 0) -> Path | None:
    """The build of ``seed`` that ships with the package (seed 0), or None."""
    path = ASSETS / f"tiny-coder-v{BUILD_VERSION}-seed{seed}"
    return path if (path / "build.json").is_file() else None


def resolve_model_path(path: str, cache_dir: str | Path | None = None, seed: int = 0) -> str:
    """``tiny://coder`` -> the shipped model's folder, else the cache's (built if needed); others unchanged.

    The shipped folder is used in place: nothing is copied, built or drawn from any random generator.
    """
    if path != TINY_URI:
        return path
    shipped = shipped_dir(seed)
    if shipped is not None:
        return str(shipped)
    target = tiny_dir(cache_dir, seed)
    if not (target / "build.json").is_file():
        build_tiny(cache_dir, seed=seed)
    return str(target)


def _train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _make_model(vocab_size: int, seed: int) -> Any:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=640,
        tie_word_embeddings=True, rope_theta=10000.0, use_cache=True,
    )  # fmt: skip
    return Qwen3ForCausalLM(config)


def _encode_examples(tok: Any, examples: list[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """(token ids, index of the first completion token) per example; completion ends with EOS."""
    from crlab.train.rollouts.rollout import render_prompt

    encoded = []
    for prompt, completion in examples:
        head = tok(render_prompt(tok, prompt), add_special_tokens=False)["input_ids"]
        tail = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        encoded.append((head + tail, len(head)))
    return encoded


def _batch(items: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), width), pad_id)  # (B, T)
    labels = torch.full((len(items), width), -100)  # (B, T): loss on completion tokens only
    for row, (seq, start) in enumerate(items):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, start : len(seq)] = torch.tensor(seq[start:])
    return ids, labels


def _sft(
    model: Any, data: list[tuple[list[int], int]], pad_id: int, steps: int, seed: int,
    on_step: Callable[[int, float], None] | None = None,
) -> float:  # fmt: skip
    """AdamW with a one-cycle schedule over random batches of ``SFT_BATCH`` examples; ``on_step(k, loss)``."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        ids, labels = _batch(rng.sample(data, k=min(SFT_BATCH, len(data))), pad_id)
        loss = model(input_ids=ids, attention_mask=(ids != pad_id).long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_value = loss.item()
        if on_step:
            on_step(step + 1, loss_value)
    return loss_value


def _examples(seed: int, isolation: str) -> list[tuple[str, str]]:
    from crlab.data.crl import build_crl_rows
    from crlab.data.tiny import generate_tiny_problems, sft_examples
    from crlab.rewards.sandbox import Sandbox

    problems = generate_tiny_problems(N_TRAIN_PROBLEMS, seed=seed, split="train")
    with Sandbox(workers=2, time_limit_s=2.0, isolation=isolation) as sandbox:
        rows = build_crl_rows(problems, sandbox, style="tiny")
    return sft_examples(problems, rows, style="tiny")


def build_tiny(
    cache_dir: str | Path | None = None, seed: int = 0, sft_steps: int = SFT_STEPS, force: bool = False,
    isolation: str = "bwrap", log: Any = print, progress: bool | None = None,
) -> Path:  # fmt: skip
    """Build the tiny coder into the cache (no-op if it is there, unless ``force``); returns its folder.

    The build runs in a child process with :data:`PINNED_ENV`. ``log`` gets plain lines (every 50 warm-start
    steps); ``progress`` shows a rich bar on stderr instead (default: when stderr is a terminal); a ``log``
    of None is silent. The shipped seed-0 model is never touched: this builds a fresh copy.
    """
    from crlab.train.tiny.progress import BuildProgress

    target = tiny_dir(cache_dir, seed)
    if (target / "build.json").is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    args = [str(target.parent), str(seed), str(sft_steps), isolation]
    cmd = [sys.executable, "-m", "crlab.train.tiny.model", *args]
    if log:
        log(f"building the tiny coder (seed {seed}) into {target}")
    with tempfile.TemporaryFile() as stderr, BuildProgress(log, progress) as shown:
        env = {**os.environ, **PINNED_ENV}
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env) as child:
            assert child.stdout is not None
            for line in child.stdout:
                if line.startswith("{"):
                    shown.event(json.loads(line))
        if child.returncode != 0:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace").strip().splitlines()[-15:]
            raise CrlabError(f"building the tiny coder failed (exit {child.returncode}):\n" + "\n".join(tail))
    return target


def _emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def _build_here(parent: Path, seed: int, sft_steps: int, isolation: str) -> Path:
    """The build itself (in the child process); progress as JSON lines on stdout."""
    import tokenizers
    import transformers

    torch.set_num_threads(1)
    started = time.time()
    examples = _examples(seed, isolation)
    tok = _train_tokenizer([p + "\n" + c for p, c in examples], vocab_size=768)
    model = _make_model(len(tok), seed)
    data = _encode_examples(tok, examples)
    params = sum(p.numel() for p in model.parameters())
    _emit(kind="start", examples=len(examples), parameters=params, steps=sft_steps)
    on_step = lambda k, loss: _emit(kind="step", step=k, loss=loss)  # noqa: E731
    final_loss = _sft(model, data, tok.pad_token_id, sft_steps, seed, on_step)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-tiny-", dir=parent))
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    info = {
        "version": BUILD_VERSION, "seed": seed, "sft_steps": sft_steps, "examples": len(examples),
        "final_loss": final_loss, "seconds": round(time.time() - started, 1), "torch": torch.__version__,
        "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }  # fmt: skip
    (tmp / "build.json").write_text(json.dumps(info, indent=2))
    target = tiny_dir(parent, seed)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


if __name__ == "__main__":  # the build's child process: parent folder, seed, warm-start steps, isolation
    _build_here(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
