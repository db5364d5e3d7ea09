"""The schema: migrating an empty PostgreSQL database, and the revision this version needs."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from findme.db import Base
from findme.migrations import ALEMBIC_INI, head_revision, migrate
from findme.settings import Settings
from tests.conftest import RUN_ID, _admin_connection, pg_url


@pytest.fixture
async def empty_database_url() -> AsyncIterator[str]:
    name = f"findme_empty_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    connection = await _admin_connection()
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        yield pg_url(name)
    finally:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


def test_the_head_is_the_newest_script() -> None:
    """One head, read from the scripts themselves: no branch is left unmerged."""
    versions = ALEMBIC_INI.parent / "alembic" / "versions"
    revisions: dict[str, str | None] = {}
    for script in versions.glob("*.py"):
        source = script.read_text()
        revision = re.search(r"^revision = ['\"](\w+)['\"]", source, re.MULTILINE)
        down = re.search(r"^down_revision = (?:['\"](\w+)['\"]|None)", source, re.MULTILINE)
        assert revision and down, script
        revisions[revision[1]] = down[1]
    heads = set(revisions) - set(revisions.values())
    assert heads == {head_revision()}


async def test_an_empty_database_is_migrated_to_the_models(empty_database_url, tmp_path) -> None:
    settings = Settings.from_environ(
        {"FINDME_DATABASE_URL": empty_database_url, "FINDME_DATA_DIR": str(Path(tmp_path))}
    )
    await asyncio.to_thread(migrate, settings)
    await asyncio.to_thread(migrate, settings)  # a second run has nothing to do
    engine = create_async_engine(empty_database_url)
    try:
        async with engine.connect() as connection:
            revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            differences = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()
    assert revision == head_revision()
    assert differences == []


async def test_image_bytes_are_stored_without_a_compression_attempt(
    empty_database_url, tmp_path
) -> None:
    """Photos and selfies are compressed already: PostgreSQL keeps them as they are (storage
    EXTERNAL), rather than spending its CPU on pglz for nothing at every upload."""
    settings = Settings.from_environ(
        {"FINDME_DATABASE_URL": empty_database_url, "FINDME_DATA_DIR": str(Path(tmp_path))}
    )
    await asyncio.to_thread(migrate, settings)
    engine = create_async_engine(empty_database_url)
    try:
        async with engine.connect() as connection:
            storage = dict(
                (
                    await connection.execute(
                        text(
                            "SELECT attrelid::regclass::text || '.' || attname, attstorage::text "
                            "FROM pg_attribute WHERE attrelid IN ('photos'::regclass, "
                            "'selfies'::regclass) AND atttypid = 'bytea'::regtype"
                        )
                    )
                ).all()
            )
    finally:
        await engine.dispose()
    assert storage == {
        "photos.original": "e",
        "photos.thumbnail": "e",
        "selfies.image": "e",
        "selfies.descriptor": "x",
    }


async def test_a_selfie_on_file_before_several_were_kept_survives_the_upgrade(
    empty_database_url, tmp_path
) -> None:
    from alembic import command
    from findme.migrations import alembic_config

    settings = Settings.from_environ(
        {"FINDME_DATABASE_URL": empty_database_url, "FINDME_DATA_DIR": str(Path(tmp_path))}
    )
    await asyncio.to_thread(command.upgrade, alembic_config(settings), "0001")
    engine = create_async_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO users (email, name, password_hash, role, created_at, "
                    "selfie, selfie_descriptor, selfie_updated_at) VALUES "
                    "('a@example.com', 'A', '-', 'attendee', now(), 'jpeg', :d, now()), "
                    "('b@example.com', 'B', '-', 'attendee', now(), NULL, NULL, NULL)"
                ),
                {"d": b"\x01" * 512},
            )
        await asyncio.to_thread(migrate, settings)
        async with engine.connect() as connection:
            selfies = (
                await connection.execute(
                    text(
                        "SELECT u.email, s.image, s.descriptor FROM selfies s "
                        "JOIN users u ON u.id = s.user_id"
                    )
                )
            ).all()
            with_selfie = await connection.scalar(
                text("SELECT count(*) FROM users WHERE selfie_updated_at IS NOT NULL")
            )
    finally:
        await engine.dispose()
    assert [(row.email, bytes(row.image), bytes(row.descriptor)) for row in selfies] == [
        ("a@example.com", b"jpeg", b"\x01" * 512)
    ]
    assert with_selfie == 1
