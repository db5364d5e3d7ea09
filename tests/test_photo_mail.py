"""New-photo emails through a real SMTP server (aiosmtpd), with real photos matched by the real
pipeline: one email per batch and hour, counted right, with links that work, and that stop."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re

import pytest
from itsdangerous import URLSafeSerializer
from playwright.async_api import expect

from findme.db import Database, utcnow
from findme.domain.notifications import send_new_photo_mails
from findme.mail import Mailer
from findme.notifier import Notifier
from tests import test_passwords
from tests.browser import shot, sign_in
from tests.conftest import Server, free_port, serve
from tests.scenes import drain, join, put_selfie, upload
from tests.shared_faces import faces_dir
from tests.test_signup import text_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# The local mail server of the password-reset tests.
inbox = test_passwords.inbox
UNSUBSCRIBE = re.compile(r"(https?://\S+)/unsubscribe/(\S+)")
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(settings, inbox, port):
    """Mail to the local server; links to this test's server; no wait for a batch to settle."""
    return dataclasses.replace(
        settings,
        smtp_host="127.0.0.1",
        smtp_port=inbox[1],
        smtp_starttls=False,
        mail_from="FindMe <noreply@example.org>",
        public_url=f"http://127.0.0.1:{port}",
        notify_quiet_s=0,
    )


@pytest.fixture
async def server(settings, port):
    async with serve(settings, port=port) as url:
        yield Server(url=url, settings=settings)


async def mail_round(settings, *, now: dt.datetime | None = None) -> int:
    """One round of the notifier, as its loop runs it."""
    db = Database(settings)
    try:
        return await send_new_photo_mails(
            db=db, mailer=Mailer(settings), settings=settings, now=now
        )
    finally:
        await db.aclose()


def header(mail, name: str) -> str:
    """A header's value unfolded (RFC 5322: long ones are written over several lines)."""
    return re.sub(r"\r?\n[ \t]+", " ", mail[name]).strip()


def event_photos(*names: str) -> list[tuple[str, bytes]]:
    return [(name, (faces_dir() / "event" / name).read_bytes()) for name in names]


async def add_photos(server: Server, organiser, event, *names: str) -> None:
    await upload(organiser, event["id"], *event_photos(*names))
    assert (await drain(server.settings))["failed"] == 0


@pytest.fixture
async def gala(make_user, make_event):
    """An event, and Obama, a member with his selfie, who asked for new-photo emails."""
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    obama = await make_user(name="Barack")
    selfie = (faces_dir() / "selfies" / "obama.jpg").read_bytes()
    assert (await put_selfie(obama, selfie)).status_code == 200
    await join(obama, event)
    return {"organiser": organiser, "event": event, "obama": obama}


def setting_path(event) -> str:
    return f"/api/events/{event['id']}/notifications"


async def opt_in(client, event) -> None:
    response = await client.put(setting_path(event), json={"new_photos": True})
    assert response.status_code == 200, response.text
    assert response.json() == {"new_photos": True, "available": True}


async def setting(client, event) -> bool:
    response = await client.get(setting_path(event))
    assert response.status_code == 200, response.text
    on: bool = response.json()["new_photos"]
    return on


