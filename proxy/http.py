"""HTTP/1.1 on the listener, sans-IO: the request head under one size and header-count limit, and the short answers.

:class:`HeadReader` takes bytes as they arrive and decides once: a complete :class:`RequestHead` (with the bytes
that came after it, early WebSocket frames), or a :class:`BadHead` carrying the status to answer. The size limit
is on the head itself, terminator included, whatever the read boundaries: h11's own limit applies only while a head
is incomplete, so a whole head that arrived in one read would get past it. :func:`encode_answer` serialises a
complete response with the headers every answer carries. No Trio here: the listener moves the bytes.
"""

from __future__ import annotations

import http
import re
from dataclasses import dataclass

import h11

#: The documented limit on a request head (request line, headers and the blank line).
MAX_REQUEST_HEAD_BYTES = 16 * 1024
#: Headers in one request head; browsers send about 15 on a WebSocket upgrade.
MAX_REQUEST_HEADERS = 100

# h11 ends a head at a blank line with or without the CR; so must the size check, or the two could disagree.
_END_OF_HEAD = re.compile(rb"\n\r?\n")

TEXT = b"text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class RequestHead:
    request: h11.Request
    #: Bytes received after the head: frames a WebSocket client sent before it saw the 101.
    buffered: bytes


@dataclass(frozen=True, slots=True)
class BadHead:
    """A head the listener answers with an error status and then closes."""

    status: int
    #: The ``proxy_rejected_total`` reason.
    reason: str


HEAD_TOO_LARGE = BadHead(431, "request_head_too_large")
TOO_MANY_HEADERS = BadHead(431, "too_many_headers")
BAD_REQUEST = BadHead(400, "bad_request")


class HeadReader:
    """Collects one request head; :meth:`feed` returns None until it has decided."""

    def __init__(self, max_head_bytes: int = MAX_REQUEST_HEAD_BYTES, max_headers: int = MAX_REQUEST_HEADERS) -> None:
        self._max_head_bytes = max_head_bytes
        self._max_headers = max_headers
        self._buffer = bytearray()

    @property
    def started(self) -> bool:
        """Whether any byte arrived (a connection that sent nothing is closed without an answer)."""
        return bool(self._buffer)

    def feed(self, data: bytes | bytearray) -> RequestHead | BadHead | None:
        # A terminator may straddle two reads: search again from the last two bytes already held.
        start = max(0, len(self._buffer) - 2)
        self._buffer += data
        end = _END_OF_HEAD.search(self._buffer, start)
        if end is None:
            return HEAD_TOO_LARGE if len(self._buffer) >= self._max_head_bytes else None
        if end.end() > self._max_head_bytes:
            return HEAD_TOO_LARGE
        return self._parse(bytes(self._buffer[: end.end()]), bytes(self._buffer[end.end() :]))

    def _parse(self, head: bytes, rest: bytes) -> RequestHead | BadHead:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head_bytes)
        connection.receive_data(head)
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:
            return BAD_REQUEST
        if not isinstance(event, h11.Request):
            return BAD_REQUEST  # only blank lines: h11 still waits for a request line
        if len(event.headers) > self._max_headers:
            return TOO_MANY_HEADERS
        return RequestHead(event, rest)


def encode_answer(
    status: int,
    body: bytes,
    content_type: bytes = TEXT,
    extra: tuple[tuple[bytes, bytes], ...] = (),
    cache_control: bytes = b"no-store",
) -> bytes:
    """One complete response that closes the connection, with the headers every answer of the listener carries."""
    headers = [
        (b"Content-Type", content_type),
        (b"Content-Length", str(len(body)).encode()),
        (b"Connection", b"close"),
        (b"Cache-Control", cache_control),
        (b"X-Content-Type-Options", b"nosniff"),
        *extra,
    ]
    connection = h11.Connection(h11.SERVER)
    # h11 serialises a response only after it has seen a request; feed it a minimal one.
    connection.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    connection.next_event()
    data = connection.send(h11.Response(status_code=status, headers=headers, reason=http.HTTPStatus(status).phrase))
    data += connection.send(h11.Data(data=body)) if body else b""
    data += connection.send(h11.EndOfMessage())
    return data
