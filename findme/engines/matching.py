"""The matching rule both engines share, and how matches are stored.

A face is matched to at most one member of its event: the nearest whose distance is under the
threshold (or, in the cloud, the most similar), never to several look-alikes; a member's "not
me" keeps them from a photo for good. A face whose nearest member is just beyond the threshold
(within the suggestion margin) is offered to that member instead ("Is this you?"): it counts
only once they confirm, and a confirmed match stays whatever the rule says later. The rule is
pure; `sync_matches` and `sync_suggestions` write its outcome.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import FaceMatch, MatchSuggestion, Photo, RejectedMatch, utcnow

_DTYPE = np.dtype("<f4")


@dataclass(frozen=True)
class FaceRow:
    id: int
    photo_id: int
    descriptor: bytes


@dataclass(frozen=True)
class Assignment:
    # None only for a match kept after retention purged its face.
    face_id: int | None
    distance: float


@dataclass(frozen=True)
class Candidate:
    """Evidence that a face may be a member; a lower distance is more alike."""

    face_id: int
    photo_id: int
    user_id: int
    distance: float


def choose_matches(
    candidates: Iterable[Candidate], *, rejected: Iterable[tuple[int, int]] = ()
) -> dict[tuple[int, int], Assignment]:
    """(photo_id, user_id) → face: each face goes to its nearest member who did not reject the
    photo ("not me"), never to several look-alikes."""
    refused = set(rejected)
    nearest: dict[int, Candidate] = {}
    for candidate in candidates:
        if (candidate.photo_id, candidate.user_id) in refused:
            continue
        best = nearest.get(candidate.face_id)
        if best is None or candidate.distance < best.distance:
            nearest[candidate.face_id] = candidate
    return _nearest_face_per_match(nearest.values())


def _nearest_face_per_match(chosen: Iterable[Candidate]) -> dict[tuple[int, int], Assignment]:
    """A member seen in one photo through several faces is matched through the nearest one."""
    matches: dict[tuple[int, int], Assignment] = {}
    for candidate in chosen:
        key = (candidate.photo_id, candidate.user_id)
        if key not in matches or candidate.distance < matches[key].distance:
            matches[key] = Assignment(candidate.face_id, candidate.distance)
    return matches


@dataclass(frozen=True)
class Matching:
    """What the rule makes of some faces: matches, and suggestions ("Is this you?"), both as
    (photo_id, user_id) → face."""

    matches: dict[tuple[int, int], Assignment]
    suggestions: dict[tuple[int, int], Assignment]


def match_faces(
    faces: list[FaceRow],
    selfies: Sequence[tuple[int, bytes]],
    *,
    threshold: float,
    margin: float = 0.0,
    rejected: Iterable[tuple[int, int]] = (),
) -> Matching:
    """Each face's nearest member: a match under `threshold`, a suggestion in
    [threshold, threshold + margin) unless that member is matched to the photo already.

    `selfies` are (user_id, descriptor) pairs, several per member when they enrolled several
    selfies: a member is as near as their nearest selfie.
    """
    nearest = _nearest_members(faces, selfies, rejected=rejected)
    matches = _nearest_face_per_match(c for c in nearest if c.distance < threshold)
    offered = _nearest_face_per_match(
        c for c in nearest if threshold <= c.distance < threshold + margin
    )
    suggestions = {key: face for key, face in offered.items() if key not in matches}
    return Matching(matches, suggestions)


def assign_faces(
    faces: list[FaceRow],
    selfies: Sequence[tuple[int, bytes]],
    *,
    threshold: float,
    rejected: Iterable[tuple[int, int]] = (),
) -> dict[tuple[int, int], Assignment]:
    """(photo_id, user_id) → the face that matched, for every face's nearest member."""
    return match_faces(faces, selfies, threshold=threshold, rejected=rejected).matches


def _nearest_members(
    faces: list[FaceRow],
    selfies: Sequence[tuple[int, bytes]],
    *,
    rejected: Iterable[tuple[int, int]],
) -> list[Candidate]:
    """Every face with its nearest member who did not reject its photo, however far."""
    if not faces or not selfies:
        return []
    owners = [user_id for user_id, _ in selfies]
    distances = descriptor_distances(
        [face.descriptor for face in faces], [descriptor for _, descriptor in selfies]
    )
    columns: dict[int, list[int]] = defaultdict(list)
    for index, user_id in enumerate(owners):
        columns[user_id].append(index)
    photo_rows: dict[int, list[int]] = defaultdict(list)
    for row, face in enumerate(faces):
        photo_rows[face.photo_id].append(row)
    for photo_id, user_id in rejected:
        for column in columns.get(user_id, []):
            distances[photo_rows.get(photo_id, []), column] = np.inf
    # The nearest selfie of all is the nearest selfie of the nearest member.
    best = distances.argmin(axis=1)
    return [
        Candidate(face.id, face.photo_id, owners[best[row]], float(distances[row, best[row]]))
        for row, face in enumerate(faces)
        if np.isfinite(distances[row, best[row]])
    ]


