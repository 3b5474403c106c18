"""proxy.ws.handshake against RFC 6455 §4: the server's check of an upgrade request and its 101 answer, and the
client's request and its reading of the server's answer (accepted, rejected, or broken)."""

from __future__ import annotations

import base64
import hashlib

import h11
import pytest

from proxy.ws.handshake import (
    MAX_REJECTION_BODY,
    Accepted,
    ClientHandshake,
    HandshakeFailed,
    Refusal,
    Rejected,
    Upgrade,
    accept_response,
    parse_upgrade,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
SECRET = b"Bearer sk-test-5ecret-value"


def rfc_accept(key: bytes) -> bytes:
    """Sec-WebSocket-Accept computed here, independently of the code under test (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())


def request(
    *extra: tuple[str, str | bytes],
    method: str = "GET",
    http_version: str = "1.1",
    connection: str | None = "Upgrade",
    version: str | None = "13",
    key: bytes | None = KEY,
) -> h11.Request:
    headers: list[tuple[str, str | bytes]] = [("Host", "proxy.test"), ("Upgrade", "websocket")]
    if connection is not None:
        headers.append(("Connection", connection))
    if version is not None:
        headers.append(("Sec-WebSocket-Version", version))
    if key is not None:
        headers.append(("Sec-WebSocket-Key", key))
    headers.extend(extra)
    return h11.Request(method=method, target="/agent", headers=headers, http_version=http_version)


# -- server side: parse_upgrade ----------------------------------------------------------------------------------


def test_a_valid_upgrade_request() -> None:
    upgrade = parse_upgrade(request(("X-Custom-Header", "Mixed Case Value")))
    assert isinstance(upgrade, Upgrade)
    assert upgrade.key == KEY
    assert upgrade.subprotocols == ()
    assert (b"x-custom-header", b"Mixed Case Value") in upgrade.headers
    assert all(name == name.lower() for name, _ in upgrade.headers)
    assert (b"sec-websocket-key", KEY) in upgrade.headers


def test_a_request_parsed_from_bytes() -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(
        b"GET /agent?x=1 HTTP/1.1\r\nHost: proxy.test\r\nUPGRADE: WebSocket\r\nCONNECTION: keep-alive, upgrade\r\n"
        b"SEC-WEBSOCKET-KEY: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
    )
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    upgrade = parse_upgrade(event)
    assert upgrade == Upgrade(KEY, ("chat",), tuple(event.headers))
    assert (b"upgrade", b"WebSocket") in upgrade.headers


def test_subprotocols_in_order_across_several_headers_with_whitespace() -> None:
    upgrade = parse_upgrade(
        request(
            ("Sec-WebSocket-Protocol", "chat, superchat"),
            ("Sec-WebSocket-Protocol", "v2.agent \t,,  token.abc ,"),
            ("Sec-WebSocket-Protocol", "last"),
        )
    )
    assert isinstance(upgrade, Upgrade)
    assert upgrade.subprotocols == ("chat", "superchat", "v2.agent", "token.abc", "last")


@pytest.mark.parametrize("connection", ["Upgrade", "upgrade", "keep-alive, Upgrade", "Upgrade,keep-alive", "UPGRADE"])
def test_the_connection_upgrade_token_in_any_case_and_position(connection: str) -> None:
    assert isinstance(parse_upgrade(request(connection=connection)), Upgrade)


def test_the_connection_token_may_be_in_a_second_header() -> None:
    assert isinstance(parse_upgrade(request(("Connection", "Upgrade"), connection="keep-alive")), Upgrade)


@pytest.mark.parametrize("method", ["POST", "PUT", "HEAD", "OPTIONS", "get"])
def test_non_get_is_refused_400(method: str) -> None:
    refusal = parse_upgrade(request(method=method))
    assert isinstance(refusal, Refusal)
    assert refusal.status == 400


def test_http_1_0_is_refused_400() -> None:
    refusal = parse_upgrade(request(http_version="1.0"))
    assert isinstance(refusal, Refusal)
    assert refusal.status == 400


@pytest.mark.parametrize("connection", [None, "keep-alive", "close", "upgraded", "websocket"])
def test_missing_connection_upgrade_is_refused_400(connection: str | None) -> None:
    refusal = parse_upgrade(request(connection=connection))
    assert isinstance(refusal, Refusal)
    assert refusal.status == 400


@pytest.mark.parametrize("version", [None, "8", "12", "14", "13, 8", "thirteen"])
def test_a_version_other_than_13_is_refused_426_naming_13(version: str | None) -> None:
    refusal = parse_upgrade(request(version=version))
    assert isinstance(refusal, Refusal)
    assert refusal.status == 426
    assert refusal.headers == ((b"Sec-WebSocket-Version", b"13"),)


def test_version_13_in_a_second_header_alone_is_refused() -> None:
    refusal = parse_upgrade(request(("Sec-WebSocket-Version", "8")))
    assert isinstance(refusal, Refusal)
    assert refusal.status == 426


@pytest.mark.parametrize(
    "key",
    [
        None,
        b"",
        b"not base64!",
        base64.b64encode(b"x" * 15),
        base64.b64encode(b"x" * 17),
        base64.b64encode(b"x" * 16)[:-2],  # padding missing
        base64.urlsafe_b64encode(b"\xfb\xff" * 8),  # not the standard alphabet
    ],
)
def test_a_missing_or_invalid_key_is_refused_400(key: bytes | None) -> None:
    refusal = parse_upgrade(request(key=key))
    assert isinstance(refusal, Refusal)
    assert refusal.status == 400


def test_a_duplicate_key_is_refused_400() -> None:
    for second in (KEY, base64.b64encode(b"y" * 16)):
        refusal = parse_upgrade(request(("Sec-WebSocket-Key", second)))
        assert isinstance(refusal, Refusal)
        assert refusal.status == 400


# -- server side: accept_response --------------------------------------------------------------------------------


def parse_response(raw: bytes) -> h11.InformationalResponse:
    """Read our 101 with h11 as a client that asked for the upgrade."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x"), ("Upgrade", "websocket")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.InformationalResponse)
    assert conn.trailing_data == (b"", False)
    return event


