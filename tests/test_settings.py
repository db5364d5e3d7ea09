"""Settings: environment names, old aliases, and secrets."""

from __future__ import annotations

import pytest

from findme.errors import ConfigurationError
from findme.settings import Settings


def test_environment_and_legacy_aliases(tmp_path) -> None:
    settings = Settings.from_environ(
        {
            "FINDME_DATA_DIR": str(tmp_path),
            "PHOTO_QUEUE_WORKERS": "7",
            "AWS_CONCURRENT_REQUESTS": "4",
            "DB_POOL_SIZE": "12",
            "DB_MAX_OVERFLOW": "3",
            "DB_POOL_RECYCLE": "99",
            "DB_POOL_TIMEOUT": "5",
            "FINDME_PORT": "9001",
        },
        env_file=tmp_path / ".env",
    )
    assert (settings.workers, settings.aws_concurrency) == (7, 4)
    assert (settings.db_pool_size, settings.db_max_overflow) == (12, 3)
    assert (settings.db_pool_recycle_s, settings.db_pool_timeout_s) == (99, 5)
    assert settings.port == 9001
    # The new name wins over the old one.
    both = Settings.from_environ(
        {"FINDME_DATA_DIR": str(tmp_path), "FINDME_WORKERS": "2", "PHOTO_QUEUE_WORKERS": "9"}
    )
    assert both.workers == 2


def test_dotenv_is_read_but_the_environment_wins(tmp_path) -> None:
    (tmp_path / ".env").write_text("FINDME_PORT=8100\nFINDME_HOST=0.0.0.0\n# comment\n")
    settings = Settings.from_environ(
        {"FINDME_DATA_DIR": str(tmp_path), "FINDME_PORT": "8200"}, env_file=tmp_path / ".env"
    )
    assert (settings.host, settings.port) == ("0.0.0.0", 8200)


def test_development_keeps_a_generated_secret(tmp_path) -> None:
    first = Settings.from_environ({"FINDME_DATA_DIR": str(tmp_path)})
    second = Settings.from_environ({"FINDME_DATA_DIR": str(tmp_path)})
    assert len(first.secret_key) > 40
    assert first.secret_key == second.secret_key
    assert first.secret_key not in repr(first)


@pytest.mark.parametrize("secret", [None, "change-me", "secret", "short"])
def test_production_refuses_missing_or_placeholder_secret(tmp_path, secret) -> None:
    environ = {"FINDME_DATA_DIR": str(tmp_path), "FINDME_DEVELOPMENT": "false"}
    if secret is not None:
        environ["FINDME_SECRET_KEY"] = secret
    with pytest.raises(ConfigurationError, match="FINDME_SECRET_KEY"):
        Settings.from_environ(environ)
    ok = Settings.from_environ(environ | {"FINDME_SECRET_KEY": "x" * 48})
    assert ok.secret_key == "x" * 48


@pytest.mark.parametrize(
    ("name", "value"),
    [("FINDME_PORT", "http"), ("FINDME_WORKERS", "0"), ("FINDME_RECOGNIZER", "magic")],
)
def test_bad_values_say_what_is_wrong(tmp_path, name, value) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_environ({"FINDME_DATA_DIR": str(tmp_path), name: value})
