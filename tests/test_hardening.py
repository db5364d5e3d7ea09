"""Hostile input at the edge: ids, JSON, text, multipart, CSRF, /metrics, slow clients, logs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import sys
import uuid

import httpx
from PIL import Image

from findme.app import create_app
from findme.logs import FieldsFormatter
from findme.routes.common import MAX_ID
from findme.routes.ops import scrape_token_matches
from tests.conftest import PASSWORD, serve

UPLOAD = "/api/photographer/events/{}/upload-photos"
HUGE_ID = 34_359_738_367  # 2**35 - 1: a whole number no 32-bit id column can hold
JSON = {"content-type": "application/json"}


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), "teal").save(out, "JPEG")
    return out.getvalue()


# 1. Ids -----------------------------------------------------------------------------------


async def test_every_route_answers_404_for_an_id_beyond_32_bits(make_user, settings) -> None:
    admin = await make_user("admin")
    id_routes = [
        (method, route.path)
        for route in create_app(settings).routes
        if "_id}" in getattr(route, "path", "")
        for method in sorted((getattr(route, "methods", None) or set()) - {"HEAD"})
    ]
    assert len(id_routes) >= 15, id_routes
    for method, template in id_routes:
        path = re.sub(r"\{\w+_id\}", str(HUGE_ID), template)
        response = await admin.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"] == "not_found", (method, path)
        assert "with this id" in response.json()["detail"], (method, path)
    # The largest id a column holds is still looked up (and simply not found).
    assert (await admin.get(f"/api/events/{MAX_ID}")).status_code == 404
    assert MAX_ID == 2**31 - 1


async def test_query_ids_and_cursors_are_bounded_and_ascii(make_user) -> None:
    admin = await make_user("admin")
    attendee = await make_user()
    too_big = str(HUGE_ID)
    cases = [
        (admin, "/api/all-photos", {"event_id": too_big}),
        (admin, "/api/all-photos", {"cursor": too_big}),
        (attendee, "/api/my-photos", {"event_id": too_big}),
        (attendee, "/api/my-photos", {"cursor": too_big}),
        (attendee, "/api/my-photos/stream", {"event_id": too_big}),
        (attendee, "/api/my-photos/stream", {"after": too_big}),
        (admin, "/api/all-photos", {"event_id": "١٢"}),  # Arabic-Indic digits: isdigit() is True
        (admin, "/api/all-photos", {"cursor": "²"}),  # superscript two: isdigit(), but int() fails
        (admin, "/api/all-photos", {"limit": "0"}),
        (attendee, "/api/my-photos", {"limit": "0"}),
        (admin, "/api/admin/jobs", {"limit": "0"}),
        (admin, "/api/all-photos", {"limit": "-1"}),
    ]
    for client, path, params in cases:
        response = await client.get(path, params=params)
        assert response.status_code == 400, (path, params, response.text)
        assert response.json()["error"] == "bad_request"
        assert "whole number" in response.json()["detail"], (path, params)
    header = await attendee.get("/api/my-photos/stream", headers={"last-event-id": too_big})
    assert header.status_code == 400
    for raw in ("١٢", "²", "12a"):
        response = await admin.get(f"/api/events/{raw}")
        assert response.status_code == 400, (raw, response.text)
        assert "whole number" in response.json()["detail"]
    # In range they work as before.
    assert (await admin.get("/api/all-photos", params={"limit": "1", "cursor": "0"})).is_success


async def test_pages_treat_an_impossible_event_id_as_unknown(make_user) -> None:
    attendee = await make_user()
    for raw in (str(HUGE_ID), "١٢"):
        page = await attendee.get("/my-photos", params={"event_id": raw})
        assert page.status_code == 404, (raw, page.text[:200])


# 2. and 3. JSON bodies ----------------------------------------------------------------------


async def test_deeply_nested_json_is_refused_before_it_is_parsed(make_user, anon) -> None:
    organiser = await make_user("photographer")
    for depth in (1_000, 30_000):
        body = '{"name":' + "[" * depth + "]" * depth + "}"
        response = await organiser.post("/api/events", content=body, headers=JSON)
        assert response.status_code == 400, response.text
        assert "nested" in response.json()["detail"]
    mixed = '{"a":' + '{"b":[' * 600 + "]}" * 600 + "}"
    response = await anon.post("/api/auth/register", content=mixed, headers=JSON)
    assert response.status_code == 400
    assert "nested" in response.json()["detail"]
    # Brackets inside strings are text, not nesting.
    text = await organiser.post("/api/events", json={"name": "[" * 150 + "{" * 50})
    assert text.status_code == 201, text.text


async def test_text_that_is_not_valid_unicode_is_refused(make_user, anon) -> None:
    organiser = await make_user("photographer")
    escaped_lone = '{"name":"gala \\ud800"}'
    raw_lone = b'{"name":"gala \xed\xa0\x80"}'
    for body in (escaped_lone, raw_lone, '{"name":"\\udc00x"}', '{"\\ud800":"key"}'):
        response = await organiser.post("/api/events", content=body, headers=JSON)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["detail"]
    # A proper surrogate pair is a real character.
    pair = await organiser.post(
        "/api/events", content='{"name":"gala \\ud83c\\udf89"}', headers=JSON
    )
    assert pair.status_code == 201, pair.text
    assert pair.json()["name"] == "gala \U0001f389"
    for body in (
        '{"email":"\\ud800@example.com","password":"x"}',
        '{"email":"a\\u0000@example.com","password":"x"}',
        '{"email":"a@example.com","password":"\\udfff"}',
    ):
        response = await anon.post("/api/auth/login", content=body, headers=JSON)
        assert response.status_code == 400, (body, response.text)
    register = await anon.post(
        "/api/auth/register",
        content='{"email":"a@example.com","password":"' + PASSWORD + '","name":"\\ud800"}',
        headers=JSON,
    )
    assert register.status_code == 400, register.text
    token = await organiser.post("/api/auth/tokens", content='{"name":"\\ud800"}', headers=JSON)
    assert token.status_code == 400, token.text


# 4. Multipart boundaries -------------------------------------------------------------------


async def test_an_overlong_multipart_boundary_is_a_bad_request(make_user, make_event) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    attendee = await make_user()
    boundary = "b" * 300
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'
        ).encode()
        + jpeg()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    for client, method, path in (
        (organiser, "POST", UPLOAD.format(event["id"])),
        (attendee, "PUT", "/api/me/selfie"),
    ):
        response = await client.request(method, path, content=body, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"] == "malformed_upload"
        assert "boundary" in response.json()["detail"]


# 5. Content type and Origin on JSON routes --------------------------------------------------


async def test_json_routes_want_json_and_a_real_origin(server, make_user) -> None:
    user = await make_user()
    credentials = {"email": user.user["email"], "password": PASSWORD}
    text = json.dumps(credentials)
    async with server.client() as browser:
        # A cross-site form or a sandboxed page: text/plain needs no CORS preflight.
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"content-type": content_type} if content_type else {}
            response = await browser.post("/api/auth/login", content=text, headers=headers)
            assert response.status_code == 415, (content_type, response.text)
            assert "application/json" in response.json()["detail"]
            assert "set-cookie" not in response.headers
        sandboxed = await browser.post(
            "/api/auth/login", json=credentials, headers={"origin": "null"}
        )
        assert sandboxed.status_code == 403, sandboxed.text
        assert sandboxed.json()["error"] == "csrf_failed"
        assert "set-cookie" not in sandboxed.headers
        signup = await browser.post(
            "/api/auth/register",
            content=json.dumps({"email": "x@example.com", "password": PASSWORD, "name": "X"}),
            headers={"content-type": "text/plain", "origin": "null"},
        )
        assert signup.status_code in (403, 415)
        # What our pages and scripts send still works.
        same_site = await browser.post(
            "/api/auth/login",
            content=text,
            headers={"content-type": "application/json; charset=utf-8", "origin": server.url},
        )
        assert same_site.status_code == 200, same_site.text
    changed = await user.post("/api/events/join", json={"code": "NOPE"}, headers={"origin": "null"})
    assert changed.status_code == 403


# 6. /metrics --------------------------------------------------------------------------------


async def test_metrics_need_an_admin_whatever_the_proxy_headers_say(server, make_user) -> None:
    spoofed = [
        {},
        {"x-real-ip": "203.0.113.5"},
        {"x-forwarded-for": "127.0.0.1"},
        {"forwarded": "for=127.0.0.1"},
        {"x-forwarded-for": "127.0.0.1", "x-real-ip": "127.0.0.1"},
    ]
    async with server.client() as anonymous:
        for headers in spoofed:
            response = await anonymous.get("/metrics", headers=headers)
            assert response.status_code == 401, (headers, response.text[:200])
    attendee = await make_user()
    assert (await attendee.get("/metrics")).status_code == 403
    admin = await make_user("admin")
    allowed = await admin.get("/metrics")
    assert allowed.status_code == 200
    assert "findme_http_request_duration_seconds" in allowed.text
    # Scrapers sign in with a bearer token: an admin's API token works.
    token = (await admin.post("/api/auth/tokens", json={"name": "prometheus"})).json()["token"]
    async with server.client(headers={"authorization": f"Bearer {token}"}) as scraper:
        assert (await scraper.get("/metrics")).status_code == 200


def test_the_scrape_token_must_match_exactly() -> None:
    assert scrape_token_matches("Bearer s3cret-scrape-token", "s3cret-scrape-token")
    assert scrape_token_matches("bearer  s3cret-scrape-token ", "s3cret-scrape-token")
    assert not scrape_token_matches("Bearer s3cret-scrape-token", None)
    assert not scrape_token_matches("Bearer s3cret-scrape-token", "")
    assert not scrape_token_matches("Bearer ", "")
    assert not scrape_token_matches("Bearer other", "s3cret-scrape-token")
    assert not scrape_token_matches("Basic s3cret-scrape-token", "s3cret-scrape-token")
    assert not scrape_token_matches("", "s3cret-scrape-token")


# 7. Header size and slow bodies under `findme serve` ----------------------------------------


async def raw_exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 30)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def test_findme_serve_bounds_the_request_line_and_headers(settings) -> None:
    async with serve(settings) as url:
        port = int(url.rsplit(":", 1)[1])
        ok = await raw_exchange(
            port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n"
        )
        assert ok.startswith(b"HTTP/1.1 200"), ok[:100]
        big_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40_000 + b"\r\n\r\n"
        answer = await raw_exchange(port, big_header)
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:100]
        assert answer == b"" or answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:100]
        long_line = b"GET /healthz?q=" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        answer = await raw_exchange(port, long_line)
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:100]
        many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 5_000 + b"\r\n"
        answer = await raw_exchange(port, many)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
        assert b"too large" in answer
        # Headers that never end are not buffered without limit either.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            for _ in range(40):
                writer.write(b"X-Pad: " + b"a" * 1000 + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
            answer = await asyncio.wait_for(reader.read(), 30)
        except ConnectionResetError:
            answer = b""
        finally:
            writer.close()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:100]


async def _trickle(writer: asyncio.StreamWriter, data: bytes, *, pause_s: float) -> None:
    with contextlib.suppress(ConnectionError):
        for index in range(len(data)):
            writer.write(data[index : index + 1])
            await writer.drain()
            await asyncio.sleep(pause_s)


async def _slow_request(port: int, head: str, body: bytes) -> bytes:
    """Send the headers at once, then the body a byte at a time; return the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + b"\r\n")
    sender = asyncio.create_task(_trickle(writer, body, pause_s=0.05))
    answer = b""
    try:
        # Generous: the server gives up after its own (short) timeout, long before this.
        while chunk := await asyncio.wait_for(reader.read(65536), 30):
            answer += chunk
    except ConnectionResetError:
        # The server closed on a client still sending: the kernel resets the connection at the
        # next byte, which can come before the end of the answer is read, not before its start.
        pass
    finally:
        sender.cancel()
        writer.close()
    return answer


