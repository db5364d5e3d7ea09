"""The web pages in a real Chromium, against the real server with its workers running."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
import uuid
import zipfile
from pathlib import Path
from urllib.parse import unquote_plus

import httpx
import pytest
from PIL import Image
from playwright.async_api import (
    Page,
    Route,
    expect,
)
from sqlalchemy import select

from findme.db import Database, Role, User
from tests.browser import (
    ARTIFACTS,
    SIZES,
    SLOW_MS,
    a_photo_without_a_face,
    add_account,
    add_failed_job,
    fail_photo_job,
    focus_ring,
    inside,
    join_as_newcomer,
    photo_id_of,
    shot,
    sign_in,
    sign_up,
    tab_to,
    thumbnails_shown,
    tile_names,
)
from tests.conftest import PASSWORD, serve
from tests.scenes import add_matches, join, jpeg, open_stream, upload
from tests.shared_faces import faces_dir, manifest

pytestmark = pytest.mark.browser


@pytest.mark.timeout(600)
async def test_photographer_uploads_and_attendees_see_their_photos_live(
    settings, contexts, tmp_path
) -> None:
    data = manifest()
    faces = faces_dir()
    live_settings = dataclasses.replace(settings, run_workers=True, engine_processes=2)
    async with serve(live_settings) as base:
        photographer_email = await add_account(settings, Role.photographer, "Pat Lens")
        admin_email = await add_account(settings, Role.admin, "Ada Admin")

        # The photographer signs in and creates the event.
        photographer = await (await contexts(base, "desktop")).new_page()
        await photographer.goto("/login")
        await sign_in(photographer, photographer_email)
        await expect(photographer.get_by_role("heading", name="Your events")).to_be_visible()
        await photographer.get_by_label("Event name").fill("Summer gala")
        await photographer.get_by_label("Date (optional)").fill("2026-06-30")
        await photographer.get_by_role("button", name="Create event").click()
        await expect(photographer).to_have_url(re.compile(r"/events/\d+$"))
        event_id = int(photographer.url.rsplit("/", 1)[1])
        code = (await photographer.get_by_test_id("event-code").inner_text()).strip()
        join_url = await photographer.get_by_test_id("join-url").input_value()
        assert join_url == f"{base}/join/{code}"
        qr = photographer.locator("img.qr")
        assert await qr.evaluate("img => img.complete && img.naturalWidth > 0")

        # Three attendees arrive by the QR link: one screen takes name, email, selfie and
        # consent, and opens "My photos". Lin is in none of the photos.
        attendees: dict[str, Page] = {}
        emails: dict[str, str] = {}
        for person, size in (
            ("obama", "phone"),
            ("biden", "desktop"),
            ("lin_manuel_miranda", "phone"),
        ):
            page = await (await contexts(base, size)).new_page()
            await page.goto(join_url)
            await expect(page.get_by_role("heading", name="Summer gala")).to_be_visible()
            emails[person] = f"{person.split('_')[0]}-{uuid.uuid4().hex[:6]}@example.com"
            await join_as_newcomer(
                page, person.split("_")[0].title(), emails[person], faces / data["selfies"][person]
            )
            await shot(page, "join", size)
            await page.get_by_role("button", name="Join and find my photos").click()
            await expect(page).to_have_url(f"{base}/my-photos?event_id={event_id}", timeout=SLOW_MS)
            await expect(page.locator("#live")).to_have_text("Live")
            await expect(page.get_by_text("No photos of you yet")).to_be_visible()
            await expect(page.locator("#empty [data-text]")).to_contain_text(
                "has not uploaded any photos yet"
            )
            await page.evaluate("window.__notReloaded = true")
            attendees[person] = page

        # The photographer uploads the 15 photos through the upload page.
        event_files = sorted((faces / "event").iterdir())
        await photographer.locator("#files").set_input_files(event_files)
        await expect(photographer.locator("#upload-summary")).to_have_text(
            "Upload finished: 15 files", timeout=SLOW_MS
        )
        await expect(photographer.locator('[data-tally="created"]')).to_have_text("15 added")
        await shot(photographer, "event-uploading", "desktop")
        await expect(photographer.locator("#progress-badge")).to_have_text(
            "Complete", timeout=SLOW_MS
        )
        # The event's photos stay listed, with thumbnails and what was found in each.
        rows = photographer.locator("#photo-list .photo-row")
        await expect(rows).to_have_count(15)
        e12 = photographer.locator('#photo-list [data-filename="e12.jpg"]')
        await expect(e12.locator("[data-badge]")).to_have_text("Done")
        faces_in_e12 = data["event"]["e12.jpg"]["faces"]
        await expect(e12.locator("[data-detail]")).to_have_text(f"{faces_in_e12} faces found")
        await photographer.reload()
        await expect(rows).to_have_count(15)
        thumbs = await rows.locator("img").evaluate_all(
            "images => images.map(image => image.complete && image.naturalWidth)"
        )
        assert len(thumbs) == 15 and all(thumbs), thumbs

        # Each attendee's page filled up by itself, with exactly their photos.
        for person, page in attendees.items():
            expected = data["expected_my_photos"][person]
            await expect(page.locator("#photos .tile")).to_have_count(len(expected))
            assert sorted(await tile_names(page)) == sorted(expected)
            assert await page.evaluate("window.__notReloaded === true")
            await expect(page.get_by_test_id("photo-count")).to_have_text(f"{len(expected)} photos")

        # Lin is in none of them: once every photo is processed the page says so, and what to do.
        lin = attendees["lin_manuel_miranda"]
        await expect(lin.get_by_role("heading", name="No photos of you were found")).to_be_visible()
        await expect(lin.locator("#empty [data-text]")).to_contain_text(
            "All 15 photos of Summer gala are processed"
        )
        await expect(lin.get_by_test_id("processing")).to_have_text("Every photo is processed")
        await expect(lin.locator(".advice")).to_contain_text("Add a better selfie")
        await expect(lin.locator(".advice")).to_contain_text("up to 3 selfies")
        await expect(lin.locator(".advice")).to_contain_text("Ask the organiser")
        assert await lin.get_by_test_id("better-selfie").get_attribute("href") == (
            f"/selfie?next=/my-photos%3Fevent_id%3D{event_id}"
        )
        await shot(lin, "my-photos-none-found", "phone")

        # A failed photo is a failure, with its reason, and its organiser can retry it.
        await fail_photo_job(
            live_settings, filename="e11.jpg", error="RecognitionError: the engine crashed"
        )
        await photographer.reload()
        badge = photographer.locator("#progress-badge")
        await expect(badge).to_have_text("1 failed")
        assert "badge-danger" in (await badge.get_attribute("class") or "")
        await expect(photographer.locator("#failed-box")).to_contain_text(
            "1 photo could not be processed"
        )
        failed_row = photographer.locator('#photo-list [data-filename="e11.jpg"]')
        await expect(failed_row.locator("[data-badge]")).to_have_text("Failed")
        await expect(failed_row).to_contain_text("RecognitionError: the engine crashed")
        await thumbnails_shown(photographer)
        await shot(photographer, "event-failed", "desktop")
        await photographer.get_by_role("button", name="Show the failed photos").click()
        await expect(rows).to_have_count(1)
        await photographer.get_by_role("button", name="Retry the failed photo").click()
        await expect(photographer.locator("#toast")).to_contain_text("1 photo queued again")
        await expect(badge).to_have_text("Complete", timeout=SLOW_MS)
        await expect(photographer.locator("#failed-box")).to_be_hidden()
        await photographer.get_by_role("button", name=re.compile(r"^All")).click()
        await expect(rows).to_have_count(15)
        await expect(failed_row.locator("[data-badge]")).to_have_text("Done")

        # Obama (on the phone) opens one full-size, downloads it, and removes one: not me.
        obama = attendees["obama"]
        await obama.locator('#photos .tile[data-filename="e01.jpg"] .tile-open').click()
        viewer = obama.locator("#viewer")
        await expect(viewer).to_be_visible()
        await expect(viewer.locator("[data-image]")).to_have_js_property("complete", True)
        assert await viewer.locator("[data-image]").evaluate("img => img.naturalWidth") > 0
        async with obama.expect_download() as single:
            await viewer.get_by_role("link", name="Download").click()
        assert (await single.value).suggested_filename == "e01.jpg"
        arrow = viewer.get_by_role("button", name="Next photo")
        await expect(arrow).to_be_visible()
        box = await arrow.bounding_box()
        assert box is not None and box["width"] >= 48 and box["height"] >= 48
        look = await arrow.evaluate(
            "b => { const s = getComputedStyle(b); return [s.backgroundColor, s.borderTopWidth]; }"
        )
        alpha = re.match(r"rgba?\([^,]+,[^,]+,[^,]+(?:,\s*([\d.]+))?\)", look[0])
        assert alpha and float(alpha[1] or 1) >= 0.6 and float(look[1].rstrip("px")) >= 2, look
        await viewer.get_by_role("button", name="Close").click()

        removed = obama.locator('#photos .tile[data-filename="e13.jpg"]')
        await removed.get_by_role("button", name="Not me").click()
        confirm = removed.locator(".tile-confirm")
        await expect(confirm).to_be_visible()
        for part in (
            confirm,
            confirm.get_by_role("button", name="Remove"),
            confirm.get_by_role("button", name="Keep"),
        ):
            assert await inside(part, removed), "the confirmation overflows its tile"
        assert await confirm.evaluate("c => c.scrollHeight <= c.clientHeight + 1")
        await removed.screenshot(path=ARTIFACTS / "not-me-confirm-phone.png")
        await removed.get_by_role("button", name="Remove").click()
        await expect(removed).to_have_count(0)
        kept = sorted(set(data["expected_my_photos"]["obama"]) - {"e13.jpg"})
        assert sorted(await tile_names(obama)) == kept
        await obama.reload()
        await expect(obama.locator("#photos .tile")).to_have_count(len(kept))

        # The zip of all my photos, downloaded by the browser from the page's button.
        async with obama.expect_download() as bundle:
            await obama.get_by_role("link", name="Download all (zip)").click()
        path = tmp_path / "mine.zip"
        await (await bundle.value).save_as(path)
        with zipfile.ZipFile(path) as archive:
            assert sorted(archive.namelist()) == kept
            original = (faces / "event" / "e01.jpg").read_bytes()
            assert archive.read("e01.jpg") == original

        # A photo tile reached with the keyboard shows a ring, drawn inside the clipping tile.
        biden = attendees["biden"]
        await tab_to(biden, "#photos .tile-open")
        ring = await focus_ring(biden)
        assert ring["visible"] and ring["style"] == "solid" and ring["width"] >= 3, ring
        assert ring["offset"] <= -ring["width"], ring
        await biden.locator("#photos .tile").first.screenshot(
            path=ARTIFACTS / "tile-focus-desktop.png"
        )

        # The event's gallery shows Biden his own photos only, and says so.
        mine = sorted(data["expected_my_photos"]["biden"])
        await biden.goto(f"/gallery?event_id={event_id}")
        await expect(biden.get_by_test_id("gallery-scope")).to_contain_text(
            "Your photos of Summer gala"
        )
        await expect(biden.locator("#photos .tile")).to_have_count(len(mine))
        assert sorted(await tile_names(biden)) == mine
        # The photographer opens every photo to everyone who joined, from the event's page.
        choice = photographer.get_by_label("Everyone who joined sees all photos")
        await expect(
            photographer.get_by_label("Attendees see only their own photos")
        ).to_be_checked()
        await choice.check()
        await expect(photographer.locator("#toast")).to_contain_text(
            "Saved: everyone who joined sees all photos"
        )
        await photographer.reload()
        await expect(choice).to_be_checked()

        # The gallery pages through all 15 photos as you scroll (6 per page here).
        await biden.goto(f"/gallery?event_id={event_id}&limit=6")
        await expect(biden.get_by_test_id("gallery-scope")).to_contain_text(
            "All photos of Summer gala"
        )
        for _ in range(10):
            if await biden.locator("#photos .tile").count() == 15:
                break
            await biden.mouse.wheel(0, 4000)
            await biden.wait_for_timeout(200)
        await expect(biden.locator("#photos .tile")).to_have_count(15)
        lazy = await biden.locator("#photos img").evaluate_all("i => i.map(x => x.loading)")
        assert set(lazy) == {"lazy"}

        # The admin sees the work done, clears the caches, and retries a failed job.
        failed = await add_failed_job(
            live_settings, filename="e07.jpg", error="RecognitionError: the engine crashed"
        )
        admin = await (await contexts(base, "desktop")).new_page()
        await admin.goto("/admin")
        await sign_in(admin, admin_email)
        await expect(admin).to_have_url(f"{base}/admin")
        await expect(admin.get_by_test_id("processed")).to_have_text(re.compile(r"^\d+$"))
        assert int(await admin.get_by_test_id("processed").inner_text()) >= 15
        await expect(admin.locator('[data-cache="my_photos"]')).to_be_visible()
        await admin.get_by_role("button", name="Clear caches").click()
        await expect(admin.locator("#toast")).to_contain_text("Caches cleared")
        job = admin.locator(f'[data-job-id="{failed}"]')
        await expect(job).to_contain_text("the engine crashed")
        await expect(job.locator(".job-subject")).to_have_text("e07.jpg")
        await expect(job.locator(".job-event")).to_have_text("in Summer gala")
        await expect(admin.locator("#failed-figure")).to_have_class(re.compile(r"\bbad\b"))
        await shot(admin, "admin-failed-job", "desktop")
        await job.get_by_role("button", name="Retry").click()
        await expect(admin.locator("#toast")).to_contain_text(f"Job {failed} is queued again")
        await expect(job).to_have_count(0)
        for name in ("e08.png", "e09.jpg"):
            await add_failed_job(live_settings, filename=name, error="TimeoutError: 300 s")
        await expect(admin.locator("#failed .job")).to_have_count(2)
        await admin.get_by_role("button", name="Retry all").click()
        await expect(admin.locator("#toast")).to_contain_text("2 failed jobs queued again")
        await expect(admin.locator("#failed .job")).to_have_count(0)
        await expect(admin.get_by_test_id("failed-total")).to_have_text("0")
        await expect(admin.locator("#failed-figure")).not_to_have_class(re.compile(r"\bbad\b"))
        await expect(admin.get_by_role("button", name="Retry all")).to_be_hidden()
        # Timings come from the jobs table; every event and account is listed.
        await expect(admin.locator("#timings tr")).to_have_count(2)
        await expect(admin.locator(f'#events [data-event-id="{event_id}"]')).to_contain_text(
            "Pat Lens"
        )
        await expect(admin.locator("#users")).to_contain_text(photographer_email)
        # An admin's home page lists every event; an event that is not theirs is not "yours".
        await admin.goto("/")
        await expect(admin.get_by_role("heading", name="Every event")).to_be_visible()
        await expect(admin.get_by_test_id("event-list")).to_contain_text("by Pat Lens")
        await shot(admin, "home-admin", "desktop")
        await admin.goto(f"/events/{event_id}")
        await expect(admin.locator(".eyebrow")).to_have_text("Event · admin view")
        await expect(admin.locator(".page-head")).to_contain_text("Organised by Pat Lens")
        await thumbnails_shown(admin)
        await shot(admin, "event-admin", "desktop")
        await add_failed_job(live_settings, filename="e08.png", error="TimeoutError: 300 s")

        # A photo's address opened while signed out: sign in, and the photo shows.
        e01 = await photo_id_of(live_settings, "e01.jpg")
        stranger = await (await contexts(base, "desktop")).new_page()
        await stranger.goto(f"/api/photo/{e01}")
        await expect(stranger).to_have_url(f"{base}/login?next=/api/photo/{e01}")
        await sign_in(stranger, emails["obama"])
        await expect(stranger).to_have_url(f"{base}/api/photo/{e01}")
        await expect(stranger.locator("img")).to_have_js_property("complete", True)
        assert await stranger.locator("img").evaluate("img => img.naturalWidth") > 0

        # Every page at both sizes, for a person to look at.
        await screenshot_every_page(
            contexts,
            base,
            event_id=event_id,
            code=code,
            pages={"photographer": photographer, "obama": obama, "admin": admin},
            folder=tmp_path,
        )
        contexts.assert_no_errors()
        # The server then stops with live streams still open in the browser.


async def screenshot_every_page(
    contexts, base: str, *, event_id: int, code: str, pages, folder: Path
) -> None:
    not_a_photo = folder / "notes.txt"
    not_a_photo.write_text("not a photo")
    again = [faces_dir() / "event" / "e01.jpg", faces_dir() / "event" / "e02.jpg", not_a_photo]
    visits = {
        "photographer": [("home-photographer", "/"), ("event", f"/events/{event_id}")],
        "obama": [
            ("my-photos", f"/my-photos?event_id={event_id}"),
            ("gallery", f"/gallery?event_id={event_id}"),
            ("join-joined", f"/join/{code}"),
            ("selfie", "/selfie"),
            ("account", "/account"),
            ("home-attendee", "/"),
            ("forbidden", "/admin"),
        ],
        "admin": [("admin", "/admin")],
        None: [("home", "/"), ("login", "/login"), ("register", "/register"), ("not-found", "/x")],
    }
    for who, targets in visits.items():
        state = await pages[who].context.storage_state() if who else None
        for size in SIZES:
            page = await (await contexts(base, size, storage_state=state)).new_page()
            for name, target in targets:
                await page.goto(target)
                if name in {"my-photos", "gallery"}:
                    await expect(page.locator("#photos .tile").first).to_be_visible()
                    await page.wait_for_load_state("networkidle")
                if name == "event":
                    await thumbnails_shown(page)
                if name == "admin":
                    await expect(page.get_by_test_id("processed")).to_have_text(
                        re.compile(r"^\d+$")
                    )
                await shot(page, name, size)
            if who == "photographer":
                # The upload list: already uploaded photos, and a file that is no photo.
                await page.goto(f"/events/{event_id}")
                await page.locator("#files").set_input_files(again)
                await expect(page.locator('[data-tally="rejected"]')).to_have_text("1 rejected")
                await expect(page.locator('[data-tally="duplicate"]')).to_have_text(
                    "2 already uploaded"
                )
                await thumbnails_shown(page)
                await shot(page, "event-upload-results", size)
            if who == "obama":
                await page.goto(f"/my-photos?event_id={event_id}")
                await page.locator("#photos .tile .tile-open").first.click()
                await expect(page.locator("#viewer [data-image]")).to_have_js_property(
                    "complete", True
                )
                await shot(page, "viewer", size)
            await page.context.close()


@pytest.mark.timeout(400)
async def test_selfie_page_keeps_up_to_three_selfies(server, contexts) -> None:
    page = await (await contexts(server.url, "phone")).new_page()
    await page.goto("/register")
    await sign_up(page, "Joe", f"joe-{uuid.uuid4().hex[:6]}@example.com")
    await expect(page).to_have_url(re.compile(r"/selfie"))
    await page.goto("/selfie")
    selfie = faces_dir() / manifest()["selfies"]["biden"]
    await page.locator("#file").set_input_files(selfie)
    await page.get_by_label("I agree").check()
    await page.get_by_role("button", name="Save my selfie").click()
    await expect(page.locator("[data-success]")).to_contain_text("saved", timeout=SLOW_MS)

    await page.reload()
    await expect(page.get_by_role("heading", name="Your selfies")).to_be_visible()
    tiles = page.locator(".selfie-item")
    await expect(tiles).to_have_count(1)
    for count in (2, 3):
        await page.locator("#file").set_input_files(selfie)
        await page.get_by_label("I agree").check()
        await page.get_by_role("button", name="Add this selfie").click()
        await expect(tiles).to_have_count(count, timeout=SLOW_MS)
    # Each tile shows its image (the owner's JPEG), and a full page says why there is no form.
    await page.wait_for_function(
        "() => [...document.querySelectorAll('.selfie-item img')]"
        ".every(image => image.complete && image.naturalWidth > 0)"
    )
    await expect(page.locator("[data-full]")).to_contain_text("Remove one to add another")
    await expect(page.locator("#selfie-form")).to_have_count(0)
    await shot(page, "selfies-full", "phone")

    await tiles.first.get_by_role("button", name="Remove").click()
    await expect(tiles).to_have_count(2)
    await expect(page.get_by_role("button", name="Add this selfie")).to_be_visible()
    contexts.assert_no_errors()


@pytest.mark.timeout(400)
async def test_selfie_page_explains_no_face_and_several_faces(server, contexts, tmp_path) -> None:
    page = await (await contexts(server.url, "phone")).new_page()
    await page.goto("/register?next=/my-photos")
    await sign_up(page, "Lin", f"lin-{uuid.uuid4().hex[:6]}@example.com")
    await expect(page).to_have_url(re.compile(r"/selfie\?next=%2Fmy-photos"))
    assert await page.locator("#camera").get_attribute("capture") == "user"
    assert await page.locator("#camera").get_attribute("accept") == "image/*"
    await expect(page.locator(".consent")).to_contain_text("biometric data")
    await expect(page.locator(".consent")).to_contain_text("Erase my data")

    error = page.locator("#selfie-form [data-error]")
    await page.locator("#file").set_input_files(a_photo_without_a_face(tmp_path))
    await page.get_by_role("button", name="Save my selfie").click()
    await expect(error).to_contain_text("Tick the box")
    await page.get_by_label("I agree").check()
    await page.get_by_role("button", name="Save my selfie").click()
    await expect(error).to_contain_text("could not find a face", timeout=SLOW_MS)
    await expect(error).to_contain_text("good light")
    await shot(page, "selfie-no-face", "phone")

    await page.locator("#file").set_input_files(faces_dir() / "event" / "e12.jpg")
    await page.get_by_role("button", name="Save my selfie").click()
    await expect(error).to_contain_text("several faces", timeout=SLOW_MS)
    await expect(page).to_have_url(re.compile(r"/selfie"))
    contexts.assert_no_errors()


async def test_a_selfie_chosen_before_the_page_script_ran_is_taken(
    server, contexts, tmp_path
) -> None:
    """On a slow phone a person can pick a photo before the page's script has loaded."""
    page = await (await contexts(server.url, "phone")).new_page()
    await page.goto("/register?next=/my-photos")
    script_may_load = await hold_back(page, "**/selfie_picker.js*")
    await sign_up(page, "Noor", f"noor-{uuid.uuid4().hex[:6]}@example.com")
    await expect(page).to_have_url(re.compile(r"/selfie"))
    await page.locator("#file").set_input_files(a_photo_without_a_face(tmp_path))
    script_may_load.set()

    await expect(page.locator("[data-filename]")).to_contain_text("Chosen: wall.jpg")
    await page.get_by_role("button", name="Save my selfie").click()
    await expect(page.locator("#selfie-form [data-error]")).to_contain_text("Tick the box")
    contexts.assert_no_errors()


