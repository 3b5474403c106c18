"""proxy.ws.frames against RFC 6455 §5 and §7.4: the decoder (property-tested against an independent encoder and
against wsproto), every violation with its close code, the size limit, and the encoder."""

from __future__ import annotations

import itertools
import os
import struct
from dataclasses import dataclass, field

import pytest
import wsproto.events as wse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType

from proxy.ws import frames
from proxy.ws.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Event,
    FrameDecoder,
    PeerClose,
    Ping,
    Pong,
    ProtocolViolation,
    encode_close,
    encode_frame,
    parse_close,
    valid_close_code,
)
from tests.ws import wire
from tests.ws.wire import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, frame, parse_frame, xor_mask

BIG = 1 << 30  # a limit no generated message reaches (tests about other rules)
KEY = b"\x37\xfa\x21\x3d"
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode(chunks: list[bytes], *, client: bool, max_message_size: int = BIG) -> tuple[list[Event], FrameDecoder]:
    decoder = FrameDecoder(client=client, max_message_size=max_message_size)
    events: list[Event] = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (event := decoder.next_event()) is not None:
            events.append(event)
    return events, decoder


def violation(data: bytes, *, client: bool, max_message_size: int = BIG) -> ProtocolViolation:
    """Feed ``data`` in one piece; the decoder must refuse it (not merely wait for more bytes)."""
    decoder = FrameDecoder(client=client, max_message_size=max_message_size)
    decoder.feed(data)
    with pytest.raises(ProtocolViolation) as info:
        while decoder.next_event() is not None:
            pass
    return info.value


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(min(cut, len(data)) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)] or [b""]


# -- the property: any well-formed stream decodes to exactly what was sent ---------------------------------------

#: Text with arbitrary code points, astral ones made frequent (UTF-8 splits across fragments get exercised).
texts = st.text(
    st.one_of(st.characters(codec="utf-8"), st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF)),
    max_size=60,
)


