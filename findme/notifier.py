"""The loop that sends new-photo emails: one round every FINDME_NOTIFY_INTERVAL_S.

One per process that runs the workers; several processes may run one each, since a round
claims what it mails (`findme.domain.notifications`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from findme.db import Database
from findme.domain.notifications import send_new_photo_mails
from findme.mail import Mailer
from findme.settings import Settings

logger = logging.getLogger(__name__)


class Notifier:
    """Started and stopped with the process's services, as an async context manager."""

    def __init__(self, *, db: Database, mailer: Mailer, settings: Settings) -> None:
        self._db = db
        self._mailer = mailer
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Notifier:
        self._task = asyncio.create_task(self._run(), name="new-photo-notifier")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        # The first round waits an interval too: a restart does not send at once.
        while True:
            await asyncio.sleep(self._settings.notify_interval_s)
            try:
                sent = await send_new_photo_mails(
                    db=self._db, mailer=self._mailer, settings=self._settings
                )
            except Exception:
                logger.exception("new-photo emails failed", extra={"action": "photo_mail_error"})
                continue
            if sent:
                logger.info("sent %d new-photo emails", sent, extra={"action": "photo_mails_sent"})
