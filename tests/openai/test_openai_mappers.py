"""Pure mappers: tool results, errors, item text, fallback text, transcripts and the client-protocol constants
(reference §2.3, §5.3, §5.5, §6.2, §6.3, §9 and the matching §12.1 catalogue entries)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.openai import error_codes, javascript, session_update, upstream_text
from proxy.protocol import component as cp
from proxy.protocol import openai as oa


def fcr(**fields: Any) -> cp.FunctionCallResponse:
    message = cp.client_message_decoder.decode(json.dumps({"type": "FunctionCallResponse", **fields}))
    assert isinstance(message, cp.FunctionCallResponse)
    return message


def event(payload: dict[str, Any]) -> Any:
    return oa.decode_server_event(json.dumps(payload))


# -- client protocol constants ----------------------------------------------------------------------------------


def test_legal_client_types_are_exactly_the_four_and_translated_ones_exclude_keepalive() -> None:
    assert cp.LEGAL_CLIENT_TYPES == ("Settings", "InjectUserMessage", "FunctionCallResponse", "KeepAlive")
    assert cp.TRANSLATED_CLIENT_TYPES == ("Settings", "InjectUserMessage", "FunctionCallResponse")


def test_allowed_types_description_is_exact() -> None:
    assert error_codes.allowed_client_types_description() == (
        "Settings, InjectUserMessage, FunctionCallResponse. KeepAlive is ignored."
    )


def test_disallowed_description_is_exact_and_names_the_type() -> None:
    assert error_codes.disallowed_description("CustomPassthroughProbe") == (
        'Disallowed client message type "CustomPassthroughProbe" for OpenAI proxy (Issue #533). '
        "Allowed: Settings, InjectUserMessage, FunctionCallResponse. KeepAlive is ignored. "
        "Enable OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH=1 only for legacy debugging."
    )


@pytest.mark.parametrize(("value", "shown"), [(None, "(missing type)"), ("X", "X"), ("", ""), (5, "5")])
def test_client_type_is_described_as_given_or_missing(value: Any, shown: str) -> None:
    assert error_codes.describe_client_type(value) == shown


# -- InjectUserMessage ------------------------------------------------------------------------------------------


def test_inject_maps_to_a_user_message_item_with_input_text() -> None:
    assert session_update.user_message_item("hi") == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "hi"}],
    }


def test_inject_with_missing_content_sends_empty_text() -> None:
    message = cp.client_message_decoder.decode('{"type":"InjectUserMessage"}')
    assert isinstance(message, cp.InjectUserMessage)
    assert session_update.inject_text(message) == ""


# -- FunctionCallResponse ---------------------------------------------------------------------------------------


def test_tool_result_uses_content_when_non_empty() -> None:
    assert session_update.function_call_output_text(fcr(id="c", content='{"time":"12:00"}')) == '{"time":"12:00"}'


def test_tool_result_with_empty_content_and_nothing_else_is_empty() -> None:
    assert session_update.function_call_output_text(fcr(id="c", content="")) == ""
    assert session_update.function_call_output_text(fcr(id="c")) == ""


def test_object_result_is_serialised_like_json_stringify() -> None:
    result = {"time": "14:32:15", "timezone": "UTC", "n": 1.0, "big": 1e21, "small": 1e-7, "é": "ü", "9": [True]}
    # What JSON.stringify(JSON.parse(<this>)) prints, integer-like keys first.
    expected = '{"9":[true],"time":"14:32:15","timezone":"UTC","n":1,"big":1e+21,"small":1e-7,"é":"ü"}'
    assert session_update.function_call_output_text(fcr(id="c", result=result)) == expected


def test_string_result_is_used_as_is() -> None:
    assert session_update.function_call_output_text(fcr(id="c", result="plain")) == "plain"


def test_error_becomes_an_error_object() -> None:
    assert (
        session_update.function_call_output_text(fcr(id="c", error="Function failed")) == '{"error":"Function failed"}'
    )


def test_content_wins_over_result_and_name_is_optional() -> None:
    message = fcr(id="c", content="from content", result={"a": 1})
    assert session_update.function_call_output_text(message) == "from content"
    assert session_update.function_call_output_item(message) == {
        "type": "function_call_output",
        "call_id": "c",
        "output": "from content",
    }


def test_missing_id_drops_call_id_and_null_id_is_kept() -> None:
    assert "call_id" not in session_update.function_call_output_item(fcr(content="x"))
    assert session_update.function_call_output_item(fcr(id=None, content="x"))["call_id"] is None


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1, "0.1"),
        (100.0, "100"),
        (1e20, "100000000000000000000"),
        (1.5e-6, "0.0000015"),
        (-0.0, "0"),
        (2**60, "1152921504606847000"),
        ("a\u2028\n\x1f", '"a\u2028\\n\\u001f"'),
        ([None, False], "[null,false]"),
    ],
)
def test_js_json_matches_json_stringify(value: Any, text: str) -> None:
    assert javascript.js_json(value) == text


# -- upstream error -> Error -------------------------------------------------------------------------------------


def test_upstream_error_maps_message_and_code() -> None:
    error = error_codes.error_from_upstream(oa.ErrorDetail(message="Something broke", code="server_error"))
    assert json.loads(cp.encode(error)) == {"type": "Error", "description": "Something broke", "code": "server_error"}


def test_empty_upstream_error_gives_unknown_error_and_code_unknown() -> None:
    assert error_codes.error_from_upstream(None) == cp.Error(description="Unknown error", code="unknown")
    assert error_codes.error_from_upstream(oa.ErrorDetail()) == cp.Error(description="Unknown error", code="unknown")


@pytest.mark.parametrize("code", ["idle_timeout", "session_max_duration", "rate_limit_exceeded"])
def test_upstream_error_codes_pass_through(code: str) -> None:
    assert error_codes.error_from_upstream(oa.ErrorDetail(message="m", code=code)).code == code


@pytest.mark.parametrize("code", [None, "", 42])
def test_null_missing_empty_or_non_string_code_is_unknown_whatever_the_message(code: Any) -> None:
    detail = oa.ErrorDetail(message="Your session hit the maximum duration of 60 minutes.", code=code)
    assert error_codes.error_from_upstream(detail).code == "unknown"


def test_key_shaped_text_in_an_upstream_message_is_masked() -> None:
    detail = oa.ErrorDetail(message="Incorrect API key provided: sk-proj-abcdef123456", code="invalid_api_key")
    assert "abcdef123456" not in error_codes.error_from_upstream(detail).description


# -- item -> assistant ConversationText --------------------------------------------------------------------------


def item(role: Any = "assistant", content: Any = None, **extra: Any) -> oa.Item:
    return oa.Item(id="i", type="message", role=role, content=content, **extra)


def test_item_mapper_content_array_with_text() -> None:
    assert (
        upstream_text.assistant_item_text(item(content=[{"type": "output_text", "text": " Hi there "}])) == "Hi there"
    )


def test_item_mapper_single_content_object() -> None:
    assert upstream_text.assistant_item_text(item(content={"type": "output_text", "text": "Single"})) == "Single"


def test_item_mapper_part_with_an_output_text_object() -> None:
    assert upstream_text.assistant_item_text(item(content=[{"output_text": {"text": "Nested"}}])) == "Nested"


def test_item_mapper_real_api_output_audio_part_with_transcript() -> None:
    content = [{"type": "output_audio", "transcript": "Spoken words"}]
    assert upstream_text.assistant_item_text(item(content=content)) == "Spoken words"


def test_item_mapper_fallback_order_and_join_with_newlines() -> None:
    content = [
        {"type": "x", "text": "  ", "transcript": "first"},
        {"input_text": {"text": "second"}},
        {"content": "third"},
        {"type": "unknown"},
        "not a part",
    ]
    assert upstream_text.assistant_item_text(item(content=content)) == "first\nsecond\nthird"


def test_item_mapper_function_call_part() -> None:
    part = {"type": "function_call", "name": "get_current_time", "arguments": " {} "}
    assert upstream_text.assistant_item_text(item(content=[part])) == "Function call: get_current_time({})"
    assert upstream_text.function_call_summary("get_time", "  ") == "Function call: get_time()"
    assert upstream_text.function_call_summary(None, {"a": 1}) == "Function call: function()"


@pytest.mark.parametrize("role", ["user", "system", None])
def test_item_mapper_non_assistant_items_give_nothing(role: Any) -> None:
    assert upstream_text.assistant_item_text(item(role=role, content=[{"type": "input_text", "text": "x"}])) is None


@pytest.mark.parametrize("content", [None, [], [{"type": "output_text", "text": "  "}]])
def test_item_mapper_empty_or_missing_content_gives_nothing(content: Any) -> None:
    assert upstream_text.assistant_item_text(item(content=content)) is None


@pytest.mark.parametrize("kind", ["created", "added", "done"])
def test_item_mapper_applies_to_created_added_and_done(kind: str) -> None:
    decoded = event(
        {
            "type": f"conversation.item.{kind}",
            "item": {"id": "i", "role": "assistant", "content": [{"type": "output_text", "text": "Yes"}]},
        }
    )
    assert upstream_text.assistant_item_text(decoded.item) == "Yes"


# -- output_text.done and response.done text ----------------------------------------------------------------------


def test_output_text_done_text_is_trimmed_top_level_text() -> None:
    assert upstream_text.output_text_done_text(event({"type": "response.output_text.done", "text": "  Hi  "})) == "Hi"


def test_output_text_done_uses_nested_part_text() -> None:
    done = event({"type": "response.output_text.done", "part": {"text": " Part "}})
    assert upstream_text.output_text_done_text(done) == "Part"


@pytest.mark.parametrize("payload", [{}, {"text": "   "}, {"text": None, "part": {"text": " "}}])
def test_output_text_done_without_text_gives_none(payload: dict[str, Any]) -> None:
    assert upstream_text.output_text_done_text(event({"type": "response.output_text.done", **payload})) is None


def test_output_text_done_prefers_its_text_then_trimmed_deltas_then_none() -> None:
    with_text = event({"type": "response.output_text.done", "text": "Done text"})
    without = event({"type": "response.output_text.done"})
    assert upstream_text.output_text_done_text(with_text, "delta text") == "Done text"
    assert upstream_text.output_text_done_text(without, "  delta text ") == "delta text"
    assert upstream_text.output_text_done_text(without, "   ") is None


def test_output_text_delta_accepts_strings_and_objects() -> None:
    assert upstream_text.output_text_delta("ab") == "ab"
    assert upstream_text.output_text_delta({"text": "t"}) == "t"
    assert upstream_text.output_text_delta({"delta": "d"}) == "d"
    assert upstream_text.output_text_delta(None) == ""


def test_response_done_extracts_assistant_text_joined_with_newlines() -> None:
    done = event(
        {
            "type": "response.done",
            "response": {
                "status": "completed",
                "output": [
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "One"}]},
                    {"type": "function_call", "name": "f"},
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_audio", "transcript": "Two"}],
                    },
                ],
            },
        }
    )
    assert upstream_text.response_done_text(done) == "One\nTwo"
    assert upstream_text.response_done_text(done, " accumulated ") == "accumulated"


def test_response_done_without_assistant_output_gives_none() -> None:
    assert upstream_text.response_done_text(event({"type": "response.done", "response": {"output": []}})) is None
    assert upstream_text.response_done_text(event({"type": "response.done"})) is None


# -- other server events -----------------------------------------------------------------------------------------


def test_function_call_arguments_done_maps_to_one_function_call_request() -> None:
    done = event(
        {"type": "response.function_call_arguments.done", "call_id": "call_abc", "name": "get", "arguments": "{}"}
    )
    assert json.loads(cp.encode(upstream_text.function_call_request(done))) == {
        "type": "FunctionCallRequest",
        "functions": [{"id": "call_abc", "name": "get", "arguments": "{}", "client_side": True}],
    }


def test_function_call_request_defaults() -> None:
    done = event({"type": "response.function_call_arguments.done"})
    assert upstream_text.function_call_request(done).functions == [
        cp.FunctionCall(id="", name="function", arguments="", client_side=True)
    ]
    kept = event({"type": "response.function_call_arguments.done", "arguments": '{"tz":"UTC"}'})
    assert upstream_text.function_call_request(kept).functions[0].arguments == '{"tz":"UTC"}'


def test_transcript_done_text_is_untrimmed_and_missing_is_empty() -> None:
    assert upstream_text.transcript_done_text(
        event({"type": "response.output_audio_transcript.done", "transcript": " x "})
    ) == (" x ")
    assert upstream_text.transcript_done_text(event({"type": "response.output_audio_transcript.done"})) == ""


def test_utterance_end_defaults_channel_and_last_word_end() -> None:
    stopped = event({"type": "input_audio_buffer.speech_stopped"})
    assert json.loads(cp.encode(upstream_text.utterance_end(stopped))) == {
        "type": "UtteranceEnd",
        "channel": [0, 1],
        "last_word_end": 0,
    }


def test_utterance_end_passes_upstream_channel_and_last_word_end_through() -> None:
    stopped = event({"type": "input_audio_buffer.speech_stopped", "channel": [0], "last_word_end": 1.5})
    assert upstream_text.utterance_end(stopped) == cp.UtteranceEnd(channel=[0], last_word_end=1.5)


def test_utterance_end_uses_ga_audio_end_ms_in_seconds_when_no_last_word_end() -> None:
    stopped = event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 2350, "item_id": "i"})
    assert upstream_text.utterance_end(stopped).last_word_end == 2.35
    boolean = event({"type": "input_audio_buffer.speech_stopped", "last_word_end": True, "audio_end_ms": 1000})
    assert upstream_text.utterance_end(boolean).last_word_end == 1.0


def test_final_transcript_with_upstream_timing_and_channels() -> None:
    completed = event(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_496",
            "transcript": "Hello world",
            "start": 1.5,
            "duration": 2.25,
            "channel": 1,
            "channel_index": [1],
        }
    )
    message = json.loads(cp.encode(upstream_text.transcript_message(completed, "Hello world", final=True)))
    assert message == {
        "type": "Transcript",
        "transcript": "Hello world",
        "is_final": True,
        "speech_final": True,
        "channel": 1,
        "channel_index": [1],
        "start": 1.5,
        "duration": 2.25,
        "alternatives": [{"transcript": "Hello world", "confidence": 1, "words": []}],
    }


def test_transcript_defaults_and_upstream_alternatives() -> None:
    completed = event(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "transcript": "Hi",
            "alternatives": [{"confidence": 0.5}, {"transcript": "Hey", "words": [{"w": 1}]}],
            "usage": {"type": "duration", "seconds": 3.5},
        }
    )
    message = upstream_text.transcript_message(completed, "Hi", final=True)
    assert (message.channel, message.channel_index, message.start, message.duration) == (0, [0], 0, 3.5)
    assert message.alternatives == [
        cp.TranscriptAlternative(transcript="Hi", confidence=0.5, words=[]),
        cp.TranscriptAlternative(transcript="Hey", confidence=1, words=[{"w": 1}]),
    ]


def test_channel_comes_from_channel_index_when_only_that_is_given() -> None:
    delta = event({"type": "conversation.item.input_audio_transcription.delta", "channel_index": [2]})
    message = upstream_text.transcript_message(delta, "x", final=False)
    assert (message.channel, message.channel_index, message.is_final, message.speech_final) == (2, [2], False, False)


def test_closed_before_ready_description_and_reason_sanitising() -> None:
    assert error_codes.closed_before_ready_description(1000, "") == (
        "Upstream closed before session ready (code 1000). Session may not have been applied."
    )
    assert error_codes.closed_before_ready_description(4000, "bye\n") == (
        "Upstream closed before session ready (code 4000, reason: bye). Session may not have been applied."
    )
    long = error_codes.closed_before_ready_description(1011, "key sk-secretsecret rejected " + "x" * 500)
    assert len(long) < 250
    assert "secret" not in long
    assert "key sk-*** rejected" in long


def test_peer_text_echoed_in_an_error_is_bounded() -> None:
    error = error_codes.error_from_upstream(oa.ErrorDetail(message="m" * 100_000, code="c" * 100_000))
    assert len(error.description) == error_codes.MAX_UPSTREAM_MESSAGE_CHARS
    assert error.description.endswith("…")
    assert len(error.code) == error_codes.MAX_UPSTREAM_CODE_CHARS
    assert len(error_codes.describe_client_type("t" * 100_000)) == error_codes.MAX_ECHOED_TYPE_CHARS
    assert error_codes.describe_client_type("UpdatePrompt") == "UpdatePrompt"
