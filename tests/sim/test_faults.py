"""Fault scripts: the parser (hypothesis) and every fault kind as a client sees it."""

from __future__ import annotations

import contextlib
import json
import re
from urllib.parse import quote

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, ConnectionRejected

from proxy.sim.faults import CloseAfter, FaultScript, FaultScriptError, parse_faults
from proxy.sim.server import SimOptions

from .helpers import AgentClient, OpenAIClient, connect, memory_connection, simulator

# -- parser ---------------------------------------------------------------------------------------------------

types_ = st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True)
seconds = st.floats(min_value=0, max_value=3600, allow_nan=False).map(lambda x: round(x, 3))
counts = st.integers(min_value=0, max_value=10**6)
codes = st.one_of(st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1011, 1013]), st.integers(3000, 4999))
reasons = st.text(
    st.characters(blacklist_characters=";", blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), max_size=20
).filter(lambda r: len(r.encode()) <= 123 and r == r.strip())
scripts = st.builds(
    FaultScript,
    delays=st.dictionaries(types_, seconds, max_size=3).map(lambda d: tuple(sorted(d.items()))),
    drops=st.frozensets(types_, max_size=3),
    close_after=st.none() | st.builds(CloseAfter, counts, codes, reasons),
    abort_after=st.none() | counts,
    garbage_after=st.none() | counts,
    slow_read=st.none() | seconds,
    reject=st.none() | st.integers(100, 599).filter(lambda s: s != 101),
    hang_handshake=st.none() | seconds,
)


@given(scripts)
def test_format_then_parse_round_trips(script: FaultScript) -> None:
    assert parse_faults(script.format()) == script


@given(st.lists(st.sampled_from(["delay:x:1", "drop:y", "slow_read:0.5", " ", ""]), max_size=6))
def test_whitespace_and_empty_steps_are_ignored(steps: list[str]) -> None:
    script = parse_faults(" ; ".join(dict.fromkeys(steps)))
    assert parse_faults(script.format()) == script


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("explode", "unknown fault 'explode'"),
        ("delay:x", "expected delay:<type>:<seconds>"),
        ("delay:x:soon", "not a number"),
        ("delay:x:-1", "between 0 and"),
        ("delay:x:nan", "between 0 and"),
        ("delay:x:1;delay:x:2", "repeated"),
        ("close_after:three", "not a message count"),
        ("close_after:1:1005", "may not be sent"),
        ("close_after:1:2500", "may not be sent"),
        ("close_after:1:99", "4-digit"),
        ("close_after:1:1000:" + "x" * 124, "longer than 123"),
        ("reject:101", "HTTP status"),
        ("reject:1000", "HTTP status"),
        ("slow_read:1;slow_read:2", "repeated"),
        ("drop:bad type", "not a message type"),
        ("hang_handshake:1:2", "expected hang_handshake"),
    ],
)
def test_invalid_scripts_are_rejected_clearly(text: str, complaint: str) -> None:
    with pytest.raises(FaultScriptError, match=re.escape(complaint)):
        parse_faults(text)


@given(st.text(max_size=40))
def test_parser_never_fails_other_than_with_a_fault_script_error(text: str) -> None:
    with contextlib.suppress(FaultScriptError):
        parse_faults(text)


def test_example_and_options_validation() -> None:
    script = parse_faults(
        "delay:session.updated:2.5;close_after:3:4001:bye: see you;garbage_after:2;drop:response.create"
    )
    assert script.delay_for("session.updated") == 2.5
    assert script.close_after == CloseAfter(3, 4001, "bye: see you")
    assert script.drops_type("response.create")
    assert not script.drops_type("response.created")
    with pytest.raises(FaultScriptError):
        SimOptions(faults="nonsense")


# -- each fault, observed by a client ---------------------------------------------------------------------------

OPENAI = "/v1/realtime?sim_faults="
UPDATE = {"type": "session.update", "session": {"type": "realtime"}}


def faulty(script: str) -> str:
    return OPENAI + quote(script)


async def test_delay_holds_a_reply(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_connection(faulty("delay:session.updated:2.5")) as ws:
        client = OpenAIClient(ws)
        await client.next()
        start = trio.current_time()
        await client.send(UPDATE)
        assert (await client.next())["type"] == "session.updated"
        assert trio.current_time() - start == pytest.approx(2.5)


async def test_drop_leaves_a_request_unanswered() -> None:
    async with simulator() as port, connect(port, faulty("drop:session.update")) as ws:
        client = OpenAIClient(ws)
        await client.next()
        await client.send(UPDATE)
        await client.send({"type": "input_audio_buffer.clear"})
        assert (await client.next())["type"] == "input_audio_buffer.cleared"  # no session.updated before it


async def test_close_after_uses_the_code_and_reason() -> None:
    async with simulator() as port, connect(port, faulty("close_after:2:4001:bye")) as ws:
        client = OpenAIClient(ws)
        await client.next()
        await client.send(UPDATE)
        await client.next()
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason.code == 4001
        assert closed.value.reason.reason == "bye"


async def test_abort_drops_the_connection_without_a_close_frame() -> None:
    async with simulator() as port, connect(port, faulty("abort_after:1")) as ws:
        await ws.get_message()
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason.code == 1006


async def test_garbage_frame_is_not_json() -> None:
    async with simulator() as port, connect(port, faulty("garbage_after:1")) as ws:
        json.loads(await ws.get_message())
        garbage = await ws.get_message()
        assert isinstance(garbage, str)
        with pytest.raises(ValueError):
            json.loads(garbage)


async def test_slow_read_delays_handling(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_connection(faulty("slow_read:0.5")) as ws:
        client = OpenAIClient(ws)
        await client.next()
        start = trio.current_time()
        for _ in range(3):
            await client.send({"type": "input_audio_buffer.clear"})
        for _ in range(3):
            await client.next()
        assert trio.current_time() - start == pytest.approx(1.5)


async def test_reject_answers_the_handshake_with_the_status() -> None:
    async with simulator() as port:
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(port, "/v1/agent/converse?sim_faults=reject:503"):
                pass
        assert rejected.value.status_code == 503


async def test_hang_handshake_never_answers(autojump_clock: trio.testing.MockClock) -> None:
    with trio.move_on_after(300) as waited:
        async with memory_connection(faulty("hang_handshake")):
            pytest.fail("the handshake was answered")
    assert waited.cancelled_caught


async def test_invalid_script_in_the_url_is_a_400() -> None:
    async with simulator() as port:
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(port, faulty("explode")):
                pass
        assert rejected.value.status_code == 400
        assert b"unknown fault" in (rejected.value.body or b"")


async def test_server_wide_default_and_url_override() -> None:
    options = SimOptions(speed=0, faults="reject:502")
    async with simulator(options) as port:
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(port, "/v1/agent/converse"):
                pass
        assert rejected.value.status_code == 502
        async with connect(port, "/v1/agent/converse?sim_faults=") as ws:  # an empty script turns faults off
            assert (await AgentClient(ws).next())["type"] == "Welcome"


def test_default_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_SIM_FAULTS", "drop:Welcome")
    assert SimOptions().fault_script.drops_type("Welcome")
    monkeypatch.setenv("PROXY_SIM_FAULTS", "drop:")
    with pytest.raises(FaultScriptError):
        SimOptions()
