"""Loopback fixtures for the Deepgram pass-through: a scripted upstream, a raw client, a running proxy.

The scripted upstream is a real WebSocket server on 127.0.0.1. It records each handshake (path, query, headers,
subprotocols), every frame with its opcode (``str`` = text, ``bytes`` = binary) and the close it received, counts
TCP connections that are still open, and plays a per-test script. It can hold its handshake answer (to test frames
queued before the upstream opens, and clients that leave mid-connect), refuse it with an HTTP status, or drop the
TCP connection without a close frame.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
    wrap_server_stream,
)

from proxy.config import Config, Limits, Upstream, UpstreamSource
from proxy.core import Frame
from proxy.server import ProxyServer

FAKE_KEY = "dgtestkey0123456789abcdef0123456789abcdef"
TIMEOUT = 10.0


class _Changes:
    """Wake waiters whenever something recorded changes."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self._event.wait()


class Freezable(trio.abc.Stream):
    """A socket stream that can replay bytes already read, and can freeze: after :meth:`freeze` nothing more is
    read (bytes in flight are discarded), so the WebSocket on top stops answering pings, as a hung peer would."""

    def __init__(self, stream: trio.SocketStream, prefix: bytes = b"") -> None:
        self._prefix = prefix
        self._stream = stream
        self._frozen = False

    def freeze(self) -> None:
        self._frozen = True

    def frozen(self) -> bool:
        return self._frozen

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            await trio.lowlevel.checkpoint()
            return data
        if self.frozen():
            await trio.sleep_forever()
        data = await self._stream.receive_some(max_bytes)
        if self.frozen():  # what arrived after freeze() is never processed
            await trio.sleep_forever()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


@dataclass
class UpstreamConnection:
    """One connection the scripted upstream received, as it saw it."""

    path: str
    query: str
    headers: list[tuple[str, str]]
    subprotocols: list[str]
    frames: list[Frame] = field(default_factory=list)
    #: (code, reason) of the close frame received, or (None, None) if the TCP connection dropped without one.
    close: tuple[int | None, str | None] | None = None
    closed_during_handshake: bool = False
    ws: WebSocketConnection | None = None
    _stream: trio.SocketStream | None = None
    _wrapped: Freezable | None = None
    _scope: trio.CancelScope | None = None
    _changes: _Changes = field(default_factory=_Changes)

    def is_closed(self) -> bool:
        return self.close is not None

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return values[0] if values else None

    def params(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query, keep_blank_values=True)

    async def send(self, frame: Frame) -> None:
        assert self.ws is not None
        await self.ws.send_message(frame)

    async def recv(self) -> Frame:
        """Receive and record one frame (raises ConnectionClosed at the end)."""
        assert self.ws is not None
        frame = await self.ws.get_message()
        self.frames.append(frame)
        self._changes.notify()
        return frame

    async def wait_frames(self, count: int, timeout: float = TIMEOUT) -> list[Frame]:
        await self._changes.wait_for(lambda: len(self.frames) >= count or self.close is not None, timeout)
        return self.frames

    async def wait_closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str | None]:
        await self._changes.wait_for(lambda: self.close is not None, timeout)
        assert self.close is not None
        return self.close

    async def close_with(self, code: int, reason: str = "") -> None:
        assert self.ws is not None
        await self.ws.aclose(code, reason)

    def freeze(self) -> None:
        """Stop reading from the proxy altogether (pings go unanswered)."""
        assert self._wrapped is not None
        self._wrapped.freeze()

    async def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        assert self._stream is not None
        assert self._scope is not None
        await trio.aclose_forcefully(self._stream)
        self._scope.cancel()


Script = Callable[[UpstreamConnection], Awaitable[None]]