def _pattern(size_and_seed: tuple[int, int]) -> bytes:
    size, seed = size_and_seed
    return bytes((seed + i * 7) & 0xFF for i in range(256)) * (size // 256 + 1)


binaries = st.one_of(
    st.binary(max_size=200),
    # the 16-bit and 64-bit length forms, around their boundaries
    st.tuples(st.sampled_from([125, 126, 127, 65_535, 65_536, 65_537, 70_000]), st.integers(0, 255)).map(
        lambda t: _pattern(t)[: t[0]]
    ),
)


@dataclass
class Stream:
    wire: list[bytes] = field(default_factory=list)
    expected: list[Event] = field(default_factory=list)


@st.composite
def streams(draw: st.DrawFn, masked: bool) -> Stream:
    stream = Stream()

    def key() -> bytes | None:
        return draw(st.binary(min_size=4, max_size=4)) if masked else None

    def controls() -> None:
        for _ in range(draw(st.integers(0, 2))):
            opcode = draw(st.sampled_from([PING, PONG]))
            payload = draw(st.binary(max_size=125))
            stream.wire.append(frame(opcode, payload, key=key()))
            stream.expected.append(Ping(payload) if opcode == PING else Pong(payload))

    for message in draw(st.lists(st.one_of(texts, binaries), max_size=5)):
        controls()
        data = message.encode() if isinstance(message, str) else message
        pieces = split(data, draw(st.lists(st.integers(0, len(data)), max_size=4)))
        for i, piece in enumerate(pieces):
            if i:
                controls()
            opcode = CONTINUATION if i else TEXT if isinstance(message, str) else BINARY
            stream.wire.append(frame(opcode, piece, fin=i == len(pieces) - 1, key=key()))
        stream.expected.append(message)
    controls()
    if draw(st.booleans()):
        code = draw(st.sampled_from([None, 1000, 1001, 1003, 1007, 1011, 1014, 3000, 4000, 4999]))
        reason = "" if code is None else draw(st.text(max_size=20))
        stream.wire.append(frame(CLOSE, wire.close_payload(code, reason), key=key()))
        stream.expected.append(PeerClose(1005 if code is None else code, reason))
    return stream


@PROPERTY
@given(data=st.data(), client=st.booleans())
def test_any_stream_decodes_to_exactly_the_messages_and_control_frames_sent(data: st.DataObject, client: bool) -> None:
    # client role: the server's frames are unmasked; server role: every frame is masked with its own key
    stream = data.draw(streams(masked=not client))
    raw = b"".join(stream.wire)
    chunks = split(raw, data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    # The tightest limit that admits every message: fragments split across reads must count once each.
    sizes = [len(m.encode()) if isinstance(m, str) else len(m) for m in stream.expected if isinstance(m, str | bytes)]
    events, decoder = decode(chunks, client=client, max_message_size=max(sizes, default=0))
    assert events == stream.expected
    assert decoder.buffered == 0


def test_byte_at_a_time_across_every_length_form() -> None:
    messages: list[str | bytes] = ["", "a😀b", b"", b"x" * 125, b"y" * 126, b"z" * 65_535, b"w" * 65_536]
    raw = b"".join(
        frame(TEXT, m.encode(), key=KEY) if isinstance(m, str) else frame(BINARY, m, key=KEY) for m in messages
    )
    events, decoder = decode([raw[i : i + 1] for i in range(len(raw))], client=False)
    assert events == messages
    assert decoder.buffered == 0


@PROPERTY
@given(
    opcode=st.sampled_from([OP_TEXT, OP_BINARY, OP_PING, OP_PONG]),
    payload=st.binary(max_size=300),
    mask=st.booleans(),
    cuts=st.lists(st.integers(0, 320), max_size=5),
)
def test_encode_frame_round_trips_through_the_decoder(opcode: int, payload: bytes, mask: bool, cuts: list[int]) -> None:
    if opcode in (OP_PING, OP_PONG):
        payload = payload[:125]
    if opcode == OP_TEXT:
        payload = payload.decode("latin-1").encode()
    raw = encode_frame(opcode, payload, mask=mask)
    events, decoder = decode(split(raw, cuts), client=not mask)
    expected: Event = {OP_BINARY: payload, OP_PING: Ping(payload), OP_PONG: Pong(payload)}.get(opcode, "")
    if opcode == OP_TEXT:
        expected = payload.decode()
    assert events == [expected]
    assert decoder.buffered == 0


def test_encode_frame_round_trips_at_the_64_bit_length_form() -> None:
    payload = os.urandom(70_000)
    for mask in (True, False):
        events, _ = decode([encode_frame(OP_BINARY, payload, mask=mask)], client=not mask)
        assert events == [payload]


# -- cross-checks against wsproto, an independent implementation -------------------------------------------------

wsproto_messages = st.lists(
    st.tuples(st.one_of(texts, st.binary(max_size=300)), st.lists(st.integers(0, 300), max_size=3), st.booleans()),
    max_size=5,
)


@PROPERTY
@given(messages=wsproto_messages, cuts=st.lists(st.integers(0, 4000), max_size=10))
def test_wsproto_client_frames_decode_in_our_server_role(
    messages: list[tuple[str | bytes, list[int], bool]], cuts: list[int]
) -> None:
    client = Connection(ConnectionType.CLIENT)
    raw = b""
    expected: list[Event] = []
    for message, message_cuts, ping_between in messages:
        bounds = sorted({0, len(message), *(min(c, len(message)) for c in message_cuts)})
        pieces = [message[a:b] for a, b in itertools.pairwise(bounds)] or [message]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            if isinstance(piece, str):
                raw += client.send(wse.TextMessage(data=piece, message_finished=last))
            else:
                raw += client.send(wse.BytesMessage(data=piece, message_finished=last))
            if ping_between and not last:
                raw += client.send(wse.Ping(payload=b"between"))
                expected.append(Ping(b"between"))
        expected.append(message)
    raw += client.send(wse.Pong(payload=b"beat"))
    expected.append(Pong(b"beat"))
    raw += client.send(wse.CloseConnection(code=4321, reason="fin 😀"))
    expected.append(PeerClose(4321, "fin 😀"))
    events, decoder = decode(split(raw, cuts), client=False)
    assert events == expected
    assert decoder.buffered == 0


@PROPERTY
@given(messages=st.lists(st.one_of(texts, st.binary(max_size=70_000)), max_size=5))
def test_wsproto_server_frames_decode_in_our_client_role(messages: list[str | bytes]) -> None:
    server = Connection(ConnectionType.SERVER)
    raw = b""
    for message in messages:
        event = wse.TextMessage(data=message) if isinstance(message, str) else wse.BytesMessage(data=message)
        raw += server.send(event)
    raw += server.send(wse.CloseConnection(code=1000))
    events, _ = decode([raw], client=True)
    assert events == [*messages, PeerClose(1000, "")]


def wsproto_server_events(raw: bytes) -> list[object]:
    """What wsproto's server makes of ``raw``, messages reassembled."""
    server = Connection(ConnectionType.SERVER)
    server.receive_data(raw)
    result: list[object] = []
    partial: list[str | bytes] = []
    for event in server.events():
        if isinstance(event, wse.Message):
            partial.append(event.data)
            if event.message_finished:
                result.append("".join(partial) if isinstance(event, wse.TextMessage) else b"".join(partial))  # type: ignore[arg-type]
                partial = []
        elif isinstance(event, wse.Ping | wse.Pong):
            result.append((type(event).__name__, event.payload))
        elif isinstance(event, wse.CloseConnection):
            result.append(("Close", event.code, event.reason))
        else:
            raise AssertionError(f"unexpected wsproto event {event!r}")
    return result


@PROPERTY
@given(messages=st.lists(st.one_of(texts, st.binary(max_size=70_000)), max_size=5), ping=st.binary(max_size=125))
def test_our_masked_frames_decode_in_wsproto_server(messages: list[str | bytes], ping: bytes) -> None:
    raw = b"".join(
        encode_frame(OP_TEXT, m.encode(), mask=True) if isinstance(m, str) else encode_frame(OP_BINARY, m, mask=True)
        for m in messages
    )
    raw += encode_frame(OP_PING, ping, mask=True) + encode_frame(OP_PONG, ping, mask=True)
    raw += encode_close(4002, "done ✓", mask=True)
    assert wsproto_server_events(raw) == [*messages, ("Ping", ping), ("Pong", ping), ("Close", 4002, "done ✓")]


# -- violations: each with the close code RFC 6455 §7.4.1 prescribes ---------------------------------------------


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, CONTINUATION])
def test_reserved_bits_are_1002(client: bool, rsv: int, opcode: int) -> None:
    raw = frame(opcode, b"x", key=None if client else KEY, rsv=rsv)
    assert violation(raw, client=client).code == 1002


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_reserved_opcodes_are_1002(client: bool, opcode: int) -> None:
    raw = frame(opcode, b"x", key=None if client else KEY)
    assert violation(raw[:2], client=client).code == 1002  # refused from the header alone
    assert violation(raw, client=client).code == 1002


