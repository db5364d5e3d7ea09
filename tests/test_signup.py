"""Sign-up by emailed link, through a real SMTP server: the answer never tells which emails
have an account; without email, the old immediate sign-up stands (and the doctor says so)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from email.message import Message

import httpx
from sqlalchemy import func, select, update

from findme.db import Database, Signup, User, utcnow
from findme.doctor import diagnose
from findme.settings import Settings
from tests import test_passwords
from tests.conftest import PASSWORD, Server, free_port, serve
from tests.test_passwords import link_in

# The local mail server, and the settings that send to it, of the password-reset tests.
inbox = test_passwords.inbox
settings = test_passwords.settings


def text_of(message: Message) -> str:
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    return body.decode()


async def sign_up(
    client: httpx.AsyncClient, email: str, *, name: str = "Newcomer", **extra: str
) -> httpx.Response:
    body = {"email": email, "password": PASSWORD, "name": name, **extra}
    return await client.post("/api/auth/register", json=body)


async def count(server: Server, model: type, **where: str) -> int:
    db = Database(server.settings)
    try:
        async with db.sessions() as session:
            query = select(func.count()).select_from(model)
            for column, value in where.items():
                query = query.where(getattr(model, column) == value)
            return int(await session.scalar(query) or 0)
    finally:
        await db.aclose()


async def test_a_new_email_gets_a_link_that_creates_the_account_once(server, anon, inbox) -> None:
    mails, _ = inbox
    asked = await sign_up(anon, "new@example.com", next="/join/ABCD2345")
    assert asked.status_code == 202, asked.text
    assert "new@example.com" in asked.json()["detail"]
    assert "24 hours" in asked.json()["detail"]
    assert "set-cookie" not in asked.headers
    # Nothing exists yet but the pending sign-up: no session, no account to sign in to.
    assert (await anon.get("/api/me")).status_code == 401
    signed_in = await anon.post(
        "/api/auth/login", json={"email": "new@example.com", "password": PASSWORD}
    )
    assert signed_in.status_code == 401
    assert await count(server, User, email="new@example.com") == 0

    (message,) = await mails.wait_for(1)
    assert message["To"] == "new@example.com"
    assert message["Subject"] == "Confirm your email to finish creating your FindMe account"
    assert "Newcomer" not in text_of(message)  # nothing the requester typed but the address
    link, token = link_in(message)
    assert link == f"{server.url}/signup/{token}"

    # Opening the link (as a mail scanner does) spends nothing.
    for _ in range(2):
        page = await anon.get(link)
        assert page.status_code == 200
        assert "Finish creating your account" in page.text
        assert f'data-token="{token}"' in page.text
    assert await count(server, User, email="new@example.com") == 0

    async with server.client() as browser:
        confirmed = await browser.post("/api/auth/register/confirm", json={"token": token})
        assert confirmed.status_code == 201, confirmed.text
        assert confirmed.json()["user"]["email"] == "new@example.com"
        assert confirmed.json()["user"]["name"] == "Newcomer"
        assert confirmed.json()["user"]["role"] == "attendee"
        assert confirmed.json()["next"] == "/join/ABCD2345"
        me = await browser.get("/api/me")
        assert me.status_code == 200
        assert me.json()["user"]["email"] == "new@example.com"
    # The password chosen at sign-up is the account's.
    signed_in = await anon.post(
        "/api/auth/login", json={"email": "new@example.com", "password": PASSWORD}
    )
    assert signed_in.status_code == 200

    again = await anon.post("/api/auth/register/confirm", json={"token": token})
    assert again.status_code == 400
    assert again.json()["error"] == "signup_link_invalid"
    assert "already used" in again.json()["detail"]
    assert await count(server, Signup) == 0


async def test_asking_twice_gives_two_links_and_the_first_used_spends_both(
    server, anon, inbox
) -> None:
    mails, _ = inbox
    assert (await sign_up(anon, "twice@example.com")).status_code == 202
    assert (await sign_up(anon, "twice@example.com")).status_code == 202
    first, second = (link_in(message)[1] for message in await mails.wait_for(2))
    assert first != second
    assert await count(server, Signup, email="twice@example.com") == 2
    used = await anon.post("/api/auth/register/confirm", json={"token": second})
    assert used.status_code == 201, used.text
    spent = await anon.post("/api/auth/register/confirm", json={"token": first})
    assert spent.status_code == 400
    assert spent.json()["error"] == "signup_link_invalid"
    assert await count(server, Signup) == 0
    assert await count(server, User, email="twice@example.com") == 1


async def test_a_known_email_gets_the_same_answer_a_reminder_and_nothing_stored(
    server, anon, make_user, inbox
) -> None:
    mails, _ = inbox
    free = await sign_up(anon, "pat@example.com", next="/join/ABCD2345")
    _, token = link_in((await mails.wait_for(1))[0])
    assert (await anon.post("/api/auth/register/confirm", json={"token": token})).status_code == 201

    # The same request once the account exists, from a signed-in attendee this time: every
    # caller but an admin is answered alike.
    attendee = await make_user()
    known = await sign_up(attendee, "pat@example.com", name="Someone else", next="/join/ABCD2345")
    assert known.status_code == free.status_code == 202
    assert known.content == free.content
    assert known.headers["content-type"] == free.headers["content-type"]
    assert await count(server, Signup) == 0

    reminder = (await mails.wait_for(2))[1]
    assert reminder["To"] == "pat@example.com"
    assert reminder["Subject"] == "You already have a FindMe account"
    text = text_of(reminder)
    assert f"{server.url}/login?next=/join/ABCD2345" in text
    assert f"{server.url}/forgot-password" in text
    assert "/signup/" not in text
    assert "Hello Newcomer," in text  # the account's own name, not the one typed
    assert "Someone else" not in text


async def test_the_email_case_does_not_hide_an_account(server, anon, make_user, inbox) -> None:
    mails, _ = inbox
    user = await make_user()
    email = user.user["email"]
    asked = await sign_up(anon, email.capitalize().replace("@example", "@Example"))
    assert asked.status_code == 202
    assert email in asked.json()["detail"]
    (message,) = await mails.wait_for(1)
    assert message["To"] == email
    assert message["Subject"] == "You already have a FindMe account"
    assert await count(server, Signup) == 0


async def test_an_expired_link_is_refused_with_a_sentence(server, anon, inbox) -> None:
    mails, _ = inbox
    await sign_up(anon, "late@example.com")
    _, token = link_in((await mails.wait_for(1))[0])
    db = Database(server.settings)
    try:
        async with db.transaction() as session:
            await session.execute(
                update(Signup).values(expires_at=utcnow() - dt.timedelta(seconds=1))
            )
    finally:
        await db.aclose()
    expired = await anon.post("/api/auth/register/confirm", json={"token": token})
    assert expired.status_code == 400
    assert expired.json()["error"] == "signup_link_expired"
    assert "expired" in expired.json()["detail"] and "Sign up again" in expired.json()["detail"]
    assert "set-cookie" not in expired.headers
    assert await count(server, User, email="late@example.com") == 0


async def test_hostile_input_is_refused_with_a_sentence_and_nothing_stored(
    server, anon, inbox
) -> None:
    mails, _ = inbox
    users_before = await count(server, User)
    confirmations = [
        ({"token": "not-a-real-token"}, 400),
        ({"token": "x" * 201}, 400),
        ({"token": 12345}, 400),
        ({"token": ""}, 400),
        ({}, 400),
    ]
    for body, status in confirmations:
        response = await anon.post("/api/auth/register/confirm", json=body)
        assert response.status_code == status, body
        assert response.json()["detail"].endswith("."), response.text
    not_json = await anon.post(
        "/api/auth/register/confirm", content=b"token=abc", headers={"content-type": "text/plain"}
    )
    assert not_json.status_code == 415
    assert "JSON" in not_json.json()["detail"]

    sign_ups = [
        {"email": "a@" + "b" * 260 + ".com", "password": PASSWORD, "name": "A"},
        {"email": "not-an-email", "password": PASSWORD, "name": "A"},
        {"email": "a@example.com", "password": PASSWORD, "name": "x" * 121},
        {"email": "a@example.com", "password": "short", "name": "A"},
        {"email": "a@example.com", "password": "p" * 1025, "name": "A"},
        {"email": "a@example.com", "password": PASSWORD, "name": "A", "role": "admin"},
        {"email": "a@example.com", "password": PASSWORD, "name": "A\x00B"},
    ]
    for body in sign_ups:
        response = await anon.post("/api/auth/register", json=body)
        assert response.status_code == 400, body
        assert response.json()["detail"].endswith("."), response.text
    not_json = await anon.post(
        "/api/auth/register", content=b"email=a@example.com", headers={"content-type": "text/plain"}
    )
    assert not_json.status_code == 415
    assert await count(server, Signup) == 0
    assert await count(server, User) == users_before

    # A path elsewhere to go to afterwards is refused quietly, as the pages refuse it; the one
    # mail that arrives is this sign-up's, so none of the refused ones sent any.
    asked = await sign_up(anon, "careful@example.com", next="//evil.example/phish")
    assert asked.status_code == 202
    (message,) = await mails.wait_for(1)
    assert message["To"] == "careful@example.com"
    confirmed = await anon.post("/api/auth/register/confirm", json={"token": link_in(message)[1]})
    assert confirmed.json()["next"] == "/"


async def test_an_admin_still_creates_accounts_at_once(server, anon, make_user, inbox) -> None:
    mails, _ = inbox
    admin = await make_user("admin")
    staff = {"email": "lens@example.com", "password": PASSWORD, "name": "Lens"}
    created = await admin.post("/api/auth/register", json=staff | {"role": "photographer"})
    assert created.status_code == 201, created.text
    assert created.json()["user"]["role"] == "photographer"
    assert "set-cookie" not in created.headers
    again = await admin.post("/api/auth/register", json=staff)
    assert again.status_code == 409
    assert "already exists" in again.json()["detail"]
    async with server.client() as photographer:
        signed_in = await photographer.post("/api/auth/login", json=staff)
        assert signed_in.status_code == 200
    # No email went out for either: the only one is this later sign-up's.
    assert (await sign_up(anon, "after@example.com")).status_code == 202
    (message,) = await mails.wait_for(1)
    assert message["To"] == "after@example.com"


async def test_without_email_sign_up_is_immediate_and_the_doctor_says_what_it_reveals(
    settings: Settings,
) -> None:
    without_email = dataclasses.replace(settings, smtp_host="")
    async with serve(without_email) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            created = await sign_up(client, "plain@example.com")
            assert created.status_code == 201, created.text
            assert (await client.get("/api/me")).status_code == 200
        async with httpx.AsyncClient(base_url=url) as client:
            known = await sign_up(client, "plain@example.com")
            assert known.status_code == 409
            assert "already exists" in known.json()["detail"]
    (email,) = [check for check in await diagnose(without_email) if check.part == "email"]
    assert email.ok
    assert "not configured" in email.sentence
    assert "which emails have an account" in email.sentence


async def test_the_doctor_checks_the_mail_server(settings: Settings) -> None:
    (email,) = [check for check in await diagnose(settings) if check.part == "email"]
    assert email.ok, email.sentence
    assert f"{settings.smtp_host}:{settings.smtp_port} answers" in email.sentence
    closed = dataclasses.replace(settings, smtp_port=free_port())
    (email,) = [check for check in await diagnose(closed) if check.part == "email"]
    assert not email.ok
    assert "FINDME_SMTP_HOST" in email.sentence
