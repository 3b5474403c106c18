"""A test client that speaks the component protocol to the proxy and records every frame it receives, in order."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection, connect_websocket_url

MANUAL_SETTINGS: dict[str, Any] = {
    "type": "Settings",
    "agent": {"useOpenAIManualAudioCommit": True, "think": {"prompt": "Hi"}},
}
VAD_SETTINGS: dict[str, Any] = {"type": "Settings", "agent": {"idleTimeoutMs": 10000, "think": {"prompt": "Hi"}}}

#: Message types the proxy may send to the component (anything else on the wire is a leak of upstream JSON).
COMPONENT_TYPES = frozenset(
    {
        "SettingsApplied",
        "ConversationText",
        "AgentStartedSpeaking",
        "AgentDone",
        "AgentAudioDone",
        "AgentThinking",
        "FunctionCallRequest",
        "UserStartedSpeaking",
        "UtteranceEnd",
        "Transcript",
        "Error",
    }
)


@dataclass
class Frame:
    """One frame received from the proxy."""

    index: int
    at: float
    data: str | bytes
    json: Any = None

    @property
    def binary(self) -> bool:
        return isinstance(self.data, bytes)

    @property
    def type(self) -> str | None:
        return self.json.get("type") if isinstance(self.json, dict) else None

    def short(self) -> str:
        if self.binary:
            return f"<binary {len(self.data)}>"
        if self.type == "ConversationText":
            return f"CT({self.json.get('role')}:{self.json.get('content')!r})"
        if self.type == "Error":
            return f"Error({self.json.get('code')!r})"
        return str(self.type or self.data[:60])


@dataclass
class Client:
    """A connected client; ``frames`` grows as the proxy sends."""

    ws: WebSocketConnection
    frames: list[Frame] = field(default_factory=list)
    closed: CloseReason | None = None
    closed_event: trio.Event = field(default_factory=trio.Event)
    _lot: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)

    # -- sending ------------------------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> float:
        """Send one JSON text frame; returns the time it was sent."""
        await self.ws.send_message(json.dumps(message))
        return trio.current_time()

    async def send_text(self, text: str) -> None:
        await self.ws.send_message(text)

    async def send_audio(self, n_bytes: int) -> float:
        """Send zero-filled 16 kHz PCM as one binary frame."""
        await self.ws.send_message(bytes(n_bytes))
        return trio.current_time()

    async def inject(self, content: str) -> float:
        return await self.send({"type": "InjectUserMessage", "content": content})

    # -- reading ------------------------------------------------------------------------------------------------

    def json_frames(self, type_: str | None = None) -> list[Frame]:
        return [f for f in self.frames if f.json is not None and (type_ is None or f.type == type_)]

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [f.json for f in self.json_frames(type_)]

    def binary_frames(self) -> list[Frame]:
        return [f for f in self.frames if f.binary]

    def assistant_texts(self) -> list[str]:
        return [m["content"] for m in self.of_type("ConversationText") if m.get("role") == "assistant"]

    def errors(self) -> list[dict[str, Any]]:
        return self.of_type("Error")

    def transcript(self) -> list[str]:
        return [f.short() for f in self.frames]

    async def wait_for(self, predicate: Callable[[Frame], bool], timeout: float = 5.0, what: str = "") -> Frame:
        """The first frame (from the start) matching ``predicate``."""
        seen = 0
        with trio.move_on_after(timeout):
            while True:
                for frame in self.frames[seen:]:
                    if predicate(frame):
                        return frame
                seen = len(self.frames)
                if self.closed is not None:
                    break
                await self._lot.park()
        state = f"closed {self.closed.code} {self.closed.reason!r}" if self.closed else "open"
        raise AssertionError(f"no frame {what or predicate} within {timeout} s ({state}); got {self.transcript()}")

    async def wait_type(self, type_: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """The first JSON message of ``type_`` whose fields equal ``fields``."""

        def match(f: Frame) -> bool:
            return f.type == type_ and all(f.json.get(k) == v for k, v in fields.items())

        frame = await self.wait_for(match, timeout, f"{type_} {fields or ''}".strip())
        return frame.json  # type: ignore[no-any-return]

    async def wait_count(self, type_: str, count: int, timeout: float = 5.0) -> None:
        def enough(_: Frame) -> bool:
            return len(self.json_frames(type_)) >= count

        await self.wait_for(enough, timeout, f"{count} x {type_}")

    async def wait_assistant_text(self, content: str | None = None, timeout: float = 5.0) -> Frame:
        def match(f: Frame) -> bool:
            return (
                f.type == "ConversationText"
                and f.json.get("role") == "assistant"
                and (content is None or f.json.get("content") == content)
            )

        return await self.wait_for(match, timeout, f"assistant ConversationText {content!r}")

    async def wait_closed(self, timeout: float = 5.0) -> CloseReason:
        with trio.move_on_after(timeout):
            await self.closed_event.wait()
        if self.closed is None:
            raise AssertionError(f"connection still open after {timeout} s; got {self.transcript()}")
        return self.closed

    def index_of(self, predicate: Callable[[Frame], bool]) -> int:
        """Index of the first matching frame, or -1."""
        return next((f.index for f in self.frames if predicate(f)), -1)

    def last_index_of(self, predicate: Callable[[Frame], bool]) -> int:
        return max((f.index for f in self.frames if predicate(f)), default=-1)

    def unexpected_types(self) -> list[str]:
        """JSON frames that are not component messages (for example raw upstream events)."""
        return [str(f.type) for f in self.json_frames() if f.type not in COMPONENT_TYPES]

    async def _reader(self) -> None:
        try:
            while True:
                data = await self.ws.get_message()
                frame = Frame(len(self.frames), trio.current_time(), data)
                if isinstance(data, str):
                    try:
                        frame.json = json.loads(data)
                    except ValueError:
                        frame.json = None
                self.frames.append(frame)
                self._lot.unpark_all()
        except ConnectionClosed as exc:
            self.closed = exc.reason
        finally:
            if self.closed is None and self.ws.closed is not None:
                self.closed = self.ws.closed
            self.closed_event.set()
            self._lot.unpark_all()


@asynccontextmanager
async def connect(url: str, *, timeout: float = 5.0) -> AsyncIterator[Client]:
    """Open a client connection to the proxy; it is closed (code 1000) when the block ends."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(timeout):
            ws = await connect_websocket_url(nursery, url, message_queue_size=256, max_message_size=16 << 20)
        client = Client(ws)
        nursery.start_soon(client._reader)
        try:
            yield client
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await ws.aclose()
                await client.closed_event.wait()
            nursery.cancel_scope.cancel()
