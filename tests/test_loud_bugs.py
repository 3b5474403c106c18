"""A bug in a core is loud in the suite and contained in production.

With ``PROXY_STRICT=1`` (the suite's setting, tests/conftest.py) a handler that raises makes the core re-raise;
without it the translator logs the traceback and answers the client one ``Error``, and the session goes on. The
pass-through has no containment boundary of its own: whatever it raises reaches the shell. Any ``proxy.*`` record
with exception info fails the test that logged it unless the test says it provokes one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.core import STRICT_VARIABLE, strict
from proxy.deepgram import passthrough
from proxy.deepgram.passthrough import Passthrough
from proxy.deepgram.policy import Service
from proxy.protocol import component, openai
from tests.openai.harness import MANUAL, Harness, kinds


class PlantedBug(Exception):
    pass


def planted(handler: Callable[..., None]) -> Callable[..., None]:
    """The handler, then an exception at its very end (after everything it sent)."""

    def bugged(*args: Any) -> None:
        handler(*args)
        raise PlantedBug

    return bugged


def test_the_suite_runs_strict() -> None:
    assert strict()


def test_strict_is_exactly_the_value_1(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("0", "", "true", "yes"):
        monkeypatch.setenv(STRICT_VARIABLE, value)
        assert not strict()
    monkeypatch.delenv(STRICT_VARIABLE)
    assert not strict()


# Events with fields that steer the handler down its longest path; every other type is sent as ``{"type": tag}``.
RICHER_EVENTS: dict[type[Any], dict[str, Any]] = {
    openai.ResponseOutputAudioDelta: {"type": "response.output_audio.delta", "delta": "AAA="},
    openai.SessionUpdated: {"type": "session.updated", "session": {}},
    openai.ConversationItemDone: {"type": "conversation.item.done", "item": {"type": "message", "role": "user"}},
    openai.InputAudioTranscriptionDelta: {
        "type": "conversation.item.input_audio_transcription.delta",
        "item_id": "i",
        "delta": "h",
    },
    openai.ErrorEvent: {"type": "error", "error": {"code": "x", "message": "m"}},
    openai.ResponseCreated: {"type": "response.created", "response": {}},
    openai.ResponseDone: {"type": "response.done", "response": {}},
    openai.ResponseOutputTextDone: {"type": "response.output_text.done", "text": "t"},
}

# The dispatch table itself, read from a live translator, so a handler added later is covered without a test edit.
UPSTREAM_EVENT_TYPES: list[type[Any]] = list(Harness().core._upstream_handlers)


def minimal_event(event_type: type[Any]) -> dict[str, Any]:
    return RICHER_EVENTS.get(event_type) or {"type": event_type.__struct_config__.tag}


def test_every_upstream_handler_is_planted() -> None:
    # 47 event types today, dispatched to 17 distinct handlers; none may be missed by the test below.
    handlers = {handler.__func__ for handler in Harness().core._upstream_handlers.values()}  # type: ignore[attr-defined]
    assert len(UPSTREAM_EVENT_TYPES) >= 47
    assert len(handlers) >= 17
    assert set(RICHER_EVENTS) <= set(UPSTREAM_EVENT_TYPES)


@pytest.mark.parametrize("event_type", UPSTREAM_EVENT_TYPES, ids=lambda t: t.__name__)
def test_a_planted_bug_in_an_upstream_handler_raises_in_strict_mode(event_type: type[Any]) -> None:
    h = Harness()
    h.ready()
    table = h.core._upstream_handlers
    table[event_type] = planted(table[event_type])
    with pytest.raises(PlantedBug):
        h.up(minimal_event(event_type))


def test_a_planted_bug_in_the_unknown_event_handler_raises_in_strict_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    h.ready()
    monkeypatch.setattr(h.core, "_on_unknown_event", planted(h.core._on_unknown_event))
    with pytest.raises(PlantedBug):
        h.up({"type": "unheard.of"})


@pytest.mark.parametrize(
    ("message_type", "message"),
    [
        (component.Settings, MANUAL),
        (component.InjectUserMessage, {"type": "InjectUserMessage", "content": "hi"}),
        (component.FunctionCallResponse, {"type": "FunctionCallResponse", "id": "c", "content": "x"}),
        (component.KeepAlive, {"type": "KeepAlive"}),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_a_planted_bug_in_a_client_handler_raises_in_strict_mode(message_type: type[Any], message: Any) -> None:
    h = Harness()
    table = h.core._client_handlers
    table[message_type] = planted(table[message_type])
    with pytest.raises(PlantedBug):
        h.send(message)


@pytest.mark.provokes_internal_error
def test_without_strict_a_bug_in_an_upstream_handler_costs_one_error_and_is_logged(
    monkeypatch: pytest.MonkeyPatch, internal_errors: list[logging.LogRecord]
) -> None:
    monkeypatch.setenv(STRICT_VARIABLE, "0")
    h = Harness()
    h.ready()
    table = h.core._upstream_handlers
    table[openai.ResponseDone] = planted(table[openai.ResponseDone])
    step = h.up({"type": "response.done", "response": {}})
    assert json.loads(step.client[-1])["code"] == "unmapped_upstream_event"
    assert [r.getMessage() for r in internal_errors] == ["failed to handle upstream event ResponseDone"]
    assert kinds(h.up({"type": "input_audio_buffer.speech_started"}).client) == ["UserStartedSpeaking"]


@pytest.mark.provokes_internal_error
def test_without_strict_a_bug_in_a_client_handler_costs_one_error_and_is_logged(
    monkeypatch: pytest.MonkeyPatch, internal_errors: list[logging.LogRecord]
) -> None:
    monkeypatch.setenv(STRICT_VARIABLE, "0")
    h = Harness()
    table = h.core._client_handlers
    table[component.KeepAlive] = planted(table[component.KeepAlive])
    step = h.send({"type": "KeepAlive"})
    assert kinds(step.client) == ["Error"]
    assert json.loads(step.client[0])["code"] == "client_message_failed"
    assert [r.getMessage() for r in internal_errors] == ["failed to handle client KeepAlive"]


def test_a_planted_bug_in_the_passthrough_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    core = Passthrough(Service.AGENT, max_pending_frames=8, max_pending_bytes=1000, synthetic_audio_done=True)
    core.upstream_opened(0)
    monkeypatch.setattr(passthrough, "is_assistant_text", planted(passthrough.is_assistant_text))
    with pytest.raises(PlantedBug):
        core.upstream_message('{"type":"ConversationText","role":"assistant"}', 0)


INNER_TEST = """
import logging

import pytest


def test_logs_a_traceback():
    try:
        raise ValueError("bug")
    except ValueError:
        logging.getLogger("proxy.openai").exception("failed to handle")


@pytest.mark.provokes_internal_error
def test_says_it_provokes_one(internal_errors):
    try:
        raise ValueError("bug")
    except ValueError:
        logging.getLogger("proxy.openai").exception("failed to handle")
    assert len(internal_errors) == 1


def test_a_warning_is_not_a_bug():
    logging.getLogger("proxy.openai").warning("peer fault")
"""


def test_a_logged_traceback_fails_the_test_that_logged_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((pytester_root() / "tests" / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    provokes_internal_error: on purpose\naddopts = -p no:cacheprovider\n")
    pytester.makepyfile(test_inner=INNER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:trio")
    result.assert_outcomes(passed=3, errors=1)  # the call passes, the teardown fails it
    result.stdout.fnmatch_lines(["*internal error(s) logged by the proxy; first: proxy.openai: failed to handle*"])


def pytester_root() -> Path:
    return Path(__file__).resolve().parents[1]
