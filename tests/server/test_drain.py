"""Draining: after shutdown the listener keeps answering, /ready says draining, new upgrades get 503 with
Retry-After, open sessions go on until they end or the drain deadline (then 1001), and a second request ends the
drain at once. In-process on virtual time, and once end to end with signals to ``python -m proxy``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection, open_websocket_url

import proxy.server as server_module
from proxy import cli
from proxy.config import Config, Limits, from_env
from proxy.routes import RouteDecision, RouteRequest
from proxy.server import ProxyServer
from proxy.session import UpstreamTarget
from tests.hostile.peers import Client
from tests.server.test_server import echo_upstream, http_get, proxy
from tests.test_cli import proxy_env
from tests.ws.wire import TEXT
from tests.wsmem import RelayCore


def drain_config(drain_timeout_s: float = 30.0) -> Config:
    return Config(port=0, limits=Limits(ping_interval_s=0, drain_timeout_s=drain_timeout_s, shutdown_grace_s=5.0))


@asynccontextmanager
async def one_session(config: Config) -> AsyncIterator[tuple[ProxyServer, int, WebSocketConnection]]:
    async with echo_upstream() as up, proxy(config, upstream_port=up) as (server, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay") as ws:
            await ws.send_message("x")
            assert await ws.get_message() == "x"
            yield server, port, ws


async def listener_is_closed(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return True
    await stream.aclose()
    return False


async def test_a_drain_keeps_answering_and_closes_sessions_with_1001_at_the_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with one_session(drain_config(30.0)) as (server, port, ws):
        start = trio.current_time()
        server.shutdown()
        status, _headers, body = await http_get(port, "/health")
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        status, _headers, body = await http_get(port, "/ready")
        assert status == 503
        assert json.loads(body)["status"] == "draining"
        assert json.loads(body)["sessions"] == 1
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/relay"):
                pass
        assert refused.value.status_code == 503
        assert (b"retry-after", b"1") in [(k.lower(), v) for k, v in refused.value.headers]
        await ws.send_message("still here")
        assert await ws.get_message() == "still here"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1001
        assert trio.current_time() - start == pytest.approx(30.0)
        with trio.fail_after(1):
            while not await listener_is_closed(port):  # noqa: ASYNC110 - polling the listener is the point
                await trio.sleep(0.01)
    assert server.metrics.rejected_total == {"draining": 1}


async def test_a_drain_with_no_session_open_ends_at_once(autojump_clock: trio.abc.Clock) -> None:
    server = ProxyServer(drain_config(30.0), routes={})
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        start = trio.current_time()
        server.shutdown()
        # serve() returns by itself: the nursery closes without being cancelled.
    assert trio.current_time() == start
    assert await listener_is_closed(port)


async def test_the_listener_stays_open_until_the_last_session_closes(autojump_clock: trio.abc.Clock) -> None:
    async with one_session(drain_config(30.0)) as (server, port, ws):
        start = trio.current_time()
        server.shutdown()
        await trio.sleep(3)
        assert not await listener_is_closed(port)
        await ws.aclose()
        with trio.fail_after(1):
            while not await listener_is_closed(port):  # noqa: ASYNC110 - polling the listener is the point
                await trio.sleep(0.01)
        assert trio.current_time() - start == pytest.approx(3.0, abs=0.02)  # within two polling steps
        assert server.metrics.client_close_codes.get("1001") is None


async def test_a_second_shutdown_with_no_drain_time_closes_sessions_at_once(autojump_clock: trio.abc.Clock) -> None:
    async with one_session(drain_config(30.0)) as (server, _port, ws):
        start = trio.current_time()
        server.shutdown()
        await trio.sleep(2)
        server.shutdown(drain_timeout_s=60)  # a later deadline never postpones the drain
        server.shutdown(drain_timeout_s=0)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1001
        assert trio.current_time() - start == pytest.approx(2.0)


async def test_an_upgrade_during_a_drain_learns_401_before_503(autojump_clock: trio.abc.Clock) -> None:
    config = Config(port=0, client_tokens=("s3cret",), limits=Limits(ping_interval_s=0, drain_timeout_s=30.0))
    async with echo_upstream() as up, proxy(config, upstream_port=up) as (server, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay?token=s3cret") as ws:
            await ws.send_message("x")
            assert await ws.get_message() == "x"
            server.shutdown()
            with pytest.raises(ConnectionRejected) as refused:
                async with open_websocket_url(f"ws://127.0.0.1:{port}/relay?token=nope"):
                    pass
            assert refused.value.status_code == 401
            server.shutdown(drain_timeout_s=0)


# -- end to end ------------------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
async def test_sigterm_drains_the_process_and_a_second_signal_ends_the_drain(second: signal.Signals) -> None:
    async with echo_upstream() as up:
        env = proxy_env(DEEPGRAM_AGENT_URL=f"ws://127.0.0.1:{up}/v1/agent/converse", DEEPGRAM_API_KEY="dg-test")
        command = [sys.executable, "-m", "proxy", "--port", "0", "--drain-timeout", "60"]
        process = await trio.lowlevel.open_process(command, env=env, stdout=subprocess.PIPE)
        try:
            assert process.stdout is not None
            line = b""
            with trio.fail_after(30):
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive_some(1)
            assert line.startswith(b"listening on ws://127.0.0.1:"), line
            port = int(line.rsplit(b":", 1)[1])
            async with open_websocket_url(f"ws://127.0.0.1:{port}/v1/agent/converse") as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "hello"
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(10):
                    while (await http_get(port, "/ready"))[0] != 503:  # noqa: ASYNC110 - the signal lands when it lands
                        await trio.sleep(0.05)
                _status, _headers, body = await http_get(port, "/ready")
                assert json.loads(body)["status"] == "draining"
                assert (await http_get(port, "/health"))[0] == 200
                with pytest.raises(ConnectionRejected) as refused:
                    async with open_websocket_url(f"ws://127.0.0.1:{port}/v1/agent/converse"):
                        pass
                assert refused.value.status_code == 503
                await ws.send_message("during the drain")
                assert await ws.get_message() == "during the drain"
                process.send_signal(second)
                with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1001
            with trio.fail_after(10):
                returncode = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
    assert returncode == 0


# -- an upgrade racing the drain deadline ----------------------------------------------------------------------


@pytest.mark.parametrize("late_101_s", [0.0, 1.0])
async def test_a_session_admitted_as_the_drain_deadline_passes_gets_1001_at_the_deadline(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch, late_101_s: float
) -> None:
    """The upgrade passed the draining check; the deadline passes before its 101 is out (the route is set up in
    between, and the 101 may take a while to send). Its session must not outlive the drain: it gets 1001 as soon as
    its 101 is out, and the server's run ends by itself."""
    send = server_module._send

    async def slow_101(stream: trio.SocketStream, data: bytes, deadline: float) -> bool:
        if data.startswith(b"HTTP/1.1 101"):
            await trio.sleep(late_101_s)
        return await send(stream, data, deadline)

    monkeypatch.setattr(server_module, "_send", slow_101)
    async with echo_upstream() as up:
        server = ProxyServer(drain_config(30.0), routes={})

        def racing(config: Config, request: RouteRequest) -> RouteDecision:
            server.shutdown(drain_timeout_s=0)  # the deadline is now, and this upgrade is already admitted
            return RouteDecision(RelayCore(), UpstreamTarget(f"ws://127.0.0.1:{up}/echo"))

        server.routes = {"/race": ("race", racing)}
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            start = trio.current_time()
            async with open_websocket_url(f"ws://127.0.0.1:{port}/race") as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1001
            assert trio.current_time() - start == pytest.approx(late_101_s)
        # serve() returned by itself once the session ended: nothing was cancelled.


