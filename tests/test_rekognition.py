"""The Rekognition engine: real PostgreSQL, the real pipeline and routes, AWS faked by AioStubber.

moto has no Rekognition face APIs, so `FakeRekognition` answers from a model of the collections
(which people each image shows) and passes every exchange through aiobotocore's AioStubber,
which checks each request and each answer against the real service model.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aioboto3
import asyncpg
import pytest
import uvicorn
from aiobotocore.awsrequest import AioAWSResponse
from aiobotocore.stub import AioStubber
from PIL import Image

from findme import rekognition
from findme.app import create_app
from findme.errors import ConfigurationError, RecognitionError
from findme.rekognition import MAX_IMAGE_BYTES, RekognitionRecognizer, prepare_image
from findme.services import AppState, build_pipeline
from findme.settings import Settings
from tests.conftest import Server, free_port, with_settings
from tests.shared_faces import faces_dir, manifest

UPLOAD = "/api/photographer/events/{}/upload-photos"
SAME_PERSON = 99.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeRekognition:
    """Rekognition's face APIs as far as FindMe uses them.

    Answers follow from `shows` (who is in each image) and `alike` (look-alikes); each exchange
    is queued on an AioStubber just before the call it answers, one at a time, so the stubber
    validates every request and answer. `delay_s` makes calls last, to observe concurrency.
    """

    def __init__(self, client: Any, *, delay_s: float = 0.0) -> None:
        self.client = client
        self.stubber = AioStubber(client)
        self.stubber.activate()
        self.delay_s = delay_s
        self.people: dict[str, list[str]] = {}
        self.alike: dict[frozenset[str], float] = {}
        self.collections: dict[str, dict[str, tuple[str, str]]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.failures: dict[str, list[str]] = {}
        self.before_call: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
        self.in_flight = 0
        self.peak = 0
        self._deleted: dict[str, str] = {}  # face id -> whose it was, for log()
        self._turn = asyncio.Lock()

    def shows(self, data: bytes, *people: str) -> bytes:
        """`data` shows these people; "?REASON" is a face Rekognition will not index."""
        self.people[sha(prepare_image(data).data)] = list(people)
        return data

    def fail(self, operation: str, code: str) -> None:
        """The next call of `operation` answers this error."""
        self.failures.setdefault(operation, []).append(code)

    def close(self) -> None:
        self.stubber.deactivate()

    def __getattr__(self, operation: str) -> Callable[..., Awaitable[dict[str, Any]]]:
        if operation.startswith("_"):
            raise AttributeError(operation)

        async def call(**params: Any) -> dict[str, Any]:
            return await self._call(operation, params)

        return call

    async def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if self.before_call is not None:
                await self.before_call(operation, params)
            async with self._turn:
                self.calls.append((operation, params))
                if self.failures.get(operation):
                    code = self.failures[operation].pop(0)
                    self.stubber.add_client_error(operation, code, f"{code} (fake)", 400)
                else:
                    answer = getattr(self, f"_answer_{operation}")(**params)
                    self.stubber.add_response(operation, answer, params)
                response: dict[str, Any] = await getattr(self.client, operation)(**params)
                return response
        finally:
            self.in_flight -= 1

    def log(self) -> list[str]:
        """The calls, readably; the searches of one image sorted (they run side by side)."""
        labels = []
        for operation, params in self.calls:
            name = operation.title().replace("_", "")
            if operation == "index_faces":
                labels.append(f"{name} {params['ExternalImageId']}")
            elif operation == "search_faces":
                owner, person = self._face(params["FaceId"])
                labels.append(f"{name} {owner}/{person}")
            elif operation == "delete_faces":
                owners = sorted(self._deleted.get(face, "?") for face in params["FaceIds"])
                labels.append(f"{name} {' '.join(owners)}")
            else:
                labels.append(name)
        result: list[str] = []
        for label in labels:
            image = label.split("/")[0]
            run = len(result)
            while (
                label.startswith("SearchFaces") and run and result[run - 1].split("/")[0] == image
            ):
                run -= 1
            result[run:] = sorted([*result[run:], label])
        return result

    def _face(self, face_id: str) -> tuple[str, str]:
        for faces in self.collections.values():
            if face_id in faces:
                return faces[face_id]
        return self._deleted.get(face_id, "?"), "?"

    def _similarity(self, a: str, b: str) -> float:
        return SAME_PERSON if a == b else self.alike.get(frozenset((a, b)), 0.0)

    @staticmethod
    def _face_json(face_id: str, external_image_id: str, index: int) -> dict[str, Any]:
        return {
            "FaceId": face_id,
            "BoundingBox": {"Width": 0.2, "Height": 0.3, "Left": 0.1 + 0.3 * index, "Top": 0.2},
            "ImageId": str(uuid.uuid4()),
            "ExternalImageId": external_image_id,
            "Confidence": 99.9,
        }

    def _answer_create_collection(self, CollectionId: str) -> dict[str, Any]:
        self.collections.setdefault(CollectionId, {})
        return {
            "StatusCode": 200,
            "CollectionArn": f"aws:rekognition:us-east-1:123456789012:collection/{CollectionId}",
            "FaceModelVersion": "7.0",
        }

    def _answer_delete_collection(self, CollectionId: str) -> dict[str, Any]:
        self.collections.pop(CollectionId, None)
        return {"StatusCode": 200}

    def _answer_list_collections(self, MaxResults: int = 1000) -> dict[str, Any]:
        names = sorted(self.collections)[:MaxResults]
        return {"CollectionIds": names, "FaceModelVersions": ["7.0"] * len(names)}

    def _answer_index_faces(
        self,
        CollectionId: str,
        Image: dict[str, bytes],
        ExternalImageId: str,
        MaxFaces: int = 100,
    ) -> dict[str, Any]:
        people = self.people.get(sha(Image["Bytes"]), [])
        records, unindexed = [], []
        for index, person in enumerate(people):
            reason = person[1:] if person.startswith("?") else None
            if reason is None and len(records) >= MaxFaces:
                reason = "EXCEEDS_MAX_FACES"
            if reason is not None:
                unindexed.append({"Reasons": [reason], "FaceDetail": {"Confidence": 90.0}})
                continue
            face_id = str(uuid.uuid4())
            self.collections[CollectionId][face_id] = (ExternalImageId, person)
            face = self._face_json(face_id, ExternalImageId, index)
            records.append(
                {
                    "Face": face,
                    "FaceDetail": {"BoundingBox": face["BoundingBox"], "Confidence": 99.9},
                }
            )
        return {"FaceRecords": records, "UnindexedFaces": unindexed, "FaceModelVersion": "7.0"}

    def _answer_search_faces(
        self, CollectionId: str, FaceId: str, FaceMatchThreshold: float, MaxFaces: int
    ) -> dict[str, Any]:
        faces = self.collections[CollectionId]
        person = faces[FaceId][1]
        matches = [
            (self._similarity(person, other), face_id, external_image_id)
            for face_id, (external_image_id, other) in faces.items()
            if face_id != FaceId
        ]
        matches = sorted(m for m in matches if m[0] >= FaceMatchThreshold)[::-1][:MaxFaces]
        return {
            "SearchedFaceId": FaceId,
            "FaceMatches": [
                {"Similarity": similarity, "Face": self._face_json(face_id, external, 0)}
                for similarity, face_id, external in matches
            ],
            "FaceModelVersion": "7.0",
        }

    def _answer_delete_faces(self, CollectionId: str, FaceIds: list[str]) -> dict[str, Any]:
        faces = self.collections.get(CollectionId, {})
        deleted = [face_id for face_id in FaceIds if face_id in faces]
        for face_id in deleted:
            self._deleted[face_id] = faces.pop(face_id)[0]
        return {"DeletedFaces": deleted}


# --- Fixtures: the real app with the Rekognition engine ----------------------------------------


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch) -> None:
    """Fake credentials, and an endpoint nobody listens on: a call that is not stubbed fails."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_REKOGNITION", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return with_settings(
        settings, recognizer="rekognition", engine_processes=1, workers=1, job_retry_base_s=0.05
    )


