"""The Deepgram pass-through end to end on loopback: a real ProxyServer between a client and a scripted upstream.

Everything asserted here is what a peer sees on the wire: the upstream handshake (path, query, headers,
subprotocols), frames with their opcode, close codes and reasons, HTTP refusals, and open TCP connections.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import replace
from urllib.parse import quote

import pytest
import trio
from wsproto.frame_protocol import CloseReason

from proxy.config import Limits, Upstream, UpstreamSource, from_env
from proxy.core import Frame
from proxy.server import ProxyServer
from tests.deepgram.dg_helpers import (
    FAKE_KEY,
    ScriptedUpstream,
    UpstreamConnection,
    client_frames_seen,
    connect,
    http_get,
    proxy_config,
    refusal,
    running_proxy,
    scripted_upstream,
)

SETTINGS = '{"type":"Settings","audio":{"input":{"encoding":"linear16","sample_rate":16000}},"agent":{}}'
ASSISTANT_TEXT = '{"type":"ConversationText","role":"assistant","content":"Hello there."}'
AUDIO_DONE = '{"type":"AgentAudioDone"}'


def error_of(frame: Frame) -> tuple[str, str]:
    assert isinstance(frame, str)
    message = json.loads(frame)
    assert message["type"] == "Error"
    assert set(message) == {"type", "description", "code"}
    return message["code"], message["description"]


async def one_exchange(port: int, path: str, up: ScriptedUpstream) -> None:
    """Connect, send Settings, wait until the upstream has it (or refused the handshake), close normally."""
    count = len(up.connections)
    async with connect(port, path) as client:
        await client.send(SETTINGS)
        if up.reject is not None:
            await client.receive_until_closed()
            return
        conn = await up.wait_connection(count)
        await conn.wait_frames(1)
        await client.ws.aclose(1000, "Closed by client")


# -- upstream URL, path, query and credentials -------------------------------------------------------------------


async def test_agent_upstream_gets_its_path_and_the_key_as_a_token_header() -> None:
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        await one_exchange(port, "/deepgram-proxy?traceId=trace-1&token=client-token&service=agent", up)
        conn = await up.wait_connection()
        await conn.wait_closed()
    assert conn.path == "/v1/agent/converse"
    assert conn.query == ""  # service, token and traceId never reach the agent
    assert conn.header("authorization") == f"Token {FAKE_KEY}"
    assert conn.subprotocols == []
    assert conn.frames == [SETTINGS]


async def test_subprotocol_mode_sends_the_key_as_token_subprotocol_and_no_header() -> None:
    async with scripted_upstream() as up, running_proxy(proxy_config(up, deepgram_auth="subprotocol")) as (_, port):
        await one_exchange(port, "/deepgram-proxy?service=agent", up)
        conn = await up.wait_connection()
        await conn.wait_closed()
    assert conn.subprotocols == ["token", FAKE_KEY]
    assert conn.header("authorization") is None
    assert conn.frames == [SETTINGS]


async def test_configured_url_keeps_its_own_path_and_query() -> None:
    async with scripted_upstream() as up:
        config = proxy_config(up, listen_path="/custom/listen?mip_opt_out=true&model=nova-3")
        async with running_proxy(config) as (_, port):
            await one_exchange(port, "/deepgram-proxy?service=transcription&model=other&language=en&keyterm=a", up)
            conn = await up.wait_connection()
    assert conn.path == "/custom/listen"
    # The operator's model wins: the client's conflicting value is dropped, not appended.
    assert conn.params() == [("mip_opt_out", "true"), ("model", "nova-3"), ("language", "en"), ("keyterm", "a")]


async def test_listen_gets_only_allow_listed_params_in_order_with_repeats() -> None:
    query = (
        "service=transcription&model=nova-3&keyterm=a&token=t1&keyterm=b&traceId=x&tag=mine&extra=k:v"
        "&sample_rate=16000&encoding=linear16&token=t2&mip_opt_out=true&keyterm=c"
    )
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        await one_exchange(port, f"/deepgram-proxy?{query}", up)
        conn = await up.wait_connection()
    assert conn.path == "/v1/listen"
    assert conn.params() == [
        ("model", "nova-3"),
        ("keyterm", "a"),
        ("keyterm", "b"),
        ("sample_rate", "16000"),
        ("encoding", "linear16"),
        ("keyterm", "c"),
    ]
    assert conn.header("authorization") == f"Token {FAKE_KEY}"


async def test_listen_allow_list_comes_from_config() -> None:
    async with scripted_upstream() as up:
        config = proxy_config(up, deepgram_listen_params=("model",))
        async with running_proxy(config) as (_, port):
            await one_exchange(port, "/deepgram-proxy?service=transcription&model=nova-3&language=en", up)
            conn = await up.wait_connection()
    assert conn.params() == [("model", "nova-3")]


async def test_parameter_values_are_re_encoded_and_cannot_inject_parameters() -> None:
    value = "a b&model=evil#frag%zz é"
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        await one_exchange(port, f"/deepgram-proxy?service=transcription&keyterm={quote(value)}&keyterm=%ZZ", up)
        conn = await up.wait_connection()
    assert conn.params() == [("keyterm", value), ("keyterm", "%ZZ")]


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("service=transcription&service=agent", "/v1/listen"),
        ("service=agent&service=transcription", "/v1/agent/converse"),
        ("service=nonsense", "/v1/agent/converse"),
        ("", "/v1/agent/converse"),
    ],
)
async def test_the_first_service_value_selects_the_upstream(query: str, path: str) -> None:
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        await one_exchange(port, f"/deepgram-proxy?{query}", up)
        conn = await up.wait_connection()
    assert conn.path == path


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        ("/v1/agent/converse?service=transcription", "/v1/agent/converse"),
        ("/v1/listen?service=agent&model=nova-3", "/v1/listen"),
        ("/deepgram-proxy/v1/agent/converse?service=transcription", "/v1/agent/converse"),
        ("/deepgram-proxy/v1/listen?service=agent&model=nova-3", "/v1/listen"),
    ],
)
async def test_path_aliases_fix_the_service(path: str, upstream_path: str) -> None:
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        await one_exchange(port, path, up)
        conn = await up.wait_connection()
    assert conn.path == upstream_path
    assert all(name != "service" for name, _ in conn.params())


async def test_repeated_token_and_service_never_crash_and_the_server_stays_up() -> None:
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        await one_exchange(port, "/deepgram-proxy?token=a&token=b&service=agent&service=agent&token=", up)
        await one_exchange(port, "/deepgram-proxy?token&service&=&&", up)
        status, _ = await http_get(port, "/health")
        second = await up.wait_connection(1)
    assert status == 200
    assert up.connections[0].query == ""
    assert second.query == ""
    assert up.connections[0].frames == [SETTINGS]


@pytest.mark.parametrize(
    "query",
    [
        "service=transcription&callback=https://attacker.example/hook",
        "service=transcription&model=nova-3&callback_method=put",
        "service=agent&CallbackUrl=x",
        "callback=",
    ],
)
async def test_callback_parameters_are_refused_with_400(query: str) -> None:
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        refused = await refusal(port, f"/deepgram-proxy?{query}")
        assert refused.status_code == 400
        assert b"callback" in (refused.body or b"")
        assert up.tcp_connections == 0


@pytest.mark.parametrize(
    "path",
    [
        "/deepgram-proxy/transcription",
        "/deepgram-proxy/",
        "/deepgram",
        "/v1/agent",
        "/deepgram-proxy/v1/agent",
        "/openai/v1/listen",
    ],
)
async def test_unknown_paths_are_refused_with_404(path: str) -> None:
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        refused = await refusal(port, f"{path}?service=agent")
        assert refused.status_code == 404
        assert up.tcp_connections == 0


async def test_client_credentials_are_never_forwarded() -> None:
    client_secret = "client-secret-0123456789"
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        async with connect(
            port,
            f"/deepgram-proxy?service=agent&token={client_secret}",
            subprotocols=["token", client_secret],
            headers=[(b"Authorization", f"Token {client_secret}".encode()), (b"X-Custom", b"1")],
        ) as client:
            assert client.subprotocol == "token"  # the name is echoed, the value never
            await client.send(SETTINGS)
            await client.ws.aclose()
        conn = await up.wait_connection()
    assert conn.header("authorization") == f"Token {FAKE_KEY}"
    assert conn.subprotocols == []
    assert conn.header("x-custom") is None
    assert all(client_secret not in value for _, value in conn.headers)
    assert client_secret not in conn.query


@pytest.mark.parametrize(
    ("offered", "echoed"),
    [
        (["graphql-ws"], "graphql-ws"),
        (["token", "some-key-value"], "token"),
        ([FAKE_KEY, "json"], "json"),
    ],
)
async def test_the_first_offered_subprotocol_is_echoed_unless_it_is_a_credential(
    offered: list[str], echoed: str
) -> None:
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        async with connect(port, "/deepgram-proxy?service=agent", subprotocols=offered) as client:
            assert client.subprotocol == echoed
            await client.ws.aclose()


# -- relay ---------------------------------------------------------------------------------------------------------


async def test_frames_sent_before_the_upstream_opens_are_flushed_in_order() -> None:
    hold = trio.Event()
    early: list[Frame] = [SETTINGS, b"\x01\x00" * 100, '{"type":"InjectUserMessage","content":"hi"}', b"", ""]
    async with scripted_upstream(hold=hold) as up, running_proxy(proxy_config(up)) as (_, port):
        async with connect(port) as client:
            for frame in early:
                await client.send(frame)
            await up.wait_connection()  # the upstream has the handshake request but has not answered
            with trio.fail_after(10):
                while await client_frames_seen(port) < len(early):  # noqa: ASYNC110 - polls over HTTP
                    await trio.sleep(0.01)
            hold.set()
            await client.send('{"type":"KeepAlive"}')
            conn = up.connections[0]
            await conn.wait_frames(len(early) + 1)
            await client.ws.aclose()
    assert conn.frames == [*early, '{"type":"KeepAlive"}']
    assert [type(f) for f in conn.frames] == [str, bytes, str, bytes, str, str]


async def test_keepalive_is_forwarded_unchanged() -> None:
    keepalives = ['{"type":"KeepAlive"}', '{ "type" : "KeepAlive" }', '{"type":"KeepAlive","extra":1}']
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        async with connect(port) as client:
            conn = await up.wait_connection()
            for frame in keepalives:
                await client.send(frame)
            await conn.wait_frames(3)
            await client.ws.aclose()
    assert conn.frames == keepalives


async def test_unknown_messages_and_binary_json_pass_through_unchanged() -> None:
    downstream: list[Frame] = [
        '{"type":"Welcome","request_id":"r1"}',
        b'{"type":"FunctionCallRequest","functions":[]}',  # Deepgram sometimes sends JSON in binary frames
        '{"type":"SomethingNew","x":[1,2]}',
        "not json at all",
    ]

    async def script(conn: UpstreamConnection) -> None:
        for frame in downstream:
            await conn.send(frame)

    async with scripted_upstream(script) as up, running_proxy(proxy_config(up)) as (_, port):
        async with connect(port) as client:
            got = await client.receive(len(downstream))
            await client.ws.aclose()
    assert got == downstream
    assert [type(f) for f in got] == [type(f) for f in downstream]


# -- closes --------------------------------------------------------------------------------------------------------


async def _upstream_closes(action: str) -> tuple[list[Frame], tuple[int, str]]:
    async def script(conn: UpstreamConnection) -> None:
        await conn.send('{"type":"Welcome","request_id":"r1"}')
        await conn.send(b"\x00\x01")
        if action == "4001":
            await conn.close_with(4001, "bye")
        elif action == "1005":
            await conn.close_with(CloseReason.NO_STATUS_RCVD)
        elif action == "1000":
            await conn.close_with(1000, "Session over")
        else:
            await conn.abort()

    async with scripted_upstream(script) as up, running_proxy(proxy_config(up)) as (_, port):
        async with connect(port) as client:
            return await client.receive_until_closed()


@pytest.mark.parametrize(
    ("action", "close"),
    [
        ("4001", (4001, "bye")),
        ("1000", (1000, "Session over")),
        ("1005", (1000, "")),  # a close frame without a status is a normal end
        ("drop", (1011, "")),  # no close frame at all is not
    ],
)
async def test_an_upstream_close_mid_stream_reaches_the_client_mapped(action: str, close: tuple[int, str]) -> None:
    frames, got = await _upstream_closes(action)
    assert frames == ['{"type":"Welcome","request_id":"r1"}', b"\x00\x01"]
    assert got == close


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (1000, "Closed by client", (1000, "Closed by client")),
        (4002, "custom", (4002, "custom")),
        (CloseReason.NO_STATUS_RCVD, None, (1000, "")),
    ],
)
async def test_a_client_close_reaches_the_upstream_mapped(
    code: int, reason: str | None, expected: tuple[int, str]
) -> None:
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        async with connect(port) as client:
            conn = await up.wait_connection()
            await client.send(SETTINGS)
            await conn.wait_frames(1)
            await client.ws.aclose(code, reason)
        got = await conn.wait_closed()
        await up.wait_idle()
    assert (got[0], got[1] or "") == expected


async def test_a_client_that_vanishes_without_a_close_frame_closes_the_upstream_with_1011() -> None:
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        async with connect(port) as client:
            conn = await up.wait_connection()
            await client.send(SETTINGS)
            await conn.wait_frames(1)
            await client.abort()
        assert await conn.wait_closed() == (1011, "")
        await up.wait_idle()


# -- upstream failures ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "upstream_auth_failed"), (403, "upstream_auth_failed"), (500, "upstream_handshake_failed")],
)
async def test_an_upstream_refusing_the_handshake_gives_an_error_then_1011(status: int, code: str) -> None:
    async with scripted_upstream(reject=status) as up, running_proxy(proxy_config(up)) as (_, port):
        async with connect(port) as client:
            await client.send(SETTINGS)
            frames, close = await client.receive_until_closed()
    assert len(frames) == 1
    assert error_of(frames[0])[0] == code
    assert close == (1011, "Upstream unavailable")


async def test_listen_upstream_failure_closes_1011_without_an_error_message() -> None:
    async with scripted_upstream(reject=401) as up, running_proxy(proxy_config(up)) as (_, port):
        async with connect(port, "/deepgram-proxy?service=transcription") as client:
            frames, close = await client.receive_until_closed()
    assert frames == []
    assert close == (1011, "Upstream unavailable")


async def test_an_unreachable_upstream_gives_a_sanitised_error_then_1011() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    config = proxy_config(
        deepgram_agent=Upstream(f"ws://127.0.0.1:{dead_port}/v1/agent/converse", FAKE_KEY, UpstreamSource.URL)
    )
    async with running_proxy(config) as (_, port), connect(port) as client:
        frames, close = await client.receive_until_closed()
    code, description = error_of(frames[0])
    assert code == "upstream_connect_failed"
    assert str(dead_port) not in description
    assert "127.0.0.1" not in description
    assert close == (1011, "Upstream unavailable")


async def test_an_upstream_that_never_answers_the_handshake_times_out() -> None:
    never = trio.Event()
    limits = Limits(ping_interval_s=0, upstream_connect_timeout_s=0.3)
    async with scripted_upstream(hold=never) as up, running_proxy(proxy_config(up, limits=limits)) as (_, port):
        async with connect(port) as client:
            await client.send(SETTINGS)
            frames, close = await client.receive_until_closed()
        await up.wait_idle()  # the proxy gave up on the TCP connection too
    assert [error_of(f)[0] for f in frames] == ["upstream_timeout"]
    assert close == (1011, "Upstream unavailable")
    assert up.connections[0].frames == []


@pytest.mark.parametrize("how", ["close", "drop"])
async def test_a_client_leaving_mid_connect_leaves_no_upstream_connection(how: str) -> None:
    hold = trio.Event()
    async with scripted_upstream(hold=hold) as up, running_proxy(proxy_config(up)) as (server, port):
        async with connect(port) as client:
            await client.send(SETTINGS)
            conn = await up.wait_connection()
            if how == "close":
                await client.ws.aclose(1000, "Closed by client")
            else:
                await client.abort()
        await up.wait_idle()
        hold.set()
        with trio.fail_after(5):
            while server.session_count:  # noqa: ASYNC110 - polls a plain counter
                await trio.sleep(0.01)
        await trio.sleep(0.05)  # room for a (wrong) late flush to arrive
    assert conn.closed_during_handshake
    assert conn.frames == []
    assert up.tcp_connections == 1
    assert up.live == 0


async def test_a_whitespace_only_key_answers_a_configuration_error_and_the_server_stays_up() -> None:
    config = replace(from_env({"DEEPGRAM_API_KEY": "   "}, port=0), limits=Limits(ping_interval_s=0))
    assert config.deepgram_agent.source is UpstreamSource.MISCONFIGURED
    async with running_proxy(config) as (_, port):
        for _ in range(2):
            async with connect(port) as client:
                await client.send(SETTINGS)
                frames, close = await client.receive_until_closed()
            assert [error_of(f)[0] for f in frames] == ["proxy_configuration_error"]
            assert close == (1011, "Upstream unavailable")
        async with connect(port, "/deepgram-proxy?service=transcription") as client:
            frames, close = await client.receive_until_closed()
        assert (frames, close) == ([], (1011, "Upstream unavailable"))
        assert (await http_get(port, "/health"))[0] == 200


@pytest.mark.parametrize(("key", "mode"), [("abc\r\nX-Injected: 1", "header"), ("two words", "subprotocol")])
async def test_a_key_that_cannot_be_sent_is_a_configuration_error(key: str, mode: str) -> None:
    async with scripted_upstream() as up:
        async with running_proxy(proxy_config(up, key=key, deepgram_auth=mode)) as (_, port):
            async with connect(port) as client:
                frames, close = await client.receive_until_closed()
        assert up.tcp_connections == 0
    assert [error_of(f)[0] for f in frames] == ["proxy_configuration_error"]
    assert close == (1011, "Upstream unavailable")


# -- limits --------------------------------------------------------------------------------------------------------


async def test_an_oversized_client_frame_closes_it_with_1009_the_upstream_with_1011_and_never_reaches_it() -> None:
    limits = Limits(ping_interval_s=0, client_max_message_bytes=1024)
    async with scripted_upstream() as up, running_proxy(proxy_config(up, limits=limits)) as (_, port):
        async with connect(port) as client:
            conn = await up.wait_connection()
            await client.send(b"\x00" * 1024)
            await conn.wait_frames(1)
            await client.send(b"\x00" * 1025)
            _, close = await client.receive_until_closed()
        upstream_close = await conn.wait_closed()
    assert close[0] == 1009
    assert upstream_close[0] == 1011  # the client's fault: the upstream is not told it sent too much
    assert conn.frames == [b"\x00" * 1024]


async def test_too_many_frames_before_the_upstream_opens_is_an_error_and_1008() -> None:
    hold = trio.Event()
    limits = Limits(ping_interval_s=0, outbox_high_water_frames=4)
    async with scripted_upstream(hold=hold) as up, running_proxy(proxy_config(up, limits=limits)) as (_, port):
        async with connect(port) as client:
            for i in range(5):
                await client.send(f'{{"n":{i}}}')
            frames, close = await client.receive_until_closed()
        await up.wait_idle()
        hold.set()
    assert [error_of(f)[0] for f in frames] == ["client_queue_overflow"]
    assert close[0] == 1008
    assert up.connections[0].frames == []


async def test_the_client_leg_is_pinged_and_a_silent_client_is_cut_off() -> None:
    limits = Limits(ping_interval_s=0.05, ping_timeout_s=1.0)
    async with scripted_upstream() as up, running_proxy(proxy_config(up, limits=limits)) as (_, port):
        async with connect(port) as client:
            conn = await up.wait_connection()
            await client.send(SETTINGS)
            await conn.wait_frames(1)
            await trio.sleep(0.3)  # several ping intervals: an answering client stays connected
            assert conn.close is None
            client.freeze()
            assert (await conn.wait_closed())[0] == 1000


async def test_the_upstream_leg_is_pinged_and_a_silent_upstream_is_cut_off() -> None:
    limits = Limits(ping_interval_s=0.05, ping_timeout_s=1.0)

    async def script(conn: UpstreamConnection) -> None:
        await conn.recv()
        await trio.sleep(0.3)  # several ping intervals, answered
        await conn.send("still here")
        conn.freeze()

    async with scripted_upstream(script) as up, running_proxy(proxy_config(up, limits=limits)) as (_, port):
        async with connect(port) as client:
            await client.send(SETTINGS)
            frames, close = await client.receive_until_closed()
    assert frames == ["still here"]
    assert close == (1011, "Upstream ping timeout")


# -- synthetic AgentAudioDone --------------------------------------------------------------------------------------


async def _downstream(script_frames: list[Frame], synthetic: bool, service: str = "agent") -> list[Frame]:
    async def script(conn: UpstreamConnection) -> None:
        for frame in script_frames:
            await conn.send(frame)
        await conn.close_with(1000)

    config_up: ScriptedUpstream
    async with scripted_upstream(script) as config_up:
        config = proxy_config(config_up, deepgram_synthetic_audio_done=synthetic)
        async with running_proxy(config) as (_, port), connect(port, f"/deepgram-proxy?service={service}") as client:
            frames, _ = await client.receive_until_closed()
    return frames


async def test_synthetic_audio_done_is_off_by_default() -> None:
    frames: list[Frame] = [b"\x01\x02", ASSISTANT_TEXT]
    assert await _downstream(frames, synthetic=False) == frames


async def test_synthetic_audio_done_follows_the_first_assistant_text_after_audio_once() -> None:
    frames: list[Frame] = [
        '{"type":"Welcome","request_id":"r"}',
        b"\x01\x02",
        '{"type":"ConversationText","role":"user","content":"hi"}',
        ASSISTANT_TEXT,
        b"\x03\x04",
        ASSISTANT_TEXT,
    ]
    assert await _downstream(frames, synthetic=True) == [*frames[:4], AUDIO_DONE, *frames[4:]]


async def test_synthetic_audio_done_never_fires_when_text_came_before_audio() -> None:
    frames: list[Frame] = [ASSISTANT_TEXT, b"\x01\x02", ASSISTANT_TEXT]
    assert await _downstream(frames, synthetic=True) == frames


# -- secrets -------------------------------------------------------------------------------------------------------


async def test_the_key_never_reaches_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with scripted_upstream(reject=401) as bad, scripted_upstream() as good:
        for auth in ("header", "subprotocol"):
            for up in (bad, good):
                async with running_proxy(proxy_config(up, deepgram_auth=auth)) as (_, port):
                    await one_exchange(port, f"/deepgram-proxy?service=agent&token={FAKE_KEY}&traceId=t", up)
    assert caplog.records
    assert FAKE_KEY not in caplog.text


# -- reference defects that live in the listener, checked through this route -----------------------------------------


async def test_the_101_carries_the_security_headers() -> None:
    async with scripted_upstream() as up, running_proxy(proxy_config(up)) as (_, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"GET /deepgram-proxy?service=agent HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            head = b""
            with trio.fail_after(10):
                while b"\r\n\r\n" not in head:
                    head += await stream.receive_some()
    lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert lines[0].startswith("HTTP/1.1 101")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in headers  # meaningless over plain HTTP: the TLS terminator's job


async def test_shutdown_closes_an_active_session_on_both_legs_and_returns() -> None:
    async with scripted_upstream() as up:
        config = proxy_config(up, limits=Limits(ping_interval_s=0, shutdown_grace_s=2))
        server = ProxyServer(config)
        with trio.fail_after(config.limits.shutdown_grace_s + 5):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(server.serve)
                async with connect(port) as client:
                    conn = await up.wait_connection()
                    await client.send(SETTINGS)
                    await conn.wait_frames(1)
                    server.shutdown(drain_timeout_s=0)  # end the drain now: 1001 at once
                    _, close = await client.receive_until_closed()
                # serve() returns by itself: the nursery is not cancelled here
        assert close == (1001, "Server shutting down")
        assert (await conn.wait_closed())[0] == 1001
