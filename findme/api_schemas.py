"""The API's shapes as JSON Schema components, declared once and referred to by the routes.

Each shape mirrors the function that makes it (`findme.domain.views`, the routes' own replies);
tests/test_contract.py checks real answers against them. Objects stay open to new fields: the
contract lets the API grow, so clients must ignore properties they do not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from findme.db import Gallery, JobKind, JobStatus, Joining, PhotoStatus, Role
from findme.domain.accounts import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS

Schema = dict[str, Any]

# Every id column is a 32-bit integer (ids start at 1).
MAX_ID = 2**31 - 1
ID: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
COUNT: Schema = {"type": "integer", "minimum": 0}
TEXT: Schema = {"type": "string"}
WHEN: Schema = {"type": "string", "format": "date-time"}
URL_PATH: Schema = {"type": "string", "pattern": "^/"}
BINARY: Schema = {"type": "string", "format": "binary"}


def nullable(schema: Schema) -> Schema:
    """The schema, or null (OpenAPI 3.1 spells it as a second type)."""
    return {**schema, "type": [schema["type"], "null"]}


def enum(values: Any) -> Schema:
    return {"type": "string", "enum": [str(value) for value in values]}


def ref(name: str) -> Schema:
    """A reference to a component; an undeclared name fails at once, not in a client."""
    if name not in COMPONENTS:
        raise KeyError(f"no schema component named {name!r}")
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: Mapping[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    """An object whose properties are all present unless named `optional`."""
    return {
        "type": "object",
        "properties": dict(properties),
        "required": [name for name in properties if name not in optional],
    }


def list_of(item: Schema, key: str = "items") -> Schema:
    return obj({key: {"type": "array", "items": item}})


def _text(*, min_chars: int = 1, max_chars: int) -> Schema:
    # Fields are stripped and must hold something other than spaces; control characters and
    # NUL are refused.
    return {"type": "string", "minLength": min_chars, "maxLength": max_chars, "pattern": r"\S"}


@dataclass(frozen=True)
class Body:
    """A request body: its JSON Schema and media type."""

    schema: Schema
    media_type: str = "application/json"


@dataclass(frozen=True)
class Reply:
    """A successful answer: what it means, its body's schema (None: no body), media type (or
    the media types it may have) and the headers it always carries (name: meaning)."""

    description: str
    schema: Schema | None = None
    media_type: str | tuple[str, ...] = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Param:
    """A query or header parameter: what it means and the schema of its value."""

    description: str
    schema: Schema
    where: str = "query"


_USER = obj(
    {
        "id": ID,
        "email": TEXT,
        "name": TEXT,
        "role": enum(Role),
        "created_at": WHEN,
    }
)
_GALLERY: Schema = {
    **enum(Gallery),
    "description": "own: each attendee sees only the photos they are in; all: everyone who "
    "joined sees every photo (the organiser and admins always do)",
}
_JOINING: Schema = {
    **enum(Joining),
    "description": "open: anyone with the code may join (until it expires); closed: nobody new "
    "may join. Members stay members either way",
}
_CODE_EXPIRES_AT: Schema = {
    **nullable(WHEN),
    "description": "after this time the code admits nobody new (null: never). A time already "
    "past is allowed: the code then admits nobody from now on. A new code has no expiry",
}
_EMAIL_SIGN_IN: Schema = {
    "type": "boolean",
    "description": "whether the event's guests may sign in with a one-time link sent by email "
    "(attendee accounts only; it needs email configured on the server)",
}
# Shown to the event's organiser and admins only.
_MANAGED = ("joining", "code_expires_at", "email_sign_in")
_EVENT = obj(
    {
        "id": ID,
        "name": TEXT,
        "code": TEXT,
        "date": nullable({"type": "string", "format": "date"}),
        "organiser_id": ID,
        "created_at": WHEN,
        "join_path": URL_PATH,
        "gallery": _GALLERY,
        "my_role": enum(["organiser", "member", "admin"]),
        "joining": _JOINING,
        "code_expires_at": _CODE_EXPIRES_AT,
        "email_sign_in": _EMAIL_SIGN_IN,
    },
    optional=_MANAGED,
)
_PHOTO = obj(
    {
        "id": ID,
        "event_id": ID,
        "filename": TEXT,
        "width": COUNT,
        "height": COUNT,
        "status": enum(PhotoStatus),
        "uploaded_at": WHEN,
        "image_url": URL_PATH,
        "thumb_url": URL_PATH,
    }
)
_MY_PHOTO = obj(_PHOTO["properties"] | {"faces": COUNT, "matched_at": WHEN})
_JOB = obj(
    {
        "id": ID,
        "kind": enum(JobKind),
        "status": enum(JobStatus),
        "attempts": COUNT,
        "max_attempts": COUNT,
        "error": nullable(TEXT),
        "photo_id": nullable(ID),
        "event_id": nullable(ID),
        "user_id": nullable(ID),
        "created_at": WHEN,
        "started_at": nullable(WHEN),
        "finished_at": nullable(WHEN),
        "run_after": WHEN,
    }
)
_ATTEMPT = obj({"attempt": COUNT, "at": WHEN, "error": TEXT})
_JOB_LINK = obj({"id": ID, "status": enum(JobStatus), "status_url": URL_PATH})
_NEXT_CURSOR = {
    "type": ["string", "null"],
    "pattern": "^[0-9]+$",
    "description": "pass as `cursor` for the next page; null on the last page",
}
_UPLOAD_RESULT = obj(
    {
        "filename": TEXT,
        "status": enum(["created", "duplicate", "rejected"]),
        "photo_id": nullable(ID),
        "job_id": nullable(ID),
        "error": nullable(TEXT),
        "detail": nullable(TEXT),
    }
)
_TIMING = obj(
    {
        "count": COUNT,
        "avg_s": nullable({"type": "number"}),
        "p50_s": nullable({"type": "number"}),
        "p95_s": nullable({"type": "number"}),
    }
)
_CACHE = obj(
    {
        "size": COUNT,
        "maxsize": COUNT,
        "ttl_s": {"type": "number"},
        "hits": COUNT,
        "misses": COUNT,
        "hit_rate": {"type": "number", "minimum": 0, "maximum": 1},
    }
)
_SELFIE = obj({"id": ID, "created_at": WHEN, "image_url": URL_PATH})
_STATUS_COUNTS = obj({status.value: COUNT for status in JobStatus})

COMPONENTS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "machine-readable code"},
            "detail": {"type": "string", "description": "a sentence for people"},
        },
    },
    "User": _USER,
    "Event": _EVENT,
    "Photo": _PHOTO,
    "MyPhoto": _MY_PHOTO,
    "Job": _JOB,
    "JobLink": _JOB_LINK,
    # Requests
    "Registration": obj(
        {
            "email": {"type": "string", "format": "email", "maxLength": 254},
            "password": {
                "type": "string",
                "minLength": MIN_PASSWORD_CHARS,
                "maxLength": MAX_PASSWORD_CHARS,
            },
            "name": _text(max_chars=120),
            "role": {**enum(Role), "default": "attendee"},
            "next": {
                "type": "string",
                "description": "a path on this site to go to once the emailed link is used "
                "(email configured); anything else goes to /",
            },
        },
        optional=("role", "next"),
    ),
    "SignupConfirmation": obj({"token": _text(max_chars=200)}),
    "Credentials": obj({"email": TEXT, "password": TEXT}),
    "TokenRequest": obj({"name": _text(max_chars=120)}),
    "ResetRequest": obj({"email": {"type": "string", "format": "email", "maxLength": 254}}),
    "ResetConfirmation": obj(
        {
            "token": _text(max_chars=200),
            "password": {
                "type": "string",
                "minLength": MIN_PASSWORD_CHARS,
                "maxLength": MAX_PASSWORD_CHARS,
            },
        }
    ),
    "EventRequest": obj(
        {
            "name": _text(max_chars=200),
            "date": nullable({"type": "string", "format": "date"}),
            "gallery": {**_GALLERY, "default": Gallery.own.value},
        },
        optional=("date", "gallery"),
    ),
    "EventChange": {
        **obj(
            {
                "gallery": _GALLERY,
                "joining": _JOINING,
                "code_expires_at": _CODE_EXPIRES_AT,
                "email_sign_in": _EMAIL_SIGN_IN,
            },
            optional=("gallery", *_MANAGED),
        ),
        "minProperties": 1,
        "description": "the settings to change, at least one; the others stay as they are",
    },
    "JoinRequest": obj({"code": _text(max_chars=32)}),
    "NotificationChange": obj(
        {
            "new_photos": {
                "type": "boolean",
                "description": "email me when new photos of me arrive (at most one an hour)",
            }
        }
    ),
    "UnsubscribeRequest": obj({"token": _text(max_chars=200)}),
    "OneClickUnsubscribe": obj(
        {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}},
    ),
    "SelfieUpload": obj(
        {
            "file": BINARY,
            "consent": {
                "type": "string",
                "enum": ["true", "1", "yes", "on"],
                "description": "the person agrees to the processing of their selfie",
            },
        }
    ),
    "NewcomerJoin": obj(
        {
            "code": _text(max_chars=32),
            "name": _text(max_chars=120),
            "email": {"type": "string", "format": "email", "maxLength": 254},
            "password": {
                "type": "string",
                "maxLength": MAX_PASSWORD_CHARS,
                "description": f"at least {MIN_PASSWORD_CHARS} characters; may be left out "
                "when email is configured (the person signs in again by an emailed link)",
            },
            "file": BINARY,
            "consent": {
                "type": "string",
                "enum": ["true", "1", "yes", "on"],
                "description": "the person agrees to the processing of their selfie",
            },
        },
        optional=("password",),
    ),
    "SignInLinkRequest": obj(
        {
            "email": {"type": "string", "format": "email", "maxLength": 254},
            "code": _text(max_chars=32),
        }
    ),
    "SignInLinkConfirmation": obj({"token": _text(max_chars=200)}),
    "PhotoUpload": obj({"files": {"type": "array", "items": BINARY, "minItems": 1}}),
}

# The answers, which refer to the entities above.
_user, _event, _job_link = ref("User"), ref("Event"), ref("JobLink")
COMPONENTS.update(
    {
        "UserReply": obj({"user": _user}),
        "SignedIn": obj({"user": _user, "csrf_token": TEXT}),
        "SignedUp": obj({"user": _user, "next": URL_PATH}),
        "SignedInByLink": obj({"user": _user, "csrf_token": TEXT, "next": URL_PATH}),
        "Detail": obj({"detail": TEXT}),
        "NotificationSetting": obj(
            {
                "new_photos": {"type": "boolean"},
                "available": {
                    "type": "boolean",
                    "description": "whether this server can send email (false: the setting "
                    "cannot be turned on)",
                },
            }
        ),
        "Me": obj(
            {
                "user": _user,
                "has_selfie": {"type": "boolean"},
                "consent_at": nullable(WHEN),
                "csrf_token": nullable(TEXT),
            }
        ),
        "MyStatus": obj(
            {
                "pending": COUNT,
                "events": {
                    "type": "array",
                    "items": obj(
                        {
                            "event_id": ID,
                            "event_name": TEXT,
                            "matching": enum(["none", *JobStatus]),
                            "job": {"oneOf": [_job_link, {"type": "null"}]},
                            "photos_pending": COUNT,
                        }
                    ),
                },
            }
        ),
        "NewToken": obj({"id": ID, "name": TEXT, "token": TEXT}),
        "Tokens": list_of(
            obj(
                {
                    "id": ID,
                    "name": TEXT,
                    "created_at": WHEN,
                    "last_used_at": nullable(WHEN),
                    "revoked_at": nullable(WHEN),
                }
            )
        ),
        "NewShareLink": obj(
            {
                "id": ID,
                "url": {
                    "type": "string",
                    "format": "uri",
                    "description": "the link to give out: anyone who has it sees the photo, "
                    "until it is turned off; shown this once",
                },
                "created_at": WHEN,
            }
        ),
        "ShareLinks": list_of(
            obj(
                {
                    "id": ID,
                    "photo_id": ID,
                    "event_id": ID,
                    "event_name": TEXT,
                    "thumb_url": URL_PATH,
                    "created_at": WHEN,
                    "last_opened_at": nullable(WHEN),
                    "opened_count": COUNT,
                }
            )
        ),
        "Suggestions": list_of(obj({"id": ID, "photo_id": ID, "face_url": URL_PATH})),
        "SuggestionAnswer": obj({"answer": enum(["yes", "no"])}),
        "SuggestionAnswered": obj({"photo": {"oneOf": [ref("MyPhoto"), {"type": "null"}]}}),
        "SelfieSet": obj({"has_selfie": {"const": True}, "consent_at": nullable(WHEN)}),
        "Selfies": list_of(_SELFIE),
        "SelfieAdded": obj(
            {"items": {"type": "array", "items": _SELFIE}, "consent_at": nullable(WHEN)}
        ),
        "Events": list_of(_event),
        "EventDetail": obj(
            _EVENT["properties"] | {"counts": obj({"photos": COUNT, "members": COUNT})},
            optional=_MANAGED,
        ),
        "Joined": obj({"event": _event, "job": {"oneOf": [_job_link, {"type": "null"}]}}),
        "NewcomerJoined": obj(
            {
                "user": _user,
                "event": _event,
                "job": {"oneOf": [_job_link, {"type": "null"}]},
                "csrf_token": TEXT,
            }
        ),
        "Progress": obj(
            {
                "photos": COUNT,
                "queued": COUNT,
                "running": COUNT,
                "done": COUNT,
                "failed": COUNT,
                "faces": COUNT,
                "matches": COUNT,
                "matching": _STATUS_COUNTS,
            }
        ),
        "PhotoPage": obj(
            {"items": {"type": "array", "items": ref("Photo")}, "next_cursor": _NEXT_CURSOR}
        ),
        "MyPhotoPage": obj(
            {"items": {"type": "array", "items": ref("MyPhoto")}, "next_cursor": _NEXT_CURSOR}
        ),
        "UploadResults": list_of(_UPLOAD_RESULT, key="results"),
        "UploadRejected": {
            "allOf": [ref("Error"), list_of(_UPLOAD_RESULT, key="results")],
            "description": "every file was rejected: the first file's error, and each file's",
        },
        "JobDetail": obj(
            _JOB["properties"]
            | {
                "error_history": {"type": "array", "items": _ATTEMPT},
                "locked_by": nullable(TEXT),
            }
        ),
        "Jobs": list_of(ref("Job")),
        "QueueStats": obj(
            {
                "queue": obj(
                    {
                        "total_enqueued": COUNT,
                        "total_processed": COUNT,
                        "total_failed": COUNT,
                        "current_queue_size": COUNT,
                        "running": COUNT,
                        "workers": COUNT,
                        "workers_active": COUNT,
                        "timings": {"type": "object", "additionalProperties": _TIMING},
                        "outcomes_here": {"type": "object", "additionalProperties": COUNT},
                    }
                ),
                "cache": {"type": "object", "additionalProperties": _CACHE},
                # Open live pages (streams) of this process, and how many it accepts.
                "live_pages": obj({"open": COUNT, "capacity": COUNT}),
            }
        ),
        "CachesCleared": obj({"cleared": {"type": "array", "items": TEXT}}),
        "Health": obj({"status": enum(["ok", "ready"])}),
    }
)


@dataclass(frozen=True)
class Operation:
    """What `@api` records of an endpoint for /openapi.json.

    `responses` holds the successful answers and the errors the endpoint itself raises
    (status: meaning); those every endpoint of its kind can give (401 signed out, 400 for a
    malformed id or body, 404 for an unknown id, 403 for a cross-site change, 415 for another
    media type, 429 for reads over the rate limit) are added by `findme.openapi`.
    """

    summary: str
    auth: str
    body: Body | None
    query: Mapping[str, Param]
    responses: Mapping[int, Reply | str]


def integer(*, minimum: int, maximum: int = MAX_ID, default: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "minimum": minimum, "maximum": maximum}
    return schema if default is None else schema | {"default": default}


DOWNLOAD = Param("1: send as an attachment, to save; anything else: to display", TEXT)
