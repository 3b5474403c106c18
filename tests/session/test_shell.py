"""The Trio session shell, driven end to end over in-memory WebSockets with a minimal relay core.

These tests pin the shell's own guarantees (ordering, close propagation, bounded waits, teardown) independently of
any protocol: the core here only relays frames and queues them until the upstream is open.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection

from proxy.config import Limits
from proxy.core import Close, Frame
from proxy.session import Session, UpstreamTarget
from proxy.ws import WebSocket, connect
from proxy.ws.handshake import Accepted, ClientHandshake
from tests.ws.wire import CLOSE, PING, TEXT, RawPeer
from tests.wsmem import FakeUpstream, RelayCore, accept_proxy_side, answer_upgrade, running_session


async def closed_with(ws: WebSocketConnection) -> tuple[int, str | None]:
    """Read until the connection closes; return the close code and reason it saw."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.get_message()
    reason = info.value.reason
    assert reason is not None
    return reason.code, reason.reason


async def test_frames_keep_order_and_opcode_both_ways() -> None:
    async with running_session(RelayCore()) as (browser, upstream, _session, _done):
        sent: list[Frame] = ["a", b"\x00\x01", "b", b"", "c"]
        for frame in sent:
            await browser.send_message(frame)
        up = await upstream.next()
        assert [await up.get_message() for _ in sent] == sent
        for frame in reversed(sent):
            await up.send_message(frame)
        assert [await browser.get_message() for _ in sent] == list(reversed(sent))
        await browser.aclose()


async def test_client_frames_sent_before_upstream_opens_are_delivered_in_order() -> None:
    hold = trio.Event()
    async with running_session(RelayCore(), upstream=FakeUpstream(hold=hold)) as (browser, upstream, _s, _d):
        for i in range(5):
            await browser.send_message(f"early {i}")
        await trio.testing.wait_all_tasks_blocked()
        hold.set()
        up = await upstream.next()
        assert [await up.get_message() for _ in range(5)] == [f"early {i}" for i in range(5)]
        await browser.aclose()


async def test_upstream_close_code_and_reason_reach_the_client() -> None:
    async with running_session(RelayCore()) as (browser, upstream, session, _done):
        up = await upstream.next()
        await up.aclose(4001, "bye")
        assert await closed_with(browser) == (4001, "bye")
    assert session.closes[0] == Close(4001, "bye")


async def test_client_close_code_and_reason_reach_the_upstream() -> None:
    async with running_session(RelayCore()) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await browser.aclose(1000, "Closed by client")
        assert await closed_with(up) == (1000, "Closed by client")


