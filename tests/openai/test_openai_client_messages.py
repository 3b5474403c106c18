"""Client -> proxy handling (reference §5, §7.1, §8.1 invariants 2-4) and the DESIGN fixes on that side."""

from __future__ import annotations

import base64
import json
import logging

import pytest

import proxy.openai.translator as translator_module
from proxy.audio import Resampler16kTo24k
from proxy.core import Close
from proxy.openai.error_codes import disallowed_description
from proxy.openai.translator import TranslatorOptions
from tests.openai.harness import (
    MANUAL,
    SESSION_UPDATED,
    VAD,
    Harness,
    audio_delta,
    item_event,
    kinds,
    of_kind,
    text_done,
)

INJECT = {"type": "InjectUserMessage", "content": "hi"}
FCR = {"type": "FunctionCallResponse", "id": "call_1", "name": "get_time", "content": '{"time":"12:00"}'}


# -- before the upstream is open (§5.0) ------------------------------------------------------------------------------


def test_frames_before_upstream_open_are_held_then_replayed_in_order() -> None:
    h = Harness(opened=False)
    assert h.send(MANUAL).upstream == []
    assert h.send(INJECT).upstream == []
    assert h.client == []
    h.open()
    assert h.upstream_kinds() == ["session.update"]  # the inject now waits for session readiness
    h.up(SESSION_UPDATED)
    assert h.upstream_kinds() == ["session.update", "conversation.item.create"]


def test_preopen_queue_overflow_sends_an_error_then_asks_for_a_1008_close() -> None:
    h = Harness(TranslatorOptions(max_preopen_frames=3), opened=False)
    for _ in range(3):
        h.send(b"\x00\x00")
    assert h.core.fatal() is None
    step = h.send(b"\x00\x00")
    assert [m["code"] for m in of_kind(step.client, "Error")] == ["client_queue_overflow"]
    assert h.core.fatal() == Close(1008, "client queue overflow")
    h.open()
    assert h.upstream == []


def test_preopen_queue_is_bounded_in_bytes_too() -> None:
    h = Harness(TranslatorOptions(max_preopen_bytes=10), opened=False)
    h.send(b"\x00" * 8)
    h.send(b"\x00" * 4)
    assert h.core.fatal() == Close(1008, "client queue overflow")


# -- frame routing (Fix 1) -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ["", b""])
def test_empty_frames_are_dropped_silently(frame: str | bytes) -> None:
    h = Harness()
    h.ready()
    step = h.send(frame)
    assert step.client == []
    assert step.upstream == []


@pytest.mark.parametrize("text", ["not json", '{"type":"Settings"', "null", "5", '"Settings"', "true"])
def test_a_text_frame_that_is_not_a_json_object_gets_an_error_and_is_never_audio(text: str) -> None:
    h = Harness()
    h.ready()
    step = h.send(text)
    assert step.upstream == []
    (error,) = of_kind(step.client, "Error")
    assert error["code"] == "unparsable_client_message"
    assert "JSON" in error["description"]
    assert "binary" in error["description"]


