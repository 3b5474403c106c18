"""proxy.ws against a hostile peer: fragments per message, control frames per second, memory that follows bytes
(not frames), and a reading path that lets other tasks run however fast the peer floods."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from proxy.ws import ConnectionClosed, WebSocket
from proxy.ws.connection import YIELD_BUDGET_BYTES
from proxy.ws.frames import (
    DEFAULT_MAX_CONTROL_FRAMES_PER_S,
    DEFAULT_MAX_FRAGMENTS_PER_MESSAGE,
    ControlFrameRate,
    FrameDecoder,
    ProtocolViolation,
)
from tests.fuzzing import fuzz_settings
from tests.ws.wire import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, RawPeer, frame

MiB = 1 << 20
KEY = b"\x0a\x0b\x0c\x0d"


def raw_pair(**limits: float) -> tuple[WebSocket, RawPeer]:
    """Our server-side WebSocket on an in-memory stream, a raw (masking) peer on the other end."""
    ours, theirs = trio.testing.memory_stream_pair()
    ws = WebSocket(ours, client=False, max_message_size=MiB, **limits)  # type: ignore[arg-type]
    return ws, RawPeer(theirs, mask=True)


async def closed_by_us(ws: WebSocket, peer: RawPeer) -> tuple[int, int | None]:
    """Read until the connection fails; (our close code, the code of the close frame the peer received)."""
    with pytest.raises(ConnectionClosed) as info:
        with trio.fail_after(5):
            while True:
                await ws.get_message()
    assert info.value.reason.by_peer is False
    while (ours := await peer.receive_frame()) is not None and ours.opcode != CLOSE:
        pass
    return info.value.reason.code, None if ours is None else ours.close[0]


def decode_all(decoder: FrameDecoder, data: bytes) -> list[object]:
    decoder.feed(data)
    events: list[object] = []
    while (event := decoder.next_event()) is not None:
        events.append(event)
    return events


# -- fragments per message -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"x"], ids=["empty", "one-byte"])
async def test_endless_continuations_are_closed_with_1008(autojump_clock: trio.abc.Clock, payload: bytes) -> None:
    ws, peer = raw_pair()
    flood = peer.frame(TEXT, payload, fin=False) + b"".join(
        peer.frame(CONTINUATION, payload, fin=False) for _ in range(5_000)
    )
    await peer.stream.send_all(flood)
    assert await closed_by_us(ws, peer) == (1008, 1008)


@pytest.mark.parametrize("payload", [b"", b"ab"], ids=["empty", "two-bytes"])
def test_every_fragment_counts_including_empty_ones(payload: bytes) -> None:
    """The cap counts frames of one message, the first included: ``max_fragments`` frames pass, one more is 1008."""
    first = frame(BINARY, payload, fin=False, key=KEY)
    middle = frame(CONTINUATION, payload, fin=False, key=KEY)
    last = frame(CONTINUATION, payload, key=KEY)
    decoder = FrameDecoder(client=False, max_message_size=MiB, max_fragments=4)
    assert decode_all(decoder, first + middle * 2 + last) == [payload * 4]
    assert decode_all(decoder, first + middle * 3) == []
    with pytest.raises(ProtocolViolation) as info:
        decode_all(decoder, middle[:2])  # the header alone is refused: the payload is never buffered
    assert info.value.code == 1008


def test_the_fragment_cap_is_per_message() -> None:
    decoder = FrameDecoder(client=False, max_message_size=MiB, max_fragments=2)
    two = frame(TEXT, b"a", fin=False, key=KEY) + frame(CONTINUATION, b"b", key=KEY)
    assert decode_all(decoder, two * 1000) == ["ab"] * 1000


def test_the_default_fragment_cap_admits_lightly_fragmented_messages() -> None:
    n = DEFAULT_MAX_FRAGMENTS_PER_MESSAGE
    data = frame(TEXT, b"a", fin=False, key=KEY)
    data += b"".join(frame(CONTINUATION, b"a", fin=False, key=KEY) for _ in range(n - 2))
    data += frame(CONTINUATION, b"a", key=KEY)
    assert decode_all(FrameDecoder(client=False, max_message_size=MiB), data) == ["a" * n]


def test_reassembly_memory_follows_the_bytes_not_the_fragment_count() -> None:
    """A message of tiny fragments costs what its bytes cost: the decoder's peak stays within twice the limit
    (the reassembly buffer and the finished message) plus one read, however many fragments carry it."""
    limit = 256 * 1024
    fragments = limit  # one byte each
    decoder = FrameDecoder(client=False, max_message_size=limit, max_fragments=fragments)
    one = frame(CONTINUATION, b"x", fin=False, key=KEY)
    read = one * 4096  # 40 KiB of wire per feed
    tracemalloc.start()
    try:
        decode_all(decoder, frame(BINARY, b"x", fin=False, key=KEY))
        for _ in range(fragments // 4096 - 1):
            assert decode_all(decoder, read) == []
        events = decode_all(decoder, one * 4094 + frame(CONTINUATION, b"x", key=KEY))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert events == [b"x" * limit]
    assert peak < 2 * limit + 3 * len(read)


# -- the decoder alone, on any bytes ---------------------------------------------------------------------------------

#: Beyond the message limit, the decoder may hold one incomplete frame that is not message payload: a data frame's
#: header (at most 14 bytes) or a whole control frame (2 + 4 + 125 bytes), whichever is longer.
MAX_EXTRA_BYTES = 2 + 4 + 125


@st.composite
def hostile_bytes(draw: st.DrawFn, masked: bool) -> bytes:
    """Frames mostly right for the role (so decoding gets somewhere), with random bytes and wrong frames mixed in."""
    parts = []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 9)) == 0:
            parts.append(draw(st.binary(max_size=40)))
            continue
        right_masking = draw(st.integers(0, 19)) > 0
        key = draw(st.binary(min_size=4, max_size=4)) if masked == right_masking else None
        opcode = draw(st.sampled_from([CONTINUATION, CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG, 3, 11]))
        rsv = draw(st.sampled_from([0] * 9 + [1]))
        payload = draw(st.one_of(st.binary(max_size=30), st.binary(min_size=126, max_size=700)))
        parts.append(frame(opcode, payload, fin=draw(st.booleans()), key=key, rsv=rsv))
    return b"".join(parts)


@pytest.mark.fuzz
@fuzz_settings(300)
@given(
    data=st.data(),
    client=st.booleans(),
    max_message_size=st.integers(0, 400),
    max_fragments=st.integers(1, 6),
)
def test_the_decoder_on_any_bytes_only_ever_raises_protocol_violation_and_stays_bounded(
    data: st.DataObject, client: bool, max_message_size: int, max_fragments: int
) -> None:
    raw = data.draw(hostile_bytes(masked=not client))
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=20))
    decoder = FrameDecoder(client=client, max_message_size=max_message_size, max_fragments=max_fragments)
    bounds = sorted({0, len(raw), *(min(cut, len(raw)) for cut in cuts)})
    code = None
    try:
        for start, end in itertools.pairwise(bounds):
            decoder.feed(raw[start:end])
            while decoder.next_event() is not None:
                pass
            # Waiting for more bytes, it holds at most one message and one incomplete control frame.
            assert decoder.buffered < max_message_size + MAX_EXTRA_BYTES
    except ProtocolViolation as violation:
        code = violation.code
    assert code in (None, 1002, 1007, 1008, 1009)


# -- control frames per second ---------------------------------------------------------------------------------------


def test_control_frame_rate_admits_a_burst_of_one_second_then_the_rate() -> None:
    rate = ControlFrameRate(10.0)
    for _ in range(10):
        rate.admit(100.0)
    with pytest.raises(ProtocolViolation) as info:
        rate.admit(100.0)
    assert info.value.code == 1008
    rate = ControlFrameRate(10.0)
    for i in range(1000):  # exactly the rate, for 100 s
        rate.admit(100.0 + i / 10)


def test_control_frame_rate_refills_at_the_rate_and_no_further() -> None:
    rate = ControlFrameRate(10.0)
    for _ in range(10):
        rate.admit(0.0)
    rate.admit(0.1)  # one token back after 0.1 s
    with pytest.raises(ProtocolViolation):
        rate.admit(0.1)
    rate = ControlFrameRate(10.0)
    rate.admit(0.0)
    for _ in range(10):  # an hour of silence refills one second's worth, not an hour's
        rate.admit(3600.0)
    with pytest.raises(ProtocolViolation):
        rate.admit(3600.0)


@pytest.mark.parametrize("opcode", [PING, PONG])
async def test_a_control_frame_flood_is_closed_with_1008(autojump_clock: trio.abc.Clock, opcode: int) -> None:
    ws, peer = raw_pair()
    await peer.stream.send_all(b"".join(peer.frame(opcode, b"flood") for _ in range(1000)))
    assert await closed_by_us(ws, peer) == (1008, 1008)


async def test_pings_at_the_limit_are_all_answered(autojump_clock: trio.abc.Clock, nursery: trio.Nursery) -> None:
    ws, peer = raw_pair(max_control_frames_per_s=2.0)
    received: list[str | bytes] = []

    async def read() -> None:
        while True:
            received.append(await ws.get_message())

    nursery.start_soon(read)
    for i in range(20):  # two a second for ten seconds
        await peer.send(PING, b"%d" % i)
        await peer.send(PONG, b"unsolicited")
        answer = await peer.receive_frame()
        assert answer is not None
        assert (answer.opcode, answer.payload) == (PONG, b"%d" % i)
        await trio.sleep(1.0)
    await peer.send(TEXT, b"still open")
    await trio.sleep(0.1)
    assert received == ["still open"]
    assert ws.closed is None


def test_the_default_control_rate_allows_keepalives() -> None:
    assert 1.0 <= DEFAULT_MAX_CONTROL_FRAMES_PER_S <= 100.0


# -- fairness -----------------------------------------------------------------------------------------------------


class FloodStream(trio.abc.Stream):
    """A peer that always has data: every read returns ``chunk`` at once, without a schedule point, ``reads``
    times, then EOF. Writes complete at once too. The worst case for fairness: nothing in the stream yields."""

    def __init__(self, chunk: bytes, reads: int, *, first: bytes = b"") -> None:
        self.first = first
        self.chunk = chunk
        self.remaining = reads
        self.reads = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.remaining == 0:
            return b""
        self.remaining -= 1
        self.reads += 1
        return self.first + self.chunk if self.reads == 1 else self.chunk

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        pass

    async def wait_send_all_might_not_block(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


FLOODS = {
    # Every event reaches the caller, who reads again at once.
    "messages": (frame(TEXT, b"", key=KEY) * 64, {}),
    # Every event is swallowed inside the connection.
    "pongs": (frame(PONG, b"", key=KEY) * 64, {"max_control_frames_per_s": 1e12}),
    "empty fragments": (frame(CONTINUATION, b"", fin=False, key=KEY) * 64, {"max_fragments_per_message": 1 << 40}),
}


@pytest.mark.parametrize("flood", FLOODS, ids=list(FLOODS))
async def test_a_flooding_peer_does_not_starve_other_tasks(flood: str) -> None:
    chunk, limits = FLOODS[flood]
    opener = frame(TEXT, b"", fin=False, key=KEY) if flood == "empty fragments" else b""
    stream = FloodStream(chunk, reads=2_000, first=opener)
    ws = WebSocket(stream, client=False, max_message_size=MiB, **limits)  # type: ignore[arg-type]
    seen_at: list[int] = []

    async def sibling() -> None:
        while True:
            seen_at.append(stream.reads)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sibling)
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.get_message()
        nursery.cancel_scope.cancel()
    # The sibling ran early and then regularly: never more than the yield budget's worth of bytes went by, twice
    # (Trio may run the flooding task first in one batch and last in the next).
    most = 2 * (YIELD_BUDGET_BYTES // len(chunk) + 1)
    assert seen_at[0] <= most
    gaps = [later - earlier for earlier, later in itertools.pairwise(seen_at)]
    assert seen_at[-1] >= 2_000 - most
    assert max(gaps) <= most
