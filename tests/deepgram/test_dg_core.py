"""The pass-through core and its policy without sockets: relay order, the pre-open queue, closes, the synthetic
AgentAudioDone rule, query filtering, credentials and subprotocol echo, and the route decision."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config import Config, Upstream, UpstreamSource
from proxy.core import Close, FailureKind, Frame, UpstreamFailure
from proxy.deepgram.passthrough import Passthrough, is_assistant_text
from proxy.deepgram.policy import (
    Service,
    echo_subprotocol,
    filter_params,
    key_is_usable,
    refused_params,
    select_service,
    upstream_credentials,
    upstream_url,
)
from proxy.deepgram.route import deepgram_route
from proxy.routes import Reject, RouteDecision, RouteRequest
from proxy.session import UpstreamTarget

ASSISTANT = '{"type":"ConversationText","role":"assistant","content":"Hi"}'
USER = '{"type":"ConversationText","role":"user","content":"Hi"}'
AUDIO_DONE = '{"type":"AgentAudioDone"}'
KEY = "k" * 40


def core(
    service: Service = Service.AGENT, *, synthetic: bool = False, frames: int = 8, size: int = 1000
) -> Passthrough:
    return Passthrough(service, max_pending_frames=frames, max_pending_bytes=size, synthetic_audio_done=synthetic)


def take(items: list[Frame]) -> list[Frame]:
    out = list(items)
    items.clear()
    return out


# -- relay and the pre-open queue ----------------------------------------------------------------------------------


def test_client_frames_wait_for_the_upstream_and_flush_in_order() -> None:
    c = core()
    c.client_message("a", 0)
    c.client_message(b"b", 0)
    assert c.to_upstream == []
    c.upstream_opened(1)
    c.client_message("c", 1)
    assert c.to_upstream == ["a", b"b", "c"]
    assert c.fatal() is None


@pytest.mark.parametrize(("frames", "size", "sent"), [(2, 1000, ["a", "b", "c"]), (8, 5, ["abc", "def"])])
def test_the_pre_open_queue_is_bounded_in_frames_and_bytes(frames: int, size: int, sent: list[str]) -> None:
    c = core(frames=frames, size=size)
    for frame in sent:
        c.client_message(frame, 0)
    assert c.fatal() == Close(1008, "Too many messages before upstream opened")
    assert [json.loads(f)["code"] for f in take(c.to_client)] == ["client_queue_overflow"]
    c.upstream_opened(1)
    assert c.to_upstream == []  # nothing of an overflowing client goes upstream


def test_queue_overflow_on_listen_sends_no_error_message() -> None:
    c = core(Service.TRANSCRIPTION, frames=1)
    c.client_message(b"1", 0)
    c.client_message(b"2", 0)
    assert c.fatal() == Close(1008, "Too many messages before upstream opened")
    assert c.to_client == []


def test_frames_queued_when_the_client_leaves_are_never_flushed() -> None:
    c = core()
    c.client_message("Settings", 0)
    assert c.client_closed(1000, "Closed by client", 1) == Close(1000, "Closed by client")
    c.upstream_opened(2)
    assert c.to_upstream == []


@given(st.lists(st.tuples(st.booleans(), st.one_of(st.text(max_size=8), st.binary(max_size=8))), max_size=30))
def test_frames_keep_order_and_opcode_in_both_directions(events: list[tuple[bool, Frame]]) -> None:
    c = core(frames=1000, size=10**6)
    opened_at = len(events) // 2
    for i, (from_client, frame) in enumerate(events):
        if i == opened_at:
            c.upstream_opened(0)
        if from_client:
            c.client_message(frame, 0)
        else:
            c.upstream_message(frame, 0)
    if opened_at >= len(events):
        c.upstream_opened(0)
    assert c.to_upstream == [f for from_client, f in events if from_client]
    assert c.to_client == [f for from_client, f in events if not from_client]
    assert all(type(a) is type(b) for a, b in zip(c.to_client, [f for fc, f in events if not fc], strict=True))


# -- ends ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "close"),
    [
        (4001, "bye", Close(4001, "bye")),
        (1005, None, Close(1000, "")),
        (1006, None, Close(1011, "")),
        (None, None, Close(1011, "")),
        (1000, "x" * 200, Close(1000, "x" * 123)),
    ],
)
def test_closes_are_relayed_mapped_both_ways(code: int | None, reason: str | None, close: Close) -> None:
    assert core().upstream_closed(code, reason, 0) == close
    assert core().client_closed(code, reason, 0) == close


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (UpstreamFailure(FailureKind.AUTH, 401), "upstream_auth_failed"),
        (UpstreamFailure(FailureKind.AUTH, 403), "upstream_auth_failed"),
        (UpstreamFailure(FailureKind.TIMEOUT), "upstream_timeout"),
        (UpstreamFailure(FailureKind.CONNECT), "upstream_connect_failed"),
        (UpstreamFailure(FailureKind.CONFIG), "proxy_configuration_error"),
    ],
)
def test_agent_upstream_failure_is_an_error_then_1011(failure: UpstreamFailure, code: str) -> None:
    c = core()
    assert c.upstream_failed(failure, 0) == Close(1011, "Upstream unavailable")
    (frame,) = c.to_client
    assert isinstance(frame, str)
    assert json.loads(frame)["code"] == code


def test_listen_upstream_failure_is_only_a_close() -> None:
    c = core(Service.TRANSCRIPTION)
    assert c.upstream_failed(UpstreamFailure(FailureKind.AUTH, 401), 0) == Close(1011, "Upstream unavailable")
    assert c.to_client == []


def test_the_core_has_no_timers() -> None:
    c = core()
    assert c.next_deadline() is None
    c.timer_fired(5)
    assert (c.to_client, c.to_upstream) == ([], [])


# -- synthetic AgentAudioDone --------------------------------------------------------------------------------------


def relay(c: Passthrough, frames: list[Frame]) -> list[Frame]:
    for frame in frames:
        c.upstream_message(frame, 0)
    return take(c.to_client)


def test_synthetic_audio_done_after_the_first_assistant_text_that_follows_audio() -> None:
    frames: list[Frame] = [b"pcm", USER, ASSISTANT, b"pcm", ASSISTANT]
    assert relay(core(synthetic=True), frames) == [b"pcm", USER, ASSISTANT, AUDIO_DONE, b"pcm", ASSISTANT]


def test_synthetic_audio_done_is_settled_by_the_first_assistant_text_even_without_audio() -> None:
    frames: list[Frame] = [ASSISTANT, b"pcm", ASSISTANT]
    assert relay(core(synthetic=True), frames) == frames


def test_synthetic_audio_done_ignores_binary_json_and_applies_to_listen_too() -> None:
    frames: list[Frame] = [ASSISTANT.encode(), b"pcm", ASSISTANT]
    assert relay(core(Service.TRANSCRIPTION, synthetic=True), frames) == [*frames, AUDIO_DONE]


def test_synthetic_audio_done_is_off_by_default() -> None:
    frames: list[Frame] = [b"pcm", ASSISTANT]
    assert relay(core(), frames) == frames


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (ASSISTANT, True),
        ('{"role":"assistant","type":"ConversationText"}', True),
        (USER, False),
        ('["ConversationText"]', False),
        ('{"type":"ConversationText","role":"assistant"', False),
        ('{"type":"ConversationText","role":["assistant"]}', False),
        ("ConversationText", False),
        ('{"type":"AgentThinking","content":"ConversationText assistant"}', False),
    ],
)
def test_assistant_text_detection(frame: str, expected: bool) -> None:
    assert is_assistant_text(frame) is expected


# -- policy --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "fixed", "service"),
    [
        ([], None, Service.AGENT),
        ([("service", "transcription")], None, Service.TRANSCRIPTION),
        ([("service", "transcription"), ("service", "agent")], None, Service.TRANSCRIPTION),
        ([("service", "agent"), ("service", "transcription")], None, Service.AGENT),
        ([("service", "Transcription")], None, Service.AGENT),
        ([("service", "transcription")], "agent", Service.AGENT),
        ([], "transcription", Service.TRANSCRIPTION),
    ],
)
def test_service_selection(params: list[tuple[str, str]], fixed: str | None, service: Service) -> None:
    assert select_service(params, fixed) is service


def test_filter_keeps_allowed_params_in_order_and_drops_the_rest() -> None:
    params = [("keyterm", "a"), ("token", "t"), ("service", "x"), ("keyterm", "b"), ("tag", "t"), ("model", "m")]
    decision = filter_params(params, ("keyterm", "model", "token", "service"), configured=("model",))
    assert decision.forwarded == (("keyterm", "a"), ("keyterm", "b"))
    assert decision.dropped == ("token", "service", "tag", "model")


def test_callback_names_are_refused_and_never_forwarded_even_if_allowed() -> None:
    params = [("callback", "u"), ("callback_method", "post"), ("CALLBACKx", ""), ("model", "m")]
    assert refused_params(params) == ["callback", "callback_method", "CALLBACKx"]
    assert filter_params(params, ("callback", "model")).forwarded == (("model", "m"),)


@pytest.mark.parametrize(
    ("base", "params", "url"),
    [
        ("wss://h/v1/listen", [], "wss://h/v1/listen"),
        ("wss://h/v1/listen?a=1#frag", [("b", "2")], "wss://h/v1/listen?a=1&b=2"),
        ("ws://h:81/p", [("k", "a b&c=d")], "ws://h:81/p?k=a+b%26c%3Dd"),
    ],
)
def test_upstream_url(base: str, params: list[tuple[str, str]], url: str) -> None:
    assert upstream_url(base, params) == url


def test_credentials_per_mode() -> None:
    assert upstream_credentials(KEY, "header") == (((b"Authorization", f"Token {KEY}".encode()),), ())
    assert upstream_credentials(KEY, "subprotocol") == ((), ("token", KEY))
    assert upstream_credentials(None, "header") == ((), ())


@pytest.mark.parametrize(
    ("key", "mode", "usable"),
    [(KEY, "header", True), (KEY, "subprotocol", True), ("a\nb", "header", False), ("a b", "subprotocol", False)],
)
def test_key_usability(key: str, mode: str, usable: bool) -> None:
    assert key_is_usable(key, mode) is usable


@pytest.mark.parametrize(
    ("offered", "echoed"),
    [
        ([], None),
        (["json"], "json"),
        (["token", "secret"], "token"),
        (["Bearer", "secret", "json"], "Bearer"),
        (["secret-after-token"], "secret-after-token"),
        ([KEY], None),
        ([KEY, "json"], "json"),
        (["x" * 33, "json"], "json"),
        (["bad value", "json"], "json"),
    ],
)
def test_subprotocol_echo(offered: list[str], echoed: str | None) -> None:
    assert echo_subprotocol(offered, (KEY, None)) == echoed


@given(st.lists(st.text(min_size=1, max_size=50), max_size=5))
def test_echo_never_returns_a_key_or_a_value_after_a_scheme(offered: list[str]) -> None:
    keys = [entry for entry in offered if len(entry) > 3][:1]
    echoed = echo_subprotocol(offered, keys)
    if echoed is not None:
        assert echoed in offered
        assert echoed not in keys
        first = offered.index(echoed)
        assert first == 0 or offered[first - 1].lower() not in ("token", "bearer")


# -- the route -----------------------------------------------------------------------------------------------------


def config(**overrides: object) -> Config:
    agent = Upstream("wss://agent.example/v1/agent/converse", KEY, UpstreamSource.PROVIDER)
    listen = Upstream("wss://api.example/v1/listen", KEY, UpstreamSource.PROVIDER)
    values: dict[str, object] = {"deepgram_agent": agent, "deepgram_listen": listen, **overrides}
    return Config(**values)  # type: ignore[arg-type]


def decide(query: str, service: str | None = None, cfg: Config | None = None, **request: object) -> RouteDecision:
    decision = deepgram_route(cfg or config(), RouteRequest("/deepgram-proxy", query, **request), service)  # type: ignore[arg-type]
    assert isinstance(decision, RouteDecision)
    return decision


def test_route_builds_the_agent_target() -> None:
    decision = decide("service=agent&traceId=t&token=x&model=m")
    assert isinstance(decision.target, UpstreamTarget)
    assert decision.target.url == "wss://agent.example/v1/agent/converse"
    assert decision.target.headers == ((b"Authorization", f"Token {KEY}".encode()),)
    assert decision.target.subprotocols == ()
    assert isinstance(decision.core, Passthrough)
    assert KEY not in repr(decision.target)


def test_route_builds_the_listen_target() -> None:
    decision = decide("service=transcription&model=nova-3&keyterm=a&keyterm=b&tag=x")
    assert isinstance(decision.target, UpstreamTarget)
    assert decision.target.url == "wss://api.example/v1/listen?model=nova-3&keyterm=a&keyterm=b"


def test_route_refuses_callbacks() -> None:
    result = deepgram_route(config(), RouteRequest("/deepgram-proxy", "service=transcription&callback=x"), None)
    assert isinstance(result, Reject)
    assert result.status == 400


def test_route_without_key_sends_no_credentials() -> None:
    cfg = config(deepgram_agent=Upstream("ws://127.0.0.1:1/x", None, UpstreamSource.URL))
    decision = decide("", cfg=cfg)
    assert isinstance(decision.target, UpstreamTarget)
    assert (decision.target.headers, decision.target.subprotocols) == ((), ())


def test_misconfigured_route_is_a_configuration_failure_that_still_echoes_a_subprotocol() -> None:
    cfg = config(deepgram_agent=Upstream("wss://agent.example/v1/agent/converse", None, UpstreamSource.MISCONFIGURED))
    decision = decide("", cfg=cfg, subprotocols=("token", "client-key"))
    assert decision.target == UpstreamFailure(FailureKind.CONFIG)
    assert decision.subprotocol == "token"
