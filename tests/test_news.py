"""News between instances: whatever one instance publishes, however much at once, others hear it."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from findme.live import MatchFeed
from findme.settings import Settings
from tests.scenes import feed_dsn

MEMBERS = 200


async def test_news_published_side_by_side_all_reach_another_instance(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    heard: set[int] = set()
    everyone_heard = asyncio.Event()

    async def hear(user_ids: set[int]) -> None:
        heard.update(user_ids)
        if len(heard) == MEMBERS:
            everyone_heard.set()

    caplog.set_level(logging.WARNING, logger="findme.live")
    url = feed_dsn(settings)
    async with MatchFeed(postgres_dsn=url) as other, MatchFeed(postgres_dsn=url) as this:
        other.add_listener(hear)
        # Workers finishing their jobs together: each publishes its member's news at once.
        await asyncio.gather(*(this.publish({member}) for member in range(1, MEMBERS + 1)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone_heard.wait(), 10)
    assert set(range(1, MEMBERS + 1)) - heard == set()
    assert [record.getMessage() for record in caplog.records] == []
