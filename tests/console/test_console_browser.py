"""The console in a real headless Chromium (Debian's ``/usr/bin/chromium``) driven by Playwright.

Uploads a picture, asks a grounding question, waits for the streamed answer, and checks that the tool-call
step and the annotated picture are on the page. A screenshot is saved under ``test-artifacts/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def browser_page(tmp_path):
    """A fresh Chromium profile (persistent context in a temp dir) and one page."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1440, "height": 1100},
        )
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            yield page, errors
        finally:
            context.close()


def test_grounding_turn_in_a_real_browser(live_console, browser_page, tmp_path):
    url, plugin = live_console
    page, errors = browser_page
    picture = tmp_path / "my picture.png"
    shutil.copy(plugin.EXAMPLES / "shapes.png", picture)

    page.goto(url)
    page.wait_for_selector("#qvl-input textarea", timeout=30_000)
    # the side panel lists the tools the test plugin registered, as checkboxes
    tools = page.locator("#qvl-tools")
    for name in ("pixel_colour", "broken_tool", "thumbnail"):
        assert tools.get_by_label(name).is_checked()

    page.locator("#qvl-input input[type=file]").set_input_files(str(picture))
    page.locator("#qvl-input").get_by_alt_text("my picture.png").or_(
        page.locator("#qvl-input img")
    ).first.wait_for(timeout=15_000)
    page.locator("#qvl-input textarea").fill("Where is the red circle? Give its bounding box.")
    page.locator("#qvl-input textarea").press("Enter")

    chat = page.locator("#qvl-chat")
    chat.get_by_text("is at the top left").wait_for(timeout=30_000)
    # the tool-call step: a collapsible message titled with the tool's name
    step = chat.get_by_text("Tool pixel_colour used")
    step.wait_for(timeout=10_000)
    step.click()  # expand it: the observation the tool really computed is inside
    chat.get_by_text("rgb(220, 40, 40)").wait_for(timeout=10_000)
    # the grounded answer and the annotated picture, in the chat and in the side panel
    assert chat.get_by_text("Grounding on picture 1: red circle").is_visible()
    chat_images = chat.locator("img[src*='grounding-picture1']")
    chat_images.first.wait_for(timeout=10_000)
    panel_image = page.locator("#qvl-grounding img")
    panel_image.wait_for(timeout=10_000)
    assert "grounding-picture1" in (panel_image.get_attribute("src") or "")
    assert page.locator("#qvl-download").is_visible()
    # the picture really loaded (not a broken link)
    assert panel_image.evaluate("img => img.complete && img.naturalWidth") == 256
    # the input is usable again once the turn is over
    page.locator("#qvl-input textarea").wait_for(state="visible")
    assert page.locator("#qvl-input textarea").is_enabled()

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-grounding-end.png"), full_page=True)
    # and the start of the turn: the user's picture and question, the expanded tool step
    chat.evaluate(
        "el => el.querySelectorAll('*').forEach(e => { if (e.scrollHeight > e.clientHeight) e.scrollTop = 0; })"
    )
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "console-grounding.png"), full_page=True)
    assert not errors, errors
