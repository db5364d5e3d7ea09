"""joining: an organiser closes joining, and an event's join code may expire

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing events stay open with codes that never expire, as they were: the upgrade shuts
    # no one out; an organiser who wants joining closed says so.
    with op.batch_alter_table('events') as batch:
        batch.add_column(sa.Column('joining', sa.Enum('open', 'closed', name='joining', native_enum=False, length=32), server_default='open', nullable=False))
        batch.add_column(sa.Column('code_expires_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('events') as batch:
        batch.drop_column('code_expires_at')
        batch.drop_column('joining')