@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, PONG, CLOSE])
def test_unmasked_frame_to_a_server_is_1002(opcode: int) -> None:
    assert violation(frame(opcode, b""), client=False).code == 1002


@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, PONG, CLOSE])
def test_masked_frame_to_a_client_is_1002(opcode: int) -> None:
    assert violation(frame(opcode, b"", key=KEY), client=True).code == 1002


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_fragmented_control_frame_is_1002(opcode: int) -> None:
    assert violation(frame(opcode, b"", fin=False, key=KEY), client=False).code == 1002


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_control_payload_over_125_is_1002(opcode: int) -> None:
    assert violation(frame(opcode, b"\x03\xe8" + b"r" * 124, key=KEY), client=False).code == 1002
    # 125 is fine
    payload = b"p" * 125 if opcode != CLOSE else b"\x03\xe8" + b"r" * 123
    events, _ = decode([frame(opcode, payload, key=KEY)], client=False)
    assert len(events) == 1


def test_continuation_without_a_message_is_1002() -> None:
    assert violation(frame(CONTINUATION, b"x", key=KEY), client=False).code == 1002
    assert violation(frame(CONTINUATION, b"x", fin=False, key=KEY), client=False).code == 1002
    # also right after a complete message
    assert violation(frame(TEXT, b"a", key=KEY) + frame(CONTINUATION, b"b", key=KEY), client=False).code == 1002


