"""Passwords, browser sessions, API tokens, CSRF and role checks."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import hmac
import os
import secrets
from collections import defaultdict
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection
from starlette.responses import Response

from findme.batching import BatchLoader
from findme.cache import AsyncCache
from findme.db import ApiToken, BrowserSession, Database, Role, User, utcnow
from findme.errors import CsrfFailed, Forbidden, NotSignedIn

SESSION_COOKIE = "findme_session"
CSRF_HEADER = "x-csrf-token"
TOKEN_PREFIX = "fm_"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the email is unknown, so both paths take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
# A hash costs ~150 ms of CPU and 64 MB: on the event loop it would stall every other request
# and live page for as long (docs/BENCHMARKS.md, "Passwords hashed off the event loop"). The C
# code releases the GIL, so hashes run on these threads, one per core at most, which also
# bounds the memory a burst of sign-ins can take.
_hashing = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="password-hash")


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_hashing, _hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_hashing, _verify_password, password_hash, password)


def _verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is making a request, and how they proved it."""

    user: User
    session: BrowserSession | None = None
    # The API token that signed the request in, for requests that sent one.
    token_id: int | None = None

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def is_admin(self) -> bool:
        return self.user.role == Role.admin

    def require_role(self, *roles: Role) -> None:
        if self.is_admin or self.user.role in roles:
            return
        names = " or ".join(role.value for role in roles)
        raise Forbidden(f"Only a {names} account can do this.")


