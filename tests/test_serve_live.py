"""A live `videomini serve` (a real process on a free loopback port, with a token) driven by Debian's chromium
through Playwright, and by the `openai` Python client, unchanged."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from videomini.pipelines.serve.process import serve_process

pytestmark = pytest.mark.slow  # a live server driven by chromium

TOKEN = "live-test-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def live_server(serve_library, checkpoint, tmp_path_factory):
    """`videomini serve` on port 0 (the kernel picks a free one; the log line says which); always stopped."""
    allowed = tmp_path_factory.mktemp("allowed")
    with serve_process(["--library", str(serve_library[0]), "--model", str(checkpoint), "--device", "cpu",
                        "--token", TOKEN, "--allow-dir", str(allowed)]) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: bash scripts/setup.sh installs it "
                    "(apt-get install -y chromium)")
    from playwright import sync_api
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1200, "height": 760})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser, live_server):
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    page.goto(f"{live_server}/#token={TOKEN}")
    yield page
    page.close()


def search(page, query: str, text: str, start_s: float, signal: str = ""):
    """Search from the page; the result card that quotes `text` in a moment starting near `start_s`."""
    page.select_option("#signal", signal)
    page.fill("#q", query)
    page.press("#q", "Enter")
    cards = page.locator(".result", has_text=text)
    cards.first.wait_for()
    near = [c for c in cards.all() if abs(float(c.get_attribute("data-start")) - start_s) <= 1.0]
    assert near, f"no result quotes {text!r} near {start_s} s"
    return near[0]


def test_search_shows_the_moment_and_a_click_plays_it_from_its_start(page, serve_library):
    caption = serve_library[1]["narrated.mp4"].captions[1]  # "EXIT ONLY", on screen from 0:12
    card = search(page, "way out, no entry", caption.text, caption.start_s, signal="ocr")
    assert "narrated.mp4" in card.inner_text() and "on screen" in card.locator(".badges").inner_text()
    page.wait_for_function("() => [...document.querySelectorAll('.result img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    start = float(card.get_attribute("data-start"))
    card.click()
    # the player loads /media/ID (the token rides in the page's cookie), seeks to the moment's start and plays
    page.wait_for_function("start => { const v = document.querySelector('#player');"
                           " return v.readyState >= 1 && !v.seeking && v.currentTime >= start - 0.05; }", arg=start)
    current = page.evaluate("document.querySelector('#player').currentTime")
    assert start - 0.05 <= current <= start + 2.0
    assert "narrated.mp4 · 0:12–" in page.inner_text("#now-playing")


def test_result_cards_show_the_relevance_and_mark_the_matches(page, serve_library, live_server):
    card = search(page, "open all night", "OPEN 24 HOURS", 5.0, signal="ocr")
    import httpx

    api = httpx.get(f"{live_server}/api/search", params={"q": "open all night", "signal": "ocr", "top_k": 24},
                    headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60).json()
    best = next(m for m in api if m["matches"][0].get("text") == "OPEN 24 HOURS")
    assert best["confident"] and 0.5 <= best["relevance"] <= 1.0  # the API's scale: 0.5 and up is confident
    assert "confident" in card.get_attribute("class")
    assert card.locator(".relevance").inner_text() == f"{best['relevance']:.2f} · match"
    assert "match “open all night”" in page.inner_text("#status")
    page.fill("#q", "a penguin sliding on the ice")
    page.press("#q", "Enter")
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Nothing in the library')")
    assert page.locator(".result.confident").count() == 0 and page.locator(".result .relevance").count() > 0


def test_ask_streams_the_answer_and_evidence_links_seek_the_player(page, tmp_path):
    search(page, "way out, no entry", "EXIT ONLY", 12.0, signal="ocr")
    page.fill("#ask-q", "Where does the train go?")
    page.click("#ask-go")
    page.locator("#ask-evidence a").first.wait_for()
    assert int(page.get_attribute("#ask-answer", "data-tokens")) >= 1  # text arrived token by token (SSE)
    assert page.inner_text("#ask-answer").strip()
    link = page.locator("#ask-evidence a").last
    target = float(link.get_attribute("data-time"))
    link.click()
    page.wait_for_function("t => { const v = document.querySelector('#player');"
                           " return v.readyState >= 1 && !v.seeking && Math.abs(v.currentTime - t) < 1.5; }",
                           arg=target)
    shot = Path(os.environ.get("VIDEOMINI_SCREENSHOT") or tmp_path / "serve.png")  # the README's screenshot
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_library_view_and_phone_width(page, live_server):
    page.click("#tab-library")
    page.locator("#videos tbody tr").nth(1).wait_for()
    rows = page.locator("#videos tbody tr").all_inner_texts()
    assert any("narrated.mp4" in r and "done" in r for r in rows) and any("silent.mp4" in r for r in rows)
    assert "2 videos" in page.inner_text("#library-stats")
    page.set_viewport_size({"width": 390, "height": 800})
    page.click("#tab-search")
    page.fill("#q", "loading dock")
    page.press("#q", "Enter")
    page.locator(".result").first.wait_for()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 392, f"the page scrolls sideways at phone width ({width}px)"
    assert page.locator("#player").bounding_box()["width"] <= 390
    # everything the page needs ships in the package: no CDN, no other host
    assert page.requested and all(url.startswith(live_server) for url in page.requested), page.requested


def test_a_moment_pauses_at_its_end_and_a_narrow_screen_scrolls_to_the_player(page):
    page.set_viewport_size({"width": 390, "height": 600})
    card = search(page, "way out, no entry", "EXIT ONLY", 12.0, signal="ocr")
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    card.scroll_into_view_if_needed()
    assert page.locator("#player").bounding_box()["y"] < 0  # the player is (partly) above the screen
    card.click()
    box = page.locator("#player").bounding_box()
    assert -1 <= box["y"] and box["y"] + box["height"] <= 601, box  # the page scrolled the player into view
    end = float(page.get_attribute("#moment-track", "data-end"))
    assert end > float(card.get_attribute("data-start"))
    page.wait_for_function("() => !document.querySelector('#moment-span').hidden")
    # it plays to the moment's end and pauses there; pressing play goes on
    page.wait_for_function("end => { const v = document.querySelector('#player');"
                           " return v.paused && v.currentTime >= end - 0.05; }", arg=end, timeout=60_000)
    assert page.evaluate("document.querySelector('#player').currentTime") <= end + 1.0
    assert "ended" in page.get_attribute("#moment-track", "class")


def test_evidence_chips_in_time_order_with_scores_and_a_short_model_name(page, checkpoint):
    page.fill("#ask-q", "What is written on the sign?")
    page.click("#ask-go")
    page.locator("#ask-evidence a").first.wait_for()
    chips = page.locator("#ask-evidence a").all()
    times = [float(chip.get_attribute("data-time")) for chip in chips]
    names = [chip.get_attribute("title").split(" ")[0] for chip in chips]
    for name in set(names):  # within each video, in the order a viewer meets them
        mine = [t for t, n in zip(times, names) if n == name]
        assert mine == sorted(mine), times
    assert all(0.0 <= float(chip.get_attribute("data-score")) <= 1.0 for chip in chips)
    assert all(chip.locator(".score").inner_text() for chip in chips)
    meta = page.inner_text("#ask-meta")
    assert checkpoint.name in meta and str(checkpoint.parent) not in meta


def test_the_openai_client_streams_an_answer(live_server, serve_library):
    import openai
    client = openai.OpenAI(base_url=f"{live_server}/v1", api_key=TOKEN, max_retries=0)
    assert [m.id for m in client.models.list()]
    stream = client.chat.completions.create(
        model="videomini", max_tokens=5, stream=True,
        messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "videomini:2"}},
                                               {"type": "text", "text": "What is written on screen?"}]}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and chunks[-1].choices[0].finish_reason == "stop"
    evidence = chunks[-1].model_extra["evidence"]
    assert evidence and all(0.0 <= e["time_s"] <= 4.0 for e in evidence)
    whole = client.chat.completions.create(model="videomini", max_tokens=5, messages=[
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "videomini:2"}},
                                     {"type": "text", "text": "What is written on screen?"}]}])
    assert whole.choices[0].message.content == text.strip()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live_server}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.PermissionDeniedError, match="outside the allowed folders"):
        client.chat.completions.create(model="videomini", messages=[{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": "/etc/passwd"}}, {"type": "text", "text": "?"}]}])
