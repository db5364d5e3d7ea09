"""The database schema: Alembic owns it, from the scripts in `alembic/versions`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from findme.settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"

# Alembic is imported where it is used: it takes a quarter of a second to load, which every
# `findme` command (watch, create-user…) would otherwise pay.


def alembic_config(settings: Settings | None = None) -> Config:
    """FindMe's Alembic configuration, aimed at the settings' database when given."""
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    if settings is not None:
        config.attributes["database_url"] = settings.database_url
    return config


def migrate(settings: Settings) -> None:
    """Bring the schema up to date."""
    from alembic import command

    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), "head")


def head_revision() -> str | None:
    """The revision this version of FindMe needs: the newest migration script's."""
    from alembic.script import ScriptDirectory

    head: str | None = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return head