@dataclass
class CloudServer(Server):
    state: AppState | None = None

    def use_fake(self, *, delay_s: float = 0.0) -> FakeRekognition:
        """Put the fake in front of the app's own Rekognition client."""
        assert self.state is not None and self.state.rekognition is not None
        fake = FakeRekognition(self.state.rekognition.client, delay_s=delay_s)
        self.state.rekognition = recognizer_for(fake, self.state.settings)
        return fake


def aws() -> aioboto3.Session:
    return aioboto3.Session(region_name="us-east-1")


def recognizer_for(client: Any, settings: Settings) -> RekognitionRecognizer:
    return RekognitionRecognizer(
        client=client,
        concurrency=settings.aws_concurrency,
        collection_prefix=settings.rekognition_collection_prefix,
        min_similarity=settings.rekognition_min_similarity,
    )


@contextlib.asynccontextmanager
async def serve_with_state(settings: Settings) -> AsyncIterator[tuple[str, AppState]]:
    """The real app under uvicorn, and the state its lifespan opened (ASGI lifespan state)."""
    app = create_app(settings)
    lifespan_state: dict[str, Any] = {}

    async def keep_state(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            lifespan_state["state"] = scope["state"]
        await app(scope, receive, send)

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(keep_state, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", lifespan_state["state"]["findme"]
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[CloudServer]:
    async with serve_with_state(settings) as (url, state):
        yield CloudServer(url=url, settings=settings, state=state)


@pytest.fixture
async def fake(server: CloudServer) -> AsyncIterator[FakeRekognition]:
    fake = server.use_fake()
    yield fake
    fake.close()


@pytest.fixture
async def gala(make_user, make_event):
    organiser = await make_user("photographer")
    organiser.event = await make_event(organiser)
    return organiser


async def attendee(make_user, fake: FakeRekognition, person: str, event: dict | None = None):
    """An attendee with `person`'s selfie (checked by the local engine), joined to `event`."""
    client = await make_user(name=person)
    path = faces_dir() / manifest()["selfies"][person]
    data = fake.shows(path.read_bytes(), person)
    response = await client.put(
        "/api/me/selfie", files={"file": (path.name, data)}, data={"consent": "true"}
    )
    assert response.status_code == 200, response.text
    if event is not None:
        joined = await client.post("/api/events/join", json={"code": event["code"]})
        assert joined.status_code == 200, joined.text
    return client


def photo(color: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG")
    return out.getvalue()


async def upload(organiser, fake: FakeRekognition, *photos: tuple[bytes, list[str]]) -> list[int]:
    event_id = organiser.event["id"]
    files = []
    for index, (data, people) in enumerate(photos):
        fake.shows(data, *people)
        files.append(("files", (f"p{index}.jpg", data)))
    response = await organiser.post(UPLOAD.format(event_id), files=files)
    assert response.status_code == 202, response.text
    return [result["photo_id"] for result in response.json()["results"]]


async def drain(state: AppState):
    return await build_pipeline(state).run_burst()


async def my_photo_ids(client, event_id: int) -> list[int]:
    response = await client.get("/api/my-photos", params={"event_id": event_id})
    assert response.status_code == 200, response.text
    return sorted(item["id"] for item in response.json()["items"])


async def pg(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(settings.database_url.replace("+asyncpg", ""))


async def small_event(gala, make_user, fake: FakeRekognition) -> dict[str, Any]:
    """Two members (Obama, Biden: look-alikes at 92 %), then three photos with four faces."""
    fake.alike[frozenset(("obama", "biden"))] = 92.0
    obama = await attendee(make_user, fake, "obama", gala.event)
    biden = await attendee(make_user, fake, "biden", gala.event)
    both, obama_and_kit, nobody = await upload(
        gala,
        fake,
        (photo((200, 10, 10)), ["obama", "biden"]),
        (photo((10, 200, 10)), ["obama", "kit_harington"]),
        (photo((10, 10, 200)), []),
    )
    return {
        "obama": obama,
        "biden": biden,
        "both": both,
        "obama_and_kit": obama_and_kit,
        "nobody": nobody,
    }


# --- Tests ----------------------------------------------------------------------------------


async def test_fresh_event_costs_one_call_per_collection_selfie_photo_and_face(
    gala, make_user, server, fake
) -> None:
    event = await small_event(gala, make_user, fake)
    assert fake.calls == []  # selfies are checked by the local engine: no cloud call
    obama, biden = event["obama"].user["id"], event["biden"].user["id"]
    both, obama_and_kit, nobody = event["both"], event["obama_and_kit"], event["nobody"]

    outcomes = await drain(server.state)

    assert outcomes["done"] == 5 and not outcomes["failed"]
    assert fake.log() == [
        "CreateCollection",
        f"IndexFaces user-{obama}",
        f"IndexFaces user-{biden}",
        f"IndexFaces photo-{both}",
        f"SearchFaces photo-{both}/biden",
        f"SearchFaces photo-{both}/obama",
        f"IndexFaces photo-{obama_and_kit}",
        f"SearchFaces photo-{obama_and_kit}/kit_harington",
        f"SearchFaces photo-{obama_and_kit}/obama",
        f"IndexFaces photo-{nobody}",
    ]
    assert len(fake.calls) == 1 + 2 + 3 + 4
    selfie_calls = [
        p for op, p in fake.calls if op == "index_faces" and "user" in p["ExternalImageId"]
    ]
    assert {call["MaxFaces"] for call in selfie_calls} == {1}
    assert {p["FaceMatchThreshold"] for op, p in fake.calls if op == "search_faces"} == {90.0}
    # A face goes to its most similar member only: Biden looks like Obama (92 %), yet is not
    # matched to the photo where only Obama is.
    assert await my_photo_ids(event["obama"], gala.event["id"]) == [both, obama_and_kit]
    assert await my_photo_ids(event["biden"], gala.event["id"]) == [both]

    connection = await pg(server.settings)
    collection = await connection.fetchval("SELECT collection_id FROM events")
    assert collection == fake.calls[0][1]["CollectionId"]
    assert collection.startswith(f"findme-{gala.event['id']}-")
    members = await connection.fetch("SELECT cloud_face_id FROM event_members")
    assert all(row["cloud_face_id"] for row in members) and len(members) == 2
    faces = await connection.fetch("SELECT photo_id, box, cloud_face_id FROM faces ORDER BY id")
    assert [row["photo_id"] for row in faces] == [both, both, obama_and_kit, obama_and_kit]
    assert json.loads(faces[0]["box"]) == [64, 96, 192, 240]  # ratios of 640x480, in pixels
    statuses = dict(await connection.fetch("SELECT id, status FROM photos"))
    assert statuses == {both: "done", obama_and_kit: "done", nobody: "no_faces"}
    matches = await connection.fetch("SELECT user_id, distance FROM face_matches")
    assert {round(row["distance"], 4) for row in matches} == {0.01}

    # A restart: a new process (new client, new recognizer) over the same database, with every
    # job handed back to the queue as if it had died before recording them. Nothing is paid again.
    await connection.execute("UPDATE jobs SET status = 'queued', attempts = 0, finished_at = NULL")
    async with rekognition.open_client(aws(), server.settings) as client:
        restarted = FakeRekognition(client)
        state = replace(server.state, rekognition=recognizer_for(restarted, server.settings))
        outcomes = await drain(state)
        restarted.close()
    assert outcomes["done"] == 5
    assert restarted.calls == []
    assert await connection.fetchval("SELECT count(*) FROM face_matches") == len(matches)
    await connection.close()


async def test_late_joiner_costs_one_index_and_one_search(gala, make_user, server, fake) -> None:
    event = await small_event(gala, make_user, fake)
    await drain(server.state)
    before = len(fake.calls)

    kit = await attendee(make_user, fake, "kit_harington", gala.event)
    await drain(server.state)

    kit_id = kit.user["id"]
    assert fake.log()[before:] == [
        f"IndexFaces user-{kit_id}",
        f"SearchFaces user-{kit_id}/kit_harington",
    ]
    assert await my_photo_ids(kit, gala.event["id"]) == [event["obama_and_kit"]]
    assert await my_photo_ids(event["obama"], gala.event["id"]) == [
        event["both"],
        event["obama_and_kit"],
    ]


async def test_a_late_joiners_failed_search_is_retried_without_indexing_again(
    gala, make_user, server, fake
) -> None:
    event = await small_event(gala, make_user, fake)
    await drain(server.state)
    before = len(fake.calls)
    fake.fail("search_faces", "ThrottlingException")  # retries exhausted: the job fails once

    kit = await attendee(make_user, fake, "kit_harington", gala.event)
    outcomes = await drain(server.state)

    kit_id = kit.user["id"]
    assert (outcomes["retried"], outcomes["failed"]) == (1, 0)
    assert fake.log()[before:] == [
        f"IndexFaces user-{kit_id}",
        f"SearchFaces user-{kit_id}/kit_harington",  # failed; the face id was recorded first
        f"SearchFaces user-{kit_id}/kit_harington",
    ]
    assert await my_photo_ids(kit, gala.event["id"]) == [event["obama_and_kit"]]
    connection = await pg(server.settings)
    face_id = await connection.fetchval(
        "SELECT cloud_face_id FROM event_members WHERE user_id = $1", kit_id
    )
    assert face_id == fake.calls[before + 1][1]["FaceId"]  # searched: no longer marked pending
    await connection.close()


async def test_not_me_sticks_and_a_new_selfie_replaces_the_old_face(
    gala, make_user, server, fake
) -> None:
    event = await small_event(gala, make_user, fake)
    obama = event["obama"]
    # Obama says "not me" to a photo before it is processed: its face then goes to Biden, the
    # next most similar member (as the local engine does), never back to Obama.
    assert (await obama.post(f"/api/photo/{event['obama_and_kit']}/not-me")).status_code == 204
    await drain(server.state)
    assert await my_photo_ids(obama, gala.event["id"]) == [event["both"]]
    assert await my_photo_ids(event["biden"], gala.event["id"]) == [
        event["both"],
        event["obama_and_kit"],
    ]
    connection = await pg(server.settings)
    old_face = await connection.fetchval(
        "SELECT cloud_face_id FROM event_members WHERE user_id = $1", obama.user["id"]
    )
    before = len(fake.calls)

    # A new selfie: the old face leaves the collection at once; the job indexes the new one and
    # searches it once. The rejected photo stays rejected.
    path = faces_dir() / "selfies" / "obama.jpg"
    again = fake.shows(path.read_bytes() + b"\x00", "obama")  # other bytes, same person
    response = await obama.put(
        "/api/me/selfie", files={"file": ("again.jpg", again)}, data={"consent": "true"}
    )
    assert response.status_code == 200, response.text
    assert fake.calls[before][0] == "delete_faces"
    assert fake.calls[before][1]["FaceIds"] == [old_face]
    await drain(server.state)
    obama_id = obama.user["id"]
    assert fake.log()[before:] == [
        f"DeleteFaces user-{obama_id}",
        f"IndexFaces user-{obama_id}",
        f"SearchFaces user-{obama_id}/obama",
    ]
    assert await my_photo_ids(obama, gala.event["id"]) == [event["both"]]
    new_face = await connection.fetchval(
        "SELECT cloud_face_id FROM event_members WHERE user_id = $1", obama_id
    )
    assert new_face and new_face != old_face
    await connection.close()


async def test_a_retried_photo_job_does_not_index_the_photo_again(
    gala, make_user, server, fake
) -> None:
    obama = await attendee(make_user, fake, "obama", gala.event)
    (photo_id,) = await upload(gala, fake, (photo((90, 90, 20)), ["obama"]))
    fake.fail("search_faces", "InternalServerError")

    outcomes = await drain(server.state)

    assert (outcomes["retried"], outcomes["failed"]) == (1, 0)
    assert fake.log() == [
        "CreateCollection",
        f"IndexFaces user-{obama.user['id']}",
        f"IndexFaces photo-{photo_id}",
        f"SearchFaces photo-{photo_id}/obama",  # failed: the job is retried
        f"SearchFaces photo-{photo_id}/obama",  # the stored face is searched, not re-indexed
    ]
    assert await my_photo_ids(obama, gala.event["id"]) == [photo_id]


async def test_calls_stay_under_the_semaphore_with_eight_workers(
    gala, make_user, server, fake, settings
) -> None:
    people = ["obama", "biden", "kit_harington", "rose_leslie"]
    members = {person: await attendee(make_user, fake, person, gala.event) for person in people}
    photos = [
        (photo((index * 15, 255 - index * 15, 128)), [people[index % 4], people[(index + 1) % 4]])
        for index in range(16)
    ]
    photo_ids = await upload(gala, fake, *photos)
    fake.delay_s = 0.02  # every call lasts: concurrent calls overlap and can be counted
    busy = with_settings(settings, workers=8, aws_concurrency=3)
    state = replace(server.state, settings=busy, rekognition=recognizer_for(fake, busy))

    outcomes = await drain(state)

    assert outcomes["done"] == 4 + 16 and not outcomes["failed"]
    assert fake.peak == 3  # reached, never exceeded
    assert len(fake.calls) == 1 + 4 + 16 + 32
    indexed = [p["ExternalImageId"] for op, p in fake.calls if op == "index_faces"]
    assert len(indexed) == len(set(indexed)) == 4 + 16
    for index, person in enumerate(people):
        expected = sorted(photo_ids[i] for i in range(16) if index in (i % 4, (i + 1) % 4))
        assert await my_photo_ids(members[person], gala.event["id"]) == expected, person


async def test_erasure_deletes_the_users_faces_before_the_rows(
    gala, make_user, server, fake
) -> None:
    event = await small_event(gala, make_user, fake)
    await drain(server.state)
    biden = event["biden"]
    biden_id = biden.user["id"]
    connection = await pg(server.settings)
    face_id = await connection.fetchval(
        "SELECT cloud_face_id FROM event_members WHERE user_id = $1", biden_id
    )
    collection = await connection.fetchval("SELECT collection_id FROM events")
    rows_at_call: list[int] = []

    async def count_rows(operation: str, params: dict[str, Any]) -> None:
        rows_at_call.append(
            await connection.fetchval("SELECT count(*) FROM users WHERE id = $1", biden_id)
        )

    fake.before_call = count_rows
    before = len(fake.calls)
    assert (await biden.delete("/api/me")).status_code == 204
    assert fake.calls[before:] == [
        ("delete_faces", {"CollectionId": collection, "FaceIds": [face_id]})
    ]
    assert rows_at_call == [1]  # the call came while the account still existed
    assert await connection.fetchval("SELECT count(*) FROM users WHERE id = $1", biden_id) == 0

    # The organiser's erasure deletes the collections of the events they ran.
    rows_at_call.clear()
    assert (await gala.delete("/api/me")).status_code == 204
    assert fake.calls[-1] == ("delete_collection", {"CollectionId": collection})
    assert fake.collections == {}
    assert await connection.fetchval("SELECT count(*) FROM events") == 0
    await connection.close()


async def test_event_deletion_deletes_the_collection_first(gala, make_user, server, fake) -> None:
    await small_event(gala, make_user, fake)
    await drain(server.state)
    connection = await pg(server.settings)
    collection = await connection.fetchval("SELECT collection_id FROM events")
    event_id = gala.event["id"]

    fake.fail("delete_collection", "AccessDeniedException")
    refused = await gala.delete(f"/api/events/{event_id}")
    assert refused.status_code == 503
    assert refused.json()["error"] == "recognition_error"
    assert "AccessDeniedException" in refused.json()["detail"]
    assert await connection.fetchval("SELECT count(*) FROM events") == 1  # nothing was lost

    assert (await gala.delete(f"/api/events/{event_id}")).status_code == 204
    assert fake.calls[-1] == ("delete_collection", {"CollectionId": collection})
    assert collection not in fake.collections
    assert await connection.fetchval("SELECT count(*) FROM faces") == 0
    await connection.close()


async def test_photo_deletion_deletes_its_faces_from_the_collection(
    gala, make_user, server, fake
) -> None:
    await small_event(gala, make_user, fake)
    await drain(server.state)
    connection = await pg(server.settings)
    collection = await connection.fetchval("SELECT collection_id FROM events")
    photo_id, *_ = await connection.fetchval("SELECT array_agg(id ORDER BY id) FROM photos")
    face_ids = [
        row["cloud_face_id"]
        for row in await connection.fetch(
            "SELECT cloud_face_id FROM faces WHERE photo_id = $1 ORDER BY id", photo_id
        )
    ]
    assert face_ids
    before = len(fake.calls)
    assert (await gala.delete(f"/api/photo/{photo_id}")).status_code == 204
    assert fake.calls[before:] == [
        ("delete_faces", {"CollectionId": collection, "FaceIds": face_ids})
    ]
    assert (
        await connection.fetchval("SELECT count(*) FROM faces WHERE photo_id = $1", photo_id) == 0
    )
    await connection.close()


async def test_unindexed_faces_are_logged_with_their_reasons(
    gala, make_user, server, fake, caplog
) -> None:
    await attendee(make_user, fake, "obama", gala.event)
    (photo_id,) = await upload(gala, fake, (photo((1, 2, 3)), ["obama", "?LOW_SHARPNESS"]))
    with caplog.at_level(logging.WARNING, logger="findme.rekognition"):
        await drain(server.state)
    assert f"1 faces of photo-{photo_id} were not indexed: LOW_SHARPNESS x1" in caplog.text
    assert server.state.rekognition.unindexed == {"LOW_SHARPNESS": 1}


# --- Throttling: botocore's own retry loop (AioStubber answers before it, so this test fakes
# the HTTP exchange instead) -------------------------------------------------------------------


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self) -> bytes:
        return self._data


def http_answer(status: int, body: dict[str, Any]) -> AioAWSResponse:
    headers = {"content-type": "application/x-amz-json-1.1", "x-amzn-requestid": "fake"}
    return AioAWSResponse(
        "https://rekognition.test/", status, headers, _Body(json.dumps(body).encode())
    )


@pytest.mark.parametrize("max_attempts", [3, 2])
async def test_throttling_is_retried_with_backoff(settings, max_attempts) -> None:
    answers = [
        http_answer(400, {"__type": "ThrottlingException", "Message": "Rate exceeded"}),
        http_answer(400, {"__type": "ProvisionedThroughputExceededException", "Message": "Slow"}),
        http_answer(200, {"StatusCode": 200, "CollectionArn": "arn", "FaceModelVersion": "7.0"}),
    ]
    sent: list[str] = []

    def answer(request, **_) -> AioAWSResponse:
        sent.append(json.loads(request.body)["CollectionId"])
        return answers[len(sent) - 1]

    limited = with_settings(settings, aws_max_attempts=max_attempts)
    async with rekognition.open_client(aws(), limited) as client:
        client.meta.events.register("before-send.rekognition.CreateCollection", answer)
        recognizer = recognizer_for(client, limited)
        if max_attempts == 3:
            await recognizer.create_collection("findme-1-0")
        else:
            with pytest.raises(RecognitionError) as raised:
                await recognizer.create_collection("findme-1-0")
            assert raised.value.extra["aws_code"] == "ProvisionedThroughputExceededException"
    assert sent == ["findme-1-0"] * max_attempts  # one call, retried by botocore
    assert recognizer.calls == {"CreateCollection": 1}


# --- Images Rekognition is sent ---------------------------------------------------------------


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def test_upright_jpegs_under_5_mb_are_sent_as_they_are() -> None:
    data = encoded(Image.new("RGB", (300, 200), "teal"), "JPEG")
    sent = prepare_image(data)
    assert sent.data is data and (sent.width, sent.height) == (300, 200)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "HEIF"])
def test_png_webp_and_heic_become_jpeg(fmt) -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    data = encoded(Image.new("RGB", (300, 200), "olive"), fmt)
    sent = prepare_image(data)
    assert Image.open(io.BytesIO(sent.data)).format == "JPEG"
    assert (sent.width, sent.height) == (300, 200)


def test_exif_rotation_is_applied_before_sending() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    data = encoded(Image.new("RGB", (300, 200), "navy"), "JPEG", exif=exif)
    sent = prepare_image(data)
    assert (sent.width, sent.height) == (200, 300)
    assert Image.open(io.BytesIO(sent.data)).size == (200, 300)


def test_images_over_the_limit_are_made_smaller() -> None:
    noise = Image.effect_noise((1600, 1200), 90).convert("RGB")
    data = encoded(noise, "JPEG", quality=98)
    limit = len(data) // 3
    sent = prepare_image(data, max_bytes=limit)
    assert len(sent.data) <= limit
    assert (sent.width, sent.height) == (1600, 1200)  # boxes still refer to the full size
    assert MAX_IMAGE_BYTES == 5 * 1024 * 1024


def test_aws_settings(tmp_path) -> None:
    def read(**environ: str) -> Settings:
        return Settings.from_environ(
            {"FINDME_DATA_DIR": str(tmp_path), **environ}, env_file=tmp_path / ".env"
        )

    defaults = read()
    assert (defaults.aws_region, defaults.aws_max_attempts) == ("us-east-1", 8)
    assert defaults.rekognition_collection_prefix == "findme-"
    assert defaults.rekognition_min_similarity == 90.0
    assert read(AWS_DEFAULT_REGION="eu-west-1").aws_region == "eu-west-1"
    assert read(AWS_REGION="eu-west-3", AWS_DEFAULT_REGION="eu-west-1").aws_region == "eu-west-3"
    chosen = read(
        AWS_REGION="eu-west-3",
        FINDME_AWS_REGION="ap-south-1",
        AWS_CONCURRENT_REQUESTS="4",
        FINDME_REKOGNITION_COLLECTION_PREFIX="gala.",
        FINDME_REKOGNITION_MIN_SIMILARITY="95.5",
    )
    assert (chosen.aws_region, chosen.aws_concurrency) == ("ap-south-1", 4)
    assert (chosen.rekognition_collection_prefix, chosen.rekognition_min_similarity) == (
        "gala.",
        95.5,
    )
    for bad in (
        {"FINDME_REKOGNITION_MIN_SIMILARITY": "120"},
        {"FINDME_REKOGNITION_COLLECTION_PREFIX": "my events/"},
        {"FINDME_STORAGE": "s3"},
    ):
        with pytest.raises(ConfigurationError) as raised:
            read(**bad)
        assert raised.value.detail.endswith(".")
    s3 = read(FINDME_STORAGE="s3", FINDME_S3_BUCKET="photos")
    assert (s3.storage, s3.s3_bucket, s3.s3_prefix) == ("s3", "photos", "")
