"""The WebSocket layer in a real proxy on loopback sockets: the limits as an operator sets them (flags and
variables) enforced on both legs (the client leg built by the server, the upstream leg by ``tcp_connector``), and a
compression offer declined."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from proxy import cli
from proxy.config import Config, ConfigError, Limits, from_env
from proxy.session import UpstreamTarget, tcp_connector
from proxy.ws import ConnectionClosed, WebSocket, connect
from proxy.ws.frames import DEFAULT_MAX_CONTROL_FRAMES_PER_S, DEFAULT_MAX_FRAGMENTS_PER_MESSAGE
from proxy.ws.handshake import Accepted, ClientHandshake
from tests.server.test_server import echo_upstream, proxy
from tests.ws.wire import CONTINUATION, PONG, TEXT, frame
from tests.wsmem import answer_upgrade

KEY = b"\x01\x02\x03\x04"


def test_defaults_are_the_codecs() -> None:
    limits = from_env({}).limits
    assert limits.max_fragments_per_message == DEFAULT_MAX_FRAGMENTS_PER_MESSAGE == 128
    assert limits.max_control_frames_per_s == DEFAULT_MAX_CONTROL_FRAMES_PER_S == 20.0


def test_the_environment_sets_them_and_flags_win() -> None:
    env = {"PROXY_MAX_FRAGMENTS_PER_MESSAGE": "16", "PROXY_MAX_CONTROL_FRAMES_PER_S": "2.5"}
    limits = from_env(env).limits
    assert (limits.max_fragments_per_message, limits.max_control_frames_per_s) == (16, 2.5)
    args = cli._parser().parse_args(["--max-fragments-per-message", "4", "--max-control-frames-per-s", "0.5"])
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        limits = cli.build_config(args).limits
    assert (limits.max_fragments_per_message, limits.max_control_frames_per_s) == (4, 0.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PROXY_MAX_FRAGMENTS_PER_MESSAGE", "0"),
        ("PROXY_MAX_FRAGMENTS_PER_MESSAGE", "many"),
        ("PROXY_MAX_FRAGMENTS_PER_MESSAGE", "2.5"),
        ("PROXY_MAX_CONTROL_FRAMES_PER_S", "0"),
        ("PROXY_MAX_CONTROL_FRAMES_PER_S", "-1"),
        ("PROXY_MAX_CONTROL_FRAMES_PER_S", "inf"),
        ("PROXY_MAX_CONTROL_FRAMES_PER_S", "fast"),
    ],
)
def test_invalid_values_are_one_clear_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        from_env({name: value})


@pytest.mark.parametrize(
    ("flag", "value"), [("--max-fragments-per-message", "0"), ("--max-control-frames-per-s", "nan")]
)
def test_invalid_flags_are_one_clear_error_naming_the_flag(flag: str, value: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        cli.build_config(cli._parser().parse_args([flag, value]))


# Three fragments against a limit of two, or three pongs against one a second: both are 1008.
FLOODS = {
    "fragments": (
        Limits(ping_interval_s=0, max_fragments_per_message=2),
        [(TEXT, b"a", False), (CONTINUATION, b"b", False), (CONTINUATION, b"c", True)],
    ),
    "pongs": (Limits(ping_interval_s=0, max_control_frames_per_s=1.0), [(PONG, b"p", True)] * 3),
}


def encode(parts: list[tuple[int, bytes, bool]], key: bytes | None) -> bytes:
    return b"".join(frame(opcode, payload, fin=fin, key=key) for opcode, payload, fin in parts)


@pytest.mark.parametrize("flood", FLOODS)
async def test_the_server_applies_the_limits_to_the_client_leg(flood: str) -> None:
    limits, parts = FLOODS[flood]
    async with proxy(Config(port=0, limits=limits)) as (_, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = await connect(stream, "proxy.test", "/relay", max_message_size=1 << 20)
        await stream.send_all(encode(parts, KEY))
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(5):
            await ws.get_message()
    assert (info.value.reason.code, info.value.reason.by_peer) == (1008, True)


@asynccontextmanager
async def hostile_upstream(wire: bytes) -> AsyncIterator[int]:
    """A loopback upstream that answers the upgrade, then sends ``wire``."""

    async def handler(stream: trio.SocketStream) -> None:
        await answer_upgrade(stream)
        await stream.send_all(wire)
        with trio.move_on_after(5):
            while await stream.receive_some():
                pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("flood", FLOODS)
async def test_the_tcp_connector_applies_the_limits_to_the_upstream_leg(flood: str) -> None:
    limits, parts = FLOODS[flood]
    async with hostile_upstream(encode(parts, None)) as port:
        ws = await tcp_connector(UpstreamTarget(f"ws://127.0.0.1:{port}/"), limits)
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(5):
            await ws.get_message()
    assert (info.value.reason.code, info.value.reason.by_peer) == (1008, False)


async def test_a_permessage_deflate_offer_is_declined_and_the_session_works() -> None:
    offer = ((b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits"),)
    async with echo_upstream() as upstream_port, proxy(upstream_port=upstream_port) as (_, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        handshake = ClientHandshake()
        await stream.send_all(handshake.request("proxy.test", "/relay", extra_headers=offer))
        with trio.fail_after(5):
            while (answer := handshake.receive_data(await stream.receive_some())) is None:
                pass
        assert isinstance(answer, Accepted)
        assert b"sec-websocket-extensions" not in {name.lower() for name, _ in answer.headers}
        ws = WebSocket(stream, client=True, max_message_size=1 << 20, buffered=answer.extra)
        await ws.send_message("uncompressed")
        with trio.fail_after(5):
            assert await ws.get_message() == "uncompressed"
        await ws.aclose()
