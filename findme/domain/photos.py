"""Photos: storing an upload, the gallery and "my photos" lists, deletion and "not me"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiofiles
from sqlalchemy import ARRAY, BigInteger, Row, Select, and_, bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

from findme import jobs
from findme.auth import Principal
from findme.db import Face, FaceMatch, MatchSuggestion, Photo, RejectedMatch
from findme.domain.access import photos_seen_by
from findme.domain.erasure import erase
from findme.domain.shares import revoke_links_to
from findme.domain.views import iso, photo_json
from findme.errors import AlreadyExists
from findme.images import CheckedImage
from findme.uploads import ReceivedFile

if TYPE_CHECKING:
    # Annotations only: the services module opens the stream hub, which reads through this
    # domain, so importing it here would be a cycle.
    from findme.services import AppState

# Lists select these columns only: no ORM objects to build, never the byte columns.
PHOTO_COLUMNS = (
    Photo.id,
    Photo.event_id,
    Photo.filename,
    Photo.width,
    Photo.height,
    Photo.status,
    Photo.uploaded_at,
)


# A request's photos are committed a few at a time: a transaction, a duplicate check, a commit
# that waits for the disk and the news of it for every photo made storing 100 photos 15 % slower
# (docs/BENCHMARKS.md, "First session of 2026-12-05"). The first photo is committed alone, so
# its job starts while the rest are stored.
PHOTOS_PER_COMMIT = 8

Upload = tuple[ReceivedFile, CheckedImage]


async def store_photos(
    state: AppState, *, uploader_id: int, event_id: int, uploads: Sequence[Upload]
) -> list[dict[str, Any]]:
    """Store a request's checked uploads, or name the copy already stored: the same bytes twice
    in an event are a duplicate, whichever request (or file of this one) came first. Each photo
    goes in with its bytes and its job; the job makes the thumbnail, from the decode it needs
    for the faces anyway. Returns each upload's result, in their order."""
    stored = await _existing_photos(state, event_id, {upload.sha256 for upload, _ in uploads})
    created: set[str] = set()
    new: list[Upload] = []
    for upload, checked in uploads:
        if upload.sha256 not in stored and upload.sha256 not in created:
            created.add(upload.sha256)
            new.append((upload, checked))
    groups = [new[:1]] + [
        new[start : start + PHOTOS_PER_COMMIT] for start in range(1, len(new), PHOTOS_PER_COMMIT)
    ]
    job_ids: dict[str, int] = {}
    for group in groups:
        if not group:
            continue
        try:
            job_ids |= await _store_group(state, uploader_id, event_id, group, stored)
        except AlreadyExists:
            # Another request stored some of these bytes first and the unique constraint
            # refused the whole group: each photo then goes on its own.
            for item in group:
                try:
                    job_ids |= await _store_group(state, uploader_id, event_id, [item], stored)
                except AlreadyExists:
                    found = await _existing_photos(state, event_id, {item[0].sha256})
                    if not found:
                        message = "This photo could not be stored. Send it again."
                        raise AlreadyExists(message) from None
                    stored |= found
                    created.discard(item[0].sha256)
    results: list[dict[str, Any]] = []
    for upload, _ in uploads:
        result: dict[str, Any] = {"filename": upload.filename, "error": None, "detail": None}
        result |= {"status": "duplicate", "photo_id": stored[upload.sha256], "job_id": None}
        if upload.sha256 in created:
            created.discard(upload.sha256)  # a later copy in this request is a duplicate
            result |= {"status": "created", "job_id": job_ids[upload.sha256]}
        results.append(result)
    return results


async def _store_group(
    state: AppState,
    uploader_id: int,
    event_id: int,
    group: Sequence[Upload],
    stored: dict[str, int],
) -> dict[str, int]:
    """Insert these photos, their bytes and their jobs in one transaction; adds their ids to
    `stored` once committed and returns their jobs' ids by hash."""
    rows: list[tuple[ReceivedFile, Photo, int]] = []
    async with state.store_slots, state.db.transaction() as session:
        for upload, checked in group:
            async with aiofiles.open(upload.path, "rb") as source:
                original = await source.read()
            photo = Photo(
                event_id=event_id,
                uploader_id=uploader_id,
                filename=upload.filename,
                sha256=upload.sha256,
                content_type=checked.content_type,
                size_bytes=len(original),
                width=checked.width,
                height=checked.height,
            )
            session.add(photo)
            await state.storage.save(session, photo, original)
            await session.flush()
            # Once sent, the bytes leave the session: a group holds one photo's at a time.
            session.expire(photo, ["original"])
            job = await jobs.enqueue_photo(session, photo_id=photo.id, event_id=event_id)
            rows.append((upload, photo, job.id))
    for upload, photo, _ in rows:
        stored[upload.sha256] = photo.id
        if state.spool is not None:
            # The job runs in this process, most likely: it reads the file, not the storage.
            await state.spool.keep(photo.id, upload.path, photo.size_bytes)
    if state.pipeline is not None:
        state.pipeline.notify()
    await state.on_photos_changed({event_id})
    return {upload.sha256: job_id for upload, _, job_id in rows}


