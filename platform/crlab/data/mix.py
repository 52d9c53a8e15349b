"""The RL/CRL mix: which prompts of each source go into each training step.

Each step takes ``n_crl_step = floor(crl_ratio * prompts_per_step + 0.5)`` CRL rows (round half up, so
0.2 * 128 = 25.6 -> 26 and 0.5 * 5 = 2.5 -> 3) and ``prompts_per_step - n_crl_step`` RL rows. Each source
is drawn without replacement within an epoch, independently of the other: epoch ``e`` of source ``s``
is the permutation drawn by ``numpy.random.default_rng([seed, s, e])``, so the epoch counter and the
position inside it are all the state needed to resume the identical sequence. When a step needs more
rows than remain in the current epoch it finishes the epoch and continues in the next one.

``mix="shuffled"`` (``data.crl_mix``; the authors' run, whose loader shuffles the RL and CRL rows together)
draws each step's *share* at random instead: a pass of ``S = ceil(n / prompts_per_step)`` steps (``n``: the
RL rows, or the CRL rows without any) has ``L = S * prompts_per_step`` slots, of which exactly
``round(crl_ratio * L)`` are CRL, in an order drawn by ``numpy.random.default_rng([seed, 2, pass])``; step
``i`` of the pass takes the kinds of slots ``i*pps .. (i+1)*pps``, as a batch of a shuffled union would
(hypergeometric counts, the ratio exact over the pass). The rows themselves come from the same two streams.
The step count is all the state it needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

RL, CRL = 0, 1


class CrlMix(StrEnum):
    """How RL and CRL rows share the steps (``data.crl_mix``; see the module docstring)."""

    EXACT = "exact"  # the ratio's share of CRL rows in every step
    SHUFFLED = "shuffled"  # both kinds shuffled together, as the authors' loader does


MIXES = tuple(m.value for m in CrlMix)


@dataclass
class MixBatch:
    """Indices into the RL rows and the CRL rows for one step, and the epoch each part started in."""

    rl: list[int]
    crl: list[int]
    epoch_rl: int
    epoch_crl: int


class _Stream:
    """Indices 0..n-1 drawn without replacement, one fresh seeded permutation per epoch."""

    def __init__(self, n: int, seed: int, source: int) -> None:
        self.n, self.seed, self.source = n, seed, source
        self.epoch = 0
        self.pos = 0
        self._perm: np.ndarray | None = None

    def _permutation(self) -> np.ndarray:
        if self._perm is None:
            self._perm = np.random.default_rng([self.seed, self.source, self.epoch]).permutation(self.n)
        return self._perm

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            perm = self._permutation()
            chunk = perm[self.pos : self.pos + (k - len(out))]
            out.extend(int(i) for i in chunk)
            self.pos += len(chunk)
            if self.pos >= self.n:  # epoch finished: count it now
                self.epoch += 1
                self.pos = 0
                self._perm = None
        return out

    def state(self) -> dict[str, int]:
        return {"n": self.n, "epoch": self.epoch, "pos": self.pos}

    def load(self, state: Mapping[str, int], name: str) -> None:
        if int(state["n"]) != self.n:
            raise ValueError(f"saved {name} source has {state['n']} rows, this one has {self.n}")
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = None


class MixSampler:
    """Draw each step's RL and CRL row indices (see the module docstring for the exact rule)."""

    def __init__(
        self,
        n_rl: int,
        n_crl: int,
        prompts_per_step: int,
        crl_ratio: float,
        seed: int,
        mix: str = CrlMix.EXACT,
    ) -> None:
        if mix not in MIXES:
            raise ValueError(f"data.crl_mix must be one of {', '.join(MIXES)}, got {mix!r}")
        if not 0.0 <= crl_ratio <= 1.0:
            raise ValueError(f"data.crl_ratio must be in [0, 1], got {crl_ratio}")
        if prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1, got {prompts_per_step}")
        self.crl_per_step = int(math.floor(crl_ratio * prompts_per_step + 0.5))
        self.rl_per_step = prompts_per_step - self.crl_per_step
        self.mix = CrlMix(mix).value  # (a plain string in the state dict)
        shuffled = mix == CrlMix.SHUFFLED  # any step may then draw either kind
        crl_step = f"{self.crl_per_step} CRL rows per step" if not shuffled else "CRL rows"
        rl_step = f"{self.rl_per_step} RL rows per step" if not shuffled else "RL rows"
        if (crl_ratio > 0 if shuffled else self.crl_per_step > 0) and n_crl < 1:
            raise ValueError(
                f"data.crl_ratio={crl_ratio} asks for {crl_step} but there are no "
                "CRL rows to draw from: provide CRL rows or set data.crl_ratio=0"
            )
        if (crl_ratio < 1 if shuffled else self.rl_per_step > 0) and n_rl < 1:
            raise ValueError(
                f"data.crl_ratio={crl_ratio} leaves {rl_step} but there are no RL "
                "rows: give RL problems or set data.crl_ratio=1"
            )
        self.n_rl, self.n_crl = n_rl, n_crl
        self.prompts_per_step, self.crl_ratio, self.seed = prompts_per_step, crl_ratio, seed
        self.steps = 0
        self._rl = _Stream(n_rl, seed, RL)
        self._crl = _Stream(n_crl, seed, CRL)

    @property
    def epochs_completed(self) -> int:
        """Full passes over the RL rows (over the CRL rows when the mix has no RL share)."""
        return self._rl.epoch if self.rl_per_step > 0 else self._crl.epoch

    def _crl_count(self) -> int:
        """How many of this step's rows are CRL."""
        if self.mix == CrlMix.EXACT:
            return self.crl_per_step
        pps = self.prompts_per_step
        per_pass = max(1, math.ceil((self.n_rl or self.n_crl) / pps))
        length = per_pass * pps
        n_pass, i = divmod(self.steps, per_pass)
        kinds = np.zeros(length, dtype=np.int8)
        kinds[: int(math.floor(self.crl_ratio * length + 0.5))] = CRL
        kinds = np.random.default_rng([self.seed, 2, n_pass]).permutation(kinds)
        return int(kinds[i * pps : (i + 1) * pps].sum())

    def next_batch(self) -> MixBatch:
        epoch_rl, epoch_crl = self._rl.epoch, self._crl.epoch
        n_crl = self._crl_count()
        batch = MixBatch(
            rl=self._rl.take(self.prompts_per_step - n_crl),
            crl=self._crl.take(n_crl),
            epoch_rl=epoch_rl,
            epoch_crl=epoch_crl,
        )
        self.steps += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: settings, step count, and each source's epoch and position."""
        return {
            "seed": self.seed,
            "prompts_per_step": self.prompts_per_step,
            "crl_ratio": self.crl_ratio,
            "mix": self.mix,
            "steps": self.steps,
            "rl": self._rl.state(),
            "crl": self._crl.state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the settings and source sizes must be the saved ones."""
        for key in ("seed", "prompts_per_step", "crl_ratio", "mix"):
            if state.get(key, CrlMix.EXACT) != getattr(self, key):  # checkpoints before data.crl_mix: exact
                raise ValueError(
                    f"mix sampler {key} differs from the checkpoint: saved {state[key]}, now {getattr(self, key)}"
                )
        self._rl.load(state["rl"], "RL")
        self._crl.load(state["crl"], "CRL")
        self.steps = int(state["steps"])
