"""The official Deepgram SDK pointed at the proxy with a route prefix as its base URL: the SDK appends
``/v1/agent/converse`` or ``/v1/listen``, and the aliases under ``/deepgram-proxy`` and ``/openai`` take it to the
pass-through or the translator. Each runs a real turn against the embedded simulators, which check the keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from proxy.config import Upstream, UpstreamSource
from proxy.server import default_routes
from proxy.sim.server import SimOptions, serve_simulators
from tests.deepgram.dg_helpers import FAKE_KEY, proxy_config, running_proxy, sdk_settings

# The SDK imports deprecated parts of the websockets package; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:websockets:DeprecationWarning")

OPENAI_KEY = "sk-test-openai-0123456789abcdef"
SDK_KEY = "sdk-own-key-0123456789"


@asynccontextmanager
async def proxy_before_simulators(**overrides: Any) -> AsyncIterator[int]:
    """A proxy whose three upstreams are the simulators, each demanding the server's key; yields the proxy's port."""
    async with trio.open_nursery() as nursery:
        options = SimOptions(speed=0, deepgram_key=FAKE_KEY, openai_key=OPENAI_KEY)
        sim_port = await nursery.start(serve_simulators, "127.0.0.1", 0, options)
        base = f"ws://127.0.0.1:{sim_port}"
        config = proxy_config(
            None,
            deepgram_agent=Upstream(f"{base}/v1/agent/converse", FAKE_KEY, UpstreamSource.URL),
            deepgram_listen=Upstream(f"{base}/v1/listen", FAKE_KEY, UpstreamSource.URL),
            openai=Upstream(f"{base}/v1/realtime?model=gpt-4o-realtime-preview", OPENAI_KEY, UpstreamSource.URL),
            **overrides,
        )
        async with running_proxy(config) as (_, port):
            yield port
        nursery.cancel_scope.cancel()


def sdk_client(port: int, prefix: str) -> Any:
    from deepgram import DeepgramClient
    from deepgram.environment import DeepgramClientEnvironment

    http, ws = f"http://127.0.0.1:{port}{prefix}", f"ws://127.0.0.1:{port}{prefix}"
    return DeepgramClient(
        api_key=SDK_KEY,
        environment=DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http),
    )


def sdk_agent_turn(port: int, prefix: str) -> list[Any]:
    """Settings, one injected message, everything up to AgentAudioDone (or an Error)."""
    from deepgram.agent.v1.types import AgentV1InjectUserMessage

    received: list[Any] = []
    with sdk_client(port, prefix).agent.v1.connect() as socket:
        socket.send_settings(sdk_settings())
        for _ in range(5000):
            message = socket.recv()
            received.append(message)
            name = type(message).__name__
            if name == "AgentV1SettingsApplied":
                socket.send_inject_user_message(AgentV1InjectUserMessage(content="Hello agent"))
            elif name in ("AgentV1AgentAudioDone", "AgentV1Error"):
                break
    return received


def sdk_listen(port: int, prefix: str) -> list[Any]:
    """One second of silence, then CloseStream; everything the SDK parsed until the server closed."""
    received: list[Any] = []
    listen = sdk_client(port, prefix).listen.v1
    with listen.connect(model="nova-3", encoding="linear16", sample_rate="16000") as socket:
        socket.send_media(b"\x00\x00" * 16000)
        socket.send_close_stream()
        received.extend(socket)
    return received


def test_the_sdk_paths_are_routed() -> None:
    routes = default_routes()
    assert routes["/deepgram-proxy/v1/agent/converse"][0] == "deepgram"
    assert routes["/deepgram-proxy/v1/listen"][0] == "deepgram"
    assert routes["/openai/v1/agent/converse"][0] == "openai"


async def test_the_sdk_talks_to_the_pass_through_under_its_prefix() -> None:
    async with proxy_before_simulators() as port:
        with trio.fail_after(30):
            received = await trio.to_thread.run_sync(sdk_agent_turn, port, "/deepgram-proxy", abandon_on_cancel=True)
    names = [type(m).__name__ for m in received]
    assert names[:2] == ["AgentV1Welcome", "AgentV1SettingsApplied"]
    assert names[-1] == "AgentV1AgentAudioDone"
    texts = [(m.role, m.content) for m in received if type(m).__name__ == "AgentV1ConversationText"]
    assert texts[0] == ("user", "Hello agent")
    assert any(isinstance(m, bytes) and m for m in received)


async def test_the_sdk_talks_to_the_translator_under_the_openai_prefix() -> None:
    async with proxy_before_simulators() as port:
        with trio.fail_after(30):
            received = await trio.to_thread.run_sync(sdk_agent_turn, port, "/openai", abandon_on_cancel=True)
    names = [type(m).__name__ for m in received]
    # The translator sends no Welcome (as the reference); AgentDone is not in the SDK's schema, so it parses as a
    # plain dict. The assistant's transcript follows AgentAudioDone, after the SDK stopped reading here.
    assert [n for n in names if n != "bytes"] == [
        "AgentV1SettingsApplied",
        "AgentV1ConversationText",
        "AgentV1AgentStartedSpeaking",
        "dict",
        "AgentV1AgentAudioDone",
    ]
    assert (received[1].role, received[1].content) == ("user", "Hello agent")
    assert {"type": "AgentDone"} in received
    assert any(isinstance(m, bytes) and m for m in received)


async def test_the_sdk_listens_through_the_pass_through_under_its_prefix() -> None:
    async with proxy_before_simulators() as port:
        with trio.fail_after(30):
            received = await trio.to_thread.run_sync(sdk_listen, port, "/deepgram-proxy", abandon_on_cancel=True)
    names = [type(m).__name__ for m in received]
    assert "ListenV1Metadata" in names, names


@pytest.mark.parametrize("path", ["/openai/v1/listen", "/deepgram-proxy/v1/other", "/openai/v1/agent/converse/x"])
def test_other_paths_under_the_prefixes_stay_unknown(path: str) -> None:
    assert path not in default_routes()
