"""The translator's named machines: tables, replaced turn state, misuse and illegal transitions."""

from __future__ import annotations

import pytest

from proxy.openai.state import (
    RESPONSE_TRANSITIONS,
    SETUP_TRANSITIONS,
    IllegalTransition,
    Response,
    ResponseEvent,
    Setup,
    SetupEvent,
    TranslatorMisuse,
    advance,
    illegal_combinations,
)
from tests.openai.harness import MANUAL, SESSION_UPDATED, VAD, Harness


def test_setup_goes_waiting_update_sent_ready() -> None:
    h = Harness()
    assert h.core.snapshot().setup is Setup.WAITING
    h.send(MANUAL)
    assert h.core.snapshot().setup is Setup.UPDATE_SENT
    h.up(SESSION_UPDATED)
    assert h.core.snapshot().setup is Setup.READY


def test_a_session_declared_ready_before_settings_still_forwards_them() -> None:
    h = Harness()
    h.up(SESSION_UPDATED)
    assert h.core.snapshot().setup is Setup.READY_UNCONFIGURED
    assert h.send(VAD).upstream_kinds == ["session.update"]
    assert h.core.snapshot().setup is Setup.READY


def test_a_response_never_starts_twice() -> None:
    assert advance(RESPONSE_TRANSITIONS, Response.IDLE, ResponseEvent.START) is Response.ACTIVE
    with pytest.raises(IllegalTransition, match="START in state ACTIVE"):
        advance(RESPONSE_TRANSITIONS, Response.ACTIVE, ResponseEvent.START)
    with pytest.raises(IllegalTransition):
        advance(SETUP_TRANSITIONS, Setup.UPDATE_SENT, SetupEvent.SETTINGS_FORWARDED)


def test_each_response_gets_a_fresh_turn_and_the_ended_one_keeps_its_flags() -> None:
    h = Harness()
    h.ready(MANUAL)
    h.send(bytes(40_000))
    h.advance(0.4)
    first = h.core._turn
    h.up({"type": "response.output_audio.delta", "delta": "AAA="})
    h.up({"type": "response.done", "response": {}})
    assert h.core._turn is first
    assert first.started_speaking
    assert first.agent_done
    h.send(bytes(40_000))
    h.advance(0.4)
    assert h.core._turn is not first
    assert not h.core._turn.started_speaking
    assert not h.core._turn.agent_done


def test_opening_the_upstream_twice_is_misuse_not_a_peer_fault() -> None:
    h = Harness()
    with pytest.raises(TranslatorMisuse):
        h.open()
    assert not issubclass(TranslatorMisuse, IllegalTransition)


def test_the_legal_combinations_hold_through_a_turn_and_a_broken_one_is_named() -> None:
    h = Harness(opened=False)
    h.send(MANUAL)
    assert illegal_combinations(h.core.snapshot()) == []
    h.open()
    h.up(SESSION_UPDATED)
    h.send({"type": "FunctionCallResponse", "id": "c", "content": "x"})
    state = h.core.snapshot()
    assert illegal_combinations(state) == []
    from dataclasses import replace

    from proxy.openai.state import ToolResult

    assert illegal_combinations(replace(state, tool_result=ToolResult.NONE)) == [
        "tool-result watchdog armed with no tool result awaiting its response"
    ]
