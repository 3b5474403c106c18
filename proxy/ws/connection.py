"""A WebSocket connection driven by the tasks that use it: the Trio shell around :mod:`proxy.ws.frames`.

There is no background reader task and no message queue. ``get_message`` reads from the transport in the calling
task, answers pings on the way, and returns the next message; ``send_message`` writes one frame from the calling
task. A proxy session already has exactly one task reading each leg, so a reader task per connection would only add
a task switch and a queue hop to every message, and a buffer nobody bounds.

Concurrency rules: one task at a time may call :meth:`WebSocket.get_message`; any number may send (each frame is
written whole, in the order the senders got the transport); :meth:`WebSocket.aclose` completes the closing handshake
whether or not a reader is active. A send cut off by cancellation leaves a partial frame on the wire: the connection
then refuses further frames and :meth:`WebSocket.aclose` only drops the transport.

Fairness: the reading path yields to the scheduler at least once per :data:`YIELD_BUDGET_BYTES` read or per
``YIELD_BUDGET_BYTES // EVENT_COST_BYTES`` events, whatever the transport does, so a peer whose bytes are always
there (and whose events are all swallowed here: pongs, empty fragments) cannot starve other sessions. A budget, not a
checkpoint per read or per frame: a checkpoint is a trip through the scheduler, and the hot path is one small audio
message after another.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Final, NamedTuple, NoReturn

import trio

from . import frames
from .frames import OP_BINARY, OP_PING, OP_PONG, OP_TEXT, FrameDecoder, PeerClose, Ping, Pong, ProtocolViolation
from .handshake import Accepted, ClientHandshake, HandshakeFailed

RECEIVE_BYTES: Final = 65_536
ABNORMAL: Final = 1006
#: Bytes read (or events decoded, at EVENT_COST_BYTES each) between two forced schedule points.
YIELD_BUDGET_BYTES: Final = 16_384
EVENT_COST_BYTES: Final = 512


class CloseReason(NamedTuple):
    """How a connection ended. ``by_peer`` False: we closed it (for example because the peer broke a limit)."""

    code: int
    reason: str | None = None
    by_peer: bool = True


class ConnectionClosed(Exception):
    """The connection is closed (or closing); ``reason`` says how. 1006: it dropped without a close frame."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(f"WebSocket closed ({reason.code}{': ' + reason.reason if reason.reason else ''})")
        self.reason = reason


class ConnectionRejected(Exception):
    """The server answered the upgrade request with an HTTP status other than 101."""

    def __init__(self, status_code: int, headers: tuple[tuple[bytes, bytes], ...], body: bytes) -> None:
        super().__init__(f"WebSocket upgrade rejected with HTTP {status_code}")
        self.status_code = status_code
        self.headers = headers
        self.body = body