async def test_photos_chosen_before_the_event_page_script_ran_are_uploaded(
    server, contexts, tmp_path
) -> None:
    page = await organiser_of_a_new_event(server, contexts, "Sam Shutter", "Late script")
    script_may_load = await hold_back(page, "**/js/event.js*")
    await page.reload(wait_until="commit")
    await page.locator("#files").set_input_files(small_photos(tmp_path, 2))
    script_may_load.set()
    await expect(page.locator("#upload-summary")).to_have_text("Upload finished: 2 files")
    contexts.assert_no_errors()


async def test_a_form_cannot_be_sent_before_the_page_script_ran(server, contexts) -> None:
    """A tap on a slow phone before the script loaded once sent the form natively: a GET of the
    page with every field, the password among them, in the address and the server's log."""
    email = await add_account(server.settings, Role.photographer, "Val Early")
    page = await (await contexts(server.url, "phone")).new_page()
    addresses: list[str] = []
    page.on("request", lambda request: addresses.append(request.url))
    script_may_load = await hold_back(page, "**/js/auth.js*")
    await page.goto("/login", wait_until="commit")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    sign_in_button = page.get_by_role("button", name="Sign in")
    await expect(sign_in_button).to_be_disabled()
    await page.get_by_label("Password").press("Enter")

    script_may_load.set()
    await sign_in_button.click()
    await expect(page.get_by_role("heading", name="Your events")).to_be_visible()
    assert not [address for address in addresses if PASSWORD in unquote_plus(address)]

    script_may_load = await hold_back(page, "**/js/home.js*")
    await page.reload(wait_until="commit")
    await page.get_by_label("Event name").fill("Early tap")
    create = page.get_by_role("button", name="Create event")
    await expect(create).to_be_disabled()
    script_may_load.set()
    await create.click()
    await expect(page).to_have_url(re.compile(r"/events/\d+$"))
    contexts.assert_no_errors()


