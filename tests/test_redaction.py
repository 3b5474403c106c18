"""Secrets never reach a client or a log line: the redactor, its log choke point, and upstreams that echo the key.

The echoing upstreams put the configured key (and a client token) in every field they control; neither the browser
(every frame, the close reason) nor any log record (message, arguments, exception text) may then contain the key
or any 8-character slice of it.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Iterator
from dataclasses import replace

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, WebSocketConnection

from proxy import logs, redact
from proxy.cli import setup_logging
from proxy.config import Config, Limits, Upstream, UpstreamSource
from proxy.deepgram.route import deepgram_route
from proxy.redact import MASK, RedactingFilter, Redactor
from proxy.routes import RouteDecision, RouteRequest, openai_route
from proxy.session import UpstreamTarget
from proxy.ws import WebSocket, connect
from tests.fuzzing import fuzz_settings
from tests.wsmem import FakeUpstream, running_session

OPENAI_KEY = "sk-proj-Qw3rTy7uIoP1aSdF9gHjK2lZxC8vBnM4qWe6RtY0uIoP"
DEEPGRAM_KEY = "3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a"
CLIENT_TOKEN = "ct_9Hk2Lm4Np6Qr8St0Uv"
SECRETS = (OPENAI_KEY, DEEPGRAM_KEY, CLIENT_TOKEN)


def leaked(text: str, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    """Every 8-character slice of a secret that appears in ``text``."""
    return [s[i : i + 8] for s in secrets for i in range(len(s) - 7) if s[i : i + 8] in text]


# -- the redactor -----------------------------------------------------------------------------------------------

REDACTOR = Redactor(SECRETS)


@pytest.mark.parametrize("secret", SECRETS)
def test_a_secret_and_every_slice_of_8_or_more_characters_is_masked(secret: str) -> None:
    for start in range(len(secret) - 7):
        for end in range(start + 8, len(secret) + 1):
            text = f"error: <{secret[start:end]}> rejected"
            assert not leaked(REDACTOR(text)), (start, end)
            assert REDACTOR(text) == f"error: <{MASK}> rejected" or "sk-***" in REDACTOR(text)


def test_a_slice_of_7_characters_is_left_alone() -> None:
    text = f"id {DEEPGRAM_KEY[3:10]} ok"
    assert REDACTOR(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key sk-abcd1234efgh rejected", "key sk-*** rejected"),
        ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345", f"Authorization: Bearer {MASK}"),
        ("Authorization: Token abcdef0123456789abcdef0123456789", f"Authorization: Token {MASK}"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl end", f"jwt {MASK} end"),
        ("token limit exceeded", "token limit exceeded"),
        ("", ""),
    ],
)
def test_token_shaped_text_is_masked_whatever_its_value(text: str, expected: str) -> None:
    assert Redactor(())(text) == expected


def test_redaction_is_idempotent_and_never_shows_the_secrets_in_its_repr() -> None:
    once = REDACTOR(f"{OPENAI_KEY} {DEEPGRAM_KEY} Bearer {CLIENT_TOKEN}xxxxxxxx")
    assert REDACTOR(once) == once
    assert not leaked(repr(REDACTOR))


def test_the_redactor_is_built_once_per_configuration_from_every_secret() -> None:
    config = _config()
    assert redact.for_config(config) is redact.for_config(replace(config, port=1))
    assert set(redact.config_secrets(config)) == set(SECRETS)
    assert not leaked(redact.for_config(config)(" ".join(SECRETS)))


def test_jwt_shared_secrets_are_redacted_like_keys() -> None:
    jwt_secret = "hs256-shared-secret-for-signing-tokens-0123456789"
    config = replace(_config(), jwt_secrets=(jwt_secret,))
    assert jwt_secret in redact.config_secrets(config)
    masked = redact.for_config(config)(f"oops {jwt_secret[5:30]} leaked")
    assert jwt_secret[5:30] not in masked


_ALPHABET = string.ascii_letters + string.digits + "-_"


@fuzz_settings(200)
@pytest.mark.fuzz
@given(
    secret=st.text(_ALPHABET, min_size=8, max_size=80),
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    data=st.data(),
)
def test_any_slice_of_8_or_more_characters_anywhere_in_any_text_is_masked(
    secret: str, before: str, after: str, data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, len(secret) - 8))
    end = data.draw(st.integers(start + 8, len(secret)))
    redacted = Redactor([secret])(before + secret[start:end] + after)
    assert not leaked(redacted, (secret,))


# -- logs -------------------------------------------------------------------------------------------------------


@pytest.fixture
def redacted_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    redact.install_log_redaction(REDACTOR)
    caplog.set_level(logging.DEBUG)
    try:
        yield caplog
    finally:
        redact.uninstall_log_redaction()


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Everything a handler would print: formatted lines with exception text, plus each record's own fields."""
    fields = [f"{r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}" for r in caplog.records]
    return caplog.text + "\n".join(fields)