async def test_one_email_per_settled_batch_and_hour_with_the_right_count_and_links(
    server, gala, inbox, anon
) -> None:
    mails, _ = inbox
    organiser, event, obama = gala["organiser"], gala["event"], gala["obama"]
    # A photo he is in before he asks: he has seen it, so it is never mailed.
    await add_photos(server, organiser, event, "e01.jpg")
    assert await setting(obama, event) is False
    await opt_in(obama, event)
    assert await mail_round(server.settings) == 0

    # Two photos of him and one of someone else: one email, about his two.
    await add_photos(server, organiser, event, "e02.jpg", "e03.jpg", "e06.jpg")
    # While the batch may still grow (the newest match is younger than the quiet time), wait.
    settling = dataclasses.replace(server.settings, notify_quiet_s=120)
    assert await mail_round(settling) == 0
    settled = utcnow() + dt.timedelta(seconds=121)
    assert await mail_round(settling, now=settled) == 1
    assert len(mails.messages) == 1
    mail = mails.messages[0]
    assert mail["To"] == obama.user["email"]
    assert mail["From"] == "FindMe <noreply@example.org>"
    assert mail["Subject"] == "2 new photos of you at Summer gala"
    assert not mail.is_multipart()  # the text alone: no photo, nothing of faces
    body = text_of(mail)
    assert f"{server.url}/my-photos?event_id={event['id']}" in body
    link = UNSUBSCRIBE.search(body)
    assert link is not None and link.group(1) == server.url
    token = link.group(2)
    assert header(mail, "List-Unsubscribe") == f"<{server.url}/api/unsubscribe/{token}>"
    assert header(mail, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    # The link in the email opens his photos of the event.
    page = await obama.get(f"/my-photos?event_id={event['id']}", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "Email me when new photos of me arrive" in page.text

    # Nothing new: nothing sent.
    assert await mail_round(server.settings, now=settled + 2 * HOUR) == 0

    # More photos within the hour of the email wait for it; then one email covers them all.
    await add_photos(server, organiser, event, "e04.jpg", "e05.jpg", "e12.jpg")
    assert await mail_round(server.settings, now=settled) == 0
    assert await mail_round(server.settings, now=settled + dt.timedelta(minutes=59)) == 0
    assert await mail_round(server.settings, now=settled + HOUR) == 1
    assert [m["Subject"] for m in mails.messages] == [
        "2 new photos of you at Summer gala",
        "3 new photos of you at Summer gala",
    ]
    assert await mail_round(server.settings, now=settled + 3 * HOUR) == 0
    assert len(mails.messages) == 2


async def test_a_failed_send_is_retried_and_two_processes_send_once(server, gala, inbox) -> None:
    mails, _ = inbox
    organiser, event, obama = gala["organiser"], gala["event"], gala["obama"]
    await opt_in(obama, event)
    await add_photos(server, organiser, event, "e01.jpg", "e02.jpg")

    # The mail server is down: nothing is sent, and nothing is marked as sent.
    down = dataclasses.replace(server.settings, smtp_port=free_port())
    assert await mail_round(down) == 0
    assert mails.messages == []

    # Back up, two processes run their round at once: one email, with both photos.
    sent = await asyncio.gather(mail_round(server.settings), mail_round(server.settings))
    assert sorted(sent) == [0, 1]
    assert [m["Subject"] for m in mails.messages] == ["2 new photos of you at Summer gala"]


async def test_the_notifier_sends_each_interval_and_stops_with_its_process(
    server, gala, inbox
) -> None:
    mails, _ = inbox
    organiser, event, obama = gala["organiser"], gala["event"], gala["obama"]
    await opt_in(obama, event)
    await add_photos(server, organiser, event, "e01.jpg")
    settings = dataclasses.replace(server.settings, notify_interval_s=1)
    db = Database(settings)
    try:
        async with Notifier(db=db, mailer=Mailer(settings), settings=settings):
            await mails.wait_for(1)
    finally:
        await db.aclose()
    assert [m["Subject"] for m in mails.messages] == ["1 new photo of you at Summer gala"]


async def test_unsubscribe_by_one_click_stops_the_emails_and_forged_links_are_refused(
    server, gala, inbox, anon
) -> None:
    mails, _ = inbox
    organiser, event, obama = gala["organiser"], gala["event"], gala["obama"]
    await opt_in(obama, event)
    await add_photos(server, organiser, event, "e01.jpg")
    assert await mail_round(server.settings) == 1
    link = UNSUBSCRIBE.search(text_of(mails.messages[0]))
    assert link is not None
    token = link.group(2)

    # Opening the link (as a mail scanner does) changes nothing.
    page = await anon.get(f"/unsubscribe/{token}", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "Summer gala" in page.text
    assert await setting(obama, event) is True

    # Forged, damaged or foreign links: 400 with a sentence, and nothing changes.
    user_id = obama.user["id"]
    foreign = URLSafeSerializer("another server's secret key", salt="findme-unsubscribe")
    payload, _, signature = token.partition(".")
    other_member = URLSafeSerializer("x", salt="findme-unsubscribe").dumps([user_id + 1, 1])
    forged = [
        "forged",
        token[:-2],
        foreign.dumps([user_id, event["id"]]),
        other_member.partition(".")[0] + "." + signature,
        payload + "." + signature[::-1],
        "x" * 5000,
    ]
    for bad in forged:
        response = await anon.post("/api/unsubscribe", json={"token": bad})
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"] in {"unsubscribe_link_invalid", "bad_request"}
        assert response.json()["detail"]
        if len(bad) < 1000:
            response = await anon.post(
                f"/api/unsubscribe/{bad}", data={"List-Unsubscribe": "One-Click"}
            )
            assert response.status_code == 400, (bad, response.text)
            assert "unsubscribe link is not valid" in response.json()["detail"]
            page = await anon.get(f"/unsubscribe/{bad}", headers={"accept": "text/html"})
            assert page.status_code == 400
            assert "unsubscribe link is not valid" in page.text
    for body in ({}, {"token": 42}, {"token": ""}):
        response = await anon.post("/api/unsubscribe", json=body)
        assert response.status_code == 400, response.text
    # A one-click POST without its form body is not one.
    response = await anon.post(f"/api/unsubscribe/{token}", data={"List-Unsubscribe": "No"})
    assert response.status_code == 400
    assert response.json()["detail"] == "Send List-Unsubscribe=One-Click as a form."
    assert await setting(obama, event) is True

    # What a mail program sends (RFC 8058, as multipart/form-data or a urlencoded form): no
    # cookie, no CSRF token, the token is enough.
    boundary = "findme-test-boundary"
    multipart = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    )
    response = await anon.post(
        f"/api/unsubscribe/{token}",
        content=multipart.encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 200, response.text
    response = await anon.post(f"/api/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200, response.text
    assert response.json() == {"detail": "You will get no more emails about Summer gala."}
    assert await setting(obama, event) is False
    await add_photos(server, organiser, event, "e02.jpg")
    assert await mail_round(server.settings, now=utcnow() + 2 * HOUR) == 0
    assert len(mails.messages) == 1


async def test_only_the_member_changes_their_setting(server, gala, make_user) -> None:
    organiser, event, obama = gala["organiser"], gala["event"], gala["obama"]
    stranger = await make_user(name="Joe")
    for method in ("GET", "PUT"):
        response = await stranger.request(
            method, setting_path(event), json={"new_photos": True} if method == "PUT" else None
        )
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == "There is no event with this id."
    # The organiser sees the event but is no member: nothing of theirs to be emailed about.
    response = await organiser.put(setting_path(event), json={"new_photos": True})
    assert response.status_code == 403
    assert "join the event first" in response.json()["detail"]
    for body in ({"new_photos": "yes"}, {"new_photos": None}, {}, {"new_photos": 1}):
        response = await obama.put(setting_path(event), json=body)
        assert response.status_code == 400, response.text
        assert response.json()["detail"] == "'new_photos' must be true or false."
    response = await obama.put(setting_path(event), content=b"new_photos=true")
    assert response.status_code == 415
    response = await obama.put("/api/events/2000000000/notifications", json={"new_photos": True})
    assert response.status_code == 404
    # A write without the session's CSRF token is refused.
    response = await obama.put(
        setting_path(event), json={"new_photos": True}, headers={"x-csrf-token": "wrong"}
    )
    assert response.status_code == 403
    assert await setting(obama, event) is False


async def test_without_email_turning_on_is_refused_and_the_page_says_why(
    server, gala, settings
) -> None:
    obama, event = gala["obama"], gala["event"]
    for missing in ({"smtp_host": ""}, {"public_url": ""}):
        async with serve(dataclasses.replace(settings, **missing)) as url:
            response = await obama.put(f"{url}{setting_path(event)}", json={"new_photos": True})
            assert response.status_code == 409, response.text
            assert response.json()["error"] == "notifications_unavailable"
            assert "cannot send email" in response.json()["detail"]
            response = await obama.put(f"{url}{setting_path(event)}", json={"new_photos": False})
            assert response.json() == {"new_photos": False, "available": False}
            page = await obama.get(
                f"{url}/my-photos?event_id={event['id']}", headers={"accept": "text/html"}
            )
            assert "Emails about new photos are not available" in page.text
            assert 'id="notify-new-photos"' not in page.text


@pytest.mark.browser
async def test_the_switch_on_my_photos_and_the_unsubscribe_button(
    server, gala, inbox, contexts
) -> None:
    mails, _ = inbox
    organiser, event, obama = gala["organiser"], gala["event"], gala["obama"]
    page = await (await contexts(server.url, "phone")).new_page()
    await page.goto(f"/login?next=/my-photos%3Fevent_id%3D{event['id']}")
    await sign_in(page, obama.user["email"])
    switch = page.get_by_label("Email me when new photos of me arrive")
    await expect(switch).not_to_be_checked()
    await expect(page.get_by_test_id("notify-switch")).to_contain_text("At most one email an hour")
    await switch.check()
    await expect(page.locator("#toast")).to_have_text(
        "We will email you when new photos of you arrive."
    )
    assert await setting(obama, event) is True
    await page.reload()
    await expect(switch).to_be_checked()
    await shot(page, "my-photos-notify-switch", "phone")
    desktop = await (await contexts(server.url, "desktop")).new_page()
    await desktop.goto(f"/login?next=/my-photos%3Fevent_id%3D{event['id']}")
    await sign_in(desktop, obama.user["email"])
    await expect(desktop.get_by_label("Email me when new photos of me arrive")).to_be_checked()
    await shot(desktop, "my-photos-notify-switch", "desktop")

    await add_photos(server, organiser, event, "e01.jpg")
    assert await mail_round(server.settings) == 1
    link = UNSUBSCRIBE.search(text_of(mails.messages[0]))
    assert link is not None

    # The emailed link, opened anywhere (signed in or not): one button turns the emails off.
    stranger = await (await contexts(server.url, "desktop")).new_page()
    await stranger.goto(link.group(0))
    await expect(stranger.locator("main")).to_contain_text("Summer gala")
    await shot(stranger, "unsubscribe", "desktop")
    await stranger.get_by_role("button", name="Stop these emails").click()
    await expect(stranger.get_by_test_id("unsubscribed")).to_have_text(
        "You will get no more emails about Summer gala."
    )
    await shot(stranger, "unsubscribed", "desktop")
    await stranger.get_by_role("link", name="My photos").last.click()
    # Signed out, it asks to sign in first, then goes on to the event's photos.
    await expect(stranger).to_have_url(
        re.compile(rf"/login\?next=/my-photos%3Fevent_id%3D{event['id']}$")
    )
    assert await setting(obama, event) is False
    await page.reload()
    await expect(switch).not_to_be_checked()
    await add_photos(server, organiser, event, "e02.jpg")
    assert await mail_round(server.settings, now=utcnow() + 2 * HOUR) == 0
    contexts.assert_no_errors()
