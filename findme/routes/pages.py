"""The HTML pages: server-rendered shells whose small scripts call the JSON API."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from findme.auth import Principal
from findme.db import EventMember, Role, User
from findme.domain import events as event_domain
from findme.domain import notifications, oversight
from findme.domain.access import event_for, sees_every_photo
from findme.domain.accounts import MAX_SELFIES, consent_text, list_selfies
from findme.domain.photos import latest_match_id
from findme.errors import Forbidden, NotFound
from findme.routes.common import (
    app_state,
    current_principal,
    parse_id,
    path_id,
    require_user,
    safe_next,
)

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


# An admin's home page lists this many of the newest events; the admin page pages through all.
ADMIN_HOME_EVENTS = 50


async def _events_of(session: AsyncSession, principal: Principal) -> list[dict[str, Any]]:
    rows = await event_domain.events_of(session, principal.id)
    return [
        {"event": row, "organiser": row.organiser_id == principal.id, "date": _date(row.date)}
        for row in rows
    ]


async def _every_event(session: AsyncSession, principal: Principal) -> list[dict[str, Any]]:
    """An admin's home page: the newest events of everyone, each with its organiser."""
    rows = await oversight.all_events(session, before=None, limit=ADMIN_HOME_EVENTS + 1)
    return [
        {
            "event": row,
            "organiser": row["organiser_id"] == principal.id,
            "organiser_name": row["organiser"]["name"],
            "date": _date(dt.date.fromisoformat(row["date"])) if row["date"] else "",
        }
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
        if principal.is_admin:
            events = await _every_event(session, principal)
        else:
            events = await _events_of(session, principal)
    return render(
        request,
        "home.html",
        principal,
        title="Every event" if principal.is_admin else "Your events",
        events=events[:ADMIN_HOME_EVENTS],
        more_events=len(events) > ADMIN_HOME_EVENTS,
        can_create=principal.is_admin or principal.user.role == Role.photographer,
        has_selfie=principal.user.selfie_updated_at is not None,
        event_deleted=request.query_params.get("deleted") == "1",
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


async def forgot_password(request: Request) -> Response:
    principal = await current_principal(request)
    return render(request, "forgot_password.html", principal, title="Reset your password")


async def reset_password(request: Request) -> Response:
    # The token is checked when the form is sent: a page that said "valid" here could be wrong
    # a minute later, and a GET must not spend it (mail scanners open links).
    principal = await current_principal(request)
    return render(
        request,
        "reset_password.html",
        principal,
        title="Choose a new password",
        token=request.path_params["token"],
    )


async def confirm_signup(request: Request) -> Response:
    # Like the reset link: a GET must not spend the token (mail scanners open links), so the
    # page's button sends it.
    principal = await current_principal(request)
    return render(
        request,
        "confirm_signup.html",
        principal,
        title="Finish creating your account",
        token=request.path_params["token"],
    )


async def unsubscribe(request: Request) -> Response:
    # Like the reset link: mail scanners open links, so the GET only reads the link (a forged
    # one is a 400 here already) and the page's button turns the emails off.
    principal = await current_principal(request)
    token = request.path_params["token"]
    event_id, event_name = await notifications.event_of_token(app_state(request), token)
    return render(
        request,
        "unsubscribe.html",
        principal,
        title="Stop new-photo emails",
        token=token,
        event_id=event_id,
        event_name=event_name,
    )


async def selfie(request: Request) -> Response:
    principal = await require_user(request)
    user = principal.user
    async with app_state(request).db.sessions() as session:
        selfies = await list_selfies(session, user.id)
    return render(
        request,
        "selfie.html",
        principal,
        title="Your selfie",
        next=safe_next(request.query_params.get("next"), default=""),
        consent=consent_text(app_state(request).settings),
        selfies=selfies,
        max_selfies=MAX_SELFIES,
        selfie_date=_date(user.selfie_updated_at.date()) if user.selfie_updated_at else "",
    )


async def join_form(request: Request) -> Response:
    typed = request.query_params.get("code", "")
    code = event_domain.normalise_code(typed)
    if code.isalnum():
        return RedirectResponse(f"/join/{quote(code)}", status_code=303)
    detail = (
        "Type the event code: it is printed under the event's QR code."
        if not code
        else "An event code has only letters and digits, like ABCD2345. Check it and try again."
    )
    return await _code_page(request, typed=typed, detail=detail, status_code=400)


async def _code_page(request: Request, *, typed: str, detail: str, status_code: int) -> Response:
    """The code as typed, what is wrong with it, and a field to type it again."""
    return render(
        request,
        "join_code.html",
        await current_principal(request),
        status_code=status_code,
        title="Check the event code",
        typed=typed[:32],
        detail=detail,
    )


async def join(request: Request) -> Response:
    """The event's link: one form for a newcomer (name, email, selfie, consent), the selfie
    alone for a signed-in guest without one, one button for the others."""
    principal = await current_principal(request)
    state = app_state(request)
    code = str(request.path_params["code"])
    async with state.db.sessions() as session:
        try:
            event = await event_domain.event_by_code(session, code)
        except NotFound as error:
            return await _code_page(request, typed=code, detail=error.detail, status_code=404)
        member = (
            None if principal is None else await session.get(EventMember, (event.id, principal.id))
        )
    organiser = principal is not None and event.organiser_id == principal.id
    joined = member is not None or organiser
    # A closed event or an expired code: the sentence, instead of a button that cannot work.
    refusal = None if joined else event_domain.joining_refusal(event)
    return render(
        request,
        "join.html",
        principal,
        status_code=200 if refusal is None else refusal.status_code,
        title=f"Join {event.name}",
        event=event,
        date=_date(event.date),
        joined=joined,
        refusal=refusal,
        organiser=organiser,
        has_selfie=principal is not None and principal.user.selfie_updated_at is not None,
        consent=consent_text(state.settings),
        # Without email, a password is the only way back in; with it, a link can be.
        password_optional=state.mailer.configured,
        email_sign_in=event.email_sign_in and state.mailer.configured,
    )


async def sign_in_link(request: Request) -> Response:
    # Like the reset link: a GET must not spend the token (mail scanners open links), so the
    # page's button sends it.
    return render(
        request,
        "sign_in_link.html",
        await current_principal(request),
        title="Sign in to FindMe",
        token=request.path_params["token"],
    )


async def _photo_page(request: Request, principal: Principal) -> dict[str, Any] | Response:
    """What my-photos and the gallery share: the chosen event (or all) and the event list."""
    state = app_state(request)
    raw = request.query_params.get("event_id", "")
    async with state.db.sessions() as session:
        events = await _events_of(session, principal)
        if raw:
            event_id = parse_id(raw)
            if event_id is None:
                raise NotFound("There is no event with this id.")
            event, role = await event_for(state, session, principal, event_id)
        elif len(events) == 1:
            return RedirectResponse(
                f"{request.url.path}?event_id={events[0]['event'].id}", status_code=303
            )
        else:
            event, role = None, ""
        after = await latest_match_id(
            session, user_id=principal.id, event_id=event.id if event is not None else None
        )
    # Whether the gallery holds every photo of the event (of every event listed), or only some:
    # the pages and their links say which, and never promise photos the API will not show.
    if event is not None:
        sees_all = sees_every_photo(event, role)
        shares_some = sees_all
    else:
        seen = [
            principal.is_admin or sees_every_photo(item["event"], _role(item)) for item in events
        ]
        sees_all, shares_some = all(seen), any(seen)
    return {
        "event": event,
        "role": role,
        "sees_all": sees_all,
        "shares_some": shares_some,
        "date": _date(event.date) if event is not None else "",
        "events": events,
        "after": after,
        "has_selfie": principal.user.selfie_updated_at is not None,
    }


def _role(item: dict[str, Any]) -> str:
    return "organiser" if item["organiser"] else "member"


async def my_photos(request: Request) -> Response:
    principal = await require_user(request)
    found = await _photo_page(request, principal)
    if isinstance(found, Response):
        return found
    state = app_state(request)
    member = None
    if found["event"] is not None:
        # The new-photo email switch is a member's: organisers get no matches to hear of.
        async with state.db.sessions() as session:
            member = await session.get(EventMember, (found["event"].id, principal.id))
    return render(
        request,
        "my_photos.html",
        principal,
        title="My photos",
        max_selfies=MAX_SELFIES,
        member=member,
        notify_available=notifications.available(state.mailer, state.settings),
        **found,
    )


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
        figures = await event_domain.progress(session, event.id)
        members = (await event_domain.counts(session, event.id))["members"]
        photos = await oversight.photo_counts(session, event.id)
        organiser = await session.get(User, event.organiser_id)
    return render(
        request,
        "event.html",
        principal,
        title=event.name,
        event=event,
        date=_date(event.date),
        role=role,
        manage=role in {"organiser", "admin"},
        sees_all=sees_every_photo(event, role),
        organiser_name=organiser.name if organiser is not None else "",
        join_url=event_domain.join_url(str(request.base_url), event.code),
        mail_configured=state.mailer.configured,
        progress=figures,
        photos=photos,
        members=members,
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
        has_selfie=user.selfie_updated_at is not None,
        consent_date=_date(user.consent_at.date()) if user.consent_at else "",
        organiser=user.role != Role.attendee,
    )


routes = [
    Route("/", home, methods=["GET"]),
    Route("/login", login, methods=["GET"]),
    Route("/register", register, methods=["GET"]),
    Route("/forgot-password", forgot_password, methods=["GET"]),
    Route("/reset/{token}", reset_password, methods=["GET"]),
    Route("/signup/{token}", confirm_signup, methods=["GET"]),
    Route("/sign-in/{token}", sign_in_link, methods=["GET"]),
    Route("/unsubscribe/{token}", unsubscribe, methods=["GET"]),
    Route("/selfie", selfie, methods=["GET"]),
    Route("/join", join_form, methods=["GET"]),
    Route("/join/{code}", join, methods=["GET"]),
    Route("/my-photos", my_photos, methods=["GET"]),
    Route("/gallery", gallery, methods=["GET"]),
    Route("/events/{event_id}", event_page, methods=["GET"]),
    Route("/admin", admin, methods=["GET"]),
    Route("/account", account, methods=["GET"]),
]
