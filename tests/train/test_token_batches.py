"""Micro-batches by a token budget (``grpo.micro_batch_tokens``, verl's ``use_dynamic_bsz``): the count,
the Karmarkar–Karp partition on hand-worked inputs, the over-long row, the config key, and a tiny run."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import pytest
import torch

from crlab.config import load_config
from crlab.config_checks import config_warnings
from crlab.errors import ConfigError
from crlab.train.grpo.token_batches import balanced_partition, micro_batch_count, token_micro_batches
from crlab.train.loop import step as step_module
from crlab.train.loop import trainer as trainer_module
from crlab.train.loop.step import pack, padding_batch
from crlab.train.rollouts.rollout import Rollouts

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("lengths", "budget", "count"),
    [
        ([10, 10, 10], 30, 1),  # exactly the budget: one
        ([10, 10, 10], 29, 2),  # ceil(30 / 29)
        ([10, 10, 10], 15, 2),  # ceil(30 / 15)
        ([10, 10, 10], 10, 3),  # one row each
        ([7, 1, 1, 1], 7, 2),  # ceil(10 / 7), though the 7 fills one by itself
        ([100, 3, 5, 9, 41, 2], 100, 2),  # ceil(160 / 100)
    ],
)
def test_the_count_is_the_tokens_over_the_budget_rounded_up(lengths, budget, count) -> None:  # noqa: ANN001
    assert micro_batch_count(lengths, budget) == count


def test_a_row_over_the_budget_names_the_key_and_the_length_needed() -> None:
    with pytest.raises(ConfigError, match=r"grpo\.micro_batch_tokens: a row of 31 tokens .* raise grpo\."
                                          r"micro_batch_tokens to 31 or more"):  # fmt: skip
        micro_batch_count([10, 31, 5], 30)
    with pytest.raises(ConfigError, match=r"grpo\.micro_batch_tokens: 0 is outside"):
        micro_batch_count([1], 0)


def _sums(lengths: list[int], parts: list[list[int]]) -> list[int]:
    return [sum(lengths[i] for i in part) for part in parts]


@pytest.mark.parametrize(
    ("lengths", "k", "expected", "sums"),
    [
        # equal rows, 2 parts: the two highest indices pair off first (ties go to the larger (index, length)
        # items, as verl's), then row 0 joins the part of row 1: over the 15-token budget that made k = 2
        ([10, 10, 10], 2, [[0, 1], [2]], [20, 10]),
        # differencing 8-7 and 6-5 (spread 1 each), then the 4 (spread 4) with the 8|7 (the larger first
        # part): 4+7 | 8, spread 3; then with 6|5: 4+7+5 | 8+6. The known gap of the method: 15 | 15 exists
        ([8, 7, 6, 5, 4], 2, [[1, 3, 4], [0, 2]], [16, 14]),
        # 3 parts, largest spread first: 50 | 12 | -, then + 11: 50 | 12 | 11, + 10 on the smallest: 50 | 11+10
        # | 12, + 9: 50 | 12+9 | 11+10 (a tie at 21: the larger items (4, 12) first), + 8: 50 | 11+10+8 | 12+9
        ([50, 9, 11, 10, 12, 8], 3, [[0], [2, 3, 5], [1, 4]], [50, 29, 21]),
        ([5, 1], 2, [[0], [1]], [5, 1]),  # as many parts as rows: one row each
        ([4, 9, 2], 1, [[0, 1, 2]], [15]),
    ],
)
def test_karmarkar_karp_on_hand_worked_inputs(lengths, k, expected, sums) -> None:  # noqa: ANN001
    parts = balanced_partition(lengths, k)
    assert parts == expected
    assert _sums(lengths, parts) == sums


def _best_largest_sum(lengths: list[int], k: int) -> int:
    """The optimum: the smallest possible largest part over every split of the rows into k non-empty parts."""
    best = math.inf
    for labels in itertools.product(range(k), repeat=len(lengths)):
        if len(set(labels)) == k:
            best = min(best, max(sum(n for n, lab in zip(lengths, labels, strict=True) if lab == j)
                                 for j in range(k)))  # fmt: skip
    return int(best)


@pytest.mark.parametrize(
    ("lengths", "k", "optimum"),
    [
        ([31, 26, 20, 17, 14, 9, 3], 3, 40),  # 120 tokens: 40 | 40 | 40 exists (31+9, 26+14, 20+17+3)
        ([9, 2, 7, 4, 3, 5], 3, 11),  # 30 tokens, but the 9 needs a 1 for a 10: 9+2 | 7+4 | 5+3
        ([300, 120, 110, 100, 90, 80], 2, 400),  # 800 tokens: 300+100 | 120+110+90+80
        ([8, 7, 6, 5, 4], 2, 15),  # where the method misses it (16, above)
    ],
)
def test_the_partition_against_the_optimum_by_brute_force(lengths, k, optimum) -> None:  # noqa: ANN001
    assert _best_largest_sum(lengths, k) == optimum
    largest = max(_sums(lengths, balanced_partition(lengths, k)))
    assert largest == (16 if lengths == [8, 7, 6, 5, 4] else optimum)


def test_every_row_once_in_exactly_k_non_empty_parts_largest_first() -> None:
    rng = random.Random(3)
    for _ in range(200):
        lengths = [rng.randint(1, rng.choice([4, 100, 20000])) for _ in range(rng.randint(1, 30))]
        k = rng.randint(1, len(lengths))
        parts = balanced_partition(lengths, k)
        assert len(parts) == k and all(parts)
        assert sorted(i for part in parts for i in part) == list(range(len(lengths)))
        assert all(part == sorted(part) for part in parts)
        sums = _sums(lengths, parts)
        assert sums == sorted(sums, reverse=True)
        assert sums[0] - sums[-1] <= max(lengths)  # differencing never leaves a gap above the longest row
    with pytest.raises(ValueError, match="cannot split 2 rows into 3"):
        balanced_partition([1, 2], 3)


def test_token_micro_batches_split_a_span_of_rows() -> None:
    lengths = [99, 99, 8, 7, 6, 5, 4, 99]  # rows 2-6 are the mini-batch; the others are not looked at
    assert token_micro_batches(lengths, range(2, 7), 2) == [[3, 5, 6], [2, 4]]  # [[1, 3, 4], [0, 2]] + 2
    assert token_micro_batches(lengths, range(2, 4), 5) == [[2], [3]]  # a count above the rows: one row each


def test_padding_uses_the_shortest_row_wherever_it_is() -> None:
    sizes = [(3, 4), (2, 1), (5, 6), (4, 4)]  # (prompt, response): lengths 7, 3, 11, 8
    rollouts = Rollouts([[5] * p for p, _ in sizes], [[6] * r for _, r in sizes], [[0.0] * r for _, r in sizes],
                        [""] * 4, [False] * 4)  # fmt: skip
    packed = pack(rollouts, [0, 1, 2, 3], torch.zeros(4), pad_id=0)
    pad = padding_batch(packed, [[1, 2], [0, 3]])  # the shortest row opens the first chunk
    assert pad.input_ids.shape == (1, 3) and pad.attention.tolist() == [[1, 1, 1]]


def test_the_config_key() -> None:
    assert load_config(None, []).grpo.micro_batch_tokens is None
    assert load_config(None, ["recipe=authors"]).grpo.micro_batch_tokens == 48000
    for bad in ("0", "-5"):
        with pytest.raises(ConfigError, match=rf"grpo\.micro_batch_tokens: {bad} is outside \[1, inf\]"):
            load_config(None, [f"grpo.micro_batch_tokens={bad}"])
    assert config_warnings(load_config(None, ["recipe=authors"])) == []  # 4096 + 32768 = 36864 fit
    (warning,) = config_warnings(load_config(None, ["grpo.micro_batch_tokens=24000"]))
    assert warning.startswith("grpo.micro_batch_tokens=24000 is below") and "raise it to 36864" in warning


SMALL = [
    "data.rl_source=tiny:48", "grpo.prompts_per_step=4", "grpo.mini_batch_size=2", "grpo.group_size=4",
    "grpo.dynamic_sampling=false", "phases.0.max_response_length=48", "phases.1.max_response_length=64",
    "reward.sandbox_workers=1", "grpo.max_steps=2", "checkpoint.every=2", "tracking.enabled=false",
    "eval.source=null", "seed=7", "grpo.micro_weight=verl",
]  # fmt: skip
BUDGET = 100  # tokens; the tiny coder's rows are about 20 prompt tokens and up to 48 response tokens here


@pytest.mark.slow
def test_a_tiny_run_splits_each_update_by_the_budget(
    tiny_cache: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two steps of the tiny coder, two updates of 8 rows a step (no DAPO filter): each update's
    micro-batch count is ceil(its tokens / budget), every row in one micro-batch, and the step's
    ``actor/n_micro_batches`` is the mean count of its updates."""
    from crlab.registry import Registry
    from crlab.train.loop.run import StopFlag, register_run

    monkeypatch.setenv("CRLAB_CACHE", tiny_cache)
    seen: dict[int, list[tuple[list[int], list[list[int]]]]] = {}  # step -> (row lengths, micro-batches)

    def spy(lengths, rows, count):  # noqa: ANN001, ANN202
        out = token_micro_batches(lengths, rows, count)
        seen.setdefault(trainer.step + 1, []).append(([lengths[i] for i in rows], out))  # the step it updates
        return out

    monkeypatch.setattr(step_module, "token_micro_batches", spy)
    overrides = [*SMALL, f"grpo.micro_batch_tokens={BUDGET}", f"paths.runs_dir={tmp_path / 'runs'}"]
    cfg = load_config(REPO / "experiments/tiny_coder.yaml", overrides)
    registry = Registry(f"sqlite:///{tmp_path / 'reg.db'}")
    trainer = trainer_module.Trainer(cfg, registry, run=None)
    run = register_run(registry, cfg)
    try:
        assert trainer.train(run, resume=False, stop=StopFlag()) == "completed"
    finally:
        trainer.close()
    metric = {m.step: m.value for m in registry.metrics(run.id, ["actor/n_micro_batches"])}
    assert sorted(metric) == sorted(seen) == [1, 2]
    for step, updates in seen.items():
        assert len(updates) == 2  # 4 prompts a step, 2 a mini-batch
        counts = []
        for lengths, parts in updates:
            assert len(lengths) == 8 and max(lengths) <= BUDGET  # 2 prompts x 4 samples
            counts.append(math.ceil(sum(lengths) / BUDGET))
            assert len(parts) == counts[-1] > 1
            flat = [i for part in parts for i in part]
            assert len(flat) == len(set(flat)) == 8  # each row once
        assert metric[step] == sum(counts) / 2, (step, counts, [u[0] for u in updates])


