"""several selfies per person: a selfies table instead of one selfie on users

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 13:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('selfies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('image', sa.LargeBinary(), nullable=True),
    sa.Column('descriptor', sa.LargeBinary(), nullable=False),
    sa.Column('box', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_selfies_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_selfies'))
    )
    op.create_index(op.f('ix_selfies_user_id'), 'selfies', ['user_id'], unique=False)
    op.execute(
        "INSERT INTO selfies (user_id, image, descriptor, created_at) "
        "SELECT id, selfie, selfie_descriptor, COALESCE(selfie_updated_at, created_at) "
        "FROM users WHERE selfie_descriptor IS NOT NULL"
    )
    op.execute("UPDATE users SET selfie_updated_at = NULL WHERE selfie_descriptor IS NULL")
    with op.batch_alter_table('users') as batch:
        batch.drop_column('selfie')
        batch.drop_column('selfie_descriptor')
    # The cloud face ids of all a member's selfies, space-separated.
    with op.batch_alter_table('event_members') as batch:
        batch.alter_column('cloud_face_id', type_=sa.String(length=120), existing_type=sa.String(length=64))


def downgrade() -> None:
    with op.batch_alter_table('event_members') as batch:
        batch.alter_column('cloud_face_id', type_=sa.String(length=64), existing_type=sa.String(length=120))
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('selfie', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('selfie_descriptor', sa.LargeBinary(), nullable=True))
    # The newest selfie of each person goes back on their row; the others are lost.
    op.execute(
        "UPDATE users SET selfie = (SELECT image FROM selfies WHERE selfies.user_id = users.id "
        "ORDER BY selfies.id DESC LIMIT 1), selfie_descriptor = (SELECT descriptor FROM selfies "
        "WHERE selfies.user_id = users.id ORDER BY selfies.id DESC LIMIT 1)"
    )
    op.drop_index(op.f('ix_selfies_user_id'), table_name='selfies')
    op.drop_table('selfies')
