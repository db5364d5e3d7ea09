"""Events: create, join by code, list mine, counts, progress, delete."""

from __future__ import annotations


async def test_create_join_list_and_delete(make_user, make_event) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser, "Wedding of A & B")
    assert len(event["code"]) == 8 and event["code"].isalnum()
    assert event["join_path"] == f"/join/{event['code']}"
    attendee = await make_user()
    code = f" {event['code'][:4].lower()}-{event['code'][4:]} "
    joined = await attendee.post("/api/events/join", json={"code": code})
    assert joined.status_code == 200
    assert joined.json()["event"]["id"] == event["id"]
    # Joining twice is harmless.
    assert (
        await attendee.post("/api/events/join", json={"code": event["code"]})
    ).status_code == 200
    mine = (await attendee.get("/api/events")).json()["items"]
    assert [(e["id"], e["my_role"]) for e in mine] == [(event["id"], "member")]
    theirs = (await organiser.get("/api/events")).json()["items"]
    assert [(e["id"], e["my_role"]) for e in theirs] == [(event["id"], "organiser")]
    shown = (await attendee.get(f"/api/events/{event['id']}")).json()
    assert shown["counts"] == {"photos": 0, "members": 1}
    progress = (await attendee.get(f"/api/events/{event['id']}/progress")).json()
    assert progress == {
        "photos": 0,
        "queued": 0,
        "running": 0,
        "done": 0,
        "failed": 0,
        "faces": 0,
        "matches": 0,
        "matching": {"queued": 0, "running": 0, "done": 0, "failed": 0},
    }
    assert (await attendee.delete(f"/api/events/{event['id']}")).status_code == 403
    assert (await organiser.delete(f"/api/events/{event['id']}")).status_code == 204
    assert (await attendee.get("/api/events")).json()["items"] == []


async def test_join_with_unknown_or_bad_code(make_user) -> None:
    attendee = await make_user()
    unknown = await attendee.post("/api/events/join", json={"code": "ZZZZZZZZ"})
    assert unknown.status_code == 404
    assert "code" in unknown.json()["detail"]
    for body in ({}, {"code": 12}, {"code": "x" * 100}):
        assert (await attendee.post("/api/events/join", json=body)).status_code == 400


async def test_event_input_is_checked(make_user) -> None:
    organiser = await make_user("photographer")
    for body in ({}, {"name": ""}, {"name": "ok", "date": "30/06/2026"}, {"name": "ok", "date": 5}):
        response = await organiser.post("/api/events", json=body)
        assert response.status_code == 400
        assert response.json()["detail"]
    assert (await organiser.get("/api/events/77777")).status_code == 404
    assert (await organiser.delete("/api/events/77777")).status_code == 404
