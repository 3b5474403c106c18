"""RFC 6455 framing, sans-IO: decode a byte stream into messages and control frames, encode frames.

The proxy's two legs carry one small message every few tens of milliseconds per session, so the cost per frame
decides how many sessions a process carries. This codec does what the proxy needs and nothing else: no extensions
(none is ever negotiated, so any RSV bit is an error), fragments reassembled, control frames interleaved, every
violation reported with the close code RFC 6455 §7.4.1 prescribes. It is also the first line against a hostile
peer: a message is bounded in bytes and in fragments (every fragment counts, empty ones too) before its payload is
buffered, fragments are reassembled into one ``bytearray`` (memory follows the bytes received, not the frame count),
and :class:`ControlFrameRate` bounds pings and pongs per second for the caller, which owns the clock. Masking
and unmasking run in numpy (one vectorised XOR per frame); there are no per-byte Python loops.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Final

import numpy as np

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
_DATA_OPCODES: Final = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY})
_CONTROL_OPCODES: Final = frozenset({OP_CLOSE, OP_PING, OP_PONG})

PROTOCOL_ERROR: Final = 1002
INVALID_DATA: Final = 1007
POLICY_VIOLATION: Final = 1008
MESSAGE_TOO_BIG: Final = 1009
NO_STATUS: Final = 1005
MAX_CONTROL_PAYLOAD: Final = 125
#: Defaults of the per-connection limits (``proxy.config.Limits`` uses them). The component and the providers send
#: messages whole or in a few fragments; pings and pongs are keepalives, a few a minute.
DEFAULT_MAX_FRAGMENTS_PER_MESSAGE: Final = 128
DEFAULT_MAX_CONTROL_FRAMES_PER_S: Final = 20.0


# Events are frozen slotted dataclasses, not NamedTuples: events of different types never compare equal
# (``Ping(b"x") != Pong(b"x")``), as tuples would.
@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class PeerClose:
    """A close frame from the peer. ``code`` is 1005 when the frame carried no status code."""

    code: int
    reason: str


#: What :meth:`FrameDecoder.next_event` yields: a complete message (``str`` for text, ``bytes`` for binary) or a
#: control frame.
Event = str | bytes | Ping | Pong | PeerClose


class ProtocolViolation(Exception):
    """The peer broke RFC 6455 (or our size limit); close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def valid_close_code(code: int) -> bool:
    """Whether a peer may send ``code`` in a close frame (RFC 6455 §7.4 and the IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def unmask(payload: bytes | bytearray, key: bytes, offset: int = 0, length: int | None = None) -> bytes:
    """XOR ``length`` bytes of ``payload`` from ``offset`` with the repeating 4-byte ``key``.

    Masking and unmasking are the same operation. The result is a new ``bytes``; ``payload`` is only read.
    """
    n = len(payload) - offset if length is None else length
    if n == 0:
        return b""
    data = np.frombuffer(payload, np.uint8, n, offset)
    mask = np.frombuffer(key * ((n >> 2) + 1), np.uint8, n)
    result: bytes = np.bitwise_xor(data, mask).tobytes()
    return result


class _KeySource:
    """Unpredictable 4-byte masking keys (RFC 6455 §5.3), read from the OS CSPRNG in blocks to save system calls."""

    __slots__ = ("_block", "_pos")

    _BLOCK: Final = 4096

    def __init__(self) -> None:
        self._block = b""
        self._pos = self._BLOCK

    def next(self) -> bytes:
        if self._pos >= len(self._block):
            self._block = os.urandom(self._BLOCK)
            self._pos = 0
        key = self._block[self._pos : self._pos + 4]
        self._pos += 4
        return key


_keys = _KeySource()


def encode_frame(opcode: int, payload: bytes, *, mask: bool) -> bytes:
    """One final (unfragmented) frame. ``mask``: we are the client, so the payload is masked with a fresh key."""
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, (0x80 if mask else 0) | length))
    elif length < 65_536:
        head = struct.pack("!BBH", 0x80 | opcode, (0x80 if mask else 0) | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, (0x80 if mask else 0) | 127, length)
    if not mask:
        return head + payload
    key = _keys.next()
    return head + key + unmask(payload, key)


def encode_close(code: int | None, reason: str = "", *, mask: bool) -> bytes:
    """A close frame; ``code`` None sends no status. ``reason`` is cut to fit 125 bytes on a character boundary.

    Raises ValueError for a code that must not appear on the wire (1005, 1006, 1015, unassigned ranges).
    """
    if code is None:
        return encode_frame(OP_CLOSE, b"", mask=mask)
    if not valid_close_code(code):
        raise ValueError(f"close code {code} cannot be sent")
    data = reason.encode()[: MAX_CONTROL_PAYLOAD - 2].decode(errors="ignore").encode()
    return encode_frame(OP_CLOSE, struct.pack("!H", code) + data, mask=mask)


def parse_close(payload: bytes) -> PeerClose:
    if not payload:
        return PeerClose(NO_STATUS, "")
    if len(payload) == 1:
        raise ProtocolViolation(PROTOCOL_ERROR, "Close frame with a one-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not valid_close_code(code):
        raise ProtocolViolation(PROTOCOL_ERROR, f"Invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolViolation(INVALID_DATA, "Close reason is not valid UTF-8") from None
    return PeerClose(code, reason)


class ControlFrameRate:
    """A token bucket for pings and pongs: ``max_per_s`` a second on average, bursts of up to one second's worth.

    Sans-IO: the caller passes the time. A ping costs us a pong and a pong a dictionary look-up, so a flood of
    either is a way to burn our CPU and upstream bandwidth; a keepalive peer sends a few a minute.
    """

    __slots__ = ("_last", "_max_per_s", "_tokens")

    def __init__(self, max_per_s: float = DEFAULT_MAX_CONTROL_FRAMES_PER_S) -> None:
        if not max_per_s > 0:
            raise ValueError("max_per_s must be positive")
        self._max_per_s = max_per_s
        self._tokens = max_per_s
        self._last: float | None = None

    def admit(self, now: float) -> None:
        """Count one control frame received at ``now``; raises :class:`ProtocolViolation` (1008) over the rate."""
        if self._last is not None:
            self._tokens = min(self._max_per_s, self._tokens + (now - self._last) * self._max_per_s)
        self._last = now
        if self._tokens < 1:
            raise ProtocolViolation(POLICY_VIOLATION, "Too many control frames")
        self._tokens -= 1


class FrameDecoder:
    """Turns received bytes into :data:`Event` values, one at a time.

    ``client``: we are the client, so frames from the peer must not be masked; a server requires every frame to
    be masked. ``max_message_size`` bounds a message (all its fragments) before any of it is buffered: a frame
    header announcing more is refused at once with 1009, so a peer cannot make us hold more than the limit.
    ``max_fragments`` bounds the frames of one message, empty ones included (1008 from the header of the first
    frame over it): without it a peer could keep one message open forever with empty continuations.
    """

    __slots__ = ("_buf", "_fragments", "_max", "_max_fragments", "_message", "_message_text", "_require_mask")

    def __init__(
        self, *, client: bool, max_message_size: int, max_fragments: int = DEFAULT_MAX_FRAGMENTS_PER_MESSAGE
    ) -> None:
        if max_fragments < 1:
            raise ValueError("max_fragments must be at least 1")
        self._buf = bytearray()
        self._require_mask = not client
        self._max = max_message_size
        self._max_fragments = max_fragments
        #: The fragmented message being reassembled (None: no message open). One growing buffer, never a list.
        self._message: bytearray | None = None
        self._message_text = False
        self._fragments = 0  # frames of the open message so far

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes held: received and not yet consumed, plus the message being reassembled."""
        return len(self._buf) + (0 if self._message is None else len(self._message))

    def next_event(self) -> Event | None:
        """The next complete event, or None when more bytes are needed. Raises :class:`ProtocolViolation`."""
        while True:
            frame = self._next_frame()
            if frame is None:
                return None
            opcode, fin, payload = frame
            if opcode in (OP_TEXT, OP_BINARY):  # fragmentation was checked from the header
                if fin:
                    return _message(opcode == OP_TEXT, payload)
                self._message = bytearray(payload)
                self._message_text = opcode == OP_TEXT
                self._fragments = 1
                continue
            if opcode == OP_CONTINUATION:
                message = self._message
                assert message is not None  # checked from the header
                message += payload
                self._fragments += 1
                if not fin:
                    continue
                self._message = None
                self._fragments = 0
                return _message(self._message_text, message)
            if opcode == OP_PING:
                return Ping(payload)
            if opcode == OP_PONG:
                return Pong(payload)
            return parse_close(payload)

    def _next_frame(self) -> tuple[int, bool, bytes] | None:
        buf = self._buf
        size = len(buf)
        if size < 2:
            return None
        first, second = buf[0], buf[1]
        if first & 0x70:
            raise ProtocolViolation(PROTOCOL_ERROR, "Reserved bits set without a negotiated extension")
        opcode = first & 0x0F
        fin = bool(first & 0x80)
        if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES:
            raise ProtocolViolation(PROTOCOL_ERROR, f"Reserved opcode {opcode}")
        masked = bool(second & 0x80)
        if masked != self._require_mask:
            which = "Client frames must be masked" if self._require_mask else "Server frames must not be masked"
            raise ProtocolViolation(PROTOCOL_ERROR, which)
        length = second & 0x7F
        pos = 2
        if opcode in _CONTROL_OPCODES:
            if not fin:
                raise ProtocolViolation(PROTOCOL_ERROR, "Fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise ProtocolViolation(PROTOCOL_ERROR, "Control frame payload over 125 bytes")
        elif length == 126:
            if size < 4:
                return None
            length = (buf[2] << 8) | buf[3]
            pos = 4
        elif length == 127:
            if size < 10:
                return None
            length = int.from_bytes(buf[2:10], "big")
            if length >> 63:
                raise ProtocolViolation(PROTOCOL_ERROR, "Payload length with the most significant bit set")
            pos = 10
        if opcode in _DATA_OPCODES:
            # Refuse from the header, before buffering: bad fragmentation, and the limits, which hold for the whole
            # message whatever its fragmentation.
            message = self._message
            if opcode == OP_CONTINUATION:
                if message is None:
                    raise ProtocolViolation(PROTOCOL_ERROR, "Continuation frame without a message to continue")
                total = length + len(message)
            elif message is not None:
                raise ProtocolViolation(PROTOCOL_ERROR, "New data frame before the previous message ended")
            else:
                total = length
            if total > self._max:
                raise ProtocolViolation(MESSAGE_TOO_BIG, "Message over the size limit")
            if opcode == OP_CONTINUATION and self._fragments >= self._max_fragments:
                raise ProtocolViolation(POLICY_VIOLATION, "Too many fragments in one message")
        end = pos + (4 if masked else 0) + length
        if size < end:
            return None  # the header is parsed again when more bytes arrive: nothing above may change state
        if masked:
            key = bytes(buf[pos : pos + 4])
            payload = unmask(buf, key, pos + 4, length)
        else:
            payload = bytes(buf[pos:end])
        del buf[:end]
        return opcode, fin, payload


def _message(text: bool, payload: bytes | bytearray) -> str | bytes:
    if not text:
        return bytes(payload)
    try:
        return payload.decode()
    except UnicodeDecodeError:
        raise ProtocolViolation(INVALID_DATA, "Text message is not valid UTF-8") from None
