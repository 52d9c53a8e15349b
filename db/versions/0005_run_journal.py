"""run journals: runs.journal_seq

A run writes its metrics, events, checkpoints and status to a journal in its folder first and sends them to
the registry in the background (crlab.registry.journal). ``journal_seq`` is the number of the last journal
record applied to the registry, moved on in the same transaction as the records it covers, so a journal
replayed any number of times is applied exactly once. Existing runs start at 0 (they have no journal).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("journal_seq", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    # Plain ALTER TABLE .. DROP COLUMN (SQLite 3.35+): a batch copy of `runs` would cascade on SQLite.
    op.drop_column("runs", "journal_seq")