class WebSocket:
    """One open WebSocket over a Trio stream. ``client``: we opened it, so our frames are masked."""

    __slots__ = (
        "_broken",
        "_close_sent",
        "_closed",
        "_closed_event",
        "_control_rate",
        "_decoder",
        "_mask",
        "_ping_ids",
        "_pings",
        "_receive_bytes",
        "_receive_lot",
        "_receiving",
        "_send_lot",
        "_sending",
        "_stream",
        "_yield_budget",
        "send_started",
        "subprotocol",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        client: bool,
        max_message_size: int,
        subprotocol: str | None = None,
        buffered: bytes = b"",
        receive_bytes: int = RECEIVE_BYTES,
        max_fragments_per_message: int = frames.DEFAULT_MAX_FRAGMENTS_PER_MESSAGE,
        max_control_frames_per_s: float = frames.DEFAULT_MAX_CONTROL_FRAMES_PER_S,
    ) -> None:
        self._stream = stream
        self._mask = client
        self._decoder = FrameDecoder(
            client=client, max_message_size=max_message_size, max_fragments=max_fragments_per_message
        )
        self._control_rate = frames.ControlFrameRate(max_control_frames_per_s)
        self._yield_budget = YIELD_BUDGET_BYTES
        if buffered:
            self._decoder.feed(buffered)
        self._receive_bytes = receive_bytes
        #: The subprotocol agreed in the handshake, if any.
        self.subprotocol = subprotocol
        self._closed: CloseReason | None = None
        # Parking lots, the close event and the ping table are made on first use: most connections never need
        # them, and a proxy holds two connections per idle session.
        self._closed_event: trio.Event | None = None
        self._close_sent: CloseReason | None = None
        self._broken = False
        self._receiving = False
        self._receive_lot: trio.lowlevel.ParkingLot | None = None
        self._sending = False
        self._send_lot: trio.lowlevel.ParkingLot | None = None
        self._pings: dict[bytes, trio.Event] | None = None
        self._ping_ids: itertools.count[int] | None = None
        #: When the frame being written started to be written (None: no write in progress); for send watchdogs.
        self.send_started: float | None = None

    @property
    def receiving(self) -> bool:
        """A task is waiting in :meth:`get_message` (or :meth:`aclose` is reading the peer's close)."""
        return self._receiving

    @property
    def closed(self) -> CloseReason | None:
        """How the connection ended, or None while it is open (or still closing)."""
        return self._closed

    # -- receiving ----------------------------------------------------------------------------------------------

    async def get_message(self) -> str | bytes:
        """The next message (``str`` for text, ``bytes`` for binary). Raises :class:`ConnectionClosed`."""
        while True:
            if self._closed is not None:
                raise ConnectionClosed(self._closed)
            if self._receiving:
                if self._close_sent is not None:  # aclose() is reading the peer's close frame
                    if self._closed_event is None:
                        self._closed_event = trio.Event()
                    await self._closed_event.wait()
                    continue
                raise trio.BusyResourceError("another task is already receiving on this WebSocket")
            self._receiving = True
            try:
                event = await self._next_event()
            finally:
                self._receiving = False
                if self._receive_lot:  # None or empty: nobody to wake
                    self._receive_lot.unpark_all()  # aclose() may be waiting to take over reading
            if isinstance(event, str | bytes):
                if self._close_sent is None:
                    return event
                continue  # we are closing: the peer's late data is dropped (RFC 6455 §5.5.1)
            await self._control(event)

    async def _next_event(self) -> frames.Event:
        decoder = self._decoder
        while True:
            if self._yield_budget <= 0:
                # Before decoding, so a cancellation here loses nothing.
                self._yield_budget = YIELD_BUDGET_BYTES
                await trio.lowlevel.checkpoint()
            try:
                event = decoder.next_event()
                if isinstance(event, Ping | Pong):
                    self._control_rate.admit(trio.current_time())
            except ProtocolViolation as violation:
                await self._fail(violation)
            if event is not None:
                self._yield_budget -= EVENT_COST_BYTES
                return event
            try:
                data = await self._stream.receive_some(self._receive_bytes)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                await self._finish(CloseReason(ABNORMAL, None))
                raise ConnectionClosed(self._closed or CloseReason(ABNORMAL))
            self._yield_budget -= len(data)
            decoder.feed(data)

    async def _control(self, event: Ping | Pong | PeerClose) -> None:
        if isinstance(event, Ping):
            if self._close_sent is None and not self._broken:
                with contextlib.suppress(ConnectionClosed):  # the transport is gone; the next read reports it
                    await self._send_raw(frames.encode_frame(OP_PONG, event.payload, mask=self._mask))
        elif isinstance(event, Pong):
            self._pong(event.payload)
        else:
            await self._peer_closed(event)

    def _pong(self, payload: bytes) -> None:
        pings = self._pings
        if pings is None or payload not in pings:
            return  # unsolicited: allowed as a heartbeat, nothing to do
        # A pong acknowledges its ping and every ping sent before it.
        for key in list(pings):
            pings.pop(key).set()
            if key == payload:
                break

    async def _peer_closed(self, close: PeerClose) -> NoReturn:
        reason = CloseReason(close.code, close.reason)
        if self._close_sent is None and not self._broken:
            self._close_sent = reason
            echo = None if close.code == frames.NO_STATUS else close.code
            with contextlib.suppress(ConnectionClosed):
                await self._send_raw(frames.encode_close(echo, mask=self._mask))
        await self._finish(reason)
        raise ConnectionClosed(self._closed or reason)

    async def _fail(self, violation: ProtocolViolation) -> NoReturn:
        """The peer broke the protocol or a limit: send the matching close (best effort) and drop the transport."""
        reason = CloseReason(violation.code, violation.reason, by_peer=False)
        if self._close_sent is None and not self._broken:
            self._close_sent = reason
            with trio.move_on_after(1.0):  # the peer is misbehaving: do not wait long for it to read this
                with contextlib.suppress(ConnectionClosed):
                    await self._send_raw(frames.encode_close(violation.code, violation.reason, mask=self._mask))
        await self._finish(reason)
        raise ConnectionClosed(self._closed or reason)

    # -- sending ------------------------------------------------------------------------------------------------

    async def send_message(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary (``bytes``) message. Raises :class:`ConnectionClosed`."""
        if self._close_sent is not None or self._closed is not None:
            raise ConnectionClosed(self._closed or self._close_sent or CloseReason(ABNORMAL))
        if isinstance(message, str):
            await self._send_raw(frames.encode_frame(OP_TEXT, message.encode(), mask=self._mask))
        else:
            await self._send_raw(frames.encode_frame(OP_BINARY, message, mask=self._mask))

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for its pong (answered by whichever task is reading). Raises ConnectionClosed."""
        if payload is None:
            payload = self._next_ping_payload()
        answered = await self.send_ping(payload)
        try:
            await answered.wait()
        finally:
            if self._pings is not None and self._pings.get(payload) is answered:
                del self._pings[payload]  # cancelled while waiting: forget it
        if self._closed is not None:
            raise ConnectionClosed(self._closed)

    async def send_ping(self, payload: bytes | None = None) -> trio.Event:
        """Send a ping; return an event set when its pong arrives or the connection closes (check :attr:`closed`).

        Waiting for the pong is separate from sending so that a caller can bound the wait without ever cancelling
        a frame half-written.
        """
        if self._close_sent is not None or self._closed is not None:
            raise ConnectionClosed(self._closed or self._close_sent or CloseReason(ABNORMAL))
        if payload is None:
            payload = self._next_ping_payload()
        if self._pings is None:
            self._pings = {}
        if payload in self._pings:
            raise ValueError("a ping with this payload is already waiting for its pong")
        answered = trio.Event()
        self._pings[payload] = answered
        try:
            await self._send_raw(frames.encode_frame(OP_PING, payload, mask=self._mask))
        except BaseException:
            self._pings.pop(payload, None)
            raise
        return answered

    def _next_ping_payload(self) -> bytes:
        if self._ping_ids is None:
            self._ping_ids = itertools.count()
        return next(self._ping_ids).to_bytes(8, "big")

    async def _send_raw(self, data: bytes) -> None:
        """Write one whole frame. Senders take turns; a send cut off mid-frame breaks the connection for good."""
        while self._sending:
            if self._send_lot is None:
                self._send_lot = trio.lowlevel.ParkingLot()
            await self._send_lot.park()
        if self._broken or self._closed is not None:
            raise ConnectionClosed(self._closed or CloseReason(ABNORMAL))
        self._sending = True
        self.send_started = trio.current_time()
        complete = False
        try:
            await self._stream.send_all(data)
            complete = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            complete = True
            self._broken = True
            await self._finish(CloseReason(ABNORMAL))
            raise ConnectionClosed(self._closed or CloseReason(ABNORMAL)) from None
        finally:
            self._sending = False
            self.send_started = None
            if not complete:
                self._broken = True
            if self._send_lot is not None:
                self._send_lot.unpark()

    # -- closing ------------------------------------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close: send a close frame with ``code``, wait for the peer's, drop the transport.

        Bound it with a cancel scope; when cancelled (or when a send was cut off before) the transport is dropped
        without completing the handshake.
        """
        if self._closed is not None:
            return
        ours = CloseReason(code, reason, by_peer=False)
        try:
            if self._close_sent is None and not self._broken:
                self._close_sent = ours
                await self._send_raw(frames.encode_close(code, reason or "", mask=self._mask))
            while not self._broken and self._closed is None:
                if self._receiving:
                    # The active reader will see the peer's close frame; if it stops reading first (cancelled),
                    # we are woken and read it ourselves.
                    if self._receive_lot is None:
                        self._receive_lot = trio.lowlevel.ParkingLot()
                    await self._receive_lot.park()
                    continue
                self._receiving = True
                try:
                    event = await self._next_event()
                    if isinstance(event, PeerClose):
                        await self._finish(ours)
                finally:
                    self._receiving = False
        except ConnectionClosed:
            pass
        finally:
            await self._finish(ours)

    async def abort(self) -> None:
        """Drop the transport without a closing handshake (for a peer that stopped reading, or a broken frame)."""
        self._broken = True
        await self._finish(CloseReason(ABNORMAL, None, by_peer=False))

    async def _finish(self, reason: CloseReason) -> None:
        if self._closed is None:
            self._closed = reason
            if self._closed_event is not None:
                self._closed_event.set()
            if self._receive_lot is not None:
                self._receive_lot.unpark_all()
            for answered in (self._pings or {}).values():
                answered.set()
        await trio.aclose_forcefully(self._stream)


# -- opening ------------------------------------------------------------------------------------------------------


async def connect(
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    subprotocols: tuple[str, ...] = (),
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
    max_message_size: int,
    max_fragments_per_message: int = frames.DEFAULT_MAX_FRAGMENTS_PER_MESSAGE,
    max_control_frames_per_s: float = frames.DEFAULT_MAX_CONTROL_FRAMES_PER_S,
) -> WebSocket:
    """Run the client handshake on an open stream. Raises :class:`ConnectionRejected` for a non-101 answer and
    :class:`HandshakeFailed` for an invalid one; the caller bounds the time and closes the stream on failure."""
    handshake = ClientHandshake()
    await stream.send_all(handshake.request(host, resource, subprotocols=subprotocols, extra_headers=extra_headers))
    while True:
        try:
            data = await stream.receive_some(RECEIVE_BYTES)
        except trio.BrokenResourceError:
            data = b""
        outcome = handshake.receive_data(data)
        if outcome is None:
            continue
        if isinstance(outcome, Accepted):
            return WebSocket(
                stream,
                client=True,
                max_message_size=max_message_size,
                subprotocol=outcome.subprotocol,
                buffered=outcome.extra,
                max_fragments_per_message=max_fragments_per_message,
                max_control_frames_per_s=max_control_frames_per_s,
            )
        raise ConnectionRejected(outcome.status, outcome.headers, outcome.body)


__all__ = ["CloseReason", "ConnectionClosed", "ConnectionRejected", "HandshakeFailed", "WebSocket", "connect"]
