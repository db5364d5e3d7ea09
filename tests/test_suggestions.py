""" "Is this you?": real faces a little beyond the threshold are asked about, never shown.

The threshold is tightened from the real distances of one attendee's matches, so that his two
farthest photos fall just beyond it: those become suggestions, the rest stay matches.
"""

from __future__ import annotations

import functools
import io
import zipfile
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image
from playwright.async_api import expect
from pytest import approx
from sqlalchemy import func, select

from findme.db import Database, FaceMatch, MatchSuggestion, Photo
from findme.engines.matching import Assignment, FaceRow, match_faces
from findme.settings import Settings
from tests.browser import shot, sign_in, tab_to
from tests.conftest import with_settings
from tests.scenes import drain, join, my_filenames, open_stream, put_selfie, upload
from tests.shared_faces import faces_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

UNKNOWN = 2_000_000_000
ANSWERED = "This suggestion was already answered, or it is not yours."
JSON = {"content-type": "application/json"}
TEXT = {"content-type": "text/plain"}
# Obama's five photos alone, Biden's alone, and one with both of them.
PHOTOS = ["e01.jpg", "e02.jpg", "e03.jpg", "e04.jpg", "e05.jpg", "e06.jpg", "e12.jpg"]


def selfie(person: str) -> bytes:
    return (faces_dir() / "selfies" / f"{person}.jpg").read_bytes()


async def match_distances(settings: Settings, user_id: int) -> dict[str, float]:
    """Filename → distance of the person's stored matches."""
    db = Database(settings)
    try:
        async with db.sessions() as session:
            rows = await session.execute(
                select(Photo.filename, FaceMatch.distance)
                .join(FaceMatch, FaceMatch.photo_id == Photo.id)
                .where(FaceMatch.user_id == user_id)
            )
            return {row.filename: row.distance for row in rows}
    finally:
        await db.aclose()


async def rematch(client, settings: Settings, person: str) -> None:
    """The same selfie again: the person is matched anew in their events (a new selfie)."""
    assert (await put_selfie(client, selfie(person))).status_code == 200
    assert (await drain(settings))["failed"] == 0


async def suggestions_of(client, event_id: int) -> list[dict]:
    response = await client.get(f"/api/events/{event_id}/suggestions")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def assert_error(response, status: int, detail: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] and body["detail"].endswith("."), body
    if detail is not None:
        assert body["detail"] == detail


def vector(value: float) -> bytes:
    """A descriptor `value` away from the zero one."""
    v = np.zeros(128, "<f4")
    v[0] = value
    return v.tobytes()


def test_the_rule_suggests_a_face_just_beyond_the_threshold_to_its_nearest_member_only():
    # Photo 1: a face 0.52 from member 7 and 0.55 from member 8. Photo 2: member 7's face at
    # 0.57, and the same member again at 0.2 through another face. Photo 3: 0.62, too far.
    faces = [FaceRow(11, 1, vector(0.0)), FaceRow(21, 2, vector(0.0)), FaceRow(22, 2, vector(0.37))]
    faces.append(FaceRow(31, 3, vector(0.0)))
    members = [(7, vector(0.52)), (8, vector(-0.55))]
    rule = functools.partial(match_faces, faces[:1], members, threshold=0.5, margin=0.06)
    # The face's nearest member is asked; the second nearest never is, even in the band.
    assert rule().matches == {} and rule().suggestions == {(1, 7): Assignment(11, approx(0.52))}
    # "Not me" makes the next nearest the nearest; a margin of 0 suggests nothing.
    assert rule(rejected=[(1, 7)]).suggestions == {(1, 8): Assignment(11, approx(0.55))}
    assert rule(margin=0.0).suggestions == {}
    # Matched to a photo through one face, a member is not also asked about another face of it.
    both = match_faces(faces[1:3], [(7, vector(0.57))], threshold=0.5, margin=0.06)
    assert both.matches == {(2, 7): Assignment(22, approx(0.2))} and both.suggestions == {}
    far = match_faces(faces[3:], [(7, vector(0.62))], threshold=0.5, margin=0.06)
    assert far.matches == far.suggestions == {}


@pytest.fixture
async def suggested(server, make_user, make_event):
    """Obama's two farthest photos are suggestions under a tighter threshold; Biden is another
    attendee of the same event."""
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    people = {}
    for person in ("obama", "biden"):
        client = await make_user(name=person)
        assert (await put_selfie(client, selfie(person))).status_code == 200
        await join(client, event)
        people[person] = client
    folder = faces_dir() / "event"
    ids = dict(
        zip(
            PHOTOS,
            await upload(organiser, event["id"], *((n, (folder / n).read_bytes()) for n in PHOTOS)),
            strict=True,
        )
    )
    assert (await drain(server.settings))["failed"] == 0
    obama = people["obama"]
    distances = await match_distances(server.settings, obama.user["id"])
    assert sorted(distances) == ["e01.jpg", "e02.jpg", "e03.jpg", "e04.jpg", "e05.jpg", "e12.jpg"]
    by_distance = sorted(distances, key=distances.get)
    near, far = by_distance[:-2], by_distance[-2:]
    # Between the nearest of the far two and the farthest of the others; the margin reaches
    # exactly the usual threshold, under which all his photos matched.
    threshold = (distances[near[-1]] + distances[far[0]]) / 2
    tight = with_settings(
        server.settings,
        match_threshold=threshold,
        suggestion_margin=server.settings.match_threshold - threshold,
    )
    await rematch(obama, tight, "obama")
    return {
        "organiser": organiser,
        "event": event,
        "ids": ids,
        "near": sorted(near),
        "far": sorted(far),
        "tight": tight,
        **people,
    }


