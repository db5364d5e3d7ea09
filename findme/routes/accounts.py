"""Sign-up, sign-in, sign-out, API tokens and the account itself."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme.auth import check_origin, hash_password, hash_token, new_api_token, verify_password
from findme.db import ApiToken, Role, User, utcnow
from findme.errors import AlreadyExists, BadRequest, InvalidCredentials, NotFound
from findme.routes.common import (
    api,
    app_state,
    client_ip,
    current_principal,
    iso,
    json_response,
    path_id,
    read_json,
    require_user,
    text_field,
)

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role.value,
        "created_at": iso(user.created_at),
    }


def normalise_email(raw: str) -> str:
    email = raw.strip().lower()
    if len(email) > 254 or not EMAIL_PATTERN.match(email):
        raise BadRequest("Enter a valid email address, like name@example.com.")
    return email


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise BadRequest(f"The password must be at least {MIN_PASSWORD_CHARS} characters.")
    if len(password) > MAX_PASSWORD_CHARS:
        raise BadRequest(f"The password must be at most {MAX_PASSWORD_CHARS} characters.")
    return password


async def create_user(
    session: AsyncSession, *, email: str, password: str, name: str, role: Role
) -> User:
    """Insert an account; shared by sign-up and `findme create-user`."""
    email = normalise_email(email)
    exists = await session.scalar(select(func.count()).where(User.email == email))
    if exists:
        raise AlreadyExists("An account with this email already exists. Sign in instead.")
    user = User(email=email, name=name, password_hash=hash_password(password), role=role)
    session.add(user)
    await session.flush()
    return user


@api(
    "Create an account (attendee, or any role when an admin asks)",
    auth="anyone",
    body={"email": "string", "password": "string", "name": "string", "role": "string?"},
    responses={201: "{user}", 400: "invalid field", 409: "email already registered"},
)
async def register(request: Request) -> Response:
    state = app_state(request)
    caller = await current_principal(request)
    if caller is None:
        await state.limits.hit("signup_ip", client_ip(request))
    body = await read_json(request)
    email = text_field(body, "email", max_chars=254)
    password = check_password(text_field(body, "password", max_chars=MAX_PASSWORD_CHARS))
    name = text_field(body, "name", max_chars=120)
    role_name = body.get("role") or Role.attendee.value
    if role_name not in {role.value for role in Role}:
        raise BadRequest("'role' must be attendee, photographer or admin.")
    role = Role(role_name)
    if role != Role.attendee and not (caller is not None and caller.is_admin):
        raise BadRequest(
            "Only an admin can create photographer or admin accounts. Ask your FindMe admin."
        )
    async with state.db.transaction() as session:
        user = await create_user(session, email=email, password=password, name=name, role=role)
        browser = None if caller is not None else await state.auth.start_session(session, user)
    response = json_response({"user": user_json(user)}, 201)
    if browser is not None:
        state.auth.set_cookie(response, browser, secure=request.url.scheme == "https")
    return response


@api(
    "Sign in; sets the session cookie",
    auth="anyone",
    body={"email": "string", "password": "string"},
    responses={200: "{user, csrf_token}", 401: "wrong email or password"},
)
async def login(request: Request) -> Response:
    state = app_state(request)
    check_origin(request)
    body = await read_json(request)
    email = str(body.get("email") or "").strip().lower()[:254]
    password = str(body.get("password") or "")[:MAX_PASSWORD_CHARS]
    await state.limits.hit("login_ip", client_ip(request))
    # Guessing one account's password is capped; a real user waits minutes at worst.
    await state.limits.check("login_account", email)
    async with state.db.transaction() as session:
        user = await session.scalar(select(User).where(User.email == email))
        # The hash is checked even for unknown emails, so timing does not reveal which exist.
        valid = verify_password(user.password_hash if user else None, password)
        browser = await state.auth.start_session(session, user) if valid and user else None
    if browser is None or user is None:
        await state.limits.hit("login_account", email)
        raise InvalidCredentials()
    response = json_response({"user": user_json(user), "csrf_token": browser.csrf_token})
    state.auth.set_cookie(response, browser, secure=request.url.scheme == "https")
    return response


@api("Sign out: ends this browser session everywhere", responses={204: "signed out"})
async def logout(request: Request) -> Response:
    state = app_state(request)
    principal = await current_principal(request)
    if principal is not None and principal.session is not None:
        await state.auth.end_session(principal.session)
        await state.on_accounts_changed({principal.id})
    response = Response(status_code=204)
    state.auth.clear_cookie(response)
    return response


@api(
    "Create an API token for scripts (shown once)",
    body={"name": "string"},
    responses={201: "{token, id, name}"},
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


@api("List my API tokens (never their secret)", responses={200: "{items:[token]}"})
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


@api("Revoke one of my API tokens", responses={204: "revoked", 404: "no such token of mine"})
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
    return Response(status_code=204)


@api("Who I am", responses={200: "{user, has_selfie, consent_at}"})
async def me(request: Request) -> Response:
    principal = await require_user(request)
    user = principal.user
    return json_response(
        {
            "user": user_json(user),
            "has_selfie": user.selfie_descriptor is not None,
            "consent_at": iso(user.consent_at),
            "csrf_token": principal.session.csrf_token if principal.session else None,
        }
    )


routes = [
    Route("/api/auth/register", register, methods=["POST"]),
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/auth/tokens", create_token, methods=["POST"]),
    Route("/api/auth/tokens", list_tokens, methods=["GET"]),
    Route("/api/auth/tokens/{token_id}", revoke_token, methods=["DELETE"]),
    Route("/api/me", me, methods=["GET"]),
]
