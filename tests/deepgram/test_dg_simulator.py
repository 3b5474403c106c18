"""Full turns through the pass-through against the embedded Deepgram simulators (which check the key), from a
component-shaped client and from the official Deepgram SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from proxy.config import Upstream, UpstreamSource
from proxy.core import Frame
from proxy.sim.server import SimOptions, serve_simulators
from tests.deepgram.dg_helpers import FAKE_KEY, connect, proxy_config, running_proxy, sdk_settings

SETTINGS = json.dumps(
    {
        "type": "Settings",
        "audio": {
            "input": {"encoding": "linear16", "sample_rate": 16000},
            "output": {"encoding": "linear16", "sample_rate": 24000},
        },
        "agent": {
            "language": "en",
            "think": {
                "provider": {"type": "open_ai", "model": "gpt-4o-mini"},
                "prompt": "You are a helpful voice assistant.",
            },
            "speak": {"provider": {"type": "deepgram", "model": "aura-asteria-en"}},
        },
    }
)


@asynccontextmanager
async def proxy_before_simulator(key: str = FAKE_KEY, **overrides: Any) -> AsyncIterator[int]:
    """A proxy whose Deepgram upstreams are the simulators, which demand FAKE_KEY; yields the proxy's port."""
    async with trio.open_nursery() as nursery:
        sim_port = await nursery.start(serve_simulators, "127.0.0.1", 0, SimOptions(speed=0, deepgram_key=FAKE_KEY))
        base = f"ws://127.0.0.1:{sim_port}"
        config = proxy_config(
            None,
            deepgram_agent=Upstream(f"{base}/v1/agent/converse", key, UpstreamSource.URL),
            deepgram_listen=Upstream(f"{base}/v1/listen", key, UpstreamSource.URL),
            **overrides,
        )
        async with running_proxy(config) as (_, port):
            yield port
        nursery.cancel_scope.cancel()


def kind(frame: Frame) -> str:
    return str(json.loads(frame)["type"]) if isinstance(frame, str) else "audio"


@pytest.mark.parametrize("auth", ["header", "subprotocol"])
async def test_a_full_agent_turn_through_the_proxy(auth: str) -> None:
    async with proxy_before_simulator(deepgram_auth=auth) as port, connect(port) as client:
        await client.send(SETTINGS)
        frames = await client.receive(2)
        await client.send('{"type":"InjectUserMessage","content":"What is the weather?"}')
        await client.send('{"type":"KeepAlive"}')
        with trio.fail_after(10):
            while not frames or frames[-1] != '{"type":"AgentAudioDone"}':
                frames.append(await client.ws.get_message())
        await client.ws.aclose(1000, "Closed by client")
    kinds = [kind(f) for f in frames]
    collapsed = [k for i, k in enumerate(kinds) if k != "audio" or kinds[i - 1] != "audio"]
    assert collapsed == [
        "Welcome",
        "SettingsApplied",
        "ConversationText",
        "AgentThinking",
        "ConversationText",
        "AgentStartedSpeaking",
        "audio",
        "AgentAudioDone",
    ]
    assert json.loads(frames[2]) == {"type": "ConversationText", "role": "user", "content": "What is the weather?"}
    assert json.loads(frames[4])["role"] == "assistant"
    audio = b"".join(f for f in frames if isinstance(f, bytes))
    assert audio
    assert len(audio) % 2 == 0


async def test_a_wrong_key_is_refused_by_the_simulator_and_reported() -> None:
    async with proxy_before_simulator(key="wrong-key") as port, connect(port) as client:
        await client.send(SETTINGS)
        frames, close = await client.receive_until_closed()
    assert [json.loads(f)["code"] for f in frames if isinstance(f, str)] == ["upstream_auth_failed"]
    assert close == (1011, "Upstream unavailable")


async def test_listen_through_the_proxy_relays_metadata_and_the_close() -> None:
    query = "service=transcription&model=nova-3&encoding=linear16&sample_rate=16000&channels=1&tag=x&traceId=t"
    async with proxy_before_simulator() as port, connect(port, f"/deepgram-proxy?{query}") as client:
        await client.send(b"\x00\x00" * 1600)
        await client.send('{"type":"CloseStream"}')
        frames, close = await client.receive_until_closed()
    assert [kind(f) for f in frames][-1] == "Metadata"
    assert close[0] == 1000


def sdk_turn(port: int) -> list[Any]:
    """The SDK's sync agent client: Settings, one injected message, everything up to AgentAudioDone."""
    from deepgram import DeepgramClient
    from deepgram.agent.v1.types import AgentV1InjectUserMessage
    from deepgram.environment import DeepgramClientEnvironment

    http, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    client = DeepgramClient(
        api_key="sdk-own-key",
        environment=DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http),
    )
    settings = sdk_settings()
    received: list[Any] = []
    with client.agent.v1.connect() as socket:
        socket.send_settings(settings)
        for _ in range(2000):
            message = socket.recv()
            received.append(message)
            name = type(message).__name__
            if name == "AgentV1SettingsApplied":
                socket.send_inject_user_message(AgentV1InjectUserMessage(content="Hello agent"))
            elif name in ("AgentV1AgentAudioDone", "AgentV1Error"):
                break
    return received


@pytest.mark.filterwarnings("ignore:websockets:DeprecationWarning")
async def test_the_deepgram_sdk_does_a_full_turn_against_the_simulator_through_the_proxy() -> None:
    async with proxy_before_simulator() as port:
        with trio.fail_after(30):
            received = await trio.to_thread.run_sync(sdk_turn, port, abandon_on_cancel=True)
    names = [type(m).__name__ for m in received]
    assert names[:2] == ["AgentV1Welcome", "AgentV1SettingsApplied"]
    assert names[-1] == "AgentV1AgentAudioDone"
    texts = [(m.role, m.content) for m in received if type(m).__name__ == "AgentV1ConversationText"]
    assert texts[0] == ("user", "Hello agent")
    assert texts[1][0] == "assistant"
    assert any(isinstance(m, bytes) and m for m in received)
