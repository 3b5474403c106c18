"""Settings -> session.update (reference §3 and the §12.1 "Session / config" catalogue)."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest

from proxy.openai.session_update import (
    TOOL_RESULTS_SENTENCE,
    build_session,
    session_update_event,
    uses_server_vad,
)
from proxy.protocol import component as cp
from proxy.protocol import openai as oa

SERVER_VAD_NULL_IDLE = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 200,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
INPUT_DEFAULT = {
    "turn_detection": SERVER_VAD_NULL_IDLE,
    "format": {"type": "audio/pcm", "rate": 24000},
    "transcription": {"model": "gpt-4o-transcribe", "language": "en", "prompt": ""},
}


def session(agent: Any = None, **think: Any) -> dict[str, Any]:
    """The session built for ``{"type":"Settings","agent":agent}`` (with ``think`` merged in), via JSON decode."""
    agent = dict(agent or {})
    if think:
        agent["think"] = {**agent.get("think", {}), **think}
    frame = json.dumps({"type": "Settings", "agent": agent})
    settings = cp.client_message_decoder.decode(frame)
    assert isinstance(settings, cp.Settings)
    return build_session(settings)


def wire(agent: Any) -> dict[str, Any]:
    """The session.update as it goes on the wire (encoded then parsed)."""
    settings = cp.Settings(agent=agent)
    result: dict[str, Any] = json.loads(oa.encode(session_update_event(settings)))
    return result


def test_settings_map_to_session_update_with_realtime_type_prompt_and_model() -> None:
    update = wire({"think": {"prompt": "You are helpful.", "provider": {"model": "gpt-realtime-mini"}}})
    assert update["type"] == "session.update"
    assert update["session"]["type"] == "realtime"
    assert update["session"]["instructions"] == "You are helpful."
    assert update["session"]["model"] == "gpt-realtime-mini"


@pytest.mark.parametrize("temperature", [None, 0.8])
def test_temperature_is_never_sent(temperature: float | None) -> None:
    provider: dict[str, Any] = {"model": "gpt-realtime"}
    if temperature is not None:
        provider["temperature"] = temperature
    built = session(provider=provider, prompt="Hi")
    assert "temperature" not in built
    assert "temperature" not in json.dumps(built)


def test_minimal_settings_give_exactly_type_model_instructions_audio() -> None:
    built = session(prompt="Hi")
    assert list(built) == ["type", "model", "instructions", "audio"]
    assert built["model"] == "gpt-realtime"
    assert built["instructions"] == "Hi"
    assert built["audio"] == {"input": INPUT_DEFAULT}


def test_full_settings_give_exactly_the_optional_keys_in_reference_order() -> None:
    built = session(
        {"sessionAudioOutput": {"voice": "marin"}},
        prompt="Hi",
        provider={"model": "gpt-realtime", "temperature": 0.7},
        functions=[{"name": "f", "description": "d", "parameters": {"type": "object"}}],
        toolChoice="auto",
        outputModalities=["text"],
        maxOutputTokens=256,
        managedPrompt={"id": "pmpt_1"},
    )
    assert list(built) == [
        "type",
        "model",
        "instructions",
        "audio",
        "tools",
        "tool_choice",
        "output_modalities",
        "max_output_tokens",
        "prompt",
    ]
    assert sorted(built) == [
        "audio",
        "instructions",
        "max_output_tokens",
        "model",
        "output_modalities",
        "prompt",
        "tool_choice",
        "tools",
        "type",
    ]


def test_no_think_gives_empty_instructions_default_model_and_no_voice() -> None:
    built = session({})
    assert built["instructions"] == ""
    assert built["model"] == "gpt-realtime"
    assert "voice" not in built
    assert "voice" not in built["audio"].get("output", {})


def test_settings_without_agent_or_with_a_non_object_agent_still_map() -> None:
    assert build_session(cp.Settings())["instructions"] == ""
    assert build_session(cp.Settings(agent="nonsense"))["model"] == "gpt-realtime"


def test_null_model_defaults_and_an_empty_model_string_passes_through() -> None:
    assert session(provider={"model": None})["model"] == "gpt-realtime"
    assert session(provider={"model": ""})["model"] == ""


def test_context_messages_are_folded_into_instructions_after_the_prompt() -> None:
    built = session(
        {
            "context": {
                "messages": [
                    {"type": "History", "role": "assistant", "content": "Hello! How can I help?  "},
                    {"type": "History", "role": "user", "content": " What is the capital of France?"},
                ]
            }
        },
        prompt="Be brief.",
    )
    assert built["instructions"] == (
        "Be brief.\n\nPrevious conversation:\nassistant: Hello! How can I help?\nuser: What is the capital of France?"
    )


def test_context_without_prompt_starts_with_previous_conversation_and_unknown_roles_become_user() -> None:
    built = session({"context": {"messages": [{"role": "system", "content": "x"}, {"role": "user"}]}})
    assert built["instructions"] == "Previous conversation:\nuser: x\nuser:"


def test_one_function_maps_to_a_tool_and_the_tool_results_sentence_is_appended() -> None:
    function = {"name": "get_time", "description": "Time now", "parameters": {"type": "object"}, "endpoint": {}}
    built = session(prompt="Hi", functions=[function])
    assert built["tools"] == [
        {"type": "function", "name": "get_time", "description": "Time now", "parameters": {"type": "object"}}
    ]
    assert built["instructions"] == "Hi\n\n" + TOOL_RESULTS_SENTENCE
    assert TOOL_RESULTS_SENTENCE == "When you receive results from tool calls, use them in your reply to the user."


def test_tool_results_sentence_stands_alone_when_there_are_no_other_instructions() -> None:
    assert session(functions=[{"name": "f"}])["instructions"] == TOOL_RESULTS_SENTENCE


def test_two_functions_keep_order_missing_description_is_omitted_and_missing_parameters_are_empty() -> None:
    params = {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
    built = session(functions=[{"name": "a", "parameters": params}, {"name": "b", "description": None}])
    assert built["tools"] == [
        {"type": "function", "name": "a", "parameters": params},
        {"type": "function", "name": "b", "description": None, "parameters": {}},
    ]


@pytest.mark.parametrize("choice", ["required", "auto", "none", {"type": "function", "name": "get_time"}, None])
def test_tool_choice_is_passed_through_unvalidated(choice: Any) -> None:
    built = session(toolChoice=choice)
    assert "tool_choice" in built
    assert built["tool_choice"] == choice


def test_tool_choice_is_absent_when_not_given() -> None:
    assert "tool_choice" not in session(prompt="Hi")


@pytest.mark.parametrize(
    ("modalities", "expected"),
    [
        (["text"], ["text"]),
        (["audio", "text"], ["audio", "text"]),
        (["text", "video", "audio"], ["text", "audio"]),
        (["video", 3], None),
        ([], None),
        ("text", None),
    ],
)
def test_output_modalities_keep_only_text_and_audio_in_order(modalities: Any, expected: list[str] | None) -> None:
    built = session(outputModalities=modalities)
    assert built.get("output_modalities") == expected


def test_output_modalities_absent_when_not_given() -> None:
    assert "output_modalities" not in session(prompt="Hi")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (256, 256),
        (256.0, 256),
        (0, None),
        (-1, None),
        (1.5, None),
        (math.nan, None),
        (math.inf, None),
        (2**53, None),
        (2**53 - 1, 2**53 - 1),
        (True, None),
        ("256", None),
    ],
)
def test_max_output_tokens_only_for_positive_safe_integers(value: Any, expected: int | None) -> None:
    built = build_session(cp.Settings(agent={"think": {"maxOutputTokens": value}}))
    assert built.get("max_output_tokens") == expected
    if expected is not None:
        assert type(built["max_output_tokens"]) is int


def test_max_output_tokens_absent_after_a_json_round_trip_when_not_given() -> None:
    built = json.loads(json.dumps(session(prompt="Hi")))
    assert "max_output_tokens" not in built


def test_managed_prompt_maps_to_prompt_with_trimmed_id_and_version() -> None:
    assert session(managedPrompt={"id": "pmpt_1", "version": "2", "variables": {"city": "Paris"}})["prompt"] == {
        "id": "pmpt_1",
        "version": "2",
        "variables": {"city": "Paris"},
    }
    assert session(managedPrompt={"id": "  pmpt_1 ", "version": " 3 "})["prompt"] == {"id": "pmpt_1", "version": "3"}
    assert session(managedPrompt={"id": "pmpt_1", "version": "   "})["prompt"] == {"id": "pmpt_1"}


@pytest.mark.parametrize("prompt", [{"version": "2"}, {"id": "   "}, {"id": 5}, ["pmpt_1"], "pmpt_1", None])
def test_managed_prompt_without_a_non_blank_string_id_is_dropped(prompt: Any) -> None:
    assert "prompt" not in session(managedPrompt=prompt)


def test_managed_prompt_array_variables_are_dropped_and_id_kept() -> None:
    assert session(managedPrompt={"id": "pmpt_1", "variables": ["a"]})["prompt"] == {"id": "pmpt_1"}


def test_session_audio_output_voice_and_speed_with_the_full_default_input_block() -> None:
    built = session({"sessionAudioOutput": {"voice": "marin", "speed": 1.1}})
    assert built["audio"]["output"] == {"speed": 1.1, "voice": "marin"}
    assert list(built["audio"]["output"]) == ["speed", "voice"]
    assert built["audio"]["input"] == INPUT_DEFAULT
    assert list(built["audio"]) == ["input", "output"]


@pytest.mark.parametrize(
    ("idle", "expected"),
    [(10000, 10000), (-1, None), (1000, 5000), (0, 5000), (120000, 30000), (7000.5, 7001), (math.nan, None)],
)
def test_idle_timeout_maps_to_server_vad_idle_timeout_ms_clamped(idle: float, expected: int | None) -> None:
    built = build_session(cp.Settings(agent={"idleTimeoutMs": idle}))
    assert built["audio"]["input"]["turn_detection"] == {**SERVER_VAD_NULL_IDLE, "idle_timeout_ms": expected}
    assert uses_server_vad(built)


@pytest.mark.parametrize("idle", [True, "10000", None])
def test_idle_timeout_that_is_not_a_number_gives_null(idle: Any) -> None:
    built = build_session(cp.Settings(agent={"idleTimeoutMs": idle}))
    assert built["audio"]["input"]["turn_detection"]["idle_timeout_ms"] is None


def test_manual_commit_flag_true_gives_null_turn_detection_and_not_server_vad() -> None:
    built = session({"useOpenAIManualAudioCommit": True, "idleTimeoutMs": 10000})
    assert built["audio"]["input"]["turn_detection"] is None
    assert "turn_detection" in built["audio"]["input"]
    assert not uses_server_vad(built)
    assert "turn_detection" not in built  # never at the top level (GA shape)


@pytest.mark.parametrize("flag", ["true", 1, False, None])
def test_only_boolean_true_enables_manual_commit(flag: Any) -> None:
    assert uses_server_vad(session({"useOpenAIManualAudioCommit": flag}))


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcm", "rate": 24000}),
        ({"type": "audio/pcm"}, {"type": "audio/pcm"}),
        ({"type": "audio/pcm", "rate": 16000}, {"type": "audio/pcm"}),
        ({"type": " audio/pcmu "}, {"type": "audio/pcmu"}),
        ({"type": "audio/pcma", "rate": 24000}, {"type": "audio/pcma"}),
    ],
)
def test_output_format_rules(fmt: dict[str, Any], expected: dict[str, Any]) -> None:
    assert session({"sessionAudioOutput": {"format": fmt}})["audio"]["output"] == {"format": expected}


@pytest.mark.parametrize("output", [None, {"speed": math.nan}, {"speed": 3}, {"speed": True}, {"voice": "  "}, "marin"])
def test_no_valid_audio_output_field_means_no_audio_output_key(output: Any) -> None:
    built = build_session(cp.Settings(agent={"sessionAudioOutput": output}))
    assert "output" not in built["audio"]


def test_wav_format_is_dropped_and_the_voice_kept() -> None:
    assert session({"sessionAudioOutput": {"format": {"type": "audio/wav"}, "voice": "alloy"}})["audio"]["output"] == {
        "voice": "alloy"
    }


def test_voice_object_with_id_is_kept_as_an_object_and_voice_strings_are_trimmed() -> None:
    assert session({"sessionAudioOutput": {"voice": {"id": " voice_custom1 "}}})["audio"]["output"] == {
        "voice": {"id": "voice_custom1"}
    }
    assert session({"sessionAudioOutput": {"voice": " marin "}})["audio"]["output"] == {"voice": "marin"}


def test_speaker_voice_greeting_language_and_endpoint_are_never_sent() -> None:
    built = session(
        {"speak": {"provider": {"voice": "alloy"}}, "greeting": "Hello!", "language": "en"},
        endpoint={"url": "https://example.invalid"},
        prompt="Hi",
    )
    text = json.dumps(built)
    assert "alloy" not in text
    assert "Hello!" not in text
    assert "example.invalid" not in text
    for key in ("voice", "include", "tracing", "truncation", "noise_reduction", "temperature"):
        assert key not in built


def test_session_update_encodes_as_compact_json_in_key_order() -> None:
    text = oa.encode(session_update_event(cp.Settings(agent={"think": {"prompt": "Hi"}})))
    assert text.startswith('{"type":"session.update","session":{"type":"realtime","model":"gpt-realtime"')
    assert '"turn_detection":{"type":"server_vad","threshold":0.5,' in text
    assert msgspec.json.decode(text)["session"]["instructions"] == "Hi"