def test_accept_response_carries_the_rfc_sample_accept_value() -> None:
    raw = accept_response(KEY)
    assert raw.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert raw.endswith(b"\r\n\r\n")
    response = parse_response(raw)
    assert response.status_code == 101
    headers = dict(response.headers)
    assert headers[b"sec-websocket-accept"] == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert headers[b"upgrade"].lower() == b"websocket"
    assert headers[b"connection"].lower() == b"upgrade"
    assert b"sec-websocket-protocol" not in headers


def test_accept_response_names_the_subprotocol_and_extra_headers() -> None:
    response = parse_response(accept_response(KEY, "v2.agent", ((b"X-Request-Id", b"abc"),)))
    headers = dict(response.headers)
    assert headers[b"sec-websocket-protocol"] == b"v2.agent"
    assert headers[b"x-request-id"] == b"abc"


@pytest.mark.parametrize("bad", ["a\r\nSet-Cookie: x=1", "a\nb", "a\rb", "a\0b"])
def test_accept_response_refuses_line_breaks_in_header_values(bad: str) -> None:
    with pytest.raises(ValueError):
        accept_response(KEY, bad)
    with pytest.raises(ValueError):
        accept_response(KEY, None, ((b"X-Extra", bad.encode()),))
    with pytest.raises(ValueError):
        accept_response(KEY, None, ((bad.encode(), b"value"),))


# -- client side: ClientHandshake --------------------------------------------------------------------------------


def client_request(
    handshake: ClientHandshake, *, subprotocols: tuple[str, ...] = (), extra: tuple[tuple[bytes, bytes], ...] = ()
) -> tuple[h11.Request, bytes]:
    """Render the client's request and read it as a server; return it with the raw bytes."""
    raw = handshake.request("upstream.test", "/v1/realtime?model=x", subprotocols=subprotocols, extra_headers=extra)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    return event, raw


def switching(key: bytes, *lines: bytes) -> bytes:
    head = [b"HTTP/1.1 101 Switching Protocols", *lines]
    if not any(line.lower().startswith(b"sec-websocket-accept") for line in lines):
        head.append(b"Sec-WebSocket-Accept: " + rfc_accept(key))
    return b"\r\n".join(head) + b"\r\n\r\n"


STANDARD = (b"Upgrade: websocket", b"Connection: Upgrade")


def test_the_client_request_is_a_valid_upgrade() -> None:
    handshake = ClientHandshake()
    req, _ = client_request(handshake, subprotocols=("a", "b"))
    assert req.method == b"GET"
    assert req.target == b"/v1/realtime?model=x"
    upgrade = parse_upgrade(req)
    assert isinstance(upgrade, Upgrade)
    assert upgrade.subprotocols == ("a", "b")
    assert dict(req.headers)[b"host"] == b"upstream.test"
    # a fresh random key every time
    assert upgrade.key != parse_upgrade(client_request(ClientHandshake())[0]).key  # type: ignore[union-attr]


def test_an_accepted_answer_with_frames_in_the_same_chunk() -> None:
    handshake = ClientHandshake()
    req, _ = client_request(handshake, subprotocols=("a", "b"))
    upgrade = parse_upgrade(req)
    assert isinstance(upgrade, Upgrade)
    frames = b"\x81\x05hello\x89\x00"
    outcome = handshake.receive_data(switching(upgrade.key, *STANDARD, b"Sec-WebSocket-Protocol: b") + frames)
    assert isinstance(outcome, Accepted)
    assert outcome.subprotocol == "b"
    assert outcome.extra == frames
    assert (b"sec-websocket-protocol", b"b") in outcome.headers
    assert all(name == name.lower() for name, _ in outcome.headers)


