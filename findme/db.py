"""Database models and the async engine (PostgreSQL via asyncpg, SQLite via aiosqlite)."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from findme.errors import AlreadyExists
from findme.settings import Settings

# Key of the sessions' `info` holding the attempts new jobs get (see Database).
SESSION_JOB_MAX_ATTEMPTS = "job_max_attempts"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime stored")
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        parsed = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        assert isinstance(parsed, dt.datetime)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class Role(enum.StrEnum):
    attendee = "attendee"
    photographer = "photographer"
    admin = "admin"


class PhotoStatus(enum.StrEnum):
    queued = "queued"
    processing = "processing"
    done = "done"
    no_faces = "no_faces"
    failed = "failed"


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class Gallery(enum.StrEnum):
    """Whose photos an event's attendees may browse: their own (the default) or all of them."""

    own = "own"
    all = "all"


class Joining(enum.StrEnum):
    """Whether an event's code admits new guests: open (the default) or closed by its organiser."""

    open = "open"
    closed = "closed"


class JobKind(enum.StrEnum):
    process_photo = "process_photo"
    match_member = "match_member"


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: UtcDateTime()}


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=32, validate_strings=True)


def _bytes_column() -> Mapped[bytes | None]:
    # Image bytes are never loaded by an entity query: touching them raises, so a list page
    # can't quietly pull every photo's bytes (what froze the old gallery).
    return mapped_column(LargeBinary, deferred=True, deferred_raiseload=True, nullable=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(_enum(Role))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    consent_at: Mapped[dt.datetime | None]
    # When the selfies last changed; None while the account has none (pages read it as "has a
    # selfie" without a query).
    selfie_updated_at: Mapped[dt.datetime | None]


class Selfie(Base):
    """One of a person's selfies (up to three, e.g. front and three-quarter): biometric data."""

    __tablename__ = "selfies"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    image: Mapped[bytes | None] = _bytes_column()
    # 128 float32 little-endian (the local engine's descriptor, also used to check selfies)
    descriptor: Mapped[bytes] = mapped_column(LargeBinary)
    # the face: left, top, right, bottom in the upright image (None: enrolled before it was kept)
    box: Mapped[list[int] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class BrowserSession(Base):
    """A signed-in browser; deleting the row ends the session wherever its cookie is."""

    __tablename__ = "browser_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class PasswordReset(Base):
    """A password-reset link sent by email: only its hash is kept; it works once, until expiry."""

    __tablename__ = "password_resets"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class SignInLink(Base):
    """A one-time sign-in link emailed to a member of an event that allows it; only its hash is
    kept."""

    __tablename__ = "sign_in_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class Signup(Base):
    """A sign-up waiting for its emailed link: the account is created when the link is used.

    Only the token's hash is kept, and the password only as its hash. One email may have
    several (a person may ask twice); the first link used creates the account and spends all.
    """

    __tablename__ = "signups"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), index=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Where the person was going when they signed up: a path on this site.
    next_path: Mapped[str] = mapped_column(String(2000))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(16), unique=True)
    date: Mapped[dt.date | None]
    organiser_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Cloud engines: the event's collection, created once and recorded so a restart never
    # creates or indexes it again.
    collection_id: Mapped[str | None] = mapped_column(String(255))
    # Attendees see the photos they are in; the organiser may open every photo to everyone
    # who joined. Organisers and admins always see all.
    gallery: Mapped[Gallery] = mapped_column(
        _enum(Gallery), default=Gallery.own, server_default=Gallery.own.value
    )
    # Who may still join with the code: the organiser closes joining, or lets the code expire
    # (None: it never does). Members stay members either way.
    joining: Mapped[Joining] = mapped_column(
        _enum(Joining), default=Joining.open, server_default=Joining.open.value
    )
    code_expires_at: Mapped[dt.datetime | None]
    # Whether a member may sign in with a one-time link emailed to them instead of a password.
    email_sign_in: Mapped[bool] = mapped_column(default=False, server_default=false())


