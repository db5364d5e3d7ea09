"""Share links over real HTTP against real PostgreSQL: made by who may see the photo, opened by
anyone who has one, turned off by its maker, and gone with the photo, the event or the maker."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import func, select

from findme.db import Database, ShareLink
from findme.domain.shares import ShareLinkGone
from tests.conftest import PASSWORD, serve, with_settings
from tests.scenes import add_matches, join, jpeg, upload
from tests.test_photos import jpeg_with_gps

GONE = ShareLinkGone.__doc__
HTML = {"accept": "text/html"}
GPS_IFD = 0x8825


@pytest.fixture
async def scene(server, make_user, make_event) -> dict[str, Any]:
    """An event with three photos; Ann is matched to the first two, Bo (a member) to none."""
    organiser = await make_user("photographer", name="Pat Organiser")
    event = await make_event(organiser, "Harbour Gala")
    photos = await upload(
        organiser,
        event["id"],
        ("ann-at-the-bar.jpg", jpeg_with_gps()),
        ("ann-dancing.jpg", jpeg(2)),
        ("bo-alone.jpg", jpeg(3)),
    )
    ann = await make_user(name="Ann Guest")
    bo = await make_user(name="Bo Member")
    for member in (ann, bo):
        await join(member, event)
    await add_matches(
        server.settings, user_id=ann.user["id"], event_id=event["id"], photo_ids=photos[:2]
    )
    return {"organiser": organiser, "event": event, "photos": photos, "ann": ann, "bo": bo}


async def share(client: httpx.AsyncClient, photo_id: int) -> dict[str, Any]:
    response = await client.post(f"/api/photos/{photo_id}/share-links")
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


def path_of(link: dict[str, Any]) -> str:
    return httpx.URL(link["url"]).path


async def assert_gone(anon: httpx.AsyncClient, link: dict[str, Any]) -> None:
    page = await anon.get(path_of(link), headers=HTML)
    assert page.status_code == 404
    assert GONE in page.text
    assert page.headers["x-robots-tag"] == "noindex"
    assert (await anon.get(f"{path_of(link)}/image")).status_code == 404


async def share_rows(settings) -> int:
    db = Database(settings)
    try:
        async with db.sessions() as session:
            return await session.scalar(select(func.count()).select_from(ShareLink)) or 0
    finally:
        await db.aclose()


async def test_a_link_shows_the_photo_to_anyone_until_its_maker_turns_it_off(
    scene, server, anon
) -> None:
    ann, photo_id = scene["ann"], scene["photos"][0]
    link = await share(ann, photo_id)
    assert link["url"].startswith(f"{server.url}/s/")
    token = link["url"].rsplit("/", 1)[1]
    assert len(token) == 32  # secrets.token_urlsafe(24)
    db = Database(server.settings)
    try:
        async with db.sessions() as session:
            stored = await session.scalar(select(ShareLink.token_hash))
    finally:
        await db.aclose()
    assert stored == hashlib.sha256(token.encode()).hexdigest()

    # Signed out: the photo and its event's name, and nothing of the people or other photos.
    page = await anon.get(path_of(link), headers=HTML)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-robots-tag"] == "noindex"
    assert '<meta name="robots" content="noindex">' in page.text
    assert "Harbour Gala" in page.text
    assert f'src="/s/{token}/image"' in page.text
    assert f"/s/{token}/image?download=1" in page.text
    people = ("Ann Guest", "Pat Organiser", "Bo Member", ann.user["email"])
    for private in (*people, "ann-at-the-bar", "/api/", "ann-dancing", "bo-alone"):
        assert private not in page.text, private
    for other in scene["photos"]:
        assert f"/photo/{other}" not in page.text

    # The bytes are the original members get, and carry no GPS.
    served = await anon.get(f"{path_of(link)}/image")
    assert served.status_code == 200
    assert served.content == (await ann.get(f"/api/photo/{photo_id}")).content
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["cache-control"].startswith("private")
    assert served.headers["x-robots-tag"] == "noindex"
    assert not Image.open(io.BytesIO(served.content)).getexif().get_ifd(GPS_IFD)
    cached = await anon.get(
        f"{path_of(link)}/image", headers={"if-none-match": served.headers["etag"]}
    )
    assert cached.status_code == 304
    assert cached.headers["cache-control"] == "private, no-cache"
    download = await anon.get(f"{path_of(link)}/image", params={"download": "1"})
    assert download.headers["content-disposition"].startswith('attachment; filename="photo.jpg"')

    # Signed in as anyone, the same.
    bo_page = await scene["bo"].get(path_of(link), headers=HTML)
    assert bo_page.status_code == 200
    assert "Ann Guest" not in bo_page.text and "Bo Member" not in bo_page.text

    # The maker's list: never the token, how often the page was opened.
    listed = (await ann.get("/api/share-links")).json()["items"]
    assert token not in str(listed)
    [item] = listed
    assert item["id"] == link["id"]
    assert item["photo_id"] == photo_id
    assert item["event_name"] == "Harbour Gala"
    assert item["thumb_url"] == f"/api/photo/{photo_id}/thumb"
    assert item["opened_count"] == 2
    assert item["last_opened_at"] is not None
    assert (await scene["bo"].get("/api/share-links")).json()["items"] == []

    # Another may not turn it off, and learns nothing of it.
    refused = await scene["bo"].delete(f"/api/share-links/{link['id']}")
    assert refused.status_code == 404
    assert refused.json()["detail"] == "You have no share link with this id."
    assert (await anon.get(path_of(link))).status_code == 200

    # Its maker turns it off: the page says so, the image is gone.
    assert (await ann.delete(f"/api/share-links/{link['id']}")).status_code == 204
    await assert_gone(anon, link)
    gone = await anon.get(path_of(link), headers={"accept": "application/json"})
    assert gone.status_code == 404
    assert GONE in gone.text
    assert (await ann.delete(f"/api/share-links/{link['id']}")).status_code == 404
    assert (await ann.get("/api/share-links")).json()["items"] == []


async def test_only_who_may_see_a_photo_can_share_it(scene, server, anon, make_user) -> None:
    ann, bo, organiser = scene["ann"], scene["bo"], scene["organiser"]
    first, _second, third = scene["photos"]
    stranger = await make_user(name="Cy Stranger")
    for client, photo_id in ((bo, first), (stranger, first), (ann, third), (ann, 2**31 - 1)):
        refused = await client.post(f"/api/photos/{photo_id}/share-links")
        assert refused.status_code == 404, refused.text
        assert refused.json()["detail"] == "There is no photo with this id."
    assert (await anon.post(f"/api/photos/{first}/share-links")).status_code == 401
    assert (await ann.post("/api/photos/zero/share-links")).status_code == 400
    assert (await ann.delete("/api/share-links/99")).status_code == 404
    assert await share_rows(server.settings) == 0

    # The organiser shares any photo of the event; members too once its gallery is open to all.
    await share(organiser, third)
    event_path = f"/api/events/{scene['event']['id']}"
    assert (await organiser.patch(event_path, json={"gallery": "all"})).status_code == 200
    bo_link = await share(bo, first)
    assert (await anon.get(path_of(bo_link))).status_code == 200
    # Closing the gallery again closes what it had opened, links included.
    assert (await organiser.patch(event_path, json={"gallery": "own"})).status_code == 200
    await assert_gone(anon, bo_link)
    assert (await anon.get(path_of(await share(ann, first)))).status_code == 200


async def test_links_die_with_not_me_the_photo_the_event_and_the_account(
    scene, server, anon
) -> None:
    ann, bo, organiser = scene["ann"], scene["bo"], scene["organiser"]
    first, second, third = scene["photos"]
    event_path = f"/api/events/{scene['event']['id']}"
    # Open to all, so that after "not me" Ann still sees the photo: her link goes all the same.
    assert (await organiser.patch(event_path, json={"gallery": "all"})).status_code == 200
    not_me = await share(ann, first)
    kept = await share(ann, second)
    assert (await ann.post(f"/api/photo/{first}/not-me")).status_code == 204
    await assert_gone(anon, not_me)
    assert [item["id"] for item in (await ann.get("/api/share-links")).json()["items"]] == [
        kept["id"]
    ]

    deleted_photo = await share(bo, third)
    assert (await organiser.delete(f"/api/photo/{third}")).status_code == 204
    await assert_gone(anon, deleted_photo)

    erased = await share(bo, second)
    assert (await bo.delete("/api/me")).status_code == 204
    await assert_gone(anon, erased)
    assert (await anon.get(path_of(kept))).status_code == 200

    assert (await organiser.delete(event_path)).status_code == 204
    await assert_gone(anon, kept)
    assert await share_rows(server.settings) == 0


# Each is one path segment after /s/, so it reaches the share page's route.
HOSTILE_TOKENS = [
    "x" * 129,  # longer than any token
    "A" * 4000,
    "%C3%A9t%C3%A9-%E2%9C%93-aaaaaaaaaaaaaaaaaaaa",  # non-ASCII
    "%ED%A0%80" * 8,  # a lone surrogate, UTF-8 encoded
    "%00" * 20,
    "%2e%2e",
    "..%5C..%5Capi%5Cme",
    "%25252e%25252e",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",  # the right shape, no such link
    "'%20OR%201=1--aaaaaaaaaaaaaaaaaa",
]


@pytest.mark.parametrize("token", HOSTILE_TOKENS)
async def test_hostile_tokens_answer_404_with_a_sentence(anon, token) -> None:
    for path in (f"/s/{token}", f"/s/{token}/image"):
        page = await anon.get(path, headers=HTML)
        assert page.status_code == 404, (path, page.text)
        assert GONE in page.text, path
    assert (await anon.get(f"/s/{token}", headers={"accept": "*/*"})).status_code == 404


@pytest.mark.parametrize("path", ["/s/..%2F..%2Fapi%2Fme", "/s/a/b/c", "/s/", "/s/a%2Fimage"])
async def test_paths_beside_a_link_answer_404_with_a_sentence(anon, path) -> None:
    page = await anon.get(path, headers=HTML)
    assert page.status_code == 404, page.text
    assert "There is nothing at this address." in page.text or GONE in page.text


async def test_making_links_is_rate_limited_per_account(settings) -> None:
    limited = with_settings(settings, rate_share_links="2/hour")
    async with serve(limited) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        body = {"email": "sam@example.com", "password": PASSWORD, "name": "Sam"}
        assert (await client.post("/api/auth/register", json=body)).status_code == 201
        signed_in = await client.post("/api/auth/login", json=body)
        client.headers["x-csrf-token"] = signed_in.json()["csrf_token"]
        # Counted whether or not the photo may be shared: trying ids costs the allowance too.
        for _ in range(2):
            assert (await client.post("/api/photos/1/share-links")).status_code == 404
        refused = await client.post("/api/photos/1/share-links")
        assert refused.status_code == 429
        assert refused.json()["detail"].startswith("Too many share links made from your account.")
        assert int(refused.headers["retry-after"]) > 0