@pytest.mark.parametrize(("first", "second"), [(TEXT, TEXT), (TEXT, BINARY), (BINARY, TEXT), (BINARY, BINARY)])
def test_new_data_frame_inside_a_fragmented_message_is_1002(first: int, second: int) -> None:
    for fin in (True, False):
        raw = frame(first, b"a", fin=False, key=KEY) + frame(second, b"b", fin=fin, key=KEY)
        assert violation(raw, client=False).code == 1002


def test_64_bit_length_with_the_top_bit_set_is_1002() -> None:
    header = frame(BINARY, length=1 << 63)
    assert len(header) == 10
    assert violation(header, client=True).code == 1002
    assert violation(frame(BINARY, length=(1 << 64) - 1), client=True).code == 1002


def test_close_with_a_one_byte_payload_is_1002() -> None:
    assert violation(frame(CLOSE, b"\x03", key=KEY), client=False).code == 1002
    with pytest.raises(ProtocolViolation) as info:
        parse_close(b"\x03")
    assert info.value.code == 1002


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_invalid_close_codes_are_1002(code: int) -> None:
    assert not valid_close_code(code)
    assert violation(frame(CLOSE, struct.pack("!H", code), key=KEY), client=False).code == 1002
    assert violation(frame(CLOSE, struct.pack("!H", code) + b"why"), client=True).code == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999])
def test_valid_close_codes_are_accepted(code: int) -> None:
    assert valid_close_code(code)
    events, _ = decode([frame(CLOSE, struct.pack("!H", code) + "ok ✓".encode(), key=KEY)], client=False)
    assert events == [PeerClose(code, "ok ✓")]


def test_empty_close_is_1005_no_status() -> None:
    events, _ = decode([frame(CLOSE, b"", key=KEY)], client=False)
    assert events == [PeerClose(1005, "")]


INVALID_UTF8 = [b"\xff", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"ok\xe2\x82"]


@pytest.mark.parametrize("payload", INVALID_UTF8)
def test_invalid_utf8_text_is_1007(payload: bytes) -> None:
    assert violation(frame(TEXT, payload, key=KEY), client=False).code == 1007
    assert violation(frame(TEXT, payload), client=True).code == 1007
    # the same bytes spread over fragments
    raw = frame(TEXT, payload[:1], fin=False, key=KEY) + frame(CONTINUATION, payload[1:], key=KEY)
    assert violation(raw, client=False).code == 1007


def test_utf8_split_across_fragments_is_valid() -> None:
    data = "a😀é".encode()
    raw = b"".join(
        frame(TEXT if i == 0 else CONTINUATION, data[i : i + 1], fin=i == len(data) - 1, key=KEY)
        for i in range(len(data))
    )
    events, _ = decode([raw], client=False)
    assert events == ["a😀é"]


@pytest.mark.parametrize("payload", INVALID_UTF8)
def test_invalid_utf8_close_reason_is_1007(payload: bytes) -> None:
    assert violation(frame(CLOSE, b"\x03\xe8" + payload, key=KEY), client=False).code == 1007


