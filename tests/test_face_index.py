"""The worker's in-memory copy of an event's faces is the database's, whatever happened since it
was read: photos added, deleted, faces without descriptors, events deleted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
from sqlalchemy import delete, select

from findme.db import Database, Event, Face, Photo, Role, User
from findme.engines.local.face_index import FaceIndex
from findme.engines.matching import descriptor_distances
from tests.scenes import processed_photo


@pytest.fixture
async def db(settings) -> AsyncIterator[Database]:
    database = Database(settings)
    try:
        yield database
    finally:
        await database.aclose()


def unit(rng: np.random.Generator) -> bytes:
    vector = rng.standard_normal(128)
    return (vector / np.linalg.norm(vector)).astype("<f4").tobytes()


async def _event(db: Database, name: str = "gala") -> int:
    async with db.transaction() as session:
        organiser = User(
            email=f"{name}@example.com", name=name, password_hash="-", role=Role.attendee
        )
        session.add(organiser)
        await session.flush()
        event = Event(name=name, code=f"{name.upper()}-0002", organiser_id=organiser.id)
        session.add(event)
        await session.flush()
        return event.id


async def _photo(db: Database, event_id: int, descriptors: list[bytes | None]) -> int:
    async with db.transaction() as session:
        photo = processed_photo(event_id, "p.jpg", np.random.default_rng().bytes(32).hex())
        session.add(photo)
        await session.flush()
        for descriptor in descriptors:
            session.add(
                Face(photo_id=photo.id, event_id=event_id, box=[0, 0, 1, 1], descriptor=descriptor)
            )
        return photo.id


async def _current(db: Database, index: FaceIndex, event_id: int):
    async with db.transaction() as session:
        return await index.current(await session.connection(), event_id)


async def _stored(db: Database, event_id: int) -> list[tuple[int, int, bytes]]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(Face.id, Face.photo_id, Face.descriptor)
            .where(Face.event_id == event_id, Face.descriptor.is_not(None))
            .order_by(Face.id)
        )
        return [(row.id, row.photo_id, bytes(row.descriptor)) for row in rows]


def _held(faces) -> list[tuple[int, int, bytes]]:
    return [
        (int(face_id), int(photo_id), vector.tobytes())
        for face_id, photo_id, vector in zip(faces.ids, faces.photo_ids, faces.vectors, strict=True)
    ]


async def test_the_copy_follows_additions_and_removals(db) -> None:
    rng = np.random.default_rng(7)
    event_id = await _event(db)
    other_event = await _event(db, "other")
    first = await _photo(db, event_id, [unit(rng), unit(rng)])
    await _photo(db, other_event, [unit(rng)])
    index = FaceIndex()

    assert _held(await _current(db, index, event_id)) == await _stored(db, event_id)
    assert index.full_reads == 1

    # Added photos are read alone, a cloud face (no descriptor) is counted but not held.
    await _photo(db, event_id, [unit(rng), None])
    await _photo(db, event_id, [unit(rng)])
    faces = await _current(db, index, event_id)
    assert _held(faces) == await _stored(db, event_id)
    assert len(faces.ids) == 4
    assert index.full_reads == 1
    await _current(db, index, event_id)
    assert index.full_reads == 1

    # A deleted photo takes its faces out of the copy, even with a photo added since.
    async with db.transaction() as session:
        await session.execute(delete(Photo).where(Photo.id == first))
    await _photo(db, event_id, [unit(rng), unit(rng)])
    faces = await _current(db, index, event_id)
    assert first not in faces.photo_ids.tolist()
    assert _held(faces) == await _stored(db, event_id)
    assert index.full_reads == 2


async def test_forgotten_events_and_photos_leave_memory(db) -> None:
    rng = np.random.default_rng(8)
    event_id = await _event(db)
    photo_id = await _photo(db, event_id, [unit(rng)])
    index = FaceIndex()
    await _current(db, index, event_id)
    index.forget_photo(photo_id + 1000)
    await _current(db, index, event_id)
    assert index.full_reads == 1

    index.forget_photo(photo_id)
    await _current(db, index, event_id)
    assert index.full_reads == 2
    index.forget_events([event_id])
    await _current(db, index, event_id)
    assert index.full_reads == 3


async def test_an_event_unused_for_the_idle_time_is_read_again(db) -> None:
    rng = np.random.default_rng(9)
    event_id = await _event(db)
    await _photo(db, event_id, [unit(rng)])
    index = FaceIndex(idle_s=0.001)
    await _current(db, index, event_id)
    await asyncio.sleep(0.01)
    await _current(db, index, event_id)
    assert index.full_reads == 2


async def test_near_photos_are_those_the_exact_distances_give(db) -> None:
    rng = np.random.default_rng(10)
    event_id = await _event(db)
    member = unit(rng)
    base = np.frombuffer(member, "<f4").astype(np.float64)
    photos = []
    # Faces at distances around the reach (0.6), on both sides of it.
    for distance in (0.3, 0.55, 0.599, 0.601, 0.7, 1.4):
        step = rng.standard_normal(128)
        step -= step.dot(base) * base  # orthogonal: |face - member| is `distance` exactly
        face = base + step / np.linalg.norm(step) * distance
        photos.append(await _photo(db, event_id, [face.astype("<f4").tobytes()]))
    index = FaceIndex()
    faces = await _current(db, index, event_id)
    near = faces.photos_near([member], reach=0.6)
    stored = await _stored(db, event_id)
    exact = descriptor_distances([row[2] for row in stored], [member])[:, 0]
    assert near == {row[1] for row, d in zip(stored, exact, strict=True) if d < 0.6}
    assert near == set(photos[:3])
    held = faces.faces_of(near)
    assert {(face.id, face.photo_id, face.descriptor) for face in held} == {
        row for row in stored if row[1] in near
    }
