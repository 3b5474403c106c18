"""Reference integration catalogue (§12.2): function calls, the deferred response.create after a tool result and
its completion variants, transcripts and assistant-text fallbacks."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .client import Client
from .common import no_client_errors, no_protocol_errors, ready, settings, settle
from .conftest import ProxyProcess
from .upstream import (
    SCRIPT_FUNCTION_CALL_ONLY,
    SCRIPT_FUNCTION_CALL_PART_ITEM,
    SCRIPT_TEXT_DONE_FUNCTION_CALL_TEXT,
    SCRIPT_TRANSCRIPT_AND_FUNCTION_CALL,
    SCRIPT_TRANSCRIPT_ONLY,
    SCRIPT_TRANSCRIPTION_COMPLETED,
    SCRIPT_TRANSCRIPTION_DELTAS,
    Conn,
    FakeUpstream,
    Scenario,
)

pytestmark = pytest.mark.e2e  # real proxy processes on loopback


def function_call_response(call_id: str = "call_mock_1", **fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "FunctionCallResponse", "id": call_id, "name": "get_current_time"}
    message.update(fields or {"content": json.dumps({"time": "12:00"}, separators=(",", ":"))})
    return message


def function_outputs(conn: Conn) -> list[dict[str, Any]]:
    return [i for i in conn.items_created() if i.get("type") == "function_call_output"]


async def answer_function_call(client: Client, **fields: Any) -> int:
    """Wait for the FunctionCallRequest, answer it; returns the index of the first frame after the answer."""
    await client.wait_type("FunctionCallRequest")
    mark = len(client.frames)
    await client.send(function_call_response(**fields))
    return mark


async def test_m38_function_call_arguments_done_to_function_call_request_and_response_to_item_create(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_TRANSCRIPT_AND_FUNCTION_CALL)
    async with ready(proxy, upstream) as (client, conn):
        request = await client.wait_type("FunctionCallRequest")
        assert request == {
            "type": "FunctionCallRequest",
            "functions": [{"id": "call_mock_1", "name": "get_current_time", "arguments": "{}", "client_side": True}],
        }
        await client.send(function_call_response(content='{"time":"12:00"}'))
        await client.wait_assistant_text("Hello from mock")
        assert function_outputs(conn) == [
            {"type": "function_call_output", "call_id": "call_mock_1", "output": '{"time":"12:00"}'}
        ]
        no_protocol_errors(conn)


async def test_m39_maps_function_call_response_with_result_no_content(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_TRANSCRIPT_AND_FUNCTION_CALL)
    async with ready(proxy, upstream) as (client, conn):
        await answer_function_call(client, result={"time": "14:32:15", "timezone": "UTC"})
        await conn.wait_for(lambda c: bool(function_outputs(c)), what="function_call_output")
        assert function_outputs(conn)[0]["output"] == '{"time":"14:32:15","timezone":"UTC"}'


async def test_m40_after_function_call_response_client_receives_thinking_speaking_text_and_audio_done(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_TRANSCRIPT_AND_FUNCTION_CALL)
    async with ready(proxy, upstream) as (client, _conn):
        mark = await answer_function_call(client)
        await client.wait_type("AgentThinking")
        await client.wait_assistant_text("Hello from mock")  # the follow-up response's reply
        await settle()
        after = [f.type for f in client.frames[mark:]]
        assert after[0] == "AgentThinking"
        assert client.json_frames("AgentThinking")[0].json == {"type": "AgentThinking", "content": ""}
        assert "AgentStartedSpeaking" in after
        assert "ConversationText" in after
        assert "AgentAudioDone" in after


async def test_m42_sends_function_call_request_when_upstream_sends_function_call_arguments_done(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_FUNCTION_CALL_ONLY)
    async with ready(proxy, upstream) as (client, _conn):
        await client.wait_type("FunctionCallRequest")
        applied = client.index_of(lambda f: f.type == "SettingsApplied")
        request = client.index_of(lambda f: f.type == "FunctionCallRequest")
        assert 0 <= applied < request


async def test_m43_no_function_call_request_when_upstream_sends_only_transcript_done(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_TRANSCRIPT_ONLY)
    async with ready(proxy, upstream) as (client, _conn):
        await settle(1.0)  # the reference watches for 4 s; nothing here is timed
        assert client.json_frames("SettingsApplied")
        assert not client.json_frames("FunctionCallRequest")


async def test_m44_input_audio_transcription_delta_accumulated_per_item_id(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_TRANSCRIPTION_DELTAS)
    async with ready(proxy, upstream) as (client, _conn):
        await client.wait_count("Transcript", 3)
        transcripts = client.of_type("Transcript")
        assert [t["transcript"] for t in transcripts] == ["Hel", "Hello ", "Hello world"]
        assert all(t["is_final"] is False and t["speech_final"] is False for t in transcripts)


async def test_m45_input_audio_transcription_completed_with_start_duration_channel(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_TRANSCRIPTION_COMPLETED)
    async with ready(proxy, upstream) as (client, _conn):
        got = await client.wait_type("Transcript")
        assert got["transcript"] == "Hello world"
        assert got["is_final"] is True
        assert got["speech_final"] is True
        assert got["start"] == 1.5
        assert got["duration"] == 2.25
        assert got["channel"] == 1
        assert got["channel_index"] == [1]
        assert got["alternatives"] == [{"transcript": "Hello world", "confidence": 1, "words": []}]


async def test_m46_item_added_with_only_function_call_part_maps_to_conversation_text(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_FUNCTION_CALL_PART_ITEM)
    async with ready(proxy, upstream) as (client, _conn):
        got = await client.wait_assistant_text()
        assert "Function call" in got.json["content"]
        assert "get_current_time" in got.json["content"]
        assert got.json["content"] == "Function call: get_current_time({})"


async def test_m47_output_text_done_only_yields_assistant_conversation_text_fallback(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_TEXT_DONE_FUNCTION_CALL_TEXT)
    async with ready(proxy, upstream) as (client, _conn):
        got = await client.wait_assistant_text()
        assert "Function call: get_current_datetime" in got.json["content"]
        await client.wait_for(lambda f: f.type in ("AgentDone", "AgentAudioDone"), what="AgentDone/AgentAudioDone")
        await settle()
        assert client.json_frames("SettingsApplied")
        assert not client.json_frames("FunctionCallRequest")


async def test_m48_agent_started_speaking_then_function_call_request_after_transcript_done(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_TRANSCRIPT_AND_FUNCTION_CALL)
    async with ready(proxy, upstream) as (client, _conn):
        await client.wait_type("FunctionCallRequest")
        applied = client.index_of(lambda f: f.type == "SettingsApplied")
        started = client.index_of(lambda f: f.type == "AgentStartedSpeaking")
        request = client.index_of(lambda f: f.type == "FunctionCallRequest")
        assert 0 <= applied < started < request, client.transcript()


async def test_m68_settings_with_example_echo_inject_in_socket_function_call_response_no_error(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(echo_function_call_on_first_response=True)
    functions = [
        {
            "name": "example_echo",
            "description": "Echo a message back.",
            "parameters": {"type": "object", "properties": {"message": {"type": "string"}}},
        }
    ]
    message = settings(think={"prompt": "Help.", "functions": functions})
    async with ready(proxy, upstream, message) as (client, conn):
        tools = conn.of_type("session.update")[0].payload["session"]["tools"]
        assert [t["name"] for t in tools] == ["example_echo"]
        await client.inject("Please echo hello")
        request = await client.wait_type("FunctionCallRequest")
        call = request["functions"][0]
        assert (call["id"], call["name"]) == ("call_echo_532", "example_echo")
        await client.send({"type": "FunctionCallResponse", "id": call["id"], "name": call["name"], "content": "hello"})
        await client.wait_assistant_text("Hello from mock")
        assert [o["call_id"] for o in function_outputs(conn)] == ["call_echo_532"]
        no_client_errors(client)


async def test_m75_successful_function_call_yields_exactly_one_function_call_request(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_FUNCTION_CALL_ONLY)
    async with ready(proxy, upstream) as (client, _conn):
        mark = await answer_function_call(client)
        await client.wait_for(lambda f: f.index >= mark and f.type == "AgentAudioDone", what="AgentAudioDone")
        await settle()
        assert len(client.json_frames("FunctionCallRequest")) == 1


async def test_m83_no_response_create_until_completion_after_function_call_output(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_FUNCTION_CALL_ONLY)
    async with ready(proxy, upstream) as (client, conn):
        await answer_function_call(client)
        await client.wait_assistant_text("Hello from mock")
        await conn.wait_type("response.create")
        types = conn.types()
        last_item = len(types) - 1 - types[::-1].index("conversation.item.create")
        assert last_item < types.index("response.create")
        assert conn.items_created()[-1]["type"] == "function_call_output"
        completion = conn.sent_of_type("response.output_text.done")[0]
        assert conn.of_type("response.create")[0].at >= completion.at


async def test_m84_after_function_call_response_client_receives_agent_audio_done_on_completion(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_FUNCTION_CALL_ONLY)
    async with ready(proxy, upstream) as (client, _conn):
        mark = await answer_function_call(client)
        await client.wait_for(lambda f: f.index >= mark and f.type == "AgentAudioDone", 3.0, "AgentAudioDone")


async def test_m85_when_upstream_withholds_completion_proxy_sends_response_create_after_timeout(
    watchdog_proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """Per-connection records make the count exact (the reference tolerated 1-2 because of its shared mock)."""
    upstream.scenario = Scenario(after_session_updated=SCRIPT_FUNCTION_CALL_ONLY, function_output_completion="withhold")
    async with ready(watchdog_proxy, upstream) as (client, conn):
        await answer_function_call(client)
        output = await conn.wait_type("conversation.item.create")
        assert output.payload["item"]["type"] == "function_call_output"
        create = await conn.wait_type("response.create", timeout=3)
        # Not at once: the watchdog is 500 ms (the margin absorbs delivery delays under load).
        assert create.at - output.at >= 0.25
        await settle(0.6)
        assert conn.count("response.create") == 1
    assert "Required upstream contract violated" in watchdog_proxy.output()


async def _completion_variant(proxy: ProxyProcess, upstream: FakeUpstream, variant: str) -> tuple[Client, Conn]:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_FUNCTION_CALL_ONLY, function_output_completion=variant)
    async with ready(proxy, upstream) as (client, conn):
        mark = await answer_function_call(client)
        await client.wait_for(
            lambda f: f.index >= mark and f.type in ("AgentAudioDone", "AgentDone"), what="AgentDone/AgentAudioDone"
        )
        await client.wait_assistant_text("Hello from mock")
        await settle()
        return client, conn


async def test_m86_completion_response_done_then_output_text_done_one_response_create(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    client, conn = await _completion_variant(proxy, upstream, "response_done_then_text_done")
    assert conn.count("response.create") == 1, conn.summary()
    assert client.json_frames("AgentAudioDone")


async def test_m87_completion_output_audio_done_then_response_done_one_deferred_response_create(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    client, conn = await _completion_variant(proxy, upstream, "audio_done_then_response_done")
    assert conn.count("response.create") == 1, conn.summary()
    assert client.json_frames("AgentAudioDone")


async def test_m88_after_completion_assistant_item_added_reaches_client_as_conversation_text(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(after_session_updated=SCRIPT_FUNCTION_CALL_ONLY, function_output_followup_item=True)
    async with ready(proxy, upstream) as (client, _conn):
        await answer_function_call(client)
        got = await client.wait_for(
            lambda f: (
                f.type == "ConversationText"
                and f.json.get("role") == "assistant"
                and bool(re.search(r"\d{1,2}:\d{2}|UTC|time", f.json.get("content", "")))
            ),
            what="assistant ConversationText with the time",
        )
        assert got.json["content"] == "The current time is 2:56 AM UTC."


async def test_m89_item_done_function_call_output_triggers_deferred_response_create_next_turn(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    client, conn = await _completion_variant(proxy, upstream, "items")
    assert conn.count("response.create") == 1, conn.summary()
    assert client.json_frames("AgentAudioDone") or client.json_frames("AgentDone")
    create = conn.of_type("response.create")[0]
    assert create.at >= conn.sent_of_type("conversation.item.done")[0].at


async def test_m90_response_done_without_output_text_done_triggers_response_create_once(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(
        after_session_updated=SCRIPT_FUNCTION_CALL_ONLY, function_output_completion="response_done"
    )
    async with ready(proxy, upstream) as (client, conn):
        await answer_function_call(client)
        await conn.wait_type("response.create", timeout=2)
        await client.wait_assistant_text("Hello from mock")
        await settle()
        assert conn.count("response.create") == 1
