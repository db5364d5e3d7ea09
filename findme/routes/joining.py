"""How a guest gets in from the event's link: joining as a newcomer in one form, and signing
in by a link sent by email where the organiser allows it."""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme.api_schemas import Body, Reply, ref
from findme.auth import check_origin
from findme.domain.accounts import normalise_email
from findme.domain.events import event_by_code, role_of
from findme.domain.newcomers import join_as_newcomer
from findme.domain.passwords import EmailNotConfigured
from findme.domain.sign_in_links import finish_sign_in, link_sent, start_sign_in
from findme.domain.views import event_json, job_link, user_json
from findme.errors import BadRequest
from findme.routes.common import (
    api,
    app_state,
    client_ip,
    current_principal,
    json_response,
    read_json,
    received_selfie,
    site_url,
    text_field,
)


@api(
    "Join an event as a new guest, in one request: a new attendee account with its selfie "
    "(consent required), a member of the event, signed in",
    auth="anyone signed out",
    body=Body(ref("NewcomerJoin"), media_type="multipart/form-data"),
    responses={
        201: Reply(
            "the account, signed in (the session cookie is set), the event, and the job "
            "matching the selfie with its photos",
            ref("NewcomerJoined"),
        ),
        400: "a field is missing or not valid, no consent (consent_required), or this browser "
        "is signed in already",
        403: "the event is closed to newcomers (joining_closed) or its code has expired "
        "(code_expired)",
        404: "no event has this code",
        409: "an account with this email already exists: sign in to join",
        413: "the selfie is too large",
        415: "the selfie is not a supported image type",
        422: "no_face or several_faces in the selfie",
        429: "too many new accounts from this address; see Retry-After",
    },
)
async def join_as_new_guest(request: Request) -> Response:
    state = app_state(request)
    check_origin(request)
    if await current_principal(request) is not None:
        raise BadRequest(
            "You are signed in already: join with your account (POST /api/events/join), or sign "
            "out first to make a new one."
        )
    fields: dict[str, str] = {}
    selfie = await received_selfie(request, limit=("signup_ip", client_ip(request)), fields=fields)
    newcomer = await join_as_newcomer(
        state,
        code=text_field(fields, "code", max_chars=32),
        name=text_field(fields, "name", max_chars=120),
        email=normalise_email(text_field(fields, "email", max_chars=254)),
        password=fields.get("password", ""),
        selfie=selfie,
    )
    response = json_response(
        {
            "user": user_json(newcomer.user),
            "event": event_json(newcomer.event, role=role_of(newcomer.event, newcomer.user.id)),
            "job": None if newcomer.job is None else job_link(newcomer.job),
            "csrf_token": newcomer.browser.csrf_token,
        },
        201,
    )
    state.auth.set_cookie(response, newcomer.browser, secure=request.url.scheme == "https")
    return response


@api(
    "Ask for a one-time sign-in link by email, for a guest of an event that allows it (never "
    "says whether the email has an account: the email does)",
    auth="anyone",
    body=Body(ref("SignInLinkRequest")),
    responses={
        202: Reply("the same answer whether or not the email has an account", ref("Detail")),
        400: "not an email address, or no code",
        403: "the event's organiser has not turned on sign-in by email (email_sign_in_off)",
        404: "no event has this code",
        429: "too many requests from this address or for this email; see Retry-After",
        503: "the event allows it, but email is no longer configured on this server",
    },
)
async def request_sign_in_link(request: Request) -> Response:
    state = app_state(request)
    check_origin(request)
    body = await read_json(request)
    email = normalise_email(text_field(body, "email", max_chars=254))
    code = text_field(body, "code", max_chars=32)
    await state.limits.hit("reset_ip", client_ip(request))
    # Counted for unknown emails too, so the limit says nothing about which exist.
    await state.limits.hit("reset_email", email)
    async with state.db.transaction() as session:
        event = await event_by_code(session, code)
        # An event cannot turn it on without email; email may have been turned off since.
        if event.email_sign_in and not state.mailer.configured:
            raise EmailNotConfigured(
                "Email is not configured on this FindMe server any more, so no sign-in link can "
                "be sent. Sign in with your password."
            )
        mail = await start_sign_in(session, site=site_url(request), email=email, event=event)
    response = json_response({"detail": link_sent(email)}, 202)
    if mail is not None:
        # Sent after the answer: a mail server's delay must not tell who has an account.
        response.background = BackgroundTask(state.mailer.send_quietly, mail)
    return response


@api(
    "Sign in with an emailed link's token (it works once); this browser is signed in",
    auth="anyone",
    body=Body(ref("SignInLinkConfirmation")),
    responses={
        200: Reply(
            "signed in; next: the event's photos for a member, its join page otherwise",
            ref("SignedInByLink"),
        ),
        400: "the link is unknown, used or expired",
        403: "the event's organiser has turned sign-in by email off since (email_sign_in_off)",
    },
)
async def confirm_sign_in_link(request: Request) -> Response:
    state = app_state(request)
    check_origin(request)
    token = text_field(await read_json(request), "token", max_chars=200)
    async with state.db.transaction() as session:
        user, target = await finish_sign_in(session, token=token)
        browser = await state.auth.start_session(session, user)
    response = json_response(
        {"user": user_json(user), "csrf_token": browser.csrf_token, "next": target}
    )
    state.auth.set_cookie(response, browser, secure=request.url.scheme == "https")
    return response


routes = [
    Route("/api/events/join/new-guest", join_as_new_guest, methods=["POST"]),
    Route("/api/auth/sign-in-link", request_sign_in_link, methods=["POST"]),
    Route("/api/auth/sign-in-link/confirm", confirm_sign_in_link, methods=["POST"]),
]
