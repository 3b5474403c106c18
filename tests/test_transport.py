"""SocketTransport: the sessions' TCP stream. Real sockets (a socketpair, and loopback TCP for take_over)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from proxy.transport import SocketTransport


def pair() -> tuple[SocketTransport, socket.socket]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    return SocketTransport(ours), theirs


async def test_bytes_flow_both_ways_and_eof_reads_empty() -> None:
    transport, peer = pair()
    await transport.send_all(b"hello")
    assert peer.recv(100) == b"hello"
    peer.send(b"world")
    assert await transport.receive_some(100) == b"world"
    peer.shutdown(socket.SHUT_WR)
    assert await transport.receive_some() == b""
    await transport.aclose()
    peer.close()


async def test_a_large_send_waits_for_the_peer_to_read_and_arrives_whole() -> None:
    transport, peer = pair()
    payload = bytes(range(256)) * 40_000  # ~10 MB: far more than the socket buffers hold
    received = bytearray()

    async def read_slowly() -> None:
        while len(received) < len(payload):
            await trio.lowlevel.wait_readable(peer)
            received.extend(peer.recv(1 << 16))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_slowly)
        await transport.send_all(payload)
    assert bytes(received) == payload
    await transport.aclose()
    peer.close()


async def test_reads_return_what_arrived_in_order_across_many_messages() -> None:
    transport, peer = pair()
    chunks = [bytes([i]) * (1 + i * 37 % 5000) for i in range(200)]
    got = bytearray()

    async def write() -> None:
        for chunk in chunks:
            await trio.lowlevel.wait_writable(peer)
            peer.sendall(chunk)
            await trio.lowlevel.checkpoint()
        peer.shutdown(socket.SHUT_WR)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        while data := await transport.receive_some(3000):
            assert len(data) <= 3000
            got.extend(data)
    assert bytes(got) == b"".join(chunks)
    await transport.aclose()
    peer.close()


async def test_closing_from_another_task_wakes_a_blocked_reader_with_closed_resource_error() -> None:
    transport, peer = pair()
    raised: list[BaseException] = []

    async def reader() -> None:
        try:
            await transport.receive_some()
        except trio.ClosedResourceError as exc:
            raised.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await transport.aclose()
    assert len(raised) == 1
    with pytest.raises(trio.ClosedResourceError):
        await transport.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await transport.receive_some()
    await transport.aclose()  # idempotent
    peer.close()


async def test_closing_wakes_a_sender_blocked_on_a_full_socket() -> None:
    transport, peer = pair()
    raised: list[BaseException] = []

    async def sender() -> None:
        try:
            await transport.send_all(b"x" * 50_000_000)
        except trio.ClosedResourceError as exc:
            raised.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        await transport.aclose()
    assert len(raised) == 1
    peer.close()


async def test_a_reset_peer_surfaces_as_broken_resource_error() -> None:
    transport, peer = pair()
    peer.close()
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):  # the first sends may still land in the buffer
            await transport.send_all(b"x" * 100_000)
    await transport.aclose()


async def test_blocked_operations_are_cancellable() -> None:
    transport, peer = pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()  # the blocked read ends; the nursery would hang otherwise
    with trio.CancelScope() as scope:
        scope.cancel()
        await transport.send_all(b"never")  # cancelled before anything is written
    assert scope.cancelled_caught
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(10)
    await transport.aclose()
    peer.close()


async def test_concurrent_receivers_or_senders_are_refused() -> None:
    transport, peer = pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await transport.receive_some()
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport.send_all, b"x" * 50_000_000)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await transport.send_all(b"y")
        nursery.cancel_scope.cancel()
    await transport.aclose()
    peer.close()


async def test_a_flooding_peer_does_not_starve_other_tasks() -> None:
    """receive_some always has a schedule point, even when data is already waiting on every call."""
    transport, peer = pair()
    peer.sendall(b"z" * 200_000)
    ticks = 0
    reads = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.lowlevel.checkpoint()
        start = ticks
        for _ in range(50):
            assert await transport.receive_some(1000)  # a full read each time: never waits
            reads += 1
        assert ticks - start >= reads - 1
        nursery.cancel_scope.cancel()
    await transport.aclose()
    peer.close()


async def test_take_over_moves_a_tcp_connection_out_of_a_socket_stream() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[trio.SocketStream] = []

        async def accept() -> None:
            accepted.append(await listeners[0].accept())

        nursery.start_soon(accept)
        client = await trio.open_tcp_stream("127.0.0.1", port)
    server_stream = accepted[0]
    transport = SocketTransport.take_over(server_stream)
    assert transport.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # Trio's option kept
    await client.send_all(b"ping")
    assert await transport.receive_some() == b"ping"
    await transport.send_all(b"pong")
    assert await client.receive_some() == b"pong"
    await server_stream.aclose()  # the old stream no longer owns the connection: closing it changes nothing
    await transport.send_all(b"still open")
    assert await client.receive_some() == b"still open"
    await transport.aclose()
    assert await client.receive_some() == b""
    await client.aclose()
    await listeners[0].aclose()