async def test_sign_in_comes_back_and_account_pages(
    server, contexts, make_user, make_event
) -> None:
    email = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    page = await (await contexts(server.url, "desktop")).new_page()
    await page.goto("/register")
    await sign_up(page, "Ada", email)
    await expect(page).to_have_url(re.compile(r"/selfie"))

    # Without a selfie, the join link asks for it right there: one button saves it and joins.
    event = await make_event(await make_user("photographer"), name="Book fair")
    await page.goto(f"/join/{event['code']}")
    await expect(page.get_by_role("button", name="Join and find my photos")).to_be_visible()
    await expect(page.get_by_label("I agree")).not_to_be_checked()
    await shot(page, "join-needs-selfie", "desktop")

    await page.goto("/account")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(f"{server.url}/")

    # Signed out, "My photos" leads to sign-in, and sign-in leads back.
    await page.goto("/my-photos")
    await expect(page).to_have_url(f"{server.url}/login?next=/my-photos")
    await page.get_by_label("Password").fill("wrong password")
    await page.get_by_label("Email").fill(email)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#login-form [data-error]")).to_contain_text("wrong")
    await sign_in(page, email)
    await expect(page).to_have_url(f"{server.url}/my-photos")
    await expect(page.get_by_role("heading", name="Join an event first")).to_be_visible()

    # Pages for other roles say so; unknown pages too; nothing leaks a stack trace.
    await page.goto("/admin")
    await expect(
        page.get_by_role("heading", name="This page is not for your account")
    ).to_be_visible()
    await expect(page.get_by_test_id("error-detail")).to_contain_text("admin")
    await page.goto("/events/424242")
    await expect(page.get_by_test_id("error-detail")).to_contain_text("no event")
    await page.goto("/join/NOSUCHCODE")
    await expect(page.get_by_test_id("error-detail")).to_contain_text("No event has this code")
    # The code can be typed again right there; case, spaces and dashes do not matter.
    field = page.get_by_label("Event code")
    await expect(field).to_have_value("NOSUCHCODE")
    await shot(page, "join-unknown-code", "desktop")
    typed = event["code"].lower()
    await field.fill(f"{typed[:4]}-{typed[4:]}")
    await page.get_by_role("button", name="Join").click()
    await expect(page).to_have_url(f"{server.url}/join/{event['code']}")
    await expect(page.get_by_role("heading", name="Book fair")).to_be_visible()
    # A malformed code typed on the home page is explained, not silently dropped.
    await page.goto("/")
    await page.locator("#code").fill("AB!CD")
    await page.locator("#code").press("Enter")
    await expect(page.get_by_test_id("error-detail")).to_contain_text("only letters and digits")
    await expect(page.get_by_label("Event code")).to_have_value("AB!CD")
    await shot(page, "join-bad-code", "desktop")
    await page.get_by_label("Event code").fill(event["code"])
    await page.get_by_label("Event code").press("Enter")
    await expect(page).to_have_url(f"{server.url}/join/{event['code']}")

    # Only same-site "next" values are followed after signing in.
    await page.goto("/account")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(f"{server.url}/")
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        await page.goto(f"/login?next={target}")
        await sign_in(page, email)
        await expect(page).to_have_url(f"{server.url}/")
        await page.goto("/account")
        await page.get_by_role("button", name="Sign out").click()
        await expect(page).to_have_url(f"{server.url}/")

    # Erasing my data takes a confirmation, then the account is gone.
    await page.goto("/login?next=/account")
    await sign_in(page, email)
    await page.get_by_role("button", name="Erase my data…").click()
    await page.get_by_role("button", name="Erase everything now").click()
    await expect(page.locator("#erase-confirm [data-error]")).to_contain_text("Tick the box")
    await shot(page, "account-erase", "desktop")
    await page.get_by_label("I understand").check()
    await page.get_by_role("button", name="Erase everything now").click()
    await expect(page).to_have_url(f"{server.url}/?erased=1")
    await expect(page.get_by_text("Your account and all its data are erased.")).to_be_visible()
    await page.goto("/login")
    await sign_in(page, email)
    await expect(page.locator("#login-form [data-error]")).to_be_visible()
    assert "Traceback" not in await page.content()
    contexts.assert_no_errors()


