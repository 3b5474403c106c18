"""One address holding every pending-handshake slot cannot lock other addresses out (proxy/admission.py).

Real sockets on loopback against a :class:`~proxy.server.ProxyServer`: the attacker connects from 127.0.0.2 and
sends nothing, a newcomer from 127.0.0.3 is served at once, and the attacker's oldest idle socket is the one closed.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.lowlevel

from proxy.admission import PENDING_EVICTED
from proxy.config import Config, Limits
from tests.server.test_server import proxy

ATTACKER = "127.0.0.2"
NEWCOMER = "127.0.0.3"


async def get_health_from(address: str, port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=address)
    async with stream:
        await stream.send_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    return data


async def test_a_new_address_evicts_the_oldest_idle_socket_of_the_address_holding_every_slot(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    limits = Limits(ping_interval_s=0, max_pending_handshakes=4, max_connections_per_ip=64, handshake_timeout_s=10.0)
    async with proxy(Config(port=0, limits=limits)) as (server, port):
        idle = []
        for _ in range(4):
            idle.append(await trio.open_tcp_stream("127.0.0.1", port, local_address=ATTACKER))
            await trio.sleep(0.1)
        assert server.admission.pending_from(ATTACKER) == 4
        # The attacker's own next socket is refused at once: it holds the most.
        refused = await trio.open_tcp_stream("127.0.0.1", port, local_address=ATTACKER)
        async with refused:
            assert await refused.receive_some() == b""
        start = trio.current_time()
        for n in range(3):
            answer = await get_health_from(NEWCOMER, port)
            assert answer.startswith(b"HTTP/1.1 200 ")
            # Its oldest idle socket was closed, the younger ones are still waiting; it fills the slot again.
            assert await idle[n].receive_some() == b""
            idle.append(await trio.open_tcp_stream("127.0.0.1", port, local_address=ATTACKER))
            await trio.lowlevel.checkpoint()
            assert server.admission.pending_from(ATTACKER) == 4
        assert trio.current_time() == start  # served at once, not after the handshake timeout
        assert server.metrics.rejected_total == {"max_pending_handshakes": 1, PENDING_EVICTED: 3}
        evictions = [r for r in caplog.records if "evicted" in r.getMessage()]
        assert len(evictions) == 1  # paced: one line per interval, however many were evicted
        assert evictions[0].levelno == logging.WARNING
        assert evictions[0].exc_info is None
        for stream in idle:
            await stream.aclose()
