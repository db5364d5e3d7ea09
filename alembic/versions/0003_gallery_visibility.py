"""gallery visibility: an event's attendees see their own photos unless its organiser opens all

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09 10:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing events get "own" from the server default: nobody's photos are opened to others
    # by the upgrade; an organiser who wants every photo shared says so.
    with op.batch_alter_table('events') as batch:
        batch.add_column(sa.Column('gallery', sa.Enum('own', 'all', name='gallery', native_enum=False, length=32), server_default='own', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('events') as batch:
        batch.drop_column('gallery')
