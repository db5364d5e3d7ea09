"""Photos in, "my photos" out: real PostgreSQL, real dlib, the shared face photos."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time

import asyncpg
import pillow_heif
import pytest
from PIL import Image

from findme.settings import Settings
from tests.scenes import (
    UPLOAD,
    add_selfie,
    attendees_with_selfies,
    drain,
    expected,
    my_filenames,
    put_selfie,
    upload_event_photos,
)
from tests.shared_faces import faces_dir, group_shot, manifest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


async def pg(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(settings.database_url.replace("+asyncpg", ""))


@pytest.fixture
async def gala(make_user, make_event):
    organiser = await make_user("photographer")
    organiser.event = await make_event(organiser)
    return organiser


async def test_every_attendee_sees_exactly_their_photos(gala, make_user, server) -> None:
    event = gala.event
    people = await attendees_with_selfies(make_user)
    for client in people.values():
        assert (
            await client.post("/api/events/join", json={"code": event["code"]})
        ).status_code == 200
    await upload_event_photos(gala, event["id"])
    outcomes = await drain(server.settings)
    assert outcomes["failed"] == 0
    for person, client in people.items():
        assert await my_filenames(client, event["id"]) == expected(person), person
    progress = (await gala.get(f"/api/events/{event['id']}/progress")).json()
    assert progress["photos"] == progress["done"] == 15
    assert progress["queued"] == progress["running"] == progress["failed"] == 0
    assert progress["faces"] == sum(p["faces"] for p in manifest()["event"].values())
    photos = (await gala.get("/api/all-photos", params={"event_id": event["id"]})).json()["items"]
    assert {photo["status"] for photo in photos} == {"done"}


async def test_late_joiners_are_matched_without_detecting_again(gala, make_user, server) -> None:
    event = gala.event
    await upload_event_photos(gala, event["id"])
    await drain(server.settings)
    people = await attendees_with_selfies(make_user)
    for client in people.values():
        await client.post("/api/events/join", json={"code": event["code"]})
    connection = await pg(server.settings)
    kinds = await connection.fetch("SELECT kind, status FROM jobs WHERE kind = 'match_member'")
    assert len(kinds) == 6
    faces_before = await connection.fetchval("SELECT max(id) FROM faces")
    outcomes = await drain(server.settings)
    assert outcomes["done"] == 6  # six match_member jobs, not a single photo job again
    assert await connection.fetchval("SELECT max(id) FROM faces") == faces_before
    await connection.close()
    for person, client in people.items():
        assert await my_filenames(client, event["id"]) == expected(person), person


async def test_group_shot_faces_are_all_found_and_matched(gala, make_user, server) -> None:
    data, pasted = group_shot([120, 130, 140, 150, 160, 170, 180, 200])
    people = {person for person, _ in pasted}
    clients = {}
    selfies = manifest()["selfies"]
    for person in people:
        clients[person] = await make_user(name=person)
        selfie = (faces_dir() / selfies[person]).read_bytes()
        assert (await put_selfie(clients[person], selfie)).status_code == 200
        await clients[person].post("/api/events/join", json={"code": gala.event["code"]})
    response = await gala.post(
        UPLOAD.format(gala.event["id"]), files={"files": ("group.jpg", data)}
    )
    photo_id = response.json()["results"][0]["photo_id"]
    await drain(server.settings)
    connection = await pg(server.settings)
    faces = await connection.fetchval("SELECT count(*) FROM faces WHERE photo_id = $1", photo_id)
    await connection.close()
    assert faces == len(pasted)
    for person, client in clients.items():
        assert await my_filenames(client, gala.event["id"]) == ["group.jpg"], person


async def test_a_photo_without_faces_is_final_not_rescanned(gala, server) -> None:
    landscape = io.BytesIO()
    Image.linear_gradient("L").resize((900, 600)).convert("RGB").save(landscape, "JPEG")
    response = await gala.post(
        UPLOAD.format(gala.event["id"]), files={"files": ("sunset.jpg", landscape.getvalue())}
    )
    job_id = response.json()["results"][0]["job_id"]
    assert (await drain(server.settings))["done"] == 1
    photos = (await gala.get("/api/all-photos", params={"event_id": gala.event["id"]})).json()
    assert photos["items"][0]["status"] == "no_faces"
    assert (await gala.get(f"/api/jobs/{job_id}")).json()["status"] == "done"
    assert (await drain(server.settings))["done"] == 0  # nothing left to scan again


async def test_selfie_rules(make_user) -> None:
    client = await make_user()
    folder = faces_dir()
    obama = (folder / "selfies" / "obama.jpg").read_bytes()
    no_consent = await put_selfie(client, obama, consent="")
    assert no_consent.status_code == 400
    assert no_consent.json()["error"] == "consent_required"
    assert "biometric" in no_consent.json()["detail"]
    blank = io.BytesIO()
    Image.new("RGB", (640, 480), "lightgray").save(blank, "JPEG")
    none = await put_selfie(client, blank.getvalue())
    assert (none.status_code, none.json()["error"]) == (422, "no_face")
    two = await put_selfie(client, (folder / "event" / "e12.jpg").read_bytes())
    assert (two.status_code, two.json()["error"]) == (422, "several_faces")
    assert "only your face" in two.json()["detail"]
    text = await put_selfie(client, b"hello", "me.jpg")
    assert text.status_code == 415
    me = (await client.get("/api/me")).json()
    assert me["has_selfie"] is False and me["consent_at"] is None
    heif = pillow_heif.from_pillow(Image.open(io.BytesIO(obama)))
    heic = io.BytesIO()
    heif.save(heic, quality=90)
    accepted = await put_selfie(client, heic.getvalue(), "IMG_0001.HEIC")
    assert accepted.status_code == 200, accepted.text
    me = (await client.get("/api/me")).json()
    assert me["has_selfie"] is True and me["consent_at"]
    webp = io.BytesIO()
    Image.open(io.BytesIO(obama)).save(webp, "WEBP")
    assert (await put_selfie(client, webp.getvalue(), "me.webp")).status_code == 200


async def test_not_me_sticks_even_after_a_rematch(gala, make_user, server) -> None:
    event = gala.event
    obama = await make_user(name="obama")
    selfie = (faces_dir() / "selfies" / "obama.jpg").read_bytes()
    await put_selfie(obama, selfie)
    await obama.post("/api/events/join", json={"code": event["code"]})
    ids = await upload_event_photos(gala, event["id"])
    await drain(server.settings)
    e12 = next(photo_id for photo_id, name in ids.items() if name == "e12.jpg")
    assert "e12.jpg" in await my_filenames(obama, event["id"])
    assert (await obama.post(f"/api/photo/{e12}/not-me")).status_code == 204
    assert "e12.jpg" not in await my_filenames(obama, event["id"])
    # A new selfie re-matches the whole event: the rejected photo stays rejected.
    await put_selfie(obama, selfie, "again.jpg")
    await drain(server.settings)
    mine = await my_filenames(obama, event["id"])
    assert "e12.jpg" not in mine
    assert mine == sorted(set(expected("obama")) - {"e12.jpg"})
    stranger = await make_user()
    assert (await stranger.post(f"/api/photo/{e12}/not-me")).status_code == 404


async def test_erasure_leaves_no_biometric_data(gala, make_user, server) -> None:
    event = gala.event
    biden = await make_user(name="biden")
    await put_selfie(biden, (faces_dir() / "selfies" / "biden.jpg").read_bytes())
    second = await add_selfie(biden, (faces_dir() / "selfies" / "biden.jpg").read_bytes())
    assert second.status_code == 201, second.text
    await biden.post("/api/events/join", json={"code": event["code"]})
    ids = await upload_event_photos(gala, event["id"])
    await drain(server.settings)
    e06 = next(photo_id for photo_id, name in ids.items() if name == "e06.jpg")
    await biden.post(f"/api/photo/{e06}/not-me")
    user_id = biden.user["id"]
    connection = await pg(server.settings)
    assert await connection.fetchval("SELECT count(*) FROM face_matches WHERE user_id=$1", user_id)
    assert (await biden.delete("/api/me")).status_code == 204
    for table in ("face_matches", "rejected_matches", "event_members", "browser_sessions"):
        count = await connection.fetchval(f"SELECT count(*) FROM {table} WHERE user_id=$1", user_id)
        assert count == 0, table
    assert await connection.fetchval("SELECT count(*) FROM users WHERE id=$1", user_id) == 0
    # Both of biden's selfies, image and descriptor, are gone: nobody else enrolled one.
    assert await connection.fetchval("SELECT count(*) FROM selfies") == 0
    await connection.close()
    assert (await biden.get("/api/me")).status_code == 401


async def test_retry_then_final_failure_then_admin_retry(gala, make_user, server, settings) -> None:
    event = gala.event
    good = (faces_dir() / "event" / "e01.jpg").read_bytes()
    response = await gala.post(UPLOAD.format(event["id"]), files={"files": ("e01.jpg", good)})
    photo_id, job_id = (response.json()["results"][0][key] for key in ("photo_id", "job_id"))
    connection = await pg(server.settings)
    # The stored bytes go bad behind the app's back (disk or storage fault).
    await connection.execute(
        "UPDATE photos SET original = $1 WHERE id = $2", b"\x00" * 100, photo_id
    )
    fast = settings.__class__(**{**settings.__dict__, "job_retry_base_s": 0.05})
    outcomes = await drain(fast)
    assert (outcomes["retried"], outcomes["failed"]) == (2, 1)
    admin = await make_user("admin")
    job = (await admin.get(f"/api/admin/queue/jobs/{job_id}")).json()
    assert job["status"] == "failed" and job["attempts"] == 3
    assert len(job["error_history"]) == 3 and job["error"]
    assert (await gala.get(f"/api/jobs/{job_id}")).json()["status"] == "failed"
    photos = (await gala.get("/api/all-photos", params={"event_id": event["id"]})).json()["items"]
    assert photos[0]["status"] == "failed"
    failed = (await admin.get("/api/admin/jobs", params={"status": "failed"})).json()["items"]
    assert [item["id"] for item in failed] == [job_id]
    stats = (await admin.get("/api/admin/queue/stats")).json()["queue"]
    assert stats["total_failed"] == 1 and stats["current_queue_size"] == 0
    assert (await gala.get("/api/admin/queue/stats")).status_code == 403
    # Repaired, retried by the admin: done.
    await connection.execute("UPDATE photos SET original = $1 WHERE id = $2", good, photo_id)
    retried = await admin.post(f"/api/admin/jobs/{job_id}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    assert (await admin.post(f"/api/admin/jobs/{job_id}/retry")).status_code == 409
    await drain(fast)
    assert (await gala.get(f"/api/jobs/{job_id}")).json()["status"] == "done"
    await connection.close()


def start_worker(settings: Settings, *args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "FINDME_DATABASE_URL": settings.database_url,
        "FINDME_DATA_DIR": str(settings.data_dir),
        "FINDME_JOB_LEASE_S": "3",
        "FINDME_WORKERS": "2",
        "FINDME_ENGINE_PROCESSES": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "findme.cli", "process", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_a_killed_worker_process_loses_nothing(gala, make_user, server) -> None:
    event = gala.event
    people = await attendees_with_selfies(make_user)
    for client in people.values():
        await client.post("/api/events/join", json={"code": event["code"]})
    await upload_event_photos(gala, event["id"])
    await drain(server.settings)  # the six member jobs; photos follow
    connection = await pg(server.settings)
    await connection.execute("DELETE FROM face_matches")
    await connection.execute("DELETE FROM faces")
    await connection.execute(
        "UPDATE jobs SET status='queued', attempts=0, finished_at=NULL WHERE kind='process_photo'"
    )
    worker = start_worker(server.settings)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        done = await connection.fetchval(
            "SELECT count(*) FROM jobs WHERE kind='process_photo' AND status='done'"
        )
        running = await connection.fetchval("SELECT count(*) FROM jobs WHERE status='running'")
        if done >= 3 and running:
            break
        await asyncio.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.communicate()  # returns once its engine processes noticed and exited too
    assert 3 <= done < 15, "the worker should be killed in the middle of the batch"
    assert await connection.fetchval("SELECT count(*) FROM jobs WHERE status='running'") >= 1
    restarted = start_worker(server.settings, "--burst")
    output, _ = restarted.communicate(timeout=180)
    assert restarted.returncode == 0, output
    statuses = await connection.fetch("SELECT status, count(*) FROM jobs GROUP BY status")
    assert dict((row[0], row[1]) for row in statuses) == {"done": 21}
    duplicates = await connection.fetchval(
        "SELECT count(*) FROM (SELECT photo_id, user_id FROM face_matches "
        "GROUP BY photo_id, user_id HAVING count(*) > 1) AS d"
    )
    assert duplicates == 0
    await connection.close()
    for person, client in people.items():
        assert await my_filenames(client, event["id"]) == expected(person), person


async def test_two_pipeline_instances_do_each_job_once(gala, server) -> None:
    await upload_event_photos(gala, gala.event["id"])
    workers = [start_worker(server.settings, "--burst") for _ in range(2)]
    outputs = [worker.communicate(timeout=180)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    done_lines = [
        line for output in outputs for line in output.splitlines() if "process_photo done" in line
    ]
    job_ids = [line.split("job ", 1)[1].split()[0] for line in done_lines]
    assert len(job_ids) == len(set(job_ids)) == 15
    assert all(output.count("process_photo done") > 0 for output in outputs), "both worked"
    connection = await pg(server.settings)
    attempts = await connection.fetch("SELECT attempts, status FROM jobs")
    await connection.close()
    assert {(row["attempts"], row["status"]) for row in attempts} == {(1, "done")}


async def test_a_script_follows_its_matching_until_my_photos_are_complete(
    gala, make_user, server
) -> None:
    event = gala.event
    await upload_event_photos(gala, event["id"])
    await drain(server.settings)
    person = "obama"
    client = await make_user(name=person)
    selfie = manifest()["selfies"][person]
    assert (await put_selfie(client, (faces_dir() / selfie).read_bytes())).status_code == 200

    joined = await client.post("/api/events/join", json={"code": event["code"]})
    assert joined.status_code == 200, joined.text
    job = joined.json()["job"]
    assert job["status"] == "queued"
    assert job["status_url"] == f"/api/jobs/{job['id']}"
    assert (await client.get(job["status_url"])).json()["status"] == "queued"
    progress = (await client.get(f"/api/events/{event['id']}/progress")).json()
    assert progress["queued"] == 1  # the photos are done; my matching is not
    assert progress["matching"] == {"queued": 1, "running": 0, "done": 0, "failed": 0}
    status = (await client.get("/api/me/status")).json()
    assert status["pending"] == 1
    assert status["events"] == [
        {
            "event_id": event["id"],
            "event_name": event["name"],
            "matching": "queued",
            "job": job,
            "photos_pending": 0,
        }
    ]
    # Joining again answers with the same job rather than starting another.
    again = await client.post("/api/events/join", json={"code": event["code"]})
    assert again.json()["job"] == job

    await drain(server.settings)
    progress = (await client.get(f"/api/events/{event['id']}/progress")).json()
    assert (progress["queued"], progress["running"]) == (0, 0)
    assert progress["matching"]["done"] == 1
    status = (await client.get("/api/me/status")).json()
    assert status["pending"] == 0
    assert status["events"][0]["matching"] == "done"
    assert (await client.get(job["status_url"])).json()["status"] == "done"
    assert await my_filenames(client, event["id"]) == expected(person)


async def test_joining_without_a_selfie_starts_no_job(gala, make_user) -> None:
    client = await make_user()
    joined = await client.post("/api/events/join", json={"code": gala.event["code"]})
    assert joined.status_code == 200
    assert joined.json()["job"] is None
    status = (await client.get("/api/me/status")).json()
    assert status["events"][0]["matching"] == "none"


async def test_several_selfies_match_by_the_nearest_and_each_can_be_removed(
    gala, make_user, server
) -> None:
    event = gala.event
    await upload_event_photos(gala, event["id"])
    await drain(server.settings)
    me = await make_user()
    selfie = {
        person: (faces_dir() / path).read_bytes() for person, path in manifest()["selfies"].items()
    }
    assert (await put_selfie(me, selfie["obama"])).status_code == 200
    await me.post("/api/events/join", json={"code": event["code"]})
    await drain(server.settings)
    assert await my_filenames(me, event["id"]) == expected("obama")

    # A second selfie: a face counts as mine when it is near any of my selfies.
    added = await add_selfie(me, selfie["biden"])
    assert added.status_code == 201, added.text
    items = added.json()["items"]
    assert len(items) == 2
    await drain(server.settings)
    both = sorted(set(expected("obama")) | set(expected("biden")))
    assert await my_filenames(me, event["id"]) == both

    # The selfie page shows them; nobody else can see them.
    listed = (await me.get("/api/me/selfies")).json()["items"]
    assert [item["id"] for item in listed] == [item["id"] for item in items]
    image = await me.get(listed[1]["image_url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert image.headers["cache-control"] == "private, no-store"
    assert Image.open(io.BytesIO(image.content)).format == "JPEG"
    stranger = await make_user()
    assert (await stranger.get(listed[1]["image_url"])).status_code == 404
    assert (await stranger.delete(f"/api/me/selfies/{listed[1]['id']}")).status_code == 404

    # Three at most; a fourth is refused and stores nothing.
    assert (await add_selfie(me, selfie["biden"])).status_code == 201
    refused = await add_selfie(me, selfie["rose_leslie"])
    assert refused.status_code == 409
    assert refused.json()["error"] == "too_many_selfies"
    assert len((await me.get("/api/me/selfies")).json()["items"]) == 3

    # Removing biden's two selfies leaves obama's photos only.
    for item in (await me.get("/api/me/selfies")).json()["items"][1:]:
        assert (await me.delete(f"/api/me/selfies/{item['id']}")).status_code == 204
    await drain(server.settings)
    assert await my_filenames(me, event["id"]) == expected("obama")

    # Removing the last one: no selfie, no matches.
    last = (await me.get("/api/me/selfies")).json()["items"][0]
    assert (await me.delete(f"/api/me/selfies/{last['id']}")).status_code == 204
    assert (await me.delete(f"/api/me/selfies/{last['id']}")).status_code == 404
    await drain(server.settings)
    assert await my_filenames(me, event["id"]) == []
    assert (await me.get("/api/me")).json()["has_selfie"] is False
