"""Settings: environment names, old aliases, and secrets."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from findme.errors import ConfigurationError
from findme.settings import Settings, env_var


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


def test_messages_of_the_declared_rules(tmp_path) -> None:
    cases = {
        "FINDME_MIN_FACE_PX": ("19", "FINDME_MIN_FACE_PX must be at least 20, not 19."),
        "FINDME_DEBUG": ("maybe", "FINDME_DEBUG must be true or false, not 'maybe'."),
        "FINDME_MATCH_THRESHOLD": ("near", "FINDME_MATCH_THRESHOLD must be a number, not 'near'."),
        "FINDME_STORAGE": ("FTP", "FINDME_STORAGE must be one of database, s3, not 'ftp'."),
        "FINDME_REKOGNITION_MIN_SIMILARITY": (
            "101",
            "FINDME_REKOGNITION_MIN_SIMILARITY is a percentage, not 101.0.",
        ),
        "FINDME_REKOGNITION_COLLECTION_PREFIX": (
            "a b",
            "FINDME_REKOGNITION_COLLECTION_PREFIX may hold only letters, digits, '_', '.' "
            "and '-' (at most 200), not 'a b'.",
        ),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(ConfigurationError) as raised:
            Settings.from_environ({"FINDME_DATA_DIR": str(tmp_path), name: value})
        assert str(raised.value) == message
    with pytest.raises(ConfigurationError, match="FINDME_S3_BUCKET is required"):
        Settings.from_environ({"FINDME_DATA_DIR": str(tmp_path), "FINDME_STORAGE": "s3"})
    # Choices are case-insensitive; an empty variable means the default.
    chosen = Settings.from_environ(
        {"FINDME_DATA_DIR": str(tmp_path), "FINDME_STORAGE": "S3", "FINDME_S3_BUCKET": "b"}
        | {"FINDME_PORT": "", "FINDME_WORKERS": ""}
    )
    assert (chosen.storage, chosen.port, chosen.workers) == ("s3", 8000, 3)


def test_aws_region_falls_back_on_the_aws_variables(tmp_path) -> None:
    def region(**environ: str) -> str:
        return Settings.from_environ({"FINDME_DATA_DIR": str(tmp_path), **environ}).aws_region

    assert region() == "us-east-1"
    assert region(AWS_DEFAULT_REGION="eu-west-3") == "eu-west-3"
    assert region(AWS_REGION="eu-west-1", AWS_DEFAULT_REGION="eu-west-3") == "eu-west-1"
    assert region(FINDME_AWS_REGION="ap-south-1", AWS_REGION="eu-west-1") == "ap-south-1"
    assert region(FINDME_AWS_REGION="", AWS_REGION="eu-west-1") == "eu-west-1"


def test_the_database_defaults_to_a_file_in_the_data_directory(tmp_path) -> None:
    settings = Settings.from_environ({"FINDME_DATA_DIR": str(tmp_path / "data")})
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path}/data/findme.db"
    assert Settings().database_url == "sqlite+aiosqlite:///var/findme.db"


def _written(value: object) -> str:
    """A default as an operator would write it in the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_every_default_written_out_reads_back_as_itself(tmp_path) -> None:
    """Each default obeys its own minimum, choices and checks, and survives parsing."""
    defaults = Settings.from_environ({"FINDME_DATA_DIR": str(tmp_path)})
    environ = {"FINDME_DATA_DIR": str(tmp_path)}
    for settings_field in fields(Settings):
        if settings_field.name not in {"secret_key", "data_dir"}:
            value = getattr(defaults, settings_field.name)
            environ[env_var(settings_field).name] = _written(value)
    assert Settings.from_environ(environ) == defaults


def test_variables_are_declared_once() -> None:
    names = [
        name
        for settings_field in fields(Settings)
        for name in (env_var(settings_field).name, *env_var(settings_field).aliases)
    ]
    assert len(names) == len(set(names))
    for settings_field in fields(Settings):
        assert env_var(settings_field).name.startswith("FINDME_")
        assert env_var(settings_field).doc, settings_field.name


def _readme_settings() -> dict[str, tuple[tuple[str, ...], str]]:
    """The README's settings table: variable -> (old names, default as written)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented: dict[str, tuple[tuple[str, ...], str]] = {}
    for row in rows:
        variable, default, _meaning = (cell.strip() for cell in row.strip("|").split(" | ", 2))
        name, _, old = variable.partition(" (old: ")
        assert re.fullmatch(r"`FINDME_[A-Z0-9_]+`", name), f"one variable a row: {row}"
        assert name.strip("`") not in documented, f"documented twice: {name}"
        aliases = tuple(re.findall(r"`([A-Z0-9_]+)`", old))
        # A trailing parenthesis only explains the figure: "52428800 (50 MB)".
        documented[name.strip("`")] = (aliases, re.sub(r" \([^`]*\)$", "", default))
    return documented


def _documented_default(settings_field) -> str:
    declared = env_var(settings_field)
    if declared.default_doc:
        return declared.default_doc
    value = settings_field.default
    if isinstance(value, bool | str | Path):
        written = f"`{_written(value)}`" if _written(value) else "empty"
    elif isinstance(value, float):
        written = f"{value:g}"
    else:
        written = str(value)
    return ", else ".join([*(f"`{name}`" for name in declared.fallbacks), written])


def test_the_readme_documents_every_setting_as_declared() -> None:
    documented = _readme_settings()
    declared = {env_var(settings_field).name: settings_field for settings_field in fields(Settings)}
    assert sorted(set(declared) - set(documented)) == [], "settings missing from the README"
    assert sorted(set(documented) - set(declared)) == [], "the README documents unknown settings"
    for name, (aliases, default) in documented.items():
        settings_field = declared[name]
        assert aliases == env_var(settings_field).aliases, name
        assert default == _documented_default(settings_field), name
