"""The hostile-input matrix: one table, what a hostile peer does -> what it gets, what the log says, what is counted.

Every row runs against a real :class:`~proxy.server.ProxyServer` with the built-in routes on loopback, a raw
client that can break any rule, and a raw upstream that can do the same from the other side. Whatever the row,
the proxy logs no traceback, never shows the key, and keeps serving: ``/health`` answers after every row.
docs/security.md carries the same table in prose.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import pytest
import trio

from proxy import redact
from proxy.config import Config, Limits, Upstream, UpstreamSource
from proxy.server import ProxyServer
from tests.hostile.peers import Client, Seen, raw_upstream, upgrade_request
from tests.server.test_server import http_get
from tests.ws.wire import BINARY, CLOSE, CONTINUATION, PING, TEXT, RawPeer, close_payload, frame

HUNDRED_HEADERS = b"".join(b"X-%d: y\r\n" % i for i in range(100))
KEY = "sk-proj-MATRIXkey0123456789abcdefghijklmnopqrstuvwxyz"
TOKEN = "client-token-for-the-matrix-0001"


@dataclass(frozen=True)
class Env:
    port: int
    client: Client


Attack = Callable[[Env], Awaitable[Seen]]
Script = Callable[[RawPeer], Awaitable[None]]


@dataclass(frozen=True)
class Row:
    name: str
    attack: Attack
    #: What the attacker sees: an HTTP status, a close code, or neither (dropped).
    status: int | None = None
    close: int | None = None
    dropped: bool = False
    #: ``Error`` codes the attacker must receive (the browser's view of an upstream fault).
    errors: tuple[str, ...] = ()
    #: The most severe level the proxy may log for this row.
    log_level: int = logging.WARNING
    #: A line that must be in /metrics afterwards.
    metric: str | None = None
    upstream: Script | None = None
    auth: bool = False
    extra: dict[str, object] = field(default_factory=dict)
    #: Limits that differ from the matrix's defaults for this row.
    limits: dict[str, float] = field(default_factory=dict)


# -- attacks -------------------------------------------------------------------------------------------------------


async def silent(env: Env) -> Seen:
    return await env.client.observe()


async def trickle(env: Env) -> Seen:
    request = upgrade_request("/openai")
    with trio.move_on_after(3):
        for byte in request[:-4]:
            await env.client.send_bytes(bytes([byte]))
            await trio.sleep(0.05)
    return await env.client.observe()


async def hog_pending_slots(env: Env) -> Seen:
    """The attacker's connection is the oldest of four idle ones holding every pending slot (the row's cap is 4);
    a newcomer from another address is served at once, and the attacker's oldest socket is the one closed."""
    more = [await trio.open_tcp_stream("127.0.0.1", env.port) for _ in range(3)]
    refused = await trio.open_tcp_stream("127.0.0.1", env.port)  # the hog's own fifth: refused
    assert await refused.receive_some() == b""
    await refused.aclose()
    newcomer = await trio.open_tcp_stream("127.0.0.1", env.port, local_address="127.0.0.3")
    async with newcomer:
        await newcomer.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await newcomer.receive_some()).startswith(b"HTTP/1.1 200 ")
    seen = await env.client.observe()
    for stream in more:
        await stream.aclose()
    return seen


async def reconnect_storm(env: Env) -> Seen:
    """The attacker holds the address's two connections and reconnects 50 times: each is closed before a byte."""
    held = await trio.open_tcp_stream("127.0.0.1", env.port)
    for _ in range(50):
        stream = await trio.open_tcp_stream("127.0.0.1", env.port)
        assert await stream.receive_some() == b""
        await stream.aclose()
    seen = await env.client.observe()
    await held.aclose()
    return seen


def raw_head(head: bytes) -> Attack:
    async def attack(env: Env) -> Seen:
        await env.client.send_bytes(head)
        return await env.client.observe()

    return attack


def upgrade_with(path: str, headers: tuple[tuple[str, str], ...]) -> Attack:
    return raw_head(upgrade_request(path, headers=headers))


