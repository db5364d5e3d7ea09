"""The app as a whole: health, errors, OpenAPI, and the same API on SQLite."""

from __future__ import annotations

import io
from dataclasses import replace

import httpx
from openapi_spec_validator import validate as validate_spec
from PIL import Image

from findme.api_schemas import MAX_ID
from findme.app import create_app
from findme.migrations import migrate
from findme.openapi import api_operations
from findme.routes.common import MAX_ID as ROUTES_MAX_ID
from findme.settings import Settings
from tests.conftest import PASSWORD, serve


async def test_health_and_unknown_routes(anon) -> None:
    assert (await anon.get("/healthz")).json() == {"status": "ok"}
    # Which engine and detector run, so a fallback to dlib's HOG detector is never silent.
    assert (await anon.get("/readyz")).json() == {
        "status": "ready",
        "engine": "local",
        "detector": "cnn",
    }
    missing = await anon.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "detail": "There is nothing at this address."}
    wrong_method = await anon.put("/healthz")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"
    assert wrong_method.headers["allow"] == "GET, HEAD"
    # One address, one route per method: Allow names them all, not the first route's only.
    split = await anon.put("/api/auth/tokens")
    assert split.status_code == 405
    assert split.headers["allow"] == "GET, HEAD, POST"


async def test_openapi_describes_every_api_route(anon, settings) -> None:
    document = (await anon.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    app = create_app(settings)
    api_routes = {
        (method.lower(), route.path)
        for route in app.routes
        if route.path.startswith("/api") or route.path in ("/healthz", "/readyz", "/metrics")
        for method in (getattr(route, "methods", None) or set()) - {"HEAD"}
    }
    described = {(method, path) for method, path, _ in api_operations(app.routes)}
    assert api_routes <= described, api_routes - described
    for method, path in api_routes:
        operation = document["paths"][path][method]
        assert operation["summary"] and operation["responses"]
        for name in [part[1:-1] for part in path.split("/") if part.startswith("{")]:
            assert any(p["name"] == name and p["in"] == "path" for p in operation["parameters"])
    upload = document["paths"]["/api/photographer/events/{event_id}/upload-photos"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert {"202", "413", "415"} <= set(upload["responses"])


async def test_openapi_is_precise(anon) -> None:
    """Typed parameters, bounded ids, real shapes, and the errors each operation gives."""
    document = (await anon.get("/openapi.json")).json()
    validate_spec(document)
    schemas = document["components"]["schemas"]
    assert MAX_ID == ROUTES_MAX_ID == 2**31 - 1
    for text in _refs(document):
        assert text.removeprefix("#/components/schemas/") in schemas, text
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            successes = [code for code in responses if code.startswith("2")]
            assert successes, where
            for code in successes:
                if code != "204":
                    assert all(media["schema"] for media in responses[code]["content"].values()), (
                        where
                    )
            for code, response in responses.items():
                if int(code) >= 400:
                    error = response["content"]["application/json"]["schema"]
                    assert error == {"$ref": "#/components/schemas/Error"}, where
            for parameter in operation["parameters"]:
                if parameter["in"] == "path":
                    assert parameter["schema"] == {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_ID,
                    }, where
                    assert {"400", "404"} <= set(responses), where
            if "security" in operation:
                assert "401" in responses, where
            if method != "get":
                assert "403" in responses, where
            body = operation.get("requestBody", {}).get("content", {})
            if "application/json" in body:
                assert {"400", "415"} <= set(responses), where
    paths = document["paths"]
    for path in ("/api/all-photos", "/api/my-photos"):
        query = {p["name"]: p["schema"] for p in paths[path]["get"]["parameters"]}
        assert query["limit"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
        assert query["event_id"]["type"] == query["cursor"]["type"] == "integer"
    stream = {p["name"]: p for p in paths["/api/my-photos/stream"]["get"]["parameters"]}
    assert stream["event_id"]["schema"]["type"] == "integer"
    assert stream["Last-Event-ID"]["in"] == "header"
    me = paths["/api/me"]["get"]["responses"]["200"]["content"]["application/json"]
    assert me["schema"] == {"$ref": "#/components/schemas/Me"}
    assert schemas["Me"]["properties"]["user"] == {"$ref": "#/components/schemas/User"}
    page = schemas["PhotoPage"]["properties"]
    assert page["items"]["items"] == {"$ref": "#/components/schemas/Photo"}
    assert set(schemas["Photo"]["required"]) >= {"id", "event_id", "image_url", "thumb_url"}
    selfie = paths["/api/me/selfie"]["put"]
    assert {"400", "413", "415", "422", "429"} <= set(selfie["responses"])
    assert "409" in paths["/api/admin/jobs/{job_id}/retry"]["post"]["responses"]
    assert "409" in paths["/api/auth/register"]["post"]["responses"]
    assert "Retry-After" in paths["/api/auth/login"]["post"]["responses"]["429"]["headers"]
    assert "401" not in paths["/healthz"]["get"]["responses"]
    original = paths["/api/photo/{photo_id}"]["get"]["responses"]
    assert set(original["200"]["content"]) == {
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/heic",
    }
    assert "304" in original and "content" not in original["304"]


def _refs(value):
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


async def test_the_same_api_runs_on_sqlite(tmp_path) -> None:
    settings = Settings.from_environ({"FINDME_DATA_DIR": str(tmp_path), "FINDME_RUN_WORKERS": "0"})
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path}/findme.db"
    import asyncio

    await asyncio.to_thread(migrate, settings)
    async with serve(settings) as url, httpx.AsyncClient(base_url=url) as client:
        from findme.db import Database, Role
        from findme.domain.accounts import create_user

        db = Database(settings)
        async with db.transaction() as session:
            await create_user(
                session, email="p@example.com", password=PASSWORD, name="P", role=Role.photographer
            )
        await db.aclose()
        login = await client.post(
            "/api/auth/login", json={"email": "p@example.com", "password": PASSWORD}
        )
        client.headers["x-csrf-token"] = login.json()["csrf_token"]
        event = (await client.post("/api/events", json={"name": "Lite"})).json()
        out = io.BytesIO()
        Image.new("RGB", (300, 200), "red").save(out, "JPEG")
        files = [("files", ("a.jpg", out.getvalue())), ("files", ("b.jpg", out.getvalue()))]
        results = (
            await client.post(f"/api/photographer/events/{event['id']}/upload-photos", files=files)
        ).json()["results"]
        assert [r["status"] for r in results] == ["created", "duplicate"]
        listed = (await client.get("/api/all-photos")).json()["items"]
        assert len(listed) == 1
        image = await client.get(listed[0]["image_url"])
        assert image.content == out.getvalue()
        assert (await client.get("/readyz")).status_code == 200
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


async def test_metrics_expose_latency_queue_and_caches(make_user, make_event) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    await organiser.get(f"/api/events/{event['id']}")
    await organiser.get("/api/photo/12345")
    admin = await make_user("admin")
    response = await admin.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    series = 'method="GET",route="/api/events/{event_id}",status="200"'
    assert f"findme_http_request_duration_seconds_count{{{series}}} 1.0" in text
    assert 'route="/api/photo/{photo_id}",status="404"' in text
    assert "findme_queue_depth 0.0" in text
    assert 'findme_cache_hit_ratio{cache="my_photos"}' in text
    assert "findme_faces_stored 0.0" in text


async def test_every_request_is_logged_with_its_route_and_timing(anon, caplog) -> None:
    caplog.set_level("INFO", logger="findme.access")
    await anon.get("/healthz")
    await anon.get("/api/photo/7")
    lines = [record for record in caplog.records if record.name == "findme.access"]
    assert [(r.route, r.status) for r in lines] == [
        ("/healthz", 200),
        ("/api/photo/{photo_id}", 401),
    ]
    assert all(r.duration_ms >= 0 for r in lines)


async def test_readiness_names_the_detector_chosen(settings) -> None:
    async with serve(replace(settings, detector="hog")) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            ready = (await client.get("/readyz")).json()
    assert ready == {"status": "ready", "engine": "local", "detector": "hog"}
