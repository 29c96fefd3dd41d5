"""The chat demo in a real browser: headless Chromium (Debian's) driven by Playwright.

The demo (``corral.examples.chat.app()``) runs in the test's event loop on port 0 and serves
its own page. Two pages join one room under different names: each sees the other in the
member list, each shows what the other says (user text as text, not HTML). Then the server
drops one page's TCP connection: it reconnects by itself and shows what was said meanwhile,
once. A reload rejoins and shows the history. A screenshot is saved to
``test-artifacts/chat-demo.png``.

Skipped when Playwright or /usr/bin/chromium is missing (``scripts/test.sh`` installs both).
Every wait is bounded (Playwright's ``expect`` with a timeout); nothing is timed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

pytest.importorskip("playwright.async_api", reason="playwright is not installed (pip install "
                    "-e '.[test]')")
from playwright.async_api import Browser, Page, async_playwright, expect

import corral
from corral.examples.chat import ChatHandler, app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WAIT_MS = 10_000  # the longest a page action waits; `expect` waits up to its default 5 s

pytestmark = [
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f"{CHROMIUM} is missing (apt-get install chromium; "
                              "scripts/install-system-deps.sh does it)"),
    pytest.mark.timeout(60),
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Browser) -> Page:
    """A page in its own context: its own sessionStorage, like another browser window."""
    page = await browser.new_page(viewport={"width": 820, "height": 460})
    page.set_default_timeout(WAIT_MS)
    return page


async def join(page: Page, url: str, name: str, room: str) -> None:
    await page.goto(url)
    await page.fill("#name", name)
    await page.fill("#room", room)
    await page.click("#join button")


async def say(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


async def online(page: Page) -> None:
    await expect(page.locator("#status")).to_have_attribute("data-state", "online")


async def test_two_pages_chat_reconnect_and_reload(
    browser: Browser, record_property: Callable[[str, object], None]
) -> None:
    async with corral.serve(app(), "127.0.0.1", 0) as server:
        url = f"http://127.0.0.1:{server.port}/"
        ann, bob = await new_page(browser), await new_page(browser)
        await join(ann, url, "ann", "lobby")
        await online(ann)
        await join(bob, url, "bob", "lobby")
        await online(bob)

        # Presence: each page lists both, itself marked.
        await expect(ann.locator("#members li")).to_have_text(["ann (you)", "bob"])
        await expect(bob.locator("#members li")).to_have_text(["ann", "bob (you)"])
        await expect(ann.locator("#room-title")).to_have_text("#lobby")

        # Both ways; markup in a message stays text.
        ann_texts = ann.locator("#messages li.message .text")
        bob_texts = bob.locator("#messages li.message .text")
        await say(ann, "hello bob, <b>this is not bold</b>")
        await expect(bob_texts).to_have_text(["hello bob, <b>this is not bold</b>"])
        await say(bob, "hi ann, \u00e7a va? \u2713")
        await expect(ann_texts).to_have_text(["hello bob, <b>this is not bold</b>",
                                              "hi ann, \u00e7a va? \u2713"])
        assert await bob.locator("#messages .text b").count() == 0
        await expect(bob.locator("#messages li.message b").first).to_have_text("ann")

        # The server drops bob's TCP connection; ann talks while he is away. Bob's page comes
        # back by itself and shows that message once, live or from the history after `since`.
        (bob_ws,) = [ws for ws in server.connections
                     if isinstance(ws.handler, ChatHandler) and ws.handler.name == "bob"]
        bob_ws.abort()
        await say(ann, "while you were away")
        await expect(ann.locator("#messages li.notice")).to_have_text(
            ["bob joined", "bob left", "bob joined"])
        await online(bob)
        await expect(bob_texts).to_have_text(["hello bob, <b>this is not bold</b>",
                                              "hi ann, \u00e7a va? \u2713", "while you were away"])
        await say(bob, "back again")
        await expect(ann_texts.last).to_have_text("back again")

        # A reload rejoins the same room under the same name and shows the room's history.
        await bob.reload()
        await online(bob)
        await expect(bob_texts).to_have_text(["hello bob, <b>this is not bold</b>",
                                              "hi ann, \u00e7a va? \u2713", "while you were away",
                                              "back again"])
        await expect(bob.locator("#members li")).to_have_text(["ann", "bob (you)"])
        await expect(ann.locator("#members li")).to_have_text(["ann (you)", "bob"])
        await say(bob, "reloaded and still here")
        await expect(ann_texts.last).to_have_text("reloaded and still here")

        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "chat-demo.png"
        await ann.screenshot(path=str(screenshot))
        record_property("screenshot", str(screenshot))
        print(f"screenshot: {screenshot}")
    assert screenshot.stat().st_size > 0


async def test_a_refused_join_returns_to_the_form(browser: Browser) -> None:
    async with corral.serve(app(), "127.0.0.1", 0) as server:
        page = await new_page(browser)
        await join(page, f"http://127.0.0.1:{server.port}/", "ann", "two words")
        await expect(page.locator("#join-error")).to_contain_text("room must be")
        await expect(page.locator("#join")).to_be_visible()
        await expect(page.locator("#chat")).to_be_hidden()
        await expect(page.locator("#status")).to_have_attribute("data-state", "offline")
