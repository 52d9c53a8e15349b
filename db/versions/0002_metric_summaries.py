"""metric summaries; one metric row per (run, key, step); run configs as JSONB on PostgreSQL

Registries written before this revision may hold two rows of the same (run, key, step): a resumed run
replayed the steps after its checkpoint and logged them again. The newest row of each (the highest id) is
kept, the others are deleted, and the (run, key, step) index becomes unique. ``metric_summaries`` is then
created and filled from the metric rows that remain (window functions: the same SQL on SQLite and
PostgreSQL). On PostgreSQL, ``runs.config`` becomes JSONB, which queries read without parsing the text of
every config again, compressed with lz4 where the server supports it (SQLite keeps its JSON text). Runs
get an index on their creation time, the order in which lists show them. Downgrading drops the summaries, makes the index
non-unique and configs JSON again; deleted duplicates stay deleted.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DEDUPE = """
DELETE FROM metrics WHERE EXISTS (
    SELECT 1 FROM metrics AS newer
    WHERE newer.run_id = metrics.run_id AND newer.key = metrics.key AND newer.step = metrics.step
      AND newer.id > metrics.id
)
"""

FILL = """
INSERT INTO metric_summaries (run_id, key, last, last_step, min, min_step, max, max_step, n)
SELECT run_id, key,
       MAX(CASE WHEN r_last = 1 THEN value END), MAX(CASE WHEN r_last = 1 THEN step END),
       MIN(value), MAX(CASE WHEN r_min = 1 THEN step END),
       MAX(value), MAX(CASE WHEN r_max = 1 THEN step END),
       COUNT(*)
FROM (
    SELECT run_id, key, step, value,
           ROW_NUMBER() OVER (PARTITION BY run_id, key ORDER BY step DESC, id DESC) AS r_last,
           ROW_NUMBER() OVER (PARTITION BY run_id, key ORDER BY value ASC, step ASC) AS r_min,
           ROW_NUMBER() OVER (PARTITION BY run_id, key ORDER BY value DESC, step ASC) AS r_max
    FROM metrics
) AS ranked
GROUP BY run_id, key
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _config_as_jsonb()
    op.execute(DEDUPE)
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_metrics_run_key_step")
        batch_op.create_index("ix_metrics_run_key_step", ["run_id", "key", "step"], unique=True)

    op.create_table(
        "metric_summaries",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("last", sa.Float(), nullable=False),
        sa.Column("last_step", sa.Integer(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("min_step", sa.Integer(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.Column("max_step", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "key"),
    )
    with op.batch_alter_table("metric_summaries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_metric_summaries_key"), ["key"], unique=False)
    op.execute(FILL)
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_created_at"), ["created_at"], unique=False)


def _config_as_jsonb() -> None:
    """runs.config as JSONB, compressed with lz4 where the server has it (a config of about 2 kB is
    compressed; lz4 reads back several times faster than the default pglz, and queries read it per row)."""
    bind = op.get_bind()
    lz4 = bind.exec_driver_sql("SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' "
                               "AND 'lz4' = ANY(enumvals)").scalar()  # fmt: skip
    if lz4:
        op.execute("SET LOCAL default_toast_compression = 'lz4'")  # for the values rewritten now ...
    op.execute("ALTER TABLE runs ALTER COLUMN config TYPE JSONB USING config::jsonb")
    if lz4:
        op.execute("ALTER TABLE runs ALTER COLUMN config SET COMPRESSION lz4")  # ... and those written later


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_created_at"))
    with op.batch_alter_table("metric_summaries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_metric_summaries_key"))
    op.drop_table("metric_summaries")
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_metrics_run_key_step")
        batch_op.create_index("ix_metrics_run_key_step", ["run_id", "key", "step"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE runs ALTER COLUMN config TYPE JSON USING config::json")