def test_our_own_accept_response_is_accepted() -> None:
    handshake = ClientHandshake()
    upgrade = parse_upgrade(client_request(handshake, subprotocols=("x",))[0])
    assert isinstance(upgrade, Upgrade)
    outcome = handshake.receive_data(accept_response(upgrade.key, "x"))
    assert outcome == Accepted("x", outcome.headers, b"")  # type: ignore[union-attr]


def test_an_answer_split_byte_by_byte() -> None:
    handshake = ClientHandshake()
    upgrade = parse_upgrade(client_request(handshake)[0])
    assert isinstance(upgrade, Upgrade)
    raw = switching(upgrade.key, b"upgrade: WebSocket", b"connection: keep-alive, upgrade")
    for i in range(len(raw) - 1):
        assert handshake.receive_data(raw[i : i + 1]) is None
    outcome = handshake.receive_data(raw[-1:])
    assert isinstance(outcome, Accepted)
    assert outcome.subprotocol is None
    assert outcome.extra == b""


def test_a_100_continue_before_the_101_is_skipped() -> None:
    handshake = ClientHandshake()
    upgrade = parse_upgrade(client_request(handshake)[0])
    assert isinstance(upgrade, Upgrade)
    outcome = handshake.receive_data(b"HTTP/1.1 100 Continue\r\n\r\n" + switching(upgrade.key, *STANDARD) + b"\x82\x00")
    assert isinstance(outcome, Accepted)
    assert outcome.extra == b"\x82\x00"


@pytest.mark.parametrize(
    "accept",
    [
        rfc_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),  # right for another key
        b"",
        b"garbage",
    ],
)
def test_a_wrong_accept_fails(accept: bytes) -> None:
    handshake = ClientHandshake()
    client_request(handshake)
    with pytest.raises(HandshakeFailed):
        handshake.receive_data(switching(b"", *STANDARD, b"Sec-WebSocket-Accept: " + accept))


def test_a_missing_or_duplicated_accept_fails() -> None:
    handshake = ClientHandshake()
    client_request(handshake)
    with pytest.raises(HandshakeFailed):
        handshake.receive_data(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    handshake = ClientHandshake()
    upgrade = parse_upgrade(client_request(handshake)[0])
    assert isinstance(upgrade, Upgrade)
    good = b"Sec-WebSocket-Accept: " + rfc_accept(upgrade.key)
    with pytest.raises(HandshakeFailed):
        handshake.receive_data(switching(upgrade.key, *STANDARD, good, good))


@pytest.mark.parametrize(
    "lines",
    [
        (b"Connection: Upgrade",),
        (b"Upgrade: h2c", b"Connection: Upgrade"),
        (b"Upgrade: websocket",),
        (b"Upgrade: websocket", b"Connection: keep-alive"),
    ],
)
def test_missing_upgrade_or_connection_fails(lines: tuple[bytes, ...]) -> None:
    handshake = ClientHandshake()
    upgrade = parse_upgrade(client_request(handshake)[0])
    assert isinstance(upgrade, Upgrade)
    with pytest.raises(HandshakeFailed):
        handshake.receive_data(switching(upgrade.key, *lines))


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [((), b"chat"), (("a", "b"), b"c"), (("a", "b"), b"a, b"), (("a",), b"A")],
)
def test_a_subprotocol_that_was_not_offered_fails(offered: tuple[str, ...], chosen: bytes) -> None:
    handshake = ClientHandshake()
    upgrade = parse_upgrade(client_request(handshake, subprotocols=offered)[0])
    assert isinstance(upgrade, Upgrade)
    with pytest.raises(HandshakeFailed):
        handshake.receive_data(switching(upgrade.key, *STANDARD, b"Sec-WebSocket-Protocol: " + chosen))


def test_an_extension_chosen_by_the_server_fails() -> None:
    handshake = ClientHandshake()
    upgrade = parse_upgrade(client_request(handshake)[0])
    assert isinstance(upgrade, Upgrade)
    with pytest.raises(HandshakeFailed):
        handshake.receive_data(switching(upgrade.key, *STANDARD, b"Sec-WebSocket-Extensions: permessage-deflate"))


def test_a_refusal_is_rejected_with_status_headers_and_body() -> None:
    handshake = ClientHandshake()
    client_request(handshake)
    outcome = handshake.receive_data(
        b'HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{"error":"nokey"}'
    )
    assert outcome == Rejected(
        401, ((b"content-type", b"application/json"), (b"content-length", b"17")), b'{"error":"nokey"}'
    )


