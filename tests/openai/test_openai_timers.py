"""Deadlines at exact virtual times: manual-commit debounce and max-coalesce (reference §7.4 and its worked
examples) and the deferred response.create watchdog (§5.3). Time is whatever ``now`` the test passes."""

from __future__ import annotations

import base64
import logging

import pytest

from proxy.openai.translator import TranslatorOptions
from tests.openai.harness import MANUAL, VAD, Harness, item_event, of_kind, text_done

FCR = {"type": "FunctionCallResponse", "id": "call_1", "content": "ok"}


def commits(h: Harness) -> int:
    return h.upstream_kinds().count("input_audio_buffer.commit")


def appended_bytes(h: Harness) -> int:
    return sum(len(base64.b64decode(e["audio"])) for e in of_kind(h.upstream, "input_audio_buffer.append"))


def commit_times(h: Harness) -> list[float]:
    return [float(label.split("@")[1]) for label, step in h.log if "input_audio_buffer.commit" in step.upstream_kinds]


def manual_session() -> Harness:
    h = Harness()
    h.ready(MANUAL)
    return h


def test_commit_is_always_immediately_followed_by_response_create() -> None:
    h = manual_session()
    h.send(bytes(40000))
    step = h.advance(1)
    assert step.upstream_kinds == ["input_audio_buffer.commit", "response.create"]


def test_500_bytes_append_748_and_never_commit() -> None:
    h = manual_session()
    h.send(bytes(500))
    h.advance(10)
    assert appended_bytes(h) == 748
    assert commits(h) == 0
    assert h.core.next_deadline() is None


def test_40000_bytes_commit_at_exactly_400ms_after_the_append() -> None:
    h = manual_session()
    h.advance_to(1.0)
    h.send(bytes(40000))
    assert appended_bytes(h) == 59998
    assert h.core.next_deadline() == pytest.approx(1.4)
    assert h.advance_to(1.3999).upstream == []
    assert h.advance_to(1.4).upstream_kinds == ["input_audio_buffer.commit", "response.create"]
    assert commit_times(h) == [pytest.approx(1.4)]
    assert h.core.next_deadline() is None  # the max-coalesce deadline went with the commit


def test_first_commit_waits_for_one_second_of_audio() -> None:
    h = manual_session()
    h.send(bytes(20000))
    assert appended_bytes(h) == 29998
    h.advance_to(0.55)
    assert commits(h) == 0
    assert h.core.next_deadline() is None  # an ineligible debounce is not re-armed
    h.send(bytes(20000))
    h.advance_to(1.4)
    assert commit_times(h) == [pytest.approx(0.95)]


def test_steady_250ms_chunks_commit_at_1850ms_through_the_max_coalesce_cap() -> None:
    h = manual_session()
    for n in range(1, 15):
        h.advance_to(0.25 * n)
        h.send(bytes(8000))
    assert commit_times(h) == [pytest.approx(1.85)]


def test_debounce_restarts_with_every_append() -> None:
    h = manual_session()
    h.send(bytes(2000))
    h.advance_to(0.3)
    h.send(bytes(2000))
    assert h.core.next_deadline() == pytest.approx(0.7)


def test_later_commits_need_only_100ms_of_audio() -> None:
    h = manual_session()
    h.send(bytes(40000))
    h.advance_to(0.4)
    h.up(text_done())
    h.advance_to(2.0)
    h.send(bytes(3400))  # ~5100 bytes at 24 kHz, above 4800
    h.advance_to(3.0)
    assert commit_times(h) == [pytest.approx(0.4), pytest.approx(2.4)]


def test_no_commit_while_a_response_is_active_then_rearmed_when_it_ends() -> None:
    h = manual_session()
    h.send(bytes(40000))
    h.advance_to(0.5)
    h.send(bytes(9600))
    h.send(bytes(9600))
    h.advance_to(1.1)
    assert commits(h) == 1  # the debounce at 0.9 found a response in progress
    h.up(text_done())  # at 1.1: the response ends, the pending audio is scheduled again
    h.advance_to(3.5)
    assert commit_times(h) == [pytest.approx(0.4), pytest.approx(1.5)]


