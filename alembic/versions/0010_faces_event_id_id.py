"""faces by event and id: the worker's face index checks an event's faces from the index alone

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Leads with event_id: it serves every query the single-column index did.
    op.create_index('ix_faces_event_id_id', 'faces', ['event_id', 'id'], unique=False)
    op.drop_index(op.f('ix_faces_event_id'), table_name='faces')


def downgrade() -> None:
    op.create_index(op.f('ix_faces_event_id'), 'faces', ['event_id'], unique=False)
    op.drop_index('ix_faces_event_id_id', table_name='faces')
