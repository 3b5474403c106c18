"""The instrumented upstream: just enough of the OpenAI Realtime GA API and the Deepgram Voice Agent API.

It lives in the benchmark process, so the time a frame arrives here and the time the load generator sent it are
read from the same monotonic clock. Each connection is matched to its benchmark session by the token in the
session's prompt (``session.update`` instructions, or the pass-through Settings), the only client-chosen text every
target forwards.

Served paths: ``/v1/realtime`` (OpenAI) and ``/v1/agent/converse`` (Deepgram Voice Agent). Replies stream 24 kHz
PCM16 at real-time pace (one 100 ms chunk every 100 ms) of speech-like audio (see :mod:`bench.speech`); the
receiver checks every chunk against the one due at its position (see :mod:`bench.streams`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Final

import msgspec
import trio

from .speech import tts_chunks, tts_chunks_base64
from .streams import Phase, SessionRecord
from .wire import (
    SESSION_TOKEN_BYTES_RE,
    TTS_CHUNK_S,
    audio_delta_json,
    realtime_decoder,
    to_text,
    typed_decoder,
)
from .ws import Closed, HandshakeFailed, WebSocket, accept

OPENAI_PATH: Final = "/v1/realtime"
DEEPGRAM_AGENT_PATH: Final = "/v1/agent/converse"
MAX_MESSAGE_BYTES: Final = 16 << 20

_SESSION_CREATED: Final = to_text(
    {"type": "session.created", "event_id": "event_0", "session": {"type": "realtime", "id": "sess_bench"}}
)
_SESSION_UPDATED: Final = to_text(
    {"type": "session.updated", "event_id": "event_1", "session": {"type": "realtime", "id": "sess_bench"}}
)
_WELCOME: Final = to_text({"type": "Welcome", "request_id": "bench"})
_SETTINGS_APPLIED: Final = to_text({"type": "SettingsApplied"})
_AGENT_STARTED_SPEAKING: Final = to_text({"type": "AgentStartedSpeaking"})
_AGENT_AUDIO_DONE: Final = to_text({"type": "AgentAudioDone"})
REPLY_TEXT: Final = "Here is a short spoken answer."


def _item_event(kind: str, item_id: str) -> str:
    return to_text(
        {
            "type": kind,
            "event_id": f"event_{kind}",
            "previous_item_id": None,
            "item": {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_text", "text": "bench turn"}],
            },
        }
    )


class Upstream:
    """The simulated provider. Set :attr:`phase` before each target's sessions connect."""

    def __init__(self, reply_chunks: int) -> None:
        self.phase: Phase | None = None
        self.reply_chunks = reply_chunks
        self.port = 0
        self.live_connections = 0
        self._ids = itertools.count(1)

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        phase = self.phase
        try:
            accepted = await accept(stream, (OPENAI_PATH, DEEPGRAM_AGENT_PATH) if phase is not None else ())
            if accepted is None or phase is None:
                return
            path, ws = accepted
            self.live_connections += 1
            try:
                async with trio.open_nursery() as nursery:
                    try:
                        if path == OPENAI_PATH:
                            await self._realtime(ws, phase, nursery)
                        else:
                            await self._agent(ws, phase, nursery)
                    except Closed:
                        pass
                    nursery.cancel_scope.cancel()
            finally:
                self.live_connections -= 1
                with trio.CancelScope(shield=True):
                    await ws.aclose()
        except (HandshakeFailed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    @staticmethod
    def _match(phase: Phase, message: bytes) -> SessionRecord | None:
        found = SESSION_TOKEN_BYTES_RE.search(message)
        record = phase.sessions.get(found.group(0).decode()) if found else None
        if record is None:
            phase.unmatched_upstream += 1
        else:
            record.upstream_connected = True
        return record

    # -- OpenAI Realtime ----------------------------------------------------------------------------------------

    async def _realtime(self, ws: WebSocket, phase: Phase, nursery: trio.Nursery) -> None:
        await ws.send(_SESSION_CREATED)
        record: SessionRecord | None = None
        while True:
            is_text, message = await ws.receive()
            now = trio.current_time()
            phase.upstream_messages += 1
            if not is_text:
                continue  # not part of the protocol; counted, ignored
            try:
                event = realtime_decoder.decode(message)
            except msgspec.DecodeError:
                phase.malformed += 1
                continue
            kind = event.type
            if kind == "input_audio_buffer.append":
                if record is not None:
                    phase.mic_arrived(record, event.audio, now)
            elif kind == "session.update":
                if record is None:
                    record = self._match(phase, message)
                await ws.send(_SESSION_UPDATED)
            elif kind == "conversation.item.create":
                item_id = (event.item.id if event.item else None) or f"item_up_{next(self._ids)}"
                await ws.send(_item_event("conversation.item.added", item_id))
                await ws.send(_item_event("conversation.item.done", item_id))
            elif kind == "response.create" and record is not None:
                record.responding = True
                nursery.start_soon(self._realtime_reply, ws, phase, record)

    async def _realtime_reply(self, ws: WebSocket, phase: Phase, record: SessionRecord) -> None:
        n = next(self._ids)
        response_id, item_id = f"resp_{n}", f"item_{n}"
        try:
            await ws.send(
                to_text(
                    {
                        "type": "response.created",
                        "event_id": f"event_rc_{n}",
                        "response": {"id": response_id, "object": "realtime.response", "status": "in_progress"},
                    }
                )
            )
            await self._stream(
                ws, phase, record, lambda index: audio_delta_json(tts_chunks_base64()[index], response_id, item_id)
            )
            part = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
            await ws.send(to_text({"type": "response.output_audio.done", "event_id": f"event_ad_{n}", **part}))
            await ws.send(
                to_text(
                    {
                        "type": "response.output_audio_transcript.done",
                        "event_id": f"event_td_{n}",
                        **part,
                        "transcript": REPLY_TEXT,
                    }
                )
            )
            await ws.send(
                to_text(
                    {
                        "type": "response.done",
                        "event_id": f"event_rd_{n}",
                        "response": {"id": response_id, "object": "realtime.response", "status": "completed"},
                    }
                )
            )
        except Closed:
            pass
        finally:
            record.responding = False

    # -- Deepgram Voice Agent -----------------------------------------------------------------------------------

    async def _agent(self, ws: WebSocket, phase: Phase, nursery: trio.Nursery) -> None:
        await ws.send(_WELCOME)
        record: SessionRecord | None = None
        while True:
            is_text, message = await ws.receive()
            now = trio.current_time()
            phase.upstream_messages += 1
            if not is_text:
                if record is not None:
                    phase.mic_arrived(record, message, now)
                continue
            try:
                kind = typed_decoder.decode(message).type
            except msgspec.DecodeError:
                phase.malformed += 1
                continue
            if kind == "Settings":
                if record is None:
                    record = self._match(phase, message)
                await ws.send(_SETTINGS_APPLIED)
            elif kind == "InjectUserMessage" and record is not None:
                record.responding = True
                nursery.start_soon(self._agent_reply, ws, phase, record)

    async def _agent_reply(self, ws: WebSocket, phase: Phase, record: SessionRecord) -> None:
        try:
            await ws.send(to_text({"type": "ConversationText", "role": "user", "content": "bench turn"}))
            await ws.send(_AGENT_STARTED_SPEAKING)
            await ws.send(to_text({"type": "ConversationText", "role": "assistant", "content": REPLY_TEXT}))
            await self._stream(ws, phase, record, lambda index: tts_chunks()[index])
            await ws.send(_AGENT_AUDIO_DONE)
        except Closed:
            pass
        finally:
            record.responding = False

    # -- shared -------------------------------------------------------------------------------------------------

    async def _stream(
        self,
        ws: WebSocket,
        phase: Phase,
        record: SessionRecord,
        frame_of: Callable[[int], str | bytes],
    ) -> None:
        """Send the reply's audio chunks open-loop at real-time pace, timestamping each right before its send."""
        start = trio.current_time()
        stream = record.tts
        for k in range(self.reply_chunks):
            due = start + k * TTS_CHUNK_S
            await trio.sleep_until(due)
            frame = frame_of(stream.next_index() % len(tts_chunks()))
            now = trio.current_time()
            phase.note_lag(now - due)
            stream.mark_sent(now)
            await ws.send(frame)
