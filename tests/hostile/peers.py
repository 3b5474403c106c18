"""Hostile peers on raw sockets, for the hostile-input matrix: a browser that breaks every rule, and an upstream
that does the same from the other side. Frames are built with the tests' own codec (:mod:`tests.ws.wire`), which
shares no code with :mod:`proxy.ws`.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from tests.ws.wire import CLOSE, TEXT, RawPeer, parse_frame
from tests.wsmem import answer_upgrade


@dataclass
class Seen:
    """What the attacking client observed: an HTTP status, or frames and a close code, or a silent drop."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    close: int | None = None
    reason: str = ""
    #: The connection ended without an HTTP answer or a close frame.
    dropped: bool = False

    def errors(self) -> list[dict[str, object]]:
        """The component ``Error`` messages received."""
        found = []
        for text in self.texts:
            try:
                message = json.loads(text)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("type") == "Error":
                found.append(message)
        return found


def upgrade_request(path: str, *, headers: tuple[tuple[str, str], ...] = (), host: str = "proxy.test") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Client:
    """A raw TCP client of the proxy. Read what came back with :meth:`observe`."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.peer = RawPeer(stream, mask=True)
        self._buf = bytearray()

    async def send_bytes(self, data: bytes) -> None:
        """Send, ignoring a connection the proxy already closed (what it answered is read by :meth:`observe`)."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.send_all(data)

    async def upgrade(self, path: str, **kwargs: object) -> int:
        """Send an upgrade request and read the answer's status line and head."""
        await self.stream.send_all(upgrade_request(path, **kwargs))  # type: ignore[arg-type]
        while b"\r\n\r\n" not in self._buf:
            data = await self.stream.receive_some(65_536)
            if not data:
                return 0
            self._buf += data
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        self._buf.clear()
        self.peer._buf = bytearray(rest)  # frames that followed the head
        return int(head.split(b" ", 2)[1])

    async def observe(self, seen: Seen | None = None) -> Seen:
        """Read to the end: the HTTP answer if the connection was never upgraded, else frames up to the close."""
        seen = seen or Seen()
        if seen.status is None:
            data = bytearray()
            while chunk := await _receive(self.stream):
                data += chunk
            if not data:
                seen.dropped = True
                return seen
            head, _, _body = bytes(data).partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            seen.status = int(lines[0].split(" ", 2)[1])
            seen.headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)}
            return seen
        while True:
            try:
                frame = await self.peer.receive_frame()
            except (trio.BrokenResourceError, AssertionError):
                frame = None
            if frame is None:
                seen.dropped = seen.close is None
                return seen
            if frame.opcode == TEXT:
                seen.texts.append(frame.payload.decode())
            elif frame.opcode == CLOSE:
                seen.close, seen.reason = frame.close
                with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.peer.send_close(seen.close or 1000)
                return seen


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65_536)
    except trio.BrokenResourceError:
        return b""


UpstreamScript = Callable[[RawPeer], Awaitable[None]]


@asynccontextmanager
async def raw_upstream(script: UpstreamScript) -> AsyncIterator[int]:
    """A loopback upstream that answers the WebSocket upgrade, then runs ``script`` with a raw, unmasked peer."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            try:
                buffered = await answer_upgrade(stream)
            except AssertionError:
                return  # the proxy gave up on this upstream connection before its upgrade (the client left)
            peer = RawPeer(stream, mask=False)
            peer._buf = bytearray(buffered)
            await script(peer)
            with trio.move_on_after(2):
                while parse_frame(peer._buf) is not None or await stream.receive_some(65_536):
                    peer._buf.clear()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()
