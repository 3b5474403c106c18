"""Who may connect, through the real listener on loopback: status codes, echoed subprotocols, metrics, logs."""

from __future__ import annotations

import pytest
import trio

from proxy.config import Config, Limits
from tests.server.test_server import echo_upstream, proxy

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
