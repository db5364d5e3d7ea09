"""Who browses an event's photos: each attendee their own unless the organiser opens them all.

Real faces, real matching: the attendees' "own" photos are the ones FindMe found them in.
"""

from __future__ import annotations

import asyncio
import io
import zipfile

import pytest

from tests.scenes import (
    add_matches,
    drain,
    expected,
    join,
    jpeg,
    open_stream,
    put_selfie,
    upload,
    upload_event_photos,
)
from tests.shared_faces import faces_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

UNKNOWN = 2_000_000_000
HTML = {"accept": "text/html"}


def photo_paths(photo_id: int) -> list[tuple[str, str]]:
    """Every address that hands out a photo, or acts on one as its viewer."""
    return [
        ("GET", f"/api/photo/{photo_id}"),
        ("GET", f"/api/image/{photo_id}"),
        ("GET", f"/api/photo/{photo_id}/thumb"),
        ("POST", f"/api/photo/{photo_id}/not-me"),
    ]


async def listed(client, **params) -> list[str]:
    response = await client.get("/api/all-photos", params={"limit": 200, **params})
    assert response.status_code == 200, response.text
    return sorted(item["filename"] for item in response.json()["items"])


@pytest.fixture
async def matched(make_user, make_event, server):
    """An event with its 15 photos processed, and two attendees matched to theirs."""
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    people = {}
    for person in ("obama", "biden"):
        client = await make_user(name=person)
        selfie = (faces_dir() / "selfies" / f"{person}.jpg").read_bytes()
        assert (await put_selfie(client, selfie)).status_code == 200
        assert (await client.post("/api/events/join", json={"code": event["code"]})).is_success
        people[person] = client
    uploaded = await upload_event_photos(organiser, event["id"])
    ids = {name: photo_id for photo_id, name in uploaded.items()}
    assert (await drain(server.settings))["failed"] == 0
    return {"organiser": organiser, "event": event, "ids": ids, **people}


async def test_an_attendee_sees_only_their_photos_until_the_organiser_opens_all(
    matched, make_user
) -> None:
    organiser, event, ids = matched["organiser"], matched["event"], matched["ids"]
    obama, biden = matched["obama"], matched["biden"]
    every = sorted(ids)
    mine, theirs = expected("obama"), sorted(set(every) - set(expected("obama")))
    assert (await organiser.get(f"/api/events/{event['id']}")).json()["gallery"] == "own"
    # Biden's e06.jpg is not Obama's; e12 and e13 hold both of them.
    assert "e06.jpg" in theirs and {"e12.jpg", "e13.jpg"} <= set(mine)

    # Another photo answers exactly as an unknown id does, on every route; one's own is served.
    for name in ("e06.jpg", theirs[-1]):
        for method, path in photo_paths(ids[name]):
            hidden = await obama.request(method, path)
            missing = await obama.request(method, path.replace(str(ids[name]), str(UNKNOWN)))
            assert (hidden.status_code, missing.status_code) == (404, 404), path
            assert hidden.content == missing.content, path
    for method, path in photo_paths(ids[mine[0]])[:3]:
        assert (await obama.request(method, path)).status_code == 200, path
    # Nor may a member delete it: 404, not the 403 that would say it exists.
    assert (await obama.delete(f"/api/photo/{ids[theirs[0]]}")).status_code == 404
    assert await listed(obama, event_id=event["id"]) == mine
    assert await listed(obama) == mine
    assert await listed(biden, event_id=event["id"]) == expected("biden")

    # The zip and the live stream hold the caller's matches only.
    zipped = await obama.get(f"/api/events/{event['id']}/my-photos.zip")
    assert zipped.status_code == 200
    assert sorted(zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()) == mine
    async with open_stream(obama, event_id=event["id"]) as stream:
        sent = sorted(message["data"]["filename"] for message in await stream.until_ready())
    assert sent == mine

    # The organiser and an admin see every photo.
    admin = await make_user("admin")
    for viewer in (organiser, admin):
        assert await listed(viewer, event_id=event["id"]) == every
        for method, path in photo_paths(ids[theirs[0]])[:3]:
            assert (await viewer.request(method, path)).status_code == 200, path

    # Opened to all: every member sees every photo, at once.
    opened = await organiser.patch(f"/api/events/{event['id']}", json={"gallery": "all"})
    assert opened.status_code == 200, opened.text
    assert opened.json()["gallery"] == "all" and opened.json()["my_role"] == "organiser"
    assert (await obama.get(f"/api/events/{event['id']}")).json()["gallery"] == "all"
    assert await listed(obama, event_id=event["id"]) == every
    assert await listed(obama) == every
    for method, path in photo_paths(ids[theirs[0]])[:3]:
        assert (await obama.request(method, path)).status_code == 200, path
    # ...yet the zip and the stream stay the caller's own.
    zipped = await obama.get(f"/api/events/{event['id']}/my-photos.zip")
    assert sorted(zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()) == mine
    async with open_stream(obama, event_id=event["id"]) as stream:
        sent = sorted(message["data"]["filename"] for message in await stream.until_ready())
    assert sent == mine
    assert (await obama.post(f"/api/photo/{ids[theirs[0]]}/not-me")).status_code == 204
    assert (await obama.delete(f"/api/photo/{ids[theirs[0]]}")).status_code == 403

    # Closed again by an admin: closed at once.
    closed = await admin.patch(f"/api/events/{event['id']}", json={"gallery": "own"})
    assert closed.status_code == 200, closed.text
    assert closed.json()["gallery"] == "own" and closed.json()["my_role"] == "admin"
    assert await listed(obama, event_id=event["id"]) == mine
    assert (await obama.get(f"/api/photo/{ids[theirs[0]]}")).status_code == 404


