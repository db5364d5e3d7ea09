"""Everything a FindMe process opens: database, storage, engine, and maybe the workers."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, nullcontext
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

from findme.auth import Authenticator
from findme.batching import BatchLoader
from findme.cache import Caches
from findme.capacity import StreamSlots, open_files
from findme.db import Database, JobKind
from findme.domain.access import memberships
from findme.domain.notifications import available as notifications_available
from findme.engines import Engine, open_engine
from findme.jobs import ClaimedJob
from findme.live import ACCOUNTS, EVENTS, PHOTOS, MatchFeed
from findme.mail import Mailer
from findme.notifier import Notifier
from findme.pipeline import Pipeline
from findme.ratelimit import RateLimiter
from findme.settings import Settings
from findme.storage import PhotoStorage, open_storage
from findme.storage.spool import Spool, SpooledStorage
from findme.stream_hub import StreamHub

logger = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 3600.0


@dataclass
class AppState:
    """What the lifespan opens, reachable from any request as `request.state.findme`."""

    settings: Settings
    db: Database
    auth: Authenticator
    storage: PhotoStorage
    engine: Engine
    caches: Caches
    feed: MatchFeed
    limits: RateLimiter
    mailer: Mailer
    # Live streams open here, refused past capacity (FINDME_MAX_STREAMS, else what the
    # open-file limit leaves room for), and woken together by news.
    stream_slots: StreamSlots
    streams: StreamHub
    # Memberships read for streams being set up, many in one query (findme/batching.py).
    memberships: BatchLoader[tuple[int, int], bool]
    pipeline: Pipeline | None = None
    # Where this process's uploads leave their originals for its own workers (spool.py).
    spool: Spool | None = None
    # Photos being written to storage at once, across requests: each holds its bytes in memory
    # (several copies, through the driver), so this bounds memory whatever the upload load.
    store_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))

    async def on_matches_changed(self, user_ids: set[int]) -> None:
        """Tell whoever shows these users' photos (caches, live pages, other instances)."""
        await self.feed.publish(user_ids)

    async def on_accounts_changed(self, user_ids: set[int]) -> None:
        """Signed out, erased or new selfie: every instance drops its cached copies."""
        await self.feed.publish(user_ids, kind=ACCOUNTS)

    async def on_photos_changed(self, event_ids: set[int]) -> None:
        """A photo of these events was added, processed or deleted, or the event was deleted:
        every instance drops its cached galleries of them."""
        await self.feed.publish(event_ids, kind=PHOTOS)

    async def on_events_changed(self, event_ids: set[int]) -> None:
        """These events' settings changed, or they were deleted: every instance drops its
        cached copies of them, and who it knew may see their galleries."""
        await self.feed.publish(event_ids, kind=EVENTS)


@asynccontextmanager
async def open_services(settings: Settings, *, run_workers: bool) -> AsyncIterator[AppState]:
    async with AsyncExitStack() as stack:
        db = Database(settings)
        stack.push_async_callback(db.aclose)
        caches = Caches.create(
            my_photos_s=settings.cache_my_photos_s,
            events_s=settings.cache_events_s,
            users_s=settings.cache_users_s,
            all_photos_s=settings.cache_all_photos_s,
        )
        feed = await stack.enter_async_context(
            MatchFeed(postgres_dsn=None if db.is_sqlite else _asyncpg_dsn(settings.database_url))
        )
        feed.add_listener(caches.matches_changed)
        feed.add_listener(caches.photos_changed, kind=PHOTOS)
        feed.add_listener(caches.events_changed, kind=EVENTS)
        limits = rate_limiter(settings)
        stack.push_async_callback(limits.aclose)
        storage = await open_storage(stack, settings, db=db)
        spool = await open_spool(stack, settings) if run_workers else None
        if spool is not None:
            storage = SpooledStorage(storage, spool)
        engine = await open_engine(
            stack, settings, db=db, storage=storage, on_matches_changed=feed.publish
        )
        auth = Authenticator(
            db=db,
            secret_key=settings.secret_key,
            session_max_age_s=settings.session_max_age_s,
            users=caches.users,
            sessions=caches.sessions,
        )
        streams = StreamHub(db=db, auth=auth)
        stack.push_async_callback(streams.aclose)
        state = AppState(
            settings=settings,
            db=db,
            auth=auth,
            storage=storage,
            engine=engine,
            caches=caches,
            feed=feed,
            limits=limits,
            mailer=Mailer(settings),
            stream_slots=StreamSlots(settings.max_streams or open_files().stream_capacity),
            streams=streams,
            memberships=BatchLoader(functools.partial(memberships, db)),
            spool=spool,
        )
        feed.add_listener(auth.forget_users, kind=ACCOUNTS)
        feed.add_listener(streams.news)
        feed.add_listener(streams.news, kind=ACCOUNTS)
        if run_workers:
            # Models load in the background: requests are served while the engine warms up.
            warm_up = asyncio.create_task(engine.warm_up())
            stack.callback(warm_up.cancel)
            state.pipeline = build_pipeline(state)
            await stack.enter_async_context(state.pipeline)
            await stack.enter_async_context(build_notifier(state))
        yield state


