"""The server: one request to an event, judged."""

from __future__ import annotations

import email.utils
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any

import httpx

from findme.watcher.errors import RequestRefused, ServerTrouble, WatchError
from findme.watcher.manifest import ANSWER_STATUSES, Answer

MAX_RETRY_AFTER_S = 600.0


class EventClient:
    """One event on the server, behind a shared httpx client; each call is a single attempt."""

    def __init__(self, client: httpx.AsyncClient, *, server: str, event_id: int) -> None:
        self._client = client
        self._server = server
        self._event_id = event_id

    async def check_event(self) -> str:
        """The event's name, once the token is known to reach it."""
        response = await self._request("GET", f"/api/events/{self._event_id}")
        if response.status_code == 404 and not await self._is_findme():
            raise self._not_findme(response)
        body = self._judge(response)
        if response.status_code != 200 or not isinstance(body, dict) or "name" not in body:
            raise self._not_findme(response)
        if body.get("my_role") not in (None, "organiser", "admin"):
            raise WatchError(
                f"This token's account has joined event {self._event_id} but does not organise "
                "it, so it cannot upload. Use a token of the photographer who created the event."
            )
        return str(body["name"])

    async def send(self, files: Sequence[tuple[str, bytes, str]]) -> list[Answer]:
        """Upload files in one request; the server's answer for each, in order."""
        response = await self._request(
            "POST",
            f"/api/photographer/events/{self._event_id}/upload-photos",
            files=[("files", part) for part in files],
        )
        body = self._judge(response)
        results = body.get("results") if isinstance(body, dict) else None
        if isinstance(results, list):
            if len(results) != len(files):
                raise ServerTrouble("the server's answer did not cover every photo")
            return [self._answer(result) for result in results]
        if 400 <= response.status_code < 500:
            detail = body.get("detail") if isinstance(body, dict) else None
            raise RequestRefused(
                status_code=response.status_code,
                error=str(body.get("error", "refused")) if isinstance(body, dict) else "refused",
                detail=str(
                    detail or f"The server refused the request (HTTP {response.status_code})."
                ),
            )
        raise self._not_findme(response)

    async def _is_findme(self) -> bool:
        response = await self._request("GET", "/healthz")
        try:
            return response.status_code == 200 and response.json().get("status") == "ok"
        except (ValueError, AttributeError):
            return False

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._transport_trouble(error) from error

    def _judge(self, response: httpx.Response) -> Any:
        """The JSON body; raise for the answers that are not about individual files."""
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        detail = body.get("detail") if isinstance(body, dict) else None
        said = f" (HTTP {status}: {detail})" if detail else f" (HTTP {status})"
        if status == 429 or status >= 500 or status in (408, 409, 425):
            raise ServerTrouble(
                f"the server asks to slow down{said}"
                if status == 429
                else f"the server cannot take photos right now{said}",
                retry_after_s=_retry_after_s(response.headers.get("retry-after")),
            )
        if 300 <= status < 400:
            location = response.headers.get("location", "another address")
            raise WatchError(
                f"{self._server} redirects to {location}. Pass that address with --server."
            )
        if status == 401:
            raise WatchError(
                f"The server refused the API token{said}. Create a new token while signed in "
                "as the event's photographer (POST /api/auth/tokens) and pass it with --token "
                "or FINDME_TOKEN."
            )
        if status == 403:
            raise WatchError(
                f"This token may not upload to event {self._event_id}{said}. Use a token of "
                "the photographer who organises the event, or check --event."
            )
        if status == 404:
            if not isinstance(body, dict) or "error" not in body:
                raise self._not_findme(response)
            raise WatchError(
                f"There is no event {self._event_id} on {self._server}{said}. Check --event "
                "(the number in the event's address) and --server."
            )
        return body

    def _answer(self, result: Any) -> Answer:
        if not isinstance(result, dict) or result.get("status") not in ANSWER_STATUSES:
            raise WatchError(
                f"{self._server} answered an upload in a way this watcher does not understand: "
                f"{result!r}. Update FindMe on this computer or check --server."
            )
        photo_id = result.get("photo_id")
        return Answer(
            status=result["status"],
            photo_id=photo_id if isinstance(photo_id, int) else None,
            error=result.get("error"),
            detail=result.get("detail") or result.get("error"),
        )

    def _not_findme(self, response: httpx.Response) -> WatchError:
        return WatchError(
            f"{self._server} does not look like a FindMe server: {response.request.url.path} "
            f"answered HTTP {response.status_code}. Check --server."
        )

    def _transport_trouble(self, error: httpx.TransportError) -> Exception:
        causes: list[BaseException] = []
        cause: BaseException | None = error
        while cause is not None and len(causes) < 8:
            causes.append(cause)
            cause = cause.__cause__ or cause.__context__
        for cause in causes:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return WatchError(
                    f"The HTTPS certificate of {self._server} is not valid "
                    f"({cause.verify_message}). Check --server, or fix the server's certificate."
                )
            if isinstance(cause, socket.gaierror):
                return ServerTrouble(
                    f"the name in {self._server} cannot be found (check --server and the network)"
                )
            if isinstance(cause, ConnectionRefusedError):
                return ServerTrouble(
                    f"nothing answers at {self._server} (connection refused): the server is "
                    "down, or --server is wrong"
                )
        text = str(error) or type(error).__name__
        if isinstance(error, httpx.ConnectTimeout):
            return ServerTrouble(f"{self._server} does not answer (connection timed out)")
        if isinstance(error, httpx.ConnectError):
            return ServerTrouble(f"cannot connect to {self._server} ({text})")
        if isinstance(error, httpx.TimeoutException):
            return ServerTrouble("the server took too long to answer")
        return ServerTrouble(f"the connection to the server was lost ({text})")


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
