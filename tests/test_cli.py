"""The `findme` command as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys


def run(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "findme.cli", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_and_create_user(database_url, tmp_path) -> None:
    env = {"FINDME_DATABASE_URL": database_url, "FINDME_DATA_DIR": str(tmp_path)}
    migrated = run("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "up to date" in migrated.stdout
    created = run(
        "create-user",
        "--email",
        "Boss@Example.com",
        "--name",
        "Boss",
        "--role",
        "admin",
        env=env | {"FINDME_PASSWORD": "a long password"},
    )
    assert created.returncode == 0, created.stderr
    assert "Created admin boss@example.com" in created.stdout
    again = run(
        "create-user",
        "--email",
        "boss@example.com",
        "--name",
        "B",
        "--password",
        "another one",
        env=env,
    )
    assert again.returncode == 2
    assert "already exists" in again.stderr
    weak = run("create-user", "--email", "w@example.com", "--name", "W", "--password", "x", env=env)
    assert weak.returncode == 2 and "at least 8" in weak.stderr
    no_password = run("create-user", "--email", "n@example.com", "--name", "N", env=env, stdin="")
    assert no_password.returncode == 2 and "FINDME_PASSWORD" in no_password.stderr
