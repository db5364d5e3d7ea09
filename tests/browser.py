"""What the browser tests share: Chromium's options, per-person contexts that record the pages'
script errors, and the steps people take on the pages (sign in, screenshots, focus checks)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from PIL import Image
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page
from sqlalchemy import select

from findme.db import Database, Job, JobKind, JobStatus, Photo, PhotoStatus, Role, utcnow
from findme.domain.accounts import create_user
from tests.conftest import PASSWORD

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1366, "height": 900}}
SIZES = {"phone": PHONE, "desktop": DESKTOP}
# Face recognition runs in niced processes: on a busy machine it can take a while.
SLOW_MS = 150_000


class Contexts:
    """Browser contexts (one per person and screen size) that record the pages' JS errors."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.opened: list[BrowserContext] = []
        self.errors: list[str] = []

    async def __call__(
        self, base_url: str, size: str = "desktop", **options: Any
    ) -> BrowserContext:
        context = await self.browser.new_context(base_url=base_url, **SIZES[size], **options)
        context.set_default_timeout(15_000)
        context.on("page", self._watch)
        self.opened.append(context)
        return context

    def _watch(self, page: Page) -> None:
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))
        page.on("console", lambda message: self._console(page, message))

    def _console(self, page: Page, message: ConsoleMessage) -> None:
        # Error pages answer 403/404 on purpose; anything else (a script error, a blocked
        # resource or inline code refused by the Content-Security-Policy) is a bug.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(f"{page.url}: {message.text}")

    def assert_no_errors(self) -> None:
        assert not self.errors, self.errors

    async def close(self) -> None:
        for context in self.opened:
            await context.close()


async def add_account(settings, role: Role, name: str) -> str:
    """Photographers and admins are made by an admin (here: directly in the database)."""
    email = f"{role.value}-{uuid.uuid4().hex[:6]}@example.com"
    db = Database(settings)
    try:
        async with db.transaction() as session:
            await create_user(session, email=email, password=PASSWORD, name=name, role=role)
    finally:
        await db.aclose()
    return email


async def add_failed_job(settings, *, filename: str, error: str) -> int:
    """A job that failed all its attempts, as the admin page lists them."""
    db = Database(settings)
    try:
        async with db.transaction() as session:
            photo = await session.scalar(select(Photo).where(Photo.filename == filename))
            assert photo is not None
            job = Job(
                kind=JobKind.process_photo,
                status=JobStatus.failed,
                photo_id=photo.id,
                event_id=photo.event_id,
                attempts=3,
                max_attempts=3,
                error=error,
                finished_at=utcnow(),
            )
            session.add(job)
            await session.flush()
            return job.id
    finally:
        await db.aclose()


async def fail_photo_job(settings, *, filename: str, error: str) -> None:
    """The photo's processing failed all its attempts, as an engine fault leaves it."""
    db = Database(settings)
    try:
        async with db.transaction() as session:
            photo = await session.scalar(select(Photo).where(Photo.filename == filename))
            assert photo is not None
            job = await session.scalar(
                select(Job).where(Job.photo_id == photo.id).order_by(Job.id.desc()).limit(1)
            )
            assert job is not None and job.status == JobStatus.done
            job.status = JobStatus.failed
            job.attempts = job.max_attempts
            job.error = error
            job.finished_at = utcnow()
            photo.status = PhotoStatus.failed
    finally:
        await db.aclose()


async def photo_id_of(settings, filename: str) -> int:
    db = Database(settings)
    try:
        async with db.sessions() as session:
            found = await session.scalar(select(Photo.id).where(Photo.filename == filename))
            assert found is not None
            return found
    finally:
        await db.aclose()


async def thumbnails_shown(page: Page) -> None:
    """Waits until every thumbnail of the organiser's photo list has loaded (for screenshots)."""
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#photo-list img')]"
        ".every(image => image.complete && image.naturalWidth > 0)"
    )


async def tab_to(page: Page, selector: str, *, presses: int = 60) -> None:
    """Press Tab until the keyboard focus is on an element matching `selector`."""
    for _ in range(presses):
        await page.keyboard.press("Tab")
        if await page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


async def focus_ring(page: Page) -> dict[str, Any]:
    ring: dict[str, Any] = await page.evaluate(
        """() => {
            const style = getComputedStyle(document.activeElement);
            return {
                style: style.outlineStyle,
                width: parseFloat(style.outlineWidth),
                offset: parseFloat(style.outlineOffset),
                visible: document.activeElement.matches(":focus-visible"),
            };
        }"""
    )
    return ring


async def inside(inner, outer) -> bool:
    """Whether `inner`'s box lies within `outer`'s (to the pixel)."""
    a, b = await inner.bounding_box(), await outer.bounding_box()
    assert a is not None and b is not None
    return (
        a["x"] >= b["x"] - 0.5
        and a["y"] >= b["y"] - 0.5
        and a["x"] + a["width"] <= b["x"] + b["width"] + 0.5
        and a["y"] + a["height"] <= b["y"] + b["height"] + 0.5
    )


async def sign_in(page: Page, email: str) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


async def sign_up(page: Page, name: str, email: str) -> None:
    await page.get_by_label("Your name").fill(name)
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()


async def join_as_newcomer(page: Page, name: str, email: str, selfie: Path) -> None:
    """Fill the join link's one form as a newcomer (the caller presses its button)."""
    await page.get_by_label("Your name").fill(name)
    await page.get_by_label("Email", exact=True).fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.locator("#file").set_input_files(selfie)
    await page.get_by_label("I agree").check()


async def shot(page: Page, name: str, size: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=ARTIFACTS / f"{name}-{size}.png", full_page=True)


async def tile_names(page: Page) -> list[str]:
    names: list[str] = await page.locator("#photos .tile").evaluate_all(
        "tiles => tiles.map(tile => tile.dataset.filename)"
    )
    return names


def a_photo_without_a_face(folder: Path) -> Path:
    path = folder / "wall.jpg"
    image = Image.radial_gradient("L").resize((640, 480)).convert("RGB")
    image.save(path, "JPEG")
    return path
