"""Spoken replies: libespeak-ng through the optional ``speech`` extra, the tones without it."""

from __future__ import annotations

import base64
import sys
import threading
from collections.abc import Iterator

import pytest
import trio

from proxy.sim import speech, synth

from .helpers import connect, rms, simulator
from .test_agent_sim import PATH as AGENT_PATH
from .test_agent_sim import settings
from .test_openai_sim import PATH as OPENAI_PATH
from .test_openai_sim import open_session, user_text

TEXT = "You said: the weather is lovely today."
WORDS = len(TEXT.split())


@pytest.fixture
def fresh_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Speech switched on (the suite's default is tones), the engine state and the cache as on first use."""
    monkeypatch.setattr(speech, "enabled", True)
    monkeypatch.setattr(speech, "_engine_failed", False)
    speech.cache.clear()
    yield
    speech.cache.clear()


@pytest.fixture
def espeak(fresh_engine: None) -> None:
    pytest.importorskip("espeakng_loader", reason="the speech extra is not installed: pip install '.[speech]'")
    if not speech.available():
        pytest.skip("libespeak-ng from the speech extra could not be initialised here")


def _seconds(pcm: bytes, rate: int) -> float:
    return len(pcm) / 2 / rate


def test_a_reply_is_speech_with_a_duration_that_fits_the_text(espeak: None) -> None:
    pcm = speech.speak(TEXT, 24_000)
    assert pcm != synth.speak(TEXT, 24_000)  # not the tones
    assert rms(pcm) > 500  # clearly audible, not silence
    assert 0.15 * WORDS <= _seconds(pcm, 24_000) <= 0.8 * WORDS  # about 175 words a minute
    # The same speech at another rate: the same length (each synthesis may differ by a few milliseconds).
    assert _seconds(speech.speak(TEXT, 16_000), 16_000) == pytest.approx(_seconds(pcm, 24_000), abs=0.05)


def test_a_text_is_synthesised_once_and_then_served_from_the_cache(
    espeak: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = speech.speak(TEXT, 24_000)
    assert len(speech.cache) == 1

    def no_second_synthesis(text: str) -> bytes:
        raise AssertionError("synthesised again")

    engine = speech._get_engine()
    assert engine is not None
    monkeypatch.setattr(engine, "synthesise", no_second_synthesis)
    assert speech.speak(TEXT, 24_000) == first
    assert speech.speak("  " + TEXT.replace(" ", "\n  ") + " ", 24_000) == first  # whitespace does not matter
    assert trio.run(speech.render, TEXT, 24_000) == first


def test_a_new_synthesis_of_a_text_has_the_same_length(espeak: None) -> None:
    # libespeak-ng carries a little state from one synthesis to the next (its output differs by a few milliseconds);
    # the cache makes a reply's audio identical within a process, and its length barely depends on what came before.
    first = speech.speak(TEXT, 24_000)
    speech.speak("Something else entirely, to move the engine on.", 24_000)
    speech.cache.clear()
    assert _seconds(speech.speak(TEXT, 24_000), 24_000) == pytest.approx(_seconds(first, 24_000), abs=0.05)


def test_synthesis_runs_in_a_worker_thread(espeak: None, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = speech._get_engine()
    assert engine is not None
    threads: list[threading.Thread] = []
    original = engine.synthesise

    def recording(text: str) -> bytes:
        threads.append(threading.current_thread())
        return original(text)

    monkeypatch.setattr(engine, "synthesise", recording)
    pcm = trio.run(speech.render, TEXT, 24_000)
    assert rms(pcm) > 500
    assert threads
    assert threads[0] is not threading.main_thread()


def test_without_the_extra_the_replies_are_tones(fresh_engine: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails as if not installed
    monkeypatch.setattr(speech, "_engine", None)
    assert not speech.available()
    assert speech.speak(TEXT, 24_000) == synth.speak(TEXT, 24_000)
    assert trio.run(speech.render, TEXT, 16_000) == synth.speak(TEXT, 16_000)
    assert len(speech.cache) == 0


def test_switched_off_the_replies_are_tones(espeak: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speech, "enabled", False)
    assert speech.speak(TEXT, 24_000) == synth.speak(TEXT, 24_000)


def test_the_cache_is_bounded_in_entries_and_bytes() -> None:
    cache = speech._Cache(entries=2, max_bytes=10)
    cache.put(("a", 1), b"1234")
    cache.put(("b", 1), b"1234")
    assert cache.get(("a", 1)) == b"1234"  # now the most recently used
    cache.put(("c", 1), b"12")  # a third entry: the least recently used ("b") goes
    assert [cache.get((k, 1)) for k in "abc"] == [b"1234", None, b"12"]
    cache.put(("d", 1), b"123456789")  # 9 bytes: "a" and "c" both go to stay within 10 bytes
    assert len(cache) == 1
    assert cache.get(("d", 1)) == b"123456789"
    cache.put(("huge", 1), b"x" * 11)  # larger than the whole cache: not kept, nothing evicted
    assert cache.get(("huge", 1)) is None
    assert len(cache) == 1


async def test_the_openai_simulator_speaks_its_reply(espeak: None) -> None:
    async with simulator() as port, connect(port, OPENAI_PATH) as ws:
        client = await open_session(ws)
        await client.send(user_text("the weather is lovely today"))
        await client.until("conversation.item.done")
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
    transcript = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    assert audio == speech.speak(transcript, 24_000)  # the cached speech of exactly the reply's text
    assert audio != synth.speak(transcript, 24_000)


async def test_the_agent_simulator_speaks_at_the_settings_output_rate(espeak: None) -> None:
    from .test_agent_sim import AgentClient

    message = settings()
    message["audio"] = {"input": {"encoding": "linear16", "sample_rate": 16000}}
    message["audio"]["output"] = {"encoding": "linear16", "sample_rate": 16000, "container": "none"}
    async with simulator() as port, connect(port, AGENT_PATH) as ws:
        client = AgentClient(ws)
        await client.next()  # Welcome
        await client.send(message)
        assert (await client.next())["type"] == "SettingsApplied"
        await client.send({"type": "InjectUserMessage", "content": "Hello agent"})
        messages = await client.until("AgentAudioDone")
    said = next(m["content"] for m in messages if m.get("role") == "assistant")
    assert bytes(client.audio) == speech.speak(said, 16_000)


def test_the_library_is_loaded_in_a_worker_thread_too(espeak: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speech, "_engine", None)
    threads: list[threading.Thread] = []
    original = speech._Engine

    def recording() -> speech._Engine:
        threads.append(threading.current_thread())
        return original()

    monkeypatch.setattr(speech, "_Engine", recording)
    assert rms(trio.run(speech.render, TEXT, 24_000)) > 500
    assert len(threads) == 1
    assert threads[0] is not threading.main_thread()
