"""proxy.ws.connection over in-memory streams: against trio-websocket (an independent implementation) where a normal
peer will do, and against a raw-bytes peer (tests/ws/wire.py) where the test needs to see or send exact frames."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
import trio_websocket
from trio_websocket import WebSocketConnection, WebSocketRequest, wrap_client_stream, wrap_server_stream

from proxy.ws import CloseReason, ConnectionClosed, ConnectionRejected, HandshakeFailed, WebSocket, connect
from proxy.ws.connection import RECEIVE_BYTES
from proxy.ws.handshake import ClientHandshake
from tests.ws.wire import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, RawPeer, WireFrame, frame, parse_frames
from tests.wsmem import accept_proxy_side, ws_pair

MiB = 1 << 20
KEY = b"\x0a\x0b\x0c\x0d"


def raw_pair(
    *,
    client: bool = False,
    max_message_size: int = MiB,
    lockstep: bool = False,
    buffered: bytes = b"",
    receive_bytes: int = RECEIVE_BYTES,
) -> tuple[WebSocket, RawPeer]:
    """Our WebSocket on one end of an in-memory stream, a raw peer on the other. ``client``: our role."""
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    ours, theirs = pair()
    ws = WebSocket(
        ours, client=client, max_message_size=max_message_size, buffered=buffered, receive_bytes=receive_bytes
    )
    return ws, RawPeer(theirs, mask=not client)


@dataclass
class Outcome:
    """What a background call ended with."""

    done: trio.Event = field(default_factory=trio.Event)
    value: object = None
    error: BaseException | None = None

    async def run(self, call: Callable[[], Awaitable[object]]) -> None:
        try:
            self.value = await call()
        except (ConnectionClosed, trio.BusyResourceError) as exc:
            self.error = exc
        finally:
            self.done.set()

    @property
    def closed(self) -> CloseReason:
        assert isinstance(self.error, ConnectionClosed), f"expected ConnectionClosed, got {self.error!r}"
        return self.error.reason


def background(nursery: trio.Nursery, call: Callable[[], Awaitable[object]]) -> Outcome:
    outcome = Outcome()
    nursery.start_soon(outcome.run, call)
    return outcome


def typed(message: object) -> tuple[str, object]:
    return type(message).__name__, message


async def tw_closed(ws: WebSocketConnection) -> tuple[int, str | None]:
    """The close code and reason trio-websocket saw."""
    with pytest.raises(trio_websocket.ConnectionClosed) as info:
        while True:
            await ws.get_message()
    return info.value.reason.code, info.value.reason.reason


# -- messages ----------------------------------------------------------------------------------------------------

MESSAGES: list[str | bytes] = ["hello", "", "héllo wörld 😀 𝄞", b"", b"\x00\xff" * 10, "x" * 70_000, os.urandom(65_536)]


async def test_text_and_binary_both_ways_with_trio_websocket(nursery: trio.Nursery) -> None:
    browser, ws = await ws_pair(nursery)
    for message in MESSAGES:
        await browser.send_message(message)
        assert typed(await ws.get_message()) == typed(message)
    for message in MESSAGES:
        await ws.send_message(message)
        assert typed(await browser.get_message()) == typed(message)


async def test_one_mebibyte_messages_both_ways(nursery: trio.Nursery) -> None:
    browser, ws = await ws_pair(nursery)
    binary = os.urandom(MiB)
    text = "é😀" * (MiB // 6) + "abcd"
    assert len(text.encode()) == MiB
    for message in (binary, text):
        await browser.send_message(message)
        assert typed(await ws.get_message()) == typed(message)
        await ws.send_message(message)
        assert typed(await browser.get_message()) == typed(message)


@pytest.mark.parametrize("client", [False, True])
async def test_messages_from_a_raw_peer_and_the_frames_we_write(client: bool) -> None:
    ws, peer = raw_pair(client=client)
    await peer.send(TEXT, "😀".encode()[:2], fin=False)
    await peer.send(CONTINUATION, "😀".encode()[2:])
    await peer.send(BINARY, b"")
    assert typed(await ws.get_message()) == typed("😀")
    assert typed(await ws.get_message()) == typed(b"")
    await ws.send_message("ok")
    await ws.send_message(b"\x01")
    first, second = await peer.receive_frame(), await peer.receive_frame()
    assert first is not None
    assert second is not None
    # a client masks every frame, a server never does
    assert (first.key is not None, second.key is not None) == (client, client)
    assert (first.fin, first.rsv, first.opcode, first.payload) == (True, 0, TEXT, b"ok")
    assert (second.fin, second.rsv, second.opcode, second.payload) == (True, 0, BINARY, b"\x01")


# -- opening: connect() against trio-websocket, and the subprotocol -----------------------------------------------


async def serve_trio_websocket(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    requests: trio.MemorySendChannel[WebSocketRequest],
) -> None:
    request = await wrap_server_stream(nursery, stream)
    await requests.send(request)


async def test_connect_to_trio_websocket_with_a_subprotocol(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    send, receive = trio.open_memory_channel[WebSocketRequest](1)
    nursery.start_soon(serve_trio_websocket, nursery, server_stream, send)
    accepted: list[WebSocketConnection] = []

    async def accept() -> None:
        request = await receive.receive()
        assert request.path == "/v1/realtime?model=m"
        assert request.proposed_subprotocols == ("v1.agent", "v2.agent")
        assert (b"authorization", b"Bearer sk-1") in request.headers
        accepted.append(await request.accept(subprotocol="v2.agent"))

    nursery.start_soon(accept)
    ws = await connect(
        client_stream,
        "upstream.test",
        "/v1/realtime?model=m",
        subprotocols=("v1.agent", "v2.agent"),
        extra_headers=((b"Authorization", b"Bearer sk-1"),),
        max_message_size=MiB,
    )
    assert ws.subprotocol == "v2.agent"
    await trio.testing.wait_all_tasks_blocked()
    (server,) = accepted
    assert server.subprotocol == "v2.agent"
    await server.send_message("welcome")
    assert await ws.get_message() == "welcome"
    big = os.urandom(MiB)
    await ws.send_message(big)
    assert await server.get_message() == big
    await ws.aclose(1000, "done")
    assert await tw_closed(server) == (1000, "done")
    assert ws.closed == CloseReason(1000, "done", by_peer=False)


async def test_connect_without_a_subprotocol(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    send, receive = trio.open_memory_channel[WebSocketRequest](1)
    nursery.start_soon(serve_trio_websocket, nursery, server_stream, send)

    async def accept() -> None:
        await (await receive.receive()).accept()

    nursery.start_soon(accept)
    ws = await connect(client_stream, "upstream.test", "/", max_message_size=MiB)
    assert ws.subprotocol is None


async def test_connect_rejected_by_trio_websocket(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    send, receive = trio.open_memory_channel[WebSocketRequest](1)
    nursery.start_soon(serve_trio_websocket, nursery, server_stream, send)

    async def reject() -> None:
        request = await receive.receive()
        await request.reject(403, extra_headers=[(b"Content-Type", b"text/plain")], body=b"bad key")

    nursery.start_soon(reject)
    with pytest.raises(ConnectionRejected) as info:
        await connect(client_stream, "upstream.test", "/", max_message_size=MiB)
    assert info.value.status_code == 403
    assert info.value.body == b"bad key"
    assert (b"content-type", b"text/plain") in info.value.headers


async def test_connect_to_a_server_that_hangs_up_fails() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await server_stream.send_stream.aclose()  # the request is received, the answer is EOF
    with pytest.raises(HandshakeFailed):
        await connect(client_stream, "upstream.test", "/", max_message_size=MiB)


def test_the_subprotocol_attribute() -> None:
    ours, _ = trio.testing.memory_stream_pair()
    assert WebSocket(ours, client=False, max_message_size=1).subprotocol is None
    assert WebSocket(ours, client=False, max_message_size=1, subprotocol="chat").subprotocol == "chat"


# -- bytes that arrived with the handshake --------------------------------------------------------------------------


async def test_buffered_bytes_are_decoded_first() -> None:
    second = frame(BINARY, b"second", key=KEY)
    ws, peer = raw_pair(buffered=frame(TEXT, b"first", key=KEY) + second[:5])
    assert await ws.get_message() == "first"
    await peer.stream.send_all(second[5:] + frame(TEXT, b"third", key=KEY))
    assert await ws.get_message() == b"second"
    assert await ws.get_message() == "third"


async def test_frames_sent_with_the_request_head_reach_the_server_side() -> None:
    browser, server = trio.testing.memory_stream_pair()
    handshake = ClientHandshake()
    request = handshake.request("proxy.test", "/agent")
    early = frame(TEXT, b"early", key=KEY) + frame(PING, b"p", key=KEY) + frame(BINARY, b"\x00", key=KEY)
    await browser.send_all(request + early)
    ws = await accept_proxy_side(server)
    outcome = handshake.receive_data(await browser.receive_some())
    assert outcome is not None
    assert await ws.get_message() == "early"
    assert await ws.get_message() == b"\x00"
    frames, rest = parse_frames(await browser.receive_some())
    assert (frames, rest) == ([WireFrame(True, 0, PONG, None, b"p")], b"")


async def test_frames_sent_with_the_101_reach_the_client_side(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def server() -> None:
        ws = await accept_proxy_side(server_stream)  # answers with the 101 ...
        await ws.send_message("welcome")  # ... and nothing reads in between: both are in one receive
        await ws.send_message(b"\x01")

    nursery.start_soon(server)
    await trio.testing.wait_all_tasks_blocked()
    ws = await connect(client_stream, "proxy.test", "/", max_message_size=MiB)
    assert await ws.get_message() == "welcome"
    assert await ws.get_message() == b"\x01"


# -- pings ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("payload", [b"", b"heartbeat-1", bytes(range(125))])
async def test_a_ping_from_the_peer_is_answered_with_the_same_payload(client: bool, payload: bytes) -> None:
    ws, peer = raw_pair(client=client)
    await peer.send(PING, payload)
    await peer.send(TEXT, b"after")
    assert await ws.get_message() == "after"
    pong = await peer.receive_frame()
    assert pong is not None
    assert (pong.fin, pong.opcode, pong.payload, pong.key is not None) == (True, PONG, payload, client)


async def test_a_ping_between_fragments_is_answered_at_once() -> None:
    ws, peer = raw_pair()
    await peer.send(TEXT, b"one ", fin=False)
    await peer.send(PING, b"mid")
    outcome = Outcome()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outcome.run, ws.get_message)
        pong = await peer.receive_frame()  # before the message is complete
        assert pong == WireFrame(True, 0, PONG, None, b"mid")
        assert not outcome.done.is_set()
        await peer.send(CONTINUATION, b"two")
    assert outcome.value == "one two"


async def test_ping_returns_on_the_pong_while_another_task_is_reading(nursery: trio.Nursery) -> None:
    browser, ws = await ws_pair(nursery)
    reader = background(nursery, ws.get_message)
    await trio.testing.wait_all_tasks_blocked()
    assert ws.receiving
    await ws.ping(b"explicit")
    await ws.ping()
    await ws.ping()  # generated payloads differ
    assert not reader.done.is_set()
    await browser.send_message("after the pongs")
    await reader.done.wait()
    assert reader.value == "after the pongs"


async def test_a_pong_acknowledges_earlier_pings_too(nursery: trio.Nursery) -> None:
    ws, peer = raw_pair()
    reader = background(nursery, ws.get_message)
    first = background(nursery, lambda: ws.ping(b"first"))
    await trio.testing.wait_all_tasks_blocked()
    second = background(nursery, lambda: ws.ping(b"second"))
    await trio.testing.wait_all_tasks_blocked()
    third = await ws.send_ping(b"third")
    for payload in (b"first", b"second", b"third"):
        assert await peer.receive_frame() == WireFrame(True, 0, PING, None, payload)
    await peer.send(PONG, b"unsolicited")
    await trio.testing.wait_all_tasks_blocked()
    assert not first.done.is_set()
    await peer.send(PONG, b"second")
    await trio.testing.wait_all_tasks_blocked()
    assert first.done.is_set()
    assert second.done.is_set()
    assert (first.error, second.error) == (None, None)
    assert not third.is_set()
    await peer.send(PONG, b"third")
    await trio.testing.wait_all_tasks_blocked()
    assert third.is_set()
    assert ws.closed is None
    assert not reader.done.is_set()


async def test_a_ping_payload_already_waiting_is_refused(nursery: trio.Nursery) -> None:
    ws, _peer = raw_pair()
    await ws.send_ping(b"same")
    with pytest.raises(ValueError):
        await ws.send_ping(b"same")


async def test_a_cancelled_ping_is_forgotten(nursery: trio.Nursery) -> None:
    ws, peer = raw_pair()
    reader = background(nursery, ws.get_message)
    scope = trio.CancelScope()

    async def ping() -> None:
        with scope:
            await ws.ping(b"again")

    pinging = background(nursery, ping)
    await trio.testing.wait_all_tasks_blocked()
    assert await peer.receive_frame() == WireFrame(True, 0, PING, None, b"again")
    scope.cancel()  # while waiting for the pong (never while the ping frame is being written)
    await pinging.done.wait()
    answered = await ws.send_ping(b"again")  # the payload may be used again
    await peer.send(PONG, b"again")
    await answered.wait()
    assert not reader.done.is_set()


async def test_ping_raises_when_the_connection_closes_while_waiting(nursery: trio.Nursery) -> None:
    ws, peer = raw_pair()
    reader = background(nursery, ws.get_message)
    pinger = background(nursery, ws.ping)
    await trio.testing.wait_all_tasks_blocked()
    assert not pinger.done.is_set()
    await peer.send_close(1001, "going away")
    await pinger.done.wait()
    assert pinger.closed == CloseReason(1001, "going away", by_peer=True)
    await reader.done.wait()
    assert reader.closed == CloseReason(1001, "going away", by_peer=True)


async def test_ping_raises_when_the_connection_is_aborted_while_waiting(nursery: trio.Nursery) -> None:
    ws, _peer = raw_pair()
    pinger = background(nursery, lambda: ws.ping(b"never answered"))
    await trio.testing.wait_all_tasks_blocked()
    await ws.abort()
    await pinger.done.wait()
    assert pinger.closed.code == 1006


# -- the peer closes -------------------------------------------------------------------------------------------------


async def test_trio_websocket_closes_with_code_and_reason(nursery: trio.Nursery) -> None:
    browser, ws = await ws_pair(nursery)
    closing = background(nursery, lambda: browser.aclose(4001, "bye now"))
    with pytest.raises(ConnectionClosed) as info:
        await ws.get_message()
    assert info.value.reason == CloseReason(4001, "bye now", by_peer=True)
    assert ws.closed == CloseReason(4001, "bye now", by_peer=True)
    await closing.done.wait()
    assert closing.error is None
    assert browser.closed is not None
    assert browser.closed.code == 4001  # the code we echoed


@pytest.mark.parametrize("client", [False, True])
async def test_a_peer_close_is_echoed_with_its_code(client: bool) -> None:
    ws, peer = raw_pair(client=client)
    await peer.send(TEXT, b"last words")
    await peer.send_close(3001, "reason ✓")
    assert await ws.get_message() == "last words"
    assert ws.closed is None
    with pytest.raises(ConnectionClosed) as info:
        await ws.get_message()
    assert info.value.reason == CloseReason(3001, "reason ✓", by_peer=True)
    assert ws.closed == CloseReason(3001, "reason ✓", by_peer=True)
    echo = await peer.receive_frame()
    assert echo is not None
    assert echo.opcode == CLOSE
    assert echo.close[0] == 3001
    assert (echo.key is not None) == client
    assert await peer.receive_frame() is None  # and the transport is closed
    with pytest.raises(ConnectionClosed):  # and stays closed
        await ws.get_message()


async def test_a_peer_close_without_status_is_1005_and_echoed_empty() -> None:
    ws, peer = raw_pair()
    await peer.send_close(None)
    with pytest.raises(ConnectionClosed) as info:
        await ws.get_message()
    assert info.value.reason == CloseReason(1005, "", by_peer=True)
    assert ws.closed == CloseReason(1005, "", by_peer=True)
    assert await peer.receive_frame() == WireFrame(True, 0, CLOSE, None, b"")
    assert await peer.receive_frame() is None


@pytest.mark.parametrize("client", [False, True])
async def test_transport_eof_without_a_close_frame_is_1006(client: bool) -> None:
    ws, peer = raw_pair(client=client)
    await peer.send(TEXT, b"hi")
    await peer.stream.send_all(frame(TEXT, b"cut short", key=peer.key())[:5])
    await peer.stream.aclose()
    assert await ws.get_message() == "hi"
    with pytest.raises(ConnectionClosed) as info:
        await ws.get_message()
    assert info.value.reason.code == 1006
    assert ws.closed is not None
    assert ws.closed.code == 1006


# -- we close ----------------------------------------------------------------------------------------------------------


async def test_aclose_with_no_reader_against_trio_websocket(nursery: trio.Nursery) -> None:
    browser, ws = await ws_pair(nursery)
    await ws.aclose(4002, "server going away")
    assert ws.closed == CloseReason(4002, "server going away", by_peer=False)
    assert await tw_closed(browser) == (4002, "server going away")


async def test_aclose_while_another_task_reads_against_trio_websocket(nursery: trio.Nursery) -> None:
    browser, ws = await ws_pair(nursery)
    reader = background(nursery, ws.get_message)
    await trio.testing.wait_all_tasks_blocked()
    await ws.aclose(4003, "reader present")
    await reader.done.wait()
    assert reader.closed.code == 4003  # trio-websocket echoed our code
    assert ws.closed is not None
    assert await tw_closed(browser) == (4003, "reader present")


async def test_aclose_reads_the_peers_close_itself_dropping_late_data(nursery: trio.Nursery) -> None:
    ws, peer = raw_pair()
    closing = background(nursery, lambda: ws.aclose(4000, "bye"))
    ours = await peer.receive_frame()
    assert ours is not None
    assert ours.close == (4000, "bye")
    await peer.send(TEXT, b"late")
    await peer.send(PING, b"late ping")
    await peer.send(BINARY, b"late too", fin=False)
    await trio.testing.wait_all_tasks_blocked()
    assert not closing.done.is_set()  # still waiting for the peer's close
    await peer.send(CONTINUATION, b"!")
    await peer.send_close(4000)
    await closing.done.wait()
    assert closing.error is None
    assert ws.closed == CloseReason(4000, "bye", by_peer=False)
    assert await peer.receive_frame() is None  # no pong, no second close: just the end of the stream
    with pytest.raises(ConnectionClosed):
        await ws.get_message()  # the late data is gone


async def test_get_message_during_aclose_raises_connection_closed_not_busy(nursery: trio.Nursery) -> None:
    ws, peer = raw_pair()
    closing = background(nursery, ws.aclose)
    await trio.testing.wait_all_tasks_blocked()
    assert ws.receiving  # aclose is reading the peer's close
    late = background(nursery, ws.get_message)
    await trio.testing.wait_all_tasks_blocked()
    assert not late.done.is_set()
    await peer.send(TEXT, b"dropped")
    await peer.send_close(1000)
    await closing.done.wait()
    await late.done.wait()
    assert isinstance(late.error, ConnectionClosed)
    assert ws.closed == CloseReason(1000, None, by_peer=False)


async def test_aclose_twice_is_harmless(nursery: trio.Nursery) -> None:
    browser, ws = await ws_pair(nursery)
    second = background(nursery, lambda: ws.aclose(4005))
    await ws.aclose(4004, "first wins")
    await second.done.wait()
    assert second.error is None
    assert await tw_closed(browser) == (4004, "first wins")
    await ws.aclose()


async def test_aclose_on_a_silent_peer_is_bounded_by_the_callers_scope(autojump_clock: trio.testing.MockClock) -> None:
    ws, peer = raw_pair()
    start = trio.current_time()
    with trio.move_on_after(7.5) as scope:
        await ws.aclose(1001, "shutting down")
    assert scope.cancelled_caught
    assert trio.current_time() - start == 7.5
    assert ws.closed == CloseReason(1001, "shutting down", by_peer=False)
    ours = await peer.receive_frame()
    assert ours is not None
    assert ours.close == (1001, "shutting down")
    assert await peer.receive_frame() is None  # the transport was closed anyway


async def test_aclose_on_a_silent_peer_with_a_reader_is_bounded_too(autojump_clock: trio.testing.MockClock) -> None:
    ws, peer = raw_pair()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        reader = background(nursery, ws.get_message)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(3.0) as scope:
            await ws.aclose(1001)
    assert scope.cancelled_caught
    assert trio.current_time() - start == 3.0
    assert reader.closed == CloseReason(1001, None, by_peer=False)
    ours = await peer.receive_frame()
    assert ours is not None
    assert ours.close == (1001, "")
    assert await peer.receive_frame() is None


async def test_aclose_completes_when_the_reader_goes_away(autojump_clock: trio.testing.MockClock) -> None:
    ws, peer = raw_pair()
    start = trio.current_time()
    reader_scope = trio.CancelScope()

    async def read() -> None:
        with reader_scope:
            await ws.get_message()

    async def close() -> None:
        with trio.move_on_after(30.0):
            await ws.aclose(1000)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        closing = background(nursery, close)
        ours = await peer.receive_frame()
        assert ours is not None
        assert ours.close == (1000, "")
        reader_scope.cancel()  # the reader leaves (its own task is ending)
        await trio.testing.wait_all_tasks_blocked()
        await peer.send_close(1000)  # the peer answers at once
        await closing.done.wait()
    assert trio.current_time() - start == 0.0  # actual: 30.0, the caller's deadline


async def test_send_after_close_raises(nursery: trio.Nursery) -> None:
    _browser, ws = await ws_pair(nursery)
    await ws.aclose()
    with pytest.raises(ConnectionClosed):
        await ws.send_message("too late")
    with pytest.raises(ConnectionClosed):
        await ws.send_message(b"too late")
    with pytest.raises(ConnectionClosed):
        await ws.send_ping()
    with pytest.raises(ConnectionClosed):
        await ws.ping()

    ws, peer = raw_pair()
    await peer.send_close(1000)
    with pytest.raises(ConnectionClosed):
        await ws.get_message()
    with pytest.raises(ConnectionClosed) as info:
        await ws.send_message("too late")
    assert info.value.reason.code == 1000


async def test_abort_closes_the_transport_and_wakes_the_reader(nursery: trio.Nursery) -> None:
    ws, peer = raw_pair()
    reader = background(nursery, ws.get_message)
    await trio.testing.wait_all_tasks_blocked()
    await ws.abort()
    await reader.done.wait()
    assert reader.closed.code == 1006
    assert ws.closed is not None
    assert ws.closed.code == 1006
    assert await peer.receive_frame() is None  # no close frame, just EOF
    with pytest.raises(ConnectionClosed):
        await ws.send_message("x")


# -- the peer breaks the protocol --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (frame(TEXT, b"x", key=KEY, rsv=4), 1002),
        (frame(TEXT, b"x"), 1002),  # unmasked frame to a server
        (frame(3, b"", key=KEY), 1002),
        (frame(CONTINUATION, b"x", key=KEY), 1002),
        (frame(PING, b"p" * 126, key=KEY), 1002),
        (frame(CLOSE, b"\x03\xed", key=KEY), 1002),  # 1005 is not for the wire
        (frame(TEXT, b"\xff\xfe", key=KEY), 1007),
        (frame(CLOSE, b"\x03\xe8\xff", key=KEY), 1007),
        (frame(BINARY, length=101, key=KEY)[:2], 1009),  # the header alone: no payload sent
        (frame(TEXT, b"a" * 60, fin=False, key=KEY) + frame(CONTINUATION, b"b" * 41, key=KEY), 1009),
    ],
)
async def test_a_violation_closes_with_its_code(wire: bytes, code: int) -> None:
    ws, peer = raw_pair(max_message_size=100)
    await peer.stream.send_all(wire)
    with pytest.raises(ConnectionClosed) as info:
        await ws.get_message()
    assert info.value.reason.code == code
    assert info.value.reason.by_peer is False
    assert ws.closed == info.value.reason
    ours = await peer.receive_frame()
    assert ours is not None
    assert ours.opcode == CLOSE
    assert ours.close[0] == code
    assert await peer.receive_frame() is None


async def test_a_masked_frame_to_our_client_side_is_1002() -> None:
    ws, peer = raw_pair(client=True)
    await peer.stream.send_all(frame(TEXT, b"masked", key=KEY))
    with pytest.raises(ConnectionClosed) as info:
        await ws.get_message()
    assert info.value.reason[0::2] == (1002, False)
    ours = await peer.receive_frame()
    assert ours is not None
    assert ours.close[0] == 1002
    assert ours.key is not None  # our close is masked: we are the client


async def test_trio_websocket_sending_too_much_gets_1009(nursery: trio.Nursery) -> None:
    browser_stream, server_stream = trio.testing.memory_stream_pair()
    accepted: list[WebSocket] = []

    async def accept() -> None:
        accepted.append(await accept_proxy_side(server_stream, max_message_size=1000))

    async with trio.open_nursery() as handshake:
        handshake.start_soon(accept)
        browser = await wrap_client_stream(nursery, browser_stream, "proxy.test", "/")  # type: ignore[arg-type]
    (ws,) = accepted
    await browser.send_message("x" * 1000)
    assert await ws.get_message() == "x" * 1000
    await browser.send_message("x" * 1001)
    with pytest.raises(ConnectionClosed) as info:
        await ws.get_message()
    assert info.value.reason[0::2] == (1009, False)
    assert (await tw_closed(browser))[0] == 1009


async def test_a_violating_peer_that_does_not_read_cannot_hold_us(autojump_clock: trio.testing.MockClock) -> None:
    ws, peer = raw_pair(lockstep=True)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.stream.send_all, frame(TEXT, b"x", key=KEY, rsv=1))
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason[0::2] == (1002, False)
    assert trio.current_time() - start == 1.0  # the best-effort close frame is given up after a second


async def test_a_fragmented_message_within_the_limit_survives_small_reads() -> None:
    ws, peer = raw_pair(max_message_size=100, receive_bytes=8)
    await peer.send(BINARY, b"a" * 10, fin=False)
    await peer.send(CONTINUATION, b"b" * 40)
    assert await ws.get_message() == b"a" * 10 + b"b" * 40


# -- concurrency -------------------------------------------------------------------------------------------------------


async def test_a_second_concurrent_reader_is_refused(nursery: trio.Nursery) -> None:
    ws, peer = raw_pair()
    first = background(nursery, ws.get_message)
    await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(trio.BusyResourceError):
        await ws.get_message()
    await peer.send(TEXT, b"for the first")
    await first.done.wait()
    assert first.value == "for the first"


async def test_concurrent_senders_never_interleave_frames(nursery: trio.Nursery) -> None:
    browser, ws = await ws_pair(nursery, lockstep=True)
    sent: list[str | bytes] = []
    for task in range(5):
        for n in range(3):
            size = 50_000 + 7_919 * (task * 3 + n)
            sent.append(f"{task}.{n}:".ljust(size, "é") if n % 2 else bytes([task, n]) * (size // 2))
    senders = [background(nursery, lambda i=i: send_all_of(ws, sent[i * 3 : i * 3 + 3])) for i in range(5)]
    await trio.testing.wait_all_tasks_blocked()
    assert ws.send_started is not None  # the peer reads in 4 KiB steps: senders are waiting on each other
    assert not any(sender.done.is_set() for sender in senders)
    received = [await browser.get_message() for _ in sent]
    for sender in senders:
        await sender.done.wait()
        assert sender.error is None
    assert sorted(map(typed, received), key=repr) == sorted(map(typed, sent), key=repr)
    # each task's messages arrive in the order it sent them
    for task in range(5):
        mine = [m for m in received if m in sent[task * 3 : task * 3 + 3]]
        assert mine == sent[task * 3 : task * 3 + 3]


async def send_all_of(ws: WebSocket, messages: list[str | bytes]) -> None:
    for message in messages:
        await ws.send_message(message)


async def test_a_send_cancelled_mid_frame_breaks_the_connection(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    ws, peer = raw_pair(lockstep=True)
    payload = os.urandom(1000)
    scope = trio.CancelScope()

    async def send() -> None:
        with scope:
            await ws.send_message(payload)

    nursery.start_soon(send)
    head = await peer.stream.receive_some(10)  # ten bytes of the frame reach the peer, then it stops reading
    await trio.testing.wait_all_tasks_blocked()
    assert ws.send_started is not None
    scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert ws.send_started is None
    start = trio.current_time()
    with pytest.raises(ConnectionClosed):
        await ws.send_message("next")
    with pytest.raises(ConnectionClosed):
        await ws.send_ping()
    with trio.fail_after(10):
        await ws.aclose(1000)  # no close frame after the partial one: the peer is not even reading
    assert trio.current_time() == start
    assert ws.closed is not None
    # the peer gets the remains of the one frame, then EOF: no close frame was written after it
    rest = await peer.receive_until_eof()
    assert head + rest == frame(BINARY, payload)
