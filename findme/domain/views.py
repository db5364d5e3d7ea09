"""What the API shows of each thing: the JSON shapes of accounts, events, photos and jobs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from findme.db import Event, Job, PhotoStatus, User


def iso(value: dt.datetime | dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role.value,
        "created_at": iso(user.created_at),
    }


def event_json(event: Event, *, role: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event.id,
        "name": event.name,
        "code": event.code,
        "date": iso(event.date),
        "organiser_id": event.organiser_id,
        "created_at": iso(event.created_at),
        "join_path": f"/join/{event.code}",
        "gallery": event.gallery.value,
        "my_role": role,
    }
    # How the event admits newcomers is for those who manage it: a member is in already.
    if role in {"organiser", "admin"}:
        body["joining"] = event.joining.value
        body["code_expires_at"] = iso(event.code_expires_at)
        body["email_sign_in"] = event.email_sign_in
    return body


# Photos whose job has not made their thumbnail yet.
_THUMBNAIL_PENDING = frozenset({PhotoStatus.queued, PhotoStatus.processing})


def photo_json(photo: Any) -> dict[str, Any]:
    """A list item from a Photo or a row of `findme.domain.photos.PHOTO_COLUMNS`."""
    # Until the job has made the thumbnail its address answers a placeholder, and browsers
    # keep an image per address for the page's life: a distinct address while pending makes a
    # page that lists the photo again once processed fetch the real thumbnail.
    pending = "?pending" if photo.status in _THUMBNAIL_PENDING else ""
    return {
        "id": photo.id,
        "event_id": photo.event_id,
        "filename": photo.filename,
        "width": photo.width,
        "height": photo.height,
        "status": photo.status.value,
        "uploaded_at": iso(photo.uploaded_at),
        "image_url": f"/api/photo/{photo.id}",
        "thumb_url": f"/api/photo/{photo.id}/thumb{pending}",
    }


def job_json(job: Job, *, history: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind.value,
        "status": job.status.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "error": job.error,
        "photo_id": job.photo_id,
        "event_id": job.event_id,
        "user_id": job.user_id,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "run_after": iso(job.run_after),
    }
    if history:
        body["error_history"] = job.error_history
        body["locked_by"] = job.locked_by
    return body


def job_link(job: Job) -> dict[str, Any]:
    """A job as a script follows it: poll `status_url` until the status is done or failed."""
    return {"id": job.id, "status": job.status.value, "status_url": f"/api/jobs/{job.id}"}
