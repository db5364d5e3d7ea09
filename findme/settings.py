"""Settings read from the environment (and an optional `.env` file)."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from findme.errors import ConfigurationError

PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev", "development"})

# Names the v14 deployment used; existing installations still set them.
LEGACY_ALIASES: Mapping[str, str] = {
    "FINDME_WORKERS": "PHOTO_QUEUE_WORKERS",
    "FINDME_AWS_CONCURRENCY": "AWS_CONCURRENT_REQUESTS",
    "FINDME_DB_POOL_SIZE": "DB_POOL_SIZE",
    "FINDME_DB_MAX_OVERFLOW": "DB_MAX_OVERFLOW",
    "FINDME_DB_POOL_RECYCLE_S": "DB_POOL_RECYCLE",
    "FINDME_DB_POOL_TIMEOUT_S": "DB_POOL_TIMEOUT",
}


class Secret(str):
    """A string that does not show itself in reprs and logs."""

    def __repr__(self) -> str:
        return "Secret('**********')"


def _read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip().strip("\"'")
    return values


class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, key: str) -> str | None:
        legacy = LEGACY_ALIASES.get(key)
        value = self._environ.get(key)
        if value is None and legacy is not None:
            value = self._environ.get(legacy)
        return value

    def text(self, key: str, default: str) -> str:
        value = self.raw(key)
        return default if value is None or value == "" else value

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.raw(key)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigurationError(f"{key} must be a whole number, not {value!r}.") from None
        if number < minimum:
            raise ConfigurationError(f"{key} must be at least {minimum}, not {number}.")
        return number

    def number(self, key: str, default: float) -> float:
        value = self.raw(key)
        if value is None or value == "":
            return default
        try:
            return float(value)
        except ValueError:
            raise ConfigurationError(f"{key} must be a number, not {value!r}.") from None

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None or value == "":
            return default
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigurationError(f"{key} must be true or false, not {value!r}.")

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(key, default).lower()
        if value not in choices:
            raise ConfigurationError(f"{key} must be one of {', '.join(choices)}, not {value!r}.")
        return value


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite+aiosqlite:///var/findme.db"
    secret_key: Secret = field(default=Secret(""), repr=False)
    development: bool = True
    debug: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("var")
    max_upload_bytes: int = 50 * 1024 * 1024
    max_request_bytes: int = 2 * 1024 * 1024 * 1024
    max_image_pixels: int = 60_000_000
    max_files_per_request: int = 500
    workers: int = 3
    run_workers: bool = True
    engine_processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    engine_niceness: int = 10
    recognizer: str = "local"
    storage: str = "database"
    min_face_px: int = 120
    # Calibrated on the shared faces for precision first: docs/RECOGNITION.md.
    match_threshold: float = 0.55
    retention_days: int = 365
    job_lease_s: int = 60
    job_timeout_s: int = 300
    job_max_attempts: int = 3
    job_retry_base_s: float = 2.0
    shutdown_grace_s: float = 10.0
    aws_concurrency: int = 10
    aws_region: str = "us-east-1"
    aws_max_attempts: int = 8
    rekognition_collection_prefix: str = "findme-"
    rekognition_min_similarity: float = 90.0
    s3_bucket: str = ""
    s3_prefix: str = ""
    db_pool_size: int = 5
    db_max_overflow: int = 10
    db_pool_recycle_s: int = 1800
    db_pool_timeout_s: int = 30
    session_max_age_s: int = 14 * 24 * 3600
    cache_my_photos_s: float = 30.0
    cache_events_s: float = 120.0
    cache_users_s: float = 60.0
    rate_limit_storage: str = "memory://"
    rate_login_ip: str = "30/minute"
    rate_login_account: str = "10 per 15 minutes"
    rate_signup_ip: str = "20/hour"
    rate_selfie: str = "20/hour"
    rate_upload: str = "240/minute"
    rate_api_read: str = "1200/minute"
    thumbnail_px: int = 480

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, env_file: Path = Path(".env")
    ) -> Settings:
        """Build settings: the process environment beats `.env`, which beats the defaults."""
        merged = {**_read_dotenv(env_file), **(os.environ if environ is None else environ)}
        read = _Reader(merged)
        development = read.flag("FINDME_DEVELOPMENT", True)
        data_dir = Path(read.text("FINDME_DATA_DIR", "var"))
        secret = read.text("FINDME_SECRET_KEY", "")
        if secret.lower() in PLACEHOLDER_SECRETS or len(secret) < 16:
            if not development:
                raise ConfigurationError(
                    "FINDME_SECRET_KEY is missing or a placeholder. Set it to a long random "
                    "value, e.g. the output of: python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))'."
                )
            secret = _development_secret(data_dir)
        storage = read.choice("FINDME_STORAGE", "database", ("database", "s3"))
        s3_bucket = read.text("FINDME_S3_BUCKET", "")
        if storage == "s3" and not s3_bucket:
            raise ConfigurationError(
                "FINDME_S3_BUCKET is required when FINDME_STORAGE=s3: set it to the bucket "
                "that keeps the photos."
            )
        collection_prefix = read.text(
            "FINDME_REKOGNITION_COLLECTION_PREFIX", cls.rekognition_collection_prefix
        )
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,200}", collection_prefix):
            raise ConfigurationError(
                "FINDME_REKOGNITION_COLLECTION_PREFIX may hold only letters, digits, '_', '.' "
                f"and '-' (at most 200), not {collection_prefix!r}."
            )
        min_similarity = read.number(
            "FINDME_REKOGNITION_MIN_SIMILARITY", cls.rekognition_min_similarity
        )
        if not 0 <= min_similarity <= 100:
            raise ConfigurationError(
                f"FINDME_REKOGNITION_MIN_SIMILARITY is a percentage, not {min_similarity}."
            )
        return cls(
            database_url=read.text(
                "FINDME_DATABASE_URL", f"sqlite+aiosqlite:///{data_dir / 'findme.db'}"
            ),
            secret_key=Secret(secret),
            development=development,
            debug=read.flag("FINDME_DEBUG", False),
            host=read.text("FINDME_HOST", "127.0.0.1"),
            port=read.integer("FINDME_PORT", 8000, minimum=1),
            data_dir=data_dir,
            max_upload_bytes=read.integer(
                "FINDME_MAX_UPLOAD_BYTES", cls.max_upload_bytes, minimum=1
            ),
            max_request_bytes=read.integer(
                "FINDME_MAX_REQUEST_BYTES", cls.max_request_bytes, minimum=1
            ),
            max_image_pixels=read.integer(
                "FINDME_MAX_IMAGE_PIXELS", cls.max_image_pixels, minimum=1
            ),
            max_files_per_request=read.integer(
                "FINDME_MAX_FILES_PER_REQUEST", cls.max_files_per_request, minimum=1
            ),
            workers=read.integer("FINDME_WORKERS", cls.workers, minimum=1),
            run_workers=read.flag("FINDME_RUN_WORKERS", True),
            engine_processes=read.integer(
                "FINDME_ENGINE_PROCESSES", os.cpu_count() or 1, minimum=1
            ),
            engine_niceness=read.integer("FINDME_ENGINE_NICENESS", cls.engine_niceness),
            recognizer=read.choice("FINDME_RECOGNIZER", "local", ("local", "rekognition")),
            storage=storage,
            min_face_px=read.integer("FINDME_MIN_FACE_PX", cls.min_face_px, minimum=20),
            match_threshold=read.number("FINDME_MATCH_THRESHOLD", cls.match_threshold),
            retention_days=read.integer("FINDME_RETENTION_DAYS", cls.retention_days, minimum=1),
            job_lease_s=read.integer("FINDME_JOB_LEASE_S", cls.job_lease_s, minimum=2),
            job_timeout_s=read.integer("FINDME_JOB_TIMEOUT_S", cls.job_timeout_s, minimum=1),
            job_max_attempts=read.integer(
                "FINDME_JOB_MAX_ATTEMPTS", cls.job_max_attempts, minimum=1
            ),
            job_retry_base_s=read.number("FINDME_JOB_RETRY_BASE_S", cls.job_retry_base_s),
            shutdown_grace_s=read.number("FINDME_SHUTDOWN_GRACE_S", cls.shutdown_grace_s),
            aws_concurrency=read.integer("FINDME_AWS_CONCURRENCY", cls.aws_concurrency, minimum=1),
            aws_region=read.text(
                "FINDME_AWS_REGION",
                read.text("AWS_REGION", read.text("AWS_DEFAULT_REGION", cls.aws_region)),
            ),
            aws_max_attempts=read.integer(
                "FINDME_AWS_MAX_ATTEMPTS", cls.aws_max_attempts, minimum=1
            ),
            rekognition_collection_prefix=collection_prefix,
            rekognition_min_similarity=min_similarity,
            s3_bucket=s3_bucket,
            s3_prefix=read.text("FINDME_S3_PREFIX", cls.s3_prefix),
            db_pool_size=read.integer("FINDME_DB_POOL_SIZE", cls.db_pool_size, minimum=1),
            db_max_overflow=read.integer("FINDME_DB_MAX_OVERFLOW", cls.db_max_overflow),
            db_pool_recycle_s=read.integer("FINDME_DB_POOL_RECYCLE_S", cls.db_pool_recycle_s),
            db_pool_timeout_s=read.integer("FINDME_DB_POOL_TIMEOUT_S", cls.db_pool_timeout_s),
            cache_my_photos_s=read.number("FINDME_CACHE_MY_PHOTOS_S", cls.cache_my_photos_s),
            cache_events_s=read.number("FINDME_CACHE_EVENTS_S", cls.cache_events_s),
            cache_users_s=read.number("FINDME_CACHE_USERS_S", cls.cache_users_s),
            rate_limit_storage=read.text("FINDME_RATE_LIMIT_STORAGE", cls.rate_limit_storage),
            rate_login_ip=read.text("FINDME_RATE_LOGIN_IP", cls.rate_login_ip),
            rate_login_account=read.text("FINDME_RATE_LOGIN_ACCOUNT", cls.rate_login_account),
            rate_signup_ip=read.text("FINDME_RATE_SIGNUP_IP", cls.rate_signup_ip),
            rate_selfie=read.text("FINDME_RATE_SELFIE", cls.rate_selfie),
            rate_upload=read.text("FINDME_RATE_UPLOAD", cls.rate_upload),
            rate_api_read=read.text("FINDME_RATE_API_READ", cls.rate_api_read),
            session_max_age_s=read.integer(
                "FINDME_SESSION_MAX_AGE_S", cls.session_max_age_s, minimum=60
            ),
            thumbnail_px=read.integer("FINDME_THUMBNAIL_PX", cls.thumbnail_px, minimum=64),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _development_secret(data_dir: Path) -> str:
    """Generate a secret once and keep it, so sessions survive a restart in development."""
    path = data_dir / "secret_key"
    if path.is_file():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret
