"""Reference integration catalogue (§12.2): connection, Settings/session.update, inject, greeting, context,
upstream errors and speech events. Test names carry the catalogue number (b = "both", m = mock-only)."""

from __future__ import annotations

import pytest
import trio

from .client import MANUAL_SETTINGS, connect
from .common import no_client_errors, no_protocol_errors, ready, settings, settle
from .conftest import FAKE_API_KEY, ProxyProcess
from .upstream import FakeUpstream, Scenario, error

pytestmark = pytest.mark.e2e  # real proxy processes on loopback

GREETING = "Hello! How can I help you today?"
CONTEXT = {
    "messages": [
        {"type": "History", "role": "user", "content": "Hello"},
        {"type": "History", "role": "assistant", "content": "Hi there!"},
    ]
}


async def test_b01_listens_on_configured_path_and_accepts_websocket_upgrade(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with connect(proxy.url()) as client:
        conn = await upstream.connection(0)
        assert client.ws.closed is None
    # One upstream per client, opened at once, to the configured URL as given, with the key as a Bearer token.
    assert conn.target == "/v1/realtime?model=gpt-realtime"
    assert conn.headers.get("authorization") == f"Bearer {FAKE_API_KEY}"
    assert "openai-beta" not in conn.headers


async def test_b02_client_connecting_to_openai_proxy_reaches_open_state(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """The query string never affects routing."""
    async with connect(proxy.url(query="service=agent&foo=bar")) as client:
        await upstream.connection(0)
        assert client.ws.closed is None
        await client.send(MANUAL_SETTINGS)
        await client.wait_type("SettingsApplied")


async def test_b08_translates_settings_to_session_update_and_session_updated_to_settings_applied(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await settle()
        no_client_errors(client)
        assert conn.count("session.update") == 1
        session = conn.of_type("session.update")[0].payload["session"]
        assert session["type"] == "realtime"
        assert session["model"] == "gpt-realtime"
        assert session["instructions"] == "Hi"
        # SettingsApplied comes from session.updated, not from the Settings itself.
        applied = client.json_frames("SettingsApplied")[0]
        assert applied.at >= conn.sent_of_type("session.updated")[0].at


async def _upstream_error_reaches_client(
    proxy: ProxyProcess, upstream: FakeUpstream, code: str, message: str
) -> dict[str, object]:
    async with ready(proxy, upstream) as (client, conn):
        await trio.sleep(0.05)
        await conn.send(error(code, message))
        got = await client.wait_type("Error")
        assert client.closed is None  # upstream errors never close the session
        return got


async def test_m09_when_upstream_sends_error_after_session_updated_client_receives_error(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    got = await _upstream_error_reaches_client(
        proxy, upstream, "server_error", "The server had an error while processing your request."
    )
    assert "server had an error" in str(got["description"])
    assert got["code"] == "server_error"


async def test_m10_error_code_idle_timeout_reaches_client(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    got = await _upstream_error_reaches_client(proxy, upstream, "idle_timeout", "Session idle timeout.")
    assert got == {"type": "Error", "description": "Session idle timeout.", "code": "idle_timeout"}


async def test_m11_error_code_session_max_duration_reaches_client(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    got = await _upstream_error_reaches_client(
        proxy, upstream, "session_max_duration", "Your session hit the maximum duration of 60 minutes."
    )
    assert got["code"] == "session_max_duration"


async def test_m12_speech_started_maps_to_user_started_speaking(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await conn.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": 100, "item_id": "item_a"})
        assert await client.wait_type("UserStartedSpeaking") == {"type": "UserStartedSpeaking"}


async def test_m13_speech_stopped_maps_to_utterance_end_with_channel_and_last_word_end(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await conn.send({"type": "input_audio_buffer.speech_stopped"})
        got = await client.wait_type("UtteranceEnd")
        assert got == {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 0}


async def test_m14_speech_stopped_with_channel_and_last_word_end_passed_through(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await conn.send({"type": "input_audio_buffer.speech_stopped", "channel": [0], "last_word_end": 1.5})
        got = await client.wait_type("UtteranceEnd")
        assert got["channel"] == [0]
        assert got["last_word_end"] == 1.5


async def test_m15_does_not_send_session_update_while_response_is_active(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(response_delay=0.3)
    async with connect(proxy.url()) as client:
        await client.inject("Hello")  # queued: the session is not ready yet
        await trio.sleep(0.05)
        await client.send(MANUAL_SETTINGS)
        await client.wait_assistant_text("Hello from mock")
        conn = await upstream.connection(0)
        types = conn.types()
        assert types.count("session.update") == 1
        assert "session.update" not in types[types.index("response.create") :]
        no_protocol_errors(conn)


async def test_b16_no_session_update_after_output_audio_done_until_output_text_done(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """The mock's session.updated on connect makes the session ready without a Settings; a first Settings sent
    while the response is active gets SettingsApplied and is not forwarded (deviation 8 keeps this)."""
    # text.done 500 ms after the audio (the reference: 300 ms) leaves room for the Settings sent 50 ms after the echo.
    upstream.scenario = Scenario(session_updated_on_connect=True, response_mode="audio_first", audio_first_delay=0.5)
    async with connect(proxy.url()) as client:
        await client.wait_type("SettingsApplied")
        await client.inject("Hello")
        await client.wait_type("ConversationText", role="user")
        await trio.sleep(0.05)
        await client.send(MANUAL_SETTINGS)
        await client.wait_count("SettingsApplied", 2)
        await client.wait_assistant_text("Hello from mock")
        conn = await upstream.connection(0)
        await settle()
        assert conn.count("session.update") == 0, conn.summary()


async def test_m20_forwards_only_first_settings_per_connection(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await client.send(settings(think={"prompt": "Second"}))
        await client.wait_count("SettingsApplied", 2)
        await settle()
        assert conn.count("session.update") == 1
        assert len(client.json_frames("SettingsApplied")) == 2


async def test_b21_translates_inject_user_message_to_item_create_and_response_create(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await client.inject("Hello")
        await client.wait_assistant_text("Hello from mock")
        items = conn.items_created()
        assert len(items) == 1
        assert items[0]["type"] == "message"
        assert items[0]["role"] == "user"
        assert items[0]["content"] == [{"type": "input_text", "text": "Hello"}]
        assert conn.count("response.create") == 1
        assert conn.types().index("conversation.item.create") < conn.types().index("response.create")
        no_protocol_errors(conn)


async def test_b49_echoes_user_message_as_conversation_text_role_user(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    text = '  Echo me exactly: ünïcødé 😀 "quoted"  '
    async with ready(proxy, upstream) as (client, _conn):
        await client.inject(text)
        got = await client.wait_type("ConversationText", role="user")
        assert got == {"type": "ConversationText", "role": "user", "content": text}


async def test_m50_sends_response_create_only_after_receiving_conversation_item_added(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(user_item_delay=0.1)
    async with ready(proxy, upstream) as (client, conn):
        await client.inject("Hello")
        await client.wait_assistant_text("Hello from mock")
        create = conn.of_type("conversation.item.create")[-1]
        response_create = conn.of_type("response.create")[0]
        assert conn.received.index(create) < conn.received.index(response_create)
        ack = conn.sent_of_type("conversation.item.added")[0]
        assert response_create.at >= ack.at
        assert response_create.at - create.at >= 0.05  # the mock holds its acknowledgement for 100 ms
        no_protocol_errors(conn)


async def test_m51_sends_context_in_session_update_instructions_not_as_items(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(enforce_session_before_context=True)
    async with ready(proxy, upstream, settings(context=CONTEXT)) as (_client, conn):
        await settle()
        instructions = conn.of_type("session.update")[0].payload["session"]["instructions"]
        assert "Previous conversation:" in instructions
        assert "user: Hello" in instructions
        assert "assistant: Hi there!" in instructions
        assert conn.count("conversation.item.create") == 0
        no_protocol_errors(conn)


async def test_m54_injects_agent_greeting_as_conversation_text_to_client_only(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(enforce_session_before_context=True)
    async with ready(proxy, upstream, settings(greeting=GREETING)) as (client, conn):
        await client.wait_assistant_text(GREETING, timeout=1.5)
        await settle()
        assert not [i for i in conn.items_created() if i.get("role") == "assistant"]
        assert conn.count("conversation.item.create") == 0
        no_protocol_errors(conn)


async def test_m55_client_receives_agent_audio_done_after_greeting_conversation_text(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream, settings(greeting=GREETING)) as (client, _conn):
        greeting = await client.wait_assistant_text(GREETING)
        await client.wait_type("AgentAudioDone")
        following = [f.type for f in client.frames[greeting.index + 1 : greeting.index + 3]]
        assert following == ["AgentDone", "AgentAudioDone"], client.transcript()


async def test_m56_session_created_does_not_trigger_settings_applied_or_greeting(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(session_created_on_connect=True)
    async with connect(proxy.url()) as client:
        conn = await upstream.connection(0)
        await conn.wait_for(lambda c: bool(c.sent), what="session.created sent")
        await trio.sleep(0.1)
        assert client.json_frames() == [], "session.created alone must not produce any client message"
        await client.send(settings(greeting=GREETING))
        await client.wait_assistant_text(GREETING)
        await trio.sleep(0.5)
        assert len(client.json_frames("SettingsApplied")) == 1
        assert client.assistant_texts() == [GREETING]
        assert client.json_frames("SettingsApplied")[0].at >= conn.sent_of_type("session.updated")[0].at


async def test_m57_greeting_must_not_send_item_create_or_response_create_upstream(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    # The mock would acknowledge an assistant item, as in the reference's greeting-flag scenario.
    upstream.scenario = Scenario(session_created_on_connect=True, assistant_item_reply="added")
    async with ready(proxy, upstream, settings(greeting=GREETING)) as (client, conn):
        await client.wait_assistant_text(GREETING)
        await settle()
        assert conn.count("conversation.item.create") == 0
        assert conn.count("response.create") == 0


async def test_m58_greeting_sends_nothing_to_upstream(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    upstream.scenario = Scenario(enforce_session_before_context=True)
    async with ready(proxy, upstream, settings(greeting=GREETING)) as (client, conn):
        await client.wait_assistant_text(GREETING)
        await settle(0.5)
        assert conn.types() == ["session.update"]


async def test_m59_context_and_greeting_context_in_instructions_no_greeting_sent(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    context = {"messages": [{"type": "History", "role": "user", "content": "Previous question"}]}
    async with ready(proxy, upstream, settings(greeting=GREETING, context=context)) as (client, conn):
        await settle(0.5)
        assert client.assistant_texts() == []
        instructions = conn.of_type("session.update")[0].payload["session"]["instructions"]
        assert "Previous conversation:" in instructions
        assert "user: Previous question" in instructions
        assert conn.count("conversation.item.create") == 0
        assert conn.count("response.create") == 0


async def test_m60_greeting_flow_must_not_produce_upstream_error(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    upstream.scenario = Scenario(server_error_on_assistant_item=True, assistant_item_reply="created")
    async with ready(proxy, upstream, settings(greeting=GREETING)) as (client, conn):
        await client.wait_assistant_text(GREETING)
        await settle(1.0)  # the reference watches for 2 s; nothing in this flow is timed
        no_client_errors(client)
        no_protocol_errors(conn)


async def test_m62_session_update_uses_ga_audio_input_manual_commit_null_turn_detection(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (_client, conn):
        await settle()
        assert conn.count("session.update") == 1
        session = conn.of_type("session.update")[0].payload["session"]
        audio_input = session["audio"]["input"]
        assert "turn_detection" in audio_input
        assert audio_input["turn_detection"] is None
        assert audio_input["format"] == {"type": "audio/pcm", "rate": 24000}
        assert audio_input["transcription"] == {"model": "gpt-4o-transcribe", "language": "en", "prompt": ""}
        assert "turn_detection" not in session


async def test_m63_session_update_includes_audio_output_from_session_audio_output(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    message = settings(sessionAudioOutput={"voice": "marin", "speed": 1})
    async with ready(proxy, upstream, message) as (_client, conn):
        session = conn.of_type("session.update")[0].payload["session"]
        assert session["audio"]["output"] == {"voice": "marin", "speed": 1}
        assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"
        assert session["audio"]["input"]["turn_detection"] is None
        assert "voice" not in session


async def test_m64_greeting_delivers_text_to_client_only(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    async with ready(proxy, upstream, settings(greeting=GREETING)) as (client, conn):
        got = await client.wait_assistant_text(GREETING)
        assert got.json == {"type": "ConversationText", "role": "assistant", "content": GREETING}
        await settle()
        assert conn.types() == ["session.update"]
        assert GREETING not in conn.received[0].raw


async def test_m67_inject_before_settings_deferred_until_session_updated(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(enforce_session_before_context=True)
    async with connect(proxy.url()) as client:
        await client.inject("Early")
        await client.send(MANUAL_SETTINGS)
        await client.wait_assistant_text("Hello from mock")
        conn = await upstream.connection(0)
        types = conn.types()
        assert types.index("session.update") < types.index("conversation.item.create")
        assert conn.of_type("conversation.item.create")[0].at >= conn.sent_of_type("session.updated")[0].at
        no_protocol_errors(conn)


async def test_m69_client_message_queue_order_session_update_then_item_create(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with connect(proxy.url()) as client:
        await client.send(MANUAL_SETTINGS)
        await client.inject("Hello")
        await client.wait_assistant_text("Hello from mock")
        conn = await upstream.connection(0)
        types = conn.types()
        assert types[0] == "session.update"
        assert types.index("session.update") < types.index("conversation.item.create")
        no_protocol_errors(conn)


async def test_m70_same_item_id_added_and_done_count_once_one_response_create(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(user_item_done_too=True)
    async with ready(proxy, upstream) as (client, conn):
        await client.inject("Hello")
        await client.wait_assistant_text("Hello from mock")
        await settle()
        assert conn.count("response.create") == 1


async def test_m76_unmapped_upstream_event_conversation_created_does_not_yield_error(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(conversation_created_after_update=True)
    async with ready(proxy, upstream) as (client, conn):
        await conn.wait_for(lambda c: bool(c.sent_of_type("conversation.created")), what="conversation.created")
        await settle()
        no_client_errors(client)


async def test_m77_client_does_not_receive_raw_conversation_item_events(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(user_item_done_too=True)
    async with ready(proxy, upstream) as (client, _conn):
        await client.inject("Hello")
        await client.wait_assistant_text("Hello from mock")
        await settle()
        assert not [t for t in client.unexpected_types() if t.startswith("conversation.")]
        assert client.unexpected_types() == []


async def test_m78_agent_started_speaking_before_assistant_conversation_text_same_turn(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (client, _conn):
        await client.inject("Hello")
        text = await client.wait_assistant_text("Hello from mock")
        started = client.index_of(lambda f: f.type == "AgentStartedSpeaking")
        assert 0 <= started < text.index, client.transcript()


async def test_m79_client_receives_agent_audio_done_when_response_completes_output_text_done(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (client, _conn):
        await client.inject("Hello")
        text = await client.wait_assistant_text("Hello from mock")
        await client.wait_type("AgentAudioDone")
        done = client.index_of(lambda f: f.type == "AgentAudioDone")
        assert done > text.index


async def test_m82_assistant_conversation_text_before_idle_timeout_error(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    upstream.scenario = Scenario(response_mode="idle_timeout")
    async with ready(proxy, upstream) as (client, _conn):
        await client.inject("Hello")
        await client.wait_type("Error", code="idle_timeout")
        text = client.index_of(lambda f: f.type == "ConversationText" and f.json.get("role") == "assistant")
        err = client.index_of(lambda f: f.type == "Error")
        assert 0 <= text < err, client.transcript()
