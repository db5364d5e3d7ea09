"""The app as a whole: health, errors, OpenAPI, and the same API on SQLite."""

from __future__ import annotations

import io

import httpx
from PIL import Image

from findme.app import create_app
from findme.cli import migrate
from findme.openapi import api_operations
from findme.settings import Settings
from tests.conftest import PASSWORD, serve


async def test_health_and_unknown_routes(anon) -> None:
    assert (await anon.get("/healthz")).json() == {"status": "ok"}
    assert (await anon.get("/readyz")).json() == {"status": "ready"}
    missing = await anon.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "detail": "There is nothing at this address."}
    wrong_method = await anon.put("/healthz")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"


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


async def test_the_same_api_runs_on_sqlite(tmp_path) -> None:
    settings = Settings.from_environ({"FINDME_DATA_DIR": str(tmp_path), "FINDME_RUN_WORKERS": "0"})
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path}/findme.db"
    import asyncio

    await asyncio.to_thread(migrate, settings)
    async with serve(settings) as url, httpx.AsyncClient(base_url=url) as client:
        from findme.db import Database, Role
        from findme.routes.accounts import create_user

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


async def test_metrics_expose_latency_queue_and_caches(make_user, make_event, anon) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    await organiser.get(f"/api/events/{event['id']}")
    await organiser.get("/api/photo/12345")
    response = await anon.get("/metrics")
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
