"""Blame: a close code never tells the innocent peer that it broke the protocol.

proxy/ws answers the peer at fault with its own 1002/1007/1009; across the proxy an upstream fault reaches the
client as an ``Error`` (where its protocol has one) and 1011, and a client fault reaches the upstream as 1011. The
policy is ``relay_close`` / ``upstream_fault`` / ``client_fault`` in proxy/core.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection

from proxy.config import Limits
from proxy.core import Close, FailureKind, SessionCore, client_fault, relay_close, upstream_fault
from proxy.deepgram.passthrough import Passthrough
from proxy.deepgram.policy import Service
from proxy.openai.translator import Translator
from proxy.session import Session, UpstreamTarget
from proxy.ws import WebSocket, connect
from proxy.ws.handshake import Accepted, ClientHandshake
from tests.ws.wire import BINARY, CLOSE, TEXT, RawPeer
from tests.wsmem import FakeUpstream, accept_proxy_side, answer_upgrade, running_session

LIMITS = Limits(ping_interval_s=0, client_max_message_bytes=1000, upstream_max_message_bytes=1000)

# -- the policy table -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1002, 1007, 1009, 1010])
def test_leg_only_codes_sent_by_a_peer_never_cross_the_proxy(code: int) -> None:
    assert relay_close(code, "you broke it") == Close(1011, "")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (1000, Close(1000, "r")),
        (1001, Close(1001, "r")),
        (1003, Close(1003, "r")),
        (1008, Close(1008, "r")),
        (1011, Close(1011, "r")),
        (1012, Close(1012, "r")),
        (1013, Close(1013, "r")),
        (1014, Close(1014, "r")),
        (4000, Close(4000, "r")),
        (1005, Close(1000, "r")),
        (1006, Close(1011, "")),
        (1015, Close(1011, "")),
        (None, Close(1011, "")),
    ],
)
def test_other_codes_are_relayed_or_mapped_to_sendable_ones(code: int | None, expected: Close) -> None:
    assert relay_close(code, "r") == expected


@pytest.mark.parametrize("code", [1002, 1007, 1009, 1010])
def test_our_own_close_of_a_faulty_upstream_is_an_upstream_protocol_failure(code: int) -> None:
    failure = upstream_fault(code, by_peer=False)
    assert failure is not None
    assert failure.kind is FailureKind.PROTOCOL
    assert failure.error()[0] == "upstream_protocol_error"
    assert failure.close() == Close(1011, "Upstream protocol error")
    assert upstream_fault(code, by_peer=True) is None  # the upstream said it: relayed as 1011 by relay_close
    assert client_fault(code, by_peer=False)
    assert not client_fault(code, by_peer=True)


@pytest.mark.parametrize("code", [1000, 1001, 1006, 1011, None])
def test_other_closes_are_no_fault(code: int | None) -> None:
    assert upstream_fault(code, by_peer=False) is None
    assert not client_fault(code, by_peer=False)


# -- sessions ---------------------------------------------------------------------------------------------------

CORES: dict[str, Callable[[], SessionCore]] = {
    "openai": lambda: Translator(),
    "agent": lambda: Passthrough(Service.AGENT, max_pending_frames=8, max_pending_bytes=1 << 16),
    "listen": lambda: Passthrough(Service.TRANSCRIPTION, max_pending_frames=8, max_pending_bytes=1 << 16),
}


class RawUpstream:
    """A connector whose upstream speaks raw bytes, so it can break the protocol."""

    def __init__(self) -> None:
        self.peers: list[RawPeer] = []
        self.opened = trio.Event()

    async def connector(self, target: UpstreamTarget, limits: Limits) -> WebSocket:
        ours, theirs = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_upgrade, theirs)
            ws = await connect(ours, "upstream.test", target.url, max_message_size=limits.upstream_max_message_bytes)
        self.peers.append(RawPeer(theirs, mask=False))
        self.opened.set()
        return ws


async def closed_with(ws: WebSocketConnection) -> tuple[list[str | bytes], int, str | None]:
    frames: list[str | bytes] = []
    with pytest.raises(ConnectionClosed) as info:
        while True:
            frames.append(await ws.get_message())
    reason = info.value.reason
    assert reason is not None
    return frames, reason.code, reason.reason


UPSTREAM_FAULTS = {
    "invalid-utf8": (TEXT, b'{"type":"x\xff"}', 0),
    "reserved-bits": (TEXT, b"{}", 0x4),
    "too-big": (BINARY, bytes(1001), 0),
}


@pytest.mark.parametrize("route", CORES)
@pytest.mark.parametrize("fault", UPSTREAM_FAULTS)
async def test_an_upstream_protocol_fault_is_an_error_and_1011_for_the_client_never_1002_or_1007(
    route: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    opcode, payload, rsv = UPSTREAM_FAULTS[fault]
    raw = RawUpstream()
    async with running_session(CORES[route](), limits=LIMITS, connector=raw.connector) as (browser, _, session, _d):
        await raw.opened.wait()
        await raw.peers[0].send(opcode, payload, rsv=rsv)
        frames, code, reason = await closed_with(browser)
    assert (code, reason) == (1011, "Upstream protocol error")
    errors = [json.loads(f)["code"] for f in frames if isinstance(f, str) and '"Error"' in f]
    assert errors == ([] if route == "listen" else ["upstream_protocol_error"])
    assert session.stats.upstream_failures == {"upstream_protocol_error": 1}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert not warnings[0].exc_info
    assert "upstream broke the WebSocket protocol" in warnings[0].getMessage()


CLIENT_FAULTS = {
    "invalid-utf8": (TEXT, b'{"type":"x\xff"}', 0, 1007),
    "reserved-bits": (TEXT, b"{}", 0x4, 1002),
    "too-big": (BINARY, bytes(1001), 0, 1009),
}


@pytest.mark.parametrize("route", CORES)
@pytest.mark.parametrize("fault", CLIENT_FAULTS)
async def test_a_client_protocol_fault_gets_its_own_code_and_the_upstream_gets_1011(
    route: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    opcode, payload, rsv, client_code = CLIENT_FAULTS[fault]
    browser_stream, proxy_stream = trio.testing.memory_stream_pair()
    fake = FakeUpstream()
    async with trio.open_nursery() as nursery:
        fake.nursery = nursery
        handshake = ClientHandshake()
        await browser_stream.send_all(handshake.request("proxy.test", "/"))
        client_leg = await accept_proxy_side(proxy_stream, max_message_size=LIMITS.client_max_message_bytes)
        assert isinstance(handshake.receive_data(await browser_stream.receive_some()), Accepted)
        session = Session(client_leg, CORES[route](), UpstreamTarget("/up"), LIMITS, connector=fake.connector)
        nursery.start_soon(session.run)
        up = await fake.next()
        browser = RawPeer(browser_stream, mask=True)
        await browser.send(opcode, payload, rsv=rsv)
        while (frame := await browser.receive_frame()) is not None and frame.opcode != CLOSE:
            pass
        assert frame is not None
        assert frame.close is not None
        assert frame.close[0] == client_code  # the peer at fault hears about it from proxy/ws
        _, upstream_code, _ = await closed_with(up)
        assert upstream_code == 1011
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert not warnings[0].exc_info
    assert "client broke the WebSocket protocol" in warnings[0].getMessage()


@pytest.mark.parametrize("route", CORES)
@pytest.mark.parametrize("code", [1002, 1007, 1009])
async def test_a_leg_only_code_the_upstream_sends_reaches_the_client_as_1011(route: str, code: int) -> None:
    async with running_session(CORES[route](), limits=LIMITS) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await up.aclose(code, "you broke it")
        _, client_code, _ = await closed_with(browser)
    assert client_code == 1011


@pytest.mark.parametrize("route", CORES)
@pytest.mark.parametrize("code", [1002, 1007, 1009])
async def test_a_leg_only_code_the_client_sends_reaches_the_upstream_as_1011(route: str, code: int) -> None:
    async with running_session(CORES[route](), limits=LIMITS) as (browser, upstream, _session, _done):
        up = await upstream.next()
        await browser.aclose(code, "you broke it")
        _, upstream_code, _ = await closed_with(up)
    assert upstream_code == 1011
