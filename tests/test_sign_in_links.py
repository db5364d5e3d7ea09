"""Sign-in by an emailed one-time link, where the event's organiser allows it, through a real
SMTP server: the answer never says whether the email has an account, the email does."""

from __future__ import annotations

import datetime as dt

import httpx
from sqlalchemy import update

from findme.db import Database, SignInLink, utcnow
from tests import test_passwords
from tests.conftest import Server
from tests.test_join_newcomer import join_new
from tests.test_passwords import link_in
from tests.test_signup import count, text_of

# The local mail server, and the settings that send to it, of the password-reset tests.
inbox = test_passwords.inbox
settings = test_passwords.settings

ASK = "/api/auth/sign-in-link"
CONFIRM = "/api/auth/sign-in-link/confirm"


async def allow(organiser: httpx.AsyncClient, event_id: int, allowed: bool = True) -> None:
    answer = await organiser.patch(f"/api/events/{event_id}", json={"email_sign_in": allowed})
    assert answer.status_code == 200, answer.text
    assert answer.json()["email_sign_in"] is allowed


async def test_a_guest_signs_in_by_the_link_once(server, anon, make_user, make_event, inbox):
    mails, _ = inbox
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    # Off by default: the request is refused with a sentence, no mail goes out.
    refused = await anon.post(ASK, json={"email": "x@example.com", "code": event["code"]})
    assert refused.status_code == 403 and refused.json()["error"] == "email_sign_in_off"
    await allow(organiser, event["id"])
    page = await anon.get(f"/join/{event['code']}", headers={"accept": "text/html"})
    assert 'id="link-form"' in page.text

    # A newcomer who chose no password (email is configured) comes back by a link.
    guest = server.client()
    try:
        joined = await join_new(guest, event["code"], email="guest@example.com", password=None)
        assert joined.status_code == 201, joined.text
    finally:
        await guest.aclose()
    asked = await anon.post(ASK, json={"email": "Guest@Example.com", "code": event["code"]})
    assert asked.status_code == 202
    [mail] = await mails.wait_for(1)
    assert mail["To"] == "guest@example.com" and "Summer gala" in mail["Subject"]
    link, token = link_in(mail)
    assert link.startswith(f"{server.url}/sign-in/")

    # Opening the link (a mail scanner does) spends nothing; the page's button does.
    for _ in range(2):
        opened = await anon.get(f"/sign-in/{token}", headers={"accept": "text/html"})
        assert opened.status_code == 200 and "link-sign-in-form" in opened.text
    signed_in = await anon.post(CONFIRM, json={"token": token})
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["user"]["email"] == "guest@example.com"
    assert signed_in.json()["next"] == f"/my-photos?event_id={event['id']}"
    anon.headers["x-csrf-token"] = signed_in.json()["csrf_token"]
    assert (await anon.get("/api/me")).json()["user"]["email"] == "guest@example.com"
    async with server.client() as other_browser:
        again = await other_browser.post(CONFIRM, json={"token": token})
    assert again.status_code == 400 and again.json()["error"] == "sign_in_link_invalid"


async def test_the_answer_is_the_same_whoever_asks(server, anon, make_user, make_event, inbox):
    mails, _ = inbox
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    await allow(organiser, event["id"])
    attendee = await make_user()
    answers = []
    for email in (attendee.user["email"], "nobody@example.com", organiser.user["email"]):
        answer = await anon.post(ASK, json={"email": email, "code": event["code"]})
        assert answer.status_code == 202
        answers.append(answer.json()["detail"].replace(email, "EMAIL"))
    assert len(set(answers)) == 1
    # The attendee gets a link; the unknown email the join link; the photographer nothing
    # (staff accounts sign in with their password, whatever an event allows).
    received = await mails.wait_for(2)
    by_address = {message["To"]: text_of(message) for message in received}
    assert set(by_address) == {attendee.user["email"], "nobody@example.com"}
    assert "/sign-in/" in by_address[attendee.user["email"]]
    assert f"{server.url}/join/{event['code']}" in by_address["nobody@example.com"]
    assert "/sign-in/" not in by_address["nobody@example.com"]
    assert await count(server, SignInLink) == 1


async def test_a_link_stops_working_when_it_expires_or_the_organiser_turns_it_off(
    server, anon, make_user, make_event, inbox
):
    mails, _ = inbox
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    await allow(organiser, event["id"])
    attendee = await make_user()
    email = attendee.user["email"]
    for _ in range(2):
        asked = await anon.post(ASK, json={"email": email, "code": event["code"]})
        assert asked.status_code == 202
    first, second = [link_in(message)[1] for message in await mails.wait_for(2)]

    await _expire_links(server)
    expired = await anon.post(CONFIRM, json={"token": first})
    assert expired.status_code == 400 and expired.json()["error"] == "sign_in_link_expired"

    asked = await anon.post(ASK, json={"email": email, "code": event["code"]})
    assert asked.status_code == 202
    third = link_in((await mails.wait_for(3))[2])[1]
    await allow(organiser, event["id"], allowed=False)
    off = await anon.post(CONFIRM, json={"token": third})
    assert off.status_code == 403 and off.json()["error"] == "email_sign_in_off"
    for garbage in ("", "x" * 500, second[:-2]):
        answer = await anon.post(CONFIRM, json={"token": garbage})
        assert answer.status_code == 400 and answer.json()["detail"]
    assert "x-csrf-token" not in anon.headers and (await anon.get("/api/me")).status_code == 401


async def test_only_the_organiser_turns_it_on_and_only_with_email(
    server: Server, make_user, make_event
) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    member = await make_user()
    answer = await member.patch(f"/api/events/{event['id']}", json={"email_sign_in": True})
    assert answer.status_code in {403, 404}
    answer = await organiser.patch(f"/api/events/{event['id']}", json={"email_sign_in": "yes"})
    assert answer.status_code == 400 and "true" in answer.json()["detail"]
    detail = (await organiser.get(f"/api/events/{event['id']}")).json()
    assert detail["email_sign_in"] is False


async def _expire_links(server: Server) -> None:
    db = Database(server.settings)
    try:
        async with db.transaction() as session:
            past = utcnow() - dt.timedelta(seconds=1)
            await session.execute(update(SignInLink).values(expires_at=past))
    finally:
        await db.aclose()