async def _existing_photos(state: AppState, event_id: int, hashes: set[str]) -> dict[str, int]:
    """The event's photos among these hashes: {sha256: photo id}."""
    async with state.db.sessions() as session:
        rows = await session.execute(
            select(Photo.sha256, Photo.id).where(
                Photo.event_id == event_id, Photo.sha256.in_(hashes)
            )
        )
        return {sha256: photo_id for sha256, photo_id in rows}


async def gallery_items(
    session: AsyncSession,
    principal: Principal,
    *,
    event_id: int | None,
    cursor: int,
    limit: int,
) -> list[dict[str, Any]]:
    """The photos the caller may see (`photos_seen_by`) of one event, or of every event,
    after `cursor`."""
    query = select(*PHOTO_COLUMNS).where(Photo.id > cursor, photos_seen_by(principal))
    if event_id is not None:
        query = query.where(Photo.event_id == event_id)
    rows = (await session.execute(query.order_by(Photo.id).limit(limit))).all()
    return [photo_json(row) for row in rows]


# The pages' statements are built once and run with their values bound: building one costs
# about as much as running it (docs/BENCHMARKS.md, "Lists").
_GALLERY_PAGE = (
    select(*PHOTO_COLUMNS)
    .where(Photo.event_id == bindparam("event_id"), Photo.id > bindparam("cursor"))
    .order_by(Photo.id)
    .limit(bindparam("limit"))
)
# A member's own gallery walks their matches, not the event's photos: the cursor and the order
# are on face_matches' (user_id, event_id, photo_id) index, so a page reads its own rows only,
# however large the event and however few photos the member is in.
_MEMBER_GALLERY_PAGE = (
    select(*PHOTO_COLUMNS)
    .join(FaceMatch, FaceMatch.photo_id == Photo.id)
    .where(
        FaceMatch.user_id == bindparam("member_id"),
        FaceMatch.event_id == bindparam("event_id"),
        FaceMatch.photo_id > bindparam("cursor"),
    )
    .order_by(FaceMatch.photo_id)
    .limit(bindparam("limit"))
)


async def event_gallery_items(
    session: AsyncSession, *, event_id: int, member_id: int | None, cursor: int, limit: int
) -> list[dict[str, Any]]:
    """An event's photos after `cursor`: every one, or those `member_id` is matched to (which
    the caller sees is `findme.domain.access.gallery_member`'s to say, checked before)."""
    page = {"event_id": event_id, "cursor": cursor, "limit": limit}
    if member_id is None:
        rows = await _page_rows(session, _GALLERY_PAGE, page)
    else:
        rows = await _page_rows(session, _MEMBER_GALLERY_PAGE, page | {"member_id": member_id})
    return [photo_json(row) for row in rows]


async def _page_rows(
    session: AsyncSession, statement: Executable, values: dict[str, int]
) -> Sequence[Row[Any]]:
    """Run on the session's connection: rows of columns need none of the ORM's machinery."""
    connection = await session.connection()
    rows: Sequence[Row[Any]] = (await connection.execute(statement, values)).all()
    return rows


def _matched_photos() -> Select[Any]:
    """Matched photos with the match and the photo's face count: what "my photos" lists and
    what the live stream sends."""
    faces = select(func.count()).where(Face.photo_id == Photo.id).scalar_subquery()
    return (
        select(FaceMatch.id.label("match_id"), *PHOTO_COLUMNS, FaceMatch.matched_at)
        .add_columns(faces.label("faces"))
        .join(FaceMatch, FaceMatch.photo_id == Photo.id)
    )


def _my_matches(user_id: int, event_id: int | None) -> Select[Any]:
    """The photos a person appears in (in one event, or in all)."""
    query = _matched_photos().where(FaceMatch.user_id == user_id)
    if event_id is not None:
        query = query.where(FaceMatch.event_id == event_id)
    return query


def _matched_photo_json(row: Any) -> dict[str, Any]:
    return photo_json(row) | {"matched_at": iso(row.matched_at), "faces": row.faces}


# The cursor and the order are on the match's photo_id (the same value as the photo's id), which
# the index of face_matches holds: a deep page no longer reads all of the member's matches.
_MY_PAGE = (
    _matched_photos()
    .where(FaceMatch.user_id == bindparam("user_id"), FaceMatch.photo_id > bindparam("cursor"))
    .order_by(FaceMatch.photo_id)
    .limit(bindparam("limit"))
)
_MY_EVENT_PAGE = _MY_PAGE.where(FaceMatch.event_id == bindparam("event_id"))


async def my_photo_items(
    session: AsyncSession, *, user_id: int, event_id: int | None, cursor: int, limit: int
) -> list[dict[str, Any]]:
    """A page of "my photos", in photo order after `cursor`."""
    page = {"user_id": user_id, "cursor": cursor, "limit": limit}
    if event_id is None:
        rows = await _page_rows(session, _MY_PAGE, page)
    else:
        rows = await _page_rows(session, _MY_EVENT_PAGE, page | {"event_id": event_id})
    return [_matched_photo_json(row) for row in rows]


