"""Worst-case memory of one whole Session under a hostile peer on both legs, measured with tracemalloc.

Both legs run on in-memory lockstep streams (a send completes only when the other side reads it, as with a full TCP
window) under a mock clock: the browser and the upstream each send max-size text messages whose last character is
outside the BMP (the costliest decode), max-size messages split into the most fragments allowed, binary messages,
and pings within the rate. The browser reads slowly; the core echoes each client message back besides relaying it,
so the client leg's outbox is fed by two tasks and fills to its high-water mark (with the outbox unbounded the peak
is 2.4 times what it is, and the test fails). The browser ends with a pong flood (1008). Every byte the test sends
is built before tracing starts and is sent in small slices, so the traced peak is the session's own, plus what the
test itself holds (:func:`allowance`).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import trio
import trio.testing

from proxy.config import Limits
from proxy.core import POLICY_VIOLATION, Frame
from proxy.session import Session, UpstreamTarget
from proxy.ws import WebSocket
from proxy.ws.connection import RECEIVE_BYTES
from tests.ws.wire import BINARY, CONTINUATION, PING, PONG, TEXT, frame
from tests.wsmem import RelayCore

KiB = 1 << 10
M_CLIENT = 128 * KiB
M_UPSTREAM = 512 * KiB
HIGH_WATER = 256 * KiB
FRAGMENTS = 128
SLICE = 16 * KiB  # the test writes and reads in slices this big
READ_PAUSE_S = 0.05  # a slow reader: one slice per pause
KEY = b"\x01\x02\x03\x04"
#: Python objects of one session that do not grow with traffic (tasks, coroutines, the session and its legs).
FIXED_OVERHEAD = 64 * KiB


class EchoingRelay(RelayCore):
    """Relays both ways and also echoes each client message back: two tasks then feed the client leg's outbox, so
    while one of them is writing to the slow browser the other's output queues up to the high-water mark."""

    def client_message(self, message: Frame, now: float) -> None:
        super().client_message(message, now)
        self.to_client.append(message)


def text_payload(size: int) -> bytes:
    """``size`` UTF-8 bytes whose last character is outside the BMP: the decoded str takes 4 bytes per character."""
    return b"a" * (size - 4) + "\U0001f600".encode()


def hostile_stream(limit: int, key: bytes | None) -> bytes:
    """Max-size messages whole and in the most fragments allowed, text and binary, with pings between them."""
    text = text_payload(limit)
    parts = []
    for round_ in range(3):
        parts.append(frame(TEXT, text, key=key))
        parts.append(frame(PING, b"p%d" % round_, key=key))
        piece = limit // FRAGMENTS
        fragments = [text[i * piece : (i + 1) * piece] for i in range(FRAGMENTS - 1)]
        fragments.append(text[(FRAGMENTS - 1) * piece :])
        for index, fragment in enumerate(fragments):
            opcode = TEXT if index == 0 else CONTINUATION
            parts.append(frame(opcode, fragment, fin=index == FRAGMENTS - 1, key=key))
        parts.append(frame(BINARY, bytes(limit), key=key))
    return b"".join(parts)


def slices(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(data), SLICE):
        yield view[start : start + SLICE]


async def send_slowly_read(stream: trio.abc.Stream, data: bytes, done: trio.Event) -> None:
    for piece in slices(data):
        await stream.send_all(piece)
    done.set()


async def read_slowly(stream: trio.abc.ReceiveStream, pause_s: float = READ_PAUSE_S) -> None:
    try:
        while True:
            if not await stream.receive_some(SLICE):
                return
            await trio.sleep(pause_s)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def test_one_session_under_a_hostile_peer_on_both_legs_stays_within_the_documented_bound(
    autojump_clock: trio.abc.Clock,
) -> None:
    limits = Limits(
        ping_interval_s=0,
        client_max_message_bytes=M_CLIENT,
        upstream_max_message_bytes=M_UPSTREAM,
        outbox_high_water_bytes=HIGH_WATER,
        max_fragments_per_message=FRAGMENTS,
        max_control_frames_per_s=20.0,
        send_timeout_s=600.0,
    )
    from_browser = hostile_stream(M_CLIENT, KEY)
    flood = frame(PONG, b"f", key=KEY) * 200  # pongs: pings would be paced by our pongs to a slow reader
    from_upstream = hostile_stream(M_UPSTREAM, None)
    browser, client_end = trio.testing.lockstep_stream_pair()
    upstream_end, provider = trio.testing.lockstep_stream_pair()
    browser_sent, upstream_sent = trio.Event(), trio.Event()

    async def connector(target: UpstreamTarget, limits: Limits) -> WebSocket:
        return WebSocket(upstream_end, client=True, max_message_size=limits.upstream_max_message_bytes)

    tracemalloc.start()
    try:
        client = WebSocket(
            client_end,
            client=False,
            max_message_size=limits.client_max_message_bytes,
            max_fragments_per_message=limits.max_fragments_per_message,
            max_control_frames_per_s=limits.max_control_frames_per_s,
        )
        session = Session(client, EchoingRelay(), UpstreamTarget("/v1/realtime"), limits, connector=connector)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_slowly, browser)
            nursery.start_soon(read_slowly, provider, 0.0)  # the upstream reads promptly: the client leg's outbox fills
            nursery.start_soon(send_slowly_read, provider, from_upstream, upstream_sent)

            async def browser_then_flood() -> None:
                await send_slowly_read(browser, from_browser, browser_sent)
                await upstream_sent.wait()
                await trio.sleep(1.0)  # the bucket refills: the flood alone breaks the rate
                for piece in slices(flood):
                    await browser.send_all(piece)

            nursery.start_soon(browser_then_flood)
            with trio.fail_after(300):
                await session.run()
            nursery.cancel_scope.cancel()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert browser_sent.is_set()
    assert upstream_sent.is_set()
    assert client.closed is not None
    assert client.closed.code == POLICY_VIOLATION
    assert peak <= session_bound(M_CLIENT, HIGH_WATER) + session_bound(M_UPSTREAM, HIGH_WATER) + allowance()


def session_bound(message_limit: int, high_water: int) -> float:
    """docs/security.md, one direction (read on one leg, relayed out of the other), ``M`` its message limit:
    the reader 5.25 M + R while the outbox is under H (4 H in memory: up to 4 bytes per character of a text message),
    then the outbox's H + M (4 (H + M)), and the writer's frame being written, 6 M (the str, its UTF-8, the frame)."""
    m = message_limit
    reader_then_outbox = max(5.25 * m + RECEIVE_BYTES + 4 * high_water, 4 * (high_water + m))
    return reader_then_outbox + 6 * m


def allowance() -> float:
    """What the test itself holds, on top of the session: the fixed objects of one session, the slices in flight,
    and the in-memory streams' copy of the frame being written each way (the kernel's socket buffer in production;
    a bytearray grown in steps over-allocates by up to an eighth)."""
    return FIXED_OVERHEAD + 4 * SLICE + 1.125 * (M_CLIENT + M_UPSTREAM + 2 * 14)
