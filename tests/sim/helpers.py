"""Shared plumbing for the simulator tests: a server on loopback, in-memory connections, schema checks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import trio
import trio.testing
from deepgram.agent.v1 import types as agent_types
from deepgram.listen.v1 import types as listen_types
from openai.types.realtime import RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter
from trio_websocket import WebSocketConnection, open_websocket_url, wrap_client_stream, wrap_server_stream

from proxy.sim.server import SimOptions, handle_request, serve_simulators

OPENAI_EVENT = TypeAdapter(RealtimeServerEvent)
AGENT_MODELS: dict[str, type[BaseModel]] = {
    "Welcome": agent_types.AgentV1Welcome,
    "SettingsApplied": agent_types.AgentV1SettingsApplied,
    "ConversationText": agent_types.AgentV1ConversationText,
    "AgentThinking": agent_types.AgentV1AgentThinking,
    "AgentStartedSpeaking": agent_types.AgentV1AgentStartedSpeaking,
    "AgentAudioDone": agent_types.AgentV1AgentAudioDone,
    "FunctionCallRequest": agent_types.AgentV1FunctionCallRequest,
    "UserStartedSpeaking": agent_types.AgentV1UserStartedSpeaking,
    "PromptUpdated": agent_types.AgentV1PromptUpdated,
    "SpeakUpdated": agent_types.AgentV1SpeakUpdated,
    "InjectionRefused": agent_types.AgentV1InjectionRefused,
    "Error": agent_types.AgentV1Error,
    "Warning": agent_types.AgentV1Warning,
}
LISTEN_MODELS: dict[str, type[BaseModel]] = {
    "Results": listen_types.ListenV1Results,
    "Metadata": listen_types.ListenV1Metadata,
    "UtteranceEnd": listen_types.ListenV1UtteranceEnd,
    "SpeechStarted": listen_types.ListenV1SpeechStarted,
}
FAST = SimOptions(speed=0, faults="")


def check_openai(frame: str | bytes) -> dict[str, Any]:
    """Validate one frame against the official Realtime server-event schema; return it decoded."""
    assert isinstance(frame, str), "the Realtime API sends only text frames"
    OPENAI_EVENT.validate_json(frame)
    event: dict[str, Any] = json.loads(frame)
    assert event["event_id"]
    return event


def check_deepgram(frame: str, models: dict[str, type[BaseModel]]) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(frame)
    models[message["type"]].model_validate(message)
    return message


@asynccontextmanager
async def simulator(options: SimOptions = FAST) -> AsyncIterator[int]:
    """Serve the simulators on a loopback port for the duration of the block; yields the port."""
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(serve_simulators, "127.0.0.1", 0, options)
        yield port
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def connect(port: int, path: str, **kwargs: Any) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(f"ws://127.0.0.1:{port}{path}", **kwargs) as ws:
        yield ws


@asynccontextmanager
async def memory_connection(path: str, options: SimOptions = FAST) -> AsyncIterator[WebSocketConnection]:
    """A client connection to a simulator over in-memory streams (for tests on a MockClock)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            request = await wrap_server_stream(nursery, server_stream)
            await handle_request(request, options)

        nursery.start_soon(serve)
        ws = await wrap_client_stream(nursery, client_stream, "sim.test", path)  # type: ignore[arg-type]
        yield ws
        nursery.cancel_scope.cancel()


class OpenAIClient:
    """Reads Realtime events, validating every one against the official schema."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(event))

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        with trio.fail_after(timeout):
            event = check_openai(await self.ws.get_message())
        self.seen.append(event)
        return event

    async def until(self, kind: str) -> list[dict[str, Any]]:
        """Every event up to and including the first of ``kind``."""
        got = []
        while True:
            event = await self.next()
            got.append(event)
            if event["type"] == kind:
                return got


class AgentClient:
    """Reads Voice Agent messages (binary frames collected apart), validating JSON against the SDK's models."""

    def __init__(self, ws: WebSocketConnection, models: dict[str, type[BaseModel]] = AGENT_MODELS) -> None:
        self.ws = ws
        self.models = models
        self.audio = bytearray()
        self.seen: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(message))

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                frame = await self.ws.get_message()
                if isinstance(frame, bytes):
                    self.audio += frame
                    continue
                message = check_deepgram(frame, self.models)
                self.seen.append(message)
                return message

    async def until(
        self, kind: str, predicate: Callable[[dict[str, Any]], bool] = lambda m: True
    ) -> list[dict[str, Any]]:
        got = []
        while True:
            message = await self.next()
            got.append(message)
            if message["type"] == kind and predicate(message):
                return got


def tone(ms: int, rate: int, freq: float = 220.0, amplitude: float = 0.3) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return bytes((np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype("<i2").tobytes())


def silence(ms: int, rate: int) -> bytes:
    return bytes(rate * ms // 1000 * 2)


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples))) if len(samples) else 0.0
