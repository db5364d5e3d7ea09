"""Accounts: sign-up, sign-in, sessions, CSRF, tokens and roles over real HTTP."""

from __future__ import annotations

import asyncio

import httpx

from findme.auth import hash_password, verify_password
from tests.conftest import PASSWORD


async def test_register_signs_in_and_me_shows_the_account(anon: httpx.AsyncClient) -> None:
    response = await anon.post(
        "/api/auth/register",
        json={"email": " Ann@Example.com ", "password": PASSWORD, "name": "Ann"},
    )
    assert response.status_code == 201
    assert response.json()["user"]["email"] == "ann@example.com"
    assert response.json()["user"]["role"] == "attendee"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    me = await anon.get("/api/me")
    assert me.status_code == 200
    assert me.json()["user"]["name"] == "Ann"
    assert me.json()["has_selfie"] is False and me.json()["consent_at"] is None


async def test_register_rejects_bad_input_with_sentences(anon: httpx.AsyncClient) -> None:
    cases = [
        ({"email": "nope", "password": PASSWORD, "name": "A"}, "valid email"),
        ({"email": "a@b.co", "password": "short", "name": "A"}, "at least 8"),
        ({"email": "a@b.co", "password": PASSWORD}, "'name' is required"),
        ({"email": "a@b.co", "password": PASSWORD, "name": "x" * 500}, "at most 120"),
        ({"email": "a@b.co", "password": PASSWORD, "name": "A", "role": "admin"}, "Only an admin"),
        ({"email": "a@b.co", "password": PASSWORD, "name": "A\x00B"}, "control characters"),
    ]
    for body, sentence in cases:
        response = await anon.post("/api/auth/register", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"] == "bad_request"
        assert sentence in response.json()["detail"]
    for raw in (b"", b"not json", b"[1, 2]", b"\xff\xfe"):
        json_type = {"content-type": "application/json"}
        response = await anon.post("/api/auth/register", content=raw, headers=json_type)
        assert response.status_code == 400
        assert response.json()["detail"]
    assert (await anon.get("/api/me")).status_code == 401


async def test_duplicate_email_is_a_conflict(anon: httpx.AsyncClient) -> None:
    body = {"email": "dup@example.com", "password": PASSWORD, "name": "Dup"}
    assert (await anon.post("/api/auth/register", json=body)).status_code == 201
    async with httpx.AsyncClient(base_url=str(anon.base_url)) as other:
        response = await other.post("/api/auth/register", json=body | {"email": "DUP@example.com"})
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


async def test_login_errors_do_not_reveal_which_emails_exist(make_user, anon) -> None:
    user = await make_user()
    wrong_password = await anon.post(
        "/api/auth/login", json={"email": user.user["email"], "password": "wrong password"}
    )
    unknown_email = await anon.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": "wrong password"}
    )
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.json() == unknown_email.json()


async def test_login_starts_a_new_session_and_logout_ends_it(make_user, server) -> None:
    user = await make_user()
    old_cookie = user.cookies.get("findme_session")
    response = await user.post(
        "/api/auth/login", json={"email": user.user["email"], "password": PASSWORD}
    )
    new_cookie = response.cookies.get("findme_session")
    assert new_cookie and new_cookie != old_cookie
    user.headers["x-csrf-token"] = response.json()["csrf_token"]

    stolen = server.client(cookies={"findme_session": new_cookie})
    assert (await stolen.get("/api/me")).status_code == 200
    assert (await user.post("/api/auth/logout")).status_code == 204
    # The server forgot the session: a copy of the cookie is worth nothing now.
    assert (await stolen.get("/api/me")).status_code == 401
    assert (await user.get("/api/me")).status_code == 401
    await stolen.aclose()


async def test_tampered_cookie_is_not_signed_in(server) -> None:
    async with server.client(cookies={"findme_session": "forged.value.sig"}) as client:
        response = await client.get("/api/me")
    assert response.status_code == 401
    assert response.json()["error"] == "not_signed_in"


