"""The Deepgram Voice Agent simulator: every message validates against the deepgram-sdk agent v1 models."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected

from proxy.chat import settings_message
from proxy.sim.server import SimOptions

from .helpers import AgentClient, connect, memory_connection, rms, silence, simulator, tone

PATH = "/v1/agent/converse"
FUNCTIONS = [
    {
        "name": "get_time",
        "description": "The current time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    }
]


def settings(**think: object) -> dict[str, object]:
    message = settings_message("ws://x/deepgram-proxy")
    message["agent"]["think"].update(think)  # type: ignore[index]
    return message


async def ready(ws) -> AgentClient:  # type: ignore[no-untyped-def]
    client = AgentClient(ws)
    welcome = await client.next()
    assert welcome["type"] == "Welcome"
    assert welcome["request_id"]
    await client.send(settings(functions=FUNCTIONS))
    assert (await client.next())["type"] == "SettingsApplied"
    return client


async def test_text_turn() -> None:
    async with simulator() as port, connect(port, PATH) as ws:
        client = await ready(ws)
        await client.send({"type": "InjectUserMessage", "content": "Hello agent"})
        messages = await client.until("AgentAudioDone")
        assert [m["type"] for m in messages] == [
            "ConversationText",
            "AgentThinking",
            "ConversationText",
            "AgentStartedSpeaking",
            "AgentAudioDone",
        ]
        assert messages[0] == {"type": "ConversationText", "role": "user", "content": "Hello agent"}
        assert messages[2] == {"type": "ConversationText", "role": "assistant", "content": "You said: Hello agent."}
        assert len(client.audio) > 24000
        assert rms(bytes(client.audio)) > 1000


async def test_audio_follows_the_settings_output_rate() -> None:
    async with simulator() as port, connect(port, PATH) as ws:
        client = AgentClient(ws)
        await client.next()
        message = settings()
        message["audio"]["output"]["sample_rate"] = 16000  # type: ignore[index]
        await client.send(message)
        await client.until("SettingsApplied")
        await client.send({"type": "InjectUserMessage", "content": "Hello agent"})
        await client.until("AgentAudioDone")
        at_16k = len(client.audio)
    async with simulator() as port, connect(port, PATH) as ws:
        client = await ready(ws)
        await client.send({"type": "InjectUserMessage", "content": "Hello agent"})
        await client.until("AgentAudioDone")
        assert len(client.audio) == pytest.approx(at_16k * 1.5, rel=0.01)


async def test_function_call_round_trip() -> None:
    async with simulator() as port, connect(port, PATH) as ws:
        client = await ready(ws)
        await client.send({"type": "InjectUserMessage", "content": "What does get_time say?"})
        messages = await client.until("FunctionCallRequest")
        request = messages[-1]["functions"][0]
        assert request["name"] == "get_time"
        assert request["client_side"] is True
        assert json.loads(request["arguments"]) == {"zone": "What does get_time say?"}
        await client.send({"type": "FunctionCallResponse", "id": request["id"], "name": "get_time", "content": "12:00"})
        messages = await client.until("AgentAudioDone")
        text = next(m for m in messages if m["type"] == "ConversationText")
        assert text["role"] == "assistant"
        assert "12:00" in text["content"]


async def test_mic_audio_starts_a_turn() -> None:
    async with simulator() as port, connect(port, PATH) as ws:
        client = await ready(ws)
        pcm = silence(300, 16000) + tone(1300, 16000) + silence(1000, 16000)
        for i in range(0, len(pcm), 2720):
            await ws.send_message(pcm[i : i + 2720])
        messages = await client.until("AgentAudioDone")
        assert messages[0]["type"] == "UserStartedSpeaking"
        assert messages[1] == {"type": "ConversationText", "role": "user", "content": "Hello this is."}
        assert {
            "type": "ConversationText",
            "role": "assistant",
            "content": "I heard about 1 second of speech.",
        } in messages


async def test_settings_twice_keepalive_update_prompt_and_unknown() -> None:
    async with simulator() as port, connect(port, PATH) as ws:
        client = await ready(ws)
        await client.send({"type": "KeepAlive"})
        await client.send(settings())
        error = await client.next()
        assert error["type"] == "Error"
        assert error["code"] == "SETTINGS_ALREADY_APPLIED"
        await client.send({"type": "UpdatePrompt", "prompt": "Be terse."})
        assert await client.next() == {"type": "PromptUpdated"}
        await client.send({"type": "Bogus"})
        assert (await client.next())["code"] == "UNPARSABLE_CLIENT_MESSAGE"


async def test_client_message_timeout(autojump_clock: trio.testing.MockClock) -> None:
    options = SimOptions(speed=0, client_message_timeout_s=10, faults="")
    async with memory_connection(PATH, options) as ws:
        client = await ready(ws)
        start = trio.current_time()
        for _ in range(3):  # KeepAlive counts as a client message and pushes the deadline
            await trio.sleep(8)
            await client.send({"type": "KeepAlive"})
        error = await client.next(timeout=100)
        assert error["code"] == "CLIENT_MESSAGE_TIMEOUT"
        assert trio.current_time() - start == pytest.approx(34)
        with pytest.raises(ConnectionClosed):
            await ws.get_message()


@pytest.mark.parametrize("via", ["header", "subprotocol", "none", "wrong"])
async def test_auth(via: str) -> None:
    options = SimOptions(speed=0, deepgram_key="dg-secret", faults="")
    kwargs: dict[str, object] = {}
    if via == "header":
        kwargs["extra_headers"] = [(b"authorization", b"Token dg-secret")]
    elif via == "subprotocol":
        kwargs["subprotocols"] = ["token", "dg-secret"]
    elif via == "wrong":
        kwargs["extra_headers"] = [(b"authorization", b"Token nope")]
    async with simulator(options) as port:
        if via in ("none", "wrong"):
            with pytest.raises(ConnectionRejected) as rejected:
                async with connect(port, PATH, **kwargs):
                    pass
            assert rejected.value.status_code == 401
            assert b"dg-secret" not in (rejected.value.body or b"")
        else:
            async with connect(port, PATH, **kwargs) as ws:
                assert (await AgentClient(ws).next())["type"] == "Welcome"
                if via == "subprotocol":
                    assert ws.subprotocol == "token"


async def test_turn_audio_is_paced(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_connection(PATH, SimOptions(speed=1.0, head_start_s=0, faults="")) as ws:
        client = await ready(ws)
        await client.send({"type": "InjectUserMessage", "content": "Hello agent"})
        start = trio.current_time()
        times = []
        while True:
            frame = await ws.get_message()
            if isinstance(frame, bytes):
                times.append(trio.current_time() - start)
                client.audio += frame
            elif json.loads(frame)["type"] == "AgentAudioDone":
                done = trio.current_time() - start
                break
        assert times == pytest.approx([i * 0.1 for i in range(len(times))])
        assert done == pytest.approx(len(client.audio) / 48000)
