"""Settings read from the environment (and an optional `.env` file).

Each setting is declared once, as a field of `Settings` whose metadata (`EnvVar`) names its
environment variable, the v14 names it still answers to, what it accepts and what it is for;
`Settings.from_environ` reads every field from that declaration.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from findme.errors import ConfigurationError

PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev", "development"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Secret(str):
    """A string that does not show itself in reprs and logs."""

    def __repr__(self) -> str:
        return "Secret('**********')"


@dataclass(frozen=True)
class EnvVar:
    """Where a setting is read from and what it accepts."""

    name: str
    doc: str
    # Names the v14 deployment used; existing installations still set them. Read only when
    # `name` is absent, so the new name wins.
    aliases: tuple[str, ...] = ()
    # Other tools' variables (AWS's own), read in turn when `name` is unset or empty.
    fallbacks: tuple[str, ...] = ()
    # Whole numbers below this are refused (none of ours may be negative).
    minimum: int = 0
    choices: tuple[str, ...] = ()
    # Returns what is wrong with a value, as the end of a sentence that starts with the name.
    check: Callable[[Any], str | None] | None = None
    # The default in words, where it is not the field's constant.
    default_doc: str = ""


def env(
    name: str,
    *,
    doc: str,
    aliases: tuple[str, ...] = (),
    fallbacks: tuple[str, ...] = (),
    minimum: int = 0,
    choices: tuple[str, ...] = (),
    check: Callable[[Any], str | None] | None = None,
    default_doc: str = "",
) -> dict[str, EnvVar]:
    """The metadata of a `Settings` field: its environment variable."""
    return {"env": EnvVar(name, doc, aliases, fallbacks, minimum, choices, check, default_doc)}


def env_var(settings_field: Field[Any]) -> EnvVar:
    declared: EnvVar = settings_field.metadata["env"]
    return declared


def _percentage(value: float) -> str | None:
    return None if 0 <= value <= 100 else f"is a percentage, not {value}"


def _fraction(value: float) -> str | None:
    return None if 0 <= value <= 1 else f"is between 0 and 1, not {value}"


def _collection_prefix(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9_.\-]{1,200}", value):
        return None
    return f"may hold only letters, digits, '_', '.' and '-' (at most 200), not {value!r}"


@dataclass(frozen=True)
class Settings:
    database_url: str = field(
        default="sqlite+aiosqlite:///var/findme.db",
        metadata=env(
            "FINDME_DATABASE_URL",
            doc="SQLAlchemy URL; by default a SQLite file in the data directory",
        ),
    )
    secret_key: Secret = field(
        default=Secret(""),
        repr=False,
        metadata=env(
            "FINDME_SECRET_KEY",
            doc="signs session cookies; generated and kept under the data directory in development",
            default_doc="generated in development",
        ),
    )
    development: bool = field(
        default=True,
        metadata=env(
            "FINDME_DEVELOPMENT", doc="development mode: a generated secret is acceptable"
        ),
    )
    debug: bool = field(
        default=False, metadata=env("FINDME_DEBUG", doc="tracebacks in error responses")
    )
    host: str = field(
        default="127.0.0.1", metadata=env("FINDME_HOST", doc="address `findme serve` listens on")
    )
    port: int = field(
        default=8000, metadata=env("FINDME_PORT", doc="port `findme serve` listens on", minimum=1)
    )
    data_dir: Path = field(
        default=Path("var"),
        metadata=env("FINDME_DATA_DIR", doc="SQLite file, development secret, upload temp files"),
    )
    max_upload_bytes: int = field(
        default=50 * 1024 * 1024,
        metadata=env("FINDME_MAX_UPLOAD_BYTES", doc="largest single photo", minimum=1),
    )
    max_request_bytes: int = field(
        default=2 * 1024 * 1024 * 1024,
        metadata=env("FINDME_MAX_REQUEST_BYTES", doc="largest upload request", minimum=1),
    )
    max_header_bytes: int = field(
        default=16 * 1024,
        metadata=env(
            "FINDME_MAX_HEADER_BYTES",
            doc="largest request line and headers together (431 beyond)",
            minimum=1024,
        ),
    )
    body_timeout_s: int = field(
        default=30,
        metadata=env(
            "FINDME_BODY_TIMEOUT_S",
            doc="a request body must have arrived this long after the request started, "
            "plus the allowance below (408 beyond)",
            minimum=1,
        ),
    )
    body_min_rate_bytes_s: int = field(
        default=500,
        metadata=env(
            "FINDME_BODY_MIN_RATE_BYTES_S",
            doc="one more second of that deadline per this many bytes received",
            minimum=1,
        ),
    )
    max_image_pixels: int = field(
        default=60_000_000,
        metadata=env(
            "FINDME_MAX_IMAGE_PIXELS",
            doc="largest photo in pixels (decompression bombs are refused)",
            minimum=1,
        ),
    )
    max_files_per_request: int = field(
        default=500,
        metadata=env("FINDME_MAX_FILES_PER_REQUEST", doc="files in one upload request", minimum=1),
    )
    workers: int = field(
        default=3,
        metadata=env(
            "FINDME_WORKERS",
            doc="worker coroutines claiming jobs",
            aliases=("PHOTO_QUEUE_WORKERS",),
            minimum=1,
        ),
    )
    run_workers: bool = field(
        default=True,
        metadata=env("FINDME_RUN_WORKERS", doc="run the workers in this process (false: web only)"),
    )
    spool_mb: int = field(
        default=1024,
        metadata=env(
            "FINDME_SPOOL_MB",
            doc="disk under the data dir for uploaded originals kept until their job reads "
            "them, in MB (0: none; the jobs read the storage)",
        ),
    )
    engine_processes: int = field(
        default_factory=lambda: os.cpu_count() or 1,
        metadata=env(
            "FINDME_ENGINE_PROCESSES",
            doc="processes of the local face engine",
            minimum=1,
            default_doc="core count",
        ),
    )
    engine_niceness: int = field(
        default=10,
        metadata=env("FINDME_ENGINE_NICENESS", doc="CPU priority of the face engine's processes"),
    )
    engine_urgent_processes: int = field(
        default=1,
        metadata=env(
            "FINDME_ENGINE_URGENT_PROCESSES",
            doc="more face engine processes, at the server's own CPU priority, for selfies and "
            "the first photos of a batch (0: none)",
        ),
    )
    recognizer: str = field(
        default="local",
        metadata=env(
            "FINDME_RECOGNIZER",
            doc="face engine: local (dlib) or rekognition",
            choices=("local", "rekognition"),
        ),
    )
    storage: str = field(
        default="database",
        metadata=env(
            "FINDME_STORAGE",
            doc="where photo bytes live: database or s3",
            choices=("database", "s3"),
        ),
    )
    min_face_px: int = field(
        default=120,
        metadata=env(
            "FINDME_MIN_FACE_PX", doc="smallest face to find, in the photo's own pixels", minimum=20
        ),
    )
    detector: str = field(
        default="auto",
        metadata=env(
            "FINDME_DETECTOR",
            doc="face detector of the local engine: the CNN, or dlib's HOG where the CNN's wheel "
            "is missing (auto, with a warning); cnn refuses to start without it",
            choices=("auto", "cnn", "hog"),
        ),
    )
    detector_min_score: float = field(
        default=0.7,
        metadata=env(
            "FINDME_DETECTOR_MIN_SCORE",
            doc="smallest CNN detection score that counts as a face (HOG ignores it)",
            check=_fraction,
        ),
    )
    # Calibrated on the shared faces for precision first: docs/RECOGNITION.md.
    match_threshold: float = field(
        default=0.55,
        metadata=env(
            "FINDME_MATCH_THRESHOLD",
            doc="largest descriptor distance that counts as the same person",
        ),
    )
    # "Is this you?" asks rather than guesses: faces this little beyond the threshold are shown
    # to their nearest member as the face alone, and count only once confirmed.
    suggestion_margin: float = field(
        default=0.06,
        metadata=env(
            "FINDME_SUGGESTION_MARGIN",
            doc="faces this much beyond the match threshold are offered to their nearest "
            'member to confirm ("Is this you?"); 0 turns suggestions off',
            check=_fraction,
        ),
    )
    retention_days: int = field(
        default=365,
        metadata=env(
            "FINDME_RETENTION_DAYS",
            doc="face data is purged this many days after the event",
            minimum=1,
        ),
    )
    job_lease_s: int = field(
        default=60,
        metadata=env(
            "FINDME_JOB_LEASE_S",
            doc="a job whose worker stops renewing its lease this long is claimed again",
            minimum=2,
        ),
    )
    job_timeout_s: int = field(
        default=300,
        metadata=env("FINDME_JOB_TIMEOUT_S", doc="longest a single job may run", minimum=1),
    )
    job_max_attempts: int = field(
        default=3,
        metadata=env(
            "FINDME_JOB_MAX_ATTEMPTS", doc="attempts before a job stays failed", minimum=1
        ),
    )
    job_retry_base_s: float = field(
        default=2.0,
        metadata=env(
            "FINDME_JOB_RETRY_BASE_S", doc="first retry after this long, doubling each time"
        ),
    )
    shutdown_grace_s: float = field(
        default=10.0,
        metadata=env(
            "FINDME_SHUTDOWN_GRACE_S", doc="on shutdown, how long running jobs may finish"
        ),
    )
    aws_concurrency: int = field(
        default=10,
        metadata=env(
            "FINDME_AWS_CONCURRENCY",
            doc="cloud calls in flight",
            aliases=("AWS_CONCURRENT_REQUESTS",),
            minimum=1,
        ),
    )
    aws_region: str = field(
        default="us-east-1",
        metadata=env(
            "FINDME_AWS_REGION",
            doc="region of Rekognition and S3",
            fallbacks=("AWS_REGION", "AWS_DEFAULT_REGION"),
        ),
    )
    aws_max_attempts: int = field(
        default=8,
        metadata=env(
            "FINDME_AWS_MAX_ATTEMPTS", doc="tries per AWS call, the first included", minimum=1
        ),
    )
    rekognition_collection_prefix: str = field(
        default="findme-",
        metadata=env(
            "FINDME_REKOGNITION_COLLECTION_PREFIX",
            doc="collections are named <prefix><event id>-<event creation time>",
            check=_collection_prefix,
        ),
    )
    rekognition_min_similarity: float = field(
        default=90.0,
        metadata=env(
            "FINDME_REKOGNITION_MIN_SIMILARITY",
            doc="smallest Rekognition similarity (percent) that counts as the same person",
            check=_percentage,
        ),
    )
    s3_bucket: str = field(
        default="",
        metadata=env(
            "FINDME_S3_BUCKET",
            doc="bucket of the originals and thumbnails",
            default_doc="required with `FINDME_STORAGE=s3`",
        ),
    )
    s3_prefix: str = field(
        default="", metadata=env("FINDME_S3_PREFIX", doc="key prefix of the photos' objects")
    )
    # 10, not SQLAlchemy's 5: eight readers at once already overflowed 5, and every overflow
    # connection is opened and closed per request (twice the member gallery's throughput at 10;
    # docs/BENCHMARKS.md, "Lists").
    db_pool_size: int = field(
        default=10,
        metadata=env(
            "FINDME_DB_POOL_SIZE",
            doc="PostgreSQL connection pool",
            aliases=("DB_POOL_SIZE",),
            minimum=1,
        ),
    )
    db_max_overflow: int = field(
        default=10,
        metadata=env(
            "FINDME_DB_MAX_OVERFLOW",
            doc="extra connections under load",
            aliases=("DB_MAX_OVERFLOW",),
        ),
    )
    db_pool_recycle_s: int = field(
        default=1800,
        metadata=env(
            "FINDME_DB_POOL_RECYCLE_S",
            doc="reconnect after this many seconds",
            aliases=("DB_POOL_RECYCLE",),
        ),
    )
    db_pool_timeout_s: int = field(
        default=30,
        metadata=env(
            "FINDME_DB_POOL_TIMEOUT_S",
            doc="wait for a free connection",
            aliases=("DB_POOL_TIMEOUT",),
        ),
    )
    session_max_age_s: int = field(
        default=14 * 24 * 3600,
        metadata=env("FINDME_SESSION_MAX_AGE_S", doc="browser session lifetime", minimum=60),
    )
    cache_my_photos_s: float = field(
        default=30.0,
        metadata=env(
            "FINDME_CACHE_MY_PHOTOS_S", doc="lifetime of cached photo lists; 0 turns it off"
        ),
    )
    cache_all_photos_s: float = field(
        default=30.0,
        metadata=env(
            "FINDME_CACHE_ALL_PHOTOS_S",
            doc="lifetime of cached event galleries (all photos); 0 turns it off",
        ),
    )
    cache_events_s: float = field(
        default=120.0,
        metadata=env("FINDME_CACHE_EVENTS_S", doc="lifetime of cached events; 0 turns it off"),
    )
    cache_users_s: float = field(
        default=60.0,
        metadata=env(
            "FINDME_CACHE_USERS_S",
            doc="lifetime of cached users, signed-in sessions and gallery access; 0 turns it off",
        ),
    )
    metrics_token: Secret = field(
        default=Secret(""),
        repr=False,
        metadata=env(
            "FINDME_METRICS_TOKEN",
            doc="bearer token that grants /metrics only (for Prometheus); empty: admins only",
            default_doc="empty",
        ),
    )
    rate_limit_storage: str = field(
        default="memory://",
        metadata=env(
            "FINDME_RATE_LIMIT_STORAGE",
            doc="where rate-limit counters live (a redis:// URL shares them)",
        ),
    )
    rate_login_ip: str = field(
        default="30/minute",
        metadata=env("FINDME_RATE_LOGIN_IP", doc="failed sign-ins per address, on any account"),
    )
    rate_login_account: str = field(
        default="10 per 15 minutes",
        metadata=env(
            "FINDME_RATE_LOGIN_ACCOUNT", doc="failed sign-ins per account from one address"
        ),
    )
    rate_signup_ip: str = field(
        default="20/hour", metadata=env("FINDME_RATE_SIGNUP_IP", doc="new accounts per address")
    )
    rate_selfie: str = field(
        default="20/hour", metadata=env("FINDME_RATE_SELFIE", doc="selfie uploads per account")
    )
    rate_upload: str = field(
        default="240/minute",
        metadata=env("FINDME_RATE_UPLOAD", doc="upload requests per photographer"),
    )
    rate_api_read: str = field(
        default="1200/minute", metadata=env("FINDME_RATE_API_READ", doc="API reads per account")
    )
    max_streams: int = field(
        default=0,
        metadata=env(
            "FINDME_MAX_STREAMS",
            doc="live streams this process holds open before refusing new ones (503); "
            "0: as many as the open-file limit leaves room for",
            default_doc="from the open-file limit",
        ),
    )
    thumbnail_px: int = field(
        default=480,
        metadata=env("FINDME_THUMBNAIL_PX", doc="longest side of grid thumbnails", minimum=64),
    )
    smtp_host: str = field(
        default="",
        metadata=env(
            "FINDME_SMTP_HOST",
            doc="mail server for sign-up, password-reset and new-photo emails; empty: email is "
            "not configured",
            default_doc="empty",
        ),
    )
    smtp_port: int = field(
        default=587, metadata=env("FINDME_SMTP_PORT", doc="port of the mail server", minimum=1)
    )
    smtp_user: str = field(
        default="", metadata=env("FINDME_SMTP_USER", doc="user name at the mail server")
    )
    smtp_password: Secret = field(
        default=Secret(""),
        repr=False,
        metadata=env(
            "FINDME_SMTP_PASSWORD", doc="password at the mail server", default_doc="empty"
        ),
    )
    smtp_starttls: bool = field(
        default=True,
        metadata=env(
            "FINDME_SMTP_STARTTLS",
            doc="require STARTTLS before signing in to the mail server and sending",
        ),
    )
    mail_from: str = field(
        default="FindMe <findme@localhost>",
        metadata=env("FINDME_MAIL_FROM", doc="sender of FindMe's emails"),
    )
    public_url: str = field(
        default="",
        metadata=env(
            "FINDME_PUBLIC_URL",
            doc="the site's address in emailed links; empty: the address the request came to",
            default_doc="empty",
        ),
    )
    reset_token_ttl_s: int = field(
        default=3600,
        metadata=env(
            "FINDME_RESET_TOKEN_TTL_S",
            doc="a password-reset link works this long, and once",
            minimum=60,
        ),
    )
    signup_token_ttl_s: int = field(
        default=86400,
        metadata=env(
            "FINDME_SIGNUP_TOKEN_TTL_S",
            doc="a sign-up link (sent when email is configured) works this long, and once",
            minimum=60,
        ),
    )
    notify_interval_s: int = field(
        default=300,
        metadata=env(
            "FINDME_NOTIFY_INTERVAL_S",
            doc="how often new-photo emails are looked for and sent",
            minimum=1,
        ),
    )
    notify_quiet_s: int = field(
        default=120,
        metadata=env(
            "FINDME_NOTIFY_QUIET_S",
            doc="a new-photo email waits until no new photo of the member arrived for this long",
        ),
    )
    rate_reset_ip: str = field(
        default="10/hour",
        metadata=env(
            "FINDME_RATE_RESET_IP", doc="password-reset and sign-in link requests per address"
        ),
    )
    rate_reset_email: str = field(
        default="3/hour",
        metadata=env(
            "FINDME_RATE_RESET_EMAIL",
            doc="password-reset and sign-in link requests per email address",
        ),
    )
    rate_share_links: str = field(
        default="60/hour",
        metadata=env("FINDME_RATE_SHARE_LINKS", doc="new share links per account"),
    )

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, env_file: Path = Path(".env")
    ) -> Settings:
        """Build settings: the process environment beats `.env`, which beats the defaults."""
        merged = {**_read_dotenv(env_file), **(os.environ if environ is None else environ)}
        kinds = _field_types()
        values: dict[str, Any] = {}
        for settings_field in fields(cls):
            var = env_var(settings_field)
            raw = _raw(merged, var)
            if raw is not None:
                values[settings_field.name] = _parse(var, kinds[settings_field.name], raw)
        # What no single field decides: the database and the development secret live in the
        # data directory, a placeholder secret is refused outside development, S3 needs a bucket.
        development: bool = values.get("development", cls.development)
        data_dir: Path = values.get("data_dir", cls.data_dir)
        values.setdefault("database_url", f"sqlite+aiosqlite:///{data_dir / 'findme.db'}")
        secret = values.get("secret_key", "")
        if secret.lower() in PLACEHOLDER_SECRETS or len(secret) < 16:
            if not development:
                raise ConfigurationError(
                    "FINDME_SECRET_KEY is missing or a placeholder. Set it to a long random "
                    "value, e.g. the output of: python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))'."
                )
            values["secret_key"] = Secret(_development_secret(data_dir))
        settings = cls(**values)
        if settings.storage == "s3" and not settings.s3_bucket:
            raise ConfigurationError(
                "FINDME_S3_BUCKET is required when FINDME_STORAGE=s3: set it to the bucket "
                "that keeps the photos."
            )
        return settings

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@functools.cache
def _field_types() -> dict[str, Any]:
    # The annotations are strings (postponed evaluation): resolve them once.
    return get_type_hints(Settings)


def _raw(environ: Mapping[str, str], var: EnvVar) -> str | None:
    """The variable's text, or None when it is unset or empty (the default applies)."""
    value = environ.get(var.name)
    for alias in var.aliases:
        if value is None:
            value = environ.get(alias)
    for fallback in var.fallbacks:
        if not value:
            value = environ.get(fallback)
    return value or None


def _parse(var: EnvVar, kind: Any, value: str) -> Any:
    parsed: Any
    if kind is bool:
        parsed = _flag(var.name, value)
    elif kind is int:
        parsed = _integer(var.name, value, minimum=var.minimum)
    elif kind is float:
        try:
            parsed = float(value)
        except ValueError:
            raise ConfigurationError(f"{var.name} must be a number, not {value!r}.") from None
    elif var.choices:
        parsed = value.lower()
        if parsed not in var.choices:
            raise ConfigurationError(
                f"{var.name} must be one of {', '.join(var.choices)}, not {parsed!r}."
            )
    else:
        parsed = kind(value)
    if var.check is not None and (complaint := var.check(parsed)) is not None:
        raise ConfigurationError(f"{var.name} {complaint}.")
    return parsed


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, not {value!r}.")


def _integer(name: str, value: str, *, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {value!r}.") from None
    if number < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {number}.")
    return number


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
