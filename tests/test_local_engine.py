"""The local engine's member matching: whoever joins or changes selfie ends up with the matches
that matching the whole event again would give everyone, look-alikes and "not me" included."""

from __future__ import annotations

import numpy as np
from sqlalchemy import delete, select, update

from findme import jobs
from findme.db import (
    Database,
    Event,
    EventMember,
    Face,
    FaceMatch,
    Job,
    JobStatus,
    Photo,
    RejectedMatch,
    Role,
    Selfie,
    User,
)
from findme.engines.local.engine import member_descriptors
from findme.engines.matching import FaceRow, assign_faces, rejections, sync_matches
from findme.services import build_pipeline, open_services
from tests.scenes import drain, processed_photo


def descriptor(**axes: float) -> bytes:
    """A 128-d descriptor with these coordinates (`e0=1.0, e1=0.5`), zero elsewhere."""
    vector = np.zeros(128, "<f4")
    for name, value in axes.items():
        vector[int(name[1:])] = value
    return vector.tobytes()


ALICE = descriptor(e0=1.0)
BOB = descriptor(e2=1.0)
# Alice's look-alike: 0.5 from her, under the threshold (0.55) to faces between them.
JOE = descriptor(e0=1.0, e1=0.5)
JOE_AGAIN = descriptor(e5=1.0)  # Joe's new selfie: someone else entirely
PHOTOS = {
    "alice.jpg": [descriptor(e0=1.0, e1=-0.3)],  # Alice 0.3, Joe 0.8
    "between.jpg": [descriptor(e0=1.0, e1=0.4)],  # Alice 0.4, Joe 0.1: Joe's once he joins
    "joe.jpg": [descriptor(e0=1.0, e1=0.5, e3=0.3)],  # Joe 0.3, Alice 0.58
    # Bob, and Joe (0.35; Alice 0.61)
    "pair.jpg": [descriptor(e2=1.0, e4=0.2), descriptor(e0=1.0, e1=0.5, e3=0.35)],
    "not_me.jpg": [descriptor(e0=1.0, e1=0.5, e3=0.1)],  # Joe 0.1 but "not me"; Alice 0.51
    "stranger.jpg": [descriptor(e7=1.0)],
    "new_selfie.jpg": [descriptor(e5=1.0, e6=0.2)],  # Joe's new selfie 0.2
}


async def _scene(db: Database) -> dict[str, int]:
    """Alice and Bob are members, matched by the whole event's matching; Joe is not yet."""
    ids: dict[str, int] = {}
    async with db.transaction() as session:
        for name in ("organiser", "alice", "bob", "joe"):
            user = User(
                email=f"{name}@example.com", name=name, password_hash="-", role=Role.attendee
            )
            session.add(user)
            await session.flush()
            ids[name] = user.id
        event = Event(name="Gala", code="GALA-0001", organiser_id=ids["organiser"])
        session.add(event)
        await session.flush()
        ids["event"] = event.id
        for name, selfie in (("alice", ALICE), ("bob", BOB), ("joe", JOE)):
            session.add(Selfie(user_id=ids[name], descriptor=selfie))
        for name in ("alice", "bob"):
            session.add(EventMember(event_id=event.id, user_id=ids[name]))
        for number, (filename, faces) in enumerate(PHOTOS.items()):
            photo = processed_photo(event.id, filename, f"{number:064x}")
            session.add(photo)
            await session.flush()
            ids[filename] = photo.id
            for face in faces:
                session.add(
                    Face(photo_id=photo.id, event_id=event.id, box=[0, 0, 1, 1], descriptor=face)
                )
        session.add(RejectedMatch(photo_id=ids["not_me.jpg"], user_id=ids["joe"]))
        await session.flush()
        await sync_matches(session, event.id, await _whole_event(session, event.id))
    return ids


async def _whole_event(session, event_id: int):
    """What matching every face of the event with every member gives (how member matching
    worked before it matched only the photos a member may gain or lose)."""
    rows = await session.execute(
        select(Face.id, Face.photo_id, Face.descriptor).where(Face.event_id == event_id)
    )
    return assign_faces(
        [FaceRow(row.id, row.photo_id, row.descriptor) for row in rows],
        await member_descriptors(session, event_id),
        threshold=0.55,
        rejected=await rejections(session, event_id),
    )


