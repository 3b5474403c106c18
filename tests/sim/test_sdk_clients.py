"""The official SDKs as real clients of the simulators, on loopback.

Both SDKs are asyncio/threads based: each exchange runs in a worker thread (its own event loop for ``openai``),
bounded by timeouts on both sides.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import trio

from proxy.chat import settings_message
from proxy.sim.server import SimOptions

from .helpers import simulator

# The SDKs import deprecated parts of ``websockets``; that is their business, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OPTIONS = SimOptions(speed=0, openai_key="sk-sdk-test", deepgram_key="dg-sdk-test", faults="")
TOOL = {
    "type": "function",
    "name": "lookup_order",
    "description": "Find an order",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
}


def openai_exchange(port: int) -> dict[str, Any]:
    from openai import AsyncOpenAI

    async def run() -> dict[str, Any]:
        client = AsyncOpenAI(api_key="sk-sdk-test", websocket_base_url=f"ws://127.0.0.1:{port}/v1")
        out: dict[str, Any] = {"types": []}
        async with client.realtime.connect(model="gpt-realtime") as conn:

            async def until(kind: str) -> Any:
                async for event in conn:
                    out["types"].append(event.type)
                    if event.type == "response.output_text.done":
                        out.setdefault("texts", []).append(event.text)
                    if event.type == "response.function_call_arguments.done":
                        out["call"] = event
                    if event.type == kind:
                        return event
                raise AssertionError(f"connection ended before {kind}")

            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [TOOL]})
            await until("session.updated")
            user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}
            await conn.conversation.item.create(item=user)  # type: ignore[arg-type]
            await conn.response.create()
            await until("response.done")
            ask = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "lookup_order 42"}]}
            await conn.conversation.item.create(item=ask)  # type: ignore[arg-type]
            await conn.response.create()
            await until("response.done")
            call = out["call"]
            await conn.conversation.item.create(
                item={"type": "function_call_output", "call_id": call.call_id, "output": "shipped"}
            )
            await conn.response.create()
            await until("response.done")
        return out

    return asyncio.run(asyncio.wait_for(run(), 20))


def deepgram_exchange(port: int) -> dict[str, Any]:
    from deepgram import DeepgramClient
    from deepgram.agent.v1.types import (
        AgentV1InjectUserMessage,
        AgentV1SendFunctionCallResponse,
        AgentV1Settings,
    )
    from deepgram.environment import DeepgramClientEnvironment

    base = f"127.0.0.1:{port}"
    environment = DeepgramClientEnvironment(
        base=f"http://{base}", production=f"ws://{base}", agent=f"ws://{base}", agent_rest=f"http://{base}"
    )
    client = DeepgramClient(api_key="dg-sdk-test", environment=environment)
    out: dict[str, Any] = {"types": [], "texts": [], "audio": 0}
    with client.agent.v1.connect() as socket:

        def until(kind: str) -> Any:
            while True:
                message = socket.recv()
                if isinstance(message, bytes):
                    out["audio"] += len(message)
                    continue
                out["types"].append(message.type)
                if message.type == "ConversationText" and message.role == "assistant":
                    out["texts"].append(message.content)
                if message.type == kind:
                    return message

        until("Welcome")
        settings = settings_message("ws://x/deepgram-proxy")
        settings["agent"]["think"]["functions"] = [{k: v for k, v in TOOL.items() if k != "type"}]
        socket.send_settings(AgentV1Settings.model_validate(settings))
        until("SettingsApplied")
        socket.send_inject_user_message(AgentV1InjectUserMessage(content="hello there"))
        until("AgentAudioDone")
        socket.send_inject_user_message(AgentV1InjectUserMessage(content="please lookup order 42"))
        request = until("FunctionCallRequest").functions[0]
        out["call"] = (request.name, json.loads(request.arguments), request.client_side)
        socket.send_function_call_response(
            AgentV1SendFunctionCallResponse(id=request.id, name=request.name, content="shipped")
        )
        until("AgentAudioDone")
    return out


async def test_openai_sdk_text_and_function_call_turns() -> None:
    async with simulator(OPTIONS) as port:
        with trio.fail_after(30):
            out = await trio.to_thread.run_sync(openai_exchange, port, abandon_on_cancel=True)
    assert out["types"][0] == "session.created"
    assert out["texts"] == ["You said: hello there.", "The function returned: shipped"]
    assert out["call"].name == "lookup_order"
    assert json.loads(out["call"].arguments) == {"order_id": "lookup_order 42"}


async def test_deepgram_sdk_text_and_function_call_turns() -> None:
    async with simulator(OPTIONS) as port:
        with trio.fail_after(30):
            out = await trio.to_thread.run_sync(deepgram_exchange, port, abandon_on_cancel=True)
    assert out["texts"] == ["You said: hello there.", "The function returned: shipped"]
    assert out["call"] == ("lookup_order", {"order_id": "please lookup order 42"}, True)
    assert out["audio"] > 24000
    assert "AgentStartedSpeaking" in out["types"]
