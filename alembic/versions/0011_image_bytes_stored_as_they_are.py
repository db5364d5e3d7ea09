"""image bytes stored as they are: PostgreSQL no longer tries to compress them

JPEG, HEIF, PNG and WebP bytes are compressed already, but a bytea column's default storage
(EXTENDED) runs pglz over each value before keeping it whole: 150 ms of the database's CPU for
an 8.8 MB camera photo, against 25 ms without (docs/BENCHMARKS.md). Values stored from now on
are kept out of line without that attempt; those already stored stay as they are.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 16:00:00
"""

from __future__ import annotations

from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

IMAGE_COLUMNS = (("photos", "original"), ("photos", "thumbnail"), ("selfies", "image"))


def upgrade() -> None:
    _set_storage("EXTERNAL")


def downgrade() -> None:
    _set_storage("EXTENDED")


def _set_storage(storage: str) -> None:
    # A PostgreSQL setting: SQLite keeps every value as it is given.
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in IMAGE_COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE {storage}")
