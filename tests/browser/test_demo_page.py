"""The demo page in a real browser: Chromium (driven by Playwright) against ``python -m proxy`` with the simulators,
a WAV file as the microphone. An injected text turn and a spoken turn each produce agent text and agent audio, on
both routes, with no Content-Security-Policy violation and no script error.

Skips with the install hint when Playwright or Chromium is missing (docs/simulators.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.speech import speech_like

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

INSTALL_HINT = (
    "the browser test needs Playwright for Python and Chromium: python -m pip install -e '.[test]' and "
    "apt-get update && apt-get install -y chromium (or set PROXY_TEST_CHROMIUM to a Chromium binary); "
    "see docs/simulators.md"
)
#: Generous bounds for a shared machine; the page itself answers in well under a second.
WAIT_MS = 30_000


def chromium_path() -> str | None:
    configured = os.environ.get("PROXY_TEST_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(INSTALL_HINT)
    executable = chromium_path()
    if executable is None:
        pytest.skip(INSTALL_HINT)
    mic = Path(os.environ.get("TMPDIR", "/tmp")) / f"proxy-demo-mic-{os.getpid()}.wav"
    write_mic_wav(mic)
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(
                executable_path=executable,
                args=[
                    "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-audio-capture={mic}",
                    "--autoplay-policy=no-user-gesture-required",
                ],
            )
            try:
                yield instance
            finally:
                instance.close()
    finally:
        mic.unlink(missing_ok=True)


def write_mic_wav(path: Path) -> None:
    """1.5 s of speech-like sound, then 2.5 s of quiet: one spoken turn, then the simulator's end of turn (Chromium
    loops the file, so the turn repeats; the test waits for the first)."""
    rate = 48_000
    speech = speech_like(rate, seconds=1.5)
    quiet = np.zeros(int(rate * 2.5), dtype=np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.concatenate([speech, quiet]).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def proxy_url() -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DEEPGRAM_", "PROXY_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on ws://127.0.0.1:"), line
        yield f"http://127.0.0.1:{line.rsplit(':', 1)[1].strip()}"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def audio_bytes(page: Any) -> int:
    return int(page.text_content("#audio-bytes"))


def wait_for_more(page: Any, selector: str, count: int) -> None:
    page.wait_for_function(
        "([selector, count]) => document.querySelectorAll(selector).length > count",
        arg=[selector, count],
        timeout=WAIT_MS,
    )


@pytest.mark.parametrize("route", ["/openai", "/deepgram-proxy"])
def test_a_text_turn_and_a_spoken_turn_bring_agent_text_and_audio(browser: Any, proxy_url: str, route: str) -> None:
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "response",
        lambda response: problems.append(f"{response.status} {response.url}") if response.status >= 400 else None,
    )
    try:
        page.goto(f"{proxy_url}/demo")
        page.select_option("#route", route)
        page.click("#connect-button")
        page.wait_for_function("() => document.getElementById('status').textContent === 'ready'", timeout=WAIT_MS)

        # An injected text turn: the agent answers in text and in audio.
        page.fill("#text", "hello from the browser")
        page.click("#send-button")
        wait_for_more(page, "#conversation li.assistant", 0)
        page.wait_for_function("() => Number(document.getElementById('audio-bytes').textContent) > 0", timeout=WAIT_MS)
        log = page.text_content("#log") or ""
        assert '"type":"InjectUserMessage"' in log
        assert '"type":"SettingsApplied"' in log
        replies, heard = page.locator("#conversation li.assistant").count(), audio_bytes(page)

        # A spoken turn through the fake microphone (16 kHz PCM16 from the AudioWorklet).
        page.click("#mic-button")
        wait_for_more(page, "#conversation li.assistant", replies)
        page.wait_for_function(
            "(before) => Number(document.getElementById('audio-bytes').textContent) > before",
            arg=heard,
            timeout=WAIT_MS,
        )
        assert '"type":"UserStartedSpeaking"' in (page.text_content("#log") or "")
        page.click("#mic-button")
        page.click("#disconnect-button")
        page.wait_for_function(
            "() => document.getElementById('status').textContent.startsWith('closed')", timeout=WAIT_MS
        )
    finally:
        page.close()
    assert not problems, problems  # a CSP violation or a script error shows up here
