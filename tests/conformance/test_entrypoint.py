"""Reference §12.3 (the run.ts entrypoint tests): the proxy started as operators start it, configured from the
environment alone (``OPENAI_PROXY_PORT`` is the reference's port variable; 0 picks a free port)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from .client import VAD_SETTINGS, connect
from .common import no_client_errors
from .conftest import ProxyProcess, proxy_env, start_proxy
from .upstream import FakeUpstream, Scenario

pytestmark = pytest.mark.e2e  # real proxy processes on loopback

ENTRYPOINT_KEY = "sk-run-ts-entrypoint-mock"


@pytest.fixture(scope="module")
def entrypoint_proxy(tmp_path_factory: pytest.TempPathFactory, upstream_url: str) -> Iterator[ProxyProcess]:
    env = proxy_env(upstream_url, OPENAI_API_KEY=ENTRYPOINT_KEY, OPENAI_PROXY_PORT="0", LOG_LEVEL="error")
    workdir: Path = tmp_path_factory.mktemp("entrypoint")
    proxy = start_proxy("entrypoint", workdir, env, args=())
    try:
        yield proxy
    finally:
        proxy.stop()
    assert ENTRYPOINT_KEY not in proxy.output()


async def http_status(port: int, path: str) -> int:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                data += chunk
    return int(data.split(b" ", 2)[1])


async def test_e1_accepts_websocket_on_openai_after_start(
    entrypoint_proxy: ProxyProcess, upstream: FakeUpstream
) -> None:

    lines = entrypoint_proxy.stdout_path.read_text().splitlines()
    assert lines == [f"listening on ws://127.0.0.1:{entrypoint_proxy.port}"]
    assert await http_status(entrypoint_proxy.port, "/health") == 200
    async with connect(entrypoint_proxy.url()) as client:
        conn = await upstream.connection(0)
        assert client.ws.closed is None
    assert conn.headers.get("authorization") == f"Bearer {ENTRYPOINT_KEY}"


async def test_e2_settings_to_settings_applied_and_inject_to_assistant_conversation_text(
    entrypoint_proxy: ProxyProcess, upstream: FakeUpstream
) -> None:
    """No manual-commit flag: server-VAD mode, as in the product."""
    upstream.scenario = Scenario(fixed_user_item_id="item_u_run_ts")
    async with connect(entrypoint_proxy.url()) as client:
        await client.send(VAD_SETTINGS)
        await client.wait_type("SettingsApplied")
        await client.inject("Hello")
        got = await client.wait_assistant_text()
        assert "Hello from mock" in got.json["content"]
        no_client_errors(client)
