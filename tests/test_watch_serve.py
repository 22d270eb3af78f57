"""`videomini watch --serve` in a real process, its /live page driven by Debian's chromium through Playwright:
the newest frame shown and moving, the status, a question answered while the stream plays (streamed, evidence
in both clocks), and the standing question's state."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from processes import stderr_line

from synth import make_testsrc_video

pytestmark = pytest.mark.slow  # a live process driven by chromium

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _served_url(process: subprocess.Popen, timeout_s: float) -> str:
    return stderr_line(process, "serving http", timeout_s).split("serving ", 1)[1].split()[0]


@pytest.fixture
def watch_server(checkpoint, tmp_path):
    video = make_testsrc_video(tmp_path / "stream.mp4", 30, size=(320, 240), fps=10, pattern="testsrc2", keyframe_s=1)
    process = subprocess.Popen([sys.executable, "-m", "videomini.cli", "watch", str(video), "--realtime", "--loop",
                                "--serve", "--port", "0", "--model", str(checkpoint), "--max-new-tokens", "4",
                                "--alert", "Is there a test pattern?", "--every", "1s"],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield _served_url(process, timeout_s=120)  # .../live
    finally:
        process.kill()
        process.wait(timeout=10)


def test_live_view_shows_the_stream_answers_and_standing_questions(watch_server, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: bash scripts/setup.sh installs it "
                    "(apt-get install -y chromium)")
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(watch_server)
            page.wait_for_function("() => { const img = document.querySelector('#frame');"
                                   " return img.complete && img.naturalWidth === 336; }")
            page.wait_for_function("() => /\\d+ frames/.test(document.querySelector('#status').textContent)")
            page.wait_for_function("() => document.querySelector('#standing').textContent"
                                   ".includes('Is there a test pattern?')")
            first = page.get_attribute("#frame", "src")
            page.wait_for_function("src => document.querySelector('#frame').src !== src", arg=first)  # it moves
            page.fill("#question", "What happened in the last 3 seconds?")
            page.click("#ask")
            page.wait_for_selector("#answer[data-done='1']")
            evidence = page.inner_text("#evidence")
            assert "s of stream" in evidence and "Z" in evidence  # both clocks
            frames = int(page.inner_text("#status").split(" frames")[0].split("· ")[-1])
            page.wait_for_function(f"() => parseInt(document.querySelector('#status').textContent"
                                   f".split(' frames')[0].split('· ').pop()) > {frames}")  # still ingesting
        finally:
            browser.close()
