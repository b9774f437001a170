"""playbook steps: each step a row, due at an instant, leased by the executor that runs it

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 02:00:00

Steps used to be Prefect flow runs (one Python process each); they are now executed by
long-lived executors, and this table is both their durable wait and their work queue.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "playbook_steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=320), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("playbook", sa.String(length=64), nullable=False),
        sa.Column("signal_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("run_name", sa.String(length=256), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("task_run_id", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("last_error", sa.String(length=512), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_playbook_steps")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_playbook_steps_idempotency_key")),
    )
    with op.batch_alter_table("playbook_steps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_playbook_steps_account_id"), ["account_id"])
        batch_op.create_index(batch_op.f("ix_playbook_steps_signal_id"), ["signal_id"])
        batch_op.create_index("ix_playbook_steps_status_due_at", ["status", "due_at"])


def downgrade() -> None:
    op.drop_table("playbook_steps")
