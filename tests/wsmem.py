"""In-memory WebSocket plumbing for session tests: both legs of a Session without sockets.

``browser`` is the test's view of the component, ``upstream`` the test's view of the provider; the Session under
test sits between them exactly as in production, only the byte streams are ``trio.testing.memory_stream_pair``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
import trio.testing
from trio_websocket import WebSocketConnection, WebSocketRequest, wrap_client_stream, wrap_server_stream

from proxy.config import Limits
from proxy.core import Close, Frame, SessionCore, UpstreamFailure, relay_close
from proxy.http import RequestHead
from proxy.server import receive_request_head
from proxy.session import Connector, Session, UpstreamTarget
from proxy.ws import Upgrade, WebSocket, accept_response, connect, parse_upgrade


async def answer_upgrade(stream: trio.abc.Stream) -> bytes:
    """Read a WebSocket upgrade request and answer 101, as ``proxy.server`` does; returns bytes read past the head."""
    head = await receive_request_head(stream)
    assert isinstance(head, RequestHead)
    upgrade = parse_upgrade(head.request)
    assert isinstance(upgrade, Upgrade)
    await stream.send_all(accept_response(upgrade.key))
    return head.buffered


async def accept_proxy_side(stream: trio.abc.Stream, *, max_message_size: int = 1 << 20) -> WebSocket:
    """The proxy's server side of a WebSocket handshake, as ``proxy.server`` does it."""
    buffered = await answer_upgrade(stream)
    return WebSocket(stream, client=False, max_message_size=max_message_size, buffered=buffered)


async def ws_pair(nursery: trio.Nursery, *, lockstep: bool = False) -> tuple[WebSocketConnection, WebSocket]:
    """An accepted (browser, proxy's client leg) WebSocket pair over memory streams.

    The browser side is trio-websocket, an independent implementation; the proxy side is ``proxy.ws``.
    ``lockstep``: a send completes only when the peer reads it (a peer that stops reading stalls the sender, as a
    full TCP window does); otherwise sends are buffered without limit.
    """
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_stream, server_stream = pair()
    accepted: list[WebSocket] = []

    async def accept() -> None:
        accepted.append(await accept_proxy_side(server_stream))

    async with trio.open_nursery() as handshake:
        handshake.start_soon(accept)
        client = await wrap_client_stream(nursery, client_stream, "proxy.test", "/")  # type: ignore[arg-type]
    return client, accepted[0]


@dataclass
class FakeUpstream:
    """A connector for Session that hands the upstream's server side to the test.

    ``hold`` (a trio.Event) delays accepting the handshake until set; ``reject`` answers it with that status.
    ``connections`` counts every connection attempt, ``live`` the ones whose stream is still open.
    """

    hold: trio.Event | None = None
    reject: int | None = None
    #: Sends complete only when the proxy reads them (a proxy that stops reading stalls the upstream).
    lockstep: bool = False
    connections: int = 0
    live: int = 0
    accepted: trio.MemorySendChannel[WebSocketConnection] | None = None
    receive: trio.MemoryReceiveChannel[WebSocketConnection] | None = None
    requests: list[WebSocketRequest] = field(default_factory=list)
    #: Where the upstream's own tasks run (a test nursery, never the session's, which the proxy cancels).
    nursery: trio.Nursery | None = None

    def __post_init__(self) -> None:
        self.accepted, self.receive = trio.open_memory_channel[WebSocketConnection](8)

    async def connector(self, target: UpstreamTarget, limits: Limits) -> WebSocket:
        self.connections += 1
        pair = trio.testing.lockstep_stream_pair if self.lockstep else trio.testing.memory_stream_pair
        client_stream, server_stream = pair()
        self.live += 1
        send_stream = client_stream.send_stream
        if isinstance(send_stream, trio.testing.MemorySendStream):  # lockstep streams have no hook: not counted
            closed_hook = send_stream.close_hook

            def on_close() -> None:
                self.live -= 1
                if closed_hook is not None:
                    closed_hook()

            send_stream.close_hook = on_close
        assert self.nursery is not None, "run the FakeUpstream inside running_session()"
        self.nursery.start_soon(self._serve, self.nursery, server_stream)
        try:
            with trio.fail_after(limits.upstream_connect_timeout_s):
                return await connect(
                    client_stream,
                    "upstream.test",
                    target.url,
                    subprotocols=target.subprotocols,
                    extra_headers=target.headers,
                    max_message_size=limits.upstream_max_message_bytes,
                )
        except BaseException:
            await trio.aclose_forcefully(client_stream)
            raise

    async def _serve(self, nursery: trio.Nursery, stream: trio.abc.Stream) -> None:
        request = await wrap_server_stream(nursery, stream)
        self.requests.append(request)
        if self.hold is not None:
            await self.hold.wait()
        if self.reject is not None:
            await request.reject(self.reject)
            return
        ws = await request.accept()
        assert self.accepted is not None
        await self.accepted.send(ws)

    async def next(self) -> WebSocketConnection:
        assert self.receive is not None
        return await self.receive.receive()


