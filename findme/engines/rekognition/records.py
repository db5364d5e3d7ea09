"""What the database records of the cloud work, and the matches it gives.

A member's selfies are indexed as `user-<id>` faces whose ids are kept, space-separated, in
`event_members.cloud_face_id`; a photo's faces are `faces.cloud_face_id`. Matches merge what
SearchFaces found with the matches already stored, by the rule every engine follows.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import Face, FaceMatch
from findme.engines.matching import Assignment, Candidate, choose_matches, rejections, sync_matches
from findme.engines.rekognition.client import FaceHit, parse_external_id, similarity_distance

# event_members.cloud_face_id of a selfie Rekognition would not index: not tried again until the
# selfie changes (which resets it to NULL).
NO_FACE = ""
# Prefixed to event_members.cloud_face_id while the selfies, indexed after photo faces, still owe
# their one SearchFaces each: recorded before searching, so a retry searches without indexing.
SEARCH_PENDING = "?"
# event_members.cloud_face_id holds the face ids of all the member's selfies, space-separated.
SEPARATOR = " "


@dataclass(frozen=True)
class StoredFace:
    id: int
    cloud_face_id: str


def record_face_ids(face_ids: list[str], *, search_owed: bool) -> str:
    """event_members.cloud_face_id for these selfie faces (NO_FACE for none)."""
    joined = SEPARATOR.join(face_ids)
    return SEARCH_PENDING + joined if joined and search_owed else joined


def recorded_face_ids(recorded: str | None) -> list[str]:
    return (recorded or "").removeprefix(SEARCH_PENDING).split()


async def has_stored_faces(session: AsyncSession, event_id: int) -> bool:
    found = await session.scalar(
        select(Face.id).where(Face.event_id == event_id, Face.cloud_face_id.is_not(None)).limit(1)
    )
    return found is not None


async def rematch_member(
    session: AsyncSession, event_id: int, user_id: int, hits: list[FaceHit]
) -> set[int]:
    """The member's matches from the search of their newly indexed face; the matches of an
    earlier selfie go."""
    by_face = {hit.face_id: hit for hit in hits if photo_id_of(hit.external_image_id) is not None}
    found: list[Candidate] = []
    if by_face:
        faces = await session.execute(
            select(Face.id, Face.photo_id, Face.cloud_face_id).where(
                Face.event_id == event_id, Face.cloud_face_id.in_(list(by_face))
            )
        )
        found = [
            Candidate(
                row.id,
                row.photo_id,
                user_id,
                similarity_distance(by_face[row.cloud_face_id].similarity),
            )
            for row in faces
        ]
    before = set(
        await session.scalars(
            select(FaceMatch.photo_id).where(
                FaceMatch.event_id == event_id, FaceMatch.user_id == user_id
            )
        )
    )
    photo_ids = before | {candidate.photo_id for candidate in found}
    if not photo_ids:
        return set()
    return await apply_evidence(session, event_id, found, photo_ids=photo_ids, renewed_user=user_id)


async def stored_faces(session: AsyncSession, photo_id: int) -> list[StoredFace]:
    rows = await session.execute(
        select(Face.id, Face.cloud_face_id)
        .where(Face.photo_id == photo_id, Face.cloud_face_id.is_not(None))
        .order_by(Face.id)
    )
    return [StoredFace(row.id, row.cloud_face_id) for row in rows]


async def apply_evidence(
    session: AsyncSession,
    event_id: int,
    found: list[Candidate],
    *,
    photo_ids: Collection[int],
    renewed_user: int | None = None,
) -> set[int]:
    """Merge new evidence into the matches of these photos.

    Stored matches are evidence too (a face that found its member earlier keeps them unless a
    more similar member claims it), except those of `renewed_user`, whose selfie is new.
    """
    existing = await session.execute(
        select(FaceMatch.photo_id, FaceMatch.user_id, FaceMatch.face_id, FaceMatch.distance).where(
            FaceMatch.event_id == event_id, FaceMatch.photo_id.in_(photo_ids)
        )
    )
    candidates = list(found)
    kept: dict[tuple[int, int], Assignment] = {}
    for row in existing:
        if row.user_id == renewed_user:
            continue
        if row.face_id is None:  # its face was purged (retention): the match stays as it is
            kept[(row.photo_id, row.user_id)] = Assignment(None, row.distance)
        else:
            candidates.append(Candidate(row.face_id, row.photo_id, row.user_id, row.distance))
    refused = await rejections(session, event_id, photo_ids=photo_ids)
    wanted = kept | choose_matches(candidates, rejected=refused)
    return await sync_matches(session, event_id, wanted, photo_ids=photo_ids)


def user_id_of(external_image_id: str) -> int | None:
    parsed = parse_external_id(external_image_id)
    return parsed[1] if parsed is not None and parsed[0] == "user" else None


def photo_id_of(external_image_id: str) -> int | None:
    parsed = parse_external_id(external_image_id)
    return parsed[1] if parsed is not None and parsed[0] == "photo" else None