async def test_early_client_close_cancels_the_upstream_connect(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeUpstream(hold=trio.Event())
    async with running_session(RelayCore(), upstream=fake) as (browser, _up, _session, done):
        await browser.send_message('{"type":"Settings"}')
        await trio.testing.wait_all_tasks_blocked()
        assert fake.connections == 1
        await browser.aclose()
        await done.wait()
    assert fake.live == 0, "the upstream stream must be closed when the client leaves mid-handshake"


async def test_upstream_that_never_answers_times_out_at_the_connect_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = Limits(ping_interval_s=0, upstream_connect_timeout_s=10.0)
    fake = FakeUpstream(hold=trio.Event())
    start = trio.current_time()
    async with running_session(RelayCore(), limits=limits, upstream=fake) as (browser, _up, _session, _done):
        error = json.loads(await browser.get_message())
        assert trio.current_time() - start == pytest.approx(10.0)
        assert error["code"] == "upstream_timeout"
        assert await closed_with(browser) == (1011, "Upstream unavailable")
    assert fake.live == 0


async def test_upstream_auth_rejection_becomes_an_error_and_1011() -> None:
    async with running_session(RelayCore(), upstream=FakeUpstream(reject=401)) as (browser, _up, _session, _d):
        error = json.loads(await browser.get_message())
        assert error["code"] == "upstream_auth_failed"
        assert "401" not in error["description"] or "credentials" in error["description"]
        assert await closed_with(browser) == (1011, "Upstream unavailable")


async def test_other_handshake_statuses_are_reported_generically() -> None:
    async with running_session(RelayCore(), upstream=FakeUpstream(reject=503)) as (browser, _up, _session, _d):
        error = json.loads(await browser.get_message())
        assert error["code"] == "upstream_handshake_failed"
        assert "HTTP 503" in error["description"]
        assert await closed_with(browser) == (1011, "Upstream unavailable")


async def test_session_ends_at_the_maximum_duration(autojump_clock: trio.testing.MockClock) -> None:
    limits = Limits(ping_interval_s=0, max_session_s=300.0)
    start = trio.current_time()
    async with running_session(RelayCore(), limits=limits) as (browser, upstream, _session, _done):
        up = await upstream.next()
        error = json.loads(await browser.get_message())
        assert trio.current_time() - start == pytest.approx(300.0)
        assert error["code"] == "session_max_duration"
        assert await closed_with(browser) == (1000, "Maximum session duration")
        assert (await closed_with(up))[0] == 1000


async def test_a_client_that_stops_reading_is_cut_off_after_the_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = Limits(ping_interval_s=0, send_timeout_s=30.0, outbox_high_water_frames=8)
    session_cm = running_session(RelayCore(), limits=limits, lockstep_browser=True)
    async with session_cm as (_browser, upstream, session, done):
        up = await upstream.next()
        start = trio.current_time()
        # The browser never reads: its WebSocket queue fills, then the lockstep stream stalls the proxy's send.
        for _ in range(200):
            await up.send_message(b"x" * 65536)
        await done.wait()
        # Cut off once the stuck send is 30 s old, seen by a watchdog that checks every second.
        assert 30.0 <= trio.current_time() - start <= 31.0 + limits.close_timeout_s
        assert session.closes[0] == Close(1011, "Peer too slow")
        assert (await closed_with(up))[0] == 1011


async def test_no_task_is_left_behind_after_either_side_closes() -> None:
    baseline = trio.lowlevel.current_statistics().tasks_living
    for closer in ("client", "upstream"):
        async with running_session(RelayCore()) as (browser, upstream, _session, done):
            up = await upstream.next()
            await browser.send_message("x")
            assert await up.get_message() == "x"
            await (browser.aclose() if closer == "client" else up.aclose())
            await done.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert trio.lowlevel.current_statistics().tasks_living == baseline


async def test_a_slow_client_slows_the_upstream_down_instead_of_growing_a_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Backpressure: while the browser does not read, the proxy stops reading the upstream after a bounded number
    of frames (so the upstream's own sends stall); once the browser reads, every frame arrives, in order."""
    limits = Limits(ping_interval_s=0, send_timeout_s=300.0, outbox_high_water_frames=8)
    fake = FakeUpstream(lockstep=True)
    session_cm = running_session(RelayCore(), limits=limits, upstream=fake, lockstep_browser=True)
    async with session_cm as (browser, upstream, _session, _done):
        up = await upstream.next()
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for i in range(1000):
                await up.send_message(f"frame {i}")
                sent += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            await trio.sleep(60)  # long enough for any unbounded queue to swallow all 1000 frames
            stalled_at = sent
            assert stalled_at < 100, f"the upstream was never slowed down ({stalled_at} frames accepted)"
            await trio.sleep(60)
            assert sent == stalled_at
            received = [await browser.get_message() for _ in range(1000)]
        assert received == [f"frame {i}" for i in range(1000)]
        await browser.aclose()


async def test_a_late_pong_is_excused_while_the_proxy_itself_stopped_reading_that_leg(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The browser stops reading, so the proxy stops reading the upstream (backpressure) and cannot see its pongs.
    That is not the upstream's fault: no ping timeout; once the browser reads, every frame arrives."""
    limits = Limits(ping_interval_s=5.0, ping_timeout_s=3.0, send_timeout_s=300.0, outbox_high_water_frames=4)
    session_cm = running_session(RelayCore(), limits=limits, lockstep_browser=True)
    async with session_cm as (browser, upstream, session, done):
        up = await upstream.next()
        for i in range(100):
            await up.send_message(f"frame {i}")
        await trio.sleep(60)  # a dozen ping intervals with the upstream leg unread
        assert not done.is_set(), session.closes
        received = [await browser.get_message() for _ in range(100)]
        assert received == [f"frame {i}" for i in range(100)]
        await trio.sleep(30)  # reading again: pings are answered and seen
        assert not done.is_set()
        assert session.closes == (None, None)
        session.request_close(Close(1000))


async def test_closing_is_bounded_by_close_timeout_when_the_client_cannot_take_the_close_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The session is closed (a server drain) while the browser reads nothing (its WebSocket queue is full, then
    the lockstep stream stalls): neither the queued frames nor the close frame can be delivered. The session
    still ends exactly ``close_timeout_s`` later and the browser's connection is dropped."""
    limits = Limits(ping_interval_s=0, close_timeout_s=2.5, send_timeout_s=300.0)
    session_cm = running_session(RelayCore(), limits=limits, lockstep_browser=True)
    async with session_cm as (browser, upstream, session, done):
        up = await upstream.next()
        for _ in range(20):
            await up.send_message(b"x" * 65536)
        await trio.sleep(1)
        session.request_close(Close(1001))
        closed_at = trio.current_time()
        await done.wait()
        assert trio.current_time() - closed_at == pytest.approx(2.5)
        assert session.closes[0] == Close(1001)
        # The browser gets what was already in its queue, then only the dropped connection.
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await browser.get_message()
        assert info.value.reason.code == 1006


async def test_an_oversized_upstream_message_ends_the_session_with_1011_for_the_client() -> None:
    limits = Limits(ping_interval_s=0, upstream_max_message_bytes=1000)
    async with running_session(RelayCore(), limits=limits) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await up.send_message("x" * 2000)
        assert await closed_with(browser) == (1011, "Upstream protocol error")
        assert (await closed_with(up))[0] == 1009


class _PongIgnoringUpstream:
    """A connector whose upstream is a raw-bytes peer: it never answers pings (trio-websocket always would)."""

    def __init__(self) -> None:
        self.peers: list[RawPeer] = []
        self.opened = trio.Event()

    async def connector(self, target: UpstreamTarget, limits: Limits) -> WebSocket:
        ours, theirs = trio.testing.memory_stream_pair()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_upgrade, theirs)
            ws = await connect(ours, "upstream.test", target.url, max_message_size=limits.upstream_max_message_bytes)
        self.peers.append(RawPeer(theirs, mask=False))
        self.opened.set()
        return ws


async def test_a_peer_that_keeps_sending_is_alive_without_pongs_and_cut_off_once_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = Limits(ping_interval_s=5.0, ping_timeout_s=3.0)
    raw = _PongIgnoringUpstream()
    async with running_session(RelayCore(), limits=limits, connector=raw.connector) as (browser, _, session, done):
        await raw.opened.wait()
        peer = raw.peers[0]
        for i in range(30):  # six ping intervals: every ping goes unanswered, but frames keep coming
            await peer.send(TEXT, f"tick {i}".encode())
            assert await browser.get_message() == f"tick {i}"
            await trio.sleep(1)
        assert not done.is_set()
        silent_since = trio.current_time()
        await done.wait()
        # A ping cycle (interval + timeout) under way when the frames stopped is excused; the next one is not.
        # Then the close frame goes unanswered too, which costs close_timeout_s.
        silent_for = trio.current_time() - silent_since
        assert 3.0 + limits.close_timeout_s <= silent_for <= 2 * (5.0 + 3.0) + limits.close_timeout_s
        assert session.closes[0] == Close(1011, "Upstream ping timeout")


async def test_a_silent_client_is_closed_with_1011_ping_timeout_and_the_upstream_with_1000(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The browser is a raw-bytes peer that never answers pings and sends nothing."""
    limits = Limits(ping_interval_s=5.0, ping_timeout_s=3.0)
    browser_stream, proxy_stream = trio.testing.memory_stream_pair()
    fake = FakeUpstream()
    async with trio.open_nursery() as nursery:
        fake.nursery = nursery
        handshake = ClientHandshake()
        await browser_stream.send_all(handshake.request("proxy.test", "/openai"))
        client_leg = await accept_proxy_side(proxy_stream)
        assert isinstance(handshake.receive_data(await browser_stream.receive_some()), Accepted)
        session = Session(client_leg, RelayCore(), UpstreamTarget("/v1/realtime"), limits, connector=fake.connector)
        nursery.start_soon(session.run)
        up = await fake.next()
        browser = RawPeer(browser_stream, mask=True)
        pings = 0
        while (frame := await browser.receive_frame()) is not None and frame.opcode != CLOSE:
            pings += frame.opcode == PING
        assert frame is not None
        assert frame.close == (1011, "Ping timeout")
        assert pings == 1  # cut off at the first unanswered ping
        assert (await closed_with(up))[0] == 1000
