""""is this you?" suggestions, new-photo mails, emailed sign-in links

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sign_in_links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_sign_in_links_event_id_events'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sign_in_links_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sign_in_links')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_sign_in_links_token_hash'))
    )
    op.create_index(op.f('ix_sign_in_links_user_id'), 'sign_in_links', ['user_id'], unique=False)

    op.create_table('match_suggestions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('photo_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('face_id', sa.Integer(), nullable=False),
    sa.Column('distance', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_match_suggestions_event_id_events'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['face_id'], ['faces.id'], name=op.f('fk_match_suggestions_face_id_faces'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['photo_id'], ['photos.id'], name=op.f('fk_match_suggestions_photo_id_photos'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_match_suggestions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_match_suggestions')),
    sa.UniqueConstraint('photo_id', 'user_id', name=op.f('uq_match_suggestions_photo_id_user_id'))
    )
    op.create_index('ix_match_suggestions_user_id_event_id', 'match_suggestions', ['user_id', 'event_id'], unique=False)

    # Existing events keep password sign-in only, existing members get no mail they did not ask
    # for, existing matches count as unconfirmed (the rule made them).
    with op.batch_alter_table('events') as batch:
        batch.add_column(sa.Column('email_sign_in', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('event_members') as batch:
        batch.add_column(sa.Column('notify_new_photos', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column('notified_through_match_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('notified_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('face_matches') as batch:
        batch.add_column(sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('face_matches') as batch:
        batch.drop_column('confirmed_at')
    with op.batch_alter_table('event_members') as batch:
        batch.drop_column('notified_at')
        batch.drop_column('notified_through_match_id')
        batch.drop_column('notify_new_photos')
    with op.batch_alter_table('events') as batch:
        batch.drop_column('email_sign_in')
    op.drop_index('ix_match_suggestions_user_id_event_id', table_name='match_suggestions')
    op.drop_table('match_suggestions')
    op.drop_index(op.f('ix_sign_in_links_user_id'), table_name='sign_in_links')
    op.drop_table('sign_in_links')
