"""What an outsider can do with the API: lock others out, mass-create accounts, keep a stream
after signing out, or learn which ids exist. Real server, real addresses.

Several client addresses are real: Linux routes all of 127.0.0.0/8 to the loopback device, so
a client bound to 127.0.0.2 reaches the server from that address. The server believes
X-Forwarded-For only from 127.0.0.1 (uvicorn's FORWARDED_ALLOW_IPS default), so these clients
cannot pretend to be anyone else.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from findme.db import Database, Role
from findme.domain.accounts import create_user
from findme.stream_hub import RECHECK_S, SWEEP_SLICES
from tests.conftest import PASSWORD, Server, serve, with_settings
from tests.scenes import EventStream, add_matches, join, jpeg, open_stream, upload


def from_address(url: str, address: str, **kwargs: Any) -> httpx.AsyncClient:
    """A client whose connections come from `address` (a loopback address of this machine)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=60, **kwargs)


def account(name: str) -> dict[str, str]:
    return {
        "email": f"{name}-{uuid.uuid4().hex[:6]}@example.com",
        "password": PASSWORD,
        "name": name,
    }


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    response = await client.post("/api/auth/login", json={"email": email, "password": password})
    if response.status_code == 200:
        client.headers["x-csrf-token"] = response.json()["csrf_token"]
    return response


async def wrong_guesses(client: httpx.AsyncClient, email: str, count: int) -> list[int]:
    return [
        (
            await client.post("/api/auth/login", json={"email": email, "password": f"guess {n}"})
        ).status_code
        for n in range(count)
    ]


# Sign-in throttling -------------------------------------------------------------------------


async def test_wrong_passwords_from_elsewhere_never_lock_the_owner_out(settings) -> None:
    async with (
        serve(settings) as url,
        from_address(url, "127.0.0.2") as attacker,
        from_address(url, "127.0.0.3") as accomplice,
        from_address(url, "127.0.0.4") as owner,
    ):
        victim = account("victim")
        assert (await owner.post("/api/auth/register", json=victim)).status_code == 201
        owner.cookies.clear()
        # The default allowance, 10 failures per account, spent from two addresses...
        assert await wrong_guesses(attacker, victim["email"], 6) == [401] * 6
        assert await wrong_guesses(accomplice, victim["email"], 4) == [401] * 4
        # ...and many more from each address, until each is refused for this account.
        assert await wrong_guesses(attacker, victim["email"], 6) == [401] * 4 + [429] * 2
        assert (await sign_in(attacker, victim["email"])).status_code == 429
        # The owner, from an address that has not failed, signs in at once.
        assert (await sign_in(owner, victim["email"])).status_code == 200
        assert (await owner.get("/api/me")).json()["user"]["email"] == victim["email"]


async def test_an_address_that_keeps_failing_is_refused_for_every_account(settings) -> None:
    strict = with_settings(settings, rate_login_ip="5/minute")
    async with (
        serve(strict) as url,
        from_address(url, "127.0.0.5") as sprayer,
        from_address(url, "127.0.0.6") as somebody,
    ):
        people = [account(f"p{index}") for index in range(3)]
        for person in people:
            assert (await somebody.post("/api/auth/register", json=person)).status_code == 201
            somebody.cookies.clear()
        # One guess per account, as password spraying does: the address runs out, not accounts.
        for person in people:
            assert await wrong_guesses(sprayer, person["email"], 1) == [401]
        assert await wrong_guesses(sprayer, "nobody@example.com", 2) == [401, 401]
        refused = await sign_in(sprayer, people[0]["email"])
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "network" in refused.json()["detail"]
        # Successes do not count: a shared address with many honest people signs them all in.
        for _ in range(8):
            somebody.cookies.clear()
            assert (await sign_in(somebody, people[1]["email"])).status_code == 200


async def test_parallel_guesses_are_counted_one_by_one(settings) -> None:
    async with (
        serve(settings) as url,
        from_address(url, "127.0.0.10") as owner,
        from_address(url, "127.0.0.11") as attacker,
    ):
        victim = account("victim")
        assert (await owner.post("/api/auth/register", json=victim)).status_code == 201
        burst = await asyncio.gather(
            *(
                attacker.post(
                    "/api/auth/login", json={"email": victim["email"], "password": f"guess {n}"}
                )
                for n in range(16)
            )
        )
        assert sorted(response.status_code for response in burst) == [401] * 10 + [429] * 6


async def test_a_browser_signed_in_as_the_owner_is_never_refused(settings) -> None:
    # Attacker and owner share one address (the venue's wifi, say).
    async with (
        serve(settings) as url,
        from_address(url, "127.0.0.7") as owner,
        from_address(url, "127.0.0.7") as attacker,
    ):
        victim, own = account("victim"), account("attacker")
        assert (await owner.post("/api/auth/register", json=victim)).status_code == 201
        assert (await attacker.post("/api/auth/register", json=own)).status_code == 201
        assert await wrong_guesses(attacker, victim["email"], 12) == [401] * 10 + [429] * 2
        # The attacker's own session is no pass for the victim's account...
        assert (await sign_in(attacker, victim["email"])).status_code == 429
        # ...but the owner's browser, which holds the owner's session, signs in again.
        assert (await sign_in(owner, victim["email"])).status_code == 200
        # A wrong password is still wrong there, and still counted.
        assert await wrong_guesses(owner, victim["email"], 1) == [401]
        assert (await owner.get("/api/me")).status_code == 200


