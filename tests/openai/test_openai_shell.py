"""The translator inside the real Trio session shell, over in-memory WebSockets, on a virtual clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import WebSocketConnection

from proxy.openai.translator import Translator, TranslatorOptions
from tests.wsmem import running_session

MANUAL = {"type": "Settings", "agent": {"useOpenAIManualAudioCommit": True, "think": {"prompt": "Hi"}}}


async def receive_json(ws: WebSocketConnection) -> dict[str, Any]:
    message = await ws.get_message()
    assert isinstance(message, str)
    result: dict[str, Any] = json.loads(message)
    return result


async def test_text_turn_through_the_shell() -> None:
    async with running_session(Translator()) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await browser.send_message(json.dumps(MANUAL))
        assert (await receive_json(up))["type"] == "session.update"
        await up.send_message('{"type":"session.updated","session":{"type":"realtime"}}')
        assert (await receive_json(browser))["type"] == "SettingsApplied"
        await browser.send_message('{"type":"InjectUserMessage","content":"hi"}')
        create = await receive_json(up)
        assert create["type"] == "conversation.item.create"
        assert (await receive_json(browser)) == {"type": "ConversationText", "role": "user", "content": "hi"}
        added = {"type": "conversation.item.added", "item": {"id": create["item"]["id"], "role": "user"}}
        await up.send_message(json.dumps(added))
        assert (await receive_json(up))["type"] == "response.create"
        await up.send_message('{"type":"response.output_audio.delta","delta":"AAEAAQ=="}')
        await up.send_message('{"type":"response.output_text.done","text":"Hello from mock"}')
        assert (await receive_json(browser))["type"] == "AgentStartedSpeaking"
        assert await browser.get_message() == b"\x00\x01\x00\x01"
        assert await receive_json(browser) == {
            "type": "ConversationText",
            "role": "assistant",
            "content": "Hello from mock",
        }
        await browser.aclose()


async def test_manual_commit_happens_400ms_after_the_audio(autojump_clock: trio.testing.MockClock) -> None:
    async with running_session(Translator()) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await browser.send_message(json.dumps(MANUAL))
        await receive_json(up)
        await up.send_message('{"type":"session.updated"}')
        await receive_json(browser)
        await browser.send_message(bytes(40000))
        assert (await receive_json(up))["type"] == "input_audio_buffer.append"
        appended_at = trio.current_time()
        assert (await receive_json(up))["type"] == "input_audio_buffer.commit"
        assert trio.current_time() - appended_at == pytest.approx(0.4)
        assert (await receive_json(up))["type"] == "response.create"
        await browser.aclose()


async def test_deferred_response_create_watchdog_fires_at_the_configured_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    core = Translator(TranslatorOptions(deferred_response_create_timeout=0.5))
    async with running_session(core) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await browser.send_message(json.dumps(MANUAL))
        await receive_json(up)
        await up.send_message('{"type":"session.updated"}')
        await receive_json(browser)
        await browser.send_message('{"type":"FunctionCallResponse","id":"call_1","content":"ok"}')
        assert (await receive_json(up))["item"]["type"] == "function_call_output"
        sent_at = trio.current_time()
        assert (await receive_json(up))["type"] == "response.create"
        assert trio.current_time() - sent_at == pytest.approx(0.5)
        await browser.aclose()
