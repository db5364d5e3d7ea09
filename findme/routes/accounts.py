"""Sign-up, sign-in, sign-out, API tokens and the account itself."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme.api_schemas import Body, Reply, ref
from findme.auth import check_origin, hash_password, hash_token, new_api_token, verify_password
from findme.db import ApiToken, Role, User, utcnow
from findme.domain.accounts import (
    MAX_PASSWORD_CHARS,
    add_user,
    check_password,
    normalise_email,
)
from findme.domain.events import my_matching
from findme.domain.passwords import (
    EmailNotConfigured,
    finish_reset,
    reset_mail,
    start_reset,
)
from findme.domain.signups import MAX_NEXT_CHARS, finish_signup, signup_sent, start_signup
from findme.domain.views import iso, user_json
from findme.errors import BadRequest, InvalidCredentials, NotFound
from findme.routes.common import (
    api,
    app_state,
    client_ip,
    current_principal,
    json_response,
    path_id,
    read_json,
    require_user,
    safe_next,
    site_url,
    text_field,
)


@api(
    "Create an account (attendee, or any role when an admin asks); with email configured, "
    "anyone but an admin finishes it by an emailed link",
    auth="anyone",
    body=Body(ref("Registration")),
    responses={
        201: Reply("the new account (email is not configured, or an admin asks)", ref("UserReply")),
        202: Reply(
            "email is configured: the same answer whether or not the email has an account; "
            "the email sent to it says what to do next",
            ref("Detail"),
        ),
        400: "only an admin can create photographer or admin accounts",
        409: "an account with this email already exists (only without email configured, or "
        "for admins)",
        429: "too many new accounts from this address; see Retry-After",
    },
)
async def register(request: Request) -> Response:
    state = app_state(request)
    caller = await current_principal(request)
    by_admin = caller is not None and caller.is_admin
    # Every caller counts, signed in or not; only admins are free of it: an admin can already
    # create admins and delete events, so a limit would guard against nothing and would only
    # get in the way of setting up a team of photographers at once.
    if not by_admin:
        await state.limits.hit("signup_ip", client_ip(request))
    body = await read_json(request)
    email = text_field(body, "email", max_chars=254)
    password = check_password(text_field(body, "password", max_chars=MAX_PASSWORD_CHARS))
    name = text_field(body, "name", max_chars=120)
    role_name = body.get("role") or Role.attendee.value
    if role_name not in {role.value for role in Role}:
        raise BadRequest("'role' must be attendee, photographer or admin.")
    role = Role(role_name)
    if role != Role.attendee and not by_admin:
        raise BadRequest(
            "Only an admin can create photographer or admin accounts. Ask your FindMe admin."
        )
    # Hashed before any transaction: a crowd signing up waits for the hashing threads
    # (auth.py) without holding database connections meanwhile.
    password_hash = await hash_password(password)
    # Without email nothing can confirm the address, so the account is made at once, and a
    # known email is said to be one (README, "Sign-up"). An admin is trusted either way.
    if state.mailer.configured and not by_admin:
        return await _sign_up_by_email(
            request, body, email=email, password_hash=password_hash, name=name
        )
    async with state.db.transaction() as session:
        user = await add_user(
            session, email=email, password_hash=password_hash, name=name, role=role
        )
        browser = None if caller is not None else await state.auth.start_session(session, user)
    response = json_response({"user": user_json(user)}, 201)
    if browser is not None:
        state.auth.set_cookie(response, browser, secure=request.url.scheme == "https")
    return response


async def _sign_up_by_email(
    request: Request, body: dict[str, Any], *, email: str, password_hash: str, name: str
) -> Response:
    """The same answer whether or not the email has an account; the email tells which."""
    state = app_state(request)
    email = normalise_email(email)
    raw_next = body.get("next")
    next_path = safe_next(
        raw_next if isinstance(raw_next, str) and len(raw_next) <= MAX_NEXT_CHARS else None
    )
    ttl_s = state.settings.signup_token_ttl_s
    async with state.db.transaction() as session:
        mail = await start_signup(
            session,
            site=site_url(request),
            email=email,
            name=name,
            password_hash=password_hash,
            next_path=next_path,
            ttl_s=ttl_s,
        )
    response = json_response({"detail": signup_sent(email, ttl_s=ttl_s)}, 202)
    # Sent after the answer: a mail server's delay must not tell who has an account.
    response.background = BackgroundTask(state.mailer.send_quietly, mail)
    return response


@api(
    "Finish a sign-up with its emailed link's token: creates the account, signs this browser in",
    auth="anyone",
    body=Body(ref("SignupConfirmation")),
    responses={
        201: Reply(
            "the new account, signed in; next: the path the person was going to",
            ref("SignedUp"),
        ),
        400: "the link is unknown, used or expired, or the email has an account already",
    },
)
async def confirm_signup(request: Request) -> Response:
    state = app_state(request)
    check_origin(request)
    token = text_field(await read_json(request), "token", max_chars=200)
    async with state.db.transaction() as session:
        user, next_path = await finish_signup(session, token=token)
        browser = await state.auth.start_session(session, user)
    response = json_response({"user": user_json(user), "next": next_path}, 201)
    state.auth.set_cookie(response, browser, secure=request.url.scheme == "https")
    return response


@api(
    "Sign in; sets the session cookie",
    auth="anyone",
    body=Body(ref("Credentials")),
    responses={
        200: Reply("signed in: send csrf_token as x-csrf-token with changes", ref("SignedIn")),
        401: "wrong email or password",
        429: "too many attempts from this address or on this account; see Retry-After",
    },
)
async def login(request: Request) -> Response:
    state = app_state(request)
    check_origin(request)
    body = await read_json(request)
    email = str(body.get("email") or "").strip().lower()[:254]
    password = str(body.get("password") or "")[:MAX_PASSWORD_CHARS]
    address = client_ip(request)
    # One attempt per address at a time: each failure is counted before the next attempt is
    # checked, so parallel requests cannot slip past the limits together.
    async with state.limits.one_at_a_time(f"login:{address}"):
        counters = await _login_counters(request, email=email, address=address)
        for name, identifiers in counters:
            await state.limits.check(name, *identifiers)
        async with state.db.sessions() as session:
            user = await session.scalar(select(User).where(User.email == email))
        # The hash is checked even for unknown emails, so timing does not reveal which exist;
        # outside a transaction, so sign-ins waiting for the hashing threads hold no connection.
        valid = await verify_password(user.password_hash if user else None, password)
        browser = None
        if valid and user is not None:
            async with state.db.transaction() as session:
                browser = await state.auth.start_session(session, user)
        if browser is None or user is None:
            for name, identifiers in counters:
                await state.limits.record(name, *identifiers)
            raise InvalidCredentials()
        # The right password: this account's failures from here are forgotten.
        name, identifiers = counters[0]
        await state.limits.clear(name, *identifiers)
    response = json_response({"user": user_json(user), "csrf_token": browser.csrf_token})
    state.auth.set_cookie(response, browser, secure=request.url.scheme == "https")
    return response


async def _login_counters(
    request: Request, *, email: str, address: str
) -> list[tuple[str, tuple[str, ...]]]:
    """The failure counters a sign-in is judged by, the account's own first.

    Failures are counted per account and address, and per address; never per account alone,
    or anyone could lock anyone out by failing on purpose. A browser that already holds a
    session of this account is judged by its own failures only, so an attacker sharing its
    address (a venue's wifi) cannot lock it out either.
    """
    holder = await app_state(request).auth.browser_principal(request)
    if holder is not None and holder.session is not None and holder.user.email == email:
        return [("login_account", (email, f"session:{holder.session.id}"))]
    return [("login_account", (email, address)), ("login_ip", (address,))]


@api(
    "Sign out: ends this browser session everywhere",
    auth="anyone (a session ends; a token stays valid)",
    responses={204: "signed out", 401: "an unknown or revoked bearer token"},
)
async def logout(request: Request) -> Response:
    state = app_state(request)
    principal = await current_principal(request)
    if principal is not None and principal.session is not None:
        await state.auth.end_session(principal.session)
        await state.on_accounts_changed({principal.id})
    response = Response(status_code=204)
    state.auth.clear_cookie(response)
    return response


RESET_SENT = (
    "If an account exists for this email, we sent it a link to choose a new password. "
    "Check your inbox (and spam folder); the link works once."
)
RESET_LOGGED = (
    "Email is not configured on this FindMe server (development mode): if an account exists "
    "for this email, its reset link was written to the server's log."
)


@api(
    "Ask for a password-reset link by email (never says whether the account exists)",
    auth="anyone",
    body=Body(ref("ResetRequest")),
    responses={
        202: Reply("the same answer whether or not the account exists", ref("Detail")),
        400: "not an email address",
        429: "too many requests from this address or for this email; see Retry-After",
        503: "email is not configured on this server",
    },
)
async def request_password_reset(request: Request) -> Response:
    state = app_state(request)
    check_origin(request)
    email = normalise_email(text_field(await read_json(request), "email", max_chars=254))
    await state.limits.hit("reset_ip", client_ip(request))
    # Counted for unknown emails too, so the limit says nothing about which exist.
    await state.limits.hit("reset_email", email)
    if not state.mailer.configured and not state.settings.development:
        raise EmailNotConfigured()
    ttl_s = state.settings.reset_token_ttl_s
    async with state.db.transaction() as session:
        started = await start_reset(session, email=email, ttl_s=ttl_s)
    response = json_response(
        {"detail": RESET_SENT if state.mailer.configured else RESET_LOGGED}, 202
    )
    if started is not None:
        user, token = started
        link = f"{site_url(request)}/reset/{token}"
        # Sent after the answer: a mail server's delay must not tell who has an account.
        response.background = BackgroundTask(
            state.mailer.send_quietly, reset_mail(user, link=link, ttl_s=ttl_s)
        )
    return response


@api(
    "Choose a new password with a reset link's token; ends every session of the account",
    auth="anyone",
    body=Body(ref("ResetConfirmation")),
    responses={
        200: Reply("the password is changed: sign in with it", ref("Detail")),
        400: "the link is unknown, used or expired, or the password is too short",
    },
)
async def confirm_password_reset(request: Request) -> Response:
    state = app_state(request)
    check_origin(request)
    body = await read_json(request)
    token = text_field(body, "token", max_chars=200)
    password = text_field(body, "password", max_chars=MAX_PASSWORD_CHARS)
    async with state.db.transaction() as session:
        user_id = await finish_reset(session, token=token, password=password)
    # Signed-out browsers everywhere, on every instance.
    await state.on_accounts_changed({user_id})
    return json_response({"detail": "Your password is changed. Sign in with it."})


@api(
    "Create an API token for scripts (shown once)",
    body=Body(ref("TokenRequest")),
    responses={201: Reply("the token: send it as Authorization: Bearer", ref("NewToken"))},
)
async def create_token(request: Request) -> Response:
    principal = await require_user(request)
    name = text_field(await read_json(request), "name", max_chars=120)
    token = new_api_token()
    async with app_state(request).db.transaction() as session:
        row = ApiToken(user_id=principal.id, name=name, token_hash=hash_token(token))
        session.add(row)
        await session.flush()
    return json_response({"id": row.id, "name": row.name, "token": token}, 201)


@api(
    "List my API tokens (never their secret)",
    responses={200: Reply("my tokens, oldest first", ref("Tokens"))},
)
async def list_tokens(request: Request) -> Response:
    principal = await require_user(request)
    async with app_state(request).db.sessions() as session:
        rows = await session.scalars(
            select(ApiToken).where(ApiToken.user_id == principal.id).order_by(ApiToken.id)
        )
        items = [
            {
                "id": row.id,
                "name": row.name,
                "created_at": iso(row.created_at),
                "last_used_at": iso(row.last_used_at),
                "revoked_at": iso(row.revoked_at),
            }
            for row in rows
        ]
    return json_response({"items": items})


@api(
    "Revoke one of my API tokens",
    responses={204: "revoked", 404: "I have no API token with this id"},
)
async def revoke_token(request: Request) -> Response:
    principal = await require_user(request)
    token_id = path_id(request, "token_id")
    async with app_state(request).db.transaction() as session:
        result = await session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.user_id == principal.id)
            .values(revoked_at=utcnow())
        )
    if not getattr(result, "rowcount", 0):
        raise NotFound("You have no API token with this id.")
    # Live streams opened with the token end, on every instance.
    await app_state(request).on_accounts_changed({principal.id})
    return Response(status_code=204)


@api("Who I am", responses={200: Reply("my account", ref("Me"))})
async def me(request: Request) -> Response:
    principal = await require_user(request)
    user = principal.user
    return json_response(
        {
            "user": user_json(user),
            "has_selfie": user.selfie_updated_at is not None,
            "consent_at": iso(user.consent_at),
            "csrf_token": principal.session.csrf_token if principal.session else None,
        }
    )


@api(
    "My matching in each event I joined: still running, or complete",
    responses={
        200: Reply("pending: unfinished jobs of mine, over every event I joined", ref("MyStatus"))
    },
)
async def my_status(request: Request) -> Response:
    principal = await require_user(request)
    async with app_state(request).db.sessions() as session:
        events = await my_matching(session, principal.id)
    pending = sum(
        (item["matching"] in {"queued", "running"}) + item["photos_pending"] for item in events
    )
    return json_response({"pending": pending, "events": events})


routes = [
    Route("/api/auth/register", register, methods=["POST"]),
    Route("/api/auth/register/confirm", confirm_signup, methods=["POST"]),
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/auth/password-reset", request_password_reset, methods=["POST"]),
    Route("/api/auth/password-reset/confirm", confirm_password_reset, methods=["POST"]),
    Route("/api/auth/tokens", create_token, methods=["POST"]),
    Route("/api/auth/tokens", list_tokens, methods=["GET"]),
    Route("/api/auth/tokens/{token_id}", revoke_token, methods=["DELETE"]),
    Route("/api/me", me, methods=["GET"]),
    Route("/api/me/status", my_status, methods=["GET"]),
]
