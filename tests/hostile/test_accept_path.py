"""The accept path on a real listening socket: refused connections cost no stream, and running out of descriptors
pauses accepting without ending it (proxy/server.py, ``_accept_socket``)."""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Any

import pytest
import trio

import proxy.server
from proxy.config import Config, Limits
from proxy.server import ProxyServer
from tests.server.test_edge import exchange, metric


class FailingSocket(socket.socket):
    """The listener's socket, whose first ``failures`` accepts fail as if the process were out of descriptors."""

    failures = 0

    def accept(self) -> tuple[socket.socket, Any]:
        if FailingSocket.failures:
            FailingSocket.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


async def test_running_out_of_descriptors_pauses_accepts_and_serving_goes_on(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(listening: trio.socket.SocketType) -> socket.socket:
        raw = FailingSocket(fileno=os.dup(listening.fileno()))
        raw.setblocking(False)
        return raw

    FailingSocket.failures = 30
    monkeypatch.setattr(proxy.server, "_raw_listening_socket", failing)
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    server = ProxyServer(Config(port=0, limits=Limits(ping_interval_s=0)), routes={})
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener], port)
        start = trio.current_time()
        answer = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        # Pauses of 0.1, 0.2, 0.4, 0.8 s, then 1 s each: the 31st accept is at 27.5 s.
        assert trio.current_time() - start == pytest.approx(27.5)
        nursery.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 200")
    assert metric(answer.partition(b"\r\n\r\n")[2].decode(), 'proxy_accept_errors_total{errno="EMFILE"} 30')
    warnings = [r for r in caplog.records if r.name == "proxy.server" and r.levelno == logging.WARNING]
    assert len(warnings) == 3  # paced: at 0, 10.5 and 20.5 s
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_reconnect_storm_over_the_address_cap_is_refused_at_once_and_serving_goes_on(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    limits = Limits(ping_interval_s=0, max_connections_per_ip=2)
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    server = ProxyServer(Config(port=0, limits=limits), routes={})
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener], port)
        held = [await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2") for _ in range(2)]
        start = trio.current_time()
        for _ in range(200):
            stream = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
            async with stream:
                assert await stream.receive_some() == b""
        assert trio.current_time() == start
        answer = await exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.3")
        assert answer.startswith(b"HTTP/1.1 200")
        assert server.metrics.rejected_total == {"max_connections_per_ip": 200}
        assert server.admission.open == 2
        for stream in held:
            await stream.aclose()
        nursery.cancel_scope.cancel()
    refusals = [r for r in caplog.records if "max_connections_per_ip" in r.getMessage()]
    assert len(refusals) == 1