def frames_after_upgrade(path: str, *frames: bytes, then_close: bool = False) -> Attack:
    async def attack(env: Env) -> Seen:
        status = await env.client.upgrade(path)
        assert status == 101
        for data in frames:
            try:
                await env.client.send_bytes(data)
            except trio.BrokenResourceError:
                break
        seen = Seen(status=101)
        if then_close:
            with trio.move_on_after(1):
                while (found := await env.client.peer.receive_frame()) is not None and found.opcode == TEXT:
                    seen.texts.append(found.payload.decode())
            with contextlib.suppress(trio.BrokenResourceError):
                await env.client.peer.send_close(1000)
        return await env.client.observe(seen)

    return attack


def masked(opcode: int, payload: bytes = b"", *, fin: bool = True, length: int | None = None) -> bytes:
    return frame(opcode, payload, fin=fin, key=b"\x11\x22\x33\x44", length=length)


def nested(depth: int) -> bytes:
    return ('{"type":' + "[" * depth + "]" * depth + "}").encode()


def upstream_sends(*data: bytes) -> Script:
    async def script(peer: RawPeer) -> None:
        for chunk in data:
            await peer.stream.send_all(chunk)

    return script


def upstream_text(message: object) -> bytes:
    return frame(TEXT, json.dumps(message).encode())


# -- the table -----------------------------------------------------------------------------------------------------

ROWS = [
    # Before the handshake.
    Row("silent connection", silent, dropped=True, log_level=logging.DEBUG,
        metric='proxy_rejected_total{reason="handshake_timeout"} 1'),
    Row("slowloris head", trickle, dropped=True, log_level=logging.DEBUG,
        metric='proxy_rejected_total{reason="handshake_timeout"} 1'),
    Row("one address holding every pending slot", hog_pending_slots, dropped=True, limits={"max_pending_handshakes": 4},
        metric='proxy_rejected_total{reason="pending_handshake_evicted"} 1'),
    Row("reconnect storm over the address cap", reconnect_storm, dropped=True, log_level=logging.WARNING,
        limits={"max_connections_per_ip": 2}, metric='proxy_rejected_total{reason="max_connections_per_ip"} 50'),
    Row("request head over 16 KiB", raw_head(b"GET /health HTTP/1.1\r\nX: " + b"a" * (16 << 10) + b"\r\n\r\n"),
        status=431, metric='proxy_rejected_total{reason="request_head_too_large"} 1'),
    Row("101 headers", raw_head(b"GET /health HTTP/1.1\r\nHost: x\r\n" + HUNDRED_HEADERS + b"\r\n"), status=431,
        metric='proxy_rejected_total{reason="too_many_headers"} 1'),
    Row("garbage instead of HTTP", raw_head(b"\x16\x03\x01\x02\x00garbage\r\n\r\n"), status=400),
    Row("invalid WebSocket handshake", raw_head(b"GET /openai HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"),
        status=400, metric='proxy_rejected_total{reason="handshake"} 1'),
    # Who may connect.
    Row("two Origin headers", upgrade_with(f"/openai?token={TOKEN}", (("Origin", "https://app.test"),
                                                                        ("Origin", "https://evil.test"))),
        status=403, auth=True, metric='proxy_rejected_total{reason="forbidden_origin_duplicate"} 1'),
    Row("wrong token", upgrade_with("/openai?token=guess", (("Origin", "https://app.test"),)), status=401,
        auth=True, metric='proxy_rejected_total{reason="unauthorized_bad_token"} 1'),
    Row("forged JWT", upgrade_with("/openai?token=eyJhbGciOiJub25lIn0.eyJleHAiOjk5OTk5OTk5OTl9.",
                                   (("Origin", "https://app.test"),)), status=401, auth=True),
    # The WebSocket layer.
    Row("unmasked frame", frames_after_upgrade("/deepgram-proxy", frame(TEXT, b"hi")), close=1002),
    Row("reserved bits", frames_after_upgrade("/deepgram-proxy", frame(TEXT, b"hi", key=b"abcd", rsv=4)),
        close=1002),
    Row("invalid UTF-8 text", frames_after_upgrade("/deepgram-proxy", masked(TEXT, b"\xff\xfe")), close=1007),
    Row("message over the size limit", frames_after_upgrade("/deepgram-proxy", masked(BINARY, length=2 << 20)),
        close=1009),
    Row("endless empty fragments", frames_after_upgrade(
        "/deepgram-proxy", masked(TEXT, b"", fin=False), *[masked(CONTINUATION, b"", fin=False)] * 300),
        close=1008),
    Row("ping flood", frames_after_upgrade("/deepgram-proxy", *[masked(PING, b"x")] * 200), close=1008),
    # Messages.
    Row("JSON nested 600 deep", frames_after_upgrade("/openai", masked(TEXT, nested(600)), then_close=True),
        close=1000, errors=("client_message_too_deep",)),
    Row("not JSON", frames_after_upgrade("/openai", masked(TEXT, b"{not json"), then_close=True), close=1000,
        errors=("unparsable_client_message",)),
    # A hostile upstream.
    Row("upstream sends invalid UTF-8", frames_after_upgrade("/deepgram-proxy"), close=1011,
        errors=("upstream_protocol_error",), upstream=upstream_sends(frame(TEXT, b"\xff\xfe"))),
    Row("upstream breaks the framing", frames_after_upgrade("/deepgram-proxy"), close=1011,
        errors=("upstream_protocol_error",), upstream=upstream_sends(frame(TEXT, b"x", key=b"abcd"))),
    Row("upstream quotes the key in its close reason", frames_after_upgrade("/deepgram-proxy"), close=4001,
        upstream=upstream_sends(frame(CLOSE, close_payload(4001, f"bad key {KEY[:40]}")))),
    Row("upstream quotes the key in an error", frames_after_upgrade("/openai", then_close=True), close=1000,
        errors=("[redacted]",), log_level=logging.ERROR, upstream=upstream_sends(upstream_text(
            {"type": "error", "error": {"type": "invalid_request_error", "code": KEY,
                                        "message": f"Incorrect API key provided: {KEY}."}}))),
]  # fmt: skip