async def test_findme_serve_times_out_slow_bodies(settings) -> None:
    from findme.db import Database, Role
    from findme.domain.accounts import create_user

    email = f"slow-{uuid.uuid4().hex[:8]}@example.com"
    db = Database(settings)
    try:
        async with db.transaction() as session:
            await create_user(
                session, email=email, password=PASSWORD, name="Slow", role=Role.photographer
            )
    finally:
        await db.aclose()
    async with serve(settings, body_timeout_s=1.0) as url:
        port = int(url.rsplit(":", 1)[1])
        async with httpx.AsyncClient(base_url=url) as client:
            login = await client.post(
                "/api/auth/login", json={"email": email, "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            csrf = login.json()["csrf_token"]
            cookie = client.cookies["findme_session"]
            event = (
                await client.post(
                    "/api/events", json={"name": "Slow"}, headers={"x-csrf-token": csrf}
                )
            ).json()
            # A fast upload through the same server still works.
            fast = await client.post(
                UPLOAD.format(event["id"]),
                files=[("files", ("a.jpg", jpeg()))],
                headers={"x-csrf-token": csrf},
            )
            assert fast.status_code == 202, fast.text
        part = (
            b'--slow\r\nContent-Disposition: form-data; name="files"; filename="b.jpg"\r\n\r\n'
            + b"x" * 2000
        )
        head = (
            f"POST {UPLOAD.format(event['id'])} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Cookie: findme_session={cookie}\r\nX-CSRF-Token: {csrf}\r\n"
            "Content-Type: multipart/form-data; boundary=slow\r\n"
            f"Content-Length: {len(part) + 10_000}\r\n"
        )
        answer = await _slow_request(port, head, part)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b"slowly" in answer
        assert not list((settings.data_dir / "tmp").glob("*.upload"))
        json_head = (
            f"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000\r\n"
        )
        answer = await _slow_request(port, json_head, b'{"email": "' + b"a" * 4000)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]


# 8. Logs ------------------------------------------------------------------------------------


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


async def test_control_characters_never_reach_the_log(anon) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(FieldsFormatter("%(levelname)s %(name)s %(message)s"))
    access = logging.getLogger("findme.access")
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        forged = "/x%0D%0A2026-01-01T00:00:00 INFO findme.access GET /admin 200%00%1B[2J%E2%80%A8"
        await anon.get(forged)
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert not CONTROL.search(lines[0]), lines[0]
    assert "\t" not in lines[0]
    assert "/x\\r\\n2026-01-01T00:00:00" in lines[0]
    assert "\\x00\\x1b[2J\\u2028" in lines[0]


def test_the_formatter_escapes_fields_and_keeps_tracebacks_indented() -> None:
    formatter = FieldsFormatter("%(levelname)s %(name)s %(message)s")
    try:
        raise ValueError("bad\nINFO findme.access forged line")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.makeLogRecord(
        {
            "name": "findme.test",
            "levelno": logging.ERROR,
            "levelname": "ERROR",
            "msg": "upload %s failed",
            "args": ("a\rb",),
            "exc_info": exc_info,
            "path": '/p\n"x" user_id=1',
            "note": "tab\there",
        }
    )
    text = formatter.format(record)
    first, *rest = text.split("\n")
    assert first.startswith("ERROR findme.test upload a\\rb failed ")
    assert 'path="/p\\n\\"x\\" user_id=1"' in first
    assert 'note="tab\\there"' in first
    assert rest and all(line.startswith("  ") for line in rest), rest
    assert any("forged line" in line for line in rest)
    assert not CONTROL.search(text)
