"""Oversight over HTTP: an event's photos with their failures, retries by the organiser and
by admins, failed jobs by name, timings from the jobs table, and the admin's lists."""

from __future__ import annotations

import datetime as dt
import io

import asyncpg
import pytest
from PIL import Image

UPLOAD = "/api/photographer/events/{}/upload-photos"


def jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (200, 150), (shade, 90, 200 - shade)).save(out, "JPEG")
    return out.getvalue()


async def upload(organiser, event_id: int, count: int, *, first_shade: int = 0) -> dict[str, int]:
    """Uploads `count` plain photos (no worker runs here: their jobs stay queued)."""
    files = [("files", (f"p{i}.jpg", jpeg(first_shade + 10 * i))) for i in range(count)]
    response = await organiser.post(UPLOAD.format(event_id), files=files)
    assert response.status_code == 202, response.text
    return {item["filename"]: item["photo_id"] for item in response.json()["results"]}


async def pg(server) -> asyncpg.Connection:
    return await asyncpg.connect(server.settings.database_url.replace("+asyncpg", ""))


async def fail(connection, photo_id: int, error: str) -> None:
    """The photo's job failed all its attempts, as the pipeline leaves it."""
    await connection.execute(
        "UPDATE jobs SET status = 'failed', attempts = max_attempts, error = $2, "
        "finished_at = now() WHERE photo_id = $1",
        photo_id,
        error,
    )
    await connection.execute("UPDATE photos SET status = 'failed' WHERE id = $1", photo_id)


@pytest.fixture
async def organiser(make_user, make_event):
    client = await make_user("photographer", name="Pat Lens")
    client.event = await make_event(client, name="Summer gala")
    return client


async def test_the_organiser_sees_each_photo_with_its_status_and_reason(organiser, server) -> None:
    event_id = organiser.event["id"]
    ids = await upload(organiser, event_id, 5)
    connection = await pg(server)
    await fail(connection, ids["p1.jpg"], "RecognitionError: the engine crashed")
    await connection.execute("UPDATE photos SET status = 'no_faces' WHERE id = $1", ids["p2.jpg"])
    await connection.close()

    url = f"/api/events/{event_id}/photos"
    page = (await organiser.get(url, params={"limit": 2})).json()
    assert [item["filename"] for item in page["items"]] == ["p4.jpg", "p3.jpg"]
    assert page["counts"] == {
        "photos": 5,
        "queued": 3,
        "processing": 0,
        "done": 0,
        "no_faces": 1,
        "failed": 1,
    }
    rest = (await organiser.get(url, params={"cursor": page["next_cursor"]})).json()
    assert [item["filename"] for item in rest["items"]] == ["p2.jpg", "p1.jpg", "p0.jpg"]
    assert rest["next_cursor"] is None
    failed = (await organiser.get(url, params={"status": "failed"})).json()["items"]
    assert [item["filename"] for item in failed] == ["p1.jpg"]
    assert failed[0]["status"] == "failed" and failed[0]["faces"] == 0
    assert failed[0]["job"]["status"] == "failed"
    assert failed[0]["job"]["error"] == "RecognitionError: the engine crashed"
    assert failed[0]["thumb_url"] == f"/api/photo/{ids['p1.jpg']}/thumb"
    assert (await organiser.get(url, params={"status": "lost"})).status_code == 400
    assert (await organiser.get(url, params={"limit": 0})).status_code == 400


async def test_the_organiser_retries_their_event_failed_photos(
    organiser, make_user, make_event, server
) -> None:
    event_id = organiser.event["id"]
    ids = await upload(organiser, event_id, 3)
    connection = await pg(server)
    for name in ("p0.jpg", "p2.jpg"):
        await fail(connection, ids[name], "TimeoutError: 300 s")
    retry = f"/api/events/{event_id}/retry-failed"

    # Nobody else's organiser, and no attendee, may retry them.
    other = await make_user("photographer")
    attendee = await make_user()
    await attendee.post("/api/events/join", json={"code": organiser.event["code"]})
    assert (await other.post(retry)).status_code in {403, 404}
    assert (await attendee.post(retry)).status_code == 403
    assert await connection.fetchval("SELECT count(*) FROM jobs WHERE status = 'failed'") == 2

    # Another event's failures stay as they are.
    elsewhere = await make_event(other, name="Book fair")
    other_ids = await upload(other, elsewhere["id"], 1, first_shade=100)
    await fail(connection, other_ids["p0.jpg"], "TimeoutError: 300 s")

    response = await organiser.post(retry)
    assert response.status_code == 200 and response.json() == {"retried": 2}
    rows = await connection.fetch(
        "SELECT j.status, j.attempts, j.error, p.status AS photo FROM jobs j "
        "JOIN photos p ON p.id = j.photo_id WHERE j.event_id = $1",
        event_id,
    )
    assert {(row["status"], row["attempts"], row["error"], row["photo"]) for row in rows} == {
        ("queued", 0, None, "queued")
    }
    assert (await organiser.post(retry)).json() == {"retried": 0}
    elsewhere_job = await connection.fetchval(
        "SELECT status FROM jobs WHERE event_id = $1", elsewhere["id"]
    )
    assert elsewhere_job == "failed"

    # An admin may retry any event's.
    admin = await make_user("admin")
    retried = await admin.post(f"/api/events/{elsewhere['id']}/retry-failed")
    assert retried.json() == {"retried": 1}
    await connection.close()


