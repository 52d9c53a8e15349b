"""How the suite is shared out between pytest-xdist workers (`pytest -n 2 --dist loadfile`, as .ci/run runs it).

A worker takes a unit of tests at a time:
- by default a file: its tests run on one worker, one after another, so its module-scoped fixtures
  (sandboxes, a converted model, engines) are made once;
- in a SPLIT file, one test: long real-process tests that share no fixture, which then run on both
  workers at once instead of one after another (a parametrized test's cases stay together);
- TOGETHER files are one unit: the hostile-program checks assert that no process carrying their marker is
  left on the host, so two of those files must not run side by side.
Units are handed out heaviest first (COST: a scheduling hint only), so that no long test starts last while
the other worker sits idle. Tests that must run alone carry the `serial` marker (tests/conftest.py holds
the lock); their units go last, when the other worker's tests are short.
"""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadFileScheduling

SPLIT = {
    "tests/faults/test_registry_outage.py",
    "tests/sweeps/test_kills.py",
    "tests/sweeps/test_failures.py",
    "tests/sweeps/test_runner.py",
    "tests/train/test_loop.py",
    "tests/train/test_disk_full_run.py",
    "tests/train/test_zero3.py",
    "tests/train/test_eval_training.py",
    "tests/train/test_tiny_model.py",
    "tests/sweeps/test_exit_codes.py",
    "tests/data/test_paper_pipeline.py",
}
TOGETHER = {"tests/rewards/test_hostile.py": "hostile", "tests/rewards/test_forgery.py": "hostile"}
# Units known to be long, in rough seconds on a 2-core machine (the build's own record for the rebuild;
# estimates from the steps and ranks each trains for the others); any other unit that holds a `slow` test
# counts SLOW, the rest nothing. Only the order depends on these numbers: refine them from `--durations`.
COST: dict[str, float] = {
    "tests/train/test_tiny_model.py::test_rebuilding_seed_0_gives_the_shipped_bytes": 545,  # its build.json (opt-in)
    "tests/train/test_data_parallel.py": 240,
    "tests/sweeps/test_kills.py::test_a_data_parallel_rank_killed_alone_is_run_again_on_both_ranks": 200,
    "tests/train/test_zero3.py::test_two_rank_zero3_resumes_bitwise": 200,
    "tests/faults/test_registry_outage.py::test_postgres_stopped_at_step_8_costs_the_run_nothing": 95,
    "tests/sweeps/test_exit_codes.py::test_a_cell_out_of_retries_says_retry_failed_which_completes_it": 150,
    "tests/sweeps/test_exit_codes.py::test_a_rerun_adopts_the_cell_of_a_killed_sweep_and_waits_for_it": 120,
    "tests/sweeps/test_search.py": 135,  # 4 trials: 68 CPU-s where 6 took 101
    "tests/faults/test_registry_outage.py::test_an_outage_longer_than_the_grace_period_does_not_make_a_cell_run_twice": 90,
    "tests/train/test_loop.py::test_sigkill_then_resume_is_bitwise_identical": 120,
    "tests/test_json_contract.py": 55,  # 18 commands as processes, two of them generating
}
SLOW = 60.0


def unit(nodeid: str) -> str:
    """The unit of work a test belongs to."""
    path = nodeid.split("::", 1)[0]
    if path in TOGETHER:
        return TOGETHER[path]
    if path in SPLIT:
        return nodeid.split("[", 1)[0]
    return path


def heaviest_first(items: list[pytest.Item]) -> None:
    """Order the collected tests by their unit's cost (a stable sort: a file's tests keep their order)."""
    slow = {unit(item.nodeid) for item in items if item.get_closest_marker("slow")}
    cost = {
        name: COST.get(name, SLOW if name in slow else 0.0) for name in map(unit, (i.nodeid for i in items))
    }
    for item in items:  # last: a `serial` test waits for the other worker's test, which is short by then
        if item.get_closest_marker("serial"):
            cost[unit(item.nodeid)] = -1.0
    items.sort(key=lambda item: -cost[unit(item.nodeid)])


class UnitScheduling(LoadFileScheduling):
    """xdist's loadfile scheduling with the units above, in collection order (heaviest first)."""

    def __init__(self, config: pytest.Config, log=None) -> None:  # noqa: ANN001
        super().__init__(config, log)
        config.option.loadscopereorder = False  # xdist would order units by how many tests they hold

    def _split_scope(self, nodeid: str) -> str:
        return unit(nodeid)
