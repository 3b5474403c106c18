"""The official Deepgram Python SDK (agent v1, sync client in a worker thread) through the proxy's
``/v1/agent/converse`` alias: a full turn, with the SDK's own credentials replaced by the server's key."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.deepgram.dg_helpers import (
    FAKE_KEY,
    UpstreamConnection,
    proxy_config,
    running_proxy,
    scripted_upstream,
    sdk_settings,
)

# The SDK imports deprecated parts of the websockets package; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:websockets:DeprecationWarning")

SDK_KEY = "sdk-own-key-0123456789"
AUDIO = b"\x00\x01" * 480


def sdk_turn(port: int) -> list[Any]:
    """Welcome, Settings -> SettingsApplied, InjectUserMessage -> the agent's turn; returns what the SDK parsed."""
    from deepgram import DeepgramClient
    from deepgram.agent.v1.types import AgentV1InjectUserMessage
    from deepgram.environment import DeepgramClientEnvironment

    http, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    client = DeepgramClient(
        api_key=SDK_KEY,
        environment=DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http),
    )
    settings = sdk_settings()
    received: list[Any] = []
    with client.agent.v1.connect() as socket:
        received.append(socket.recv())
        socket.send_settings(settings)
        received.append(socket.recv())
        socket.send_inject_user_message(AgentV1InjectUserMessage(content="Hi"))
        received.extend(socket.recv() for _ in range(4))
    return received


async def test_the_deepgram_sdk_does_a_full_turn_through_the_agent_alias() -> None:
    seen: list[str] = []

    async def agent(conn: UpstreamConnection) -> None:
        await conn.send('{"type":"Welcome","request_id":"r1"}')
        seen.append(str(await conn.recv()))
        await conn.send('{"type":"SettingsApplied"}')
        seen.append(str(await conn.recv()))
        await conn.send('{"type":"ConversationText","role":"user","content":"Hi"}')
        await conn.send('{"type":"ConversationText","role":"assistant","content":"Hello."}')
        await conn.send(AUDIO)
        await conn.send('{"type":"AgentAudioDone"}')

    async with scripted_upstream(agent) as up, running_proxy(proxy_config(up)) as (_, port):
        with trio.fail_after(30):
            received = await trio.to_thread.run_sync(sdk_turn, port, abandon_on_cancel=True)
        conn = await up.wait_connection()
        await conn.wait_closed()
    assert [type(m).__name__ for m in received] == [
        "AgentV1Welcome",
        "AgentV1SettingsApplied",
        "AgentV1ConversationText",
        "AgentV1ConversationText",
        "bytes",
        "AgentV1AgentAudioDone",
    ]
    assert received[3].role == "assistant"
    assert received[3].content == "Hello."
    assert received[4] == AUDIO
    assert conn.path == "/v1/agent/converse"
    assert conn.header("authorization") == f"Token {FAKE_KEY}"
    assert all(SDK_KEY not in value for _, value in conn.headers)
    assert '"type": "Settings"' in seen[0]
    assert '"nova-3"' in seen[0]
    assert seen[1] == '{"type": "InjectUserMessage", "content": "Hi"}'
