"""Password reset by a one-time emailed link, through a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import update

from findme.db import Database, PasswordReset, utcnow
from findme.mail import Mail, Mailer
from findme.settings import Settings
from tests.conftest import PASSWORD, free_port, serve

NEW_PASSWORD = "a brand new passphrase"
LINK = re.compile(r"(https?://\S+/(?:reset|signup|sign-in)/(\S+))")


class Inbox:
    """What the local SMTP server received (handler of aiosmtpd, in its own thread)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted"

    async def wait_for(self, count: int) -> list[Message]:
        # Sent after the answer: poll (bounded) until it has arrived.
        for _ in range(1500):
            if len(self.messages) >= count:
                return self.messages
            await asyncio.sleep(0.02)
        pytest.fail(f"{count} email(s) expected, {len(self.messages)} arrived.")


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def settings(settings: Settings, inbox: tuple[Inbox, int]) -> Settings:
    """Every server of this module sends its email to the local SMTP server."""
    return dataclasses.replace(
        settings,
        smtp_host="127.0.0.1",
        smtp_port=inbox[1],
        smtp_starttls=False,
        mail_from="FindMe <noreply@example.org>",
    )


def link_in(message: Message) -> tuple[str, str]:
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    found = LINK.search(body.decode())
    assert found, body
    return found.group(1), found.group(2)


async def test_the_emailed_link_works_once_and_ends_every_session(
    make_user, server, anon, inbox
) -> None:
    mails, _ = inbox
    user = await make_user()
    email = user.user["email"]
    other_browser = server.client()
    signed_in = await other_browser.post(
        "/api/auth/login", json={"email": email, "password": PASSWORD}
    )
    assert signed_in.status_code == 200

    asked = await anon.post("/api/auth/password-reset", json={"email": email.upper()})
    assert asked.status_code == 202
    assert asked.json()["detail"].startswith("If an account exists")
    (message,) = await mails.wait_for(1)
    assert message["To"] == email
    assert message["From"] == "FindMe <noreply@example.org>"
    assert "password" in message["Subject"].lower()
    link, token = link_in(message)
    assert link.startswith(f"{server.url}/reset/")

    page = await anon.get(link)
    assert page.status_code == 200
    assert f'data-token="{token}"' in page.text

    changed = await anon.post(
        "/api/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD}
    )
    assert changed.status_code == 200, changed.text
    # Every browser of the account is signed out.
    assert (await user.get("/api/me")).status_code == 401
    assert (await other_browser.get("/api/me")).status_code == 401
    await other_browser.aclose()
    old = await anon.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401
    new = await anon.post("/api/auth/login", json={"email": email, "password": NEW_PASSWORD})
    assert new.status_code == 200

    again = await anon.post(
        "/api/auth/password-reset/confirm", json={"token": token, "password": "yet another one"}
    )
    assert again.status_code == 400
    assert again.json()["error"] == "reset_link_invalid"
    assert "already used" in again.json()["detail"]


async def test_an_unknown_email_gets_the_same_answer_and_no_mail(make_user, anon, inbox) -> None:
    mails, _ = inbox
    user = await make_user()
    unknown = await anon.post("/api/auth/password-reset", json={"email": "nobody@example.com"})
    known = await anon.post("/api/auth/password-reset", json={"email": user.user["email"]})
    assert unknown.status_code == known.status_code == 202
    assert unknown.json() == known.json()
    await mails.wait_for(1)
    await asyncio.sleep(0.2)  # room for a wrong second email to arrive
    assert [message["To"] for message in mails.messages] == [user.user["email"]]


async def test_an_expired_link_is_refused_with_a_sentence(make_user, server, anon, inbox) -> None:
    mails, _ = inbox
    user = await make_user()
    await anon.post("/api/auth/password-reset", json={"email": user.user["email"]})
    _, token = link_in((await mails.wait_for(1))[0])
    db = Database(server.settings)
    try:
        async with db.transaction() as session:
            await session.execute(
                update(PasswordReset).values(expires_at=utcnow() - dt.timedelta(seconds=1))
            )
    finally:
        await db.aclose()
    expired = await anon.post(
        "/api/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD}
    )
    assert expired.status_code == 400
    assert expired.json()["error"] == "reset_link_expired"
    assert "expired" in expired.json()["detail"]
    # The account is untouched: its password and sessions stand.
    assert (await user.get("/api/me")).status_code == 200


async def test_a_made_up_token_is_refused(anon) -> None:
    response = await anon.post(
        "/api/auth/password-reset/confirm",
        json={"token": "not-a-real-token", "password": NEW_PASSWORD},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "reset_link_invalid"


async def test_requests_are_limited_per_email(settings, inbox) -> None:
    limited = dataclasses.replace(settings, rate_reset_email="2/hour")
    async with serve(limited) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            answers = [
                (
                    await client.post("/api/auth/password-reset", json={"email": "x@example.com"})
                ).status_code
                for _ in range(3)
            ]
    assert answers == [202, 202, 429]


async def test_without_a_mail_server_production_says_so(settings) -> None:
    production = dataclasses.replace(settings, smtp_host="", development=False)
    async with serve(production) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post(
                "/api/auth/password-reset", json={"email": "x@example.com"}
            )
    assert response.status_code == 503
    assert response.json()["error"] == "email_not_configured"
    assert "not configured" in response.json()["detail"]


async def test_without_a_mail_server_the_log_never_holds_the_link_in_production(
    settings, caplog
) -> None:
    link = "https://photos.example.org/reset/s3cr3t-token"
    mail = Mail(to="a@example.com", subject="Reset", text=f"Go to {link} now.", secret=link)
    caplog.set_level(logging.INFO, logger="findme.mail")
    await Mailer(dataclasses.replace(settings, smtp_host="", development=False)).send(mail)
    assert "email is not configured" in caplog.text
    assert "s3cr3t-token" not in caplog.text
    caplog.clear()
    # In development it stays, so a reset can be tried without a mail server.
    await Mailer(dataclasses.replace(settings, smtp_host="", development=True)).send(mail)
    assert "s3cr3t-token" in caplog.text


async def test_without_a_mail_server_development_says_the_link_is_in_the_log(
    settings, caplog
) -> None:
    development = dataclasses.replace(settings, smtp_host="", development=True)
    caplog.set_level(logging.INFO, logger="findme.mail")
    async with serve(development) as url, httpx.AsyncClient(base_url=url) as client:
        email = f"dev-{url.rsplit(':', 1)[1]}@example.com"
        signed_up = await client.post(
            "/api/auth/register", json={"email": email, "password": PASSWORD, "name": "Dev"}
        )
        assert signed_up.status_code == 201
        response = await client.post("/api/auth/password-reset", json={"email": email})
    assert response.status_code == 202
    assert "Email is not configured" in response.json()["detail"]
    assert f"{url}/reset/" in caplog.text
