"""The WebSocket opening handshake (RFC 6455 §4), sans-IO, on top of h11.

Server side: :func:`parse_upgrade` checks an upgrade request the server already parsed, :func:`accept_response`
renders the 101 answer. Client side: :class:`ClientHandshake` renders the request and reads the answer, which is
either accepted (with any bytes that followed the head) or rejected (status, headers and a bounded body).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from typing import Final

import h11

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD_BYTES: Final = 16 << 10
#: How much of a rejection's body is kept (it may explain the refusal; the rest is not read).
MAX_REJECTION_BODY: Final = 16 << 10


class HandshakeFailed(Exception):
    """The peer's handshake broke RFC 6455 (not a refusal: that is :class:`Rejected`)."""


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def _tokens(headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...], name: bytes) -> list[bytes]:
    """Comma-separated values of every header called ``name`` (lower case), stripped, empty ones dropped."""
    values: list[bytes] = []
    for key, value in headers:
        if key == name:
            values.extend(part.strip() for part in value.split(b","))
    return [value for value in values if value]


# -- server side ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A valid WebSocket upgrade request: its key, the subprotocols offered in order, and every header."""

    key: bytes
    subprotocols: tuple[str, ...]
    headers: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an upgrade request is refused: an HTTP status, a short message, extra response headers."""

    status: int
    message: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


def parse_upgrade(request: h11.Request) -> Upgrade | Refusal:
    """Check an HTTP request that asked for ``Upgrade: websocket`` (RFC 6455 §4.2.1)."""
    lowered = tuple(request.headers)  # h11 lower-cases header names
    if request.method != b"GET":
        return Refusal(400, "WebSocket upgrades must use GET")
    if request.http_version != b"1.1":
        return Refusal(400, "WebSocket upgrades need HTTP/1.1")
    if b"websocket" not in (token.lower() for token in _tokens(lowered, b"upgrade")):
        return Refusal(400, "Missing Upgrade: websocket")
    if b"upgrade" not in (token.lower() for token in _tokens(lowered, b"connection")):
        return Refusal(400, "Missing Connection: Upgrade")
    if _tokens(lowered, b"sec-websocket-version") != [b"13"]:
        return Refusal(426, "Unsupported WebSocket version", ((b"Sec-WebSocket-Version", b"13"),))
    keys = [value for name, value in lowered if name == b"sec-websocket-key"]
    if len(keys) != 1 or not _valid_key(keys[0].strip()):
        return Refusal(400, "Missing or invalid Sec-WebSocket-Key")
    subprotocols = tuple(token.decode("latin-1") for token in _tokens(lowered, b"sec-websocket-protocol"))
    return Upgrade(keys[0].strip(), subprotocols, lowered)


def _valid_key(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def accept_response(
    key: bytes, subprotocol: str | None = None, extra_headers: tuple[tuple[bytes, bytes], ...] = ()
) -> bytes:
    """The ``101 Switching Protocols`` answer to an upgrade carrying ``key``."""
    headers = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Accept", accept_key(key))]
    if subprotocol is not None:
        headers.append((b"Sec-WebSocket-Protocol", subprotocol.encode("latin-1")))
    headers.extend(extra_headers)
    lines = [b"HTTP/1.1 101 Switching Protocols"]
    for name, value in headers:
        if any(c in value or c in name for c in (b"\r", b"\n", b"\0")):
            raise ValueError("header names and values must not contain CR, LF or NUL")
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n"


# -- client side ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """The server switched protocols. ``extra``: bytes after the response head (already WebSocket frames)."""

    subprotocol: str | None
    headers: tuple[tuple[bytes, bytes], ...]
    extra: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """The server answered with something other than 101. ``body`` is at most :data:`MAX_REJECTION_BODY` bytes."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


class ClientHandshake:
    """Render a client upgrade request and read the server's answer.

    ``extra_headers`` may carry credentials (an ``Authorization`` header): they are written to the request and
    nowhere else. h11 refuses header values with line breaks, so no header can smuggle another.
    """

    __slots__ = ("_body", "_conn", "_key", "_offered", "_rejection")

    def __init__(self) -> None:
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._key = base64.b64encode(os.urandom(16))
        self._offered: tuple[str, ...] = ()
        self._rejection: h11.Response | None = None
        self._body = bytearray()

    def request(
        self,
        host: str,
        resource: str,
        *,
        subprotocols: tuple[str, ...] = (),
        extra_headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> bytes:
        self._offered = subprotocols
        headers = [
            (b"Host", host.encode("idna") if not host.isascii() else host.encode()),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", self._key),
            (b"Sec-WebSocket-Version", b"13"),
        ]
        if subprotocols:
            headers.append((b"Sec-WebSocket-Protocol", ", ".join(subprotocols).encode("latin-1")))
        headers.extend(extra_headers)
        head = self._conn.send(h11.Request(method="GET", target=resource, headers=headers))
        end = self._conn.send(h11.EndOfMessage())
        assert head is not None
        assert end is not None
        return head + end

    def receive_data(self, data: bytes | bytearray) -> Accepted | Rejected | None:
        """Feed bytes from the server (``b""``: it closed). Returns the outcome once known, else None."""
        conn = self._conn
        conn.receive_data(bytes(data))
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if self._rejection is not None:  # a malformed body: the status is what matters
                    return self._rejected()
                raise HandshakeFailed(f"Malformed handshake response: {exc}") from None
            if event is h11.NEED_DATA:
                if data == b"":
                    if self._rejection is not None:
                        return self._rejected()
                    raise HandshakeFailed("The server closed the connection during the handshake")
                return None
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    return self._accepted(event)
                continue  # 100 Continue and friends
            if isinstance(event, h11.Response):
                self._rejection = event
                continue
            if isinstance(event, h11.Data):
                room = MAX_REJECTION_BODY - len(self._body)
                self._body += event.data[:room]
                if len(self._body) >= MAX_REJECTION_BODY:
                    return self._rejected()
                continue
            if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed) or event is h11.PAUSED:
                if self._rejection is not None:
                    return self._rejected()
                raise HandshakeFailed("The server closed the connection during the handshake")

    def _rejected(self) -> Rejected:
        assert self._rejection is not None
        return Rejected(self._rejection.status_code, tuple(self._rejection.headers), bytes(self._body))

    def _accepted(self, response: h11.InformationalResponse) -> Accepted:
        headers = tuple((name.lower(), value) for name, value in response.headers)
        if b"websocket" not in (token.lower() for token in _tokens(headers, b"upgrade")):
            raise HandshakeFailed("101 response without Upgrade: websocket")
        if b"upgrade" not in (token.lower() for token in _tokens(headers, b"connection")):
            raise HandshakeFailed("101 response without Connection: Upgrade")
        accepts = [value.strip() for name, value in headers if name == b"sec-websocket-accept"]
        if accepts != [accept_key(self._key)]:
            raise HandshakeFailed("Wrong Sec-WebSocket-Accept")
        chosen = _tokens(headers, b"sec-websocket-protocol")
        subprotocol: str | None = None
        if chosen:
            subprotocol = chosen[0].decode("latin-1")
            if len(chosen) != 1 or subprotocol not in self._offered:
                raise HandshakeFailed("The server chose a subprotocol that was not offered")
        if _tokens(headers, b"sec-websocket-extensions"):
            raise HandshakeFailed("The server chose an extension that was not offered")
        return Accepted(subprotocol, headers, bytes(self._conn.trailing_data[0]))
