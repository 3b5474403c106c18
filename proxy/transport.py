"""The sessions' TCP transport: a Trio stream over a plain non-blocking socket, with fewer wake-ups per message.

``trio.SocketStream`` is correct and general, and on a proxy's hot path it costs: every ``receive_some`` first
tries ``recv`` (which fails with EAGAIN when the next message has not arrived, the usual case for a voice session)
before waiting, and every ``send_all`` that completes at once still yields to the scheduler. This stream waits for
readability first when the previous read drained the socket, and does not yield after a send that did not block.
Each message then costs one wake-up instead of two or three (about 18 µs instead of 41 µs per round trip in a
ping-pong micro-benchmark on the reference VM).

Scheduling contract (narrower than Trio's "every async call is a checkpoint"): ``receive_some`` always has a
schedule point (it waits, or yields when data was already there); ``send_all`` is a cancellation point and yields
only when the socket is full. A task that loops on receive-then-send therefore yields once per message, which is
all fairness needs. Errors follow ``trio.SocketStream``: OS errors become ``BrokenResourceError``, use after
``aclose`` (also from another task, which wakes any waiter) ``ClosedResourceError``.
"""

from __future__ import annotations

import socket
from typing import Final

import trio

DEFAULT_RECEIVE_SIZE: Final = 65_536


class SocketTransport(trio.abc.HalfCloseableStream):
    """A connected TCP socket as a Trio stream. Take it over from a ``trio.SocketStream`` with :meth:`take_over`."""

    __slots__ = ("_closed", "_drained", "_receiving", "_sending", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._closed = False
        #: The last read returned less than asked for: the socket is most likely empty, so wait before reading.
        self._drained = False
        self._receiving = False
        self._sending = False

    @classmethod
    def take_over(cls, stream: trio.SocketStream) -> SocketTransport:
        """Move ``stream``'s connection into a new transport. ``stream`` must not be used afterwards (closing it
        is harmless). Socket options Trio set (TCP_NODELAY, TCP_NOTSENT_LOWAT) stay in force."""
        fd = stream.socket.detach()
        return cls(socket.socket(fileno=fd))

    @property
    def socket(self) -> socket.socket:
        return self._sock

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        elif max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._check_open()
        self._receiving = True
        try:
            sock = self._sock
            waited = False
            if self._drained:
                await trio.lowlevel.wait_readable(sock)
                waited = True
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
            while True:
                try:
                    data = sock.recv(max_bytes)
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(sock)
                    waited = True
                except OSError as exc:
                    self._check_open()
                    raise trio.BrokenResourceError(str(exc)) from exc
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            self._drained = len(data) < max_bytes
            return data
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._check_open()
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            sock = self._sock
            with memoryview(data) as view:
                total = len(view)
                sent = 0
                while sent < total:
                    try:
                        sent += sock.send(view[sent:])
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(sock)
                    except OSError as exc:
                        self._check_open()
                        raise trio.BrokenResourceError(str(exc)) from exc
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._check_open()
        await trio.lowlevel.wait_writable(self._sock)

    async def send_eof(self) -> None:
        self._check_open()
        await trio.lowlevel.checkpoint()
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self._sock)  # tasks waiting on it get ClosedResourceError
            self._sock.close()
        await trio.lowlevel.checkpoint()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")


async def linger(stream: trio.abc.Stream, until: float, max_bytes: int, read_bytes: int = 16 * 1024) -> None:
    """After answering a request whose body was not read: half-close, then drop what the peer still sends (at most
    ``max_bytes``, until ``until``). Closing with unread bytes would reset the connection, and the peer could lose
    the answer before reading it."""
    with trio.move_on_at(until):
        if isinstance(stream, trio.abc.HalfCloseableStream):  # TLS has no half-close
            await stream.send_eof()
        dropped = 0
        while dropped < max_bytes and (data := await stream.receive_some(read_bytes)):
            dropped += len(data)