async def my_matches_after(
    session: AsyncSession, *, user_id: int, event_id: int | None, after: int, limit: int | None
) -> list[tuple[int, dict[str, Any]]]:
    """(match id, item) of the matches made after match `after`, in the order they were made."""
    query = _my_matches(user_id, event_id).where(FaceMatch.id > after)
    rows = (await session.execute(query.order_by(FaceMatch.id).limit(limit))).all()
    return [(row.match_id, _matched_photo_json(row) | {"match_id": row.match_id}) for row in rows]


# Built once: the live streams' hub runs it for every burst and sweep, and a statement built
# per call left ~150 objects of cyclic garbage for the collector each time.
_CURSORS = select(
    func.unnest(bindparam("users", type_=ARRAY(BigInteger))).label("user_id"),
    func.unnest(bindparam("afters", type_=ARRAY(BigInteger))).label("after"),
).subquery("cursors")
_MATCHES_AFTER_CURSORS = (
    _matched_photos()
    .add_columns(FaceMatch.user_id)
    .join(_CURSORS, and_(FaceMatch.user_id == _CURSORS.c.user_id, FaceMatch.id > _CURSORS.c.after))
    .order_by(FaceMatch.id)
)


async def matches_after_of_many(
    session: AsyncSession, after_by_user: dict[int, int]
) -> dict[int, list[tuple[int, int, dict[str, Any]]]]:
    """Per member, (match id, event id, item) of the matches made after their `after`, in the
    order they were made: what a burst of news brings the live streams of many members.

    On PostgreSQL one statement, whatever the number of members: the cursors go in as two
    arrays, joined to the matches. SQLite (one person trying FindMe out) reads member by member.
    """
    found: dict[int, list[tuple[int, int, dict[str, Any]]]] = {}
    if session.get_bind().dialect.name != "postgresql":
        for user_id, after in after_by_user.items():
            rows = await my_matches_after(
                session, user_id=user_id, event_id=None, after=after, limit=None
            )
            if rows:
                found[user_id] = [(match_id, item["event_id"], item) for match_id, item in rows]
        return found
    result = await session.execute(
        _MATCHES_AFTER_CURSORS,
        {"users": list(after_by_user), "afters": list(after_by_user.values())},
    )
    for row in result.all():
        item = _matched_photo_json(row) | {"match_id": row.match_id}
        found.setdefault(row.user_id, []).append((row.match_id, row.event_id, item))
    return found


async def my_photo_item(
    session: AsyncSession, *, user_id: int, photo_id: int
) -> dict[str, Any] | None:
    """One of "my photos", as its page lists it; None if it is not (or no longer) mine."""
    query = _my_matches(user_id, None).where(Photo.id == photo_id)
    row = (await session.execute(query)).one_or_none()
    return None if row is None else _matched_photo_json(row)


async def my_matched_files(session: AsyncSession, *, user_id: int, event_id: int) -> list[Any]:
    """(id, filename, size_bytes) of the photos of an event a person appears in."""
    rows = await session.execute(
        select(Photo.id, Photo.filename, Photo.size_bytes)
        .join(FaceMatch, FaceMatch.photo_id == Photo.id)
        .where(FaceMatch.user_id == user_id, FaceMatch.event_id == event_id)
        .order_by(Photo.id)
    )
    return list(rows.all())


async def latest_match_id(session: AsyncSession, *, user_id: int, event_id: int | None) -> int:
    """Where a live page's stream starts: after the matches the page already shows."""
    query = select(func.max(FaceMatch.id)).where(FaceMatch.user_id == user_id)
    if event_id is not None:
        query = query.where(FaceMatch.event_id == event_id)
    return await session.scalar(query) or 0


async def delete_photo(state: AppState, *, photo_id: int, event_id: int) -> None:
    """The photo with its faces and matches; its cloud faces go first."""

    async def forget(session: AsyncSession) -> None:
        await state.engine.forget_photo(session, photo_id)

    await erase(
        state,
        forget=forget,
        rows=delete(Photo).where(Photo.id == photo_id),
        photos=select(Photo.id).where(Photo.id == photo_id),
        matched_users=select(FaceMatch.user_id).where(FaceMatch.photo_id == photo_id),
    )
    await state.on_photos_changed({event_id})


async def reject_match(state: AppState, *, photo_id: int, user_id: int) -> None:
    """ "Not me": the person's match to this photo goes, and never comes back."""
    async with state.db.transaction() as session:
        await forget_match(session, photo_id=photo_id, user_id=user_id)
    await state.on_matches_changed({user_id})


async def forget_match(session: AsyncSession, *, photo_id: int, user_id: int) -> None:
    """What "not me" stores, whether said of a match or of a suggestion ("Is this you?")."""
    for made in (FaceMatch, MatchSuggestion):
        await session.execute(
            delete(made).where(made.photo_id == photo_id, made.user_id == user_id)
        )
    if await session.get(RejectedMatch, (photo_id, user_id)) is None:
        session.add(RejectedMatch(photo_id=photo_id, user_id=user_id))
    # Not theirs to share either.
    await revoke_links_to(session, photo_id=photo_id, user_id=user_id)