async def test_an_upgrade_just_before_the_deadline_gets_503_and_the_open_session_1001_at_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with one_session(drain_config(30.0)) as (server, port, ws):
        start = trio.current_time()
        server.shutdown()
        await trio.sleep(29.9)
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/relay"):
                pass
        assert refused.value.status_code == 503
        assert (b"retry-after", b"1") in [(k.lower(), v) for k, v in refused.value.headers]
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1001
        assert trio.current_time() - start == pytest.approx(30.0)
    assert server.metrics.rejected_total == {"draining": 1}


async def test_a_third_signal_stops_waiting_for_the_closing_handshakes(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the second signal the sessions get 1001 and up to the close timeout to answer it; a client that never
    answers holds the process that long, unless a third signal ends it then and there. Real signals to this process
    (the command's own signal loop), virtual time."""
    async with echo_upstream() as up:
        env = proxy_env(DEEPGRAM_AGENT_URL=f"ws://127.0.0.1:{up}/v1/agent/converse", DEEPGRAM_API_KEY="dg-test")
        config = from_env(env, port=0)
        async with trio.open_nursery() as nursery:
            served = trio.Event()

            async def run() -> None:
                await cli.serve(config)
                served.set()

            nursery.start_soon(run)
            while "listening on" not in (out := capsys.readouterr().out):  # noqa: ASYNC110 - the port is printed
                await trio.sleep(0.01)
            port = int(out.rsplit(":", 1)[1])
            client = Client(await trio.open_tcp_stream("127.0.0.1", port))
            assert await client.upgrade("/v1/agent/converse") == 101
            await client.peer.send(TEXT, b"hello")
            frame = await client.peer.receive_frame()
            assert frame is not None
            assert frame.payload == b"hello"
            os.kill(os.getpid(), signal.SIGTERM)
            await trio.sleep(1)
            os.kill(os.getpid(), signal.SIGTERM)
            frame = await client.peer.receive_frame()  # the 1001, which this client never answers
            assert frame is not None
            assert frame.close[0] == 1001
            start = trio.current_time()
            await trio.sleep(0.5)
            assert not served.is_set()  # still waiting for the client's close frame
            os.kill(os.getpid(), signal.SIGINT)
            await served.wait()
            assert trio.current_time() - start == pytest.approx(0.5)
            await client.stream.aclose()
