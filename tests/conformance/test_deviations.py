"""Where this proxy deliberately differs from the reference (each a fix of a bug in reference §13): the tests
assert our behaviour. Numbers follow the list of decided deviations (dev01-dev10)."""

from __future__ import annotations

import json

import pytest

from .client import MANUAL_SETTINGS, VAD_SETTINGS, Client, connect
from .common import no_client_errors, no_protocol_errors, ready, settle
from .conftest import FAKE_API_KEY, ProxyProcess
from .upstream import (
    SCRIPT_FUNCTION_CALL_ONLY,
    FakeUpstream,
    Scenario,
    Step,
    audio_delta,
    audio_done,
    error,
    response_done,
    text_done,
)

pytestmark = pytest.mark.e2e  # real proxy processes on loopback

# ---------------------------------------------------------------------------------------------------------------
# dev01: frames are routed by opcode


async def test_dev01_text_frame_that_is_not_json_gets_error_and_is_never_audio(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """Reference: a non-JSON text frame is resampled and appended as audio. Ours: an Error, nothing upstream."""
    async with ready(proxy, upstream, VAD_SETTINGS) as (client, conn):
        await client.send_text("this is not JSON {")
        got = await client.wait_type("Error")
        assert got["code"] == "unparsable_client_message"
        await settle()
        assert conn.count("input_audio_buffer.append") == 0
        # The session carries on.
        await client.inject("Hello")
        await client.wait_assistant_text("Hello from mock")


async def test_dev01_binary_frame_is_audio_even_when_it_parses_as_json(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """Reference: a binary frame that parses as JSON is handled as JSON. Ours: binary is always audio."""
    async with ready(proxy, upstream, VAD_SETTINGS) as (client, conn):
        payload = json.dumps({"type": "Settings", "agent": {"think": {"prompt": "x"}}}).encode()
        payload += b" " * (len(payload) % 2)
        await client.ws.send_message(payload)
        await conn.wait_type("input_audio_buffer.append")
        await settle()
        assert len(client.json_frames("SettingsApplied")) == 1
        assert conn.count("session.update") == 1
        no_client_errors(client)


# ---------------------------------------------------------------------------------------------------------------
# dev02: odd-length audio


async def test_dev02_odd_length_audio_never_crashes_and_the_odd_byte_is_carried(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """Reference: an odd-length frame throws (likely killing the process). Ours: the odd byte joins the next
    frame, so 4 801 + 4 799 bytes resample exactly like one 9 600-byte frame (4 800 samples -> 7 199)."""
    async with ready(proxy, upstream, VAD_SETTINGS) as (client, conn):
        await client.send_audio(4_801)
        await client.send_audio(4_799)
        await conn.wait_type("input_audio_buffer.append", count=2)
        await settle()
        sizes = conn.appended_bytes()
        assert all(n % 2 == 0 for n in sizes), sizes
        assert sum(sizes) == 14_398, sizes
        await client.inject("Still there?")
        await client.wait_assistant_text("Hello from mock")
        no_client_errors(client)
    # And the process serves the next connection.
    async with ready(proxy, upstream, index=1):
        pass


# ---------------------------------------------------------------------------------------------------------------
# dev03: null or missing error code


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"type": "server_error", "code": None, "message": "Something broke"}, id="null"),
        pytest.param({"type": "server_error", "message": "Something broke"}, id="missing"),
        pytest.param({"type": "server_error", "code": "", "message": "Something broke"}, id="empty"),
    ],
)
async def test_dev03_upstream_error_with_null_or_missing_code_maps_to_unknown(
    proxy: ProxyProcess, upstream: FakeUpstream, body: dict[str, object]
) -> None:
    """Reference: a JSON null code is forwarded as null. Ours: "unknown", like a missing or empty code."""
    async with ready(proxy, upstream) as (client, conn):
        await conn.send({"type": "error", "error": body})
        got = await client.wait_type("Error")
        assert got == {"type": "Error", "description": "Something broke", "code": "unknown"}


# ---------------------------------------------------------------------------------------------------------------
# dev04: buffered idle_timeout


