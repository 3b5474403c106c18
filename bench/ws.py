"""A minimal WebSocket endpoint (RFC 6455) for the load generator and the simulated upstream.

The generator shares the machine's CPUs with the target, so its own cost per frame decides how much load it can
offer before it, not the target, is the bottleneck. This endpoint does only what the benchmark needs, inline in the
calling task (no reader task, no queue hop): unfragmented sends, reassembly of fragments, ping -> pong, the closing
handshake, size limits. Client frames use the all-zero masking key, which RFC 6455 permits the receiver to see and
which lets the generator skip the XOR; the target still runs its ordinary unmasking code on them. Masked frames from
a target's client side are unmasked with one big-integer XOR (C speed).

Messages are returned as ``(is_text, payload_bytes)``: msgspec decodes JSON from bytes directly.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from typing import Final
from urllib.parse import urlsplit

import trio

GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE_BYTES: Final = 16 << 20
MAX_HEAD_BYTES: Final = 16 << 10
RECEIVE_BYTES: Final = 65_536
CLOSE_TIMEOUT_S: Final = 2.0
_ZERO_KEY: Final = b"\x00\x00\x00\x00"

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class Closed(Exception):
    """The connection is closed; ``code`` is the peer's close code (1006: dropped without a close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"closed with {code}{': ' + reason if reason else ''}")
        self.code = code
        self.reason = reason


class HandshakeFailed(Exception):
    """The peer did not complete the opening handshake; ``status`` is its HTTP status when it answered with one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def frame_bytes(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One client frame (zero masking key) as it goes on the wire; ``fin=False`` for a fragment."""
    head = _header(opcode, len(payload), True)
    return (head if fin else bytes((head[0] & 0x7F,)) + head[1:]) + payload


def _header(opcode: int, length: int, masked: bool) -> bytes:
    first = 0x80 | opcode
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head = bytes((first, mask_bit | length))
    elif length < 65_536:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    return head + _ZERO_KEY if masked else head


def _unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    keys = key * (n // 4 + 1)
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keys[:n], "little")).to_bytes(n, "little")