async def test_cookie_changes_need_the_csrf_token(make_user, server) -> None:
    photographer = await make_user("photographer")
    token = photographer.headers.pop("x-csrf-token")
    response = await photographer.post("/api/events", json={"name": "Gala"})
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_failed"
    response = await photographer.post(
        "/api/events", json={"name": "Gala"}, headers={"x-csrf-token": "wrong"}
    )
    assert response.status_code == 403
    response = await photographer.post(
        "/api/events", json={"name": "Gala"}, headers={"x-csrf-token": token}
    )
    assert response.status_code == 201
    # A cross-site form cannot even sign in.
    response = await photographer.post(
        "/api/auth/login",
        json={"email": photographer.user["email"], "password": PASSWORD},
        headers={"origin": "https://evil.example"},
    )
    assert response.status_code == 403


async def test_api_token_for_scripts_without_a_browser(make_user, server) -> None:
    user = await make_user("photographer")
    async with server.client() as script:
        login = await script.post(
            "/api/auth/login", json={"email": user.user["email"], "password": PASSWORD}
        )
        created = await script.post(
            "/api/auth/tokens",
            json={"name": "watcher"},
            headers={"x-csrf-token": login.json()["csrf_token"]},
        )
    assert created.status_code == 201
    token = created.json()["token"]
    async with server.client(headers={"authorization": f"Bearer {token}"}) as bearer:
        # No cookie, no CSRF token: the bearer token alone authorises changes.
        assert (await bearer.post("/api/events", json={"name": "By script"})).status_code == 201
        listed = (await bearer.get("/api/auth/tokens")).json()["items"]
        assert [item["name"] for item in listed] == ["watcher"]
        assert "token" not in listed[0] and listed[0]["last_used_at"]
        assert (await bearer.delete(f"/api/auth/tokens/{created.json()['id']}")).status_code == 204
        revoked = await bearer.get("/api/me")
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["detail"]
    async with server.client(headers={"authorization": "Bearer fm_nonsense"}) as bad:
        assert (await bad.get("/api/me")).status_code == 401
    async with server.client(headers={"authorization": "Basic abc"}) as bad:
        assert "Bearer" in (await bad.get("/api/me")).json()["detail"]


async def test_tokens_are_stored_hashed(make_user, server) -> None:
    import asyncpg

    user = await make_user()
    token = (await user.post("/api/auth/tokens", json={"name": "t"})).json()["token"]
    url = server.settings.database_url.replace("+asyncpg", "")
    connection = await asyncpg.connect(url)
    stored = await connection.fetchval("SELECT token_hash FROM api_tokens")
    password_hash = await connection.fetchval("SELECT password_hash FROM users LIMIT 1")
    await connection.close()
    assert token not in stored and len(stored) == 64
    assert password_hash.startswith("$argon2id$")


async def test_roles_limit_what_each_account_can_do(make_user, make_event) -> None:
    attendee = await make_user()
    photographer = await make_user("photographer")
    response = await attendee.post("/api/events", json={"name": "Mine"})
    assert response.status_code == 403
    assert "photographer" in response.json()["detail"]
    event = await make_event(photographer)
    assert event["code"]
    admin = await make_user("admin")
    assert (await admin.get(f"/api/events/{event['id']}")).status_code == 200
    # An event the attendee may not see is, to them, an event that does not exist.
    assert (await attendee.get(f"/api/events/{event['id']}")).status_code == 404


async def test_passwords_are_hashed_while_other_requests_are_served() -> None:
    # A hash takes ~150 ms of a core: computed on the event loop, it would stall every other
    # request meanwhile. The loop must keep turning while one is hashed and checked.
    turns = 0

    async def other_requests() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    others = asyncio.create_task(other_requests())
    try:
        stored = await hash_password(PASSWORD)
        hashing_turns = turns
        right = await verify_password(stored, PASSWORD)
        checking_turns = turns - hashing_turns
        wrong = await verify_password(stored, "not the password")
        unknown = await verify_password(None, PASSWORD)
    finally:
        others.cancel()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert (right, wrong, unknown) == (True, False, False)
    assert hashing_turns > 0 and checking_turns > 0