# -- the message size limit --------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("size", [101, 126, 65_536])
def test_one_frame_over_the_limit_is_1009(client: bool, size: int) -> None:
    raw = frame(BINARY, b"x" * size, key=None if client else KEY)
    assert violation(raw, client=client, max_message_size=100).code == 1009


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize(("size", "header"), [(101, 2), (300, 4), (70_000, 10), (1 << 40, 10)])
def test_oversize_is_refused_from_the_header_before_the_payload(client: bool, size: int, header: int) -> None:
    # only the header's bytes (not even the masking key): the limit is enforced before anything is buffered
    raw = frame(TEXT, length=size, key=None if client else KEY)[:header]
    assert violation(raw, client=client, max_message_size=100).code == 1009


def test_oversize_spread_over_fragments_is_1009() -> None:
    first = frame(TEXT, b"a" * 60, fin=False, key=KEY)
    second = frame(CONTINUATION, b"b" * 30, fin=False, key=KEY)
    third = frame(CONTINUATION, b"c" * 11, key=KEY)
    assert violation(first + second + third, client=False, max_message_size=100).code == 1009
    # refused at the third frame's header, before its payload
    assert violation(first + second + third[:2], client=False, max_message_size=100).code == 1009
    # control frames in between do not count
    ping = frame(PING, b"p" * 125, key=KEY)
    assert violation(first + ping + second + ping + third[:2], client=False, max_message_size=100).code == 1009


@pytest.mark.parametrize("client", [False, True])
def test_a_message_of_exactly_the_limit_is_accepted(client: bool) -> None:
    key = None if client else KEY
    events, _ = decode([frame(BINARY, b"x" * 100, key=key)], client=client, max_message_size=100)
    assert events == [b"x" * 100]
    fragmented = frame(TEXT, b"a" * 60, fin=False, key=key) + frame(CONTINUATION, b"b" * 40, key=key)
    events, _ = decode([fragmented], client=client, max_message_size=100)
    assert events == ["a" * 60 + "b" * 40]


def test_the_limit_applies_per_message_not_per_stream() -> None:
    raw = frame(TEXT, b"a" * 60, fin=False, key=KEY) + frame(CONTINUATION, b"b" * 40, key=KEY)
    events, _ = decode([raw * 3 + frame(BINARY, b"c" * 100, key=KEY)], client=False, max_message_size=100)
    assert events == ["a" * 60 + "b" * 40] * 3 + [b"c" * 100]


@pytest.mark.parametrize("client", [False, True])
def test_a_fragmented_message_within_the_limit_is_accepted_whatever_the_chunking(client: bool) -> None:
    key = None if client else KEY
    raw = frame(BINARY, b"a" * 10, fin=False, key=key) + frame(CONTINUATION, b"b" * 40, key=key)
    # 50 bytes against a limit of 100, fed 5 bytes at a time
    events, _ = decode([raw[i : i + 5] for i in range(0, len(raw), 5)], client=client, max_message_size=100)
    assert events == [b"a" * 10 + b"b" * 40]


# -- encoding ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65_535, b"\x82\x7e\xff\xff"),
        (65_536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_encode_frame_header_at_the_length_boundaries(size: int, header: bytes) -> None:
    payload = os.urandom(size)
    assert encode_frame(OP_BINARY, payload, mask=False) == header + payload
    masked = encode_frame(OP_BINARY, payload, mask=True)
    assert masked[:1] == header[:1]
    assert masked[1] == header[1] | 0x80
    assert masked[2 : len(header)] == header[2:]
    assert len(masked) == len(header) + 4 + size
    key = masked[len(header) : len(header) + 4]
    assert xor_mask(masked[len(header) + 4 :], key) == payload
    parsed = parse_frame(masked)
    assert parsed is not None
    assert parsed[0] == wire.WireFrame(True, 0, BINARY, key, payload)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG])