async def hold_back(page: Page, script: str) -> asyncio.Event:
    """The page's requests for `script` wait until the returned event is set (a slow network)."""
    may_load = asyncio.Event()

    async def held(route: Route) -> None:
        await may_load.wait()
        await route.continue_()

    await page.route(script, held)
    return may_load


async def organiser_of_a_new_event(server, contexts, name: str, event_name: str) -> Page:
    """A photographer's phone, signed in, on the page of the event they just created."""
    email = await add_account(server.settings, Role.photographer, name)
    page = await (await contexts(server.url, "phone")).new_page()
    await page.goto("/login")
    await sign_in(page, email)
    await page.get_by_label("Event name").fill(event_name)
    await page.get_by_role("button", name="Create event").click()
    await expect(page).to_have_url(re.compile(r"/events/\d+$"))
    return page


def small_photos(folder: Path, count: int) -> list[Path]:
    """Plain JPEGs (no face), each of its own colour so that none is a duplicate."""
    paths = []
    for index in range(count):
        path = folder / f"p{index}.jpg"
        Image.new("RGB", (320, 240), (40 * index % 255, 120, 200 - 30 * index)).save(path, "JPEG")
        paths.append(path)
    return paths


# Drops files on an element as a person dragging them from their desktop does.
DROP_FILES = """(zone, files) => {
    const transfer = new DataTransfer();
    for (const [name, bytes] of files) {
        const data = Uint8Array.from(atob(bytes), (char) => char.charCodeAt(0));
        transfer.items.add(new File([data], name, { type: "image/jpeg" }));
    }
    const options = { dataTransfer: transfer, bubbles: true, cancelable: true };
    zone.dispatchEvent(new DragEvent("drop", options));
}"""


