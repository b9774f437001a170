"""delivery retries: attempts, next attempt and last error of an action

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:10:00

A message whose delivery failed for a transient reason stays `retrying` until a scheduled
retry run sends it or the attempt limit is reached; these columns say where it stands.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("last_error", sa.String(length=512), nullable=True))
        # The reconciler and `laer actions retry` look actions up by status.
        batch_op.create_index(batch_op.f("ix_actions_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_actions_status"))
        batch_op.drop_column("last_error")
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("attempts")