# Sign-up limit ------------------------------------------------------------------------------


async def test_signing_up_while_signed_in_does_not_escape_the_limit(settings) -> None:
    strict = with_settings(settings, rate_signup_ip="3/hour")
    async with serve(strict) as url, from_address(url, "127.0.0.8") as client:
        first = account("first")
        assert (await client.post("/api/auth/register", json=first)).status_code == 201
        client.headers["x-csrf-token"] = (await client.get("/api/me")).json()["csrf_token"]
        statuses = [
            (await client.post("/api/auth/register", json=account(f"more{n}"))).status_code
            for n in range(4)
        ]
        assert statuses == [201, 201, 429, 429]


async def test_an_admin_creates_staff_accounts_without_the_sign_up_limit(settings) -> None:
    strict = with_settings(settings, rate_signup_ip="2/hour")
    async with serve(strict) as url, from_address(url, "127.0.0.9") as admin:
        await sign_in_admin(strict, admin)
        for n in range(5):
            staff = account(f"staff{n}") | {"role": "photographer"}
            assert (await admin.post("/api/auth/register", json=staff)).status_code == 201


async def sign_in_admin(settings, client: httpx.AsyncClient) -> None:
    email = f"admin-{uuid.uuid4().hex[:6]}@example.com"
    db = Database(settings)
    try:
        async with db.transaction() as session:
            await create_user(session, email=email, password=PASSWORD, name="A", role=Role.admin)
    finally:
        await db.aclose()
    assert (await sign_in(client, email)).status_code == 200


# Live streams end with their session --------------------------------------------------------


@pytest.fixture
async def watched(server: Server, make_user, make_event) -> dict[str, Any]:
    """An attendee of an event with two photos, watching nothing yet."""
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    photos = await upload(organiser, event["id"], ("a.jpg", jpeg(11)), ("b.jpg", jpeg(12)))
    me = await make_user("attendee", name="Me")
    await join(me, event)
    return {"me": me, "event": event, "photos": photos}


async def until_end(stream: EventStream, timeout_s: float = 30) -> list[dict[str, Any]]:
    """Every message until the server ends the stream (TimeoutError if it never does)."""
    messages = []

    async def read() -> None:
        while True:
            messages.append(await stream.next(timeout_s=timeout_s))

    with pytest.raises(EOFError):
        await asyncio.wait_for(read(), timeout_s)
    return messages


def twin(client: httpx.AsyncClient, url: str) -> httpx.AsyncClient:
    """Another client holding the same browser session (its cookie and CSRF token)."""
    return httpx.AsyncClient(
        base_url=url, cookies=client.cookies, headers=dict(client.headers), timeout=60
    )


async def test_signing_out_on_another_instance_ends_the_stream(watched, settings) -> None:
    me = watched["me"]
    async with serve(settings) as other_instance, twin(me, other_instance) as elsewhere:
        async with open_stream(me) as stream:
            assert await stream.until_ready() == []
            assert (await elsewhere.post("/api/auth/logout")).status_code == 204
            # Sooner than the hub's first periodic look at any stream: the news crossed over
            # (NOTIFY).
            sent = await until_end(stream, timeout_s=RECHECK_S / SWEEP_SLICES / 2)
            assert [message.get("event") for message in sent] == ["end"]
    assert (await me.get("/api/my-photos/stream")).status_code == 401


async def test_a_match_made_after_signing_out_is_never_sent(watched, settings) -> None:
    me, event, photos = watched["me"], watched["event"], watched["photos"]
    async with twin(me, str(me.base_url)) as elsewhere:
        async with open_stream(me, event_id=event["id"]) as stream:
            assert await stream.until_ready() == []
            assert (await elsewhere.post("/api/auth/logout")).status_code == 204
            # Written and announced at once, as another instance's worker would, perhaps
            # before the stream has heard of the sign-out.
            (late,) = await add_matches(
                settings, user_id=me.user["id"], event_id=event["id"], photo_ids=photos[:1]
            )
            sent = await until_end(stream)
    assert str(late) not in [message.get("id") for message in sent]
    assert [message.get("event") for message in sent] == ["end"]


async def test_erasing_the_account_ends_the_stream(watched) -> None:
    me = watched["me"]
    async with open_stream(me) as stream:
        assert await stream.until_ready() == []
        assert (await me.delete("/api/me")).status_code == 204
        assert [message.get("event") for message in await until_end(stream)] == ["end"]


async def test_revoking_the_token_ends_a_script_stream(watched, server) -> None:
    me = watched["me"]
    created = (await me.post("/api/auth/tokens", json={"name": "kiosk"})).json()
    async with server.client(headers={"authorization": f"Bearer {created['token']}"}) as script:
        async with open_stream(script) as stream:
            assert await stream.until_ready() == []
            assert (await me.delete(f"/api/auth/tokens/{created['id']}")).status_code == 204
            await until_end(stream)


