"""Emailed links in Chromium: the organiser allows sign-in by emailed link, a returning guest
signs in by it on a phone, and a signed-in guest without a selfie joins with one tap after
choosing it; a sign-up is finished by its link's button."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from findme.db import Role
from tests import test_passwords
from tests.browser import SIZES, SLOW_MS, add_account, shot, sign_in, sign_up
from tests.conftest import serve
from tests.shared_faces import faces_dir, manifest
from tests.test_passwords import link_in

pytestmark = pytest.mark.browser

# The local mail server, and the settings that send to it, of the password-reset tests.
inbox = test_passwords.inbox
settings = test_passwords.settings


@pytest.mark.timeout(240)
async def test_a_guest_signs_in_by_an_emailed_link_and_joins_with_a_selfie(
    settings, contexts, inbox
) -> None:
    mails, _ = inbox
    async with serve(settings) as url:
        organiser_email = await add_account(settings, Role.photographer, "Pat Lens")
        guest_email = await add_account(settings, Role.attendee, "Gil Guest")
        organiser = await (await contexts(url, "desktop")).new_page()
        await organiser.goto("/login")
        await sign_in(organiser, organiser_email)
        await organiser.get_by_label("Event name").fill("Harbour party")
        await organiser.get_by_role("button", name="Create event").click()
        await expect(organiser).to_have_url(re.compile(r"/events/\d+$"))
        join_url = await organiser.get_by_test_id("join-url").input_value()

        # Off until the organiser turns it on: the join page offers no link by email.
        guest = await (await contexts(url, "phone")).new_page()
        await guest.goto(join_url)
        await expect(guest.get_by_role("button", name="Join and find my photos")).to_be_visible()
        await expect(guest.get_by_role("button", name="Email me a link")).to_have_count(0)
        # With email configured, a newcomer may leave the password out.
        await expect(guest.locator("main")).to_contain_text("(optional)")

        allow = organiser.get_by_label("Guests can sign in with a link sent by email")
        await allow.check()
        await expect(organiser.locator("#toast")).to_contain_text("sign in with a link")
        await organiser.reload()
        await expect(allow).to_be_checked()

        await guest.reload()
        await guest.get_by_label("Joined already? Get a sign-in link by email").fill(guest_email)
        await guest.get_by_role("button", name="Email me a link").click()
        await expect(guest.locator("#link-form [data-sent]")).to_contain_text("Check your inbox")
        await shot(guest, "join-email-link", "phone")
        link, _ = link_in((await mails.wait_for(1))[0])

        await guest.goto(link)
        await shot(guest, "sign-in-link", "phone")
        await guest.get_by_role("button", name="Sign in").click()
        # Not a member yet: back to the event's link, signed in, where the selfie joins them.
        await expect(guest).to_have_url(join_url)
        await expect(guest.get_by_role("link", name="Gil Guest")).to_have_count(1)  # signed in
        selfie = faces_dir() / manifest()["selfies"]["biden"]
        await guest.locator("#file").set_input_files(selfie)
        await guest.get_by_role("button", name="Join and find my photos").click()
        await expect(guest.locator("#selfie-join-form [data-error]")).to_contain_text(
            "Tick the box"
        )
        await guest.get_by_label("I agree").check()
        await guest.get_by_role("button", name="Join and find my photos").click()
        await expect(guest).to_have_url(re.compile(r"/my-photos\?event_id=\d+$"), timeout=SLOW_MS)

        # The link works once, on this phone or any other.
        again = await (await contexts(url, "phone")).new_page()
        await again.goto(link)
        await again.get_by_role("button", name="Sign in").click()
        await expect(again.locator("#link-sign-in-form [data-error]")).to_contain_text(
            "already used"
        )
        for size in SIZES:
            page = await (await contexts(url, size)).new_page()
            await page.goto(join_url)
            await shot(page, "join-newcomer-with-link", size)
        contexts.assert_no_errors()


async def test_a_sign_up_is_finished_by_the_emailed_links_button(settings, contexts, inbox):
    mails, _ = inbox
    async with serve(settings) as url:
        page = await (await contexts(url, "phone")).new_page()
        await page.goto("/register?next=/my-photos")
        await sign_up(page, "Noor", "noor@example.com")
        await expect(page.locator("#register-sent")).to_contain_text("Check your inbox")
        link, _ = link_in((await mails.wait_for(1))[0])
        await page.goto(link)
        await page.get_by_role("button", name="Create my account").click()
        # On to the selfie, and from there where the person was going.
        await expect(page).to_have_url(re.compile(r"/selfie\?next=%2Fmy-photos$"))
        again = await (await contexts(url, "phone")).new_page()
        await again.goto(link)
        await again.get_by_role("button", name="Create my account").click()
        await expect(again.locator("#signup-confirm-form [data-error]")).not_to_be_empty()
        contexts.assert_no_errors()