class ScriptedUpstream:
    """A Deepgram stand-in: see the module docstring. One script runs per accepted connection."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        hold: trio.Event | None = None,
        reject: int | None = None,
    ) -> None:
        self.script = script
        self.hold = hold
        self.reject = reject
        self.port = 0
        self.connections: list[UpstreamConnection] = []
        self.tcp_connections = 0
        self.live = 0
        self._changes = _Changes()

    def url(self, path: str = "/v1/agent/converse") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def wait_connection(self, index: int = 0, timeout: float = TIMEOUT) -> UpstreamConnection:
        await self._changes.wait_for(lambda: len(self.connections) > index, timeout)
        return self.connections[index]

    async def wait_idle(self, timeout: float = TIMEOUT) -> None:
        """Wait until no TCP connection to the upstream is open."""
        await self._changes.wait_for(lambda: self.live == 0, timeout)

    async def handle(self, stream: trio.SocketStream) -> None:
        self.tcp_connections += 1
        self.live += 1
        self._changes.notify()
        try:
            await self._serve(stream)
        finally:
            self.live -= 1
            await trio.aclose_forcefully(stream)
            self._changes.notify()

    async def _serve(self, stream: trio.SocketStream) -> None:
        head = await _read_head(stream)
        if head is None:
            return
        conn = _parse_head(head)
        conn._stream = stream
        conn._changes = self._changes
        self.connections.append(conn)
        self._changes.notify()
        if self.hold is not None and not await _hold_or_eof(stream, self.hold):
            conn.closed_during_handshake = True
            conn.close = (None, None)
            return
        async with trio.open_nursery() as nursery:
            conn._scope = nursery.cancel_scope
            conn._wrapped = Freezable(stream, head)
            request = await wrap_server_stream(nursery, conn._wrapped)
            if self.reject is not None:
                await request.reject(self.reject, body=b"rejected")
                nursery.cancel_scope.cancel()
                return
            offered = request.proposed_subprotocols
            conn.ws = await request.accept(subprotocol="token" if "token" in offered else None)
            try:
                if self.script is not None:
                    await self.script(conn)
                while True:
                    await conn.recv()
            except ConnectionClosed as exc:
                reason = exc.reason
                conn.close = (reason.code, reason.reason or "") if reason is not None else (None, None)
                if conn.close[0] == 1006:
                    conn.close = (None, None)
                self._changes.notify()
            nursery.cancel_scope.cancel()
        if not conn.is_closed():  # aborted by the script
            conn.close = (None, None)
            self._changes.notify()


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = await stream.receive_some(4096)
        except trio.BrokenResourceError:
            return None
        if not chunk or len(data) > 65536:
            return None
        data += chunk
    return data


def _parse_head(head: bytes) -> UpstreamConnection:
    lines = head.decode("latin-1").split("\r\n")
    target = lines[0].split(" ")[1]
    path, _, query = target.partition("?")
    headers = [
        (name.strip().lower(), value.strip()) for name, _, value in (line.partition(":") for line in lines[1:] if line)
    ]
    subprotocols = [
        item.strip() for name, value in headers if name == "sec-websocket-protocol" for item in value.split(",")
    ]
    return UpstreamConnection(path=path, query=query, headers=headers, subprotocols=subprotocols)


async def _hold_or_eof(stream: trio.SocketStream, hold: trio.Event) -> bool:
    """Wait for ``hold``; False if the peer closed the connection first (a client sends nothing before the 101)."""
    released = False
    async with trio.open_nursery() as nursery:

        async def release() -> None:
            nonlocal released
            await hold.wait()
            released = True
            nursery.cancel_scope.cancel()

        async def watch_eof() -> None:
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.receive_some(1)
            nursery.cancel_scope.cancel()

        nursery.start_soon(release)
        nursery.start_soon(watch_eof)
    return released


@asynccontextmanager
async def scripted_upstream(
    script: Script | None = None, *, hold: trio.Event | None = None, reject: int | None = None
) -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(script, hold=hold, reject=reject)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, upstream.handle, 0, host="127.0.0.1"))
        upstream.port = listeners[0].socket.getsockname()[1]
        yield upstream
        nursery.cancel_scope.cancel()


def proxy_config(
    upstream: ScriptedUpstream | None = None,
    *,
    key: str | None = FAKE_KEY,
    listen_path: str = "/v1/listen",
    agent_path: str = "/v1/agent/converse",
    limits: Limits | None = None,
    **overrides: object,
) -> Config:
    """A Config whose Deepgram upstreams are the scripted upstream (port 9 when there is none: nothing listens)."""
    port = upstream.port if upstream is not None else 9
    config = Config(
        port=0,
        deepgram_agent=Upstream(f"ws://127.0.0.1:{port}{agent_path}", key, UpstreamSource.URL),
        deepgram_listen=Upstream(f"ws://127.0.0.1:{port}{listen_path}", key, UpstreamSource.URL),
        limits=limits or Limits(ping_interval_s=0, close_timeout_s=2.0),
    )
    return replace(config, **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def running_proxy(config: Config) -> AsyncIterator[tuple[ProxyServer, int]]:
    server = ProxyServer(config)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        yield server, port
        nursery.cancel_scope.cancel()


@dataclass
class Client:
    """A component stand-in: a WebSocket to the proxy whose TCP stream the test can also drop."""

    ws: WebSocketConnection
    stream: trio.SocketStream
    subprotocol: str | None
    wrapped: Freezable

    async def send(self, frame: Frame) -> None:
        await self.ws.send_message(frame)

    async def receive(self, count: int, timeout: float = TIMEOUT) -> list[Frame]:
        with trio.fail_after(timeout):
            return [await self.ws.get_message() for _ in range(count)]

    async def receive_until_closed(self, timeout: float = TIMEOUT) -> tuple[list[Frame], tuple[int, str]]:
        """Every frame until the proxy closes, and the close (code, reason) it sent."""
        frames: list[Frame] = []
        with trio.fail_after(timeout):
            try:
                while True:
                    frames.append(await self.ws.get_message())
            except ConnectionClosed as exc:
                close = exc.reason
        assert close is not None
        return frames, (close.code, close.reason or "")

    async def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        await trio.aclose_forcefully(self.stream)

    def freeze(self) -> None:
        """Stop reading from the proxy altogether (pings go unanswered)."""
        self.wrapped.freeze()


@asynccontextmanager
async def connect(
    port: int,
    path: str = "/deepgram-proxy?service=agent",
    *,
    subprotocols: list[str] | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[Client]:
    """Open a WebSocket to the proxy (raises ConnectionRejected when it refuses the upgrade)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    wrapped = Freezable(stream)
    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(TIMEOUT):
                ws = await wrap_client_stream(
                    nursery,
                    wrapped,  # type: ignore[arg-type]
                    "127.0.0.1",
                    path,
                    subprotocols=subprotocols,
                    extra_headers=headers or [],
                )
            yield Client(ws, stream, ws.subprotocol, wrapped)
        finally:
            with trio.move_on_after(2) as cleanup:
                cleanup.shield = True
                await trio.aclose_forcefully(stream)
            nursery.cancel_scope.cancel()


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """A plain HTTP GET to the proxy: (status, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        data = b""
        with trio.fail_after(TIMEOUT):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def client_frames_seen(port: int) -> int:
    """How many client frames the proxy has received so far (from /metrics)."""
    _, body = await http_get(port, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith('proxy_frames_total{leg="client"}'):
            return int(float(line.split()[-1]))
    raise AssertionError("proxy_frames_total missing from /metrics")


async def refusal(port: int, path: str) -> ConnectionRejected:
    """The HTTP refusal the proxy answers an upgrade to ``path`` with (fails if the upgrade is accepted)."""
    refused: list[ConnectionRejected] = []
    try:
        async with connect(port, path):
            pass
    except* ConnectionRejected as group:
        rejected = group.exceptions[0]
        assert isinstance(rejected, ConnectionRejected)
        refused.append(rejected)
    assert refused, f"{path} was accepted"
    return refused[0]


def sdk_settings() -> Any:
    """A Voice Agent ``Settings`` built with the official SDK's model (imported lazily: a test-only dependency)."""
    from deepgram.agent.v1.types import AgentV1Settings

    fields: dict[str, Any] = {
        "audio": {
            "input": {"encoding": "linear16", "sample_rate": 16000},
            "output": {"encoding": "linear16", "sample_rate": 24000},
        },
        "agent": {
            "listen": {"provider": {"type": "deepgram", "model": "nova-3"}},
            "think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}, "prompt": "Be brief."},
            "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
        },
    }
    return AgentV1Settings(**fields)