def descriptor_distances(faces: Sequence[bytes], selfies: Sequence[bytes]) -> np.ndarray:
    """The faces-by-selfies matrix of distances between descriptors (128 float32 each)."""
    a = np.frombuffer(b"".join(faces), _DTYPE).reshape(len(faces), -1)
    b = np.frombuffer(b"".join(selfies), _DTYPE).reshape(len(selfies), -1)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    # |a-b|^2 = |a|^2 + |b|^2 - 2ab: a faces-by-selfies matrix, never a faces-by-selfies-by-128
    # array (2,000 faces and 200 members would need 400 MB).
    squared = (a64**2).sum(1)[:, None] + (b64**2).sum(1)[None, :] - 2 * a64 @ b64.T
    distances: np.ndarray = np.sqrt(np.clip(squared, 0, None))
    return distances


def nearest_member(
    face: bytes, selfies: Sequence[tuple[int, bytes]] | Mapping[int, bytes], *, threshold: float
) -> tuple[int, float] | None:
    """The one member a single face matches, by the same rule as `assign_faces`."""
    pairs = list(selfies.items()) if isinstance(selfies, Mapping) else list(selfies)
    chosen = assign_faces([FaceRow(0, 0, face)], pairs, threshold=threshold)
    for (_photo, user_id), assignment in chosen.items():
        return user_id, assignment.distance
    return None


async def rejections(
    session: AsyncSession, event_id: int, *, photo_ids: Collection[int] | None = None
) -> list[tuple[int, int]]:
    """The event's "not me" (photo_id, user_id) pairs, or those of some of its photos."""
    query = select(RejectedMatch.photo_id, RejectedMatch.user_id).join(
        Photo, Photo.id == RejectedMatch.photo_id
    )
    query = query.where(Photo.event_id == event_id)
    if photo_ids is not None:
        query = query.where(RejectedMatch.photo_id.in_(photo_ids))
    return [(row.photo_id, row.user_id) for row in await session.execute(query)]


async def sync_matches(
    session: AsyncSession,
    event_id: int,
    wanted: dict[tuple[int, int], Assignment],
    *,
    photo_ids: Collection[int] | None = None,
) -> set[int]:
    """Make the stored matches (of some photos, or the whole event) equal `wanted`, except the
    confirmed ones: a member's "yes, it's me" is neither removed nor moved to another face.

    Returns the users whose matches changed. Idempotent: running it twice changes nothing.
    """
    query = select(
        FaceMatch.id,
        FaceMatch.photo_id,
        FaceMatch.user_id,
        FaceMatch.face_id,
        FaceMatch.confirmed_at,
    ).where(FaceMatch.event_id == event_id)
    if photo_ids is not None:
        query = query.where(FaceMatch.photo_id.in_(photo_ids))
    current = {(row.photo_id, row.user_id): row for row in await session.execute(query)}
    ruled = {key: row for key, row in current.items() if row.confirmed_at is None}
    stale = [key for key in ruled if key not in wanted]
    if stale:
        await session.execute(delete(FaceMatch).where(FaceMatch.id.in_(ruled[k].id for k in stale)))
    new = [key for key in wanted if key not in current]
    if new:
        now = utcnow()
        await session.execute(
            insert(FaceMatch),
            [
                {
                    "photo_id": photo,
                    "user_id": user,
                    "event_id": event_id,
                    "face_id": wanted[(photo, user)].face_id,
                    "distance": wanted[(photo, user)].distance,
                    "matched_at": now,
                }
                for photo, user in new
            ],
        )
    for key, row in ruled.items():
        if key in wanted and row.face_id != wanted[key].face_id:
            await session.execute(
                update(FaceMatch)
                .where(FaceMatch.id == row.id)
                .values(face_id=wanted[key].face_id, distance=wanted[key].distance)
            )
    return {user for _, user in new} | {user for _, user in stale}


async def sync_suggestions(
    session: AsyncSession,
    event_id: int,
    wanted: dict[tuple[int, int], Assignment],
    *,
    photo_ids: Collection[int] | None = None,
) -> None:
    """Make the stored suggestions (of some photos, or the whole event) equal `wanted`, as
    `sync_matches` does for matches; run after it. A photo the member is matched to (confirmed
    or not) is never also suggested to them. Idempotent."""
    matched_query = select(FaceMatch.photo_id, FaceMatch.user_id).where(
        FaceMatch.event_id == event_id
    )
    query = select(
        MatchSuggestion.id,
        MatchSuggestion.photo_id,
        MatchSuggestion.user_id,
        MatchSuggestion.face_id,
    ).where(MatchSuggestion.event_id == event_id)
    if photo_ids is not None:
        matched_query = matched_query.where(FaceMatch.photo_id.in_(photo_ids))
        query = query.where(MatchSuggestion.photo_id.in_(photo_ids))
    matched = {(row.photo_id, row.user_id) for row in await session.execute(matched_query)}
    wanted = {key: face for key, face in wanted.items() if key not in matched}
    current = {(row.photo_id, row.user_id): row for row in await session.execute(query)}
    # A suggestion that points at another face is replaced: its crop would show someone else.
    stale = [
        row.id
        for key, row in current.items()
        if key not in wanted or row.face_id != wanted[key].face_id
    ]
    if stale:
        await session.execute(delete(MatchSuggestion).where(MatchSuggestion.id.in_(stale)))
    new = [
        key
        for key, face in wanted.items()
        if key not in current or current[key].face_id != face.face_id
    ]
    if new:
        now = utcnow()
        await session.execute(
            insert(MatchSuggestion),
            [
                {
                    "photo_id": photo,
                    "user_id": user,
                    "event_id": event_id,
                    "face_id": wanted[(photo, user)].face_id,
                    "distance": wanted[(photo, user)].distance,
                    "created_at": now,
                }
                for photo, user in new
            ],
        )
