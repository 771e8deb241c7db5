"""The demo page at real speed: a dozen live bars, the counters, and the README screenshot."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import DEMO_PNG_ENV, StartDemo, save_screenshot

PARTLY_FILLED = """() => [...document.querySelectorAll("layers-progress")].filter((el) => {
  const bar = el.shadowRoot.querySelector("[role=progressbar]");
  const now = Number(bar.getAttribute("aria-valuenow"));
  return el.dataset.state === "running" && now > 0 && now < 100;
}).length"""


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_demo_page_shows_live_bars_and_counters(
    start_demo: StartDemo, page: Page, tmp_path: Path
) -> None:
    """Twelve accessible bars fill up while the counters show deliveries outnumbering upstream.

    The screenshot goes to ``tmp_path``; only ``scripts/screenshot`` (which sets
    LAYERS_DEMO_PNG) also writes it over the README's docs/demo.png.
    """
    demo = start_demo(containers=12, speed=1)
    page.goto(demo.url + "/demo")
    page.wait_for_function("document.querySelectorAll('layers-progress[data-state]').length == 12")

    # The batch's bars (the project view below the grid has bars of its own).
    bars = page.locator("#grid").get_by_role("progressbar")
    expect(bars).to_have_count(12)
    for index in range(12):
        bar = bars.nth(index)
        expect(bar).to_have_attribute("aria-valuemin", "0")
        expect(bar).to_have_attribute("aria-valuemax", "100")
        expect(bar).to_have_attribute("aria-valuetext", re.compile(r".+"))
    page.wait_for_function(f"({PARTLY_FILLED})() >= 6")
    expect(page.locator("#grid layers-progress .eta:not([hidden])").first).to_have_text(
        re.compile(r"About \d+(:\d\d min| s) left|Almost done")
    )

    # A few seconds in, the extra viewers make deliveries several times the upstream requests.
    page.wait_for_function(
        "Number(document.getElementById('ratio').textContent) >= 2"
        " && document.getElementById('rate').textContent !== '…'",
        timeout=25_000,
    )
    stats = demo.stats()
    assert stats["deliveries"] > 2 * stats["upstream"]["requests"] > 0
    assert stats["proxy"]["streams_open"] >= 1

    assert page.evaluate(f"({PARTLY_FILLED})()") >= 4, "bars should still be mid-flight"
    copies = [Path(os.environ[DEMO_PNG_ENV])] if os.environ.get(DEMO_PNG_ENV) else []
    assert save_screenshot(page, tmp_path / "demo.png", *copies).stat().st_size > 0
