"""The listener on real loopback sockets: HTTP endpoints, routing, refusals, limits, draining, isolation."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url, serve_websocket

from proxy.config import Config, Limits
from proxy.routes import RouteDecision, RouteRequest
from proxy.server import ProxyServer
from proxy.session import UpstreamTarget
from tests.wsmem import RelayCore


async def http_get(port: int, path: str, method: str = "GET", extra: str = "") -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on a new connection (``extra``: more header lines, each ending in CRLF); status, headers
    (names in lower case) and body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode())
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@asynccontextmanager
async def echo_upstream() -> AsyncIterator[int]:
    async def handler(request):  # type: ignore[no-untyped-def]
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        yield server.port
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def proxy(config: Config | None = None, upstream_port: int = 9) -> AsyncIterator[tuple[ProxyServer, int]]:
    seen: list[RouteRequest] = []

    def relay(config: Config, request: RouteRequest) -> RouteDecision:
        seen.append(request)
        return RouteDecision(RelayCore(), UpstreamTarget(f"ws://127.0.0.1:{upstream_port}/echo"))

    def broken(config: Config, request: RouteRequest) -> RouteDecision:
        raise RuntimeError("route bug")

    server = ProxyServer(
        config or Config(port=0, limits=Limits(ping_interval_s=0)),
        routes={"/relay": ("relay", relay), "/broken": ("broken", broken)},
    )
    server.seen = seen  # type: ignore[attr-defined]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        yield server, port
        nursery.cancel_scope.cancel()


async def test_health_answers_json() -> None:
    async with proxy() as (_server, port):
        status, headers, body = await http_get(port, "/health")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"status": "ok"}


async def test_ready_reports_sessions_and_upstream_sources() -> None:
    async with proxy() as (_server, port):
        status, _headers, body = await http_get(port, "/ready")
    ready = json.loads(body)
    assert status == 200
    assert ready["status"] == "ready"
    assert ready["sessions"] == 0
    assert ready["max_sessions"] == 1000
    assert ready["upstreams"] == {"openai": "simulator", "deepgram_agent": "simulator", "deepgram_listen": "simulator"}


async def test_metrics_are_prometheus_text() -> None:
    async with echo_upstream() as up, proxy(upstream_port=up) as (_server, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay") as ws:
            await ws.send_message("x")
            assert await ws.get_message() == "x"
        await trio.sleep(0.05)
        status, headers, body = await http_get(port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert 'proxy_sessions_total{route="relay"} 1' in text
    assert 'proxy_frames_total{leg="client"} 1' in text


@pytest.mark.parametrize("path", ["/demo/x", "/static/demo.js", "/openai/x", "/relay/", "/nothing"])
async def test_other_http_paths_are_404(path: str) -> None:
    async with proxy() as (_server, port):
        status, _headers, body = await http_get(port, path)
    assert status == 404
    assert body == b"Not Found"


async def test_non_get_on_an_endpoint_is_405() -> None:
    async with proxy() as (_server, port):
        status, headers, _body = await http_get(port, "/health", method="POST")
    assert status == 405
    assert headers["allow"] == "GET"


async def test_websocket_upgrade_to_an_unknown_path_is_refused_with_404() -> None:
    async with proxy() as (_server, port):
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/unknown"):
                pass
    assert info.value.status_code == 404


async def test_query_string_never_affects_routing() -> None:
    async with echo_upstream() as up, proxy(upstream_port=up) as (server, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay?service=x&traceId=t-1") as ws:
            await ws.send_message("ping")
            assert await ws.get_message() == "ping"
    request = server.seen[0]  # type: ignore[attr-defined]
    assert request.path == "/relay"
    assert request.trace_id == "t-1"
    assert request.params() == [("service", "x"), ("traceId", "t-1")]


@pytest.mark.parametrize("trace", ["has%20space", "x" * 129, "new%0Aline", ""])
async def test_an_invalid_trace_id_is_replaced_by_a_generated_one(trace: str) -> None:
    async with echo_upstream() as up, proxy(upstream_port=up) as (server, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay?traceId={trace}") as ws:
            await ws.send_message("ping")
            assert await ws.get_message() == "ping"
    request = server.seen[0]  # type: ignore[attr-defined]
    assert re.fullmatch("[0-9a-f]{32}", request.trace_id)


async def test_sessions_over_capacity_are_refused_with_503() -> None:
    config = Config(port=0, limits=Limits(ping_interval_s=0, max_sessions=1))
    async with echo_upstream() as up, proxy(config, upstream_port=up) as (_server, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay") as first:
            await first.send_message("hold")
            assert await first.get_message() == "hold"
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(f"ws://127.0.0.1:{port}/relay"):
                    pass
            assert info.value.status_code == 503
        _status, _headers, body = await http_get(port, "/metrics")
        assert 'proxy_rejected_total{reason="capacity"} 1' in body.decode()
        assert 'proxy_sessions_active{route="relay"}' in body.decode()


async def test_origin_allow_list_is_checked_on_the_upgrade() -> None:
    config = Config(port=0, allowed_origins=("https://app.example",), limits=Limits(ping_interval_s=0))
    async with echo_upstream() as up, proxy(config, upstream_port=up) as (_server, port):
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(
                f"ws://127.0.0.1:{port}/relay", extra_headers=[(b"Origin", b"https://evil.example")]
            ):
                pass
        assert info.value.status_code == 403
        async with open_websocket_url(
            f"ws://127.0.0.1:{port}/relay", extra_headers=[(b"Origin", b"https://app.example")]
        ) as ws:
            await ws.send_message("ok")
            assert await ws.get_message() == "ok"


@pytest.mark.parametrize(
    ("query", "accepted"),
    [("token=s3cret", True), ("", False), ("token=wrong", False), ("token=s3cret&token=s3cret", False)],
)
async def test_client_token_is_required_when_configured(query: str, accepted: bool) -> None:
    config = Config(port=0, client_tokens=("s3cret",), limits=Limits(ping_interval_s=0))
    async with echo_upstream() as up, proxy(config, upstream_port=up) as (_server, port):
        url = f"ws://127.0.0.1:{port}/relay?{query}"
        if accepted:
            async with open_websocket_url(url) as ws:
                await ws.send_message("in")
                assert await ws.get_message() == "in"
        else:
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(url):
                    pass
            assert info.value.status_code == 401


@pytest.mark.provokes_internal_error
async def test_a_broken_route_fails_only_its_own_connection(internal_errors: list[logging.LogRecord]) -> None:
    async with echo_upstream() as up, proxy(upstream_port=up) as (server, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay") as healthy:
            with pytest.raises((ConnectionClosed, ConnectionRejected, OSError)):
                async with open_websocket_url(f"ws://127.0.0.1:{port}/broken") as ws:
                    await ws.get_message()
            await healthy.send_message("still here")
            assert await healthy.get_message() == "still here"
        assert server.metrics.session_errors_total == 1
        status, _headers, _body = await http_get(port, "/health")
        assert status == 200
    assert [record.getMessage().partition(": ")[2] for record in internal_errors] == [
        "internal error while setting up broken"
    ]


async def test_garbage_instead_of_http_is_dropped_and_the_server_stays_up() -> None:
    async with proxy() as (_server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"\x16\x03\x01 not http at all\r\n\r\n")
            with trio.fail_after(5):
                data = await stream.receive_some()
            assert data == b"" or data.startswith(b"HTTP/1.1 400")
        status, _headers, _body = await http_get(port, "/health")
        assert status == 200


async def test_oversized_request_head_is_refused() -> None:
    async with proxy() as (_server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
            with trio.fail_after(5):
                data = await stream.receive_some()
            assert not data.startswith(b"HTTP/1.1 200")


async def test_slow_handshake_is_dropped_at_the_handshake_timeout(autojump_clock: trio.abc.Clock) -> None:
    config = Config(port=0, limits=Limits(ping_interval_s=0, handshake_timeout_s=10.0))
    async with proxy(config) as (_server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /health HTTP/1.1\r\n")  # never finished
            start = trio.current_time()
            assert await stream.receive_some() == b""
            assert trio.current_time() - start == pytest.approx(10.0)


async def test_shutdown_with_no_drain_time_closes_sessions_with_1001_and_the_listener() -> None:
    async with echo_upstream() as up, proxy(upstream_port=up) as (server, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay") as ws:
            await ws.send_message("x")
            assert await ws.get_message() == "x"
            server.shutdown(drain_timeout_s=0)
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1001
        with trio.fail_after(5):
            while server.session_count:  # noqa: ASYNC110 - a plain counter, no event to wait on
                await trio.sleep(0.01)
            while True:  # the listener closes once the sessions are gone
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    break
                await stream.aclose()
                await trio.sleep(0.01)


def test_limits_are_plain_data() -> None:
    limits = replace(Limits(), max_sessions=3)
    assert limits.max_sessions == 3


async def test_upstream_failures_and_client_closes_are_counted() -> None:
    async with proxy(upstream_port=9) as (_server, port):  # nothing listens on port 9
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay") as ws:
            assert json.loads(await ws.get_message())["code"] == "upstream_connect_failed"
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
        with trio.fail_after(5):
            while True:
                _status, _headers, body = await http_get(port, "/metrics")
                text = body.decode()
                if 'proxy_client_close_total{code="1011"} 1' in text:
                    break
                await trio.sleep(0.01)
    assert 'proxy_upstream_failures_total{code="upstream_connect_failed"} 1' in text


async def test_client_tokens_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = Config(port=0, client_tokens=("tok-SECRET-123",), limits=Limits(ping_interval_s=0))
    async with echo_upstream() as up, proxy(config, upstream_port=up) as (_server, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay?token=tok-SECRET-123&traceId=t") as ws:
            await ws.send_message("x")
            assert await ws.get_message() == "x"
        with pytest.raises(ConnectionRejected):
            async with open_websocket_url(f"ws://127.0.0.1:{port}/relay?token=tok-SECRET-999"):
                pass
    # The test's own client logs its URL at DEBUG (trio-websocket's "Connecting to ..."): only the proxy's records
    # and anything at INFO or above count.
    ours = [r for r in caplog.records if r.name.startswith("proxy") or r.levelno >= logging.INFO]
    assert ours, "the session must have logged something"
    assert not [r for r in ours if "SECRET" in r.getMessage()]


async def test_handshakes_over_the_pending_cap_are_refused_at_once_not_queued(autojump_clock: trio.abc.Clock) -> None:
    """Two connections that never send a request head hold both handshake slots: a third is closed at once (it is
    not left waiting for a slot); once the idle ones are dropped at the handshake timeout, requests are served."""
    limits = Limits(ping_interval_s=0, max_pending_handshakes=2, handshake_timeout_s=10.0)
    async with proxy(Config(port=0, limits=limits)) as (server, port):
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        await trio.sleep(1)
        start = trio.current_time()
        third = await trio.open_tcp_stream("127.0.0.1", port)
        async with third:
            await third.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await third.receive_some() == b""
        assert trio.current_time() == start
        assert server.metrics.rejected_total == {"max_pending_handshakes": 1}
        for stream in idle:
            assert await stream.receive_some() == b""
            await stream.aclose()
        status, _headers, _body = await http_get(port, "/health")
        assert status == 200
        assert server.metrics.rejected_total == {"max_pending_handshakes": 1, "handshake_timeout": 2}


async def test_an_invalid_websocket_handshake_is_refused_with_http_and_counted() -> None:
    request = (
        "GET /relay HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
    )
    async with proxy() as (server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request.encode())
            data = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some():
                    data += chunk
        assert server.metrics.rejected_total == {"handshake": 1}
    head = data.partition(b"\r\n\r\n")[0].decode().split("\r\n")
    assert head[0].startswith("HTTP/1.1 426")
    assert "Sec-WebSocket-Version: 13" in head