async def test_dev04_idle_timeout_during_response_is_flushed_on_response_done(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """Reference: buffered until output_text.done or the upstream closing (audio sessions: the close). Ours: also
    flushed on response.done, while the session is still open."""
    reply: list[Step] = [error("idle_timeout", "Session idle timeout."), audio_delta(), audio_done(), response_done()]
    upstream.scenario = Scenario(responses=[reply])
    async with ready(proxy, upstream) as (client, conn):
        await client.inject("Hello")
        got = await client.wait_type("Error", timeout=3)
        assert got["code"] == "idle_timeout"
        assert client.closed is None
        err = client.index_of(lambda f: f.type == "Error")
        assert client.index_of(lambda f: f.binary) < err, client.transcript()
        assert client.index_of(lambda f: f.type == "AgentAudioDone") < err, client.transcript()
        assert conn.closed.is_set() is False


async def test_dev04_idle_timeout_during_response_is_flushed_after_assistant_conversation_text(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """The reference's buffering path (untested there, §13.4): the error waits for the response's text."""
    reply: list[Step] = [error("idle_timeout", "Session idle timeout."), 0.1, text_done("Bye for now")]
    upstream.scenario = Scenario(responses=[reply])
    async with ready(proxy, upstream) as (client, _conn):
        await client.inject("Hello")
        got = await client.wait_type("Error", timeout=3)
        assert got["code"] == "idle_timeout"
        text = client.index_of(lambda f: f.type == "ConversationText" and f.json.get("content") == "Bye for now")
        assert 0 <= text < client.index_of(lambda f: f.type == "Error"), client.transcript()


# ---------------------------------------------------------------------------------------------------------------
# dev05: AgentDone / AgentAudioDone belong to the response that finished


def agent_done_after_tool_result(client: Client, mark: int) -> None:
    """After the tool result (frames from ``mark``): no AgentDone/AgentAudioDone before the follow-up response's
    audio, then exactly one pair, AgentDone immediately followed by AgentAudioDone."""
    after = client.frames[mark:]
    first_audio = next(i for i, f in enumerate(after) if f.binary)
    early = [f.short() for f in after[:first_audio] if f.type in ("AgentDone", "AgentAudioDone")]
    assert early == [], f"AgentDone before the follow-up audio: {client.transcript()[mark:]}"
    done = [i for i, f in enumerate(after) if f.type == "AgentDone"]
    audio_done_ = [i for i, f in enumerate(after) if f.type == "AgentAudioDone"]
    assert len(done) == 1, client.transcript()[mark:]
    assert len(audio_done_) == 1, client.transcript()[mark:]
    assert audio_done_[0] == done[0] + 1, client.transcript()[mark:]


@pytest.mark.parametrize(
    ("script", "completion"),
    [
        # Mock trace D: output_text.done completes the tool turn and triggers the deferred create (§13.1-5).
        pytest.param(SCRIPT_FUNCTION_CALL_ONLY, "text_done", id="output_text_done"),
        # The tool result arrives before the function-call response's response.done (trace C, variant).
        pytest.param(SCRIPT_FUNCTION_CALL_ONLY, "response_done", id="response_done"),
        # Real-API trace C: the function-call response ended first; item.done(function_call_output) triggers.
        pytest.param([*SCRIPT_FUNCTION_CALL_ONLY, response_done()], "items", id="item_done"),
    ],
)
async def test_dev05_agent_done_never_before_the_follow_up_response_audio_after_a_tool_result(
    proxy: ProxyProcess, upstream: FakeUpstream, script: list[Step], completion: str
) -> None:
    """Reference: when output_text.done sends the deferred response.create, AgentDone/AgentAudioDone go out at
    once (before the follow-up audio) and nothing after it. Ours: exactly one pair, after that audio."""
    upstream.scenario = Scenario(
        after_session_updated=script, function_output_completion=completion, response_audio=True, response_delay=0.3
    )
    async with ready(proxy, upstream) as (client, conn):
        await client.wait_type("FunctionCallRequest")
        await settle(0.1)
        mark = len(client.frames)
        await client.send({"type": "FunctionCallResponse", "id": "call_mock_1", "content": '{"time":"12:00"}'})
        await client.wait_for(lambda f: f.index >= mark and f.binary, what="follow-up audio")
        await client.wait_for(lambda f: f.index >= mark and f.type == "ConversationText", what="follow-up text")
        await settle(0.4)
        agent_done_after_tool_result(client, mark)
        assert conn.count("response.create") == 1
        no_protocol_errors(conn)


async def test_dev05_one_agent_done_when_output_text_done_and_response_done_both_end_a_response(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """Reference (§13.1-6): output_text.done clears the flag, so response.done sends a second pair. Ours: one."""
    upstream.scenario = Scenario(responses=[[audio_delta(), audio_done(), text_done(), response_done()]])
    async with ready(proxy, upstream) as (client, conn):
        await client.inject("Hello")
        await client.wait_assistant_text("Hello from mock")
        await conn.wait_for(lambda c: bool(c.sent_of_type("response.done")), what="response.done sent")
        await settle()
        assert len(client.json_frames("AgentDone")) == 1, client.transcript()
        assert len(client.json_frames("AgentAudioDone")) == 1, client.transcript()
        assert client.index_of(lambda f: f.type == "AgentDone") > client.index_of(lambda f: f.binary)


# ---------------------------------------------------------------------------------------------------------------
# dev06: injects


async def test_dev06_each_inject_gets_its_own_item_id_and_its_own_reply(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """Reference: one shared counter (assigned, not incremented) and an inject during a response gets its
    response.create rejected (swallowed). Ours: own item ids; the second inject is answered after the first
    response ends."""
    upstream.scenario = Scenario(user_item_ids="echo", response_delay=0.3)
    async with ready(proxy, upstream) as (client, conn):
        await client.inject("first")
        await conn.wait_type("response.create")
        await client.inject("second")  # while the first response is active
        await client.wait_count("ConversationText", 4, timeout=5)  # 2 user echoes + 2 replies
        await settle()
        ids = [i.get("id") for i in conn.items_created()]
        assert len(ids) == 2
        assert all(isinstance(i, str) and 0 < len(i) <= 32 for i in ids), ids  # the API's item id limit
        assert ids[0] != ids[1]
        assert conn.count("response.create") == 2
        assert client.assistant_texts() == ["Hello from mock", "Hello from mock"]
        assert conn.of_type("response.create")[1].at >= conn.sent_of_type("response.output_text.done")[0].at
        no_protocol_errors(conn)  # no overlapping response.create, none before its item was acknowledged
        no_client_errors(client)


async def test_dev06_inject_during_active_response_gets_reply_when_upstream_does_not_echo_ids(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """The reference mock acknowledges every user item as item_mock_1: the next user item counts instead."""
    upstream.scenario = Scenario(response_delay=0.3)
    async with ready(proxy, upstream) as (client, conn):
        await client.inject("first")
        await conn.wait_type("response.create")
        await client.inject("second")
        await client.wait_count("ConversationText", 4, timeout=5)
        await settle()
        assert conn.count("response.create") == 2
        assert client.assistant_texts() == ["Hello from mock", "Hello from mock"]
        no_protocol_errors(conn)
        no_client_errors(client)


async def test_dev06_two_back_to_back_injects_each_get_a_reply(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    upstream.scenario = Scenario(user_item_delay=0.05, response_delay=0.1)
    async with ready(proxy, upstream) as (client, conn):
        await client.inject("one")
        await client.inject("two")
        await client.wait_count("ConversationText", 4, timeout=5)
        await settle()
        assert [m["content"] for m in client.of_type("ConversationText") if m["role"] == "user"] == ["one", "two"]
        assert conn.count("response.create") == 2
        no_protocol_errors(conn)


# ---------------------------------------------------------------------------------------------------------------
# dev07: FunctionCallResponse waits for session readiness


async def test_dev07_function_call_response_waits_for_session_ready(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """Reference: a FunctionCallResponse goes upstream at once, even before session.updated. Ours: it waits."""
    upstream.scenario = Scenario(enforce_session_before_context=True)
    async with connect(proxy.url()) as client:
        await client.send(MANUAL_SETTINGS)
        await client.send({"type": "FunctionCallResponse", "id": "call_early", "content": "ok"})
        conn = await upstream.connection(0)
        await conn.wait_type("conversation.item.create")
        item = conn.of_type("conversation.item.create")[0]
        assert item.payload["item"] == {"type": "function_call_output", "call_id": "call_early", "output": "ok"}
        assert item.at >= conn.sent_of_type("session.updated")[0].at
        await client.wait_type("AgentThinking")
        no_protocol_errors(conn)


# ---------------------------------------------------------------------------------------------------------------
# dev08: Settings during an active response (reference behaviour kept)


async def test_dev08_settings_during_active_response_gets_settings_applied_and_is_not_forwarded(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(session_updated_on_connect=True, response_delay=0.6)
    async with connect(proxy.url()) as client:
        await client.wait_type("SettingsApplied")
        conn = await upstream.connection(0)
        await client.inject("Hello")
        await conn.wait_type("response.create")
        await client.send(MANUAL_SETTINGS)
        await client.wait_count("SettingsApplied", 2)
        await client.wait_assistant_text("Hello from mock")
        await settle()
        assert conn.count("session.update") == 0
        # It was dropped, not remembered: a later Settings is forwarded.
        await client.send(MANUAL_SETTINGS)
        await conn.wait_type("session.update")
        await client.wait_count("SettingsApplied", 3)


# ---------------------------------------------------------------------------------------------------------------
# dev09: upstream failures and close codes reach the client


def sanitised(description: str, proxy: ProxyProcess) -> None:
    assert FAKE_API_KEY not in description
    assert "127.0.0.1" not in description
    assert str(proxy.port) not in description


async def test_dev09_upstream_auth_failure_gives_error_then_close_1011(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """Reference: the client is closed with no Error and no code (1005). Ours: Error, then 1011."""
    upstream.scenario = Scenario(reject_status=401)
    async with connect(proxy.url()) as client:
        await client.send(MANUAL_SETTINGS)
        got = await client.wait_type("Error")
        closed = await client.wait_closed()
    assert got["code"] == "upstream_auth_failed"
    sanitised(got["description"], proxy)
    assert closed.code == 1011
    assert all(FAKE_API_KEY not in str(f.data) for f in client.frames)
    assert not client.json_frames("SettingsApplied")


async def test_dev09_upstream_handshake_failure_gives_error_then_close_1011(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(reject_status=500)
    async with connect(proxy.url()) as client:
        got = await client.wait_type("Error")
        closed = await client.wait_closed()
    assert got["code"] == "upstream_handshake_failed"
    sanitised(got["description"], proxy)
    assert closed.code == 1011


async def test_dev09_upstream_connect_refused_gives_error_then_close_1011(refused_proxy: ProxyProcess) -> None:
    async with connect(refused_proxy.url()) as client:
        got = await client.wait_type("Error")
        closed = await client.wait_closed()
    assert got["code"] == "upstream_connect_failed"
    sanitised(got["description"], refused_proxy)
    assert closed.code == 1011


@pytest.mark.parametrize(
    ("upstream_code", "reason", "client_code", "client_reason"),
    [
        pytest.param(4001, "bye", 4001, "bye", id="4001"),
        pytest.param(1000, "done", 1000, "done", id="1000"),
        pytest.param(1001, "going away", 1001, "going away", id="1001"),
        pytest.param(1005, "", 1000, "", id="no-status-1005"),
        pytest.param(None, "", 1011, None, id="dropped-1006"),
    ],
)
async def test_dev09_upstream_close_code_reaches_client_mapped(
    proxy: ProxyProcess,
    upstream: FakeUpstream,
    upstream_code: int | None,
    reason: str,
    client_code: int,
    client_reason: str | None,
) -> None:
    """Reference: the client always sees 1005. Ours: 1005 -> 1000, abnormal -> 1011, other codes as sent."""
    async with ready(proxy, upstream) as (client, conn):
        await conn.close(upstream_code, reason)
        closed = await client.wait_closed()
    assert closed.code == client_code
    if client_reason is not None:
        assert (closed.reason or "") == client_reason
    no_client_errors(client)


async def test_dev09_upstream_close_before_session_ready_gives_error_then_mapped_close(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with connect(proxy.url()) as client:
        conn = await upstream.connection(0)
        await conn.close(4002, "not now")
        got = await client.wait_type("Error")
        closed = await client.wait_closed()
    assert got["code"] == "upstream_closed_before_session_ready"
    assert closed.code == 4002


# ---------------------------------------------------------------------------------------------------------------
# dev10: UtteranceEnd.last_word_end


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"audio_end_ms": 2500, "item_id": "item_a"}, 2.5, id="audio_end_ms"),
        pytest.param({"audio_end_ms": 2500, "last_word_end": 1.5}, 1.5, id="last_word_end-wins"),
        pytest.param({"audio_end_ms": "late"}, 0, id="not-a-number"),
        pytest.param({}, 0, id="neither"),
    ],
)
async def test_dev10_utterance_end_last_word_end(
    proxy: ProxyProcess, upstream: FakeUpstream, fields: dict[str, object], expected: float
) -> None:
    """Reference: last_word_end from upstream last_word_end, else 0 (the real API never sends it). Ours: else
    speech_stopped.audio_end_ms / 1000, else 0."""
    async with ready(proxy, upstream, VAD_SETTINGS) as (client, conn):
        await conn.send({"type": "input_audio_buffer.speech_stopped", **fields})
        got = await client.wait_type("UtteranceEnd")
        assert got["last_word_end"] == expected
        assert got["channel"] == [0, 1]
