"""the best checkpoint of a run: checkpoints.best, at most one per run

Training evaluates on held-out problems (``eval`` in the config) and flags the checkpoint whose
``eval.select`` metric is best. Checkpoints written before this revision had no evaluation: they all get
``best = false``, and a run without a best checkpoint simply shows none. A partial unique index (on
``run_id`` where ``best``, the same SQL on SQLite and PostgreSQL) keeps it to one per run. Downgrading
drops the index and the column; the checkpoint rows stay.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("best", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index(
        "uq_checkpoints_run_best", "checkpoints", ["run_id"], unique=True,
        sqlite_where=sa.text("best"), postgresql_where=sa.text("best"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("uq_checkpoints_run_best", table_name="checkpoints")
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_column("best")