@pytest.mark.provokes_internal_error
def test_every_log_record_is_redacted_message_arguments_and_exception(
    redacted_logs: pytest.LogCaptureFixture, internal_errors: list[logging.LogRecord]
) -> None:
    log = logging.getLogger("proxy.test")
    log.warning("upstream said %s (%r)", OPENAI_KEY, {"key": DEEPGRAM_KEY})
    try:
        raise ValueError(f"bad token {CLIENT_TOKEN}")
    except ValueError:
        log.exception("failed")
    logging.getLogger("elsewhere").error("third-party %s", DEEPGRAM_KEY[4:20], stack_info=True)
    assert len(redacted_logs.records) == 3
    assert "ValueError: bad token" in redacted_logs.text
    assert not leaked(log_text(redacted_logs))
    assert [record.getMessage() for record in internal_errors] == ["failed"]


def test_a_record_made_without_the_factory_is_redacted_by_the_handler_filter() -> None:
    record = logging.makeLogRecord({"msg": "key %s", "args": (OPENAI_KEY,), "levelno": logging.ERROR})
    assert RedactingFilter(REDACTOR).filter(record)
    assert record.getMessage() == f"key {MASK}"


def test_setup_logging_installs_the_redaction_for_the_configured_secrets(caplog: pytest.LogCaptureFixture) -> None:
    root = logging.getLogger()
    before = {handler: list(handler.filters) for handler in root.handlers}
    try:
        setup_logging("INFO", SECRETS)
        logging.getLogger("proxy.test").warning("echo %s", DEEPGRAM_KEY)
        assert all(any(isinstance(f, RedactingFilter) for f in h.filters) for h in root.handlers)
    finally:
        redact.uninstall_log_redaction()
        logs.unconfigure()
        for handler, filters in before.items():
            handler.filters[:] = filters
    assert caplog.records[-1].getMessage() == f"echo {MASK}"


# -- upstreams that echo the key --------------------------------------------------------------------------------


def _config() -> Config:
    return Config(
        port=0,
        openai=Upstream("ws://upstream.test/v1/realtime", OPENAI_KEY, UpstreamSource.URL),
        deepgram_agent=Upstream("ws://upstream.test/v1/agent/converse", DEEPGRAM_KEY, UpstreamSource.URL),
        deepgram_listen=Upstream("ws://upstream.test/v1/listen", DEEPGRAM_KEY, UpstreamSource.URL),
        client_tokens=(CLIENT_TOKEN,),
        limits=Limits(ping_interval_s=0),
    )


def _decision(route: str) -> RouteDecision:
    config = _config()
    request = RouteRequest("/openai" if route == "openai" else "/deepgram-proxy")
    decision = openai_route(config, request) if route == "openai" else deepgram_route(config, request, route)
    assert isinstance(decision, RouteDecision)
    return decision


async def _until_closed(browser: WebSocketConnection) -> tuple[list[str | bytes], str]:
    frames: list[str | bytes] = []
    with pytest.raises(ConnectionClosed) as info:
        while True:
            frames.append(await browser.get_message())
    assert info.value.reason is not None
    return frames, f"{info.value.reason.code} {info.value.reason.reason or ''}"


def _seen(frames: list[str | bytes], close: str) -> str:
    return "\n".join(f if isinstance(f, str) else f.decode(errors="replace") for f in frames) + "\n" + close


ECHO = f"Incorrect API key provided: {OPENAI_KEY}. Token {CLIENT_TOKEN}; deepgram {DEEPGRAM_KEY}"


