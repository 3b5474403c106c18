"""Cases the reference catalogue does not cover (reference §13.4) and robustness of the running process."""

from __future__ import annotations

import contextlib

import pytest
from trio_websocket import ConnectionClosed

from .client import MANUAL_SETTINGS, VAD_SETTINGS, connect
from .common import no_client_errors, no_protocol_errors, ready, settle
from .conftest import FAKE_API_KEY, ProxyProcess
from .upstream import (
    FakeUpstream,
    Scenario,
    Step,
    assistant_item,
    audio_delta,
    audio_done,
    function_call_done,
    response_created,
    response_done,
    transcript_done,
)

pytestmark = pytest.mark.e2e  # real proxy processes on loopback

HUGE = (1 << 20) + 512 * 1024  # 1.5 MiB: above the 1 MiB client message limit


async def test_gap_trace_id_is_accepted_and_never_forwarded(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    async with ready(proxy, upstream, query="traceId=parity-trace-42") as (_client, conn):
        assert conn.target == "/v1/realtime?model=gpt-realtime"
        assert "parity-trace-42" not in str(conn.headers)
    assert "parity-trace-42" in proxy.output()  # it labels the connection's log records


async def test_gap_trace_id_with_control_characters_cannot_forge_log_lines(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:

    async with ready(proxy, upstream, query="traceId=abc%0AFORGED-LOG-LINE%20x") as (_client, _conn):
        pass
    assert not any(line.startswith("FORGED-LOG-LINE") for line in proxy.output().splitlines())


@pytest.mark.parametrize(
    "message",
    [pytest.param({"foo": 1}, id="missing-type"), pytest.param({"type": "UpdatePrompt", "prompt": "x"}, id="other")],
)
async def test_gap_unknown_client_message_type_gets_error(
    proxy: ProxyProcess, upstream: FakeUpstream, message: dict[str, object]
) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await client.send(message)
        got = await client.wait_type("Error")
        assert got["code"] == "disallowed_client_message_type"
        await settle()
        assert conn.types() == ["session.update"]


@pytest.mark.parametrize("kind", ["binary", "text"])
async def test_gap_huge_client_frame_closes_1009_and_proxy_serves_next_connection(
    proxy: ProxyProcess, upstream: FakeUpstream, kind: str
) -> None:
    async with ready(proxy, upstream) as (client, _conn):
        payload: str | bytes = (
            bytes(HUGE) if kind == "binary" else '{"type":"InjectUserMessage","content":"' + "x" * HUGE + '"}'
        )
        with contextlib.suppress(ConnectionClosed):  # the proxy may close while the frame is being written
            await client.ws.send_message(payload)
        closed = await client.wait_closed()
        assert closed.code == 1009
    async with ready(proxy, upstream, index=1) as (client, _conn):
        await client.inject("Hello")
        await client.wait_assistant_text("Hello from mock")


async def test_gap_early_client_close_abandons_the_pending_upstream_handshake(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """A client that leaves while the upstream handshake is pending leaves no upstream session behind."""
    upstream.scenario = Scenario(accept_delay=0.5)
    async with connect(proxy.url()) as client:
        conn = await upstream.connection(0, accepted=False)
        await client.send(MANUAL_SETTINGS)
    await conn.wait_closed(timeout=3)
    assert conn.received == []
    assert conn.session_updated is False


async def test_gap_garbage_upstream_frame_gives_unmapped_upstream_event_and_session_continues(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await conn.send_raw("<<this is not JSON>>")
        got = await client.wait_type("Error")
        assert got["code"] == "unmapped_upstream_event"
        await client.inject("Hello")
        await client.wait_assistant_text("Hello from mock")
        assert client.closed is None


async def test_gap_one_session_failure_does_not_affect_a_concurrent_session(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream, index=0) as (a, conn_a), ready(proxy, upstream, index=1) as (b, conn_b):
        await conn_a.send_raw("<<garbage>>")
        await a.wait_type("Error", code="unmapped_upstream_event")
        await conn_a.close(None)  # the upstream drops without a close frame
        assert (await a.wait_closed()).code == 1011
        await b.inject("Hello")
        await b.wait_assistant_text("Hello from mock")
        assert b.closed is None
        no_client_errors(b)
        no_protocol_errors(conn_b)


async def test_gap_huge_frame_on_one_session_does_not_affect_a_concurrent_session(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream, index=0) as (a, _conn_a), ready(proxy, upstream, index=1) as (b, _conn_b):
        with contextlib.suppress(ConnectionClosed):
            await a.ws.send_message(bytes(HUGE))
        assert (await a.wait_closed()).code == 1009
        await b.inject("Hello")
        await b.wait_assistant_text("Hello from mock")
        assert b.closed is None


async def test_gap_multiple_turns_over_one_connection_with_function_call_and_audio(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """Audio turn ending in a function call, the tool result and its spoken follow-up, then a typed turn."""
    r0: list[Step] = [
        audio_delta(),
        audio_done(),
        function_call_done("call_turn_1", "get_current_time"),
        response_done(),
    ]
    r1: list[Step] = [
        audio_delta(640),
        audio_done(),
        transcript_done("It is noon."),
        assistant_item("done", "item_r1", "It is noon.", "output_audio"),
        response_done(),
    ]
    upstream.scenario = Scenario(responses=[r0, r1], function_output_completion="items", response_audio=True)
    async with ready(proxy, upstream) as (client, conn):
        await client.send_audio(40_000)
        request = await client.wait_type("FunctionCallRequest", timeout=5)
        assert request["functions"][0]["id"] == "call_turn_1"
        await client.send({"type": "FunctionCallResponse", "id": "call_turn_1", "content": '{"time":"12:00"}'})
        await client.wait_assistant_text("It is noon.")
        await client.inject("Thanks")
        await client.wait_assistant_text("Hello from mock")
        await settle()
        assert client.transcript() == [
            "SettingsApplied",
            # turn 1 (audio): spoken preamble, then the function call
            "AgentStartedSpeaking",
            "<binary 320>",
            "AgentDone",
            "AgentAudioDone",
            "FunctionCallRequest",
            # tool result and the follow-up response
            "AgentThinking",
            "AgentStartedSpeaking",
            "<binary 640>",
            "AgentDone",
            "AgentAudioDone",
            "CT(assistant:'It is noon.')",
            # turn 2 (typed)
            "CT(user:'Thanks')",
            "AgentStartedSpeaking",
            "<binary 320>",
            "AgentDone",
            "AgentAudioDone",
            "CT(assistant:'Hello from mock')",
        ]
        assert conn.count("input_audio_buffer.commit") == 1
        assert conn.count("response.create") == 3
        no_protocol_errors(conn)


async def test_gap_server_vad_response_created_holds_inject_response_create_until_response_done(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """In server-VAD mode the upstream starts responses itself (response.created); an inject meanwhile must not
    produce an overlapping response.create."""
    async with ready(proxy, upstream, VAD_SETTINGS) as (client, conn):
        await conn.send(response_created())
        await client.inject("Hello")
        await conn.wait_type("conversation.item.create")
        await settle()
        assert conn.count("response.create") == 0
        for event in (audio_delta(), audio_done(), transcript_done("Auto reply."), response_done()):
            await conn.send(event)
        await conn.wait_type("response.create", timeout=3)
        assert conn.of_type("response.create")[0].at >= conn.sent_of_type("response.done")[0].at
        await client.wait_assistant_text("Hello from mock")
        assert client.assistant_texts() == ["Auto reply.", "Hello from mock"]
        no_protocol_errors(conn)
        no_client_errors(client)


async def test_gap_function_call_inside_a_proxy_created_response(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    reply: list[Step] = [function_call_done("call_in_resp", "get_current_time"), response_done()]
    upstream.scenario = Scenario(responses=[reply], function_output_completion="items")
    async with ready(proxy, upstream) as (client, conn):
        await client.inject("What time is it?")
        request = await client.wait_type("FunctionCallRequest")
        assert request["functions"][0]["id"] == "call_in_resp"
        await client.send({"type": "FunctionCallResponse", "id": "call_in_resp", "content": "noon"})
        await client.wait_assistant_text("Hello from mock")
        await settle()
        assert conn.count("response.create") == 2
        assert len(client.json_frames("FunctionCallRequest")) == 1
        no_protocol_errors(conn)


FULL_SETTINGS = {
    "type": "Settings",
    "audio": {
        "input": {"encoding": "linear16", "sample_rate": 16000},
        "output": {"encoding": "linear16", "sample_rate": 24000},
    },
    "agent": {
        "language": "en",
        "idleTimeoutMs": 10000,
        "sessionAudioOutput": {"format": {"type": "audio/pcm", "rate": 24000}, "speed": 1.1, "voice": "marin"},
        "think": {
            "provider": {"type": "open_ai", "model": "gpt-realtime", "temperature": 0.7},
            "prompt": "Help.",
            "functions": [
                {
                    "name": "get_current_time",
                    "description": "Current time",
                    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
                }
            ],
            "toolChoice": "auto",
            "outputModalities": ["audio"],
            "maxOutputTokens": 256,
            "managedPrompt": {"id": "pmpt_123", "version": "2", "variables": {"city": "Paris"}},
        },
        "context": {"messages": [{"type": "History", "role": "user", "content": "Hi"}]},
        "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
    },
}


async def test_gap_every_upstream_event_validates_against_the_official_schema(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream, FULL_SETTINGS, index=0) as (client, conn):
        await client.send_audio(960)
        await client.inject("Hello")
        await client.wait_assistant_text("Hello from mock")
        await client.send({"type": "FunctionCallResponse", "id": "call_x", "result": {"ok": True}})
        await conn.wait_for(lambda c: c.count("conversation.item.create") == 2, what="function_call_output")
        await client.wait_count("ConversationText", 3)  # the tool turn's reply
    async with ready(proxy, upstream, MANUAL_SETTINGS, index=1) as (client, conn_manual):
        await client.send_audio(40_000)
        await client.wait_assistant_text("Hello from mock")
    assert conn.schema_errors == []
    assert conn_manual.schema_errors == []


async def test_gap_api_key_never_reaches_client_or_logs(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    upstream.scenario = Scenario(reject_status=401)
    async with connect(proxy.url()) as client:
        await client.wait_closed()
    assert all(FAKE_API_KEY not in str(f.data) for f in client.frames)
    assert client.closed is not None
    assert FAKE_API_KEY not in (client.closed.reason or "")
    assert FAKE_API_KEY not in proxy.output()