async def open_spool(stack: AsyncExitStack, settings: Settings) -> Spool | None:
    """The spool of a process that runs the workers, unless turned off or another process of
    the data directory has it."""
    if not settings.spool_mb:
        return None
    spool = Spool(settings.data_dir / "spool", max_bytes=settings.spool_mb * 1024 * 1024)
    if not spool.open():
        logger.info(
            "another process keeps uploads in %s; this one's jobs read the storage",
            spool.directory,
            extra={"action": "spool_taken"},
        )
        return None
    stack.push_async_callback(spool.close)
    return spool


def build_notifier(state: AppState) -> AbstractAsyncContextManager[object]:
    """New-photo emails, sent by the processes that run the workers, when email can be sent."""
    if not notifications_available(state.mailer, state.settings):
        return nullcontext()
    return Notifier(db=state.db, mailer=state.mailer, settings=state.settings)


def rate_limiter(settings: Settings) -> RateLimiter:
    return RateLimiter(
        storage_url=settings.rate_limit_storage,
        rules={
            "login_ip": (
                settings.rate_login_ip,
                "Too many failed sign-ins from your network. Wait a minute and try again.",
            ),
            "login_account": (
                settings.rate_login_account,
                "Too many failed sign-ins for this account. Check the password, or wait.",
            ),
            "signup_ip": (settings.rate_signup_ip, "Too many new accounts from your network."),
            "selfie": (settings.rate_selfie, "Too many selfie uploads."),
            "upload": (settings.rate_upload, "Too many upload requests. Send fewer, larger ones."),
            "api_read": (settings.rate_api_read, "Too many requests."),
            "reset_ip": (
                settings.rate_reset_ip,
                "Too many requests for emailed links (password reset, sign-in) from your "
                "network. Wait and try again.",
            ),
            "reset_email": (
                settings.rate_reset_email,
                "Too many emailed links (password reset, sign-in) asked for this email. Check "
                "your inbox and spam folder for the links already sent, or wait and try again.",
            ),
            "share_links": (
                settings.rate_share_links,
                "Too many share links made from your account.",
            ),
        },
    )


def _asyncpg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def build_pipeline(state: AppState) -> Pipeline:
    settings = state.settings

    async def housekeeping() -> None:
        purged = await state.engine.purge_expired(retention_days=settings.retention_days)
        if purged:
            logger.info("purged %d expired faces", purged, extra={"action": "retention_purge"})

    async def photo_job_ended(job: ClaimedJob) -> None:
        # Processed, failed or retried: the photo's status in its event's gallery changed.
        if job.kind is JobKind.process_photo and job.event_id is not None:
            await state.on_photos_changed({job.event_id})

    return Pipeline(
        db=state.db,
        handlers=state.engine.handlers(),
        workers=settings.workers,
        lease_s=settings.job_lease_s,
        timeout_s=settings.job_timeout_s,
        grace_s=settings.shutdown_grace_s,
        retry_base_s=settings.job_retry_base_s,
        housekeeping=housekeeping,
        housekeeping_interval_s=HOUSEKEEPING_INTERVAL_S,
        on_job_ended=photo_job_ended,
    )