async def test_a_suggested_face_is_asked_about_and_its_photo_is_not_shown(
    suggested, make_user
) -> None:
    obama, biden, organiser = suggested["obama"], suggested["biden"], suggested["organiser"]
    event_id, ids, far = suggested["event"]["id"], suggested["ids"], suggested["far"]
    assert await my_filenames(obama, event_id) == suggested["near"]

    items = await suggestions_of(obama, event_id)
    assert sorted(item["photo_id"] for item in items) == sorted(ids[name] for name in far)
    for item in items:
        assert set(item) == {"id", "photo_id", "face_url"}
        assert item["face_url"] == f"/api/suggestions/{item['id']}/face"
        # The photo itself is not his to see yet ("own" gallery).
        for path in (f"/api/photo/{item['photo_id']}", f"/api/photo/{item['photo_id']}/thumb"):
            assert_error(await obama.get(path), 404, "There is no photo with this id.")
        face = await obama.get(item["face_url"])
        assert face.status_code == 200
        assert face.headers["content-type"] == "image/jpeg"
        assert face.headers["cache-control"] == "private, no-store"
        with Image.open(io.BytesIO(face.content)) as crop:
            assert crop.format == "JPEG" and crop.width == crop.height >= 64

    # The first in name order is the one confirmed below: always the same photo.
    first, second = sorted(items, key=lambda item: item["photo_id"] != ids[far[0]])
    # Nobody else reads or answers his suggestions: they answer as an unknown one does.
    for other in (biden, organiser):
        assert_error(await other.get(first["face_url"]), 404)
        response = await other.post(f"/api/suggestions/{first['id']}", json={"answer": "yes"})
        assert_error(response, 404, ANSWERED)
    unknown = await obama.post(f"/api/suggestions/{UNKNOWN}", json={"answer": "yes"})
    assert_error(unknown, 404, ANSWERED)
    assert first["photo_id"] not in {i["photo_id"] for i in await suggestions_of(biden, event_id)}
    # The organiser joined nothing: no suggestions of theirs, as for an event they cannot see.
    assert_error(await organiser.get(f"/api/events/{event_id}/suggestions"), 404)

    # Garbage is refused with a sentence, and changes nothing.
    answer = f"/api/suggestions/{first['id']}"
    assert_error(await obama.post(answer, content=b"{", headers=JSON), 400)
    assert_error(
        await obama.post(answer, content=b"yes", headers={"content-type": "text/plain"}), 415
    )
    for body in (
        {},
        {"answer": "maybe"},
        {"answer": True},
        {"answer": ["yes"]},
        {"answer": "YES "},
    ):
        assert_error(await obama.post(answer, json=body), 400)
    assert_error(await obama.post("/api/suggestions/abc", json={"answer": "yes"}), 400)
    assert_error(await obama.post("/api/suggestions/99999999999", json={"answer": "yes"}), 404)
    assert_error(await obama.get("/api/suggestions/-1/face"), 400)
    assert_error(await obama.get(f"/api/suggestions/{UNKNOWN}/face"), 404)
    assert_error(await obama.get("/api/events/abc/suggestions"), 400)
    assert_error(await obama.get(f"/api/events/{UNKNOWN}/suggestions"), 404)
    assert await suggestions_of(obama, event_id) == items

    # Yes: the photo is his at once, in the live stream, the list, the original and the zip.
    async with open_stream(obama, event_id=event_id) as stream:
        await stream.until_ready()
        response = await obama.post(answer, json={"answer": "yes"})
        assert response.status_code == 200, response.text
        assert response.json()["photo"]["id"] == first["photo_id"]
        assert (await stream.next())["data"]["id"] == first["photo_id"]
    confirmed = next(name for name in far if ids[name] == first["photo_id"])
    assert await my_filenames(obama, event_id) == sorted([*suggested["near"], confirmed])
    assert (await obama.get(f"/api/photo/{first['photo_id']}")).status_code == 200
    archive = await obama.get(f"/api/events/{event_id}/my-photos.zip")
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as bundle:
        assert confirmed in bundle.namelist()
    assert_error(await obama.post(answer, json={"answer": "no"}), 404, ANSWERED)
    assert_error(await obama.get(first["face_url"]), 404)

    # No: the face goes, the photo stays out of reach.
    response = await obama.post(f"/api/suggestions/{second['id']}", json={"answer": "no"})
    assert response.status_code == 200 and response.json() == {"photo": None}
    assert await suggestions_of(obama, event_id) == []
    assert_error(await obama.get(f"/api/photo/{second['photo_id']}"), 404)
    refused = next(name for name in far if ids[name] == second["photo_id"])

    # A new selfie matches him again: the confirmed photo stays his, the refused one is neither
    # matched nor asked about again, at this threshold or at any other.
    tight = suggested["tight"]
    for settings in (tight, with_settings(tight, match_threshold=0.7, suggestion_margin=0.1)):
        await rematch(obama, settings, "obama")
        mine = await my_filenames(obama, event_id)
        assert confirmed in mine and refused not in mine
        assert await suggestions_of(obama, event_id) == []
    # A late joiner nearer to his face (a second account, one of his photos as its selfie)
    # wins it by the rule; his confirmed photo stays his all the same.
    twin = await make_user(name="twin")
    twin_selfie = (faces_dir() / "event" / confirmed).read_bytes()
    assert (await put_selfie(twin, twin_selfie)).status_code == 200
    await join(twin, suggested["event"])
    assert (await drain(tight))["failed"] == 0
    assert confirmed in await my_filenames(twin, event_id)
    assert confirmed in await my_filenames(obama, event_id)
    # A much tighter threshold leaves him his confirmed photo alone (a late joiner's matching
    # runs the same way, for the photos near the newcomer).
    strict = with_settings(tight, match_threshold=0.05, suggestion_margin=0.5)
    await rematch(obama, strict, "obama")
    assert await my_filenames(obama, event_id) == [confirmed]
    asked = await suggestions_of(obama, event_id)
    assert sorted(i["photo_id"] for i in asked) == sorted(ids[n] for n in suggested["near"])

    # Removing his selfie removes what it suggested (biometric data), at once.
    selfies = (await obama.get("/api/me/selfies")).json()["items"]
    for item in selfies:
        assert (await obama.delete(f"/api/me/selfies/{item['id']}")).status_code == 204
    assert await suggestions_of(obama, event_id) == []
    assert_error(await obama.get(asked[0]["face_url"]), 404)
    assert (await drain(strict))["failed"] == 0
    assert await my_filenames(obama, event_id) == [confirmed]

    # Erasing his account erases his suggestions with it.
    await rematch(obama, strict, "obama")
    assert await suggestions_of(obama, event_id)
    assert (await obama.delete("/api/me")).status_code == 204
    assert await stored_suggestions(strict, obama.user["id"]) == 0


