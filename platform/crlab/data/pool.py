"""One problem pool, a fixed budget, any CRL ratio (``data.budget: pool``), as the paper's Table 5 holds it.

The pool is ``data.rl_source``: N problems. A cell with ratio r converts round(r·N) of them into critique
tasks, one CRL row per converted problem, and trains on the other N − round(r·N) as code problems, one pass:
every cell of a ratio sweep sees the same N rows, 0 and 1.0 included, and no problem is in both pools.

- **Which problems are converted.** Those that have a CRL row (from ``data.crl_rows``, made by ``platform
  data build-crl`` over the same pool, or built at start-up from the problems' own candidates) are put in a
  seeded order (seed ``POOL_SEED``, not the run's: every seed of a config converts the same problems), and
  the first round(r·N) are converted. So the cells are nested: the problems converted at 0.2 are among those
  converted at 0.5. Fewer eligible problems than round(r·N) is an error naming the count.
- **Which row of a converted problem.** One of its rows (``build-crl --n 4`` gives up to four), drawn with a
  generator seeded by ``POOL_SEED`` and the problem id: the same row in every cell and seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import TypeVar

from crlab.errors import ConfigError

POOL_SEED = 0


class Budget(StrEnum):
    """What a run's data budget counts (``data.budget``): the rows of the RL pool (or the CRL pool's when
    there is none), the pool's N problems however a ratio splits them (this module), or only the RL rows."""

    ROWS = "rows"
    POOL = "pool"
    RL_ROWS = "rl_rows"

Row = TypeVar("Row")


def converted_count(pool_size: int, ratio: float) -> int:
    """How many of the pool's problems a cell converts: round(ratio · N), halves up."""
    return int(ratio * pool_size + 0.5)


def split_pool(
    problem_ids: Sequence[str], crl_rows: Sequence[Row], problem_of: Callable[[Row], str], ratio: float
) -> tuple[list[str], list[Row]]:
    """(the RL problem ids, in pool order; one CRL row per converted problem, in pool order)."""
    pool = list(dict.fromkeys(problem_ids))
    by_problem: dict[str, list[Row]] = {}
    for row in crl_rows:
        by_problem.setdefault(problem_of(row), []).append(row)
    eligible = [pid for pid in pool if pid in by_problem]
    want = converted_count(len(pool), ratio)
    if want > len(eligible):
        raise ConfigError(
            f"data.budget=pool: data.crl_ratio={ratio} converts {want} of the pool's {len(pool)} problems, but "
            f"only {len(eligible)} have a CRL row; build rows for more of them (`platform data build-crl`) "
            "or lower data.crl_ratio"
        )
    order = list(eligible)
    random.Random(f"pool/{POOL_SEED}").shuffle(order)
    converted = set(order[:want])
    rows = [random.Random(f"pool/{POOL_SEED}/{pid}").choice(by_problem[pid]) for pid in pool if pid in converted]
    return [pid for pid in pool if pid not in converted], rows
