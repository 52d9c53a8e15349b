"""run provenance and reproductions: runs.provenance, runs.reproduces

``provenance`` holds what ``platform reproduce`` compares (crlab.provenance): the git commit, dirty flag
and sha256 of the uncommitted diff, package versions, the sha256 of every data file the config names (or
the generator of a generated source), the seed and the host. Runs made before this revision have none
(NULL): reproducing one of them needs ``--force``. ``reproduces`` is the id of the run a run reproduces
(NULL for every other run). Downgrading drops both columns; the runs stay.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("provenance", sa.JSON(), nullable=True))
    op.add_column("runs", sa.Column("reproduces", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE .. DROP COLUMN (SQLite 3.35+), not a batch copy of the table: dropping the old
    # `runs` table on SQLite would cascade to its metrics, events and checkpoints.
    op.drop_column("runs", "reproduces")
    op.drop_column("runs", "provenance")