def accept_token(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


class WebSocket:
    """One open WebSocket over a Trio stream. ``client``: frames we send are masked (with the zero key)."""

    __slots__ = ("_buf", "_close_sent", "_closed", "_fragments", "_fragments_text", "_lock", "_masked", "_stream")

    def __init__(self, stream: trio.abc.Stream, *, client: bool, buffered: bytes = b"") -> None:
        self._stream = stream
        self._masked = client
        self._buf = bytearray(buffered)
        self._lock = trio.StrictFIFOLock()
        self._close_sent = False
        self._closed: Closed | None = None
        self._fragments: list[bytes] = []
        self._fragments_text = False

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            await self._send_frame(OP_TEXT, message.encode())
        else:
            await self._send_frame(OP_BINARY, message)

    async def _send_frame(self, opcode: int, payload: bytes) -> None:
        if self._closed is not None:
            raise self._closed
        if self._close_sent and opcode != OP_CLOSE:
            raise Closed(1006, "close already sent")
        data = _header(opcode, len(payload), self._masked) + payload
        async with self._lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._closed = Closed(1006)
                raise self._closed from exc

    async def send_raw(self, data: bytes) -> None:
        """Bytes already framed (see :func:`frame_bytes`), as they are: for clients that break the protocol."""
        if self._closed is not None:
            raise self._closed
        async with self._lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._closed = Closed(1006)
                raise self._closed from exc

    async def receive_frame(self) -> tuple[int, bool, bytes]:
        """The next frame as ``(opcode, fin, payload)``, nothing answered; :class:`Closed` (1006) at the end."""
        while True:
            frame = self._next_frame()
            if frame is not None:
                return frame
            await self._fill()

    async def abort(self) -> None:
        """Drop the connection without a closing handshake."""
        if self._closed is None:
            self._closed = Closed(1006)
        await trio.aclose_forcefully(self._stream)

    async def receive(self) -> tuple[bool, bytes]:
        """The next data message as ``(is_text, payload)``; answers pings and closes on the way."""
        if self._closed is not None:
            raise self._closed
        while True:
            frame = self._next_frame()
            if frame is None:
                await self._fill()
                continue
            opcode, fin, payload = frame
            if opcode == OP_PING:
                await self._send_frame(OP_PONG, payload)
            elif opcode == OP_PONG:
                pass
            elif opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                reason = payload[2:].decode(errors="replace")
                await self._finish(code, reason, payload[:2])
            elif opcode == OP_CONTINUATION or not fin:
                if opcode != OP_CONTINUATION:
                    self._fragments_text = opcode == OP_TEXT
                    self._fragments = []
                self._fragments.append(payload)
                if sum(len(part) for part in self._fragments) > MAX_MESSAGE_BYTES:
                    await self._finish(1009, "message too big", struct.pack("!H", 1009))
                if fin:
                    message = b"".join(self._fragments)
                    self._fragments = []
                    return self._fragments_text, message
            else:
                return opcode == OP_TEXT, payload

    def _next_frame(self) -> tuple[int, bool, bytes] | None:
        buf = self._buf
        size = len(buf)
        if size < 2:
            return None
        second = buf[1]
        length = second & 0x7F
        pos = 2
        if length == 126:
            if size < 4:
                return None
            length = int.from_bytes(buf[2:4], "big")
            pos = 4
        elif length == 127:
            if size < 10:
                return None
            length = int.from_bytes(buf[2:10], "big")
            pos = 10
        if length > MAX_MESSAGE_BYTES:
            raise Closed(1009, "frame too big")
        key = None
        if second & 0x80:
            if size < pos + 4:
                return None
            key = bytes(buf[pos : pos + 4])
            pos += 4
        end = pos + length
        if size < end:
            return None
        first = buf[0]
        payload = bytes(buf[pos:end])
        del buf[:end]
        if key is not None and key != _ZERO_KEY:
            payload = _unmask(payload, key)
        return first & 0x0F, bool(first & 0x80), payload

    async def _fill(self) -> None:
        try:
            data = await self._stream.receive_some(RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self._closed = Closed(1006)
            await trio.aclose_forcefully(self._stream)
            raise self._closed
        self._buf += data

    async def _finish(self, code: int, reason: str, echo: bytes) -> None:
        """The peer closed: answer with a close frame (once), close the stream, raise :class:`Closed`."""
        closed = Closed(code, reason)
        if not self._close_sent:
            self._close_sent = True
            try:
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await self._send_frame(OP_CLOSE, echo)
            except Closed:
                pass
        self._closed = closed
        await trio.aclose_forcefully(self._stream)
        raise closed

    async def aclose(self, code: int = 1000) -> None:
        """Start the closing handshake, wait (bounded) for the peer's close, then close the stream."""
        if self._closed is not None:
            return
        try:
            if not self._close_sent:
                self._close_sent = True
                await self._send_frame(OP_CLOSE, struct.pack("!H", code))
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                while True:
                    await self.receive()
        except Closed:
            pass
        finally:
            if self._closed is None:
                self._closed = Closed(1006)
            await trio.aclose_forcefully(self._stream)


async def _read_head(stream: trio.abc.Stream) -> tuple[bytes, bytes]:
    """Read an HTTP head; returns (head, bytes after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            raise HandshakeFailed("HTTP head too large")
        chunk = await stream.receive_some(RECEIVE_BYTES)
        if not chunk:
            raise HandshakeFailed("connection closed during the handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _headers(lines: list[bytes]) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return headers


async def connect(url: str, *, local_address: str | None = None) -> WebSocket:
    """Open a client WebSocket to a ``ws://`` URL (no TLS: the benchmark runs on loopback), from ``local_address``
    when given."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"only ws:// URLs are supported, got {url!r}")
    port = parts.port or 80
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream = await trio.open_tcp_stream(parts.hostname, port, local_address=local_address)
    try:
        key = base64.b64encode(os.urandom(16))
        request = (
            f"GET {resource} HTTP/1.1\r\nHost: {parts.hostname}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        await stream.send_all(request)
        head, rest = await _read_head(stream)
        status_line, *lines = head.split(b"\r\n")
        status = status_line.split(b" ", 2)
        if len(status) < 2 or status[1] != b"101":
            code = int(status[1]) if len(status) >= 2 and status[1].isdigit() else None
            raise HandshakeFailed(f"upgrade refused: {status_line.decode(errors='replace')[:100]}", code)
        if _headers(lines).get(b"sec-websocket-accept") != accept_token(key):
            raise HandshakeFailed("bad Sec-WebSocket-Accept")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return WebSocket(stream, client=True, buffered=rest)


async def accept(stream: trio.abc.Stream, allowed_paths: tuple[str, ...]) -> tuple[str, WebSocket] | None:
    """Server side: read the upgrade request; answer 101 on an allowed path (else 404 and None)."""
    head, rest = await _read_head(stream)
    request_line, *lines = head.split(b"\r\n")
    parts = request_line.split(b" ")
    target = parts[1].decode(errors="replace") if len(parts) >= 2 else ""
    path = target.split("?", 1)[0]
    key = _headers(lines).get(b"sec-websocket-key")
    if path not in allowed_paths or key is None:
        await stream.send_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return None
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_token(key) + b"\r\n\r\n"
    )
    return path, WebSocket(stream, client=False, buffered=rest)