@asynccontextmanager
async def running_session(
    core: SessionCore,
    *,
    limits: Limits | None = None,
    upstream: FakeUpstream | None = None,
    target: UpstreamTarget | UpstreamFailure | None = None,
    lockstep_browser: bool = False,
    connector: Connector | None = None,
) -> AsyncIterator[tuple[WebSocketConnection, FakeUpstream, Session, trio.Event]]:
    """Run a Session between an in-memory browser and a FakeUpstream; yields (browser, upstream, session, done).

    ``connector`` replaces the FakeUpstream's (for example ``tcp_connector`` to a real server).
    """
    limits = limits or Limits(ping_interval_s=0)
    upstream = upstream or FakeUpstream()
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        upstream.nursery = nursery
        browser, client_leg = await ws_pair(nursery, lockstep=lockstep_browser)
        session = Session(
            client_leg,
            core,
            target or UpstreamTarget("/v1/realtime"),
            limits,
            connector=connector or upstream.connector,
        )

        async def run() -> None:
            try:
                await session.run()
            finally:
                done.set()

        nursery.start_soon(run)
        yield browser, upstream, session, done
        with trio.fail_after(60):
            await done.wait()
        nursery.cancel_scope.cancel()


class RelayCore:
    """The smallest useful core: relay both ways, queue client frames until the upstream is open."""

    def __init__(self) -> None:
        self.to_client: list[Frame] = []
        self.to_upstream: list[Frame] = []
        self._queue: list[Frame] = []
        self._open = False

    def upstream_opened(self, now: float) -> None:
        self._open = True
        self.to_upstream += self._queue
        self._queue = []

    def client_message(self, message: Frame, now: float) -> None:
        (self.to_upstream if self._open else self._queue).append(message)

    def upstream_message(self, message: Frame, now: float) -> None:
        self.to_client.append(message)

    def timer_fired(self, now: float) -> None:
        pass

    def next_deadline(self) -> float | None:
        return None

    def upstream_failed(self, failure: UpstreamFailure, now: float) -> Close:
        code, description = failure.error()
        self.to_client.append(json.dumps({"type": "Error", "description": description, "code": code}))
        return failure.close()

    def upstream_closed(self, code: int | None, reason: str | None, now: float) -> Close:
        return relay_close(code, reason)

    def client_closed(self, code: int | None, reason: str | None, now: float) -> Close:
        return relay_close(code, reason)

    def session_expired(self, now: float) -> tuple[Close, Close]:
        self.to_client.append(
            json.dumps(
                {
                    "type": "Error",
                    "description": "The session reached the proxy's maximum duration.",
                    "code": "session_max_duration",
                }
            )
        )
        return Close(1000, "Maximum session duration"), Close(1000)

    def fatal(self) -> Close | None:
        return None
