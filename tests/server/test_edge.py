"""The listener before the handshake, on loopback sockets: the handshake deadline, the caps, client addresses
behind trusted proxies, request-head limits, the order of refusals, and an accept loop out of file descriptors."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from proxy.config import Config, Limits, networks
from proxy.server import LOG_INTERVAL_S, ProxyServer
from tests.promtext import has_sample
from tests.server.test_server import echo_upstream, http_get, proxy

UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
)


def limits(**values: float) -> Limits:
    return Limits(ping_interval_s=0, **values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_internal_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert not [r for r in caplog.records if r.exc_info], "a handler raised"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def exchange(port: int, data: bytes, source: str = "127.0.0.1") -> bytes:
    """Send ``data`` on a new connection from ``source`` and read until the proxy closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    async with stream:
        await stream.send_all(data)
        received = b""
        with trio.fail_after(60):
            while chunk := await stream.receive_some():
                received += chunk
    return received


async def upgrade(port: int, path: str = "/relay", source: str = "127.0.0.1", **headers: str) -> trio.SocketStream:
    """Open a WebSocket upgrade from ``source``; the stream is left open (positioned after the answer's head)."""
    extra = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    await stream.send_all(UPGRADE.format(path=path, extra=extra).encode())
    return stream


async def status_of(stream: trio.SocketStream) -> int:
    received = b""
    with trio.fail_after(60):
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some()
            if not chunk:
                return 0  # closed without an answer
            received += chunk
    return int(received.split(b" ", 2)[1])


def metric(text: str, line: str) -> bool:
    return has_sample(text, line)


