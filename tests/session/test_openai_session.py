"""The OpenAI translator inside the real Trio shell, over in-memory WebSockets, on Trio's mock clock.

Timers are exact: the virtual clock only moves when every task is blocked, so the times asserted here are the
times the proxy acts at, to the microsecond.
"""

from __future__ import annotations

import base64
import json

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection

from proxy.config import Limits
from proxy.openai.translator import Translator, TranslatorOptions
from tests.wsmem import running_session

MANUAL = {"type": "Settings", "agent": {"useOpenAIManualAudioCommit": True, "think": {"prompt": "Hi"}}}


def translator(**options: object) -> Translator:
    options.setdefault("resampler", "linear")  # these tests count the reference's audio bytes
    return Translator(TranslatorOptions(**options))  # type: ignore[arg-type]


async def receive_json(ws: WebSocketConnection) -> dict[str, object]:
    message = await ws.get_message()
    assert isinstance(message, str), f"expected a text frame, got {len(message)} binary bytes"
    event = json.loads(message)
    assert isinstance(event, dict)
    return event


async def until(ws: WebSocketConnection, event_type: str) -> tuple[dict[str, object], float]:
    """Skip events until one of ``event_type``; return it with the virtual time it arrived at."""
    while True:
        event = await receive_json(ws)
        if event["type"] == event_type:
            return event, trio.current_time()


async def ready_session(browser: WebSocketConnection, up: WebSocketConnection, settings: dict[str, object]) -> None:
    await browser.send_message(json.dumps(settings))
    update = await receive_json(up)
    assert update["type"] == "session.update"
    await up.send_message(json.dumps({"type": "session.updated", "session": {"type": "realtime"}}))
    assert await receive_json(browser) == {"type": "SettingsApplied"}


async def test_manual_commit_fires_exactly_400_ms_after_the_last_audio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_session(translator()) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await ready_session(browser, up, MANUAL)
        sent_at = trio.current_time()
        await browser.send_message(bytes(40_000))
        append = await receive_json(up)
        assert append["type"] == "input_audio_buffer.append"
        assert len(base64.b64decode(str(append["audio"]))) == 59_998
        _commit, committed_at = await until(up, "input_audio_buffer.commit")
        assert committed_at - sent_at == pytest.approx(0.400, abs=1e-9)
        assert (await receive_json(up))["type"] == "response.create"
        await browser.aclose()


async def test_continuous_audio_commits_at_the_600_ms_coalesce_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_session(translator()) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await ready_session(browser, up, MANUAL)
        start = trio.current_time()
        appended = 0
        armed_at: float | None = None
        commit_at: float | None = None
        async with trio.open_nursery() as nursery:

            async def mic() -> None:
                for i in range(12):
                    await trio.sleep_until(start + 0.25 * i)
                    await browser.send_message(bytes(8_000))

            nursery.start_soon(mic)
            while commit_at is None:
                event = await receive_json(up)
                if event["type"] == "input_audio_buffer.append":
                    appended += len(base64.b64decode(str(event["audio"])))
                    if armed_at is None and appended >= 48_000:
                        armed_at = trio.current_time()
                elif event["type"] == "input_audio_buffer.commit":
                    commit_at = trio.current_time()
            nursery.cancel_scope.cancel()
        assert armed_at is not None
        # The debounce keeps being pushed back by chunks every 250 ms; only the coalesce cap can fire.
        assert armed_at - start == pytest.approx(1.0, abs=1e-9)
        assert commit_at - armed_at == pytest.approx(0.600, abs=1e-9)
        await browser.aclose()


async def test_deferred_response_create_watchdog_fires_at_20_s(autojump_clock: trio.testing.MockClock) -> None:
    async with running_session(translator()) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await ready_session(browser, up, {"type": "Settings", "agent": {"think": {"prompt": "Hi"}}})
        await browser.send_message(json.dumps({"type": "FunctionCallResponse", "id": "call_1", "content": "42"}))
        item = await receive_json(up)
        sent_at = trio.current_time()
        assert item["type"] == "conversation.item.create"
        assert (await receive_json(browser))["type"] == "AgentThinking"
        _create, created_at = await until(up, "response.create")
        assert created_at - sent_at == pytest.approx(20.0, abs=1e-9)
        await browser.aclose()


async def test_watchdog_uses_the_configured_timeout(autojump_clock: trio.testing.MockClock) -> None:
    core = translator(deferred_response_create_timeout=0.5)
    async with running_session(core) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await ready_session(browser, up, {"type": "Settings", "agent": {"think": {"prompt": "Hi"}}})
        await browser.send_message(json.dumps({"type": "FunctionCallResponse", "id": "call_1", "content": "42"}))
        await receive_json(up)
        sent_at = trio.current_time()
        _create, created_at = await until(up, "response.create")
        assert created_at - sent_at == pytest.approx(0.5, abs=1e-9)
        await browser.aclose()


async def test_completion_before_the_watchdog_sends_one_response_create_and_cancels_the_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_session(translator()) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await ready_session(browser, up, {"type": "Settings", "agent": {"think": {"prompt": "Hi"}}})
        await browser.send_message(json.dumps({"type": "FunctionCallResponse", "id": "call_1", "content": "42"}))
        await receive_json(up)
        await trio.sleep(1.0)
        await up.send_message(json.dumps({"type": "response.done", "response": {"output": []}}))
        _create, created_at = await until(up, "response.create")
        with trio.move_on_after(60):
            extra = await receive_json(up)
            pytest.fail(f"unexpected upstream event after the deferred create: {extra}")
        await browser.aclose()
        assert created_at == pytest.approx(trio.current_time() - 60, abs=1e-6)


async def test_audio_before_session_updated_is_held_then_flushed_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_session(translator()) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await browser.send_message(json.dumps(MANUAL))
        await browser.send_message(bytes(960))
        assert (await receive_json(up))["type"] == "session.update"
        await trio.testing.wait_all_tasks_blocked()
        await up.send_message(json.dumps({"type": "session.updated"}))
        assert (await receive_json(up))["type"] == "input_audio_buffer.append"
        await browser.aclose()


async def test_tts_audio_reaches_the_client_as_binary_only(autojump_clock: trio.testing.MockClock) -> None:
    async with running_session(translator()) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await ready_session(browser, up, {"type": "Settings", "agent": {"think": {"prompt": "Hi"}}})
        pcm = bytes(range(256)) * 2
        await up.send_message(
            json.dumps({"type": "response.output_audio.delta", "delta": base64.b64encode(pcm).decode()})
        )
        assert await receive_json(browser) == {"type": "AgentStartedSpeaking"}
        assert await browser.get_message() == pcm
        await browser.aclose()


@pytest.mark.parametrize("closer", ["client", "upstream"])
async def test_no_task_is_left_after_either_side_closes(closer: str) -> None:
    baseline = trio.lowlevel.current_statistics().tasks_living
    async with running_session(translator(), limits=Limits(ping_interval_s=5)) as (browser, upstream, _s, done):
        up = await upstream.next()
        await ready_session(browser, up, MANUAL)
        await browser.send_message(bytes(40_000))
        await receive_json(up)
        if closer == "client":
            await browser.aclose(1000, "Closed by client")
            with pytest.raises(ConnectionClosed):
                while True:
                    await up.get_message()
        else:
            await up.aclose(1000, "done")
            with pytest.raises(ConnectionClosed):
                while True:
                    await browser.get_message()
        await done.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert trio.lowlevel.current_statistics().tasks_living == baseline
