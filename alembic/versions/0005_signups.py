"""signups: sign-ups waiting for their emailed link, tokens kept as hashes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-09 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('signups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('next_path', sa.String(length=2000), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signups')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_signups_token_hash'))
    )
    op.create_index(op.f('ix_signups_email'), 'signups', ['email'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_signups_email'), table_name='signups')
    op.drop_table('signups')
