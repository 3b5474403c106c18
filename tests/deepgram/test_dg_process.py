"""``python -m proxy`` as a real process on loopback, in front of scripted Deepgram upstreams."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests.deepgram.dg_helpers import (
    FAKE_KEY,
    UpstreamConnection,
    connect,
    http_get,
    scripted_upstream,
)

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = '{"type":"Settings","agent":{}}'

pytestmark = pytest.mark.e2e


class ProxyProcess:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.port = 0
        self.stdout = b""
        self.stderr = b""

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).decode(errors="replace")


@asynccontextmanager
async def proxy_process(env: dict[str, str]) -> AsyncIterator[ProxyProcess]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("DEEPGRAM_", "OPENAI_", "PROXY_")) and k != "LOG_LEVEL"
    }
    # An explicit (unreachable) OpenAI URL keeps the embedded simulators out of this test.
    base |= {"OPENAI_REALTIME_URL": "ws://127.0.0.1:9/v1/realtime", "LOG_LEVEL": "DEBUG", **env}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "proxy", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=base,
    )
    proxy = ProxyProcess(process)
    assert process.stdout is not None
    assert process.stderr is not None
    stdout, stderr = process.stdout, process.stderr
    try:
        async with trio.open_nursery() as nursery:

            async def drain_stderr() -> None:
                while chunk := await stderr.receive_some():
                    proxy.stderr += chunk

            nursery.start_soon(drain_stderr)
            with trio.fail_after(20):
                while b"\n" not in proxy.stdout:
                    chunk = await stdout.receive_some()
                    assert chunk, f"proxy exited before listening: {proxy.output}"
                    proxy.stdout += chunk
            line = proxy.stdout.split(b"\n")[0].decode()
            assert line.startswith("listening on ws://127.0.0.1:"), line
            proxy.port = int(line.rsplit(":", 1)[1])
            yield proxy
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                while chunk := await stdout.receive_some():
                    proxy.stdout += chunk
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(5) as cleanup:
                cleanup.shield = True
                await process.wait()


async def test_a_turn_through_the_proxy_process_and_the_key_never_leaks() -> None:
    async def agent(conn: UpstreamConnection) -> None:
        await conn.send('{"type":"Welcome","request_id":"r1"}')
        assert await conn.recv() == SETTINGS
        await conn.send('{"type":"SettingsApplied"}')
        await conn.recv()  # InjectUserMessage
        await conn.send('{"type":"ConversationText","role":"assistant","content":"Hello."}')
        await conn.send(b"\x01\x02" * 480)
        await conn.send('{"type":"AgentAudioDone"}')

    async with (
        scripted_upstream(agent) as agent_up,
        scripted_upstream(reject=401) as listen_up,
        proxy_process(
            {
                "DEEPGRAM_AGENT_URL": agent_up.url("/v1/agent/converse"),
                "DEEPGRAM_LISTEN_URL": listen_up.url("/v1/listen"),
                "DEEPGRAM_API_KEY": FAKE_KEY,
            }
        ) as proxy,
    ):
        async with connect(proxy.port, "/deepgram-proxy?service=agent&token=client-token&traceId=trace-e2e") as client:
            await client.send(SETTINGS)
            await client.send('{"type":"InjectUserMessage","content":"Hi"}')
            frames = await client.receive(5)
            await client.ws.aclose(1000, "Closed by client")
        conn = await agent_up.wait_connection()
        assert await conn.wait_closed() == (1000, "Closed by client")
        async with connect(proxy.port, "/deepgram-proxy?service=transcription&model=nova-3") as listener:
            listen_frames, listen_close = await listener.receive_until_closed()
    assert proxy.process.returncode == 0
    assert [json.loads(f)["type"] if isinstance(f, str) else "audio" for f in frames] == [
        "Welcome",
        "SettingsApplied",
        "ConversationText",
        "audio",
        "AgentAudioDone",
    ]
    assert conn.header("authorization") == f"Token {FAKE_KEY}"
    assert conn.query == ""
    assert listen_up.connections[0].params() == [("model", "nova-3")]
    assert (listen_frames, listen_close) == ([], (1011, "Upstream unavailable"))
    assert "trace-e2e" in proxy.output  # the trace id is logged even though it is not forwarded
    assert FAKE_KEY not in proxy.output
    assert FAKE_KEY[:8] not in proxy.output


async def test_a_blank_key_is_a_clear_error_and_the_process_stays_up() -> None:
    async with proxy_process({"DEEPGRAM_API_KEY": "   "}) as proxy:
        for query in ("service=agent", "service=agent"):
            async with connect(proxy.port, f"/deepgram-proxy?{query}") as client:
                frames, close = await client.receive_until_closed()
            assert [json.loads(f)["code"] for f in frames if isinstance(f, str)] == ["proxy_configuration_error"]
            assert close == (1011, "Upstream unavailable")
        assert (await http_get(proxy.port, "/health"))[0] == 200
        assert proxy.process.returncode is None
    assert "blank" in proxy.output
    assert proxy.process.returncode == 0
