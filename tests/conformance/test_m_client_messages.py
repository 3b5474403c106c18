"""Reference integration catalogue (§12.2): which client JSON reaches the upstream (KeepAlive, disallowed types,
the passthrough option)."""

from __future__ import annotations

import pytest

from .common import no_client_errors, ready, settle
from .conftest import ProxyProcess
from .upstream import FakeUpstream

pytestmark = pytest.mark.e2e  # real proxy processes on loopback


async def test_m71_keepalive_not_forwarded_to_upstream(proxy: ProxyProcess, upstream: FakeUpstream) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await client.send({"type": "KeepAlive"})
        await client.inject("Hello")  # a later message: once it is upstream, the KeepAlive was handled
        await client.wait_assistant_text("Hello from mock")
        assert "KeepAlive" not in conn.types()
        assert not any("KeepAlive" in str(r.raw) for r in conn.received)
        no_client_errors(client)


async def test_m72_disallowed_client_json_type_yields_error_and_is_not_forwarded(
    proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(proxy, upstream) as (client, conn):
        await client.send({"type": "CustomPassthroughProbe", "value": 1})
        got = await client.wait_type("Error")
        assert got["code"] == "disallowed_client_message_type"
        assert "CustomPassthroughProbe" in got["description"]
        await settle()
        assert not any("CustomPassthroughProbe" in str(r.raw) for r in conn.received)
        assert client.closed is None


async def test_m73_with_passthrough_unknown_client_json_is_forwarded_to_upstream(
    passthrough_proxy: ProxyProcess, upstream: FakeUpstream
) -> None:

    raw = '{"type": "CustomPassthroughDevProbe",  "n": 1, "nested": {"a": [1, 2]}}'
    async with ready(passthrough_proxy, upstream) as (client, conn):
        await client.send_text(raw)
        got = await conn.wait_type("CustomPassthroughDevProbe", timeout=3)
        assert got.raw == raw  # the original text, byte for byte
        await settle()
        no_client_errors(client)


async def test_m74_with_passthrough_keepalive_is_still_not_forwarded(
    passthrough_proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    async with ready(passthrough_proxy, upstream) as (client, conn):
        await client.send({"type": "KeepAlive"})
        await client.inject("Hello")
        await client.wait_assistant_text("Hello from mock")
        assert "KeepAlive" not in conn.types()
        no_client_errors(client)