class EventMember(Base):
    __tablename__ = "event_members"

    event_id: Mapped[int] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    joined_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The face ids of the member's selfies in the event's cloud collection (space-separated, up
    # to three UUIDs and a marker), once indexed there.
    cloud_face_id: Mapped[str | None] = mapped_column(String(120))
    # "Email me when new photos of me arrive": at most one mail an hour, covering the matches
    # after the last one mailed.
    notify_new_photos: Mapped[bool] = mapped_column(default=False, server_default=false())
    notified_through_match_id: Mapped[int | None]
    notified_at: Mapped[dt.datetime | None]


class Photo(Base):
    __tablename__ = "photos"
    __table_args__ = (
        UniqueConstraint("event_id", "sha256"),
        Index("ix_photos_event_id_id", "event_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    uploader_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int]
    height: Mapped[int]
    status: Mapped[PhotoStatus] = mapped_column(_enum(PhotoStatus), default=PhotoStatus.queued)
    uploaded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[dt.datetime | None]
    original: Mapped[bytes | None] = _bytes_column()
    thumbnail: Mapped[bytes | None] = _bytes_column()


class Face(Base):
    """A face found in a photo: biometric data, deleted with its event or by retention."""

    __tablename__ = "faces"
    # The worker's face index asks an event's count and newest id of this index alone.
    __table_args__ = (Index("ix_faces_event_id_id", "event_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    box: Mapped[list[int]] = mapped_column(JSON)
    descriptor: Mapped[bytes | None] = mapped_column(LargeBinary)
    cloud_face_id: Mapped[str | None] = mapped_column(String(64))


class FaceMatch(Base):
    __tablename__ = "face_matches"
    __table_args__ = (
        UniqueConstraint("photo_id", "user_id"),
        Index("ix_face_matches_user_id_event_id_photo_id", "user_id", "event_id", "photo_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    # Purging face data (retention) keeps the match: it is not biometric, the face is.
    face_id: Mapped[int | None] = mapped_column(ForeignKey("faces.id", ondelete="SET NULL"))
    distance: Mapped[float] = mapped_column(Float)
    matched_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Set when the member said "yes, this is me" to a suggestion: kept whatever the rule says.
    confirmed_at: Mapped[dt.datetime | None]


class MatchSuggestion(Base):
    """ "Is this you?": a face just beyond the match threshold, offered to its nearest member,
    shown to them as the face alone until they confirm."""

    __tablename__ = "match_suggestions"
    __table_args__ = (
        UniqueConstraint("photo_id", "user_id"),
        Index("ix_match_suggestions_user_id_event_id", "user_id", "event_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"))
    distance: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RejectedMatch(Base):
    """ "Not me": this photo is never matched to this user again."""

    __tablename__ = "rejected_matches"

    photo_id: Mapped[int] = mapped_column(
        ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "status", "priority", "run_after", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.queued)
    # Lower runs first: a newcomer's match_member goes ahead of a mass upload's photos.
    priority: Mapped[int] = mapped_column(Integer, default=10)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    photo_id: Mapped[int | None] = mapped_column(
        ForeignKey("photos.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), index=True
    )
    # Indexed: a member's status page looks up their matching jobs, and erasing an account
    # deletes its jobs, without reading every photo's job of the events.
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # No default: jobs.py sets it from FINDME_JOB_MAX_ATTEMPTS when it enqueues the job.
    max_attempts: Mapped[int] = mapped_column(Integer)
    run_after: Mapped[dt.datetime] = mapped_column(default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    error_history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class ShareLink(Base):
    """A private link to one photo, made by someone who may see it: only the token's hash is
    kept. It goes with its photo (and so its event) and with the account that made it."""

    __tablename__ = "share_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_opened_at: Mapped[dt.datetime | None]
    opened_count: Mapped[int] = mapped_column(Integer, default=0)


class Database:
    """The engine and session maker, opened and closed by the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.is_sqlite = settings.is_sqlite
        # No pre-ping: it costs a round trip per checkout (a tenth of a cached request's time);
        # pool_recycle retires connections before servers drop them instead.
        options: dict[str, Any] = {}
        if not self.is_sqlite:
            options |= {
                "pool_size": settings.db_pool_size,
                "max_overflow": settings.db_max_overflow,
                "pool_recycle": settings.db_pool_recycle_s,
                "pool_timeout": settings.db_pool_timeout_s,
            }
        else:
            # SQLite allows one writer: waiting beats failing with "database is locked".
            options["connect_args"] = {"timeout": 30}
        self.engine: AsyncEngine = create_async_engine(settings.database_url, **options)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        # Every session carries the attempts a new job gets, so code that enqueues a job with
        # whatever session it holds follows FINDME_JOB_MAX_ATTEMPTS without passing it along.
        self.sessions = async_sessionmaker(
            self.engine,
            expire_on_commit=False,
            info={SESSION_JOB_MAX_ATTEMPTS: settings.job_max_attempts},
        )
        # For reads only: each statement sees the latest commit, and no BEGIN and ROLLBACK
        # round trips are paid around them (the photo lists, their access checks).
        self.reads = async_sessionmaker(
            self.engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits on success and rolls back on error."""
        async with self.sessions() as session, session.begin():
            try:
                yield session
            except IntegrityError as error:
                raise AlreadyExists() from error

    async def aclose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