def test_an_orphan_tail_below_100ms_is_padded_with_silence_when_the_response_ends() -> None:
    h = manual_session()
    h.send(bytes(40000))
    h.advance_to(0.55)
    h.send(bytes(1800))
    tail = appended_bytes(h) - 59998
    h.advance_to(1.45)
    step = h.up(text_done())
    (pad,) = of_kind(step.upstream, "input_audio_buffer.append")
    assert base64.b64decode(pad["audio"]) == bytes(4800 - tail)
    h.advance_to(4.0)
    assert commit_times(h) == [pytest.approx(0.4), pytest.approx(1.85)]


def test_client_close_with_pending_audio_pads_to_the_first_commit_threshold_and_commits() -> None:
    h = manual_session()
    for n in range(6):
        h.advance_to(0.25 * n)
        h.send(bytes(4000))
    h.advance_to(1.3)
    assert commits(h) == 0
    before = appended_bytes(h)
    _, step = h.close_client()
    assert step.upstream_kinds == ["input_audio_buffer.append", "input_audio_buffer.commit", "response.create"]
    assert before < 48000
    assert appended_bytes(h) == 48000


def test_client_close_flushes_nothing_during_a_response_or_in_server_vad_mode() -> None:
    h = manual_session()
    h.send(bytes(40000))
    h.advance_to(0.4)
    h.send(bytes(4000))
    assert h.close_client()[1].upstream == []
    v = Harness()
    v.ready(VAD)
    v.send(bytes(4000))
    assert v.close_client()[1].upstream == []


def test_watchdog_sends_the_deferred_response_create_after_exactly_20s(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.ready()
    h.advance_to(2.0)
    h.send(FCR)
    assert h.core.next_deadline() == pytest.approx(22.0)
    assert h.advance_to(21.999).upstream == []
    with caplog.at_level(logging.ERROR, "proxy.openai"):
        step = h.advance_to(22.0)
    assert step.upstream_kinds == ["response.create"]
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().startswith("Required upstream contract violated")
    h.up(text_done())
    h.advance(60)
    assert h.upstream_kinds().count("response.create") == 1


def test_watchdog_timeout_is_configurable() -> None:
    h = Harness(TranslatorOptions(deferred_response_create_timeout=0.5))
    h.ready()
    h.send(FCR)
    assert h.advance_to(0.4999).upstream == []
    assert h.advance_to(0.5).upstream_kinds == ["response.create"]


def test_a_new_function_call_response_restarts_the_watchdog() -> None:
    h = Harness()
    h.ready()
    h.send(FCR)
    h.advance_to(10)
    h.send(FCR)
    assert h.core.next_deadline() == pytest.approx(30)


def test_upstream_completion_cancels_the_watchdog() -> None:
    h = Harness()
    h.ready()
    h.send(FCR)
    h.up(item_event("done", item_id="o", role=None, type_="function_call_output"))
    assert h.core.next_deadline() is None


def test_watchdog_during_an_active_response_waits_for_its_end(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.ready()
    h.send({"type": "InjectUserMessage", "content": "hi"})
    h.up(item_event("added", item_id=h.sent_item_ids()[0]))
    h.send(FCR)
    with caplog.at_level(logging.ERROR, "proxy.openai"):
        assert h.advance_to(20).upstream == []
    assert any(r.getMessage().startswith("Required upstream contract violated") for r in caplog.records)
    assert h.up({"type": "response.done", "response": {"output": []}}).upstream_kinds == ["response.create"]


def test_all_due_deadlines_fire_in_deadline_order_in_one_call() -> None:
    h = manual_session()
    h.send(FCR)  # watchdog at 20.0
    h.advance_to(19.7)
    h.send(bytes(40000))  # debounce 20.1, max-coalesce 20.3
    h.now = 21.0
    step = h.fire()  # late: all three are due
    # The watchdog (earliest) starts a response, so the commits that follow are not eligible.
    assert step.upstream_kinds == ["response.create"]
    assert h.core.next_deadline() is None


def test_next_deadline_is_the_earliest_pending_one() -> None:
    h = manual_session()
    h.send(FCR)
    h.send(bytes(40000))
    assert h.core.next_deadline() == pytest.approx(0.4)
