"""Upstream -> client handling (reference §6, §8.2 traces, §8.3/§8.4, §9, §10) and the DESIGN fixes on that side."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from proxy.core import Close, FailureKind, UpstreamFailure
from proxy.openai.translator import TranslatorOptions
from proxy.protocol.openai import SERVER_EVENT_TYPES
from tests.openai.harness import (
    MANUAL,
    SESSION_UPDATED,
    VAD,
    Harness,
    assistant_item,
    audio_delta,
    item_event,
    kinds,
    of_kind,
    text_done,
)

INJECT = {"type": "InjectUserMessage", "content": "hi"}
FCR = {"type": "FunctionCallResponse", "id": "call_mock_1", "content": '{"time":"12:00"}'}
RESPONSE_DONE: dict[str, Any] = {"type": "response.done", "response": {"status": "completed", "output": []}}
AUDIO_DONE = {"type": "response.output_audio.done"}
PCM = b"\x00\x00" * 160


def turn(h: Harness, settings: dict[str, Any] | None = None) -> None:
    """Ready session, one inject, acknowledged: a response is active."""
    h.ready(settings)
    h.send(INJECT)
    h.up(item_event("added", item_id=h.sent_item_ids()[-1]))
    assert h.upstream_kinds()[-1] == "response.create"


def test_client_receives_only_component_messages_never_raw_upstream_json() -> None:
    h = Harness()
    turn(h)
    for event in (
        item_event("created"),
        item_event("done"),
        {"type": "response.created"},
        audio_delta(PCM),
        AUDIO_DONE,
        text_done(),
        assistant_item("Hello from mock"),
    ):
        h.up(event)
    allowed = {
        "SettingsApplied",
        "ConversationText",
        "AgentStartedSpeaking",
        "AgentDone",
        "AgentAudioDone",
        "<binary>",
    }
    assert set(h.client_kinds()) <= allowed


# -- trace A: text turn -------------------------------------------------------------------------------------------


def test_trace_a_text_turn() -> None:
    h = Harness()
    assert h.send(MANUAL).upstream_kinds == ["session.update"]
    assert h.up(SESSION_UPDATED).client_kinds == ["SettingsApplied"]
    step = h.send(INJECT)
    assert step.upstream_kinds == ["conversation.item.create"]
    assert of_kind(step.client, "ConversationText") == [{"type": "ConversationText", "role": "user", "content": "hi"}]
    assert h.up(item_event("added", item_id=h.sent_item_ids()[0])).upstream_kinds == ["response.create"]
    step = h.up(text_done("Hello from mock"))
    assert step.client_kinds == ["AgentStartedSpeaking", "ConversationText", "AgentDone", "AgentAudioDone"]
    assert of_kind(step.client, "ConversationText")[0] == {
        "type": "ConversationText",
        "role": "assistant",
        "content": "Hello from mock",
    }
    assert h.up(assistant_item("Hello from mock")).client == []  # duplicate of the fallback text


# -- trace B: audio turn --------------------------------------------------------------------------------------------


def test_trace_b_audio_turn() -> None:
    h = Harness()
    turn(h)
    assert h.up({"type": "response.created", "response": {"id": "r"}}).client == []
    assert h.up(item_event("added", item_id="item_a", role="assistant", content=[])).client == []
    step = h.up(audio_delta(PCM))
    assert step.client == [b'{"type":"AgentStartedSpeaking"}'.decode(), PCM]
    assert h.up(audio_delta(PCM[:2])).client == [PCM[:2]]
    assert h.up({"type": "response.output_audio_transcript.delta", "delta": "Hel"}).client == []
    assert h.up(AUDIO_DONE).client_kinds == ["AgentDone", "AgentAudioDone"]
    step = h.up({"type": "response.output_audio_transcript.done", "transcript": " Hello there "})
    assert of_kind(step.client, "ConversationText") == [
        {"type": "ConversationText", "role": "assistant", "content": " Hello there "}
    ]
    done_item = item_event(
        "done", item_id="item_a", role="assistant", content=[{"type": "output_audio", "transcript": "Hello there"}]
    )
    assert h.up(done_item).client == []
    assert h.up(RESPONSE_DONE).client == []


def test_binary_frames_to_the_client_are_exactly_the_decoded_audio_deltas() -> None:
    h = Harness()
    turn(h)
    h.up(audio_delta(b"\x01\x02\x03\x04"))
    h.up(audio_delta(b""))
    h.up(text_done())
    assert [f for f in h.client if isinstance(f, bytes)] == [b"\x01\x02\x03\x04"]


def test_an_empty_audio_delta_sends_nothing() -> None:
    h = Harness()
    turn(h)
    assert h.up(audio_delta(b"")).client == []


def test_a_single_agent_done_when_audio_precedes_output_text_done() -> None:
    h = Harness()
    turn(h)
    for event in (audio_delta(PCM), AUDIO_DONE, text_done()):
        h.up(event)
    assert h.client_kinds().count("AgentDone") == 1
    assert h.client_kinds().count("AgentAudioDone") == 1
    assert h.client_kinds().index("AgentAudioDone") > h.client_kinds().index("<binary>")


def test_output_audio_done_does_not_end_the_response() -> None:
    h = Harness()
    turn(h)
    h.up(audio_delta(PCM))
    h.up(AUDIO_DONE)
    assert h.send(MANUAL).upstream == []  # still blocked: the response is active


# -- fix 5: AgentDone belongs to the response that finished --------------------------------------------------------


@pytest.mark.parametrize("audio", [False, True])
def test_no_duplicate_agent_done_when_output_text_done_and_response_done_end_one_response(audio: bool) -> None:
    h = Harness()
    turn(h)
    if audio:
        h.up(audio_delta(PCM))
        h.up(AUDIO_DONE)
    h.up(text_done())
    assert h.up(RESPONSE_DONE).client == []
    assert h.client_kinds().count("AgentDone") == 1


def test_after_a_tool_result_agent_done_waits_for_the_follow_up_response_audio() -> None:
    """Reference (§13.1-5): output_text.done sends the deferred response.create, then AgentDone at once, ahead of
    the follow-up's audio, and nothing after it. Here: one AgentDone pair, after the follow-up's audio."""
    h = Harness()
    h.ready()
    h.up({"type": "response.function_call_arguments.done", "call_id": "call_mock_1", "name": "t", "arguments": "{}"})
    mark = len(h.client)
    h.send(FCR)
    step = h.up(text_done("Hello from mock"))
    assert step.upstream_kinds == ["response.create"]
    assert step.client_kinds == ["ConversationText"]
    for event in (audio_delta(PCM), audio_delta(PCM), AUDIO_DONE, text_done("The time is noon."), RESPONSE_DONE):
        h.up(event)
    assert kinds(h.client[mark:]) == [
        "AgentThinking",
        "ConversationText",
        "AgentStartedSpeaking",
        "<binary>",
        "<binary>",
        "AgentDone",
        "AgentAudioDone",
        "ConversationText",
    ]


def test_after_a_tool_result_a_text_only_follow_up_ends_with_one_agent_done() -> None:
    h = Harness()
    h.ready()
    h.up({"type": "response.function_call_arguments.done", "call_id": "call_mock_1", "name": "t"})
    h.send(FCR)
    h.up(RESPONSE_DONE)  # the function-call response ends after the tool result arrived
    assert h.client_kinds().count("AgentDone") == 0
    step = h.up(text_done("It is noon."))
    assert step.client_kinds == ["AgentStartedSpeaking", "ConversationText", "AgentDone", "AgentAudioDone"]
    assert h.up(RESPONSE_DONE).client == []


# -- trace C / D: function calls ----------------------------------------------------------------------------------


def test_trace_c_function_call_real_api_shape() -> None:
    h = Harness()
    turn(h, VAD)
    args = {"type": "response.function_call_arguments.done", "call_id": "call_1", "name": "get_time", "arguments": "{}"}
    step = h.up(args)
    assert step.client_kinds == ["AgentStartedSpeaking", "FunctionCallRequest"]
    assert of_kind(step.client, "FunctionCallRequest")[0]["functions"] == [
        {"id": "call_1", "name": "get_time", "arguments": "{}", "client_side": True}
    ]
    assert h.up(RESPONSE_DONE).client_kinds == ["AgentDone", "AgentAudioDone"]
    step = h.send(FCR)
    assert step.upstream_kinds == ["conversation.item.create"]
    assert step.client_kinds == ["AgentThinking"]
    output_item = {"type": "function_call_output", "call_id": "call_mock_1", "output": "x"}
    added = {"type": "conversation.item.added", "item": {"id": "item_fo", **output_item}}
    assert h.up(added).upstream == []
    assert h.up({**added, "type": "conversation.item.done"}).upstream_kinds == ["response.create"]


def test_function_call_response_before_the_function_call_response_ends_is_answered_at_response_done() -> None:
    h = Harness()
    turn(h)
    h.up({"type": "response.function_call_arguments.done", "call_id": "c", "name": "f", "arguments": "{}"})
    h.send(FCR)
    step = h.up(RESPONSE_DONE)
    assert step.client == []  # the agent's turn goes on: the follow-up response will end it
    assert step.upstream_kinds == ["response.create"]


def test_tool_output_item_done_during_an_active_response_defers_the_create_to_its_end() -> None:
    h = Harness()
    turn(h)
    h.send(FCR)
    done = item_event("done", item_id="o1", role=None, type_="function_call_output")
    assert h.up(done).upstream == []
    assert h.up(RESPONSE_DONE).upstream_kinds == ["response.create"]
    assert h.upstream_kinds().count("response.create") == 2


def test_trace_d_function_call_against_the_integration_mock() -> None:
    h = Harness()
    h.ready()
    step = h.up({"type": "response.function_call_arguments.done", "call_id": "call_mock_1", "name": "get_current_time"})
    assert step.client_kinds == ["AgentStartedSpeaking", "FunctionCallRequest"]
    h.send(FCR)
    step = h.up(text_done("Hello from mock"))
    assert step.client_kinds == ["ConversationText"]
    assert step.upstream_kinds == ["response.create"]
    step = h.up(text_done("Hello from mock"))
    assert step.client_kinds == ["AgentStartedSpeaking", "ConversationText", "AgentDone", "AgentAudioDone"]
    assert h.up(assistant_item("Hello from mock")).client == []


@pytest.mark.parametrize(
    "completion",
    [
        [RESPONSE_DONE, text_done()],
        [AUDIO_DONE, RESPONSE_DONE],
        [RESPONSE_DONE],
        [text_done()],
        [item_event("done", item_id="item_fcr_mock", role=None, type_="function_call_output")],
    ],
    ids=["response.done-then-text.done", "audio.done-then-response.done", "response.done", "text.done", "item.done"],
)
def test_exactly_one_deferred_response_create_per_function_call_response(completion: list[dict[str, Any]]) -> None:
    h = Harness()
    h.ready()
    h.send(FCR)
    for event in completion:
        h.up(event)
    assert h.upstream_kinds().count("response.create") == 1


def test_item_added_for_the_tool_output_does_not_trigger_the_deferred_create() -> None:
    h = Harness()
    h.ready()
    h.send(FCR)
    assert h.up(item_event("added", item_id="o", role=None, type_="function_call_output")).upstream == []


def test_only_one_function_call_request_per_arguments_done() -> None:
    h = Harness()
    h.ready()
    h.up({"type": "response.output_audio_transcript.done", "transcript": "Let me check."})
    h.up({"type": "response.function_call_arguments.done", "call_id": "c", "name": "f", "arguments": "{}"})
    assert h.client_kinds().count("FunctionCallRequest") == 1
    assert h.client_kinds().index("AgentStartedSpeaking") < h.client_kinds().index("FunctionCallRequest")


def test_transcript_done_alone_sends_no_function_call_request() -> None:
    h = Harness()
    h.ready()
    h.up({"type": "response.output_audio_transcript.done", "transcript": "Hi"})
    assert "FunctionCallRequest" not in h.client_kinds()


# -- fallback texts and dedupe (§8.4) --------------------------------------------------------------------------------


def test_at_most_one_fallback_text_per_response() -> None:
    h = Harness()
    turn(h)
    h.up({"type": "response.output_audio_transcript.done", "transcript": "One"})
    h.up(text_done("Two"))
    h.up({"type": "response.done", "response": {"output": [assistant_item("Three")["item"]]}})
    assert [m["content"] for m in of_kind(h.client, "ConversationText") if m["role"] == "assistant"] == ["One"]


def test_blank_transcript_done_sends_nothing() -> None:
    h = Harness()
    turn(h)
    assert h.up({"type": "response.output_audio_transcript.done", "transcript": "  "}).client == []


def test_response_done_text_comes_from_accumulated_text_deltas_first() -> None:
    h = Harness()
    turn(h)
    h.up({"type": "response.output_text.delta", "delta": "Hel"})
    h.up({"type": "response.output_text.delta", "delta": {"text": "lo"}})
    step = h.up({"type": "response.done", "response": {"output": [assistant_item("Other")["item"]]}})
    assert step.client_kinds == ["AgentStartedSpeaking", "ConversationText", "AgentDone", "AgentAudioDone"]
    assert of_kind(step.client, "ConversationText")[0]["content"] == "Hello"


def test_output_text_done_without_text_uses_accumulated_deltas() -> None:
    h = Harness()
    turn(h)
    h.up({"type": "response.output_text.delta", "delta": " Hi "})
    step = h.up({"type": "response.output_text.done"})
    assert of_kind(step.client, "ConversationText")[0]["content"] == "Hi"


def test_output_text_done_without_any_text_still_ends_the_turn() -> None:
    h = Harness()
    turn(h)
    assert h.up({"type": "response.output_text.done"}).client_kinds == [
        "AgentStartedSpeaking",
        "AgentDone",
        "AgentAudioDone",
    ]


def test_assistant_item_text_is_sent_once_per_item_id() -> None:
    h = Harness()
    h.ready()
    assert h.up(assistant_item("Hi there", "added", "item_x")).client_kinds == ["ConversationText"]
    assert h.up(assistant_item("Hi there, edited", "done", "item_x")).client == []


def test_assistant_function_call_part_item_maps_to_function_call_text() -> None:
    h = Harness()
    h.ready()
    part = {"type": "function_call", "name": "get_current_time", "arguments": "{}"}
    step = h.up(item_event("added", item_id="item_fc_499", role="assistant", content=[part]))
    assert of_kind(step.client, "ConversationText")[0]["content"] == "Function call: get_current_time({})"


def test_user_items_never_become_conversation_text() -> None:
    h = Harness()
    h.ready()
    assert h.up(item_event("added", item_id="u1")).client == []


# -- server VAD -----------------------------------------------------------------------------------------------------


def test_response_created_in_server_vad_mode_starts_a_response_with_fresh_signals() -> None:
    h = Harness()
    h.ready(VAD)
    h.up({"type": "response.created"})
    assert h.up(audio_delta(PCM)).client_kinds == ["AgentStartedSpeaking", "<binary>"]
    h.up(RESPONSE_DONE)
    h.up({"type": "response.created"})
    assert h.up(audio_delta(PCM)).client_kinds == ["AgentStartedSpeaking", "<binary>"]
    assert h.up(RESPONSE_DONE).client_kinds == ["AgentDone", "AgentAudioDone"]


def test_response_created_in_manual_mode_is_log_only() -> None:
    h = Harness()
    h.up(SESSION_UPDATED)
    h.up({"type": "response.created"})
    assert h.send(MANUAL).upstream_kinds == ["session.update"]


def test_speech_started_and_stopped_map_to_user_started_speaking_and_utterance_end() -> None:
    h = Harness()
    h.ready(VAD)
    assert h.up({"type": "input_audio_buffer.speech_started", "audio_start_ms": 10}).client_kinds == [
        "UserStartedSpeaking"
    ]
    step = h.up({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1500, "item_id": "i"})
    assert of_kind(step.client, "UtteranceEnd") == [{"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 1.5}]
    step = h.up({"type": "input_audio_buffer.speech_stopped", "channel": [0], "last_word_end": 1.5})
    assert of_kind(step.client, "UtteranceEnd") == [{"type": "UtteranceEnd", "channel": [0], "last_word_end": 1.5}]


def test_barge_in_sends_nothing_upstream_while_a_response_is_playing() -> None:
    """On speech_started the upstream handles the interruption itself (server VAD): the proxy sends no
    response.cancel, conversation.item.truncate or input_audio_buffer.clear, and keeps forwarding audio."""
    h = Harness()
    turn(h, VAD)
    assert h.up(audio_delta(PCM)).client[-1] == PCM  # the agent is speaking
    step = h.up({"type": "input_audio_buffer.speech_started", "audio_start_ms": 10})
    assert step.client_kinds == ["UserStartedSpeaking"]
    assert step.upstream_kinds == []
    step = h.send(PCM)
    assert step.upstream_kinds == ["input_audio_buffer.append"]


def test_transcription_deltas_accumulate_per_item() -> None:
    h = Harness()
    h.ready(VAD)
    texts = []
    for delta in ("Hel", "lo ", "world"):
        step = h.up(
            {"type": "conversation.item.input_audio_transcription.delta", "item_id": "item_accum", "delta": delta}
        )
        (message,) = of_kind(step.client, "Transcript")
        assert message["is_final"] is False
        assert message["speech_final"] is False
        texts.append(message["transcript"])
    assert texts == ["Hel", "Hello ", "Hello world"]
    step = h.up(
        {"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_accum", "transcript": "Hi"}
    )
    (final,) = of_kind(step.client, "Transcript")
    assert (final["transcript"], final["is_final"], final["speech_final"]) == ("Hi", True, True)
    step = h.up({"type": "conversation.item.input_audio_transcription.delta", "item_id": "item_accum", "delta": "x"})
    assert of_kind(step.client, "Transcript")[0]["transcript"] == "x"  # the entry was dropped on completion


def test_transcription_accumulators_are_bounded_evicting_the_oldest_item() -> None:
    h = Harness()
    h.ready(VAD)
    delta = "conversation.item.input_audio_transcription.delta"
    for n in range(65):
        h.up({"type": delta, "item_id": f"item_{n}", "delta": "a"})
    step = h.up({"type": delta, "item_id": "item_0", "delta": "b"})
    assert of_kind(step.client, "Transcript")[0]["transcript"] == "b"
    step = h.up({"type": delta, "item_id": "item_64", "delta": "b"})
    assert of_kind(step.client, "Transcript")[0]["transcript"] == "ab"


def test_transcription_failed_sends_nothing() -> None:
    h = Harness()
    h.ready(VAD)
    event = {"type": "conversation.item.input_audio_transcription.failed", "item_id": "i", "error": {"code": "x"}}
    assert h.up(event).client == []


# -- greeting (§6.4, trace G) ---------------------------------------------------------------------------------------


def test_greeting_is_client_only_text_followed_by_agent_done_once() -> None:
    h = Harness()
    settings = {"type": "Settings", "agent": {"greeting": "Hello! ", "think": {"prompt": "Hi"}}}
    step = h.send(settings)
    assert "Hello!" not in step.upstream[0]
    step = h.up(SESSION_UPDATED)
    assert step.client_kinds == ["SettingsApplied", "ConversationText", "AgentDone", "AgentAudioDone"]
    assert of_kind(step.client, "ConversationText")[0] == {
        "type": "ConversationText",
        "role": "assistant",
        "content": "Hello! ",
    }
    assert step.upstream == []
    assert h.up(SESSION_UPDATED).client_kinds == ["SettingsApplied"]


def test_greeting_is_suppressed_when_the_settings_carry_context() -> None:
    h = Harness()
    agent = {"greeting": "Hello!", "context": {"messages": [{"role": "user", "content": "Previous question"}]}}
    h.send({"type": "Settings", "agent": agent})
    assert h.up(SESSION_UPDATED).client_kinds == ["SettingsApplied"]
    assert "conversation.item.create" not in h.upstream_kinds()


@pytest.mark.parametrize("greeting", ["   ", 5, None])
def test_blank_or_non_string_greeting_is_not_shown(greeting: Any) -> None:
    h = Harness()
    h.send({"type": "Settings", "agent": {"greeting": greeting}})
    assert h.up(SESSION_UPDATED).client_kinds == ["SettingsApplied"]


# -- errors (§9, Fix 3, Fix 4) --------------------------------------------------------------------------------------


def error(code: Any = "server_error", message: str = "The server had an error") -> dict[str, Any]:
    detail: dict[str, Any] = {"type": "server_error", "message": message}
    if code != "missing":
        detail["code"] = code
    return {"type": "error", "error": detail}


def test_upstream_errors_are_forwarded_and_logged_at_error(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.ready()
    with caplog.at_level(logging.ERROR, "proxy.openai"):
        step = h.up(error())
    assert of_kind(step.client, "Error") == [
        {"type": "Error", "description": "The server had an error", "code": "server_error"}
    ]
    assert any(r.levelno == logging.ERROR and "server_error" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("code", [None, "missing", ""])
def test_null_missing_or_empty_upstream_error_code_becomes_unknown(code: Any) -> None:
    h = Harness()
    h.ready()
    (message,) = of_kind(h.up(error(code)).client, "Error")
    assert message["code"] == "unknown"


def test_conversation_already_has_active_response_is_not_forwarded() -> None:
    h = Harness()
    h.ready()
    assert h.up(error("conversation_already_has_active_response")).client == []


@pytest.mark.parametrize("code", ["idle_timeout", "session_max_duration"])
def test_expected_closure_errors_are_forwarded_immediately_when_idle(
    code: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness()
    h.ready()
    with caplog.at_level(logging.INFO, "proxy.openai"):
        step = h.up(error(code))
    assert [m["code"] for m in of_kind(step.client, "Error")] == [code]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_idle_timeout_during_a_response_is_sent_after_the_text_of_output_text_done() -> None:
    h = Harness()
    turn(h)
    assert h.up(error("idle_timeout")).client == []
    step = h.up(text_done("Bye"))
    assert step.client_kinds == ["AgentStartedSpeaking", "ConversationText", "AgentDone", "AgentAudioDone", "Error"]


def test_idle_timeout_during_a_response_is_flushed_on_response_done_too() -> None:
    h = Harness()
    turn(h)
    h.up(audio_delta(PCM))
    h.up(error("idle_timeout"))
    step = h.up(RESPONSE_DONE)
    assert step.client_kinds == ["AgentDone", "AgentAudioDone", "Error"]


def test_idle_timeout_during_a_response_is_flushed_on_upstream_close() -> None:
    h = Harness()
    turn(h)
    h.up(error("idle_timeout"))
    h.core.upstream_closed(1000, "", h.now)
    assert [json.loads(f)["code"] for f in h.core.to_client] == ["idle_timeout"]


# -- malformed and unknown upstream frames (§6.1, Fix 9) -------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1,2]",
        '{"type":"response.output_audio.delta","delta":"!!notbase64!!"}',
        '{"type":"error","error":5}',
    ],
)
def test_malformed_upstream_frames_get_unmapped_upstream_event(frame: str) -> None:
    h = Harness()
    h.ready()
    step = h.up(frame)
    assert of_kind(step.client, "Error") == [
        {
            "type": "Error",
            "description": "Proxy received upstream message that could not be parsed as JSON.",
            "code": "unmapped_upstream_event",
        }
    ]


def test_unknown_upstream_event_types_are_logged_at_warning_and_never_reach_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    h.ready()
    with caplog.at_level(logging.WARNING, "proxy.openai"):
        step = h.up({"type": "response.brand_new_event", "payload": "x" * 10000})
        h.up({"no_type": True})
    assert step.client == []
    assert step.upstream == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("response.brand_new_event" in w for w in warnings)
    assert all(len(w) < 2000 for w in warnings)
    assert h.up(text_done()).client  # the session goes on


CANONICAL_TYPES = [
    "conversation.created",
    "conversation.item.added",
    "conversation.item.created",
    "conversation.item.deleted",
    "conversation.item.done",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.failed",
    "conversation.item.input_audio_transcription.segment",
    "conversation.item.retrieved",
    "conversation.item.truncated",
    "error",
    "input_audio_buffer.cleared",
    "input_audio_buffer.committed",
    "input_audio_buffer.dtmf_event_received",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.timeout_triggered",
    "mcp_list_tools.completed",
    "mcp_list_tools.failed",
    "mcp_list_tools.in_progress",
    "rate_limits.updated",
    "response.content_part.added",
    "response.content_part.done",
    "response.created",
    "response.done",
    "response.function_call_arguments.done",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.done",
    "response.output_item.added",
    "response.output_item.done",
    "response.output_text.added",
    "response.output_text.delta",
    "response.output_text.done",
    "session.created",
    "session.updated",
]
GA_EXTRAS = [
    "response.function_call_arguments.delta",
    "output_audio_buffer.started",
    "output_audio_buffer.stopped",
    "output_audio_buffer.cleared",
    "response.mcp_call_arguments.delta",
    "response.mcp_call_arguments.done",
    "response.mcp_call.in_progress",
    "response.mcp_call.completed",
    "response.mcp_call.failed",
]
SILENT = set(CANONICAL_TYPES + GA_EXTRAS) - {
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.delta",
    "error",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "response.done",
    "response.output_text.done",
    "response.function_call_arguments.done",
    "response.output_audio.done",
    "session.updated",
}


def test_the_canonical_list_has_38_types_and_all_of_them_and_the_ga_extras_are_known() -> None:
    assert len(CANONICAL_TYPES) == 38
    assert set(CANONICAL_TYPES + GA_EXTRAS) <= SERVER_EVENT_TYPES


@pytest.mark.parametrize("event_type", CANONICAL_TYPES + GA_EXTRAS)
def test_every_canonical_and_ga_event_type_has_an_explicit_handler(
    event_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness()
    h.ready()
    with caplog.at_level(logging.DEBUG, "proxy.openai"):
        step = h.up({"type": event_type})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "unmapped" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info]
    assert not [m for m in of_kind(step.client, "Error") if m["code"] == "unmapped_upstream_event"]
    if event_type in SILENT:
        assert step.client == []
        assert step.upstream == []


# -- closes and failures (§10, Fix 10) ------------------------------------------------------------------------------


def test_upstream_failure_sends_its_error_and_closes_the_client_with_its_close() -> None:
    h = Harness(opened=False)
    failure = UpstreamFailure(FailureKind.AUTH, 401)
    close = h.core.upstream_failed(failure, 0.0)
    assert close == failure.close() == Close(1011, "Upstream unavailable")
    assert [json.loads(f) for f in h.core.to_client] == [
        {
            "type": "Error",
            "description": "The upstream service rejected the proxy's credentials.",
            "code": "upstream_auth_failed",
        }
    ]


def test_upstream_close_before_session_ready_sends_an_error_and_relays_the_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    h.send(MANUAL)
    with caplog.at_level(logging.WARNING, "proxy.openai"):
        close = h.core.upstream_closed(4000, "policy\x00 reason", 1.0)
    assert close == Close(4000, "policy\x00 reason")
    assert [json.loads(f) for f in h.core.to_client] == [
        {
            "type": "Error",
            "description": (
                "Upstream closed before session ready (code 4000, reason: policy reason). "
                "Session may not have been applied."
            ),
            "code": "upstream_closed_before_session_ready",
        }
    ]
    assert any(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize(
    ("code", "expected"), [(1000, Close(1000, "bye")), (1005, Close(1000, "bye")), (None, Close(1011, ""))]
)
def test_upstream_close_after_session_ready_sends_nothing_and_maps_the_code(code: int | None, expected: Close) -> None:
    h = Harness()
    h.ready()
    assert h.core.upstream_closed(code, "bye", 1.0) == expected
    assert h.core.to_client == []


def test_after_the_client_closes_upstream_frames_are_ignored() -> None:
    h = Harness()
    turn(h)
    assert h.core.client_closed(1001, "going away", 0.0) == Close(1001, "going away")
    h.core.to_upstream.clear()
    for event in (audio_delta(PCM), text_done(), error()):
        assert h.up(event).client == []
    assert h.core.next_deadline() is None


def test_disconnect_without_close_frame_maps_to_1011_for_the_upstream() -> None:
    h = Harness()
    h.ready()
    assert h.core.client_closed(None, None, 0.0) == Close(1011, "")


def test_unacknowledged_injects_are_not_answered_by_item_events_after_a_reply_covers_them() -> None:
    h = Harness(TranslatorOptions())
    h.ready()
    h.send(INJECT)
    h.up(item_event("added", item_id=h.sent_item_ids()[0]))
    h.up(text_done())
    h.up(item_event("added", item_id="later_user_item"))
    assert h.upstream_kinds().count("response.create") == 1


def test_absurdly_nested_upstream_json_gets_unmapped_upstream_event_not_an_exception() -> None:
    h = Harness()
    h.ready()
    step = h.up('{"type":"response.done","response":' + "[" * 5000 + "]" * 5000 + "}")
    assert [m["code"] for m in of_kind(step.client, "Error")] == ["unmapped_upstream_event"]


def test_payloads_that_may_carry_audio_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.ready()
    with caplog.at_level(logging.DEBUG, "proxy.openai"):
        h.up({"type": "response.future_audio.delta", "delta": "QUJDREVGR0g="})
        h.up({"type": "conversation.item.added", "item": {"id": "i", "content": [{"audio": "QUJDREVGR0g="}]}})
    assert caplog.records
    assert all("QUJDREVGR0g" not in r.getMessage() for r in caplog.records)