def test_encode_frame_is_a_single_final_frame_without_reserved_bits(opcode: int) -> None:
    raw = encode_frame(opcode, b"\x03\xe8", mask=False)
    assert raw == bytes((0x80 | opcode, 2)) + b"\x03\xe8"


def test_masked_frames_use_a_fresh_key_each_time() -> None:
    a = encode_frame(OP_TEXT, b"same payload", mask=True)
    b = encode_frame(OP_TEXT, b"same payload", mask=True)
    assert a[2:6] != b[2:6]
    assert a[6:] != b[6:]


def test_masking_keys_come_from_the_os_csprng_in_order_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = itertools.count()

    def urandom(n: int) -> bytes:
        return b"".join(next(counter).to_bytes(4, "big") for _ in range(n // 4))

    monkeypatch.setattr(os, "urandom", urandom)
    monkeypatch.setattr(frames, "_keys", frames._KeySource())
    # a block is 4096 bytes (1024 keys): cross two refills
    keys = [encode_frame(OP_BINARY, b"\0\0\0\0", mask=True)[2:6] for _ in range(2500)]
    assert keys == [i.to_bytes(4, "big") for i in range(2500)]
    # and the payload is masked with the key carried in the frame
    assert encode_frame(OP_BINARY, b"\xff" * 4, mask=True)[2:] == (2500).to_bytes(4, "big") + xor_mask(
        b"\xff" * 4, (2500).to_bytes(4, "big")
    )


def test_encode_close_with_a_code_and_reason() -> None:
    assert encode_close(1000, mask=False) == b"\x88\x02\x03\xe8"
    assert encode_close(4001, "bye", mask=False) == b"\x88\x05\x0f\xa1bye"


def test_encode_close_none_has_an_empty_payload() -> None:
    assert encode_close(None, mask=False) == b"\x88\x00"
    assert encode_close(None, "ignored", mask=False) == b"\x88\x00"
    masked = encode_close(None, mask=True)
    assert len(masked) == 6
    assert masked[:2] == b"\x88\x80"


@pytest.mark.parametrize(
    ("reason", "kept"),
    [
        ("a" * 200, "a" * 123),
        ("a" * 123, "a" * 123),
        ("é" * 100, "é" * 61),  # 2-byte characters: 123 would split the 62nd
        ("a" + "é" * 100, "a" + "é" * 61),  # ends exactly on a boundary at 123
        ("😀" * 40, "😀" * 30),  # 4-byte characters: 120 bytes, the 31st would need 124
        ("ab" + "€" * 50, "ab" + "€" * 40),  # 3-byte characters: 2 + 120 = 122
    ],
)
def test_encode_close_truncates_the_reason_to_123_bytes_on_a_character_boundary(reason: str, kept: str) -> None:
    for mask in (False, True):
        raw = encode_close(1001, reason, mask=mask)
        parsed = parse_frame(raw)
        assert parsed is not None
        found, used = parsed
        assert used == len(raw)
        assert len(found.payload) <= 125
        assert found.close == (1001, kept)
    # and our own decoder accepts what we send
    events, _ = decode([encode_close(1001, reason, mask=True)], client=False)
    assert events == [PeerClose(1001, kept)]


def test_unmask_is_its_own_inverse_at_any_offset() -> None:
    payload = os.urandom(1000)
    masked = frames.unmask(payload, KEY)
    assert masked == xor_mask(payload, KEY)
    assert frames.unmask(masked, KEY) == payload
    assert frames.unmask(bytearray(b"xx" + masked), KEY, 2, 999) == payload[:999]
    assert frames.unmask(b"", KEY) == b""


def test_events_of_different_types_never_compare_equal() -> None:
    assert Ping(b"x") != Pong(b"x")
    assert Ping(b"x") == Ping(b"x")
    assert PeerClose(1000, "") != (1000, "")
    with pytest.raises(AttributeError):
        Ping(b"x").payload = b"y"  # type: ignore[misc]
