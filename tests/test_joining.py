"""Joining: an organiser closes it or lets the code expire, and replaces the code; members stay."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.shared_faces import faces_dir
from tests.test_watcher import run_once

CLOSED = "This event is not taking new guests. Ask the organiser."
EXPIRED = "This join code has expired. Ask the organiser for a new one."
UNKNOWN_EVENT = 2_000_000_000
HTML = {"accept": "text/html"}


def iso_in(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


async def join(client, code: str):
    return await client.post("/api/events/join", json={"code": code})


async def change(client, event_id: int, **settings):
    return await client.patch(f"/api/events/{event_id}", json=settings)


async def test_an_organiser_closes_joining_and_members_keep_everything(
    make_user, make_event
) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    assert event["joining"] == "open" and event["code_expires_at"] is None
    member = await make_user()
    assert (await join(member, event["code"])).status_code == 200

    closed = await change(organiser, event["id"], joining="closed")
    assert closed.status_code == 200, closed.text
    assert closed.json()["joining"] == "closed" and closed.json()["gallery"] == "own"

    newcomer = await make_user()
    refused = await join(newcomer, event["code"])
    assert refused.status_code == 403
    assert refused.json() == {"error": "joining_closed", "detail": CLOSED}
    assert (await newcomer.get(f"/api/events/{event['id']}")).status_code == 404
    assert (await newcomer.get("/api/events")).json()["items"] == []

    # The member is in already: joining again succeeds, and their event and photos stay.
    again = await join(member, event["code"])
    assert again.status_code == 200, again.text
    assert again.json()["event"]["id"] == event["id"]
    shown = await member.get(f"/api/events/{event['id']}")
    assert shown.status_code == 200 and shown.json()["counts"]["members"] == 1
    # How the event admits newcomers is not a member's business.
    assert "joining" not in shown.json() and "code_expires_at" not in shown.json()
    assert "joining" not in again.json()["event"]
    mine = await member.get("/api/my-photos", params={"event_id": event["id"]})
    assert mine.status_code == 200, mine.text
    # The organiser is never refused their own event.
    assert (await join(organiser, event["code"])).status_code == 200

    reopened = await change(organiser, event["id"], joining="open")
    assert reopened.json()["joining"] == "open"
    assert (await join(newcomer, event["code"])).status_code == 200
    listed = (await organiser.get("/api/events")).json()["items"]
    assert [(item["id"], item["joining"]) for item in listed] == [(event["id"], "open")]


async def test_a_join_code_expires_and_a_new_code_admits_again(make_user, make_event) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    path = event["id"]

    # A time in the organiser's zone is kept as the same instant.
    local = (dt.datetime.now(dt.timezone(dt.timedelta(hours=2))) + dt.timedelta(hours=1)).replace(
        microsecond=0
    )
    later = await change(organiser, path, code_expires_at=local.isoformat())
    assert later.status_code == 200, later.text
    assert dt.datetime.fromisoformat(later.json()["code_expires_at"]) == local
    early = await make_user()
    assert (await join(early, event["code"])).status_code == 200

    # A time already past is allowed: the code stops at once.
    past = await change(organiser, path, code_expires_at=iso_in(minutes=-1))
    assert past.status_code == 200 and past.json()["joining"] == "open"
    late = await make_user()
    refused = await join(late, event["code"])
    assert refused.status_code == 403
    assert refused.json() == {"error": "code_expired", "detail": EXPIRED}
    assert (await join(early, event["code"])).status_code == 200

    # Closed and expired: closed is what the guest is told, a new code would not help.
    await change(organiser, path, joining="closed")
    assert (await join(late, event["code"])).json()["error"] == "joining_closed"
    await change(organiser, path, joining="open")

    cleared = await change(organiser, path, code_expires_at=None)
    assert cleared.json()["code_expires_at"] is None
    assert (await join(late, event["code"])).status_code == 200

    # The expiry belongs to the code: a new code has none.
    await change(organiser, path, code_expires_at="2020-01-01T00:00:00Z")
    fresh = await organiser.post(f"/api/events/{path}/code")
    assert fresh.status_code == 201, fresh.text
    assert fresh.json()["code_expires_at"] is None
    assert (await join(await make_user(), fresh.json()["code"])).status_code == 200


async def test_a_new_code_retires_the_old_one_like_an_unknown_code(
    make_user, make_event, server
) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    member = await make_user()
    assert (await join(member, event["code"])).status_code == 200
    old = event["code"]

    renewed = await organiser.post(f"/api/events/{event['id']}/code")
    assert renewed.status_code == 201, renewed.text
    new = renewed.json()
    assert new["id"] == event["id"] and new["code"] != old
    assert len(new["code"]) == 8 and new["join_path"] == f"/join/{new['code']}"
    assert (await organiser.get(f"/api/events/{event['id']}")).json()["code"] == new["code"]

    # The old code answers exactly as a code that never existed, to the API and the pages.
    newcomer = await make_user()
    never = "ZZZZ2222"
    gone, unknown = await join(newcomer, old), await join(newcomer, never)
    assert gone.status_code == unknown.status_code == 404
    assert gone.json() == unknown.json()
    gone_page = await newcomer.get(f"/join/{old}", headers=HTML)
    unknown_page = await newcomer.get(f"/join/{never}", headers=HTML)
    assert gone_page.status_code == unknown_page.status_code == 404
    assert gone_page.text.replace(old, never) == unknown_page.text
    typed = await newcomer.get("/join", params={"code": old.lower()}, follow_redirects=True)
    assert typed.status_code == 404 and "Check the event code" in typed.text
    # The member stays, with the event and the new code; the old one still finds them in.
    assert (await member.get(f"/api/events/{event['id']}")).json()["code"] == new["code"]
    assert (await join(member, new["code"])).status_code == 200
    assert (await join(newcomer, new["code"])).status_code == 200
    shown = (await organiser.get(f"/api/events/{event['id']}")).json()
    assert shown["counts"]["members"] == 2
    # The organiser's page shows the new code, link and QR code.
    page = await organiser.get(f"/events/{event['id']}", headers=HTML)
    assert f"{server.url}/join/{new['code']}" in page.text and old not in page.text


async def test_only_the_organiser_or_an_admin_changes_joining(make_user, make_event, anon) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    member, stranger = await make_user(), await make_user()
    other_photographer = await make_user("photographer")
    assert (await join(member, event["code"])).status_code == 200
    path = f"/api/events/{event['id']}"

    for caller, status in ((member, 403), (stranger, 404), (other_photographer, 404)):
        assert (await caller.patch(path, json={"joining": "closed"})).status_code == status
        assert (await caller.patch(path, json={"code_expires_at": None})).status_code == status
        assert (await caller.post(f"{path}/code")).status_code == status
    assert (await member.patch(path, json={"joining": "closed"})).json()["error"] == "forbidden"
    missing = await organiser.patch(f"/api/events/{UNKNOWN_EVENT}", json={"joining": "closed"})
    assert missing.status_code == 404
    assert (await organiser.post(f"/api/events/{UNKNOWN_EVENT}/code")).status_code == 404
    assert (await anon.patch(path, json={"joining": "closed"})).status_code == 401
    assert (await anon.post(f"{path}/code")).status_code == 401
    # A signed-in browser's change must carry its CSRF token.
    csrf = organiser.headers.pop("x-csrf-token")
    try:
        assert (await organiser.post(f"{path}/code")).status_code == 403
        assert (await organiser.patch(path, json={"joining": "closed"})).status_code == 403
    finally:
        organiser.headers["x-csrf-token"] = csrf
    unchanged = (await organiser.get(path)).json()
    assert unchanged["joining"] == "open" and unchanged["code"] == event["code"]

    admin = await make_user("admin")
    closed = await admin.patch(path, json={"joining": "closed"})
    assert closed.status_code == 200 and closed.json()["my_role"] == "admin"
    assert closed.json()["joining"] == "closed"
    renewed = await admin.post(f"{path}/code")
    assert renewed.status_code == 201 and renewed.json()["code"] != event["code"]


# Each refused with a 400 that names the setting, changing nothing, not even the good one.
HOSTILE_SETTINGS = [
    {},
    {"name": "Renamed"},
    {"joining": "maybe"},
    {"joining": None},
    {"joining": True},
    {"joining": ["open"]},
    {"joining": "OPEN"},
    {"code_expires_at": "tomorrow"},
    {"code_expires_at": "2026-06-30T23:00:00"},  # no timezone
    {"code_expires_at": "2026-06-30"},
    {"code_expires_at": "2026-02-30T10:00:00Z"},
    {"code_expires_at": "2026-06-30T23:00:00+25:00"},
    {"code_expires_at": "0001-01-01T00:00:00+05:00"},  # before the calendar in UTC
    {"code_expires_at": "9999-12-31T23:59:59-05:00"},  # after it
    {"code_expires_at": 1767225600},
    {"code_expires_at": {"at": "2026-06-30T23:00:00Z"}},
    {"code_expires_at": "2026-06-30T23:00:00Z" + " " * 100},
    {"code_expires_at": "2026-06-30T23:00:00Z\u2028"},
    {"gallery": "all", "joining": "shut"},  # one bad setting changes nothing
    {"gallery": "all", "code_expires_at": "soon"},
]


async def test_settings_are_checked_and_a_bad_one_changes_nothing(make_user, make_event) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    path = f"/api/events/{event['id']}"
    for body in HOSTILE_SETTINGS:
        refused = await organiser.patch(path, json=body)
        assert refused.status_code == 400, (body, refused.text)
        detail = refused.json()["detail"]
        assert refused.json()["error"] == "bad_request", body
        assert detail.endswith("."), body
        assert "'joining'" in detail or "'code_expires_at'" in detail, (body, detail)
    after = (await organiser.get(path)).json()
    assert (after["gallery"], after["joining"], after["code_expires_at"]) == ("own", "open", None)
    assert after["code"] == event["code"]


async def test_settings_at_the_ends_of_the_calendar_and_in_other_forms(
    make_user, make_event
) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    path = f"/api/events/{event['id']}"
    for raw, stored in (
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00+00:00"),
        ("9999-12-31T23:59:59+00:00", "9999-12-31T23:59:59+00:00"),
        ("2026-06-30 23:00:00.5-03:30", "2026-07-01T02:30:00.500000+00:00"),
    ):
        changed = await organiser.patch(path, json={"code_expires_at": raw})
        assert changed.status_code == 200, changed.text
        assert changed.json()["code_expires_at"] == stored
    both = await organiser.patch(path, json={"gallery": "all", "joining": "closed"})
    assert (both.json()["gallery"], both.json()["joining"]) == ("all", "closed")
    # Sent as a form, the change is refused before anything is read.
    form = await organiser.patch(path, data={"joining": "open"})
    assert form.status_code == 415
    assert (await organiser.get(path)).json()["joining"] == "closed"


async def test_join_pages_say_why_a_closed_event_or_an_expired_code_admits_no_one(
    make_user, make_event
) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser, "Summer gala")
    member, guest = await make_user(), await make_user()
    assert (await join(member, event["code"])).status_code == 200
    link = f"/join/{event['code']}"

    open_page = await guest.get(link, headers=HTML)
    assert open_page.status_code == 200 and "Summer gala" in open_page.text

    await change(organiser, event["id"], joining="closed")
    closed = await guest.get(link, headers=HTML)
    assert closed.status_code == 403
    assert CLOSED in closed.text and "Summer gala" in closed.text
    assert 'id="join"' not in closed.text and "Take my selfie first" not in closed.text
    typed = await guest.get("/join", params={"code": event["code"]}, follow_redirects=True)
    assert typed.status_code == 403 and CLOSED in typed.text
    # The member's link still opens their photos; the organiser's their event.
    kept = await member.get(link, headers=HTML)
    assert kept.status_code == 200 and "You have joined this event." in kept.text
    assert CLOSED not in kept.text
    assert "You organise this event." in (await organiser.get(link, headers=HTML)).text

    await change(organiser, event["id"], joining="open", code_expires_at=iso_in(seconds=-5))
    expired = await guest.get(link, headers=HTML)
    assert expired.status_code == 403 and EXPIRED in expired.text
    assert 'action="/join"' in expired.text  # a field for the new code
    assert CLOSED not in expired.text

    await change(organiser, event["id"], code_expires_at=iso_in(days=1))
    assert (await guest.get(link, headers=HTML)).status_code == 200


@pytest.mark.timeout(180)
async def test_watch_names_a_closed_event_by_its_code_and_not_a_replaced_code(
    make_user, make_event, server, tmp_path
) -> None:
    """`findme watch --event CODE` is the organiser's upload: closing joining or letting the
    code expire leaves it working; a replaced code is unknown, said in a sentence."""
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    token = (await organiser.post("/api/auth/tokens", json={"name": "watch"})).json()["token"]
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "e01.jpg").write_bytes((faces_dir() / "event" / "e01.jpg").read_bytes())
    await change(organiser, event["id"], joining="closed", code_expires_at=iso_in(hours=-1))

    sent = await run_once(tmp_path, folder, server.url, event_id=event["code"], token=token)
    assert sent.process.returncode == 0, sent.stdout + sent.stderr
    listed = await organiser.get(f"/api/events/{event['id']}/photos")
    assert [item["filename"] for item in listed.json()["items"]] == ["e01.jpg"]

    await organiser.post(f"/api/events/{event['id']}/code")
    stale = await run_once(
        tmp_path,
        folder,
        server.url,
        "--manifest",
        str(tmp_path / "other-manifest.json"),
        event_id=event["code"],
        token=token,
    )
    assert stale.process.returncode == 2, stale.stdout + stale.stderr
    assert f"None of your events on {server.url} has the code {event['code']}" in stale.stderr
    assert "Traceback" not in stale.stdout + stale.stderr