@pytest.mark.timeout(300)
async def test_organiser_page_keeps_the_photos_and_deletes_photos_and_the_event(
    server, contexts, tmp_path
) -> None:
    page = await organiser_of_a_new_event(server, contexts, "Pat Lens", "Book fair")
    event_id = int(page.url.rsplit("/", 1)[1])
    code = (await page.get_by_test_id("event-code").inner_text()).strip()

    # The whole join link shows on the phone, inside its card.
    link = page.get_by_test_id("join-url")
    assert await link.input_value() == f"{server.url}/join/{code}"
    assert await link.evaluate("t => t.scrollWidth <= t.clientWidth")
    assert await link.evaluate("t => t.scrollHeight <= t.clientHeight + 1")
    assert await inside(link, page.locator(".share"))

    # Files dragged over the zone light it up plainly; dropped, they are uploaded.
    zone = page.locator("#dropzone")
    await zone.dispatch_event(
        "dragenter", {"dataTransfer": await page.evaluate_handle("new DataTransfer()")}
    )
    await expect(zone).to_have_class(re.compile(r"\bover\b"))
    await expect(zone.get_by_text("Release to upload")).to_be_visible()
    border = await zone.evaluate(
        "z => [getComputedStyle(z).borderTopStyle, parseFloat(getComputedStyle(z).borderTopWidth)]"
    )
    assert border[0] == "solid" and border[1] >= 3, border
    await zone.screenshot(path=ARTIFACTS / "dropzone-over-phone.png")
    photos = small_photos(tmp_path, 5)
    dropped = [(path.name, base64.b64encode(path.read_bytes()).decode()) for path in photos[:2]]
    await zone.evaluate(DROP_FILES, dropped)
    await expect(zone).not_to_have_class(re.compile(r"\bover\b"))
    await expect(page.locator("#upload-summary")).to_have_text("Upload finished: 2 files")
    await page.locator("#files").set_input_files(photos[2:])
    await expect(page.locator("#upload-summary")).to_have_text("Upload finished: 5 files")

    # After a reload the photos are still listed (no worker runs here: all are waiting),
    # a page at a time.
    await page.goto(f"/events/{event_id}?limit=2")
    rows = page.locator("#photo-list .photo-row")
    await expect(rows).to_have_count(2)
    await expect(page.locator("#photos-total")).to_have_text("5")
    more = page.get_by_role("button", name="Show more photos")
    await more.click()
    await expect(rows).to_have_count(4)
    await more.click()
    await expect(rows).to_have_count(5)
    await expect(more).to_be_hidden()
    assert sorted(await rows.evaluate_all("r => r.map(x => x.dataset.filename)")) == [
        path.name for path in photos
    ]
    await expect(rows.first.locator("[data-badge]")).to_have_text("Waiting")

    # A photo is deleted after a confirmation, for good.
    doomed = page.locator('#photo-list [data-filename="p0.jpg"]')
    await doomed.get_by_role("button", name="Delete p0.jpg").click()
    await expect(doomed.locator(".row-confirm")).to_contain_text("Delete it for everyone")
    await shot(page, "event-photo-delete", "phone")
    await doomed.locator(".row-confirm").get_by_role("button", name="Delete").click()
    await expect(doomed).to_have_count(0)
    await expect(page.locator("#toast")).to_contain_text("p0.jpg is deleted")
    await page.reload()
    await expect(rows).to_have_count(2)
    await expect(page.locator("#photos-total")).to_have_text("4")
    await shot(page, "event-manage", "phone")

    # The event too, after ticking that the loss is understood.
    await page.get_by_role("button", name="Delete this event…").click()
    await page.get_by_role("button", name="Delete the event for good").click()
    await expect(page.locator("#delete-confirm [data-error]")).to_contain_text("Tick the box")
    await expect(page.locator("#delete-confirm")).to_contain_text("and its 4 photos")
    await page.locator("#delete-confirm").get_by_role("checkbox").check()
    await page.get_by_role("button", name="Delete the event for good").click()
    await expect(page).to_have_url(f"{server.url}/?deleted=1")
    await expect(page.get_by_text("The event is deleted")).to_be_visible()
    await expect(page.get_by_test_id("event-list")).to_have_count(0)
    await page.goto(f"/events/{event_id}")
    await expect(page.get_by_test_id("error-detail")).to_contain_text("no event")
    contexts.assert_no_errors()