async def _uninstall_at_exit() -> None:
    try:
        await trio.sleep_forever()
    finally:
        redact.uninstall_log_redaction()


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_hostile_input(row: Row, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def quiet_upstream(peer: RawPeer) -> None:
        await trio.sleep(3)

    async with raw_upstream(row.upstream or quiet_upstream) as upstream_port, trio.open_nursery() as nursery:
        base = f"ws://127.0.0.1:{upstream_port}"
        config = Config(
            port=0,
            openai=Upstream(base + "/v1/realtime", KEY, UpstreamSource.URL),
            deepgram_agent=Upstream(base + "/v1/agent/converse", KEY, UpstreamSource.URL),
            deepgram_listen=Upstream(base + "/v1/listen", KEY, UpstreamSource.URL),
            limits=Limits(handshake_timeout_s=0.5, ping_interval_s=0, close_timeout_s=0.5, **row.limits),  # type: ignore[arg-type]
        )
        if row.auth:
            config = replace(config, allowed_origins=("https://app.test",), client_tokens=(TOKEN,))
        server = ProxyServer(config)
        # As `python -m proxy` does at start-up: every log record passes the redactor.
        redact.install_log_redaction(redact.for_config(config))
        nursery.start_soon(_uninstall_at_exit)
        port = await nursery.start(server.serve)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(10):
            seen = await row.attack(Env(port, Client(stream)))
        await trio.aclose_forcefully(stream)
        await trio.sleep(0.05)
        health, _, _ = await http_get(port, "/health")
        _, _, metrics = await http_get(port, "/metrics")
        nursery.cancel_scope.cancel()

    if row.status is not None:
        assert seen.status == row.status, seen
        if row.status == 503:
            assert "retry-after" in seen.headers
    if row.close is not None:
        assert seen.close == row.close, seen
    if row.dropped:
        assert seen.dropped, seen
        assert seen.status is None, seen
    codes = [str(error.get("code")) for error in seen.errors()]
    for expected in row.errors:
        assert any(expected in code for code in codes), (expected, codes)
    assert health == 200
    if row.metric:
        assert row.metric in metrics.decode()
    ours = [r for r in caplog.records if r.name.startswith("proxy")]
    assert not [r for r in ours if r.exc_info], "a traceback means a bug in the proxy"
    assert max((r.levelno for r in ours), default=0) <= row.log_level, [(r.levelname, r.getMessage()) for r in ours]
    everything = caplog.text + "".join(seen.texts) + seen.reason
    for start in range(0, len(KEY) - 8):
        assert KEY[start : start + 8] not in everything
    assert TOKEN not in caplog.text
