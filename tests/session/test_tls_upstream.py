"""A wss:// upstream over loopback TLS: certificate verification, and TLS running over the proxy's TCP transport."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio
import trustme
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from proxy import session as session_module
from proxy.config import Limits
from proxy.session import Session, UpstreamTarget, tcp_connector
from tests.wsmem import FakeUpstream, RelayCore, running_session


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def tls_echo_upstream(ca: trustme.CA) -> AsyncIterator[int]:
    """A WebSocket echo server on 127.0.0.1 behind TLS, with a certificate from ``ca``; yields its port."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        async with trio.open_nursery() as nursery:
            try:
                request = await wrap_server_stream(nursery, stream, max_message_size=4 << 20)
                ws = await request.accept()
                while True:
                    await ws.send_message(await ws.get_message())
            except (ConnectionClosed, trio.BrokenResourceError):
                pass
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_ssl_over_tcp, handle, 0, server_context)
        yield listeners[0].transport_listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def session_to(port: int) -> AbstractAsyncContextManager[tuple[WebSocketConnection, FakeUpstream, Session, trio.Event]]:
    """A session whose upstream is ``wss://127.0.0.1:port``, opened by the production connector."""
    return running_session(
        RelayCore(),
        limits=Limits(ping_interval_s=0, upstream_connect_timeout_s=10.0),
        target=UpstreamTarget(f"wss://127.0.0.1:{port}/v1/realtime"),
        connector=tcp_connector,
    )


async def test_an_untrusted_upstream_certificate_is_refused(ca: trustme.CA) -> None:
    async with tls_echo_upstream(ca) as port, session_to(port) as (browser, _upstream, _session, _done):
        with trio.fail_after(10):  # without verification the session would open and say nothing
            error = json.loads(await browser.get_message())
        assert error["code"] == "upstream_connect_failed"
        with pytest.raises(ConnectionClosed) as info:
            await browser.get_message()
        assert info.value.reason is not None
        assert info.value.reason.code == 1011


async def test_a_trusted_upstream_carries_large_messages_both_ways_over_tls(
    ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    monkeypatch.setattr(session_module, "_ssl_context", client_context)
    big = bytes(range(256)) * 3072  # 768 KiB: many TLS records and partial socket writes
    async with tls_echo_upstream(ca) as port, session_to(port) as (browser, _upstream, _session, _done):
        await browser.send_message("hello")
        assert await browser.get_message() == "hello"
        await browser.send_message(big)
        assert await browser.get_message() == big
        await browser.aclose()
