"""Property: whatever frames the two peers exchange, each side receives the other's frames byte for byte, with the
same opcode, in order, while both directions run at once (one proxied loopback connection per example)."""

from __future__ import annotations

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.core import Frame
from tests.deepgram.dg_helpers import UpstreamConnection, connect, proxy_config, running_proxy, scripted_upstream


def _pattern(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


frames = st.lists(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        # Past 65535 bytes the WebSocket length field changes width.
        st.integers(65_530, 70_000).map(_pattern),
    ),
    max_size=12,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(up=frames, down=frames)
async def test_frames_relay_unchanged_and_in_order_both_ways(up: list[Frame], down: list[Frame]) -> None:
    async def script(conn: UpstreamConnection) -> None:
        async def send_down() -> None:
            for frame in down:
                await conn.send(frame)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_down)
            for _ in up:
                await conn.recv()

    async with scripted_upstream(script) as upstream, running_proxy(proxy_config(upstream)) as (_, port):
        async with connect(port) as client:
            received: list[Frame] = []

            async def receive() -> None:
                received.extend(await client.receive(len(down)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                for frame in up:
                    await client.send(frame)
            conn = await upstream.wait_connection()
            await conn.wait_frames(len(up))
            await client.ws.aclose()
    assert received == down
    assert [type(f) for f in received] == [type(f) for f in down]
    assert conn.frames == up
    assert [type(f) for f in conn.frames] == [type(f) for f in up]
