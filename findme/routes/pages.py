"""The HTML pages: server-rendered shells whose small scripts call the JSON API."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from findme.auth import Principal
from findme.db import Event, EventMember, FaceMatch, Role
from findme.errors import Forbidden, NotFound
from findme.routes.common import app_state, current_principal, path_id, require_user
from findme.routes.events import event_for, progress
from findme.routes.live import join_url
from findme.routes.privacy import consent_text

ROOT = Path(__file__).resolve().parents[2]
templates = Jinja2Templates(directory=ROOT / "templates")

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
ERROR_TITLES = {
    400: "That did not work",
    403: "This page is not for your account",
    404: "Nothing here",
    405: "Not available",
    409: "That clashes with something",
    413: "Too large",
    422: "That could not be done",
    429: "Slow down a little",
    500: "Something went wrong",
    503: "FindMe is not ready",
}


def safe_next(raw: str | None, default: str = "/") -> str:
    """A same-site relative path to go back to after signing in; anything else is refused."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return default
    if any(ord(char) < 32 or ord(char) == 127 for char in raw):
        return default
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return default
    return raw


def login_redirect(request: Request) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(safe_next(here), safe='/')}", status_code=303)


def render(
    request: Request,
    template: str,
    principal: Principal | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    user = principal.user if principal is not None else None
    session = principal.session if principal is not None else None
    return templates.TemplateResponse(
        request,
        template,
        {
            "me": user,
            "is_admin": principal is not None and principal.is_admin,
            "csrf_token": session.csrf_token if session is not None else "",
            "here": request.url.path,
            **context,
        },
        status_code=status_code,
        headers=PAGE_HEADERS,
    )


async def error_page(request: Request, *, status_code: int, detail: str) -> Response:
    """The HTML face of an error, for browsers; 401 sends them to sign in and back."""
    if status_code == 401:
        return login_redirect(request)
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:
        try:
            principal = await current_principal(request)
        except Exception:  # the error page must not fail in turn
            principal = None
    return render(
        request,
        "error.html",
        principal,
        status_code=status_code,
        title=ERROR_TITLES.get(status_code, "That did not work"),
        status=status_code,
        detail=detail,
    )


async def _events_of(session: AsyncSession, principal: Principal) -> list[dict[str, Any]]:
    member_of = select(EventMember.event_id).where(EventMember.user_id == principal.id)
    rows = await session.scalars(
        select(Event)
        .where(or_(Event.organiser_id == principal.id, Event.id.in_(member_of)))
        .order_by(Event.id.desc())
    )
    return [
        {"event": row, "organiser": row.organiser_id == principal.id, "date": _date(row.date)}
        for row in rows
    ]


def _date(value: dt.date | None) -> str:
    return value.strftime("%-d %B %Y") if value is not None else ""


async def home(request: Request) -> Response:
    principal = await current_principal(request)
    if principal is None:
        return render(
            request,
            "home.html",
            None,
            title="Find your event photos",
            erased=request.query_params.get("erased") == "1",
        )
    async with app_state(request).db.sessions() as session:
        events = await _events_of(session, principal)
    return render(
        request,
        "home.html",
        principal,
        title="Your events",
        events=events,
        can_create=principal.is_admin or principal.user.role == Role.photographer,
        has_selfie=principal.user.selfie_descriptor is not None,
    )


async def login(request: Request) -> Response:
    target = safe_next(request.query_params.get("next"))
    principal = await current_principal(request)
    if principal is not None:
        return RedirectResponse(target, status_code=303)
    return render(request, "login.html", None, title="Sign in", next=target)


async def register(request: Request) -> Response:
    target = safe_next(request.query_params.get("next"))
    principal = await current_principal(request)
    if principal is not None:
        return RedirectResponse(target, status_code=303)
    return render(request, "register.html", None, title="Create your account", next=target)


async def selfie(request: Request) -> Response:
    principal = await require_user(request)
    user = principal.user
    return render(
        request,
        "selfie.html",
        principal,
        title="Your selfie",
        next=safe_next(request.query_params.get("next"), default=""),
        consent=consent_text(app_state(request).settings),
        has_selfie=user.selfie_descriptor is not None,
        selfie_date=_date(user.selfie_updated_at.date()) if user.selfie_updated_at else "",
    )


async def join_form(request: Request) -> Response:
    code = request.query_params.get("code", "").upper().replace(" ", "").replace("-", "")
    if not code.isalnum():
        return RedirectResponse("/", status_code=303)
    return RedirectResponse(f"/join/{quote(code)}", status_code=303)


async def join(request: Request) -> Response:
    principal = await require_user(request)
    code = str(request.path_params["code"]).upper().replace("-", "")
    async with app_state(request).db.sessions() as session:
        event = await session.scalar(select(Event).where(Event.code == code))
        if event is None:
            raise NotFound("No event has this code. Check the code on the poster or QR link.")
        member = await session.get(EventMember, (event.id, principal.id))
    return render(
        request,
        "join.html",
        principal,
        title=f"Join {event.name}",
        event=event,
        date=_date(event.date),
        joined=member is not None or event.organiser_id == principal.id,
        organiser=event.organiser_id == principal.id,
        has_selfie=principal.user.selfie_descriptor is not None,
    )


async def _photo_page(request: Request, principal: Principal) -> dict[str, Any] | Response:
    """What my-photos and the gallery share: the chosen event (or all) and the event list."""
    state = app_state(request)
    raw = request.query_params.get("event_id", "")
    async with state.db.sessions() as session:
        events = await _events_of(session, principal)
        if raw:
            if not raw.isdigit():
                raise NotFound("There is no event with this id.")
            event, role = await event_for(state, session, principal, int(raw))
        elif len(events) == 1:
            return RedirectResponse(
                f"{request.url.path}?event_id={events[0]['event'].id}", status_code=303
            )
        else:
            event, role = None, ""
        after = await session.scalar(
            select(func.max(FaceMatch.id)).where(
                FaceMatch.user_id == principal.id,
                *([FaceMatch.event_id == event.id] if event is not None else []),
            )
        )
    return {
        "event": event,
        "role": role,
        "date": _date(event.date) if event is not None else "",
        "events": events,
        "after": after or 0,
        "has_selfie": principal.user.selfie_descriptor is not None,
    }


async def my_photos(request: Request) -> Response:
    principal = await require_user(request)
    found = await _photo_page(request, principal)
    if isinstance(found, Response):
        return found
    return render(request, "my_photos.html", principal, title="My photos", **found)


async def gallery(request: Request) -> Response:
    principal = await require_user(request)
    found = await _photo_page(request, principal)
    if isinstance(found, Response):
        return found
    return render(request, "gallery.html", principal, title="Gallery", **found)


async def event_page(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        event, role = await event_for(state, session, principal, path_id(request, "event_id"))
        figures = await progress(session, event.id)
        members = await session.scalar(select(func.count()).where(EventMember.event_id == event.id))
    return render(
        request,
        "event.html",
        principal,
        title=event.name,
        event=event,
        date=_date(event.date),
        manage=role in {"organiser", "admin"},
        join_url=join_url(request, event.code),
        progress=figures,
        members=members or 0,
    )


async def admin(request: Request) -> Response:
    principal = await require_user(request)
    if not principal.is_admin:
        raise Forbidden(
            f"The admin page is for FindMe admins; you are signed in as {principal.user.email} "
            f"({principal.user.role.value}). Ask an admin, or sign in with an admin account."
        )
    return render(request, "admin.html", principal, title="Admin")


async def account(request: Request) -> Response:
    principal = await require_user(request)
    user = principal.user
    return render(
        request,
        "account.html",
        principal,
        title="Your account",
        has_selfie=user.selfie_descriptor is not None,
        consent_date=_date(user.consent_at.date()) if user.consent_at else "",
        organiser=user.role != Role.attendee,
    )


routes = [
    Route("/", home, methods=["GET"]),
    Route("/login", login, methods=["GET"]),
    Route("/register", register, methods=["GET"]),
    Route("/selfie", selfie, methods=["GET"]),
    Route("/join", join_form, methods=["GET"]),
    Route("/join/{code}", join, methods=["GET"]),
    Route("/my-photos", my_photos, methods=["GET"]),
    Route("/gallery", gallery, methods=["GET"]),
    Route("/events/{event_id}", event_page, methods=["GET"]),
    Route("/admin", admin, methods=["GET"]),
    Route("/account", account, methods=["GET"]),
]
