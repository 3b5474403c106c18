"""An independent RFC 6455 frame codec for the tests, written from the RFC, sharing no code with proxy.ws.frames.

It is the oracle the decoder tests build wire bytes with, and the raw peer's view of what ``proxy.ws`` writes.
Masking is one big-integer XOR (no numpy), so it cannot share a bug with the implementation under test.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import trio

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA


def xor_mask(payload: bytes, key: bytes) -> bytes:
    """RFC 6455 §5.3: octet i of the payload XOR octet i mod 4 of the key."""
    if not payload:
        return b""
    stream = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(payload), "big")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    key: bytes | None = None,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One frame as RFC 6455 §5.2 lays it out. ``key``: masked with it. ``length``: announce this payload length
    instead of the real one (to build a header whose payload is never sent)."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if key is not None else 0
    if n <= 125:
        head = bytes((first, mask_bit | n))
    elif n <= 0xFFFF:
        head = bytes((first, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, mask_bit | 127)) + n.to_bytes(8, "big")
    if key is None:
        return head + payload
    return head + key + xor_mask(payload, key)


def close_payload(code: int | None, reason: str = "") -> bytes:
    return b"" if code is None else code.to_bytes(2, "big") + reason.encode()


@dataclass(frozen=True)
class WireFrame:
    fin: bool
    rsv: int
    opcode: int
    key: bytes | None
    payload: bytes  # unmasked

    @property
    def close(self) -> tuple[int | None, str]:
        """A close frame's (code, reason); code None when it carried no status."""
        assert self.opcode == CLOSE
        if not self.payload:
            return None, ""
        return int.from_bytes(self.payload[:2], "big"), self.payload[2:].decode()


def parse_frame(data: bytes | bytearray) -> tuple[WireFrame, int] | None:
    """The first frame in ``data`` and how many bytes it took, or None when ``data`` holds no whole frame."""
    if len(data) < 2:
        return None
    first, second = data[0], data[1]
    n = second & 0x7F
    pos = 2
    if n == 126:
        if len(data) < 4:
            return None
        n, pos = int.from_bytes(data[2:4], "big"), 4
    elif n == 127:
        if len(data) < 10:
            return None
        n, pos = int.from_bytes(data[2:10], "big"), 10
    key = None
    if second & 0x80:
        if len(data) < pos + 4:
            return None
        key = bytes(data[pos : pos + 4])
        pos += 4
    if len(data) < pos + n:
        return None
    payload = bytes(data[pos : pos + n])
    if key is not None:
        payload = xor_mask(payload, key)
    return WireFrame(bool(first & 0x80), (first >> 4) & 0x7, first & 0x0F, key, payload), pos + n


def parse_frames(data: bytes | bytearray) -> tuple[list[WireFrame], bytes]:
    """Every whole frame in ``data``, and the bytes left over."""
    result = []
    rest = bytes(data)
    while (parsed := parse_frame(rest)) is not None:
        found, used = parsed
        result.append(found)
        rest = rest[used:]
    return result, rest


_keys = itertools.count(0x01020304)


class RawPeer:
    """The far end of a ``proxy.ws`` connection, speaking raw bytes: it can send what no well-behaved peer would.

    ``mask``: it plays the client, so its frames are masked (each with a new key).
    """

    def __init__(self, stream: trio.abc.Stream, *, mask: bool) -> None:
        self.stream = stream
        self.mask = mask
        self._buf = bytearray()

    def key(self) -> bytes | None:
        return (next(_keys) & 0xFFFFFFFF).to_bytes(4, "big") if self.mask else None

    def frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
        return frame(opcode, payload, fin=fin, key=self.key(), rsv=rsv)

    async def send(self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> None:
        await self.stream.send_all(self.frame(opcode, payload, fin=fin, rsv=rsv))

    async def send_close(self, code: int | None, reason: str = "") -> None:
        await self.send(CLOSE, close_payload(code, reason))

    async def receive_frame(self) -> WireFrame | None:
        """The next whole frame, or None at EOF (a partial frame before EOF fails the test)."""
        while (parsed := parse_frame(self._buf)) is None:
            data = await self.stream.receive_some(65_536)
            if not data:
                assert not self._buf, f"EOF inside a frame: {bytes(self._buf)!r}"
                return None
            self._buf += data
        found, used = parsed
        del self._buf[:used]
        return found

    async def receive_until_eof(self) -> bytes:
        """Every byte still to come, up to EOF (nothing is parsed)."""
        data = bytes(self._buf)
        self._buf.clear()
        while chunk := await self.stream.receive_some(65_536):
            data += chunk
        return data
