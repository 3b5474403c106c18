"""Who may connect, through the real listener on loopback: status codes, echoed subprotocols, metrics, logs."""

from __future__ import annotations

import logging
import time
from typing import Any

import jwt
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from proxy.config import Config, Limits, Upstream, UpstreamSource
from proxy.server import ProxyServer
from tests.server.test_server import echo_upstream, http_get, proxy

_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


async def raw_upgrade(port: int, target: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """Send an upgrade request with exactly these extra headers (repeats kept); return the status and the head."""
    lines = [
        f"GET {target} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {_KEY}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in data and (chunk := await stream.receive_some()):
                data += chunk
    head = data.partition(b"\r\n\r\n")[0]
    return int(head.split()[1]), head


@pytest.mark.parametrize(
    "origins",
    [
        ["https://evil.example", "https://app.example"],
        ["https://app.example", "https://evil.example"],
        ["https://app.example", "https://app.example"],
    ],
)
async def test_a_request_with_two_origin_headers_is_refused_with_403(origins: list[str]) -> None:
    config = Config(port=0, allowed_origins=("https://app.example",), limits=Limits(ping_interval_s=0))
    async with echo_upstream() as up, proxy(config, upstream_port=up) as (_server, port):
        status, _head = await raw_upgrade(port, "/relay", [("Origin", origin) for origin in origins])
        assert status == 403
        status, _head = await raw_upgrade(port, "/relay", [("Origin", "https://app.example")])
        assert status == 101


# -- signed tokens through the listener ----------------------------------------------------------------------------

SECRET = "k" * 32 + "-loopback-secret"


def signed(**claims: object) -> str:
    return jwt.encode({"sub": "user-17", "exp": time.time() + 300, **claims}, SECRET, algorithm="HS256")


def jwt_config(**fields: Any) -> Config:
    return Config(port=0, jwt_secrets=(SECRET,), limits=Limits(ping_interval_s=0), **fields)


async def metrics(port: int) -> str:
    _status, _headers, body = await http_get(port, "/metrics")
    return body.decode()


async def test_a_signed_token_as_a_subprotocol_pair_admits_and_token_is_echoed_never_the_jwt() -> None:
    token = signed()
    async with echo_upstream() as up, proxy(jwt_config(), upstream_port=up) as (server, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay", subprotocols=["token", token]) as ws:
            assert ws.subprotocol == "token"
            await ws.send_message("in")
            assert await ws.get_message() == "in"
        assert server.seen[0].subprotocols == ("token",)  # type: ignore[attr-defined]
        status, head = await raw_upgrade(port, "/relay", [("Sec-WebSocket-Protocol", f"bearer, {token}")])
        assert status == 101
        assert b"Sec-WebSocket-Protocol: bearer\r\n" in head + b"\r\n"
        assert token.encode() not in head


async def test_a_signed_token_in_the_query_admits() -> None:
    async with echo_upstream() as up, proxy(jwt_config(), upstream_port=up) as (_server, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay?token={signed()}") as ws:
            assert ws.subprotocol is None
            await ws.send_message("in")
            assert await ws.get_message() == "in"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (signed(exp=time.time() - 3600), "unauthorized_expired"),
        (jwt.encode({"exp": time.time() + 60}, "w" * 40, algorithm="HS256"), "unauthorized_bad_signature"),
        (signed(aud="someone-else"), "unauthorized_audience"),
        (signed(route="deepgram"), "unauthorized_route_claim"),
        ("not-a-jwt", "unauthorized_malformed"),
    ],
)
async def test_a_refused_token_is_401_counted_by_reason_and_logged_as_a_word(
    token: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="proxy")
    async with proxy(jwt_config()) as (_server, port):
        for form in ("query", "subprotocol"):
            with pytest.raises(ConnectionRejected) as info:
                if form == "query":
                    url, subprotocols = f"ws://127.0.0.1:{port}/relay?token={token}", None
                else:
                    url, subprotocols = f"ws://127.0.0.1:{port}/relay", ["token", token]
                async with open_websocket_url(url, subprotocols=subprotocols):
                    pass
            assert info.value.status_code == 401
            assert token.encode() not in (info.value.body or b"")
        assert f'proxy_rejected_total{{reason="{reason}"}} 2' in await metrics(port)
    warnings = [r for r in caplog.records if r.name.startswith("proxy") and r.levelno == logging.WARNING]
    # Refusals are paced like every per-connection peer fault: the second one within the interval is only counted.
    assert [r.getMessage().rsplit(": ", 1)[1] for r in warnings] == [reason.removeprefix("unauthorized_")]
    assert not [r for r in caplog.records if r.name.startswith("proxy") and token in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize(("path", "route"), [("/openai", "openai"), ("/deepgram-proxy", "deepgram")])
async def test_the_real_routes_echo_token_and_honour_the_route_claim(path: str, route: str) -> None:
    """Both built-in routes: the browser form ``new WebSocket(url, ["token", jwt])`` gets ``token`` back."""
    closed = "ws://127.0.0.1:9/upstream"
    config = jwt_config(
        openai=Upstream(closed, None, UpstreamSource.URL),
        deepgram_agent=Upstream(closed, None, UpstreamSource.URL),
    )
    server = ProxyServer(config)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        url = f"ws://127.0.0.1:{port}{path}"
        async with open_websocket_url(url, subprotocols=["token", signed(route=route)]) as ws:
            assert ws.subprotocol == "token"
        other = "deepgram" if route == "openai" else "openai"
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(url, subprotocols=["token", signed(route=other)]):
                pass
        assert info.value.status_code == 401
        nursery.cancel_scope.cancel()


async def test_an_origin_claim_is_checked_against_the_request_origin() -> None:
    token = signed(origin="https://app.example")
    async with echo_upstream() as up, proxy(jwt_config(), upstream_port=up) as (_server, port):
        status, _head = await raw_upgrade(port, f"/relay?token={token}", [("Origin", "https://app.example")])
        assert status == 101
        status, _head = await raw_upgrade(port, f"/relay?token={token}", [("Origin", "https://evil.example")])
        assert status == 401
        status, _head = await raw_upgrade(
            port, f"/relay?token={token}", [("Origin", "https://app.example"), ("Origin", "https://app.example")]
        )
        assert status == 403
        assert 'proxy_rejected_total{reason="forbidden_origin_duplicate"} 1' in await metrics(port)
