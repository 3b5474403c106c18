"""The Trio shell of one proxied conversation: two legs, one sans-IO core, one nursery.

Tasks in the session nursery:

* ``client reader`` and ``upstream reader`` feed every received message to the core;
* ``timer`` sleeps until the core's next deadline and tells the core when it passes;
* once the session ends, a ``closer`` per leg sends what is still queued and the close frame;
* ``keepalive`` pings per leg;
* ``clock`` runs the send watchdog and ends the session at its maximum duration.

Feeding the core and queueing its output in an :class:`Outbox` per leg is synchronous, so frames keep the order the
core produced them in, whatever task produced them; the producing task then sends them itself (no task hop per
message), the client's leg before the upstream's. Readers wait while an outbox is above its high-water mark, so a
slow peer slows the other side down instead of growing a queue (backpressure), and a peer that stops reading
altogether is cut off by the watchdog after ``send_timeout_s``.

The first leg to end decides the closes (via the core), the closers flush what is queued and send their close
frames, and then everything left is cancelled. Closing is shielded and bounded in time.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import trio

from .config import Limits
from .core import (
    INTERNAL_ERROR,
    NORMAL,
    Close,
    FailureKind,
    Frame,
    SessionCore,
    UpstreamFailure,
    client_fault,
    upstream_ended,
)
from .transport import SocketTransport
from .ws import ConnectionClosed, ConnectionRejected, HandshakeFailed, WebSocket, connect

log = logging.getLogger("proxy.session")

_ssl_context: ssl.SSLContext | None = None


def _default_ssl_context() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where and how to open a session's upstream leg. ``headers`` may carry a key: never log them."""

    url: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    subprotocols: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"UpstreamTarget(url={self.url!r})"


@dataclass(slots=True)
class SessionStats:
    """Counters the server aggregates into /metrics. Updated in place; plain ints (one task at a time)."""

    client_frames: int = 0
    upstream_frames: int = 0
    to_client_frames: int = 0
    to_upstream_frames: int = 0
    upstream_failures: dict[str, int] = field(default_factory=dict)


Connector = Callable[[UpstreamTarget, Limits], Awaitable[WebSocket]]


class Milestones(Protocol):
    """Timing milestones the shell reports (proxy/metrics.py ``SessionClock``); each call must be cheap."""

    def upstream_connected(self, seconds: float) -> None: ...
    def client_text(self, text: str) -> None: ...
    def to_client(self, frames: list[Frame]) -> None: ...


