"""The translator's named machines: tables, replaced turn state, misuse and illegal transitions."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from proxy.openai.state import (
    ACKNOWLEDGEMENT_TRANSITIONS,
    COMMIT_TRANSITIONS,
    MIN_AUDIO_BYTES_FOR_COMMIT,
    RESPONSE_TRANSITIONS,
    SETUP_TRANSITIONS,
    Acknowledgement,
    AcknowledgementEvent,
    Commit,
    IllegalTransition,
    ManualCommit,
    Response,
    ResponseEvent,
    Setup,
    SetupEvent,
    Snapshot,
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
    from proxy.openai.state import ToolResult

    assert illegal_combinations(replace(state, tool_result=ToolResult.NONE)) == [
        "tool-result watchdog armed with no tool result awaiting its response"
    ]


def test_manual_commit_goes_empty_held_debounce_coalesce_and_back_to_empty() -> None:
    h = Harness()
    h.ready(MANUAL)
    assert h.core.snapshot().commit is Commit.EMPTY
    h.send(bytes(40_000))  # 60 000 bytes at 24 kHz: above the first-commit threshold
    state = h.core.snapshot()
    assert (state.commit, state.debounce_at, state.coalesce_at) == (Commit.DEBOUNCE_AND_COALESCE, 0.4, 0.6)
    h.advance(0.4)
    assert h.core.snapshot().commit is Commit.EMPTY
    assert h.core._commit.threshold_bytes == MIN_AUDIO_BYTES_FOR_COMMIT  # the first commit is done
    h.send(bytes(1_000))  # below the 100 ms threshold, and the first commit's response is still running
    assert (h.core.snapshot().commit, h.core.snapshot().debounce_at) == (Commit.DEBOUNCE, 0.8)
    h.close_client()  # no flush while a response runs; the deadline goes with the leg
    assert (h.core.snapshot().commit, h.core.snapshot().uncommitted_bytes) == (Commit.HELD, 1_500)


def test_a_commit_deadline_cannot_be_armed_with_nothing_counted() -> None:
    commit = ManualCommit()
    with pytest.raises(IllegalTransition, match="ARM_DEBOUNCE in state EMPTY"):
        commit.arm_debounce(1.0)
    with pytest.raises(IllegalTransition):
        commit.appended(0)
    with pytest.raises(IllegalTransition, match="COMMITTED in state EMPTY"):
        commit.committed()
    commit.appended(10)
    with pytest.raises(IllegalTransition, match="ARM_COALESCE in state HELD"):
        commit.arm_coalesce(1.0)
    with pytest.raises(IllegalTransition, match="DEBOUNCE_FIRED in state HELD"):
        commit.debounce_fired()


def test_every_commit_transition_keeps_phase_count_and_deadlines_in_agreement() -> None:
    for (phase, event), to in COMMIT_TRANSITIONS.items():
        state = replace(_snapshot(), commit=to)
        state = replace(
            state,
            uncommitted_bytes=0 if to is Commit.EMPTY else 10,
            debounce_at=1.0 if to in (Commit.DEBOUNCE, Commit.DEBOUNCE_AND_COALESCE) else None,
            coalesce_at=1.0 if to in (Commit.COALESCE, Commit.DEBOUNCE_AND_COALESCE) else None,
        )
        assert illegal_combinations(state) == [], (phase, event, to)
    broken = replace(_snapshot(), commit=Commit.DEBOUNCE, uncommitted_bytes=0, debounce_at=1.0)
    assert illegal_combinations(broken) == ["manual commit in DEBOUNCE but its count and deadlines say EMPTY"]


def test_inject_acknowledgement_goes_awaiting_owed_idle() -> None:
    h = Harness()
    h.ready(VAD)
    h.send({"type": "InjectUserMessage", "content": "hi"})
    h.send({"type": "InjectUserMessage", "content": "again"})
    state = h.core.snapshot()
    assert (state.acknowledgement, state.awaiting_acknowledgement, state.replies_owed) == (
        Acknowledgement.AWAITING,
        2,
        0,
    )
    first, second = h.sent_item_ids()
    h.up({"type": "conversation.item.added", "item": {"type": "message", "role": "user", "id": first}})
    assert h.core.snapshot().acknowledgement is Acknowledgement.AWAITING  # the second is still awaited
    step = h.up({"type": "conversation.item.added", "item": {"type": "message", "role": "user", "id": second}})
    # Both acknowledged: the first reply's response.create goes out at once, one reply is still owed.
    assert step.upstream_kinds == ["response.create"]
    assert (h.core.snapshot().acknowledgement, h.core.snapshot().replies_owed) == (Acknowledgement.OWED, 1)
    step = h.up({"type": "response.done", "response": {}})
    assert step.upstream_kinds == ["response.create"]
    assert (h.core.snapshot().acknowledgement, h.core.snapshot().replies_owed) == (Acknowledgement.IDLE, 0)


def test_the_acknowledgement_table_refuses_an_answer_nothing_asked_for() -> None:
    with pytest.raises(IllegalTransition, match="ANSWERED_LAST in state AWAITING"):
        advance(ACKNOWLEDGEMENT_TRANSITIONS, Acknowledgement.AWAITING, AcknowledgementEvent.ANSWERED_LAST)
    with pytest.raises(IllegalTransition, match="ACKNOWLEDGED in state IDLE"):
        advance(ACKNOWLEDGEMENT_TRANSITIONS, Acknowledgement.IDLE, AcknowledgementEvent.ACKNOWLEDGED)
    state = replace(_snapshot(), acknowledgement=Acknowledgement.OWED)
    assert illegal_combinations(state) == ["inject acknowledgement in OWED but its counts say IDLE"]


def _snapshot() -> Snapshot:
    h = Harness()
    h.ready(MANUAL)
    return h.core.snapshot()


def test_a_client_message_after_the_client_closed_is_misuse() -> None:
    h = Harness()
    h.ready(MANUAL)
    h.close_client()
    with pytest.raises(TranslatorMisuse, match="client_message after client_closed"):
        h.send({"type": "KeepAlive"})


def test_an_upstream_event_before_the_upstream_opened_is_misuse() -> None:
    h = Harness(opened=False)
    with pytest.raises(TranslatorMisuse, match="upstream_message before upstream_opened"):
        h.up(SESSION_UPDATED)


def test_upstream_events_after_the_client_closed_stay_silent_not_misuse() -> None:
    # The reference ignores them, and a shell may still be reading a frame when the client goes.
    h = Harness(opened=False)
    h.close_client()
    assert h.up(SESSION_UPDATED).client == []


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.send({"type": "KeepAlive"}),
        lambda h: h.up({"type": "rate_limits.updated"}),
        lambda h: h.fire(),
        lambda h: h.close_client(),
        lambda h: h.close_upstream(),
    ],
    ids=["client_message", "upstream_message", "timer_fired", "client_closed", "upstream_closed"],
)
def test_time_going_backwards_is_misuse(call: Any) -> None:
    h = Harness()
    h.ready(MANUAL)
    h.advance(5.0)
    h.send({"type": "KeepAlive"})
    h.now = 4.0
    with pytest.raises(TranslatorMisuse, match=r"time went backwards: 4\.0 after 5\.0"):
        call(h)
