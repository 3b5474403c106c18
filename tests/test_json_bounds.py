"""Hostile JSON: nesting is bounded before any recursive walk, a peer's fault is one WARNING line, never a 1011.

Also the per-session limit on peer-fault warnings, and the fuzz targets that feed random, mutated and deeply nested
JSON to the translator (client and upstream paths) and to the pass-through.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed

from proxy import redact
from proxy.deepgram.passthrough import Passthrough
from proxy.deepgram.policy import Service
from proxy.openai.translator import Translator, TranslatorOptions
from proxy.protocol.json_depth import MAX_JSON_DEPTH, too_deep
from proxy.ratelimit import WarningLimiter
from proxy.redact import Redactor
from tests.fuzzing import fuzz_settings
from tests.openai.harness import SESSION_UPDATED, Harness, kinds, of_kind
from tests.wsmem import running_session

KEY = "sk-proj-Zx9Cv8Bn7Mm6Ll5Kk4Jj3Hh2Gg1Ff0DdSsAaQqWwEeRrTtYy"


def nest(depth: int, inner: str = "1", opening: str = "[", closing: str = "]") -> str:
    return opening * depth + inner + closing * depth


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def peer_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.exc_text], "a traceback was logged"


# -- the depth check --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        (nest(MAX_JSON_DEPTH), False),
        (nest(MAX_JSON_DEPTH + 1), True),
        (nest(MAX_JSON_DEPTH + 1, "1", '{"a":', "}"), True),
        ('"' + "[" * 1000 + '"', False),  # brackets inside a string do not nest
        ('["\\"' + "[" * 1000 + '"]', False),  # nor after an escaped quote
        ("[]" * 1000, False),
        (nest(MAX_JSON_DEPTH + 1).encode(), True),
        ("[" * 1000, True),  # unbalanced: never reported shallower than it is
    ],
)
def test_nesting_beyond_the_bound_is_found_without_parsing(text: str | bytes, deep: bool) -> None:
    assert too_deep(text) is deep


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"a', max_size=3), inner),
    max_leaves=30,
)


@fuzz_settings(200)
@pytest.mark.fuzz
@given(value=_json, limit=st.integers(0, 6))
def test_the_depth_check_agrees_with_a_parser(value: Any, limit: int) -> None:
    assert too_deep(json.dumps(value), limit) is (depth_of(value) > limit)


# -- the translator, client side ---------------------------------------------------------------------------------

CLIENT_DEEP = {
    "type": lambda d: '{"type":' + nest(d) + "}",
    "settings": lambda d: '{"type":"Settings","agent":{"think":{"prompt":' + nest(d) + "}}}",
    "inject": lambda d: '{"type":"InjectUserMessage","content":' + nest(d) + "}",
    "tool-result": lambda d: '{"type":"FunctionCallResponse","id":"c","content":' + nest(d, "1", '{"a":', "}") + "}",
    "keepalive": lambda d: '{"type":"KeepAlive","x":' + nest(d) + "}",
    "array": lambda d: nest(d),
}


@pytest.mark.parametrize("shape", CLIENT_DEEP)
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 600, 5000])
def test_deeply_nested_client_json_is_an_error_and_one_warning_never_a_traceback(
    shape: str, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(TranslatorOptions(allow_client_json_passthrough=shape == "type"))
    h.ready()
    caplog.clear()
    step = h.send(CLIENT_DEEP[shape](depth))
    assert [m["code"] for m in of_kind(step.client, "Error")] == ["client_message_too_deep"]
    assert step.upstream == []
    assert len(peer_warnings(caplog)) == 1
    no_tracebacks(caplog)
    h.send({"type": "InjectUserMessage", "content": "still here"})
    assert h.upstream_kinds()[-1] == "conversation.item.create"


async def test_a_deeply_nested_client_message_leaves_the_session_open() -> None:
    async with running_session(Translator()) as (browser, upstream, _session, done):
        up = await upstream.next()
        await browser.send_message(CLIENT_DEEP["type"](600))
        error = json.loads(await browser.get_message())
        assert error["code"] == "client_message_too_deep"
        await browser.send_message(json.dumps({"type": "Settings"}))
        assert json.loads(await up.get_message())["type"] == "session.update"
        assert not done.is_set()
        await browser.aclose()
    with pytest.raises(ConnectionClosed):
        await up.get_message()


# -- the translator, upstream side -------------------------------------------------------------------------------

UPSTREAM_DEEP = {
    "unknown": lambda d: '{"type":"x.unknown","v":' + nest(d) + "}",
    "unknown-type": lambda d: '{"type":' + nest(d) + "}",
    "item": lambda d: '{"type":"conversation.item.added","item":{"type":"message","content":' + nest(d) + "}}",
    "response-done": lambda d: '{"type":"response.done","response":{"output":' + nest(d) + "}}",
    "error": lambda d: '{"type":"error","error":{"code":"x","message":' + nest(d) + "}}",
}


@pytest.mark.parametrize("shape", UPSTREAM_DEEP)
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 600, 5000])
def test_deeply_nested_upstream_json_is_an_error_and_one_warning_never_a_traceback(
    shape: str, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness()
    h.ready()
    caplog.clear()
    step = h.up(UPSTREAM_DEEP[shape](depth))
    assert [m["code"] for m in of_kind(step.client, "Error")] == ["unmapped_upstream_event"]
    assert len(peer_warnings(caplog)) == 1
    no_tracebacks(caplog)


def test_audio_deltas_skip_the_depth_check_and_still_play() -> None:
    h = Harness()
    h.ready()
    step = h.up({"type": "response.output_audio.delta", "delta": "AAAA", "x": [[[1]]]})
    assert kinds(step.client)[-1] == "<binary>"


# -- the pass-through -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [600, 5000, 100_000])
def test_the_pass_through_relays_deeply_nested_text_without_an_exception(
    depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    core = Passthrough(Service.AGENT, max_pending_frames=4, max_pending_bytes=1 << 20, synthetic_audio_done=True)
    core.upstream_opened(0)
    core.upstream_message(b"audio", 0)
    frame = '{"type":"ConversationText","role":' + nest(depth) + "}"
    core.upstream_message(frame, 0)
    assert core.to_client == [b"audio", frame]
    no_tracebacks(caplog)


# -- rate-limited warnings -----------------------------------------------------------------------------------------


def test_the_limiter_lets_a_burst_through_then_reports_the_count_once() -> None:
    limiter = WarningLimiter(burst=3, interval_s=10.0)
    assert [limiter.admit(0.0) for _ in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    assert limiter.admit(9.9) == (False, 0)
    assert limiter.admit(10.0) == (True, 3)  # a new window: the old one's count is reported first
    assert limiter.drain() == 0
    assert [limiter.admit(11.0)[0] for _ in range(4)] == [True, True, False, False]
    assert limiter.drain() == 2
    assert limiter.drain() == 0


def test_a_flood_of_bad_client_messages_logs_a_bounded_number_of_lines(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.ready()
    caplog.clear()
    for i in range(1000):
        h.now = i * 0.01  # ten seconds: one window
        h.send({"type": "Nope"})
    assert len(of_kind(h.client, "Error")) == 1000  # every message is still answered
    assert len(peer_warnings(caplog)) == 10
    h.close_client()
    summary = peer_warnings(caplog)[-1].getMessage()
    assert summary == "990 more warning(s) about peer faults suppressed"


# -- fuzz targets ----------------------------------------------------------------------------------------------------

_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20) | st.just(KEY),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=40,
)
_client_types = st.sampled_from(["Settings", "InjectUserMessage", "FunctionCallResponse", "KeepAlive", KEY, None, 1])
_upstream_types = st.sampled_from(
    ["error", "session.updated", "conversation.item.added", "response.done", "response.output_text.done",
     "response.function_call_arguments.done", "input_audio_buffer.speech_stopped", "x.unknown", KEY, None]
)  # fmt: skip


def _messages(types: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    objects = st.builds(
        lambda t, rest: json.dumps({"type": t, **rest}),
        types,
        st.dictionaries(st.text(max_size=8), _values, max_size=4),
    )
    nested = st.builds(lambda t, d: '{"type":' + json.dumps(t) + ',"v":' + nest(d) + "}", types, st.integers(0, 3000))
    mutated = st.builds(
        lambda text, cut, junk: text[:cut] + junk + text[cut:], objects, st.integers(0, 200), st.text(max_size=5)
    )
    garbage = st.binary(max_size=50).map(lambda b: b.decode("latin-1"))
    return st.one_of(objects, nested, mutated, st.text(max_size=50), garbage)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def redacted_logs() -> Iterator[list[logging.LogRecord]]:
    """Every record logged inside, redacted as in production (a fixture would not reset between examples)."""
    handler, root = _Records(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    redact.install_log_redaction(Redactor([KEY]))
    try:
        yield handler.records
    finally:
        redact.uninstall_log_redaction()
        root.removeHandler(handler)
        root.setLevel(level)


def _clean(frames: list[Any], records: list[logging.LogRecord]) -> None:
    formatter = logging.Formatter()
    shown = "".join(f for f in frames if isinstance(f, str)) + "".join(formatter.format(r) for r in records)
    assert not [KEY[i : i + 8] for i in range(len(KEY) - 7) if KEY[i : i + 8] in shown]
    assert not [r for r in records if r.exc_info or r.exc_text], "a traceback was logged"


@fuzz_settings(100)
@pytest.mark.fuzz
@given(messages=st.lists(_messages(_client_types), min_size=1, max_size=6))
def test_fuzz_the_translator_client_path(messages: list[str]) -> None:
    with redacted_logs() as records:
        h = Harness(redactor=Redactor([KEY]))
        for message in messages:
            h.send(message)
            h.up(SESSION_UPDATED)
    _clean([f for f in h.client if isinstance(f, str) and '"Error"' in f], records)


@fuzz_settings(100)
@pytest.mark.fuzz
@given(events=st.lists(_messages(_upstream_types), min_size=1, max_size=6))
def test_fuzz_the_translator_upstream_path(events: list[str]) -> None:
    with redacted_logs() as records:
        h = Harness(redactor=Redactor([KEY]))
        h.ready()
        for event in events:
            h.up(event)
    _clean([f for f in h.client if isinstance(f, str) and '"Error"' in f], records)


@fuzz_settings(100)
@pytest.mark.fuzz
@given(frames=st.lists(_messages(_client_types), min_size=1, max_size=6))
def test_fuzz_the_pass_through(frames: list[str]) -> None:
    with redacted_logs() as records:
        core = Passthrough(
            Service.AGENT,
            max_pending_frames=4,
            max_pending_bytes=1 << 20,
            synthetic_audio_done=True,
            redactor=Redactor([KEY]),
        )
        core.upstream_opened(0)
        for frame in frames:
            core.upstream_message(frame, 0)
            core.upstream_message(b"\x00", 0)
            core.client_message(frame, 0)
    _clean(core.to_client, records)
    assert core.to_upstream == frames  # client frames go upstream unchanged
