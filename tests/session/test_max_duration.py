"""The maximum session duration: settable, validated, and ended by each route's core in its own protocol.

/openai and the Deepgram Voice Agent send ``Error session_max_duration`` and close 1000; Deepgram Listen has no
``Error`` message, so its client gets only the close, with a code and a reason.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from proxy.cli import _parser, build_config, main
from proxy.config import ConfigError, Limits, from_env
from proxy.core import Close, SessionCore
from proxy.deepgram.passthrough import Passthrough
from proxy.deepgram.policy import Service
from proxy.openai.translator import Translator
from tests.session.test_shell import closed_with
from tests.wsmem import running_session

EXPIRED = (Close(1000, "Maximum session duration"), Close(1000))


def passthrough(service: Service) -> Passthrough:
    return Passthrough(service, max_pending_frames=8, max_pending_bytes=1000)


def test_the_default_is_59_minutes() -> None:
    assert Limits().max_session_s == 3540
    assert from_env({}).limits.max_session_s == 3540


def test_the_environment_and_the_flag_set_it_and_the_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_env({"PROXY_MAX_SESSION_DURATION_S": "600"}).limits.max_session_s == 600
    monkeypatch.setenv("PROXY_MAX_SESSION_DURATION_S", "600")
    assert build_config(_parser().parse_args(["--max-session-duration", "90.5"])).limits.max_session_s == 90.5


@pytest.mark.parametrize("value", ["0", "-5", "inf", "nan", "soon"])
def test_a_bad_value_is_one_clear_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="PROXY_MAX_SESSION_DURATION_S"):
        from_env({"PROXY_MAX_SESSION_DURATION_S": value})
    assert main(["--max-session-duration", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error: --max-session-duration")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("core", "errors"),
    [
        (lambda: Translator(), ["session_max_duration"]),
        (lambda: passthrough(Service.AGENT), ["session_max_duration"]),
        (lambda: passthrough(Service.TRANSCRIPTION), []),
    ],
    ids=["openai", "deepgram-agent", "deepgram-listen"],
)
def test_each_core_ends_an_expired_session_in_its_own_protocol(core: object, errors: list[str]) -> None:
    made = core()  # type: ignore[operator]
    made.upstream_opened(0.0)
    assert made.session_expired(3540.0) == EXPIRED
    sent = [json.loads(frame) for frame in made.to_client]
    assert [message["code"] for message in sent if message["type"] == "Error"] == errors
    assert len(sent) == len(errors)
    assert made.to_upstream == []


@pytest.mark.parametrize("service", [Service.AGENT, Service.TRANSCRIPTION])
async def test_the_shell_closes_a_deepgram_session_at_the_limit(
    service: Service, autojump_clock: trio.testing.MockClock
) -> None:
    core: SessionCore = passthrough(service)
    start = trio.current_time()
    async with running_session(core, limits=Limits(ping_interval_s=0, max_session_s=120.0)) as (
        browser,
        upstream,
        _session,
        _done,
    ):
        up = await upstream.next()
        if service is Service.AGENT:
            error = json.loads(await browser.get_message())
            assert error == {
                "type": "Error",
                "description": "The session reached the proxy's maximum duration.",
                "code": "session_max_duration",
            }
        assert await closed_with(browser) == (1000, "Maximum session duration")
        assert trio.current_time() - start == pytest.approx(120.0)
        assert (await closed_with(up))[0] == 1000


async def test_a_listen_client_receives_no_message_before_the_close(autojump_clock: trio.testing.MockClock) -> None:
    async with running_session(
        passthrough(Service.TRANSCRIPTION), limits=Limits(ping_interval_s=0, max_session_s=60.0)
    ) as (browser, upstream, _session, _done):
        await upstream.next()
        received: list[object] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                received.append(await browser.get_message())
        assert received == []
        reason = closed.value.reason
        assert (reason.code, reason.reason) == (1000, "Maximum session duration")


async def test_the_shell_closes_an_openai_session_at_the_limit(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    async with running_session(Translator(), limits=Limits(ping_interval_s=0, max_session_s=90.0)) as (
        browser,
        upstream,
        _session,
        _done,
    ):
        up = await upstream.next()
        error = json.loads(await browser.get_message())
        assert error["code"] == "session_max_duration"
        assert trio.current_time() - start == pytest.approx(90.0)
        assert await closed_with(browser) == (1000, "Maximum session duration")
        assert (await closed_with(up))[0] == 1000
