"""Shared steps of the conformance tests."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .client import MANUAL_SETTINGS, Client, connect
from .conftest import ProxyProcess
from .upstream import Conn, FakeUpstream

#: How long to watch for something that must NOT happen after the last expected message. Long enough for the
#: proxy to handle everything already on the wire (loopback); the proxy's own timers are waited for explicitly.
SETTLE_S = 0.3


async def settle(seconds: float = SETTLE_S) -> None:
    await trio.sleep(seconds)


def settings(**agent: Any) -> dict[str, Any]:
    """Manual-commit Settings (the reference's usual test Settings) with extra ``agent`` fields."""
    message = copy.deepcopy(MANUAL_SETTINGS)
    message["agent"].update(agent)
    return message


@asynccontextmanager
async def ready(
    proxy: ProxyProcess,
    upstream: FakeUpstream,
    message: dict[str, Any] | None = None,
    *,
    index: int = 0,
    query: str = "",
) -> AsyncIterator[tuple[Client, Conn]]:
    """A client whose Settings were applied (SettingsApplied received), and its upstream connection."""
    async with connect(proxy.url(query=query)) as client:
        await client.send(message if message is not None else MANUAL_SETTINGS)
        await client.wait_type("SettingsApplied")
        conn = await upstream.connection(index)
        yield client, conn


def no_protocol_errors(conn: Conn) -> None:
    assert conn.protocol_errors == [], conn.summary()


def no_client_errors(client: Client) -> None:
    assert client.errors() == [], client.transcript()
