"""Registry contract tests, run against SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from tests.registry.recording import Recording

from crlab.errors import RegistryError
from crlab.registry import RUN_STATUSES, Registry


@pytest.fixture
def reg(db_url: str):
    with Registry(db_url) as registry:
        yield registry


def test_run_lifecycle_round_trips_every_field(reg: Registry) -> None:
    sweep = reg.create_sweep("crl-ratio", {"grid": {"data.crl_ratio": [0.0, 0.2]}}, "sweeps/crl_ratio.yaml")
    run = reg.create_run(
        "tiny", {"grpo": {"lr": 1e-4}}, sweep_id=sweep.id, cell_key="abc123",
        git_commit="deadbeef", git_dirty=True, packages={"torch": "2.13.0"}, run_dir="/runs/x",
    )  # fmt: skip
    assert run.status == "pending" and run.attempt == 0
    started = reg.start_attempt(run.id, host="node1", pid=4242, job_id="77", wandb_run_id=run.id)
    assert (started.status, started.attempt, started.host, started.pid) == ("running", 1, "node1", 4242)
    assert started.heartbeat_at is not None and started.started_at is not None
    done = reg.finish_run(run.id, "completed")
    assert done.status == "completed" and done.ended_at is not None and done.ended_at.tzinfo is not None
    again = reg.get_run(run.id)
    assert again.config == {"grpo": {"lr": 1e-4}}
    assert (again.git_commit, again.git_dirty, again.packages) == ("deadbeef", True, {"torch": "2.13.0"})
    assert (again.sweep_id, again.cell_key, again.run_dir, again.wandb_run_id) == (
        sweep.id,
        "abc123",
        "/runs/x",
        run.id,
    )


def test_second_attempt_counts_up_and_clears_the_error(reg: Registry) -> None:
    run = reg.create_run("r", {})
    reg.start_attempt(run.id)
    reg.finish_run(run.id, "failed", error="boom")
    assert reg.get_run(run.id).error == "boom"
    second = reg.start_attempt(run.id)
    assert (second.attempt, second.status, second.error, second.ended_at) == (2, "running", None, None)


def test_lookup_by_prefix_and_errors(reg: Registry) -> None:
    a = reg.create_run("a", {}, run_id="aa11")
    reg.create_run("b", {}, run_id="aa22")
    assert reg.get_run("aa1").id == a.id  # unique prefix
    with pytest.raises(RegistryError, match="ambiguous"):
        reg.get_run("aa")  # two runs share it
    with pytest.raises(RegistryError, match="no run"):
        reg.get_run("zz")  # none
    with pytest.raises(RegistryError, match="unknown run status"):
        reg.update_run(a.id, status="exploded")
    with pytest.raises(RegistryError, match="unknown run field"):
        reg.update_run(a.id, colour="red")


def test_list_filters_by_sweep_and_status(reg: Registry) -> None:
    s1, s2 = reg.create_sweep("one", {}), reg.create_sweep("two", {})
    r1 = reg.create_run("x", {}, sweep_id=s1.id, cell_key="k1")
    reg.create_run("y", {}, sweep_id=s2.id, cell_key="k1")
    reg.finish_run(r1.id, "completed")
    assert [r.id for r in reg.list_runs(sweep_id=s1.id)] == [r1.id]
    assert [r.id for r in reg.list_runs(status="completed")] == [r1.id]
    assert len(reg.list_runs()) == 2 and len(reg.list_runs(limit=1)) == 1
    assert reg.get_sweep("two").id == s2.id and reg.get_sweep(s1.id).name == "one"
    assert set(RUN_STATUSES) == {"pending", "running", "completed", "failed", "preempted", "killed", "pruned"}


def test_cell_key_is_unique_within_a_sweep(reg: Registry) -> None:
    from sqlalchemy.exc import IntegrityError

    sweep = reg.create_sweep("s", {})
    reg.create_run("x", {}, sweep_id=sweep.id, cell_key="same")
    with pytest.raises(IntegrityError):
        reg.create_run("y", {}, sweep_id=sweep.id, cell_key="same")
    assert len(reg.list_runs(sweep_id=sweep.id)) == 1  # the failed insert left nothing behind


def test_metrics_events_checkpoints(reg: Registry) -> None:
    run = reg.create_run("m", {})
    with Recording(reg, run.id) as rec:
        rec.metrics(1, {"reward/rl_mean": 0.25, "loss": 1.5})
        rec.metrics(2, {"reward/rl_mean": 0.5})
        assert reg.metric_count(run.id) == 3
        assert reg.latest_metrics(run.id) == {"reward/rl_mean": (2, 0.5), "loss": (1, 1.5)}
        assert [m.value for m in reg.metrics(run.id, keys=["reward/rl_mean"])] == [0.25, 0.5]
        rec.event("phase_switch", {"from": "16k", "to": "32k", "means": [0.5, 0.51]}, step=2)
        reg.log_event(run.id, "resume", {"from_step": 2})  # the one event written outside a run's journal
        assert [e.kind for e in reg.events(run.id)] == ["phase_switch", "resume"]
        assert reg.events(run.id, kind="phase_switch")[0].payload["means"] == [0.5, 0.51]
        rec.checkpoint(5, "/ck/5", kept=["/ck/5"], best=None)
        rec.checkpoint(10, "/ck/10", kept=["/ck/5", "/ck/10"], best=None)
        complete = reg.checkpoints(run.id, complete_only=True)
        assert [(c.step, c.complete) for c in complete] == [(5, True), (10, True)]
        rec.checkpoint(15, "/ck/15", kept=["/ck/10", "/ck/15"], best=None)  # step 5 pruned on disk
        assert [c.step for c in reg.checkpoints(run.id)] == [10, 15]


def test_exactly_one_best_checkpoint_per_run(reg: Registry) -> None:
    run, other = reg.create_run("best", {}), reg.create_run("other", {})
    paths = [f"/ck/{step}" for step in (20, 40, 60)]
    with Recording(reg, run.id) as rec, Recording(reg, other.id) as rec_other:
        for step, path in zip((20, 40, 60), paths, strict=True):
            rec.checkpoint(step, path, kept=paths, best=None)
        rec_other.checkpoint(20, "/o/20", kept=["/o/20"], best=None)
        assert reg.best_checkpoint(run.id) is None and not any(c.best for c in reg.checkpoints(run.id))
        rec.best(20)
        assert reg.best_checkpoint(run.id).step == 20
        rec_other.best(20)  # another run's best is its own
        rec.best(40)
        assert [(c.step, c.best) for c in reg.checkpoints(run.id)] == [(20, False), (40, True), (60, False)]
        assert reg.best_checkpoint(run.id).step == 40 and reg.best_checkpoint(other.id).step == 20
        rec.checkpoint(40, "/ck/40b", kept=["/ck/20", "/ck/40b", "/ck/60"], best=None)  # saved again
        assert reg.best_checkpoint(run.id).step == 40  # still the best
        assert reg.best_checkpoint(run.id).path == "/ck/40b"
        rec.best(40)  # idempotent
        assert reg.best_checkpoint(run.id).step == 40
        rec.best(50)  # no checkpoint there (it was pruned before the evaluation ended): changes nothing
        assert reg.best_checkpoint(run.id).step == 40
        rec.checkpoint(80, "/ck/80", kept=["/ck/40b", "/ck/80"], best=80)  # a checkpoint that is the best
        assert [(c.step, c.best) for c in reg.checkpoints(run.id)] == [(40, False), (80, True)]


def test_the_database_refuses_a_second_best_checkpoint(reg: Registry) -> None:
    """One best per run is the schema's rule too (a partial unique index), not only the journal's."""
    from sqlalchemy import update
    from sqlalchemy.exc import IntegrityError

    from crlab.registry import db
    from crlab.registry.models import CheckpointRow

    run = reg.create_run("best", {})
    with Recording(reg, run.id) as rec:
        for step in (1, 2):
            rec.checkpoint(step, f"/ck/{step}", kept=["/ck/1", "/ck/2"], best=None)
        rec.best(1)
    with pytest.raises(IntegrityError), db.session_scope(reg.engine) as s:
        s.execute(update(CheckpointRow).where(CheckpointRow.step == 2).values(best=True))


def test_foreign_keys_are_enforced(reg: Registry) -> None:
    """Foreign keys hold on both backends: an event for a run that does not exist is refused."""
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        reg.log_event("no-such-run", "resume", {"from_step": 1})


def test_sweep_names_are_unique_and_get_or_create_is_safe(reg: Registry) -> None:
    from sqlalchemy.exc import IntegrityError

    first = reg.get_or_create_sweep("crl-ratio", {"grid": {}})
    assert reg.get_or_create_sweep("crl-ratio", {"other": 1}).id == first.id  # the existing one
    with pytest.raises(IntegrityError):
        reg.create_sweep("crl-ratio", {})
    assert [s.id for s in reg.list_sweeps()] == [first.id]


def test_a_resumed_run_has_one_row_per_key_and_step_and_a_right_summary(reg: Registry) -> None:
    run = reg.create_run("resumed", {})
    first = {1: 0.5, 2: 0.9, 3: 0.2, 4: 0.95, 5: 0.1}  # steps 4 and 5 ran after the checkpoint at 3 ...
    with Recording(reg, run.id) as rec:
        for step, value in first.items():
            rec.metrics(step, {"reward/rl_mean": value, "loss": 1.0 / step})
    s = {x.key: x for x in reg.summaries(run.id)}["reward/rl_mean"]
    assert (s.last, s.last_step, s.min, s.min_step, s.max, s.max_step, s.n) == (0.1, 5, 0.1, 5, 0.95, 4, 5)
    replay = {4: 0.4, 5: 0.6, 6: 0.7}  # ... and were lost: the resumed run replays them
    with Recording(reg, run.id) as rec:
        for step, value in replay.items():
            rec.metrics(step, {"reward/rl_mean": value, "loss": 2.0})
    rows = [(m.key, m.step) for m in reg.metrics(run.id)]
    assert sorted(rows) == sorted({(k, s) for k in ("reward/rl_mean", "loss") for s in range(1, 7)})
    values = {m.step: m.value for m in reg.metrics(run.id, keys=["reward/rl_mean"])}
    assert values == {1: 0.5, 2: 0.9, 3: 0.2, 4: 0.4, 5: 0.6, 6: 0.7}
    summary = {x.key: x for x in reg.summaries(run.id)}
    s = summary["reward/rl_mean"]  # 0.95 at step 4 and 0.1 at step 5 were replaced
    assert (s.last, s.last_step, s.min, s.min_step, s.max, s.max_step, s.n) == (0.7, 6, 0.2, 3, 0.9, 2, 6)
    loss = summary["loss"]
    assert (loss.last, loss.min, loss.min_step, loss.max, loss.max_step, loss.n) == (2.0, 1 / 3, 3, 2.0, 4, 6)
    assert (loss.best, s.best, s.best_step) == (1 / 3, 0.9, 2)  # a loss is best at its lowest
    assert reg.latest_metrics(run.id) == {"reward/rl_mean": (6, 0.7), "loss": (6, 2.0)}


def test_summary_ties_keep_the_first_step_and_keys_are_independent(reg: Registry) -> None:
    run = reg.create_run("ties", {})
    with Recording(reg, run.id) as rec:
        for step, value in enumerate([0.5, 0.5, 0.3, 0.3, 0.5], start=1):
            rec.metrics(step, {"a": value})
        rec.metrics(2, {"b": 9.0})  # another key at an earlier step replaces nothing of "a"
    (a, b) = reg.summaries(run.id)
    assert (a.min, a.min_step, a.max, a.max_step, a.last_step, a.n) == (0.3, 3, 0.5, 1, 5, 5)
    assert (b.key, b.last, b.n) == ("b", 9.0, 1)
    assert reg.latest_metrics_of([run.id, "nobody"]) == {run.id: {"a": (5, 0.5), "b": (2, 9.0)}}