async def stored_suggestions(settings: Settings, user_id: int) -> int:
    db = Database(settings)
    try:
        async with db.sessions() as session:
            query = select(func.count()).where(MatchSuggestion.user_id == user_id)
            return await session.scalar(query) or 0
    finally:
        await db.aclose()


async def my_photos_page(contexts, server, client, event_id: int, size: str):
    """My photos of the event, signed in as the client's person through the sign-in page."""
    page = await (await contexts(server.url, size)).new_page()
    target = f"/my-photos?event_id={event_id}"
    await page.goto(f"/login?next={quote(target)}")
    await sign_in(page, client.user["email"])
    await expect(page).to_have_url(server.url + target)
    return page


def tile(page, suggestion: dict):
    """The grid's tile of a suggestion's photo."""
    return page.locator(f'#photos .tile[data-photo-id="{suggestion["photo_id"]}"]')


@pytest.mark.browser
async def test_my_photos_asks_is_this_you(suggested, server, contexts) -> None:
    obama, event_id = suggested["obama"], suggested["event"]["id"]
    items = await suggestions_of(obama, event_id)
    for size in ("phone", "desktop"):
        page = await my_photos_page(contexts, server, obama, event_id, size)
        card = page.locator("#suggestions")
        await expect(card.get_by_role("heading", name="Is this you?")).to_be_visible()
        faces = card.locator(".suggestion img")
        await expect(faces).to_have_count(len(items))
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#suggestions img, #photos img')]"
            ".every(image => image.complete && image.naturalWidth > 0)"
        )
        # Square faces, and nothing overflows a phone's width.
        for box in [await face.bounding_box() for face in await faces.all()]:
            assert box is not None and abs(box["width"] - box["height"]) < 1, box
        assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        await shot(page, "suggestions", size)
        await page.context.close()

    page = await my_photos_page(contexts, server, obama, event_id, "phone")
    grid = page.locator("#photos .tile")
    await expect(grid).to_have_count(len(suggested["near"]))
    first, second = (page.locator(f'[data-suggestion-id="{item["id"]}"]') for item in items)
    # Answered from the keyboard: Tab to the first face's "Yes", then on to the next "No".
    await tab_to(page, "#suggestions .suggestion button")
    assert await page.evaluate("document.activeElement.textContent") == "Yes, it's me"
    await page.keyboard.press("Enter")
    await expect(first).to_have_count(0)
    await expect(tile(page, items[0])).to_be_visible()
    await expect(second.get_by_role("button", name="Yes, it's me")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(second.get_by_role("button", name="No, it is not me")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(second).to_have_count(0)
    await expect(page.locator("#suggestions")).to_be_hidden()
    await expect(grid).to_have_count(len(suggested["near"]) + 1)
    await expect(tile(page, items[1])).to_have_count(0)
    await shot(page, "suggestions-answered", "phone")
    contexts.assert_no_errors()