@pytest.mark.timeout(300)
async def test_organiser_closes_joining_lets_the_code_expire_and_makes_a_new_code(
    server, contexts
) -> None:
    async def card_shot(page: Page, name: str) -> None:
        # Clipped from the whole page: an element's own screenshot scrolls it under the header.
        # The passing toast would cover part of it.
        await page.locator("#toast").evaluate("toast => { toast.hidden = true; }")
        await page.evaluate("window.scrollTo(0, 0)")
        box = await page.locator("#joining").bounding_box()
        assert box is not None
        await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True, clip=box)

    closed_sentence = "This event is not taking new guests. Ask the organiser."
    expired_sentence = "This join code has expired. Ask the organiser for a new one."
    organiser_email = await add_account(server.settings, Role.photographer, "Pat Lens")
    guest_email = await add_account(server.settings, Role.attendee, "Gil Guest")
    organiser = await (await contexts(server.url, "desktop")).new_page()
    await organiser.goto("/login")
    await sign_in(organiser, organiser_email)
    await organiser.get_by_label("Event name").fill("Harbour party")
    await organiser.get_by_role("button", name="Create event").click()
    await expect(organiser).to_have_url(re.compile(r"/events/\d+$"))
    event_path = organiser.url.removeprefix(server.url)
    code = (await organiser.get_by_test_id("event-code").inner_text()).strip()
    join_url = await organiser.get_by_test_id("join-url").input_value()
    card = organiser.locator("#joining")
    state = card.get_by_test_id("joining-state")
    badge = card.locator("#joining-badge")
    await expect(badge).to_have_text("Open")
    await expect(state).to_have_text(
        "Open: anyone with the code, the link or the QR code can join."
    )

    # The organiser closes joining: a guest's link says so, in a finished page.
    await card.get_by_label("New guests can join").uncheck()
    await expect(organiser.locator("#toast")).to_contain_text("Joining is closed")
    await expect(badge).to_have_text("Closed")
    await expect(state).to_contain_text("Closed: nobody new can join")
    await card_shot(organiser, "joining-closed-desktop")
    guest = await (await contexts(server.url, "phone")).new_page()
    await guest.goto(join_url)
    # Signed out, the link says so too, and offers those who joined before to sign in.
    await expect(guest.get_by_test_id("error-detail")).to_have_text(closed_sentence)
    await guest.locator("main").get_by_role("link", name="Sign in").click()
    await sign_in(guest, guest_email)
    await expect(guest).to_have_url(join_url)
    await expect(guest.get_by_test_id("error-detail")).to_have_text(closed_sentence)
    await expect(guest.get_by_role("heading", name="Harbour party")).to_be_visible()
    await expect(guest.get_by_role("link", name="Go to the home page")).to_be_visible()
    await shot(guest, "join-closed", "phone")
    desktop_guest = await (
        await contexts(server.url, "desktop", storage_state=await guest.context.storage_state())
    ).new_page()
    await desktop_guest.goto(join_url)
    await expect(desktop_guest.get_by_test_id("error-detail")).to_have_text(closed_sentence)
    await shot(desktop_guest, "join-closed", "desktop")

    # Reopened, the same link leads on to joining (with a selfie, for this guest).
    await card.get_by_label("New guests can join").check()
    await expect(badge).to_have_text("Open")
    await guest.reload()
    await expect(guest.get_by_role("button", name="Join and find my photos")).to_be_visible()

    # An expiry already past stops the code at once; cleared, the code works again.
    expires = card.get_by_label("The code stops working on")
    await expires.fill("2020-01-01T10:00")
    await card.get_by_role("button", name="Save").click()
    await expect(badge).to_have_text("Code expired")
    await expect(state).to_contain_text("The code expired on")
    await card_shot(organiser, "joining-expired-desktop")
    await guest.reload()
    await expect(guest.get_by_test_id("error-detail")).to_have_text(expired_sentence)
    await expect(guest.get_by_label("New event code")).to_be_visible()
    await shot(guest, "join-expired", "phone")
    await card.get_by_role("button", name="Clear").click()
    await expect(badge).to_have_text("Open")
    await expect(expires).to_have_value("")
    await expires.fill("2099-06-30T23:00")
    await card.get_by_role("button", name="Save").click()
    await expect(state).to_contain_text("Open until")
    await organiser.reload()
    await expect(expires).to_have_value("2099-06-30T23:00")
    await expect(state).to_contain_text("Open until")
    await card_shot(organiser, "joining-until-desktop")

    # A new code, after a confirmation: the code, link and QR code shown are the new ones,
    # and the old link answers as an unknown code does.
    qr = organiser.locator("img.qr")
    await card.get_by_role("button", name="New code…").click()
    confirm = card.locator("#new-code-confirm")
    await expect(confirm).to_contain_text("stop working at once")
    await confirm.get_by_role("button", name="Keep this code").click()
    await expect(confirm).to_be_hidden()
    await expect(organiser.get_by_test_id("event-code")).to_have_text(code)
    await card.get_by_role("button", name="New code…").click()
    await confirm.get_by_role("button", name="Make a new code").click()
    await expect(organiser.get_by_test_id("event-code")).not_to_have_text(code)
    new_code = (await organiser.get_by_test_id("event-code").inner_text()).strip()
    await expect(organiser.get_by_test_id("join-url")).to_have_value(
        f"{server.url}/join/{new_code}"
    )
    await expect(qr).to_have_attribute("src", re.compile(f"code={new_code}$"))
    await expect(qr).to_have_js_property("complete", True)
    assert await qr.evaluate("img => img.naturalWidth > 0")
    await expect(badge).to_have_text("Open")
    await expect(expires).to_have_value("")
    await expect(organiser.locator("#toast")).to_contain_text(f"New code: {new_code}")
    await guest.goto(join_url)
    await expect(guest.get_by_role("heading", name="Check the event code")).to_be_visible()
    await expect(guest.get_by_test_id("error-detail")).to_contain_text("No event has this code")
    await guest.goto(f"/join/{new_code}")
    await expect(guest.get_by_role("button", name="Join and find my photos")).to_be_visible()

    # The card, finished, on both screens.
    for size in SIZES:
        state_of = await organiser.context.storage_state()
        page = await (await contexts(server.url, size, storage_state=state_of)).new_page()
        await page.goto(event_path)
        joining = page.locator("#joining")
        await expect(joining.locator("#joining-badge")).to_have_text("Open")
        for part in ("#code-expires", "#expiry-clear", "#new-code-start"):
            assert await inside(joining.locator(part), joining), part
        await shot(page, "event-joining", size)
        await card_shot(page, f"joining-card-{size}")
        await joining.get_by_role("button", name="New code…").click()
        await card_shot(page, f"joining-new-code-{size}")
    contexts.assert_no_errors()


