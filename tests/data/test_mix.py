"""The RL/CRL mix sampler: per-step counts, epochs without repeats, resume."""

import json

import pytest

from crlab.data.mix import MixSampler

COUNT_CASES = [
    # (crl_ratio, prompts_per_step) -> CRL rows per step, round half up
    (0.2, 128, 26),  # 25.6 -> 26 (the paper's setting)
    (0.2, 10, 2),  # 2.0
    (0.5, 5, 3),  # 2.5 -> 3 (half up, not banker's 2)
    (0.25, 6, 2),  # 1.5 -> 2
    (0.0, 8, 0),  # ratio 0: all RL
    (1.0, 8, 8),  # ratio 1: all CRL
    (0.05, 8, 0),  # 0.4 -> 0
]


@pytest.mark.parametrize(("ratio", "pps", "n_crl"), COUNT_CASES)
def test_counts_per_step(ratio, pps, n_crl):
    sampler = MixSampler(n_rl=50, n_crl=30, prompts_per_step=pps, crl_ratio=ratio, seed=1)
    for _ in range(7):
        batch = sampler.next_batch()
        assert len(batch.crl) == n_crl and len(batch.rl) == pps - n_crl


def test_no_repeats_within_an_epoch_and_epoch_counters():
    # 20 RL rows, 4 per step: 5 steps are exactly one epoch, a permutation of 0..19
    sampler = MixSampler(n_rl=20, n_crl=6, prompts_per_step=5, crl_ratio=0.2, seed=3)
    epoch0 = [sampler.next_batch() for _ in range(5)]
    rl = [i for b in epoch0 for i in b.rl]
    assert sorted(rl) == list(range(20))
    assert sampler.epochs_completed == 1 and all(b.epoch_rl == 0 for b in epoch0)
    # CRL: 6 rows, 1 per step: the first 6 draws are a permutation; epoch 2 is a different permutation
    crl = [i for b in epoch0 for i in b.crl] + [sampler.next_batch().crl[0] for _ in range(7)]
    assert sorted(crl[:6]) == list(range(6)) and sorted(crl[6:12]) == list(range(6))
    rl_epoch1 = [i for _ in range(4) for i in sampler.next_batch().rl]
    assert rl_epoch1 != rl[: len(rl_epoch1)]


def test_steps_larger_than_a_source_wrap_into_the_next_epoch():
    # 3 RL rows, 8 per step: one step covers epochs 0, 1 and 2/3 of epoch 2
    sampler = MixSampler(n_rl=3, n_crl=0, prompts_per_step=8, crl_ratio=0.0, seed=0)
    batch = sampler.next_batch()
    assert sorted(batch.rl[:3]) == [0, 1, 2] and sorted(batch.rl[3:6]) == [0, 1, 2]
    assert sampler.epochs_completed == 2 and batch.crl == []


def test_ratio_one_counts_crl_epochs():
    sampler = MixSampler(n_rl=0, n_crl=4, prompts_per_step=2, crl_ratio=1.0, seed=0)
    sampler.next_batch(), sampler.next_batch()
    assert sampler.epochs_completed == 1


def test_resume_gives_the_identical_continuation():
    a = MixSampler(n_rl=17, n_crl=5, prompts_per_step=6, crl_ratio=0.3, seed=7)
    for _ in range(9):
        a.next_batch()
    b = MixSampler(n_rl=17, n_crl=5, prompts_per_step=6, crl_ratio=0.3, seed=7)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert [a.next_batch() for _ in range(12)] == [b.next_batch() for _ in range(12)]
    assert a.state_dict() == b.state_dict()
    with pytest.raises(ValueError, match="seed differs"):
        MixSampler(n_rl=17, n_crl=5, prompts_per_step=6, crl_ratio=0.3, seed=8).load_state_dict(
            a.state_dict()
        )


def test_same_seed_same_sequence_other_seed_differs():
    def draws(seed):
        sampler = MixSampler(n_rl=30, n_crl=10, prompts_per_step=5, crl_ratio=0.4, seed=seed)
        return [sampler.next_batch() for _ in range(6)]

    assert draws(0) == draws(0) and draws(0) != draws(1)


BAD_CASES = [
    # ratio outside [0, 1]
    (dict(n_rl=5, n_crl=5, crl_ratio=1.5), "data.crl_ratio must be in"),
    (dict(n_rl=5, n_crl=5, crl_ratio=-0.1), "data.crl_ratio must be in"),
    # a CRL share with no CRL rows
    (dict(n_rl=5, n_crl=0, crl_ratio=0.5), "data.crl_ratio=0.5 asks for 2 CRL rows"),
    # an RL share with no RL rows
    (dict(n_rl=0, n_crl=5, crl_ratio=0.5), "data.crl_ratio=0.5 leaves 2 RL rows"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_CASES)
def test_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixSampler(prompts_per_step=4, seed=0, **kwargs)


def test_zero_ratio_needs_no_crl_rows():
    assert MixSampler(n_rl=5, n_crl=0, prompts_per_step=4, crl_ratio=0.0, seed=0).next_batch().crl == []


def test_shuffled_mix_draws_a_random_share_each_step_and_the_exact_ratio_over_a_pass():
    """64 RL rows, 8 a step: a pass of 8 steps, 64 slots, 16 of them CRL (ratio 0.25), in a seeded order."""
    sampler = MixSampler(n_rl=64, n_crl=40, prompts_per_step=8, crl_ratio=0.25, seed=4, mix="shuffled")
    counts = [len(sampler.next_batch().crl) for _ in range(8)]
    assert sum(counts) == 16 and len(set(counts)) > 1  # the ratio over the pass; not 2 every step
    again = MixSampler(n_rl=64, n_crl=40, prompts_per_step=8, crl_ratio=0.25, seed=4, mix="shuffled")
    assert [len(again.next_batch().crl) for _ in range(8)] == counts  # seeded
    state = sampler.state_dict()
    expected = [sampler.next_batch() for _ in range(5)]  # into the next pass
    resumed = MixSampler(n_rl=64, n_crl=40, prompts_per_step=8, crl_ratio=0.25, seed=4, mix="shuffled")
    resumed.load_state_dict(state)
    assert [resumed.next_batch() for _ in range(5)] == expected
    assert all(len(b.rl) + len(b.crl) == 8 for b in expected)
    with pytest.raises(ValueError, match="mix"):
        MixSampler(n_rl=64, n_crl=40, prompts_per_step=8, crl_ratio=0.25, seed=4).load_state_dict(state)


def test_shuffled_mix_at_the_ends_and_its_checks():
    only_rl = MixSampler(n_rl=8, n_crl=0, prompts_per_step=4, crl_ratio=0.0, seed=0, mix="shuffled")
    only_crl = MixSampler(n_rl=0, n_crl=8, prompts_per_step=4, crl_ratio=1.0, seed=0, mix="shuffled")
    assert [len(only_rl.next_batch().crl) for _ in range(3)] == [0, 0, 0]
    assert [len(only_crl.next_batch().crl) for _ in range(3)] == [4, 4, 4]
    with pytest.raises(ValueError, match="asks for CRL rows but there are no CRL rows"):
        MixSampler(n_rl=8, n_crl=0, prompts_per_step=4, crl_ratio=0.1, seed=0, mix="shuffled")
    with pytest.raises(ValueError, match="data.crl_mix"):
        MixSampler(n_rl=8, n_crl=0, prompts_per_step=4, crl_ratio=0.0, seed=0, mix="random")
