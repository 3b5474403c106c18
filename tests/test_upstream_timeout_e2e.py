"""An upstream that accepts TCP but never answers its handshake, end to end through ``python -m proxy``."""

from __future__ import annotations

import json
import os
import socket

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.proxyproc import running_proxy

pytestmark = pytest.mark.e2e

SETTINGS = json.dumps({"type": "Settings", "audio": {}, "agent": {}})


async def test_an_upstream_that_never_answers_costs_the_client_an_error_and_1011_at_the_connect_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody ever answers
        port = silent.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DEEPGRAM_", "PROXY_"))}
        env.update(
            OPENAI_REALTIME_URL=f"ws://127.0.0.1:{port}/v1/realtime",
            OPENAI_API_KEY="sk-test-never-used",
            PROXY_UPSTREAM_CONNECT_TIMEOUT_S="0.5",
        )
        with running_proxy(env=env) as (_process, proxy_port):
            frames: list[str | bytes] = []
            with trio.fail_after(5):  # well below the default 10 s: the setting is what ends the wait
                async with open_websocket_url(f"ws://127.0.0.1:{proxy_port}/openai") as ws:
                    await ws.send_message(SETTINGS)
                    try:
                        while True:
                            frames.append(await ws.get_message())
                    except ConnectionClosed as closed:
                        close = closed.reason
    errors = [json.loads(f) for f in frames if isinstance(f, str)]
    assert [(e["type"], e["code"]) for e in errors] == [("Error", "upstream_timeout")]
    assert close.code == 1011