async def test_api_tokens_are_made_shown_once_and_revoked_on_the_account_page(
    server, contexts
) -> None:
    email = await add_account(server.settings, Role.photographer, "Pat Lens")
    context = await contexts(server.url, "desktop")
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = await context.new_page()
    await page.goto("/login?next=/account")
    await sign_in(page, email)
    await expect(page).to_have_url(f"{server.url}/account")
    await expect(page.get_by_text("You have no API tokens.")).to_be_visible()

    await page.get_by_role("button", name="Create token").click()
    await expect(page.locator("#token-form [data-error]")).to_contain_text("name")
    await page.get_by_label("Token name").fill("studio laptop")
    await page.get_by_role("button", name="Create token").click()
    shown = page.get_by_test_id("new-token")
    await expect(shown).to_be_visible()
    await expect(shown).to_contain_text("shown only once")
    await expect(page.locator("#new-token-value")).to_have_text(re.compile(r"^fm_"))
    token = (await page.locator("#new-token-value").text_content() or "").strip()
    assert token.startswith("fm_")
    await page.get_by_role("button", name="Copy").click()
    assert await page.evaluate("navigator.clipboard.readText()") == token
    listed = page.get_by_test_id("token-list").locator("li")
    await expect(listed).to_have_count(1)
    await expect(listed).to_contain_text("studio laptop")
    await shot(page, "account-tokens", "desktop")

    # The token works for scripts until it is revoked here.
    async with server.client(headers={"authorization": f"Bearer {token}"}) as script:
        assert (await script.get("/api/me")).status_code == 200
        await listed.get_by_role("button", name="Revoke").click()
        await expect(listed).to_have_count(0)
        assert (await script.get("/api/me")).status_code == 401
    # Shown once: a reload does not show it again.
    await page.reload()
    await expect(page.get_by_test_id("new-token")).to_be_hidden()
    assert token not in await page.content()
    contexts.assert_no_errors()


async def test_forgotten_password_by_emailed_link(settings, contexts, tmp_path) -> None:
    from aiosmtpd.controller import Controller

    from tests.conftest import free_port
    from tests.test_passwords import Inbox, link_in

    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    mailing = dataclasses.replace(
        settings, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False
    )
    try:
        async with serve(mailing) as url:
            email = await add_account(mailing, Role.attendee, "Sam Forgetful")
            page = await (await contexts(url, "phone")).new_page()
            await page.goto("/login")
            await page.get_by_role("link", name="Forgot your password?").click()
            await expect(page).to_have_url(f"{url}/forgot-password")
            await page.get_by_label("Email").fill(email)
            await page.get_by_role("button", name="Send me a link").click()
            await expect(page.get_by_test_id("forgot-sent")).to_contain_text("If an account exists")
            await shot(page, "forgot-password", "phone")
            link, _ = link_in((await inbox.wait_for(1))[0])

            await page.goto(link)
            await page.get_by_label("New password").fill("short")
            await page.get_by_role("button", name="Change my password").click()
            await expect(page.locator("#reset-form [data-error]")).to_contain_text("8 characters")
            await page.get_by_label("New password").fill("a new long passphrase")
            await page.get_by_role("button", name="Change my password").click()
            await expect(page.get_by_test_id("reset-done")).to_contain_text("password is changed")
            await shot(page, "reset-password", "phone")
            # The link works once.
            await page.goto(link)
            await page.get_by_label("New password").fill("another long passphrase")
            await page.get_by_role("button", name="Change my password").click()
            await expect(page.locator("#reset-form [data-error]")).to_contain_text("already used")

            await page.goto("/login")
            await page.get_by_label("Email").fill(email)
            await page.get_by_label("Password").fill("a new long passphrase")
            await page.get_by_role("button", name="Sign in").click()
            await expect(page).to_have_url(f"{url}/")
            contexts.assert_no_errors()
    finally:
        controller.stop()