async def tcp_connector(target: UpstreamTarget, limits: Limits) -> WebSocket:
    """Open the upstream WebSocket over TCP (TLS for wss://), bounded by the connect timeout.

    The stream is closed on any failure or cancellation, so a client that leaves early never leaves an upstream
    connection behind. Raises ``ConnectionRejected`` (non-101 answer) or ``HandshakeFailed`` (invalid answer).
    """
    parts = urlsplit(target.url)
    tls = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if parts.port is None else f"{host}:{port}"
    with trio.fail_after(limits.upstream_connect_timeout_s):
        tcp = SocketTransport.take_over(await trio.open_tcp_stream(host, port))
        stream: SocketTransport | trio.SSLStream[SocketTransport] = tcp
        try:
            if tls:
                stream = trio.SSLStream(tcp, _default_ssl_context(), server_hostname=host, https_compatible=True)
                await stream.do_handshake()
            return await connect(
                stream,
                host_header,
                resource,
                subprotocols=target.subprotocols,
                extra_headers=target.headers,
                max_message_size=limits.upstream_max_message_bytes,
                max_fragments_per_message=limits.max_fragments_per_message,
                max_control_frames_per_s=limits.max_control_frames_per_s,
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise


class Outbox:
    """An ordered, bounded queue of frames for one leg.

    ``extend`` never blocks: the core's output is queued synchronously, in order, whatever task produced it. The
    producing task then sends it itself (:meth:`Session._send_pending`) unless another task is already sending on
    that leg (``busy``), in which case that task sends it too; so frames go out in queue order with no extra task
    hop on the hot path. Producers call :meth:`wait_writable` before taking more input, which keeps the queue within
    its high-water mark plus the output of one input message. The leg's closer waits for :meth:`wait_for_close`.
    """

    __slots__ = (
        "_bytes",
        "_close",
        "_close_lot",
        "_frames",
        "_max_bytes",
        "_max_frames",
        "_reader_lot",
        "busy",
    )

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._close: Close | None = None
        # Made on first use (a reader only parks under backpressure).
        self._close_lot: trio.lowlevel.ParkingLot | None = None
        self._reader_lot: trio.lowlevel.ParkingLot | None = None
        #: A task is sending this leg's frames right now.
        self.busy = False

    def __len__(self) -> int:
        return len(self._frames)

    def extend(self, frames: list[Frame]) -> None:
        if self._close is not None:
            return  # the leg is closing: nothing more goes out
        self._frames.extend(frames)
        for frame in frames:
            self._bytes += len(frame)

    def pop(self) -> Frame | None:
        if not self._frames:
            return None
        frame = self._frames.popleft()
        self._bytes -= len(frame)
        if self._reader_lot and self.writable():  # None or empty: nobody to wake
            self._reader_lot.unpark_all()
        return frame

    def release(self) -> None:
        self.busy = False
        if self._close is not None and self._close_lot is not None:
            self._close_lot.unpark_all()

    def close_with(self, close: Close) -> None:
        """Queue the final close; frames queued before it are still sent."""
        if self._close is None:
            self._close = close
            if self._close_lot is not None:
                self._close_lot.unpark_all()

    def writable(self) -> bool:
        return len(self._frames) < self._max_frames and self._bytes < self._max_bytes

    async def wait_writable(self) -> None:
        while not self.writable():
            if self._reader_lot is None:
                self._reader_lot = trio.lowlevel.ParkingLot()
            await self._reader_lot.park()

    async def wait_for_close(self) -> Close:
        """Wait until the close is queued and no task is sending; the caller then sends what is left and closes."""
        while self._close is None or self.busy:
            if self._close_lot is None:
                self._close_lot = trio.lowlevel.ParkingLot()
            await self._close_lot.park()
        return self._close


class Session:
    """One client connection and its upstream. Create, then ``await run()``; it returns when both legs are closed."""

    __slots__ = (
        "_client",
        "_closers_done",
        "_closers_expected",
        "_connector",
        "_core",
        "_ending",
        "_label",
        "_limits",
        "_milestones",
        "_nursery",
        "_target",
        "_timer_scope",
        "_to_client",
        "_to_upstream",
        "_upstream",
        "_upstream_closer_started",
        "closes",
        "stats",
    )

    def __init__(
        self,
        client: WebSocket,
        core: SessionCore,
        target: UpstreamTarget | UpstreamFailure,
        limits: Limits,
        *,
        label: str = "session",
        stats: SessionStats | None = None,
        connector: Connector | None = None,
        milestones: Milestones | None = None,
    ) -> None:
        self._client = client
        self._core = core
        self._target = target
        self._limits = limits
        self._label = label
        self.stats = stats if stats is not None else SessionStats()
        self._connector = connector if connector is not None else tcp_connector
        self._milestones = milestones
        self._upstream: WebSocket | None = None
        self._to_client = Outbox(limits.outbox_high_water_frames, limits.outbox_high_water_bytes)
        self._to_upstream = Outbox(limits.outbox_high_water_frames, limits.outbox_high_water_bytes)
        self._timer_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._ending = False
        self._upstream_closer_started = False
        self._closers_done = 0
        self._closers_expected = 1
        #: How the session ended, for logs and metrics: (client close, upstream close).
        self.closes: tuple[Close | None, Close | None] = (None, None)

    # -- feeding the core ---------------------------------------------------------------------------------------

    def _feed(self, step: Callable[[float], None]) -> None:
        step(trio.current_time())
        self._flush()

    def _flush(self) -> None:
        """Queue what the core produced (in order, synchronously), re-arm the timer, honour a fatal close."""
        core = self._core
        if core.to_client:
            frames, core.to_client = core.to_client, []
            self.stats.to_client_frames += len(frames)
            if self._milestones is not None:
                self._milestones.to_client(frames)
            self._to_client.extend(frames)
        if core.to_upstream:
            frames, core.to_upstream = core.to_upstream, []
            self.stats.to_upstream_frames += len(frames)
            self._to_upstream.extend(frames)
        scope = self._timer_scope
        if scope is not None:
            deadline = core.next_deadline()
            deadline = math.inf if deadline is None else deadline
            if deadline != scope.deadline:  # re-registering an unchanged deadline still costs a heap push
                scope.deadline = deadline
        fatal = core.fatal()
        if fatal is not None:
            self._end(fatal, fatal)

    def _feed_close(
        self, closed: Callable[[int | None, str | None, float], Close], code: int | None, reason: str | None
    ) -> Close:
        """Tell the core a leg closed; returns the close it wants on the other leg."""
        result: list[Close] = []
        self._feed(lambda now: result.append(closed(code, reason, now)))
        return result[0]

    def _end(self, client_close: Close | None, upstream_close: Close | None) -> None:
        """Start closing: queue the closes behind what is already queued, and bound how long that may take."""
        if self._ending:
            return
        self._ending = True
        self.closes = (client_close, upstream_close)
        self._to_client.close_with(client_close or Close(NORMAL))
        assert self._nursery is not None
        # The closers start only now: an idle session keeps no task that waits for its end.
        self._nursery.start_soon(self._closer, self._client, self._to_client)
        if self._upstream_closer_started and self._upstream is not None:
            self._closers_expected = 2
            self._to_upstream.close_with(upstream_close or Close(NORMAL))
            self._nursery.start_soon(self._closer, self._upstream, self._to_upstream)
        self._nursery.cancel_scope.deadline = min(
            self._nursery.cancel_scope.deadline, trio.current_time() + self._limits.close_timeout_s
        )

    def request_close(self, close: Close) -> None:
        """Close both legs with ``close`` (for example 1001 when the server drains)."""
        if self._nursery is not None:
            self._end(close, close)

    def _closer_finished(self) -> None:
        self._closers_done += 1
        if self._closers_done >= self._closers_expected and self._ending:
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()

    # -- tasks --------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._upstream_leg)
                nursery.start_soon(self._timer)
                nursery.start_soon(self._clock)
                if self._limits.ping_interval_s > 0:
                    nursery.start_soon(self._keepalive, self._client, "client")
                await self._client_reader()
        finally:
            self._nursery = None  # a late request_close has nothing left to close
            with trio.CancelScope(shield=True), trio.move_on_after(self._limits.close_timeout_s):
                await self._close_leftovers()

    async def _close_leftovers(self) -> None:
        client_close, upstream_close = self.closes
        for ws, close in ((self._upstream, upstream_close), (self._client, client_close)):
            if ws is None:
                continue
            if ws.closed is None:  # a leg whose write was cut off mid-frame is dropped without a close frame
                close = close or Close(INTERNAL_ERROR)
                await ws.aclose(close.code, close.reason)

    async def _client_reader(self) -> None:
        client, core = self._client, self._core
        to_client, to_upstream = self._to_client, self._to_upstream
        while True:
            if not to_upstream.writable():
                await to_upstream.wait_writable()
            if not to_client.writable():
                await to_client.wait_writable()
            try:
                message = await client.get_message()
            except ConnectionClosed as exc:
                if not self._ending:
                    closed = exc.reason
                    if client_fault(closed.code, closed.by_peer):
                        log.warning(
                            "%s: client broke the WebSocket protocol (closed it with %d: %s)",
                            self._label,
                            closed.code,
                            closed.reason,
                        )
                    self._end(None, self._feed_close(core.client_closed, closed.code, closed.reason))
                # The session continues until the writers have flushed and closed (bounded by close_timeout_s).
                await trio.sleep_forever()
            if self._ending:
                continue
            self.stats.client_frames += 1
            if self._milestones is not None and isinstance(message, str):
                self._milestones.client_text(message)
            core.client_message(message, trio.current_time())
            self._flush()
            await self._send_pending()

    async def _send_pending(self) -> None:
        """Send what the core queued, on both legs, from the task that produced it: the client's frames first.

        When one input produces frames for both legs (a tool result's text for the client and the deferred
        ``response.create`` for the upstream), the client's are written first, as the reference backend does: each
        leg sees the same frames either way, but a client that also observes the upstream (a test harness, a
        recorder) sees the user-facing side act first.
        """
        if len(self._to_client):
            await self._send_frames(self._client, self._to_client)
        if len(self._to_upstream) and self._upstream_closer_started and self._upstream is not None:
            await self._send_frames(self._upstream, self._to_upstream)

    async def _send_frames(self, ws: WebSocket, outbox: Outbox) -> None:
        if outbox.busy:
            return  # the task sending on this leg sends our frames too, in order
        outbox.busy = True
        try:
            await self._drain(ws, outbox)
        finally:
            outbox.release()

    async def _drain(self, ws: WebSocket, outbox: Outbox) -> None:
        """Send every queued frame (a send cut off mid-frame leaves the connection refusing any further frame).

        Sends are not wrapped in a timeout each (a cancel scope per frame costs on the hot path): the session's
        send watchdog aborts a leg whose current send has not completed within ``send_timeout_s``.
        """
        try:
            while (frame := outbox.pop()) is not None:
                await ws.send_message(frame)
        except ConnectionClosed:
            pass  # the peer is gone (or the watchdog aborted the leg); its reader reports how

    async def _clock(self) -> None:
        """The session's two slow deadlines in one task: the send watchdog's ticks and the maximum duration.

        The watchdog aborts a leg whose peer stopped reading (its current send has been pending for
        ``send_timeout_s``). This task never sends, so a blocked send cannot hold it up; sharing it saves a task
        per session over a task per deadline.
        """
        send_timeout = self._limits.send_timeout_s
        tick = min(1.0, send_timeout / 4)
        now = trio.current_time()
        next_check = now + tick
        expires_at = now + self._limits.max_session_s
        while True:
            await trio.sleep_until(min(next_check, expires_at))
            now = trio.current_time()
            if now >= expires_at:
                expires_at = math.inf
                self._expire()
            if now >= next_check:
                await self._check_sends(now, send_timeout)
                next_check = trio.current_time() + tick

    async def _check_sends(self, now: float, send_timeout: float) -> None:
        for ws in (self._client, self._upstream):
            started = None if ws is None else ws.send_started
            if ws is None or started is None or now - started < send_timeout or ws.closed is not None:
                continue
            log.warning("%s: peer stopped reading for %.0f s; closing", self._label, send_timeout)
            self._end(Close(INTERNAL_ERROR, "Peer too slow"), Close(INTERNAL_ERROR, "Peer too slow"))
            # The send in progress fails once the transport is dropped under it; no close frame can follow a
            # half-written message.
            await ws.abort()

    def _expire(self) -> None:
        if self._ending:
            return
        log.info("%s: maximum session duration reached", self._label)
        # What the client is told (an Error, or only the close where its protocol has no Error) is the core's word.
        closes: list[tuple[Close, Close]] = []
        self._feed(lambda now: closes.append(self._core.session_expired(now)))
        self._end(*closes[0])

    async def _closer(self, ws: WebSocket, outbox: Outbox) -> None:
        """Once the session ends: send what is still queued on this leg, then its close frame."""
        try:
            close = await outbox.wait_for_close()
            outbox.busy = True
            await self._drain(ws, outbox)
            with trio.move_on_after(self._limits.close_timeout_s):
                await ws.aclose(close.code, close.reason)
        except ConnectionClosed:
            pass
        finally:
            self._closer_finished()

    async def _upstream_leg(self) -> None:
        core = self._core
        target = self._target
        if isinstance(target, UpstreamFailure):
            self._upstream_failed(target)
            return
        failure: UpstreamFailure | None = None
        try:
            async with trio.open_nursery() as nursery:
                connecting_at = trio.current_time()
                upstream = await self._connector(target, self._limits)
                self._upstream = upstream
                if self._milestones is not None:
                    self._milestones.upstream_connected(trio.current_time() - connecting_at)
                if self._ending:
                    return
                self._upstream_closer_started = True
                if self._limits.ping_interval_s > 0:
                    nursery.start_soon(self._keepalive, upstream, "upstream")
                self._feed(core.upstream_opened)
                await self._send_pending()
                await self._upstream_reader(upstream)
                nursery.cancel_scope.cancel()
        except* ConnectionRejected as group:
            rejected = group.exceptions[0]
            assert isinstance(rejected, ConnectionRejected)
            status = rejected.status_code
            kind = FailureKind.AUTH if status in (401, 403) else FailureKind.HANDSHAKE
            failure = UpstreamFailure(kind, status)
        except* HandshakeFailed:
            failure = UpstreamFailure(FailureKind.HANDSHAKE)
        except* (OSError, trio.BrokenResourceError, ssl.SSLError):
            failure = UpstreamFailure(FailureKind.CONNECT)
        except* trio.TooSlowError:
            failure = UpstreamFailure(FailureKind.TIMEOUT)
        if failure is not None and not self._ending:
            self._upstream_failed(failure)

    def _upstream_failed(self, failure: UpstreamFailure) -> None:
        self._count_failure(failure, None)
        self._end(self._feed_close(lambda _c, _r, now: self._core.upstream_failed(failure, now), None, None), None)

    def _upstream_ended(self, code: int | None, reason: str | None, by_peer: bool) -> None:
        """The open upstream leg ended; the blame policy (proxy/core.py) decides what the client is told."""
        ended: list[tuple[Close, UpstreamFailure | None]] = []
        self._feed(lambda now: ended.append(upstream_ended(self._core, code, reason, by_peer, now)))
        close, failure = ended[0]
        if failure is not None:
            self._count_failure(failure, reason)
        self._end(close, None)

    def _count_failure(self, failure: UpstreamFailure, detail: str | None) -> None:
        code, _ = failure.error()
        self.stats.upstream_failures[code] = self.stats.upstream_failures.get(code, 0) + 1
        if failure.kind is FailureKind.PROTOCOL:
            log.warning(
                "%s: upstream broke the WebSocket protocol (closed it with %s: %s)",
                self._label,
                failure.close_code,
                detail,
            )
        else:
            log.warning("%s: upstream unavailable (%s)", self._label, code)

    async def _upstream_reader(self, upstream: WebSocket) -> None:
        core = self._core
        to_client = self._to_client
        while True:
            if not to_client.writable():
                await to_client.wait_writable()
            try:
                message = await upstream.get_message()
            except ConnectionClosed as exc:
                if not self._ending:
                    closed = exc.reason
                    self._upstream_ended(closed.code, closed.reason, closed.by_peer)
                return
            if self._ending:
                continue
            self.stats.upstream_frames += 1
            core.upstream_message(message, trio.current_time())
            self._flush()
            await self._send_pending()

    async def _timer(self) -> None:
        core = self._core
        while True:
            deadline = core.next_deadline()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            if not self._ending:
                self._feed(core.timer_fired)
                await self._send_pending()

    async def _keepalive(self, ws: WebSocket, leg: str) -> None:
        """Ping ``leg`` every ``ping_interval_s``; end the session if the peer shows no life for ``ping_timeout_s``.

        Only the wait for the pong is timed (a ping frame is never cut off half-written; a send that does not
        complete is the send watchdog's business). A late pong counts against the peer only if the leg's reader
        is waiting for data and nothing arrived from the peer meanwhile: while the proxy itself is not reading
        that leg (backpressure, a blocked send), the pong may be sitting unread behind data, and any frame from
        the peer proves it alive as well as a pong does.
        """
        limits = self._limits
        stats = self.stats
        while True:
            await trio.sleep(limits.ping_interval_s)
            received = stats.client_frames if leg == "client" else stats.upstream_frames
            try:
                answered = await ws.send_ping()
            except ConnectionClosed:
                return
            with trio.move_on_after(limits.ping_timeout_s) as waiting:
                await answered.wait()
            if ws.closed is not None:
                return
            if not waiting.cancelled_caught or not ws.receiving:
                continue
            if received != (stats.client_frames if leg == "client" else stats.upstream_frames):
                continue
            log.warning("%s: %s did not answer a ping within %.0f s", self._label, leg, limits.ping_timeout_s)
            if leg == "client":
                self._end(Close(INTERNAL_ERROR, "Ping timeout"), Close(NORMAL))
            else:
                self._end(Close(INTERNAL_ERROR, "Upstream ping timeout"), Close(INTERNAL_ERROR))
            return