TWO_RANKS = """
import json, os, sys
import torch.distributed as dist
from crlab.config import load_config
from crlab.errors import ConfigError
from crlab.train.loop.step import split_mini_batches

dist.init_process_group("gloo")
rank = dist.get_rank()
cfg = load_config(None, ["grpo.micro_batch_tokens=" + sys.argv[1]])
# rank 0: a mini-batch of 40 tokens (2 micro-batches at 25), rank 1: of 130 tokens (6), in 8 rows each
lengths = [[5] * 8, [20, 20, 20, 20, 20, 10, 10, 10]][rank]
try:
    out = split_mini_batches(lengths, [0, 8], cfg.grpo)
except ConfigError as exc:
    out = str(exc)
print(json.dumps(out))
dist.destroy_process_group()
"""


def _two_ranks(budget: int) -> list:  # noqa: ANN202
    """Each rank's ``split_mini_batches`` (or its error) at ``budget``, two gloo ranks on this machine."""
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    cmd = [sys.executable, "-c", TWO_RANKS, str(budget)]
    procs = [subprocess.Popen(cmd, env={**base, "RANK": str(r)}, **pipes) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


@pytest.mark.slow
def test_two_ranks_split_into_the_most_micro_batches_of_either() -> None:
    """Rank 0 alone would make 2 micro-batches (40 tokens at 25), rank 1 makes 6 (130 tokens): both make 6,
    rank 0's rows balanced over them (5+5 | 5+5 | 5 | 5 | 5 | 5). A row over the budget on one rank stops
    both with the same error (no rank left waiting in a collective)."""
    mine, theirs = _two_ranks(25)
    assert len(mine) == len(theirs) == 1  # one mini-batch each
    assert [len(m) for m in mine[0]] == [2, 2, 1, 1, 1, 1] and len(theirs[0]) == 6
    assert sorted(i for m in mine[0] for i in m) == list(range(8))
    rank1 = [20, 20, 20, 20, 20, 10, 10, 10]
    assert [sum(rank1[i] for i in m) for m in theirs[0]] == [30, 20, 20, 20, 20, 20]  # 20+10, four 20s, 10+10
    errors = _two_ranks(15)  # rank 1's rows of 20 are over 15; rank 0's are not
    assert errors[0] == errors[1] and errors[0].startswith("grpo.micro_batch_tokens: a row of 20 tokens")
