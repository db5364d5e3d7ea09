"""The one order in which anything is deleted: the engine's copy, then the rows, then the news.

The engine forgets first, inside the transaction that deletes the rows: if the cloud fails,
nothing is deleted and the request can be repeated. Photo bytes go after the rows commit (a
storage failure then leaves unreachable bytes, never a photo without them), and every cache and
live page of the users concerned hears of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Delete, Select
from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    # Annotations only, as in findme/domain/photos.py.
    from findme.services import AppState

Forget = Callable[[AsyncSession], Awaitable[None]]


async def erase(
    state: AppState,
    *,
    forget: Forget,
    rows: Delete,
    photos: Select[Any],
    matched_users: Select[Any],
    events: set[int] | None = None,
    accounts: set[int] | None = None,
) -> None:
    """Delete `rows`; `photos` and `matched_users` select what goes with them."""
    async with state.db.transaction() as session:
        photo_ids = list(await session.scalars(photos))
        matched = set(await session.scalars(matched_users))
        await forget(session)
        await session.execute(rows)
    if events:
        await state.on_events_changed(set(events))
        await state.on_photos_changed(set(events))
    if accounts:
        await state.on_accounts_changed(accounts)
        matched |= accounts
    await state.on_matches_changed(matched)
    await state.storage.delete(photo_ids)