async def test_admins_see_failed_jobs_by_name_and_retry_them_all(organiser, make_user, server):
    event_id = organiser.event["id"]
    ids = await upload(organiser, event_id, 3)
    connection = await pg(server)
    for name in ("p0.jpg", "p1.jpg"):
        await fail(connection, ids[name], "RecognitionError: the engine crashed")
    admin = await make_user("admin")

    items = (await admin.get("/api/admin/jobs", params={"status": "failed"})).json()["items"]
    assert [(item["filename"], item["event_name"]) for item in items] == [
        ("p1.jpg", "Summer gala"),
        ("p0.jpg", "Summer gala"),
    ]
    stats = (await admin.get("/api/admin/queue/stats")).json()["queue"]
    assert stats["total_failed"] == 2

    assert (await organiser.post("/api/admin/jobs/retry-failed")).status_code == 403
    response = await admin.post("/api/admin/jobs/retry-failed")
    assert response.status_code == 200 and response.json() == {"retried": 2}
    assert (await admin.get("/api/admin/jobs", params={"status": "failed"})).json()["items"] == []
    statuses = await connection.fetch("SELECT status FROM photos WHERE event_id = $1", event_id)
    assert {row["status"] for row in statuses} == {"queued"}

    # One job retried by the admin is queued again, and its photo with it.
    await fail(connection, ids["p2.jpg"], "TimeoutError: 300 s")
    job_id = await connection.fetchval("SELECT id FROM jobs WHERE photo_id = $1", ids["p2.jpg"])
    assert (await admin.post(f"/api/admin/jobs/{job_id}/retry")).json()["status"] == "queued"
    photo = await connection.fetchval("SELECT status FROM photos WHERE id = $1", ids["p2.jpg"])
    assert photo == "queued"
    assert (await admin.post("/api/admin/jobs/retry-failed")).json() == {"retried": 0}
    await connection.close()


async def test_job_timings_are_read_from_the_jobs_table(organiser, make_user, server) -> None:
    """This server runs no workers, as after a restart: the figures come from the table."""
    ids = await upload(organiser, organiser.event["id"], 4)
    connection = await pg(server)
    start = dt.datetime(2026, 6, 30, 12, tzinfo=dt.UTC)
    for seconds, photo_id in zip((1, 2, 3, 10), ids.values(), strict=True):
        await connection.execute(
            "UPDATE jobs SET status = 'done', started_at = $2, finished_at = $3 "
            "WHERE photo_id = $1",
            photo_id,
            start,
            start + dt.timedelta(seconds=seconds),
        )
    await connection.close()
    admin = await make_user("admin")
    timings = (await admin.get("/api/admin/queue/stats")).json()["queue"]["timings"]
    assert timings["process_photo"] == {"count": 4, "avg_s": 4.0, "p50_s": 3.0, "p95_s": 10.0}
    assert timings["match_member"]["count"] == 0


async def test_admins_list_every_event_and_account_a_page_at_a_time(
    organiser, make_user, make_event
) -> None:
    other = await make_user("photographer", name="Ola Shutter")
    later = await make_event(other, name="Book fair")
    attendee = await make_user(name="Joe")
    await attendee.post("/api/events/join", json={"code": later["code"]})
    await upload(other, later["id"], 2)
    admin = await make_user("admin")

    first = (await admin.get("/api/admin/events", params={"limit": 1})).json()
    assert [item["name"] for item in first["items"]] == ["Book fair"]
    assert first["items"][0]["organiser"]["name"] == "Ola Shutter"
    assert first["items"][0]["counts"] == {"photos": 2, "members": 1}
    second = (
        await admin.get("/api/admin/events", params={"limit": 1, "cursor": first["next_cursor"]})
    ).json()
    assert [item["name"] for item in second["items"]] == ["Summer gala"]
    assert second["next_cursor"] is None

    users = (await admin.get("/api/admin/users", params={"limit": 200})).json()
    by_name = {item["name"]: item for item in users["items"]}
    assert by_name["Ola Shutter"]["events_organised"] == 1
    assert by_name["Joe"]["events_joined"] == 1 and by_name["Joe"]["has_selfie"] is False
    newest_first = [item["id"] for item in users["items"]]
    assert newest_first == sorted(newest_first, reverse=True)
    page = (await admin.get("/api/admin/users", params={"limit": 2})).json()
    assert len(page["items"]) == 2 and page["next_cursor"] == str(page["items"][-1]["id"])

    for path in ("/api/admin/events", "/api/admin/users"):
        assert (await organiser.get(path)).status_code == 403
        assert (await attendee.get(path)).status_code == 403


async def test_a_browser_opening_an_api_address_signed_out_is_sent_to_sign_in(
    organiser, anon
) -> None:
    ids = await upload(organiser, organiser.event["id"], 1)
    address = f"/api/photo/{ids['p0.jpg']}"
    page = await anon.get(address, headers={"accept": "text/html,image/*;q=0.8"})
    assert page.status_code == 303
    assert page.headers["location"] == f"/login?next={address}"
    # A script still gets the API's answer.
    script = await anon.get(address, headers={"accept": "application/json"})
    assert script.status_code == 401 and script.json()["error"] == "not_signed_in"
    # Signed in, the browser gets the photo itself.
    shown = await organiser.get(address, headers={"accept": "text/html"})
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
