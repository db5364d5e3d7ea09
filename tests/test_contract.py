"""The HTTP contract holds: schemathesis fuzzes every operation of /openapi.json on the real server.

Each operation gets examples that fit its schema and examples that do not, sent with a bearer
token, first as an attendee who joined the seeded event, then as an admin (whom every check of
access lets through). Every answer must be a status the operation declares, with the declared
media type, body schema and headers, and never a server error. The live stream is left out:
it never ends.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import with_settings

pytestmark = pytest.mark.slow

# Examples per operation and generation mode (fitting the schema, or not), for each caller.
EXAMPLES = {"attendee": 10, "admin": 25}
LEFT_OUT = {"GET /api/my-photos/stream"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Deletions last, photos before the events that hold them; erasing the caller's own account
# comes after everything.
DELETIONS = ["/api/photo/{photo_id}", "/api/me/selfies/{selfie_id}", "/api/events/{event_id}"]
UNLIMITED = "100000/minute"


@pytest.fixture
def settings(settings):
    # The fuzzer should reach the code behind the rate limits, not stop at them.
    return with_settings(
        settings,
        rate_login_ip=UNLIMITED,
        rate_login_account=UNLIMITED,
        rate_signup_ip=UNLIMITED,
        rate_selfie=UNLIMITED,
        rate_upload=UNLIMITED,
        rate_api_read=UNLIMITED,
    )


@dataclass
class Run:
    operations: set[str] = field(default_factory=set)
    examples: int = 0
    statuses: dict[str, set[int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


# About two minutes on a busy two-core machine, half of it generating the examples (hypothesis).
@pytest.mark.timeout(600)
async def test_every_operation_keeps_the_contract(server, make_user, make_event) -> None:
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    photo = io.BytesIO()
    Image.new("RGB", (320, 240), "teal").save(photo, "JPEG")
    uploaded = await organiser.post(
        f"/api/photographer/events/{event['id']}/upload-photos",
        files=[("files", ("gala.jpg", photo.getvalue()))],
    )
    assert uploaded.status_code == 202, uploaded.text
    attendee = await make_user()
    joined = await attendee.post("/api/events/join", json={"code": event["code"]})
    assert joined.status_code == 200, joined.text
    admin = await make_user("admin")

    run = Run()
    for role, caller in (("attendee", attendee), ("admin", admin)):
        mint = _token_minter(server.url, caller)
        await asyncio.to_thread(_fuzz, server.url, mint, role=role, run=run)

    print(f"\n{len(run.operations)} operations, {run.examples} examples")  # noqa: T201
    for label, codes in sorted(run.statuses.items()):
        print(f"  {label}: {sorted(codes)}")  # noqa: T201
    assert len(run.operations) >= 40, run.operations
    assert run.failures == {}, "\n\n".join(
        f"{where}:\n{failure}" for where, failure in run.failures.items()
    )
    # The examples reached real rows, not only refusals.
    assert 200 in run.statuses["GET /api/photo/{photo_id} as admin"]
    assert 200 in run.statuses["GET /api/events/{event_id} as attendee"]
    assert 403 in run.statuses["GET /api/admin/queue/stats as attendee"]


def _token_minter(url: str, caller: httpx.AsyncClient) -> Callable[[], str]:
    """A fresh bearer token per operation: revoking tokens (its own among them) or erasing
    the account then spoils that operation's examples only."""
    signed_in = {"cookies": dict(caller.cookies), "headers": dict(caller.headers)}

    def mint() -> str:
        with httpx.Client(base_url=url, **signed_in) as client:
            response = client.post("/api/auth/tokens", json={"name": "contract"})
            assert response.status_code == 201, response.text
            token: str = response.json()["token"]
            return token

    return mint


def _fuzz(url: str, mint: Callable[[], str], *, role: str, run: Run) -> None:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in sorted(operations, key=_order):
        label = f"{operation.method.upper()} {operation.path}"
        if label in LEFT_OUT:
            continue
        run.operations.add(label)
        token = mint()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _examples(
                    operation,
                    mode,
                    url=url,
                    token=token,
                    count=EXAMPLES[role],
                    run=run,
                    label=f"{label} as {role}",
                )
            except Unsatisfiable:
                # Nothing to get wrong: no parameter and no body.
                assert mode == GenerationMode.NEGATIVE, label
            # Schemathesis groups the failures of a case in a BaseExceptionGroup.
            except (Exception, BaseExceptionGroup) as failure:
                run.failures[f"{label} as {role} ({mode.value})"] = str(failure)[:3000]


def _order(operation: Any) -> tuple[int, int, str]:
    method, path = operation.method.upper(), operation.path
    if method == "DELETE" and path == "/api/me":
        return (3, 0, "")
    if method == "DELETE":
        return (2, DELETIONS.index(path) if path in DELETIONS else len(DELETIONS), path)
    return (0 if method == "GET" else 1, 0, f"{path} {method}")


def _examples(
    operation: Any, mode: GenerationMode, *, url: str, token: str, count: int, run: Run, label: str
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def example(case: Any) -> None:
        run.examples += 1
        response = case.call(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        run.statuses.setdefault(label, set()).add(response.status_code)
        case.validate_response(response, checks=CHECKS)

    example()
