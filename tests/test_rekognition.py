"""The Rekognition engine: real PostgreSQL, the real pipeline and routes, AWS faked by AioStubber.

`FakeRekognition` (tests/fakes/rekognition.py) answers from a model of the collections and passes
every exchange through aiobotocore's AioStubber, which checks it against the service model.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aioboto3
import asyncpg
import pytest
from aiobotocore.awsrequest import AioAWSResponse
from PIL import Image

from findme.engines.rekognition import client as rekognition
from findme.engines.rekognition.client import MAX_IMAGE_BYTES, prepare_image
from findme.errors import ConfigurationError, RecognitionError
from findme.services import AppState, build_pipeline
from findme.settings import Settings
from tests.conftest import Server, free_port, serve, with_settings
from tests.fakes.rekognition import FakeRekognition, client_for, engine_with
from tests.scenes import jpeg_with_broken_pixels
from tests.shared_faces import faces_dir, manifest

UPLOAD = "/api/photographer/events/{}/upload-photos"


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
        assert self.state is not None
        fake = FakeRekognition(self.state.engine.client.aws, delay_s=delay_s)
        self.state.engine = engine_with(self.state, client_for(fake, self.state.settings))
        return fake


def aws() -> aioboto3.Session:
    return aioboto3.Session(region_name="us-east-1")


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[CloudServer]:
    """The real app, and the state its lifespan opened (ASGI lifespan state)."""
    lifespan: dict[str, Any] = {}

    def keep_state(app):
        async def asgi(scope, receive, send) -> None:
            if scope["type"] == "lifespan":
                lifespan["state"] = scope["state"]  # filled in as the lifespan starts
            await app(scope, receive, send)

        return asgi

    async with serve(settings, wrap=keep_state) as url:
        yield CloudServer(url=url, settings=settings, state=lifespan["state"]["findme"])


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
        new_client = client_for(restarted, server.settings)
        state = replace(server.state, engine=engine_with(server.state, new_client))
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
    # Obama says "not me" to a photo before it is processed (he may see every photo: the
    # organiser opened the gallery): its face then goes to Biden, the next most similar member
    # (as the local engine does), never back to Obama.
    opened = await gala.patch(f"/api/events/{gala.event['id']}", json={"gallery": "all"})
    assert opened.status_code == 200, opened.text
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


async def test_the_job_makes_the_thumbnail_and_broken_pixels_cost_no_call(
    gala, make_user, server, fake
) -> None:
    obama = await attendee(make_user, fake, "obama", gala.event)
    fine, broken = await upload(
        gala, fake, (photo((90, 90, 20)), ["obama"]), (jpeg_with_broken_pixels(), [])
    )
    waiting = await gala.get(f"/api/photo/{fine}/thumb")
    assert waiting.headers["cache-control"] == "no-store"  # not made yet: a placeholder

    outcomes = await drain(server.state)

    assert (outcomes["done"], outcomes["failed"]) == (2, 1)
    assert f"IndexFaces photo-{fine}" in fake.log()
    assert not [call for call in fake.log() if f"photo-{broken}" in call]
    thumb = await gala.get(f"/api/photo/{fine}/thumb")
    assert thumb.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert Image.open(io.BytesIO(thumb.content)).size == (480, 360)
    assert (await gala.get(f"/api/photo/{broken}/thumb")).headers["cache-control"] == "no-store"
    page = (await gala.get(f"/api/events/{gala.event['id']}/photos")).json()
    failed = next(item for item in page["items"] if item["id"] == broken)
    assert failed["status"] == "failed"
    assert failed["job"]["error"].startswith("The photo is damaged or incomplete.")
    assert await my_photo_ids(obama, gala.event["id"]) == [fine]


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
    state = replace(
        server.state, settings=busy, engine=engine_with(server.state, client_for(fake, busy))
    )

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
    with caplog.at_level(logging.WARNING, logger="findme.engines.rekognition.client"):
        await drain(server.state)
    assert f"1 faces of photo-{photo_id} were not indexed: LOW_SHARPNESS x1" in caplog.text
    assert server.state.engine.client.unindexed == {"LOW_SHARPNESS": 1}


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
        recognizer = client_for(client, limited)
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


async def test_several_selfies_are_each_indexed_searched_and_deleted(
    gala, make_user, server, fake
) -> None:
    event = await small_event(gala, make_user, fake)
    me = await attendee(make_user, fake, "kit_harington", gala.event)
    (rose_photo,) = await upload(gala, fake, (photo((40, 40, 40)), ["rose_leslie"]))
    await drain(server.state)
    assert await my_photo_ids(me, gala.event["id"]) == [event["obama_and_kit"]]

    # A second selfie: both are indexed again as this member's and each searched once.
    path = faces_dir() / manifest()["selfies"]["rose_leslie"]
    second = fake.shows(path.read_bytes(), "rose_leslie")
    before = len(fake.calls)
    response = await me.post(
        "/api/me/selfies", files={"file": (path.name, second)}, data={"consent": "true"}
    )
    assert response.status_code == 201, response.text
    await drain(server.state)
    me_id = me.user["id"]
    assert sorted(fake.log()[before:]) == [
        f"DeleteFaces user-{me_id}",
        f"IndexFaces user-{me_id}",
        f"IndexFaces user-{me_id}",
        f"SearchFaces user-{me_id}/kit_harington",
        f"SearchFaces user-{me_id}/rose_leslie",
    ]
    assert await my_photo_ids(me, gala.event["id"]) == sorted([event["obama_and_kit"], rose_photo])
    connection = await pg(server.settings)
    recorded = await connection.fetchval(
        "SELECT cloud_face_id FROM event_members WHERE user_id = $1", me_id
    )
    await connection.close()
    assert len(recorded.split()) == 2

    # Removing the first selfie: both faces leave the collection, the one left is indexed again.
    first = (await me.get("/api/me/selfies")).json()["items"][0]["id"]
    before = len(fake.calls)
    assert (await me.delete(f"/api/me/selfies/{first}")).status_code == 204
    assert fake.calls[before][0] == "delete_faces"
    assert sorted(fake.calls[before][1]["FaceIds"]) == sorted(recorded.split())
    await drain(server.state)
    assert await my_photo_ids(me, gala.event["id"]) == [rose_photo]

    # And the last: no face of mine is left in the collection, and no match.
    last = (await me.get("/api/me/selfies")).json()["items"][0]["id"]
    assert (await me.delete(f"/api/me/selfies/{last}")).status_code == 204
    await drain(server.state)
    assert await my_photo_ids(me, gala.event["id"]) == []
    assert all(
        external != f"user-{me_id}"
        for faces in fake.collections.values()
        for external, _person in faces.values()
    )
