"""The event's link for a newcomer: name, email, consent and selfie in one request make the
account, its selfie and its membership together, or nothing at all."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from findme.db import Database, EventMember, Selfie, User
from tests.conftest import PASSWORD, Server
from tests.scenes import drain, expected, jpeg, my_filenames, upload_event_photos
from tests.shared_faces import faces_dir, manifest

NEW_GUEST = "/api/events/join/new-guest"
HTML = {"accept": "text/html"}


def selfie_of(person: str) -> bytes:
    return (faces_dir() / manifest()["selfies"][person]).read_bytes()


async def join_new(
    client: httpx.AsyncClient,
    code: str,
    *,
    email: str = "newcomer@example.com",
    name: str = "Newcomer",
    password: str | None = PASSWORD,
    selfie: bytes | None = None,
    consent: str = "true",
    **headers: str,
) -> httpx.Response:
    fields = {"code": code, "name": name, "email": email, "consent": consent}
    if password is not None:
        fields["password"] = password
    files = {"file": ("me.jpg", selfie if selfie is not None else selfie_of("obama"))}
    return await client.post(NEW_GUEST, data=fields, files=files, headers=headers)


async def stored(server: Server, email: str) -> dict[str, int]:
    """What the database holds for this email: accounts, their selfies, their memberships."""
    db = Database(server.settings)
    try:
        async with db.sessions() as session:
            users = select(User.id).where(User.email == email).scalar_subquery()
            return {
                "users": int(await session.scalar(select(func.count()).where(User.email == email))),
                "selfies": int(
                    await session.scalar(select(func.count()).where(Selfie.user_id == users))
                ),
                "memberships": int(
                    await session.scalar(select(func.count()).where(EventMember.user_id == users))
                ),
            }
    finally:
        await db.aclose()


NOTHING = {"users": 0, "selfies": 0, "memberships": 0}


async def test_a_newcomer_joins_in_one_request_and_sees_their_photos(
    server, anon, make_user, make_event
) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    await upload_event_photos(organiser, event["id"])
    assert (await drain(server.settings))["failed"] == 0

    # The link itself opens the form for a signed-out guest, not the sign-in page.
    page = await anon.get(f"/join/{event['code']}", headers=HTML)
    assert page.status_code == 200
    assert 'id="newcomer-form"' in page.text and "Join and find my photos" in page.text

    joined = await join_new(anon, event["code"], email="Obama@Example.com", name="Barack")
    assert joined.status_code == 201, joined.text
    body = joined.json()
    assert body["user"]["email"] == "obama@example.com"
    assert body["event"]["id"] == event["id"] and body["event"]["my_role"] == "member"
    assert body["job"] is not None  # matching with the photos already there has started
    assert await stored(server, "obama@example.com") == {
        "users": 1,
        "selfies": 1,
        "memberships": 1,
    }
    # Signed in by the answer's cookie: consent recorded, photos found once matched.
    anon.headers["x-csrf-token"] = body["csrf_token"]
    me = (await anon.get("/api/me")).json()
    assert me["has_selfie"] is True and me["consent_at"] is not None
    assert (await drain(server.settings))["failed"] == 0
    assert await my_filenames(anon, event["id"]) == expected("obama")
    # The same password signs in on another device.
    other = server.client()
    try:
        signed_in = await other.post(
            "/api/auth/login", json={"email": "obama@example.com", "password": PASSWORD}
        )
        assert signed_in.status_code == 200
    finally:
        await other.aclose()


async def test_a_newcomer_refused_leaves_nothing_behind(
    server, anon, make_user, make_event
) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    existing = await make_user(name="Taken")
    taken = existing.user["email"]
    no_face = jpeg(1, (640, 480))  # a picture without a face
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"selfie": no_face}, 422, "no_face"),
        ({"selfie": b"not an image at all"}, 415, ""),
        ({"consent": "no"}, 400, "consent_required"),
        ({"password": None}, 400, "password"),
        ({"password": "short"}, 400, "8 characters"),
        ({"email": "not-an-email"}, 400, "valid email"),
        ({"name": "   "}, 400, "'name'"),
        ({"code": "NOSUCHCODE"}, 404, "No event has this code"),
    ]
    for changes, status, said in cases:
        email = changes.pop("email", "fresh@example.com")
        code = changes.pop("code", event["code"])
        answer = await join_new(anon, code, email=email, **changes)
        assert answer.status_code == status, (changes, answer.text)
        assert answer.json()["detail"], answer.text
        assert said in answer.json()["error"] + answer.json()["detail"], answer.text
        assert await stored(server, email) == NOTHING, changes
        assert "findme_session" not in answer.cookies

    # A known email: the account is not touched and nothing new is made.
    answer = await join_new(anon, event["code"], email=taken)
    assert answer.status_code == 409 and "Sign in" in answer.json()["detail"]
    assert await stored(server, taken) == {"users": 1, "selfies": 0, "memberships": 0}

    # Closed to newcomers: the sentence says so, nothing is stored.
    closed = await organiser.patch(f"/api/events/{event['id']}", json={"joining": "closed"})
    assert closed.status_code == 200
    answer = await join_new(anon, event["code"])
    assert answer.status_code == 403 and answer.json()["error"] == "joining_closed"
    assert await stored(server, "newcomer@example.com") == NOTHING

    # Another site's page cannot make accounts in a visitor's browser.
    reopened = await organiser.patch(f"/api/events/{event['id']}", json={"joining": "open"})
    assert reopened.status_code == 200
    answer = await join_new(anon, event["code"], origin="https://evil.example")
    assert answer.status_code == 403
    assert await stored(server, "newcomer@example.com") == NOTHING

    # Not multipart at all.
    answer = await anon.post(NEW_GUEST, json={"code": event["code"]})
    assert answer.status_code == 415 and answer.json()["detail"]

    # The server still serves: the same newcomer, with good input, gets in.
    assert (await join_new(anon, event["code"])).status_code == 201


async def test_a_signed_in_guest_joins_with_their_account_instead(make_user, make_event) -> None:
    event = await make_event(await make_user("photographer"))
    attendee = await make_user()
    answer = await join_new(attendee, event["code"], email="second@example.com")
    assert answer.status_code == 400
    assert "signed in already" in answer.json()["detail"]


@pytest.mark.parametrize("field", ["name", "email", "code"])
async def test_hostile_fields_are_refused_with_a_sentence(
    server, anon, make_user, make_event, field
) -> None:
    event = await make_event(await make_user("photographer"))
    values = {"name": "Guest", "email": "guest@example.com", "code": event["code"]}
    values[field] = "x\x00y" if field != "email" else "a" * 300 + "@example.com"
    answer = await join_new(anon, values["code"], email=values["email"], name=values["name"])
    assert answer.status_code in {400, 404}, answer.text
    assert answer.json()["detail"]
    assert await stored(server, values["email"]) == NOTHING


async def test_without_email_no_event_offers_sign_in_links(make_user, make_event) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    answer = await organiser.patch(f"/api/events/{event['id']}", json={"email_sign_in": True})
    assert answer.status_code == 409 and "FINDME_SMTP_HOST" in answer.json()["detail"]
    assert (await organiser.get(f"/api/events/{event['id']}")).json()["email_sign_in"] is False