async def _matches_of_joe(
    db: Database, settings, ids: dict[str, int], *, pipeline=None
) -> dict[str, set[str]]:
    """Run Joe's matching job (by `pipeline`, or a new one); then everyone's photos, checked
    against the whole event's."""
    async with db.transaction() as session:
        await jobs.enqueue_member_match(session, event_id=ids["event"], user_id=ids["joe"])
    await (drain(settings) if pipeline is None else pipeline.run_burst())
    async with db.sessions() as session:
        statuses = (await session.scalars(select(Job.status).order_by(Job.id))).all()
    assert statuses[-1] == JobStatus.done and set(statuses) == {JobStatus.done}
    names = {photo_id: name for name, photo_id in ids.items() if name.endswith(".jpg")}
    people = {ids[name]: name for name in ("alice", "bob", "joe")}
    async with db.sessions() as session:
        stored = {
            (row.photo_id, row.user_id): row.face_id
            for row in await session.execute(
                select(FaceMatch.photo_id, FaceMatch.user_id, FaceMatch.face_id)
            )
        }
        whole = await _whole_event(session, ids["event"])
    assert stored == {key: assignment.face_id for key, assignment in whole.items()}
    photos: dict[str, set[str]] = {name: set() for name in people.values()}
    for photo_id, user_id in stored:
        photos[people[user_id]].add(names[photo_id])
    return photos


async def test_a_joiner_and_a_new_selfie_match_as_the_whole_event_would(settings) -> None:
    db = Database(settings)
    try:
        ids = await _scene(db)

        # Joe joins: he takes the face nearer him than Alice, keeps off the photo he refused.
        async with db.transaction() as session:
            session.add(EventMember(event_id=ids["event"], user_id=ids["joe"]))
        assert await _matches_of_joe(db, settings, ids) == {
            "alice": {"alice.jpg", "not_me.jpg"},
            "bob": {"pair.jpg"},
            "joe": {"between.jpg", "joe.jpg", "pair.jpg"},
        }

        # A new selfie of someone else: Joe's photos go, the shared face returns to Alice.
        async with db.transaction() as session:
            await session.execute(
                update(Selfie).where(Selfie.user_id == ids["joe"]).values(descriptor=JOE_AGAIN)
            )
        assert await _matches_of_joe(db, settings, ids) == {
            "alice": {"alice.jpg", "between.jpg", "not_me.jpg"},
            "bob": {"pair.jpg"},
            "joe": {"new_selfie.jpg"},
        }

        # No selfie left: no photos left.
        async with db.transaction() as session:
            await session.execute(delete(Selfie).where(Selfie.user_id == ids["joe"]))
        assert (await _matches_of_joe(db, settings, ids))["joe"] == set()
    finally:
        await db.aclose()


async def test_a_worker_kept_running_matches_as_the_whole_event_would(settings) -> None:
    """One engine for every job, as a server's: the event's faces it holds in memory follow the
    photos deleted and added between two of Joe's matchings."""
    db = Database(settings)
    try:
        ids = await _scene(db)
        async with open_services(settings, run_workers=False) as state:
            pipeline = build_pipeline(state)
            async with db.transaction() as session:
                session.add(EventMember(event_id=ids["event"], user_id=ids["joe"]))
            joined = await _matches_of_joe(db, settings, ids, pipeline=pipeline)
            assert joined["joe"] == {"between.jpg", "joe.jpg", "pair.jpg"}

            async with db.transaction() as session:
                await session.execute(delete(Photo).where(Photo.id == ids["joe.jpg"]))
                photo = processed_photo(ids["event"], "joe_later.jpg", "f" * 64)
                session.add(photo)
                await session.flush()
                ids["joe_later.jpg"] = photo.id
                later = Face(
                    photo_id=photo.id, event_id=ids["event"], box=[0, 0, 1, 1], descriptor=JOE
                )
                session.add(later)
            # The photo came without its own job: only Joe's matching can find him in it.
            assert (await _matches_of_joe(db, settings, ids, pipeline=pipeline))["joe"] == {
                "between.jpg",
                "pair.jpg",
                "joe_later.jpg",
            }
    finally:
        await db.aclose()