def test_a_refusal_read_in_pieces_and_without_a_body() -> None:
    handshake = ClientHandshake()
    client_request(handshake)
    raw = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    for i in range(len(raw) - 1):
        assert handshake.receive_data(raw[i : i + 1]) is None
    outcome = handshake.receive_data(raw[-1:])
    assert isinstance(outcome, Rejected)
    assert (outcome.status, outcome.body) == (503, b"")


def test_a_refusal_whose_body_ends_with_the_connection() -> None:
    handshake = ClientHandshake()
    client_request(handshake)
    assert handshake.receive_data(b"HTTP/1.1 403 Forbidden\r\n\r\nnot ") is None
    assert handshake.receive_data(b"allowed") is None
    outcome = handshake.receive_data(b"")
    assert isinstance(outcome, Rejected)
    assert (outcome.status, outcome.body) == (403, b"not allowed")


def test_a_refusal_cut_short_still_reports_its_status() -> None:
    handshake = ClientHandshake()
    client_request(handshake)
    assert handshake.receive_data(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 100\r\n\r\npartial") is None
    outcome = handshake.receive_data(b"")
    assert isinstance(outcome, Rejected)
    assert (outcome.status, outcome.body) == (429, b"partial")


def test_a_refusal_body_is_capped() -> None:
    handshake = ClientHandshake()
    client_request(handshake)
    body = bytes(range(256)) * 400  # 102400 bytes
    head = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(body)
    # the outcome is known as soon as the cap is reached: the rest of the body is never waited for
    outcome = handshake.receive_data(head + body[:MAX_REJECTION_BODY])
    assert isinstance(outcome, Rejected)
    assert outcome.body == body[:MAX_REJECTION_BODY]
    handshake = ClientHandshake()
    client_request(handshake)
    outcome = handshake.receive_data(head + body)
    assert isinstance(outcome, Rejected)
    assert outcome.body == body[:MAX_REJECTION_BODY]


@pytest.mark.parametrize(
    "sent",
    [b"", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n", b"HTTP/1.1 2", b"HTTP/1.1 200 OK\r\n"],
)
def test_the_server_closing_mid_head_fails(sent: bytes) -> None:
    handshake = ClientHandshake()
    client_request(handshake)
    if sent:
        assert handshake.receive_data(sent) is None
    with pytest.raises(HandshakeFailed):
        handshake.receive_data(b"")


@pytest.mark.parametrize(
    "raw", [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 abc Nope\r\n\r\n", b"HTTP/1.1 101 OK\r\nbad\r\n\r\n"]
)
def test_a_malformed_answer_fails(raw: bytes) -> None:
    handshake = ClientHandshake()
    client_request(handshake)
    with pytest.raises(HandshakeFailed):
        handshake.receive_data(raw)


def test_an_endless_head_fails() -> None:
    handshake = ClientHandshake()
    client_request(handshake)
    head = b"HTTP/1.1 101 Switching Protocols\r\n"
    assert handshake.receive_data(head) is None
    with pytest.raises(HandshakeFailed):
        for _ in range(100):
            assert handshake.receive_data(b"X-Padding: " + b"p" * 1000 + b"\r\n") is None


def test_credentials_in_extra_headers_appear_only_in_the_request_bytes() -> None:
    handshake = ClientHandshake()
    req, raw = client_request(handshake, extra=((b"Authorization", SECRET), (b"OpenAI-Beta", b"realtime=v1")))
    assert raw.count(SECRET) == 1
    assert (b"authorization", SECRET) in req.headers
    upgrade = parse_upgrade(req)
    assert isinstance(upgrade, Upgrade)
    outcome = handshake.receive_data(switching(upgrade.key, *STANDARD))
    assert isinstance(outcome, Accepted)
    assert SECRET not in repr(outcome).encode()

    rejected = ClientHandshake()
    client_request(rejected, extra=((b"Authorization", SECRET),))
    refusal = rejected.receive_data(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 3\r\n\r\nno!")
    assert isinstance(refusal, Rejected)
    assert SECRET not in repr(refusal).encode()

    failed = ClientHandshake()
    client_request(failed, extra=((b"Authorization", SECRET),))
    with pytest.raises(HandshakeFailed) as info:
        failed.receive_data(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    assert SECRET not in str(info.value).encode()
    assert SECRET not in repr(info.value).encode()


@pytest.mark.parametrize("value", [b"x\r\nX-Injected: 1", b"x\nX-Injected: 1", b"x\rX-Injected: 1", b"x\0y"])
def test_extra_headers_cannot_smuggle_another_header(value: bytes) -> None:
    with pytest.raises(h11.LocalProtocolError):
        ClientHandshake().request("upstream.test", "/", extra_headers=((b"Authorization", value),))
