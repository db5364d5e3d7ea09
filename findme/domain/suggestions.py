""" "Is this you?": the suggestions a member is offered, the face each shows, and the answer.

A suggestion shows its member one face, never the photo: until they say "yes, it's me" the
photo is not theirs to see (`findme.domain.access`). Yes makes a confirmed match, which every
later matching keeps; no is a "not me", after which the photo is neither matched nor offered
to them again. Whatever the caller may not answer reads as already answered (404, one
sentence), so nobody learns which suggestions exist by trying ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import EventMember, Face, FaceMatch, MatchSuggestion, utcnow
from findme.domain.access import NO_EVENT
from findme.domain.photos import forget_match, my_photo_item
from findme.engines.base import lock_events
from findme.errors import NotFound

if TYPE_CHECKING:
    # Annotations only, as in findme/domain/photos.py.
    from findme.services import AppState

NO_SUGGESTION = "This suggestion was already answered, or it is not yours."


async def my_suggestions(
    session: AsyncSession, *, user_id: int, event_id: int
) -> list[dict[str, Any]]:
    """The caller's suggestions in an event they joined; 404 as for an unknown event otherwise
    (an organiser or admin is offered nothing in an event they did not join)."""
    if await session.get(EventMember, (event_id, user_id)) is None:
        raise NotFound(NO_EVENT)
    ids = await session.execute(
        select(MatchSuggestion.id, MatchSuggestion.photo_id)
        .where(MatchSuggestion.user_id == user_id, MatchSuggestion.event_id == event_id)
        .order_by(MatchSuggestion.id)
    )
    return [
        {"id": row.id, "photo_id": row.photo_id, "face_url": f"/api/suggestions/{row.id}/face"}
        for row in ids
    ]


async def suggested_face(
    state: AppState, *, user_id: int, suggestion_id: int
) -> tuple[bytes, tuple[int, int, int, int]]:
    """The original of a suggestion's photo and its face box (in the upright photo's pixels),
    for the suggestion's own member only."""
    async with state.db.sessions() as session:
        row = (
            await session.execute(
                select(MatchSuggestion.photo_id, Face.box)
                .join(Face, Face.id == MatchSuggestion.face_id)
                .where(MatchSuggestion.id == suggestion_id, MatchSuggestion.user_id == user_id)
            )
        ).one_or_none()
    if row is None or len(row.box) != 4:
        raise NotFound(NO_SUGGESTION)
    left, top, right, bottom = (int(value) for value in row.box)
    return await state.storage.read_original(row.photo_id), (left, top, right, bottom)


async def answer_suggestion(
    state: AppState, *, user_id: int, suggestion_id: int, its_me: bool
) -> dict[str, Any] | None:
    """Yes: a confirmed match, returned as "my photos" lists it. No: "not me". Either way the
    suggestion goes; of two answers at once, the one that deletes it wins and the other is told
    it was answered."""
    async with state.db.transaction() as session:
        event_id = await session.scalar(
            select(MatchSuggestion.event_id).where(
                MatchSuggestion.id == suggestion_id, MatchSuggestion.user_id == user_id
            )
        )
        if event_id is None:
            raise NotFound(NO_SUGGESTION)
        # Matching writes the event's matches and suggestions under this lock: a recompute
        # running now can neither offer this photo again nor insert the match alongside.
        await lock_events(session, [event_id])
        taken = (
            await session.execute(
                delete(MatchSuggestion)
                .where(MatchSuggestion.id == suggestion_id, MatchSuggestion.user_id == user_id)
                .returning(
                    MatchSuggestion.photo_id,
                    MatchSuggestion.event_id,
                    MatchSuggestion.face_id,
                    MatchSuggestion.distance,
                )
            )
        ).one_or_none()
        if taken is None:
            raise NotFound(NO_SUGGESTION)
        if its_me:
            await _confirm(session, user_id=user_id, suggestion=taken)
        else:
            await forget_match(session, photo_id=taken.photo_id, user_id=user_id)
    await state.on_matches_changed({user_id})
    if not its_me:
        return None
    async with state.db.sessions() as session:
        return await my_photo_item(session, user_id=user_id, photo_id=taken.photo_id)


async def _confirm(session: AsyncSession, *, user_id: int, suggestion: Any) -> None:
    """The confirmed match; one the rule made meanwhile (a new selfie) is confirmed as it is."""
    now = utcnow()
    confirmed = await session.execute(
        update(FaceMatch)
        .where(FaceMatch.photo_id == suggestion.photo_id, FaceMatch.user_id == user_id)
        .values(confirmed_at=now)
    )
    if confirmed.rowcount:  # type: ignore[attr-defined]
        return
    session.add(
        FaceMatch(
            photo_id=suggestion.photo_id,
            user_id=user_id,
            event_id=suggestion.event_id,
            face_id=suggestion.face_id,
            distance=suggestion.distance,
            matched_at=now,
            confirmed_at=now,
        )
    )
