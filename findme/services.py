"""Everything a FindMe process opens: database, storage, recognizer, and maybe the workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import aioboto3  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from findme import rekognition, s3
from findme.auth import Authenticator
from findme.cache import Caches
from findme.db import Database
from findme.live import ACCOUNTS, MatchFeed
from findme.matching import Matcher, purge_expired_faces
from findme.pipeline import Pipeline
from findme.ratelimit import RateLimiter
from findme.recognition import LocalRecognizer
from findme.rekognition import RekognitionRecognizer
from findme.rekognition_jobs import RekognitionMatcher
from findme.s3 import S3Storage
from findme.settings import Settings
from findme.storage import DatabaseStorage, PhotoStorage

logger = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 3600.0


@dataclass
class AppState:
    """What the lifespan opens, reachable from any request as `request.state.findme`."""

    settings: Settings
    db: Database
    auth: Authenticator
    storage: PhotoStorage
    recognizer: LocalRecognizer
    caches: Caches
    feed: MatchFeed
    limits: RateLimiter
    pipeline: Pipeline | None = None
    # Photos being written to storage at once, across requests: each holds its bytes in memory
    # (several copies, through the driver), so this bounds memory whatever the upload load.
    store_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    # The photo engine when FINDME_RECOGNIZER=rekognition (selfies are still checked locally).
    rekognition: RekognitionRecognizer | None = None

    async def on_matches_changed(self, user_ids: set[int]) -> None:
        """Tell whoever shows these users' photos (caches, live pages, other instances)."""
        await self.feed.publish(user_ids)

    async def on_accounts_changed(self, user_ids: set[int]) -> None:
        """Signed out, erased or new selfie: every instance drops its cached copies."""
        await self.feed.publish(user_ids, kind=ACCOUNTS)


@asynccontextmanager
async def open_services(settings: Settings, *, run_workers: bool) -> AsyncIterator[AppState]:
    async with AsyncExitStack() as stack:
        db = Database(settings)
        stack.push_async_callback(db.aclose)
        recognizer = await stack.enter_async_context(
            LocalRecognizer(
                processes=settings.engine_processes,
                min_face_px=settings.min_face_px,
                niceness=settings.engine_niceness,
            )
        )
        caches = Caches.create(
            my_photos_s=settings.cache_my_photos_s,
            events_s=settings.cache_events_s,
            users_s=settings.cache_users_s,
        )
        feed = await stack.enter_async_context(
            MatchFeed(postgres_dsn=None if db.is_sqlite else _asyncpg_dsn(settings.database_url))
        )
        feed.add_listener(caches.matches_changed)
        limits = rate_limiter(settings)
        stack.push_async_callback(limits.aclose)
        storage, cloud = await _open_aws(stack, settings, db)
        state = AppState(
            settings=settings,
            db=db,
            auth=Authenticator(
                db=db,
                secret_key=settings.secret_key,
                session_max_age_s=settings.session_max_age_s,
                users=caches.users,
                sessions=caches.sessions,
            ),
            storage=storage,
            recognizer=recognizer,
            caches=caches,
            feed=feed,
            limits=limits,
            rekognition=cloud,
        )
        feed.add_listener(state.auth.forget_users, kind=ACCOUNTS)
        if run_workers:
            # Models load in the background: requests are served while the engine warms up.
            warm_up = asyncio.create_task(recognizer.warm_up())
            stack.callback(warm_up.cancel)
            state.pipeline = build_pipeline(state)
            await stack.enter_async_context(state.pipeline)
        yield state


async def _open_aws(
    stack: AsyncExitStack, settings: Settings, db: Database
) -> tuple[PhotoStorage, RekognitionRecognizer | None]:
    """Storage and cloud engine as the settings choose: one long-lived client of each."""
    storage: PhotoStorage = DatabaseStorage(db)
    cloud: RekognitionRecognizer | None = None
    if settings.storage != "s3" and settings.recognizer != "rekognition":
        return storage, cloud
    aws = aioboto3.Session(region_name=settings.aws_region)
    if settings.storage == "s3":
        client = await stack.enter_async_context(s3.open_client(aws, settings))
        s3_storage = S3Storage(client=client, bucket=settings.s3_bucket, prefix=settings.s3_prefix)
        stack.push_async_callback(s3_storage.aclose)  # before its client closes
        storage = s3_storage
    if settings.recognizer == "rekognition":
        client = await stack.enter_async_context(rekognition.open_client(aws, settings))
        cloud = RekognitionRecognizer(
            client=client,
            concurrency=settings.aws_concurrency,
            collection_prefix=settings.rekognition_collection_prefix,
            min_similarity=settings.rekognition_min_similarity,
        )
    return storage, cloud


def rate_limiter(settings: Settings) -> RateLimiter:
    return RateLimiter(
        storage_url=settings.rate_limit_storage,
        rules={
            "login_ip": (settings.rate_login_ip, "Too many sign-in attempts from your network."),
            "login_account": (
                settings.rate_login_account,
                "Too many failed sign-ins for this account. Check the password, or wait.",
            ),
            "signup_ip": (settings.rate_signup_ip, "Too many new accounts from your network."),
            "selfie": (settings.rate_selfie, "Too many selfie uploads."),
            "upload": (settings.rate_upload, "Too many upload requests. Send fewer, larger ones."),
            "api_read": (settings.rate_api_read, "Too many requests."),
        },
    )


def _asyncpg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def build_pipeline(state: AppState) -> Pipeline:
    settings = state.settings
    matcher = Matcher(
        db=state.db,
        storage=state.storage,
        recognizer=state.recognizer,
        threshold=settings.match_threshold,
        on_matches_changed=state.on_matches_changed,
    )
    handlers = matcher.handlers()
    if state.rekognition is not None:
        handlers = RekognitionMatcher(
            db=state.db,
            storage=state.storage,
            recognizer=state.rekognition,
            on_matches_changed=state.on_matches_changed,
        ).handlers()

    async def housekeeping() -> None:
        if state.rekognition is not None:
            dropped = await state.rekognition.purge_expired(
                state.db, retention_days=settings.retention_days
            )
            if dropped:
                logger.info(
                    "deleted %d expired collections", dropped, extra={"action": "retention_purge"}
                )
        purged = await purge_expired_faces(state.db, retention_days=settings.retention_days)
        if purged:
            logger.info("purged %d expired faces", purged, extra={"action": "retention_purge"})

    return Pipeline(
        db=state.db,
        handlers=handlers,
        workers=settings.workers,
        lease_s=settings.job_lease_s,
        timeout_s=settings.job_timeout_s,
        grace_s=settings.shutdown_grace_s,
        retry_base_s=settings.job_retry_base_s,
        housekeeping=housekeeping,
        housekeeping_interval_s=HOUSEKEEPING_INTERVAL_S,
    )