@pytest.mark.parametrize("ready", [False, True], ids=["before-ready", "ready"])
async def test_an_openai_upstream_echoing_the_key_everywhere_leaks_it_nowhere(
    redacted_logs: pytest.LogCaptureFixture, ready: bool
) -> None:
    decision = _decision("openai")
    assert isinstance(decision.target, UpstreamTarget)
    async with running_session(decision.core, target=decision.target) as (browser, upstream, _session, _done):
        up = await upstream.next()
        if ready:
            await browser.send_message(json.dumps({"type": "Settings", "agent": {"think": {"prompt": "hi"}}}))
            await up.get_message()
            await up.send_message(json.dumps({"type": "session.updated", "session": {}}))
        error = {"type": "invalid_request_error", "code": ECHO, "message": ECHO, "param": ECHO, "event_id": ECHO}
        await up.send_message(json.dumps({"type": "error", "event_id": ECHO, "error": error}))
        await up.send_message(json.dumps({"type": "error", "error": {**error, "code": OPENAI_KEY}}))
        await up.send_message(json.dumps({"type": ECHO, "detail": ECHO}))
        await up.send_message(json.dumps({"type": "conversation.item.added", "item": {"id": ECHO, "type": ECHO}}))
        await up.send_message(ECHO)  # not JSON
        await up.aclose(4001, ECHO[:120])
        frames, close = await _until_closed(browser)
    codes = [json.loads(f)["code"] for f in frames if isinstance(f, str) and '"Error"' in f]
    assert len(codes) >= 3
    assert close.startswith("4001 Incorrect API key provided")
    assert not leaked(_seen(frames, close))
    assert not leaked(log_text(redacted_logs))


async def test_a_client_close_reason_with_a_token_reaches_the_upstream_redacted(
    redacted_logs: pytest.LogCaptureFixture,
) -> None:
    for route in ("openai", "agent"):
        decision = _decision(route)
        assert isinstance(decision.target, UpstreamTarget)
        async with running_session(decision.core, target=decision.target) as (browser, upstream, _session, _done):
            up = await upstream.next()
            await browser.aclose(4000, f"token {CLIENT_TOKEN}")
            frames, close = await _until_closed(up)
        assert close.startswith("4000 token")
        assert not leaked(_seen(frames, close))
    assert not leaked(log_text(redacted_logs))


@pytest.mark.parametrize("service", ["agent", "transcription"])
async def test_a_deepgram_upstream_echoing_the_key_in_every_text_frame_leaks_it_nowhere(
    redacted_logs: pytest.LogCaptureFixture, service: str
) -> None:
    decision = _decision(service)
    assert isinstance(decision.target, UpstreamTarget)
    async with running_session(decision.core, target=decision.target) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await up.send_message(json.dumps({"type": "Error", "description": ECHO, "code": DEEPGRAM_KEY}))
        await up.send_message(json.dumps({"type": "ConversationText", "role": "assistant", "content": ECHO}))
        await up.send_message(json.dumps({"type": "Welcome", "request_id": DEEPGRAM_KEY[3:30]}))
        await up.send_message(ECHO)
        await up.send_message(b"\x00\x01audio")
        await up.aclose(1011, f"DATA-0000 key {DEEPGRAM_KEY}")
        frames, close = await _until_closed(browser)
    assert len(frames) == 5
    assert frames[4] == b"\x00\x01audio"
    assert json.loads(frames[0])["type"] == "Error"
    assert close.startswith("1011 DATA-0000 key")
    assert not leaked(_seen(frames, close))
    assert not leaked(log_text(redacted_logs))


class RefusingUpstream:
    """Refuses the upgrade with 401, echoing the key in a header and in the body."""

    async def connector(self, target: UpstreamTarget, limits: Limits) -> WebSocket:
        ours, theirs = trio.testing.memory_stream_pair()
        body = ECHO.encode()
        answer = (
            f"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer {OPENAI_KEY}\r\nX-Echo: {DEEPGRAM_KEY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

        await theirs.send_all(answer)  # buffered: read once the request is out
        return await connect(ours, "upstream.test", target.url, max_message_size=1 << 20)


@pytest.mark.parametrize("route", ["openai", "agent"])
async def test_a_refused_upstream_handshake_echoing_the_key_leaks_it_nowhere(
    redacted_logs: pytest.LogCaptureFixture, route: str
) -> None:
    decision = _decision(route)
    assert isinstance(decision.target, UpstreamTarget)
    async with running_session(
        decision.core, target=decision.target, upstream=FakeUpstream(), connector=RefusingUpstream().connector
    ) as (browser, _upstream, session, _done):
        frames, close = await _until_closed(browser)
    assert [json.loads(f)["code"] for f in frames if isinstance(f, str)] == ["upstream_auth_failed"]
    assert session.stats.upstream_failures == {"upstream_auth_failed": 1}
    assert not leaked(_seen(frames, close))
    assert not leaked(log_text(redacted_logs))
