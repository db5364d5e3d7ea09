"""Each event's face descriptors, held in memory by the worker process for members who join late.

A member who joins (or changes selfie) is compared with every face of the event. Read from the
database each time, the 20,000 descriptors of a 10,000-photo event cost ~125 ms of row
handling before any arithmetic; held here as one float32 matrix, they are brought up to date by
one index-only query (how many faces, the newest id) and a read of the faces added since.

The copy is exact, not merely recent: the faces of an event are only added under the event's
write lock, which the caller holds, so an event's face ids grow in commit order and "newer than
the last id seen" finds every addition. A removal (a deleted photo, retention) shows as a count
lower than the copy's: the event is then read again whole. Descriptors are biometric data: an
event's copy leaves memory when it is deleted here, when unused for `IDLE_S`, or with the
least recently used events past `MAX_BYTES`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from cachetools import TTLCache
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from findme.db import Face
from findme.engines.local.faces import DESCRIPTOR_BYTES
from findme.engines.matching import FaceRow

# ~250,000 faces: a dozen 10,000-photo events in one worker process.
MAX_BYTES = 128 * 1024 * 1024
IDLE_S = 15 * 60
# Float32 arithmetic here against float64 in the matching rule: a face this much beyond the reach
# is still a candidate, so no face the rule would match is left out by rounding.
_ROUNDING_SLACK = 1e-4
_DTYPE = np.dtype("<f4")


@dataclass(frozen=True)
class EventFaces:
    """The faces of one event that have a descriptor, in id order."""

    ids: np.ndarray  # int64
    photo_ids: np.ndarray  # int64
    vectors: np.ndarray  # float32, one row of 128 per face
    squared_norms: np.ndarray  # float64, |vector|² of each row
    # Every face row of the event seen (with or without a descriptor) and the newest id: what
    # the database is compared with.
    rows_seen: int
    last_id: int

    @property
    def nbytes(self) -> int:
        arrays = (self.ids, self.photo_ids, self.vectors, self.squared_norms)
        return sum(int(array.nbytes) for array in arrays)

    def photos_near(self, descriptors: Sequence[bytes], *, reach: float) -> set[int]:
        """The photos with a face nearer than `reach` to any of `descriptors`."""
        if not descriptors or not len(self.ids):
            return set()
        near = np.zeros(len(self.ids), dtype=bool)
        for descriptor in descriptors:
            member = np.frombuffer(descriptor, _DTYPE)
            # |v - m|² = |v|² + |m|² - 2 v·m: one matrix-vector product, no 20,000 x 128 copy.
            squared = self.squared_norms + float(member.dot(member)) - 2 * (self.vectors @ member)
            near |= squared < (reach + _ROUNDING_SLACK) ** 2
        return set(self.photo_ids[near].tolist())

    def faces_of(self, photo_ids: Collection[int]) -> list[FaceRow]:
        """The faces of these photos, as the matching rule takes them."""
        if not photo_ids or not len(self.ids):
            return []
        rows = np.flatnonzero(np.isin(self.photo_ids, np.fromiter(photo_ids, np.int64)))
        return [
            FaceRow(int(self.ids[row]), int(self.photo_ids[row]), self.vectors[row].tobytes())
            for row in rows
        ]

    def with_rows(self, rows: Iterable[tuple[int, int, bytes | None]]) -> EventFaces:
        """This copy with face rows (id, photo_id, descriptor) added after its last id."""
        rows = list(rows)
        if not rows:
            return self
        kept = [row for row in rows if row[2] is not None and len(row[2]) == DESCRIPTOR_BYTES]
        vectors = np.frombuffer(b"".join(bytes(row[2] or b"") for row in kept), _DTYPE)
        vectors = vectors.reshape(-1, 128)
        return EventFaces(
            ids=np.concatenate([self.ids, np.fromiter((r[0] for r in kept), np.int64)]),
            photo_ids=np.concatenate([self.photo_ids, np.fromiter((r[1] for r in kept), np.int64)]),
            vectors=np.concatenate([self.vectors, vectors]),
            squared_norms=np.concatenate(
                [self.squared_norms, (vectors.astype(np.float64) ** 2).sum(axis=1)]
            ),
            rows_seen=self.rows_seen + len(rows),
            last_id=max(self.last_id, max(row[0] for row in rows)),
        )


_NONE = EventFaces(
    ids=np.zeros(0, np.int64),
    photo_ids=np.zeros(0, np.int64),
    vectors=np.zeros((0, 128), _DTYPE),
    squared_norms=np.zeros(0),
    rows_seen=0,
    last_id=0,
)


class FaceIndex:
    """Events' faces in memory, each checked against the database before use."""

    def __init__(self, *, max_bytes: int = MAX_BYTES, idle_s: float = IDLE_S) -> None:
        self._events: TTLCache[int, EventFaces] = TTLCache(
            maxsize=max_bytes, ttl=idle_s, getsizeof=lambda faces: max(1, faces.nbytes)
        )
        self.full_reads = 0

    async def current(self, connection: AsyncConnection, event_id: int) -> EventFaces:
        """The event's faces as the database has them now. The caller holds the event's write
        lock (see the module's docstring)."""
        count, last_id = (
            await connection.execute(
                select(func.count(), func.coalesce(func.max(Face.id), 0)).where(
                    Face.event_id == event_id
                )
            )
        ).one()
        known = self._events.get(event_id)
        if known is not None and last_id > known.last_id:
            known = known.with_rows(await _rows(connection, event_id, after=known.last_id))
        if known is None or known.rows_seen != count:
            self.full_reads += 1
            known = _NONE.with_rows(await _rows(connection, event_id, after=0))
        self._set(event_id, known)
        return known

    def forget_events(self, event_ids: Collection[int]) -> None:
        for event_id in event_ids:
            self._events.pop(event_id, None)

    def forget_photo(self, photo_id: int) -> None:
        """Drop the copy of the event that holds this photo's faces."""
        for event_id, faces in list(self._events.items()):
            if photo_id in faces.photo_ids:
                self._events.pop(event_id, None)

    def clear(self) -> None:
        self._events.clear()

    def _set(self, event_id: int, faces: EventFaces) -> None:
        # Re-set on every use: the idle time counts from the last use, not the first.
        self._events.pop(event_id, None)
        if faces.nbytes <= self._events.maxsize:
            self._events[event_id] = faces


async def _rows(
    connection: AsyncConnection, event_id: int, *, after: int
) -> list[tuple[int, int, bytes | None]]:
    rows = await connection.execute(
        select(Face.id, Face.photo_id, Face.descriptor)
        .where(Face.event_id == event_id, Face.id > after)
        .order_by(Face.id)
    )
    return [(row.id, row.photo_id, row.descriptor) for row in rows]