@pytest.mark.timeout(300)
async def test_my_photos_page_recovers_from_a_full_server_and_shows_new_matches(
    settings, contexts
) -> None:
    one_stream = dataclasses.replace(settings, max_streams=1)
    async with serve(one_stream) as base, httpx.AsyncClient(base_url=base, timeout=60) as pat:
        photographer_email = await add_account(settings, Role.photographer, "Pat Lens")
        attendee_email = await add_account(settings, Role.attendee, "Ann Guest")
        login = await pat.post(
            "/api/auth/login", json={"email": photographer_email, "password": PASSWORD}
        )
        pat.headers["x-csrf-token"] = login.json()["csrf_token"]
        event = (await pat.post("/api/events", json={"name": "Gala", "date": "2026-06-30"})).json()
        [photo_id] = await upload(pat, event["id"], ("arrival.jpg", jpeg(7)))
        async with httpx.AsyncClient(base_url=base, timeout=60) as ann:
            login = await ann.post(
                "/api/auth/login", json={"email": attendee_email, "password": PASSWORD}
            )
            ann.headers["x-csrf-token"] = login.json()["csrf_token"]
            await join(ann, event)

        page = await (await contexts(base, "phone")).new_page()
        async with open_stream(pat) as blocker:
            # The one slot is taken: the page's stream is refused (503) and it says it retries.
            await page.goto("/login?next=/my-photos")
            await sign_in(page, attendee_email)
            await expect(page).to_have_url(f"{base}/my-photos?event_id={event['id']}")
            await page.wait_for_load_state()
            await page.evaluate("window.__notReloaded = true")
            await expect(page.locator("#live")).to_have_attribute("data-state", "retry")
            await blocker.until_ready()
        # The slot is free again: the page's next attempt gets in by itself, without a reload.
        await expect(page.locator("#live")).to_have_text("Live", timeout=30_000)
        db = Database(settings)
        try:
            async with db.sessions() as session:
                user_id = await session.scalar(select(User.id).where(User.email == attendee_email))
        finally:
            await db.aclose()
        await add_matches(settings, user_id=user_id, event_id=event["id"], photo_ids=[photo_id])
        await expect(page.locator('#photos .tile[data-filename="arrival.jpg"]')).to_have_count(1)
        # Offline, the page says so; back online, it is live again.
        await page.context.set_offline(True)
        await expect(page.locator("#live")).to_have_text("Offline — reconnecting…")
        await page.context.set_offline(False)
        await expect(page.locator("#live")).to_have_text("Live", timeout=30_000)
        assert await page.evaluate("window.__notReloaded === true")
    contexts.assert_no_errors()


async def test_a_photo_is_shared_by_a_copied_link_and_turned_off(server, contexts) -> None:
    photographer_email = await add_account(server.settings, Role.photographer, "Pat Lens")
    attendee_email = await add_account(server.settings, Role.attendee, "Ann Guest")
    async with server.client() as pat, server.client() as ann:
        for client, email in ((pat, photographer_email), (ann, attendee_email)):
            login = await client.post(
                "/api/auth/login", json={"email": email, "password": PASSWORD}
            )
            client.headers["x-csrf-token"] = login.json()["csrf_token"]
        event = (await pat.post("/api/events", json={"name": "Harbour Gala"})).json()
        photo = (faces_dir() / "event" / "e02.jpg").read_bytes()
        [photo_id] = await upload(pat, event["id"], ("ann-at-the-bar.jpg", photo))
        await join(ann, event)
        ann_id = (await ann.get("/api/me")).json()["user"]["id"]
    await add_matches(server.settings, user_id=ann_id, event_id=event["id"], photo_ids=[photo_id])

    context = await contexts(server.url, "phone")
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    # Whatever this Chromium offers, the walk takes the path of browsers without a share sheet.
    await context.add_init_script("delete Navigator.prototype.share")
    page = await context.new_page()
    await page.goto(f"/login?next=/my-photos?event_id={event['id']}")
    await sign_in(page, attendee_email)
    await page.locator('#photos .tile[data-filename="ann-at-the-bar.jpg"] .tile-open').click()
    viewer = page.locator("#viewer")
    await expect(viewer.locator("[data-image]")).to_have_js_property("complete", True)
    await viewer.get_by_role("button", name="Share").click()
    await expect(viewer.get_by_role("status")).to_contain_text("Link copied")
    await page.screenshot(path=ARTIFACTS / "share-copied-phone.png")
    link = await page.evaluate("navigator.clipboard.readText()")
    assert re.fullmatch(rf"{re.escape(server.url)}/s/[A-Za-z0-9_-]{{32}}", link), link

    # Whoever gets the link sees the photo, signed out, and nothing of Ann or the event's other
    # photos.
    stranger = await (await contexts(server.url, "phone")).new_page()
    await stranger.goto(link)
    await expect(stranger.get_by_test_id("shared-event")).to_have_text("Harbour Gala")
    shown = stranger.get_by_test_id("shared-photo")
    await expect(shown).to_have_js_property("complete", True)
    assert await shown.evaluate("img => img.naturalWidth") == 1480
    await expect(stranger.get_by_role("link", name="Download the original")).to_be_visible()
    assert "Ann Guest" not in await stranger.content()
    await shot(stranger, "share-page", "phone")

    # Ann's account lists the link, opened once, and turns it off.
    await page.goto("/account")
    listed = page.get_by_test_id("share-list").locator("li")
    await expect(listed).to_have_count(1)
    await expect(listed).to_contain_text("Harbour Gala")
    await expect(listed).to_contain_text("Opened 1 time")
    await shot(page, "account-share-links", "phone")
    await listed.get_by_role("button", name="Turn off").click()
    await expect(listed).to_have_count(0)
    await expect(page.get_by_text("You have not shared any photo.")).to_be_visible()

    await stranger.reload()
    await expect(stranger.get_by_test_id("error-detail")).to_have_text(
        "This link was turned off by the person who shared it, or never existed."
    )
    await shot(stranger, "share-gone", "phone")
    contexts.assert_no_errors()