async def test_only_the_organiser_or_an_admin_chooses_who_sees_the_photos(
    make_user, make_event, anon
) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    assert event["gallery"] == "own"
    member, stranger, admin = await make_user(), await make_user(), await make_user("admin")
    assert (await member.post("/api/events/join", json={"code": event["code"]})).is_success
    path = f"/api/events/{event['id']}"

    refused = await member.patch(path, json={"gallery": "all"})
    assert refused.status_code == 403
    assert refused.json()["detail"] == "Only the event's organiser can do this."
    hidden = await stranger.patch(path, json={"gallery": "all"})
    missing = await stranger.patch(f"/api/events/{UNKNOWN}", json={"gallery": "all"})
    assert (hidden.status_code, missing.status_code) == (404, 404)
    assert hidden.content == missing.content
    assert (await anon.patch(path, json={"gallery": "all"})).status_code == 401
    for body in ({}, {"gallery": "everyone"}, {"gallery": None}, {"gallery": ["all"]}):
        wrong = await organiser.patch(path, json=body)
        assert wrong.status_code == 400, body
        assert "'gallery'" in wrong.json()["detail"]
    assert (await member.get(path)).json()["gallery"] == "own"

    # The member's pages say what they will see, and offer no gallery of everyone's photos.
    page = (await member.get(f"/gallery?event_id={event['id']}", headers=HTML)).text
    assert "Your photos of Summer gala" in page and "All photos of" not in page
    for address in (f"/events/{event['id']}", "/", f"/join/{event['code']}"):
        page = (await member.get(address, headers=HTML)).text
        assert f"/gallery?event_id={event['id']}" not in page, address
    assert (
        "Browse all photos"
        not in (await member.get(f"/my-photos?event_id={event['id']}", headers=HTML)).text
    )
    control = (await organiser.get(f"/events/{event['id']}", headers=HTML)).text
    assert "Attendees see only their own photos" in control
    assert "Everyone who joined sees all photos" in control
    assert 'value="own" checked' in control

    assert (await admin.patch(path, json={"gallery": "all"})).json()["gallery"] == "all"
    assert (await member.get(path)).json()["gallery"] == "all"
    page = (await member.get(f"/gallery?event_id={event['id']}", headers=HTML)).text
    assert "All photos of Summer gala" in page
    assert f"/gallery?event_id={event['id']}" in (await member.get("/", headers=HTML)).text
    assert (
        "Browse all photos"
        in (await member.get(f"/my-photos?event_id={event['id']}", headers=HTML)).text
    )
    control = (await organiser.get(f"/events/{event['id']}", headers=HTML)).text
    assert 'value="all" checked' in control

    # An event may be created open to all; anything but "own" or "all" is refused.
    created = await organiser.post("/api/events", json={"name": "Open day", "gallery": "all"})
    assert created.status_code == 201 and created.json()["gallery"] == "all"
    wrong = await organiser.post("/api/events", json={"name": "Open day", "gallery": "some"})
    assert wrong.status_code == 400


async def test_a_warm_gallery_still_asks_who_may_see_it(
    make_user, make_event, anon, settings
) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    ids = await upload(organiser, event["id"], ("a.jpg", jpeg(1)), ("b.jpg", jpeg(2)))
    member, stranger = await make_user(), await make_user()
    await join(member, event)
    for _ in range(2):  # the event's page is now cached
        assert await listed(organiser, event_id=event["id"]) == ["a.jpg", "b.jpg"]

    # The cached page goes to no one the uncached one would not have gone to.
    hidden = await stranger.get("/api/all-photos", params={"event_id": event["id"]})
    missing = await stranger.get("/api/all-photos", params={"event_id": UNKNOWN})
    assert (hidden.status_code, missing.status_code) == (404, 404)
    assert hidden.content == missing.content
    assert (await anon.get("/api/all-photos", params={"event_id": event["id"]})).status_code == 401
    assert await listed(member, event_id=event["id"]) == []
    await add_matches(settings, user_id=member.user["id"], event_id=event["id"], photo_ids=ids[:1])
    for _ in range(100):  # the match's news comes by NOTIFY, within moments
        if await listed(member, event_id=event["id"]) == ["a.jpg"]:
            break
        await asyncio.sleep(0.05)
    assert await listed(member, event_id=event["id"]) == ["a.jpg"]

    # Opened to all, the member is shown the event's page; closed, their own again at once.
    for gallery, seen in (("all", ["a.jpg", "b.jpg"]), ("own", ["a.jpg"])):
        changed = await organiser.patch(f"/api/events/{event['id']}", json={"gallery": gallery})
        assert changed.status_code == 200, changed.text
        assert await listed(member, event_id=event["id"]) == seen
        refused = await stranger.get("/api/all-photos", params={"event_id": event["id"]})
        assert (refused.status_code, refused.content) == (404, missing.content)
