"""The canary's rules (sans-IO) and its shell against scripted component-protocol servers on loopback."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from proxy.canary import (
    CanaryCheck,
    CanaryFailure,
    CanaryOptions,
    Outcome,
    Step,
    parse,
    run,
    shown_url,
    with_token,
)

APPLIED = '{"type":"SettingsApplied"}'
ASSISTANT = json.dumps({"type": "ConversationText", "role": "assistant", "content": "Hello there."})
USER = json.dumps({"type": "ConversationText", "role": "user", "content": "hi"})
AUDIO = b"\x01\x02" * 240
AUDIO_DONE = '{"type":"AgentAudioDone"}'


def ready_check() -> CanaryCheck:
    check = CanaryCheck()
    check.connected(0.0, 0.01)
    check.settings_sent(0.01)
    assert check.received(APPLIED, 0.03) is not None
    check.inject_sent(0.04)
    return check


@pytest.mark.parametrize(
    "reply",
    [
        [USER, ASSISTANT, AUDIO, AUDIO, AUDIO_DONE],  # the Deepgram agent's order
        [USER, '{"type":"AgentStartedSpeaking"}', AUDIO, '{"type":"AgentDone"}', AUDIO_DONE, ASSISTANT],  # /openai
    ],
    ids=["text-first", "audio-first"],
)
def test_a_reply_in_either_documented_order_passes_with_latencies_from_the_inject(reply: list[str | bytes]) -> None:
    check = ready_check()
    done = [d for i, m in enumerate(reply) if (d := check.received(m, 1.04 + i)) is not None]
    assert check.finished
    assert {d.step for d in done} == {Step.CONVERSATION_TEXT, Step.AGENT_AUDIO, Step.AGENT_AUDIO_DONE}
    assert check.done[Step.SETTINGS_APPLIED].latency_s == pytest.approx(0.02)
    assert check.done[Step.AGENT_AUDIO_DONE].latency_s == pytest.approx(1.0 + reply.index(AUDIO_DONE))


def test_a_binary_audio_frame_that_starts_with_a_brace_is_audio() -> None:
    check = ready_check()
    frame = b"{\x00" + AUDIO  # a first sample of 123: its low byte is "{"
    done = check.received(frame, 1.0)
    assert done is not None
    assert done.step is Step.AGENT_AUDIO
    assert done.detail == f"first frame {len(frame)} bytes"


def test_messages_the_contract_does_not_name_and_a_greeting_are_allowed() -> None:
    check = CanaryCheck()
    check.connected(0.0, 0.0)
    check.settings_sent(0.0)
    for message in ('{"type":"Welcome","request_id":"x"}', APPLIED, '{"type":"AgentAudioDone"}', APPLIED):
        check.received(message, 0.1)
    check.inject_sent(0.2)
    assert check.received('{"type":"History","role":"user"}', 0.3) is None
    assert check.pending() is Step.CONVERSATION_TEXT


@pytest.mark.parametrize(
    ("before_inject", "message", "step", "outcome"),
    [
        (True, AUDIO, Step.SETTINGS_APPLIED, Outcome.WRONG_ORDER),
        (True, ASSISTANT, Step.SETTINGS_APPLIED, Outcome.WRONG_ORDER),
        (False, AUDIO_DONE, Step.AGENT_AUDIO, Outcome.WRONG_ORDER),
        (False, "not json", Step.CONVERSATION_TEXT, Outcome.WRONG_ORDER),
        (
            False,
            '{"type":"Error","code":"upstream_timeout","description":"x"}',
            Step.CONVERSATION_TEXT,
            Outcome.ERROR_MESSAGE,
        ),
        (
            True,
            '{"type":"Error","code":"upstream_auth_failed","description":"x"}',
            Step.SETTINGS_APPLIED,
            Outcome.ERROR_MESSAGE,
        ),
    ],
)
def test_a_broken_conversation_names_the_step_and_the_outcome(
    before_inject: bool, message: str | bytes, step: Step, outcome: Outcome
) -> None:
    check = CanaryCheck()
    check.connected(0.0, 0.0)
    check.settings_sent(0.0)
    if not before_inject:
        check.received(APPLIED, 0.1)
        check.inject_sent(0.1)
    with pytest.raises(CanaryFailure) as failed:
        check.received(message, 0.2)
    assert (failed.value.step, failed.value.outcome) == (step, outcome)


def test_an_error_message_is_quoted_with_its_code() -> None:
    check = ready_check()
    with pytest.raises(CanaryFailure, match="'upstream_timeout': The upstream did not answer"):
        check.received('{"type":"Error","code":"upstream_timeout","description":"The upstream did not answer"}', 1)


def test_the_token_goes_in_the_query_and_is_never_shown() -> None:
    url = with_token("wss://user:pw@voice.example.com:8443/openai?token=old&x=1", "s3cret")
    assert url.endswith("x=1&token=s3cret")
    assert "old" not in url
    assert shown_url(url) == "wss://voice.example.com:8443/openai"
    assert with_token("ws://h/openai", None) == "ws://h/openai"


def test_the_token_may_come_from_the_environment_and_the_flag_wins() -> None:
    assert parse(["--url", "ws://h/openai"], {"PROXY_CANARY_TOKEN": "env"}).token == "env"
    assert parse(["--url", "ws://h/openai", "--token", "flag"], {"PROXY_CANARY_TOKEN": "env"}).token == "flag"
    assert parse(["--url", "ws://h/openai"], {}).token is None


@pytest.mark.parametrize(
    "argv", [["--url", "http://h/openai"], ["--url", "ws:///openai"], ["--url", "ws://h/x", "--timeout", "0"], []]
)
def test_wrong_options_are_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(argv, {})
    assert exited.value.code == Outcome.USAGE
    assert "error:" in capsys.readouterr().err


# -- the shell, against scripted servers on loopback --------------------------------------------------------------

Script = Callable[[WebSocketConnection], Awaitable[None]]


@asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[str]:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with suppress(ConnectionClosed):
            await script(ws)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, ssl_context=None))
        yield f"ws://127.0.0.1:{server.port}/openai"
        nursery.cancel_scope.cancel()


async def run_against(script: Script, timeout_s: float = 10.0) -> tuple[Outcome, str, str]:
    out, err = io.StringIO(), io.StringIO()
    async with scripted_server(script) as url:
        outcome = await run(CanaryOptions(url=url, timeout_s=timeout_s), out, err)
    return outcome, out.getvalue(), err.getvalue()


async def test_a_complete_conversation_passes_and_prints_every_step() -> None:
    async def script(ws: WebSocketConnection) -> None:
        assert json.loads(await ws.get_message())["type"] == "Settings"
        await ws.send_message(APPLIED)
        assert json.loads(await ws.get_message())["type"] == "InjectUserMessage"
        for message in (USER, ASSISTANT, AUDIO, AUDIO_DONE):
            await ws.send_message(message)
        await ws.get_message()

    outcome, out, err = await run_against(script)
    assert outcome is Outcome.PASSED, err
    steps = [line.split()[1] for line in out.splitlines() if line.startswith("ok")]
    assert steps == ["connect", "SettingsApplied", "ConversationText", "agent", "AgentAudioDone"]
    assert '"Hello there."' in out
    assert out.splitlines()[-1].startswith("passed in")


async def test_a_close_before_the_reply_names_the_step_and_the_close_code() -> None:
    async def script(ws: WebSocketConnection) -> None:
        await ws.get_message()
        await ws.send_message(APPLIED)
        await ws.get_message()
        await ws.aclose(1011, "Upstream unavailable")

    outcome, _out, err = await run_against(script)
    assert outcome is Outcome.CLOSED
    assert err.strip() == "FAIL  ConversationText: the proxy closed the connection with 1011 (Upstream unavailable)"


async def test_a_proxy_that_never_applies_the_settings_times_out_at_that_step() -> None:
    async def script(ws: WebSocketConnection) -> None:
        await ws.get_message()
        await trio.sleep_forever()

    outcome, _out, err = await run_against(script, timeout_s=0.2)
    assert outcome is Outcome.TIMEOUT
    assert err.strip() == "FAIL  SettingsApplied: no answer within 0.2 s"