class Authenticator:
    """Issues and checks session cookies and bearer tokens."""

    def __init__(
        self,
        *,
        db: Database,
        secret_key: str,
        session_max_age_s: int,
        users: AsyncCache[User | None],
        sessions: AsyncCache[BrowserSession | None],
    ) -> None:
        self._db = db
        self._users = users
        self._sessions = sessions
        self._signer = URLSafeTimedSerializer(secret_key, salt="findme-session")
        self._max_age_s = session_max_age_s
        self.session_reads = BatchLoader(self._load_sessions)

    async def start_session(self, session: AsyncSession, user: User) -> BrowserSession:
        """A fresh session id on every sign-in, so a planted cookie is worth nothing."""
        browser = BrowserSession(
            id=secrets.token_urlsafe(32),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=utcnow() + dt.timedelta(seconds=self._max_age_s),
        )
        session.add(browser)
        await session.execute(delete(BrowserSession).where(BrowserSession.expires_at < utcnow()))
        return browser

    def cookie_value(self, browser: BrowserSession) -> str:
        """What the session cookie of `browser` holds: its id, signed."""
        return self._signer.dumps(browser.id)

    def set_cookie(self, response: Response, browser: BrowserSession, *, secure: bool) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self.cookie_value(browser),
            max_age=self._max_age_s,
            httponly=True,
            samesite="lax",
            secure=secure,
            path="/",
        )

    @staticmethod
    def clear_cookie(response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")

    async def end_session(self, browser: BrowserSession) -> None:
        """Delete the session; the caller announces it so other instances forget it too."""
        async with self._db.transaction() as session:
            await session.execute(delete(BrowserSession).where(BrowserSession.id == browser.id))
        self._sessions.invalidate({browser.id})

    async def identify(self, connection: HTTPConnection) -> Principal | None:
        authorization = connection.headers.get("authorization", "")
        if authorization:
            return await self._from_token(authorization)
        cookie = connection.cookies.get(SESSION_COOKIE)
        if cookie:
            return await self._from_cookie(cookie)
        return None

    async def _from_token(self, authorization: str) -> Principal:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotSignedIn("Send the API token as: Authorization: Bearer <token>.")
        async with self._db.transaction() as session:
            row = await session.scalar(
                select(ApiToken).where(ApiToken.token_hash == hash_token(token.strip()))
            )
            if row is None or row.revoked_at is not None:
                raise NotSignedIn("This API token is unknown or revoked. Create a new one.")
            await session.execute(
                update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=utcnow())
            )
        user = await self._users.get((row.user_id,), lambda: self._load_user(row.user_id))
        if user is None:
            raise NotSignedIn("This API token is unknown or revoked. Create a new one.")
        return Principal(user=user, token_id=row.id)

    async def forget_users(self, user_ids: set[int]) -> None:
        """Their accounts changed (or ended): drop cached accounts and browser sessions."""
        self._users.invalidate(set(user_ids))
        self._sessions.invalidate_where(
            lambda browser: browser is not None and browser.user_id in user_ids
        )

    async def browser_principal(self, connection: HTTPConnection) -> Principal | None:
        """Who the browser's session cookie signs in, ignoring any bearer token."""
        cookie = connection.cookies.get(SESSION_COOKIE)
        return await self._from_cookie(cookie) if cookie else None

    async def still_signed_in(self, principal: Principal) -> bool:
        """Whether the session or token that signed `principal` in still stands, read from the
        database (not the caches): a long-lived response (a live stream) asks it again and
        again, and must stop as soon as a sign-out, expiry, revocation or erasure commits."""
        return bool(await self.still_standing([principal]))

    async def still_standing(self, principals: Iterable[Principal]) -> list[Principal]:
        """Those of `principals` whose session or token still stands (see `still_signed_in`),
        in one query per kind of proof, however many there are."""
        by_session: dict[str, list[Principal]] = defaultdict(list)
        by_token: dict[int, list[Principal]] = defaultdict(list)
        by_user: dict[int, list[Principal]] = defaultdict(list)
        for principal in principals:
            if principal.session is not None:
                by_session[principal.session.id].append(principal)
            elif principal.token_id is not None:
                by_token[principal.token_id].append(principal)
            else:
                by_user[principal.id].append(principal)
        standing: list[Principal] = []
        async with self._db.sessions() as session:
            if by_session:
                sessions = await session.scalars(
                    select(BrowserSession.id)
                    .join(User, User.id == BrowserSession.user_id)
                    .where(BrowserSession.id.in_(by_session), BrowserSession.expires_at > utcnow())
                )
                standing += [p for found in sessions for p in by_session[found]]
            if by_token:
                tokens = await session.scalars(
                    select(ApiToken.id)
                    .join(User, User.id == ApiToken.user_id)
                    .where(ApiToken.id.in_(by_token), ApiToken.revoked_at.is_(None))
                )
                standing += [p for found in tokens for p in by_token[found]]
            if by_user:
                users = await session.scalars(select(User.id).where(User.id.in_(by_user)))
                standing += [p for found in users for p in by_user[found]]
        return standing

    async def _from_cookie(self, cookie: str) -> Principal | None:
        session_id = self._session_id(cookie)
        if session_id is None:
            return None
        # A session read from the database comes with its account, and with the sessions of
        # every request waiting meanwhile, in one query: after a restart, thousands of pages
        # reconnect with every cache cold.
        read_with_it: list[User | None] = []

        async def load_session() -> BrowserSession | None:
            browser, user = await self.session_reads.load(session_id) or (None, None)
            read_with_it.append(user)
            return browser

        browser = await self._sessions.get((session_id,), load_session)
        if browser is None or browser.expires_at <= utcnow():
            return None
        user_id = browser.user_id

        async def load_user() -> User | None:
            return read_with_it[0] if read_with_it else await self._load_user(user_id)

        user = await self._users.get((user_id,), load_user)
        return None if user is None else Principal(user=user, session=browser)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one Authenticator per app
    def _session_id(self, cookie: str) -> str | None:
        """The session id a cookie carries, if we signed it (expiry is the session row's)."""
        try:
            session_id: str = self._signer.loads(cookie)
        except BadSignature:
            return None
        return session_id

    async def _load_sessions(
        self, session_ids: Collection[str]
    ) -> dict[str, tuple[BrowserSession, User]]:
        async with self._db.sessions() as session:
            rows = await session.execute(
                select(BrowserSession, User)
                .join(User, User.id == BrowserSession.user_id)
                .where(BrowserSession.id.in_(session_ids))
            )
            return {browser.id: (browser, user) for browser, user in rows}

    async def _load_user(self, user_id: int) -> User | None:
        async with self._db.sessions() as session:
            return await session.get(User, user_id)


async def end_sessions_of(session: AsyncSession, user_id: int) -> None:
    """Delete every browser session of an account (its password changed); the caller announces
    it as account news, so every instance drops its cached copies."""
    await session.execute(delete(BrowserSession).where(BrowserSession.user_id == user_id))


def check_origin(connection: HTTPConnection) -> None:
    """Refuse changes sent by a page of another site (browsers always send Origin then).

    `Origin: null` is refused too: it is what a sandboxed frame, a data: or file: page, or a
    cross-site redirect sends, never one of our pages (their fetches carry our origin). Scripts
    and the watcher send no Origin at all, and pass.
    """
    if connection.scope.get("method", "GET") in SAFE_METHODS:
        return
    origin = connection.headers.get("origin")
    if origin and (origin == "null" or not _same_origin(connection, origin)):
        raise CsrfFailed()


def check_csrf(connection: HTTPConnection, principal: Principal | None) -> None:
    """Cookie-authenticated changes must echo the session's CSRF token.

    Bearer-token requests carry no ambient credentials, so they need none.
    """
    check_origin(connection)
    if connection.scope.get("method", "GET") in SAFE_METHODS:
        return
    if principal is None or principal.session is None:
        return
    sent = connection.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent, principal.session.csrf_token):
        raise CsrfFailed()


def _same_origin(connection: HTTPConnection, origin: str) -> bool:
    host = connection.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)