# -- the handshake deadline ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\n"])
async def test_a_too_slow_handshake_is_closed_quietly_and_counted(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture, sent: bytes
) -> None:
    async with proxy(Config(port=0, limits=limits(handshake_timeout_s=10.0))) as (server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(sent)
            start = trio.current_time()
            assert await stream.receive_some() == b""
            assert trio.current_time() - start == pytest.approx(10.0)
        _status, _headers, body = await http_get(port, "/metrics")
    assert server.metrics.session_errors_total == 0
    assert metric(body.decode(), 'proxy_rejected_total{reason="handshake_timeout"} 1')
    assert not [r for r in caplog.records if r.name.startswith("proxy") and r.levelno > logging.DEBUG]


async def test_a_peer_trickling_its_head_does_not_extend_the_deadline(autojump_clock: trio.abc.Clock) -> None:
    async with proxy(Config(port=0, limits=limits(handshake_timeout_s=10.0))) as (server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        start = trio.current_time()
        async with stream:
            with pytest.raises(trio.BrokenResourceError):
                for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 100:
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(0.5)
            assert await stream.receive_some() == b""
        closed_after = trio.current_time() - start
    # Bytes sent after the proxy closed may take one more step to be refused by the kernel.
    assert 10.0 <= closed_after <= 11.0
    assert server.metrics.rejected_total == {"handshake_timeout": 1}


# -- caps: refused at once, never queued -----------------------------------------------------------------------


async def test_idle_sockets_from_one_address_never_delay_a_probe_from_another(autojump_clock: trio.abc.Clock) -> None:
    """The reported break: with the default limits, 200 connections that send nothing from one address made
    /health from another address wait for the handshake timeout."""
    async with proxy() as (server, port):
        idle = [await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2") for _ in range(200)]
        await trio.sleep(1)
        start = trio.current_time()
        status, _headers, _body = await http_get(port, "/health")
        assert status == 200
        assert trio.current_time() == start
        per_ip = server.config.limits.max_connections_per_ip
        assert server.metrics.rejected_total == {"max_connections_per_ip": 200 - per_ip}
        for stream in idle:
            await stream.aclose()


async def test_connections_over_the_per_address_cap_are_closed_at_once(autojump_clock: trio.abc.Clock) -> None:
    async with proxy(Config(port=0, limits=limits(max_connections_per_ip=2))) as (_server, port):
        held = [await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2") for _ in range(2)]
        await trio.sleep(1)
        start = trio.current_time()
        assert await exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.2") == b""
        assert trio.current_time() == start
        assert (await exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))[:12] == b"HTTP/1.1 200"
        await held[0].aclose()
        await trio.sleep(1)
        answer = await exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.2")
        assert answer.startswith(b"HTTP/1.1 200")  # the count went down with the closed connection
        await held[1].aclose()
        _status, _headers, body = await http_get(port, "/metrics")
    assert metric(body.decode(), 'proxy_rejected_total{reason="max_connections_per_ip"} 1')


async def test_connections_over_the_total_cap_are_closed_at_once(autojump_clock: trio.abc.Clock) -> None:
    async with proxy(Config(port=0, limits=limits(max_connections=3))) as (server, port):
        held = [await trio.open_tcp_stream("127.0.0.1", port, local_address=f"127.0.0.{i}") for i in (2, 3, 4)]
        await trio.sleep(1)
        assert await exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") == b""
        assert server.metrics.rejected_total == {"max_connections": 1}
        for stream in held:
            await stream.aclose()


async def test_a_cap_refusal_is_one_warning_per_interval(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config(port=0, limits=limits(max_connections_per_ip=1, handshake_timeout_s=60))
    async with proxy(config) as (server, port):
        held = await trio.open_tcp_stream("127.0.0.1", port)
        await trio.sleep(1)
        for _ in range(5):
            assert await exchange(port, b"") == b""
        await trio.sleep(LOG_INTERVAL_S)
        assert await exchange(port, b"") == b""
        await held.aclose()
    warnings = [r for r in caplog.records if r.name == "proxy.server" and r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "max_connections_per_ip" in warnings[0].getMessage()
    assert warnings[1].getMessage().endswith("(and 4 more since the last such line)")
    assert server.metrics.rejected_total == {"max_connections_per_ip": 6}


# -- client addresses behind trusted proxies -------------------------------------------------------------------


async def test_behind_a_trusted_proxy_the_per_address_cap_applies_to_the_forwarded_client() -> None:
    """All TCP peers are the balancer (127.0.0.2): it is never capped itself; each forwarded client is."""
    config = Config(port=0, trusted_proxies=networks("127.0.0.2", "test"), limits=limits(max_connections_per_ip=1))
    async with echo_upstream() as up, proxy(config, upstream_port=up) as (server, port):
        first = await upgrade(port, source="127.0.0.2", x_forwarded_for="203.0.113.7")
        assert await status_of(first) == 101
        second = await upgrade(port, source="127.0.0.2", x_forwarded_for="198.51.100.1, 203.0.113.7")
        assert await status_of(second) == 503  # the right-most untrusted entry is the client
        other = await upgrade(port, source="127.0.0.2", x_forwarded_for="203.0.113.7, 198.51.100.1")
        assert await status_of(other) == 101
        probes = [await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2") for _ in range(3)]
        status, _headers, _body = await http_get(port, "/health")
        assert status == 200
        for stream in (first, second, other, *probes):
            await stream.aclose()
    assert server.metrics.rejected_total == {"max_connections_per_ip": 1}


async def test_a_forwarded_for_header_from_an_untrusted_peer_is_ignored() -> None:
    config = Config(port=0, limits=limits(max_connections_per_ip=1))
    async with echo_upstream() as up, proxy(config, upstream_port=up) as (server, port):
        first = await upgrade(port, source="127.0.0.3", x_forwarded_for="203.0.113.7")
        assert await status_of(first) == 101
        second = await upgrade(port, source="127.0.0.3", x_forwarded_for="198.51.100.9")
        assert await status_of(second) == 0  # counted by its TCP peer: refused at accept
        for stream in (first, second):
            await stream.aclose()
    assert server.metrics.rejected_total == {"max_connections_per_ip": 1}


# -- the request head ------------------------------------------------------------------------------------------


def head_of(size: int, path: str = "/health") -> bytes:
    start = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Pad: ".encode()
    head = start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == size
    return head


async def test_a_head_of_exactly_16_kib_is_served_and_one_byte_more_is_431() -> None:
    async with proxy() as (server, port):
        assert (await exchange(port, head_of(16 * 1024)))[:12] == b"HTTP/1.1 200"
        assert (await exchange(port, head_of(16 * 1024 + 1)))[:12] == b"HTTP/1.1 431"
        assert (await exchange(port, head_of(40_000)))[:12] == b"HTTP/1.1 431"
    assert server.metrics.rejected_total == {"request_head_too_large": 2}


async def test_more_than_100_headers_is_431() -> None:
    def head(count: int) -> bytes:
        return b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(count - 1)) + b"Host: x\r\n\r\n"

    async with proxy() as (server, port):
        assert (await exchange(port, head(100)))[:12] == b"HTTP/1.1 200"
        assert (await exchange(port, head(101)))[:12] == b"HTTP/1.1 431"
    assert server.metrics.rejected_total == {"too_many_headers": 1}


async def test_authentication_is_decided_before_capacity() -> None:
    config = Config(port=0, client_tokens=("s3cret",), limits=limits(max_sessions=1))
    async with echo_upstream() as up, proxy(config, upstream_port=up) as (server, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/relay?token=s3cret") as ws:
            await ws.send_message("x")
            assert await ws.get_message() == "x"
            with pytest.raises(ConnectionRejected) as unauthenticated:
                async with open_websocket_url(f"ws://127.0.0.1:{port}/relay?token=wrong"):
                    pass
            with pytest.raises(ConnectionRejected) as over_capacity:
                async with open_websocket_url(f"ws://127.0.0.1:{port}/relay?token=s3cret"):
                    pass
    assert unauthenticated.value.status_code == 401
    assert over_capacity.value.status_code == 503
    assert (b"retry-after", b"1") in [(k.lower(), v) for k, v in over_capacity.value.headers]
    assert server.metrics.rejected_total == {"unauthorized_bad_token": 1, "capacity": 1}


# -- the accept loop -------------------------------------------------------------------------------------------


class FailingListener(trio.abc.Listener[trio.SocketStream]):
    """A real listener whose first ``failures`` accepts fail as if the process were out of file descriptors."""

    def __init__(self, real: trio.SocketListener, failures: int) -> None:
        self.real = real
        self.failures = failures

    async def accept(self) -> trio.SocketStream:
        await trio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return await self.real.accept()

    async def aclose(self) -> None:
        await self.real.aclose()


async def test_the_accept_loop_survives_running_out_of_file_descriptors(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    real = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = real.socket.getsockname()[1]
    server = ProxyServer(Config(port=0, limits=limits()), routes={})
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [FailingListener(real, failures=30)], port)
        start = trio.current_time()
        answer = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        # Pauses of 0.1, 0.2, 0.4, 0.8 s, then 1 s each: the 31st accept is at 27.5 s.
        assert trio.current_time() - start == pytest.approx(27.5)
        nursery.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 200")
    assert metric(answer.partition(b"\r\n\r\n")[2].decode(), 'proxy_accept_errors_total{errno="EMFILE"} 30')
    # One line at 0 s, the next failure after 10 s (10.5 s) and after 20 s (20.5 s), each counting what it held back.
    warnings = [r.getMessage() for r in caplog.records if r.name == "proxy.server" and r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all("EMFILE" in line for line in warnings)
    assert "more since" not in warnings[0]
    assert warnings[1].endswith("(and 12 more since the last such line)")
    assert warnings[2].endswith("(and 9 more since the last such line)")