def test_a_binary_frame_is_audio_even_when_it_looks_like_json() -> None:
    h = Harness()
    h.ready()
    step = h.send(b'{"type":"Settings"}\x00')
    assert step.upstream_kinds == ["input_audio_buffer.append"]
    assert step.client == []


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ({"type": "CustomPassthroughProbe"}, "CustomPassthroughProbe"),
        ({}, "(missing type)"),
        ({"content": "x"}, "(missing type)"),
        ([1, 2], "(missing type)"),
        ({"type": 7}, "7"),
        ({"type": "Welcome"}, "Welcome"),
    ],
)
def test_unknown_json_gets_the_disallowed_error_naming_the_type_and_is_not_forwarded(
    message: object, shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness()
    with caplog.at_level(logging.WARNING, "proxy.openai"):
        step = h.send(json.dumps(message))
    assert step.upstream == []
    assert of_kind(step.client, "Error") == [
        {"type": "Error", "description": disallowed_description(shown), "code": "disallowed_client_message_type"}
    ]
    assert any(r.levelno == logging.WARNING and "disallowed" in r.getMessage() for r in caplog.records)


def test_passthrough_forwards_the_original_text_byte_for_byte() -> None:
    h = Harness(TranslatorOptions(allow_client_json_passthrough=True))
    original = '{ "type" : "CustomPassthroughDevProbe", "x": [1, 2.50] }'
    step = h.send(original)
    assert step.upstream == [original]
    assert step.client == []


@pytest.mark.parametrize("passthrough", [False, True])
def test_keepalive_is_never_forwarded_and_never_answered(passthrough: bool) -> None:
    h = Harness(TranslatorOptions(allow_client_json_passthrough=passthrough))
    h.ready()
    step = h.send({"type": "KeepAlive"})
    assert step.client == []
    assert step.upstream == []


# -- Settings (§5.1) -------------------------------------------------------------------------------------------


def test_first_settings_sends_session_update_and_settings_applied_waits_for_session_updated() -> None:
    h = Harness()
    step = h.send(MANUAL)
    assert step.upstream_kinds == ["session.update"]
    assert step.client == []
    assert h.up(SESSION_UPDATED).client_kinds == ["SettingsApplied"]


def test_session_created_does_not_apply_settings_or_make_the_session_ready() -> None:
    h = Harness()
    h.send(MANUAL)
    assert h.up({"type": "session.created", "session": {"id": "sess_mock"}}).client == []
    assert h.send(INJECT).upstream == []  # still waiting for session.updated


def test_duplicate_settings_get_settings_applied_and_never_a_second_session_update() -> None:
    h = Harness()
    h.ready()
    step = h.send(MANUAL)
    assert step.client_kinds == ["SettingsApplied"]
    assert h.upstream_kinds().count("session.update") == 1


def test_every_session_updated_answers_settings_applied() -> None:
    h = Harness()
    h.ready()
    assert h.up(SESSION_UPDATED).client_kinds == ["SettingsApplied"]


def test_settings_during_an_active_response_are_acknowledged_dropped_and_logged_at_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    h.up(SESSION_UPDATED)  # an upstream that applies a session on its own (reference §13.1-12)
    h.send(INJECT)
    h.up(item_event("added", item_id=h.sent_item_ids()[0]))
    assert h.upstream_kinds()[-1] == "response.create"
    with caplog.at_level(logging.WARNING, "proxy.openai"):
        step = h.send(MANUAL)
    assert step.client_kinds == ["SettingsApplied"]
    assert step.upstream == []
    assert any(r.levelno == logging.WARNING and "Settings" in r.getMessage() for r in caplog.records)
    h.up(text_done())
    assert h.send(MANUAL).upstream_kinds == ["session.update"]  # the dropped one did not count


def test_settings_while_a_tool_result_awaits_completion_are_acknowledged_and_dropped() -> None:
    h = Harness()
    h.up(SESSION_UPDATED)
    h.send(FCR)
    step = h.send(VAD)
    assert step.client_kinds == ["SettingsApplied"]
    assert "session.update" not in h.upstream_kinds()


# -- InjectUserMessage (§5.2, Fix 6) ----------------------------------------------------------------------------


def test_inject_before_session_ready_waits_for_session_updated() -> None:
    h = Harness()
    h.send(MANUAL)
    assert h.send(INJECT).upstream == []
    step = h.up(SESSION_UPDATED)
    assert step.client_kinds == ["SettingsApplied", "ConversationText"]
    assert step.upstream_kinds == ["conversation.item.create"]


def test_inject_sends_a_user_item_with_its_own_id_and_echoes_the_text_as_user_conversation_text() -> None:
    h = Harness()
    h.ready()
    step = h.send(INJECT)
    (create,) = of_kind(step.upstream, "conversation.item.create")
    item_id = create["item"].pop("id")
    assert isinstance(item_id, str)
    assert 0 < len(item_id) <= 32
    assert create["item"] == {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    assert of_kind(step.client, "ConversationText") == [{"type": "ConversationText", "role": "user", "content": "hi"}]
    assert "response.create" not in step.upstream_kinds


def test_each_inject_gets_a_distinct_item_id() -> None:
    h = Harness()
    h.ready()
    for _ in range(3):
        h.send(INJECT)
    ids = h.sent_item_ids()
    assert len(set(ids)) == 3


def test_response_create_follows_the_acknowledgement_of_the_injected_item_id() -> None:
    h = Harness()
    h.ready()
    h.send(INJECT)
    (item_id,) = h.sent_item_ids()
    assert h.up(item_event("added", item_id="someone_else", role="assistant")).upstream == []
    assert h.up(item_event("added", item_id=item_id)).upstream_kinds == ["response.create"]


def test_added_then_done_of_the_same_item_count_once() -> None:
    h = Harness()
    h.ready()
    h.send(INJECT)
    (item_id,) = h.sent_item_ids()
    h.up(item_event("added", item_id=item_id))
    h.up(text_done())
    assert h.up(item_event("done", item_id=item_id)).upstream == []
    assert h.upstream_kinds().count("response.create") == 1


def test_an_upstream_that_does_not_echo_ids_acknowledges_with_the_next_user_message_item() -> None:
    h = Harness()
    h.ready()
    h.send(INJECT)
    assert h.up(item_event("added", item_id="item_mock_1")).upstream_kinds == ["response.create"]
    assert h.up(item_event("done", item_id="item_mock_1")).upstream == []


@pytest.mark.parametrize(
    "event",
    [
        item_event("added", item_id="a1", role="assistant"),
        item_event("done", item_id="f1", role=None, type_="function_call_output"),
        item_event("added", item_id="v1", content=[{"type": "input_audio", "transcript": None}]),
        item_event("added", item_id="fc", role=None, type_="function_call"),
    ],
)
def test_items_that_are_not_user_text_messages_do_not_acknowledge_an_inject(event: dict[str, object]) -> None:
    h = Harness()
    h.ready()
    h.send(INJECT)
    assert "response.create" not in h.up(event).upstream_kinds


def test_a_reused_upstream_item_id_still_acknowledges_later_injects() -> None:
    """The reference's test upstream answers every user item with id item_mock_1."""
    h = Harness()
    h.ready()
    for turn in range(3):
        h.send(INJECT)
        assert h.up(item_event("added", item_id="item_mock_1")).upstream_kinds == ["response.create"], turn
        h.up(item_event("done", item_id="item_mock_1"))
        h.up(text_done())
    assert h.upstream_kinds().count("response.create") == 3


def test_two_quick_injects_get_two_replies_in_order() -> None:
    h = Harness()
    h.ready()
    h.send({"type": "InjectUserMessage", "content": "first"})
    h.send({"type": "InjectUserMessage", "content": "second"})
    first, second = h.sent_item_ids()
    assert h.up(item_event("added", item_id=first)).upstream == []  # "second" is not in the conversation yet
    assert h.up(item_event("added", item_id=second)).upstream_kinds == ["response.create"]
    step = h.up(text_done("Answer one"))
    assert step.client_kinds == ["AgentStartedSpeaking", "ConversationText", "AgentDone", "AgentAudioDone"]
    assert step.upstream_kinds == ["response.create"]  # one reply per inject, one response at a time
    step = h.up(text_done("Answer two"))
    assert of_kind(step.client, "ConversationText")[0]["content"] == "Answer two"
    assert step.upstream == []
    assert h.upstream_kinds().count("response.create") == 2


def test_no_response_create_while_an_injected_item_is_unacknowledged() -> None:
    h = Harness()
    h.ready()
    h.send(INJECT)
    (first,) = h.sent_item_ids()
    h.up(item_event("added", item_id=first))
    h.send(INJECT)  # sent while the first reply is running
    second = h.sent_item_ids()[1]
    assert h.up(text_done()).upstream == []  # the first reply ended, but "second" is not acknowledged yet
    assert h.up(item_event("added", item_id=second)).upstream_kinds == ["response.create"]


def test_two_quick_injects_against_an_upstream_that_reuses_one_id() -> None:
    h = Harness()
    h.ready()
    h.send(INJECT)
    h.send(INJECT)
    for event in (item_event("added"), item_event("done"), item_event("added"), item_event("done")):
        h.up(event)
    assert h.upstream_kinds().count("response.create") == 1
    h.up(text_done())
    assert h.upstream_kinds().count("response.create") == 2


def test_an_inject_acknowledged_during_a_response_is_answered_after_that_response_ends() -> None:
    h = Harness()
    h.ready(VAD)
    h.up({"type": "response.created", "response": {"id": "resp_vad"}})  # a VAD turn in progress
    h.send(INJECT)
    assert h.up(item_event("added", item_id=h.sent_item_ids()[0])).upstream == []
    h.up(audio_delta(b"\x01\x00" * 10))
    step = h.up({"type": "response.done", "response": {"status": "completed", "output": []}})
    assert step.upstream_kinds == ["response.create"]


def test_an_inject_acknowledged_while_a_tool_result_is_pending_is_covered_by_the_deferred_response() -> None:
    h = Harness()
    h.ready()
    h.send(FCR)
    h.send(INJECT)
    assert h.up(item_event("added", item_id=h.sent_item_ids()[0])).upstream == []
    assert h.up(item_event("done", item_id="o1", role=None, type_="function_call_output")).upstream_kinds == [
        "response.create"
    ]
    h.up(text_done())
    assert h.upstream_kinds().count("response.create") == 1


# -- FunctionCallResponse (§5.3, Fix 7) ---------------------------------------------------------------------------


def test_function_call_response_sends_the_tool_output_and_agent_thinking_but_no_response_create() -> None:
    h = Harness()
    h.ready()
    step = h.send(FCR)
    assert of_kind(step.upstream, "conversation.item.create") == [
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_1", "output": '{"time":"12:00"}'},
        }
    ]
    assert "response.create" not in step.upstream_kinds
    assert of_kind(step.client, "AgentThinking") == [{"type": "AgentThinking", "content": ""}]


def test_function_call_response_waits_for_session_ready_in_arrival_order_with_injects_before_audio() -> None:
    h = Harness()
    h.send(MANUAL)
    h.send({"type": "InjectUserMessage", "content": "one"})
    h.send(b"\x00\x00" * 100)
    h.send(FCR)
    h.send({"type": "InjectUserMessage", "content": "two"})
    assert h.upstream_kinds() == ["session.update"]
    step = h.up(SESSION_UPDATED)
    assert step.upstream_kinds == [
        "conversation.item.create",
        "conversation.item.create",
        "conversation.item.create",
        "input_audio_buffer.append",
    ]
    items = [e["item"] for e in of_kind(step.upstream, "conversation.item.create")]
    assert [i.get("call_id") or i["content"][0]["text"] for i in items] == ["one", "call_1", "two"]
    assert step.client_kinds == [
        "SettingsApplied",
        "ConversationText",
        "AgentThinking",
        "ConversationText",
    ]


def test_pending_messages_beyond_the_bound_get_an_error_and_a_fatal_close() -> None:
    h = Harness(TranslatorOptions(max_pending_frames=2))
    h.send(MANUAL)
    h.send(INJECT)
    h.send(FCR)
    step = h.send(INJECT)
    assert [m["code"] for m in of_kind(step.client, "Error")] == ["client_queue_overflow"]
    assert h.core.fatal() == Close(1008, "client queue overflow")


# -- audio (§5.6, §7.1, Fix 2, Fix 11) ----------------------------------------------------------------------------


def test_audio_before_session_updated_is_queued_then_appended_after_settings_applied() -> None:
    h = Harness()
    h.send(VAD)
    assert h.send(b"\x00\x01" * 480).upstream == []
    step = h.up(SESSION_UPDATED)
    assert step.client_kinds == ["SettingsApplied"]
    assert step.upstream_kinds == ["input_audio_buffer.append"]
    assert h.upstream_kinds() == ["session.update", "input_audio_buffer.append"]


def test_binary_audio_is_resampled_into_one_append_whose_base64_round_trips() -> None:
    h = Harness()
    h.ready(VAD)
    pcm = bytes(range(256)) * 4
    step = h.send(pcm)
    (append,) = of_kind(step.upstream, "input_audio_buffer.append")
    assert list(append) == ["type", "audio"]
    assert base64.b64decode(append["audio"]) == Resampler16kTo24k().push(pcm)


def test_500_bytes_of_audio_append_748_bytes() -> None:
    h = Harness()
    h.ready()
    (append,) = of_kind(h.send(bytes(500)).upstream, "input_audio_buffer.append")
    assert len(base64.b64decode(append["audio"])) == 748


def test_odd_length_audio_never_fails_and_the_odd_byte_joins_the_next_frame() -> None:
    h = Harness()
    h.ready(VAD)
    pcm = bytes(range(1, 201))
    h.send(pcm[:101])
    h.send(pcm[101:])
    appended = b"".join(base64.b64decode(e["audio"]) for e in of_kind(h.upstream, "input_audio_buffer.append"))
    assert appended == Resampler16kTo24k().push(pcm)
    assert not of_kind(h.client, "Error")


def test_a_single_byte_frame_appends_nothing() -> None:
    h = Harness()
    h.ready(VAD)
    assert h.send(b"\x01").upstream == []


def test_resampled_audio_beyond_the_append_limit_is_split_into_several_appends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(translator_module, "MAX_AUDIO_BYTES_PER_APPEND", 1000)
    h = Harness()
    h.ready(VAD)
    pcm = bytes(range(256)) * 10
    step = h.send(pcm)
    appends = [base64.b64decode(e["audio"]) for e in of_kind(step.upstream, "input_audio_buffer.append")]
    assert len(appends) == 4
    assert all(len(a) <= 1000 for a in appends)
    assert b"".join(appends) == Resampler16kTo24k().push(pcm)


def test_audio_beyond_the_pending_bound_is_dropped_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(TranslatorOptions(max_pending_frames=2))
    h.send(VAD)
    with caplog.at_level(logging.WARNING, "proxy.openai"):
        for _ in range(5):
            h.send(bytes(960))
    assert h.core.fatal() is None
    assert (h.core.dropped_audio_frames, h.core.dropped_audio_bytes) == (3, 3 * 960)
    assert any(r.levelno == logging.WARNING and "dropping" in r.getMessage() for r in caplog.records)
    step = h.up(SESSION_UPDATED)
    assert step.upstream_kinds == ["input_audio_buffer.append"] * 2


def test_server_vad_mode_appends_only_and_never_commits() -> None:
    h = Harness()
    h.ready(VAD)
    for _ in range(14):
        h.send(bytes(8000))
        h.advance(0.25)
    h.advance(5)
    assert set(h.upstream_kinds()) == {"session.update", "input_audio_buffer.append"}


def test_only_the_first_settings_changes_the_audio_mode() -> None:
    h = Harness()
    h.ready(VAD)
    h.send(MANUAL)  # duplicate: acknowledged, not applied
    h.send(bytes(40000))
    h.advance(1)
    assert "input_audio_buffer.commit" not in h.upstream_kinds()


def test_keepalive_and_audio_do_not_reach_the_client() -> None:
    h = Harness()
    h.ready(VAD)
    before = len(h.client)
    h.send({"type": "KeepAlive"})
    h.send(bytes(3200))
    assert len(h.client) == before
    assert kinds(h.client) == ["SettingsApplied"]


@pytest.mark.parametrize("depth", [65, 600, 5000])
def test_absurdly_nested_client_json_gets_an_error_not_an_exception(depth: int) -> None:
    h = Harness()
    h.ready()
    step = h.send('{"type":"InjectUserMessage","content":' + "[" * depth + "]" * depth + "}")
    assert [m["code"] for m in of_kind(step.client, "Error")] == ["client_message_too_deep"]
    assert step.upstream == []


def test_a_tool_result_too_deep_to_serialise_gets_an_error_and_nothing_is_sent() -> None:
    h = Harness()
    h.ready()
    deep = "[" * 950 + "]" * 950
    step = h.send('{"type":"FunctionCallResponse","id":"c","result":' + deep + "}")
    assert [m["code"] for m in of_kind(step.client, "Error")] == ["client_message_too_deep"]
    assert step.upstream == []