async def test_a_stream_ends_when_its_session_expires(settings) -> None:
    short = with_settings(settings, session_max_age_s=3)
    async with serve(short) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        assert (await client.post("/api/auth/register", json=account("brief"))).status_code == 201
        async with open_stream(client) as stream:
            assert await stream.until_ready() == []
            assert [message.get("event") for message in await until_end(stream)] == ["end"]
        assert (await client.get("/api/my-photos/stream")).status_code == 401


# What a stranger learns of ids --------------------------------------------------------------


@pytest.fixture
async def private_event(make_user, make_event) -> dict[str, Any]:
    """An organiser's event with a photo (and its job) and a member; plus a stranger."""
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    response = await organiser.post(
        f"/api/photographer/events/{event['id']}/upload-photos",
        files=[("files", ("a.jpg", jpeg(21)))],
    )
    assert response.status_code == 202, response.text
    (result,) = response.json()["results"]
    member = await make_user()
    await join(member, event)
    return {
        "organiser": organiser,
        "event": event,
        "photo_id": result["photo_id"],
        "job_id": result["job_id"],
        "member": member,
        "stranger": await make_user(),
        "photographer": await make_user("photographer"),
    }


UNKNOWN = 2_000_000_000


async def test_what_a_stranger_may_not_see_answers_exactly_like_an_unknown_id(
    private_event,
) -> None:
    stranger, event_id = private_event["stranger"], private_event["event"]["id"]
    photo_id, job_id = private_event["photo_id"], private_event["job_id"]
    pairs = [
        ("GET", f"/api/events/{event_id}", f"/api/events/{UNKNOWN}"),
        ("GET", f"/api/events/{event_id}/progress", f"/api/events/{UNKNOWN}/progress"),
        ("GET", f"/api/events/{event_id}/qr.svg", f"/api/events/{UNKNOWN}/qr.svg"),
        ("GET", f"/api/events/{event_id}/my-photos.zip", f"/api/events/{UNKNOWN}/my-photos.zip"),
        ("GET", f"/api/all-photos?event_id={event_id}", f"/api/all-photos?event_id={UNKNOWN}"),
        ("GET", f"/api/my-photos?event_id={event_id}", f"/api/my-photos?event_id={UNKNOWN}"),
        (
            "GET",
            f"/api/my-photos/stream?event_id={event_id}",
            f"/api/my-photos/stream?event_id={UNKNOWN}",
        ),
        ("GET", f"/api/photo/{photo_id}", f"/api/photo/{UNKNOWN}"),
        ("GET", f"/api/photo/{photo_id}/thumb", f"/api/photo/{UNKNOWN}/thumb"),
        ("POST", f"/api/photo/{photo_id}/not-me", f"/api/photo/{UNKNOWN}/not-me"),
        ("DELETE", f"/api/photo/{photo_id}", f"/api/photo/{UNKNOWN}"),
        ("DELETE", f"/api/events/{event_id}", f"/api/events/{UNKNOWN}"),
        ("GET", f"/api/jobs/{job_id}", f"/api/jobs/{UNKNOWN}"),
    ]
    for method, theirs, unknown in pairs:
        hidden = await stranger.request(method, theirs)
        missing = await stranger.request(method, unknown)
        assert (hidden.status_code, missing.status_code) == (404, 404), theirs
        assert hidden.content == missing.content, theirs
    # The same for another photographer uploading into an event not theirs...
    photographer = private_event["photographer"]
    uploads = [
        await photographer.post(
            f"/api/photographer/events/{target}/upload-photos",
            files=[("files", ("x.jpg", jpeg(22)))],
        )
        for target in (event_id, UNKNOWN)
    ]
    assert [response.status_code for response in uploads] == [404, 404]
    assert uploads[0].content == uploads[1].content
    # ...and for the event's page.
    page = {"accept": "text/html"}
    hidden = await stranger.get(f"/events/{event_id}", headers=page)
    missing = await stranger.get(f"/events/{UNKNOWN}", headers=page)
    assert (hidden.status_code, missing.status_code) == (404, 404)
    assert hidden.content == missing.content


async def test_a_member_is_told_what_only_the_organiser_may_do(private_event) -> None:
    member, event_id = private_event["member"], private_event["event"]["id"]
    photo_id = private_event["photo_id"]
    # The photo is not the member's: they see it once the organiser opens the gallery to all.
    opened = await private_event["organiser"].patch(
        f"/api/events/{event_id}", json={"gallery": "all"}
    )
    assert opened.status_code == 200, opened.text
    assert (await member.get(f"/api/events/{event_id}")).status_code == 200
    assert (await member.get(f"/api/photo/{photo_id}")).status_code == 200
    for response in (
        await member.delete(f"/api/events/{event_id}"),
        await member.delete(f"/api/photo/{photo_id}"),
    ):
        assert response.status_code == 403
        assert response.json() == {
            "error": "forbidden",
            "detail": "Only the event's organiser can do this.",
        }
