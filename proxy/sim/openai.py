"""A simulated OpenAI Realtime (GA) server: one :class:`RealtimeSimulator` per WebSocket connection.

The simulator is a plain state machine: it is fed client frames and returns the JSON frames to send. A response
is a :class:`ResponseRun` whose events carry an offset in seconds from the start of the response; the caller
paces them (audio in real time, scaled by a speed factor) and stops early when the run is cancelled. It speaks
the GA event schema: every event has an ``event_id`` and the ids the schema requires.

Behaviour, in short: ``session.update`` is validated and merged into the effective session; items are echoed
with ``conversation.item.added``/``.done``; ``response.create`` answers "You said: <words>." (as audio with a
transcript, or as text when the output modality is text), or calls a tool the user names; server VAD finds
utterances in appended audio, commits them, transcribes them (deterministically, from their duration) and
creates the response; errors carry the real API's codes and message texts.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from ..protocol import openai as oa
from . import replies, synth

RATE: Final = 24_000
CHUNK_MS: Final = 100  # audio per response.output_audio.delta
MIN_COMMIT_BYTES: Final = RATE * 2 // 10  # 100 ms
MAX_APPEND_BYTES: Final = 15 * 1024 * 1024
MAX_BUFFER_BYTES: Final = RATE * 2 * 600  # keep at most the last 10 minutes of uncommitted audio
DEFAULT_INSTRUCTIONS: Final = "You are a helpful, witty, and friendly AI. Keep your answers short."
SERVER_VAD_DEFAULTS: Final[dict[str, Any]] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 200,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
CLIENT_EVENT_TYPES: Final = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)
_SESSION_KEYS: Final = frozenset(
    {
        "type",
        "model",
        "instructions",
        "output_modalities",
        "audio",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "tracing",
        "prompt",
        "truncation",
        "include",
        "parallel_tool_calls",
        "reasoning",
    }
)
_MISSING: Final = "missing_required_parameter"
_json_encoder: Final = msgspec.json.Encoder()
_connection_ids = itertools.count(1)


class InvalidRequest(Exception):
    """A client event the real API would refuse; becomes an ``error`` event."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def _quote_list(values: tuple[str, ...] | list[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return (
        quoted[0]
        if len(quoted) == 1
        else ", ".join(quoted[:-1]) + (", and " if len(quoted) > 2 else " and ") + quoted[-1]
    )


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _expect(value: object, kinds: tuple[type, ...], param: str, expected: str) -> None:
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise InvalidRequest(
            "invalid_type",
            f"Invalid type for '{param}': expected {expected}, but got {_json_kind(value)} instead.",
            param,
        )


def _one_of(value: object, allowed: tuple[str, ...], param: str) -> None:
    if value not in allowed:
        raise InvalidRequest(
            "invalid_value", f"Invalid value: '{value}'. Supported values are: {_quote_list(allowed)}.", param
        )


def _no_unknown(obj: dict[str, Any], known: frozenset[str] | set[str], prefix: str) -> None:
    for key in obj:
        if key not in known:
            raise InvalidRequest("unknown_parameter", f"Unknown parameter: '{prefix}.{key}'.", f"{prefix}.{key}")


def _number_in(value: object, low: float, high: float, param: str) -> None:
    _expect(value, (int, float), param, "a number")
    assert isinstance(value, int | float)
    if not low <= value <= high:
        raise InvalidRequest(
            "decimal_out_of_range" if isinstance(value, float) else "integer_out_of_range",
            f"Invalid '{param}': number must be between {low:g} and {high:g}, got {value}.",
            param,
        )


def validate_session(session: object) -> dict[str, Any]:
    """Check a ``session.update`` payload the way the GA API does; returns it or raises :class:`InvalidRequest`."""
    if not isinstance(session, dict):
        raise InvalidRequest(_MISSING, "Missing required parameter: 'session'.", "session")
    if "type" not in session:
        raise InvalidRequest(_MISSING, "Missing required parameter: 'session.type'.", "session.type")
    _one_of(session["type"], ("realtime",), "session.type")
    _no_unknown(session, _SESSION_KEYS, "session")
    if "instructions" in session:
        _expect(session["instructions"], (str,), "session.instructions", "a string")
    if "model" in session:
        _expect(session["model"], (str,), "session.model", "a string")
    if "output_modalities" in session:
        modalities = session["output_modalities"]
        _expect(modalities, (list,), "session.output_modalities", "an array")
        for i, m in enumerate(modalities):
            _one_of(m, ("text", "audio"), f"session.output_modalities[{i}]")
        if sorted(set(modalities)) != sorted(modalities) or len(modalities) != 1:
            raise InvalidRequest(
                "invalid_value",
                f"Invalid modalities: {modalities}. Supported combinations are: ['text'] and ['audio'].",
                "session.output_modalities",
            )
    if "max_output_tokens" in session and session["max_output_tokens"] != "inf":
        value = session["max_output_tokens"]
        _expect(value, (int,), "session.max_output_tokens", "an integer")
        _number_in(value, 1, 4096, "session.max_output_tokens")
    if "tools" in session:
        tools = session["tools"]
        _expect(tools, (list,), "session.tools", "an array")
        for i, tool in enumerate(tools):
            param = f"session.tools[{i}]"
            _expect(tool, (dict,), param, "an object")
            _one_of(tool.get("type", "function"), ("function", "mcp"), f"{param}.type")
            if tool.get("type", "function") == "function":
                if not isinstance(tool.get("name"), str) or not tool["name"]:
                    raise InvalidRequest(_MISSING, f"Missing required parameter: '{param}.name'.", f"{param}.name")
                _no_unknown(tool, {"type", "name", "description", "parameters"}, param)
    if "tool_choice" in session:
        choice = session["tool_choice"]
        if isinstance(choice, str):
            _one_of(choice, ("none", "auto", "required"), "session.tool_choice")
        else:
            _expect(choice, (dict,), "session.tool_choice", "a string or an object")
    if "audio" in session:
        _validate_audio(session["audio"])
    return session


def _validate_audio(audio: object) -> None:
    _expect(audio, (dict,), "session.audio", "an object")
    assert isinstance(audio, dict)
    _no_unknown(audio, {"input", "output"}, "session.audio")
    source = audio.get("input")
    if source is not None:
        _expect(source, (dict,), "session.audio.input", "an object")
        _no_unknown(source, {"format", "transcription", "noise_reduction", "turn_detection"}, "session.audio.input")
        fmt = source.get("format")
        if fmt is not None:
            _expect(fmt, (dict,), "session.audio.input.format", "an object")
            _one_of(fmt.get("type"), ("audio/pcm", "audio/pcmu", "audio/pcma"), "session.audio.input.format.type")
            if fmt.get("type") == "audio/pcm" and fmt.get("rate", RATE) != RATE:
                _one_of(str(fmt.get("rate")), (str(RATE),), "session.audio.input.format.rate")
        turn = source.get("turn_detection")
        if turn is not None:
            p = "session.audio.input.turn_detection"
            _expect(turn, (dict,), p, "an object")
            _one_of(turn.get("type"), ("server_vad", "semantic_vad"), f"{p}.type")
            _no_unknown(
                turn,
                {
                    "type",
                    "threshold",
                    "prefix_padding_ms",
                    "silence_duration_ms",
                    "idle_timeout_ms",
                    "create_response",
                    "interrupt_response",
                    "eagerness",
                },
                p,
            )
            if "threshold" in turn:
                _number_in(turn["threshold"], 0, 1, f"{p}.threshold")
            for key in ("prefix_padding_ms", "silence_duration_ms"):
                if key in turn:
                    _expect(turn[key], (int,), f"{p}.{key}", "an integer")
            if turn.get("idle_timeout_ms") is not None:
                _expect(turn["idle_timeout_ms"], (int,), f"{p}.idle_timeout_ms", "an integer")
                _number_in(turn["idle_timeout_ms"], 5000, 30000, f"{p}.idle_timeout_ms")
            for key in ("create_response", "interrupt_response"):
                if key in turn:
                    _expect(turn[key], (bool,), f"{p}.{key}", "a boolean")
        transcription = source.get("transcription")
        if transcription is not None:
            _expect(transcription, (dict,), "session.audio.input.transcription", "an object")
    sink = audio.get("output")
    if sink is not None:
        _expect(sink, (dict,), "session.audio.output", "an object")
        _no_unknown(sink, {"format", "voice", "speed"}, "session.audio.output")
        if "speed" in sink:
            _number_in(sink["speed"], 0.25, 1.5, "session.audio.output.speed")


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if key == "turn_detection" and isinstance(value, dict):
            out[key] = {**SERVER_VAD_DEFAULTS, **value}
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and key in ("audio", "input", "output"):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class ResponseRun:
    """One response being produced. ``events`` yields (offset seconds from the start, frame)."""

    id: str
    events: Iterator[tuple[float, str]]
    cancelled: bool = False
    finished: bool = False
    item: dict[str, Any] | None = None
    output: list[dict[str, Any]] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    #: (text, rate) of the reply's audio: the shell renders it (:mod:`proxy.sim.speech`) into :attr:`pcm` before
    #: streaming; left None, the events use the tones of :func:`proxy.sim.synth.speak`.
    speech: tuple[str, int] | None = None
    pcm: bytes | None = None


class RealtimeSimulator:
    """The state of one simulated Realtime session (see the module docstring)."""

    def __init__(self, *, model: str = "gpt-realtime", expires_at: int = 0) -> None:
        self._conn = next(_connection_ids)
        self._counter = itertools.count(1)
        self.session: dict[str, Any] = {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.new_id("sess"),
            "model": model,
            "output_modalities": ["audio"],
            "instructions": DEFAULT_INSTRUCTIONS,
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "prompt": None,
            "expires_at": expires_at,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": dict(SERVER_VAD_DEFAULTS),
                },
                "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": "marin", "speed": 1.0},
            },
            "include": None,
        }
        self.conversation_id = self.new_id("conv")
        self.items: list[dict[str, Any]] = []
        self.transcripts: dict[str, str] = {}  # user audio item id -> what the "model" heard
        self.speech_ms: dict[str, float] = {}  # user audio item id -> length of its speech
        self.buffer = bytearray()
        self.vad: synth.EnergyVad | None = None
        self.speech_item_id: str | None = None
        self.active: ResponseRun | None = None
        #: Runs created by the last call, for the caller to stream (and cleared by it).
        self.new_runs: list[ResponseRun] = []

    # -- ids and encoding ------------------------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_sim{self._conn}x{next(self._counter):05d}"

    def event(self, type_: str, **fields: Any) -> str:
        return _json_encoder.encode({"type": type_, "event_id": self.new_id("event"), **fields}).decode()

    def error(self, code: str | None, message: str, param: str | None = None, event_id: str | None = None) -> str:
        detail = {"type": "invalid_request_error", "code": code, "message": message, "param": param}
        return self.event("error", error={**detail, "event_id": event_id})

    # -- inputs ----------------------------------------------------------------------------------------------

    def start(self) -> list[str]:
        """The frames sent when the connection opens."""
        return [self.event("session.created", session=self.session)]

    def expired(self, max_seconds: float) -> str:
        """The error the API sends when a session reaches its maximum duration (the caller then closes)."""
        if max_seconds >= 60 and max_seconds % 60 == 0:
            n = int(max_seconds // 60)
            span = f"{n} minute" + ("s" if n != 1 else "")
        else:
            span = f"{max_seconds:g} seconds"
        return self.error("session_expired", f"Your session hit the maximum duration of {span}.")

    def handle_binary(self, data: bytes) -> list[str]:
        return [
            self.error(
                "invalid_json",
                "We could not parse the JSON body of your request. Binary frames are not supported; send JSON events.",
            )
        ]

    def handle_text(self, text: str) -> list[str]:
        """One client text frame: returns the frames to send (responses go to :attr:`new_runs`)."""
        try:
            message = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return [
                self.error(
                    "invalid_json",
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
                    "valid JSON.)",
                )
            ]
        event_id = message.get("event_id") if isinstance(message, dict) else None
        event_id = event_id if isinstance(event_id, str) else None
        try:
            if not isinstance(message, dict):
                raise InvalidRequest("invalid_type", "Invalid type for event: expected an object.", None)
            kind = message.get("type")
            if kind is None:
                raise InvalidRequest(_MISSING, "Missing required parameter: 'type'.", "type")
            if kind not in CLIENT_EVENT_TYPES:
                _one_of(kind, CLIENT_EVENT_TYPES, "type")
            handler = getattr(self, "_on_" + str(kind).replace(".", "_"))
            out: list[str] = handler(message)
            return out
        except InvalidRequest as exc:
            return [self.error(exc.code, exc.message, exc.param, event_id)]

    # -- client events ---------------------------------------------------------------------------------------

    def _on_session_update(self, message: dict[str, Any]) -> list[str]:
        update = validate_session(message.get("session"))
        update = {k: v for k, v in update.items() if k != "type"}
        session = _merge(self.session, update)
        turn = session["audio"]["input"]["turn_detection"]
        if turn is None:
            self.vad = None
        elif self.vad is None or turn != self.session["audio"]["input"]["turn_detection"]:
            self.vad = synth.EnergyVad(RATE, threshold=turn["threshold"], silence_ms=turn["silence_duration_ms"])
        self.session = session
        return [self.event("session.updated", session=self.session)]

    def _on_input_audio_buffer_append(self, message: dict[str, Any]) -> list[str]:
        audio = message.get("audio")
        if not isinstance(audio, str):
            raise InvalidRequest(_MISSING, "Missing required parameter: 'audio'.", "audio")
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(
                "invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.", "audio"
            ) from None
        if len(pcm) > MAX_APPEND_BYTES:
            raise InvalidRequest("invalid_value", "Audio chunk exceeds the maximum size of 15 MiB.", "audio")
        if self.vad is None and self.session["audio"]["input"]["turn_detection"] is not None:
            turn = self.session["audio"]["input"]["turn_detection"]
            self.vad = synth.EnergyVad(RATE, threshold=turn["threshold"], silence_ms=turn["silence_duration_ms"])
        self.buffer += pcm
        if len(self.buffer) > MAX_BUFFER_BYTES:
            del self.buffer[: len(self.buffer) - MAX_BUFFER_BYTES]
        if self.vad is None:
            return []
        out: list[str] = []
        for vad_event in self.vad.feed(pcm):
            turn = self.session["audio"]["input"]["turn_detection"]
            if vad_event.kind == "start":
                self.speech_item_id = self.new_id("item")
                # The API reports where the audio given to the model starts: the prefix padding included.
                start_ms = max(0, int(vad_event.ms) - int(turn["prefix_padding_ms"]))
                started = self.event(
                    "input_audio_buffer.speech_started", audio_start_ms=start_ms, item_id=self.speech_item_id
                )
                out.append(started)
                if self.active is not None and turn.get("interrupt_response", True):
                    out += self.cancel(reason="turn_detected")
            else:
                item_id = self.speech_item_id or self.new_id("item")
                self.speech_item_id = None
                out.append(
                    self.event("input_audio_buffer.speech_stopped", audio_end_ms=int(vad_event.ms), item_id=item_id)
                )
                out += self._commit(item_id, vad_event.ms - turn["silence_duration_ms"] - self.vad.speech_start_ms)
                if turn.get("create_response", True) and self.active is None:
                    self._start_response({})
        if not self.vad.speaking:
            # Between utterances only the prefix padding is kept for the next one, as a server VAD does.
            keep = RATE * 2 * int(self.session["audio"]["input"]["turn_detection"]["prefix_padding_ms"]) // 1000
            if len(self.buffer) > keep:
                del self.buffer[: len(self.buffer) - keep]
        return out

    def _on_input_audio_buffer_commit(self, message: dict[str, Any]) -> list[str]:
        if len(self.buffer) < MIN_COMMIT_BYTES:
            ms = synth.duration_ms(len(self.buffer), RATE)
            raise InvalidRequest(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {ms:.2f}ms of audio.",
            )
        item_id = self.speech_item_id or self.new_id("item")
        self.speech_item_id = None
        return self._commit(item_id)

    def _on_input_audio_buffer_clear(self, message: dict[str, Any]) -> list[str]:
        self.buffer.clear()
        return [self.event("input_audio_buffer.cleared")]

    def _commit(self, item_id: str, speech_ms: float | None = None) -> list[str]:
        """Commit the buffer as a user item; ``speech_ms`` is the utterance's length when the VAD found it."""
        speech_ms = speech_ms if speech_ms is not None else synth.duration_ms(len(self.buffer), RATE)
        self.speech_ms[item_id] = speech_ms
        heard = synth.transcript_for(speech_ms)
        seconds = round(synth.duration_ms(len(self.buffer), RATE) / 1000, 3)
        self.buffer.clear()
        self.transcripts[item_id] = heard
        previous = self.items[-1]["id"] if self.items else None
        transcription = self.session["audio"]["input"]["transcription"]
        item: dict[str, Any] = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self.items.append(item)
        out = [
            self.event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id),
            self.event("conversation.item.added", previous_item_id=previous, item=item),
            self.event("conversation.item.done", previous_item_id=previous, item=item),
        ]
        if transcription is not None:
            out += [
                self.event(
                    "conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0, delta=d
                )
                for d in synth.split_text(heard)
            ]
            item["content"] = [{"type": "input_audio", "transcript": heard}]
            out.append(
                self.event(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=item_id,
                    content_index=0,
                    transcript=heard,
                    usage={"type": "duration", "seconds": seconds},
                )
            )
        return out

    def _on_conversation_item_create(self, message: dict[str, Any]) -> list[str]:
        raw = message.get("item")
        if not isinstance(raw, dict):
            raise InvalidRequest(_MISSING, "Missing required parameter: 'item'.", "item")
        item = self._validate_item(raw)
        previous = self.items[-1]["id"] if self.items else None
        self.items.append(item)
        return [
            self.event("conversation.item.added", previous_item_id=previous, item=item),
            self.event("conversation.item.done", previous_item_id=previous, item=item),
        ]

    def _validate_item(self, raw: dict[str, Any]) -> dict[str, Any]:
        kind = raw.get("type", "message")
        _one_of(kind, ("message", "function_call", "function_call_output"), "item.type")
        item_id = raw.get("id")
        if item_id is not None:
            _expect(item_id, (str,), "item.id", "a string")
            if any(existing["id"] == item_id for existing in self.items):
                raise InvalidRequest("item_id_already_exists", f"Item with id '{item_id}' already exists.", "item.id")
        item: dict[str, Any] = {"id": item_id or self.new_id("item"), "type": kind, "object": "realtime.item"}
        item["status"] = "completed"
        if kind == "message":
            role = raw.get("role")
            if role is None:
                raise InvalidRequest(_MISSING, "Missing required parameter: 'item.role'.", "item.role")
            _one_of(role, ("user", "assistant", "system"), "item.role")
            content = raw.get("content")
            if content is None:
                raise InvalidRequest(_MISSING, "Missing required parameter: 'item.content'.", "item.content")
            _expect(content, (list,), "item.content", "an array")
            allowed = {
                "user": ("input_text", "input_audio", "input_image"),
                "system": ("input_text",),
                "assistant": ("output_text", "output_audio"),
            }[role]
            parts = []
            for i, part in enumerate(content):
                _expect(part, (dict,), f"item.content[{i}]", "an object")
                _one_of(part.get("type"), allowed, f"item.content[{i}].type")
                if part["type"] in ("input_text", "output_text"):
                    _expect(part.get("text"), (str,), f"item.content[{i}].text", "a string")
                copy = dict(part)
                if copy["type"] == "input_audio":  # the server never echoes audio bytes back
                    copy.pop("audio", None)
                    copy.setdefault("transcript", None)
                parts.append(copy)
            item["role"] = role
            item["content"] = parts
        elif kind == "function_call_output":
            for key in ("call_id", "output"):
                if not isinstance(raw.get(key), str):
                    raise InvalidRequest(_MISSING, f"Missing required parameter: 'item.{key}'.", f"item.{key}")
            item["call_id"] = raw["call_id"]
            item["output"] = raw["output"]
        else:
            for key in ("name", "arguments"):
                if not isinstance(raw.get(key), str):
                    raise InvalidRequest(_MISSING, f"Missing required parameter: 'item.{key}'.", f"item.{key}")
            item["name"] = raw["name"]
            item["arguments"] = raw["arguments"]
            item["call_id"] = raw.get("call_id") if isinstance(raw.get("call_id"), str) else self.new_id("call")
        return item

    def _find(self, message: dict[str, Any]) -> dict[str, Any]:
        item_id = message.get("item_id")
        if not isinstance(item_id, str):
            raise InvalidRequest(_MISSING, "Missing required parameter: 'item_id'.", "item_id")
        for item in self.items:
            if item["id"] == item_id:
                return item
        raise InvalidRequest("item_not_found", f"Item with item_id not found: {item_id}", "item_id")

    def _on_conversation_item_retrieve(self, message: dict[str, Any]) -> list[str]:
        return [self.event("conversation.item.retrieved", item=self._find(message))]

    def _on_conversation_item_delete(self, message: dict[str, Any]) -> list[str]:
        item = self._find(message)
        self.items.remove(item)
        return [self.event("conversation.item.deleted", item_id=item["id"])]

    def _on_conversation_item_truncate(self, message: dict[str, Any]) -> list[str]:
        item = self._find(message)
        end = message.get("audio_end_ms")
        _expect(end, (int,), "audio_end_ms", "an integer")
        index = message.get("content_index", 0)
        _expect(index, (int,), "content_index", "an integer")
        return [self.event("conversation.item.truncated", item_id=item["id"], content_index=index, audio_end_ms=end)]

    def _on_output_audio_buffer_clear(self, message: dict[str, Any]) -> list[str]:
        raise InvalidRequest(
            "invalid_value", "output_audio_buffer.clear is only supported for WebRTC and SIP connections.", "type"
        )

    def _on_response_cancel(self, message: dict[str, Any]) -> list[str]:
        if self.active is None:
            raise InvalidRequest("response_cancel_not_active", "Cancellation failed: no active response found")
        return self.cancel(reason="client_cancelled")

    def _on_response_create(self, message: dict[str, Any]) -> list[str]:
        if self.active is not None:
            raise InvalidRequest(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self.active.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        params = message.get("response")
        if params is not None:
            _expect(params, (dict,), "response", "an object")
            if "output_modalities" in params:
                modalities = params["output_modalities"]
                _expect(modalities, (list,), "response.output_modalities", "an array")
                for i, m in enumerate(modalities):
                    _one_of(m, ("text", "audio"), f"response.output_modalities[{i}]")
        self._start_response(params or {})
        return []

    # -- responses -------------------------------------------------------------------------------------------

    def cancel(self, *, reason: str) -> list[str]:
        """Cancel the active response: the frames that close it (the caller stops streaming it)."""
        run = self.active
        if run is None:
            return []
        run.cancelled = True
        self.active = None
        out: list[str] = []
        if run.item is not None:
            run.item["status"] = "incomplete"
            out.append(self.event("response.output_item.done", response_id=run.id, output_index=0, item=run.item))
            out.append(self.event("conversation.item.done", item=run.item))
        out.append(self.event("response.done", response=self._response(run, "cancelled", reason=reason)))
        return out

    def _response(self, run: ResponseRun, status: str, *, reason: str | None = None, usage: Any = None) -> Any:
        details: dict[str, Any] | None = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": reason}
        return {
            "object": "realtime.response",
            "id": run.id,
            "status": status,
            "status_details": details,
            "output": run.output,
            "conversation_id": self.conversation_id,
            "output_modalities": run.modalities,
            "max_output_tokens": self.session["max_output_tokens"],
            "audio": {"output": self.session["audio"]["output"]},
            "usage": usage,
            "metadata": None,
        }

    def _conversation(self) -> list[replies.UserTurn]:
        """The user's turns so far: typed text, or the length of a spoken turn."""
        turns = []
        for item in self.items:
            if item.get("type") != "message" or item.get("role") != "user":
                continue
            speech = [
                self.speech_ms[item["id"]]
                for p in item.get("content", [])
                if p.get("type") == "input_audio" and item["id"] in self.speech_ms
            ]
            if speech:
                turns.append(replies.UserTurn(speech_ms=speech[0]))
            else:
                texts = [p.get("text") or "" for p in item.get("content", []) if p.get("type") == "input_text"]
                turns.append(replies.UserTurn(text=" ".join(t for t in texts if t)))
        return turns

    def _last_user_text(self) -> str:
        for item in reversed(self.items):
            if item.get("type") == "message" and item.get("role") == "user":
                texts = []
                for part in item.get("content", []):
                    if part.get("type") == "input_text":
                        texts.append(part.get("text") or "")
                    elif part.get("type") == "input_audio":
                        texts.append(part.get("transcript") or self.transcripts.get(item["id"], ""))
                return " ".join(t for t in texts if t)
        return ""

    def _plan(self, params: dict[str, Any]) -> tuple[str, Any]:
        """What the "model" does: ("call", function), ("say", text)."""
        last = self.items[-1] if self.items else None
        if last is not None and last.get("type") == "function_call_output":
            return "say", synth.reply_to_tool(str(last.get("output", "")))
        text = self._last_user_text()
        tools = params.get("tools", self.session.get("tools")) or []
        choice = params.get("tool_choice", self.session.get("tool_choice", "auto"))
        functions = [t for t in tools if isinstance(t, dict) and t.get("type", "function") == "function"]
        if last is not None and last.get("role") == "user" and functions and choice != "none":
            if isinstance(choice, dict) and choice.get("type") == "function":
                forced = [f for f in functions if f.get("name") == choice.get("name")]
                if forced:
                    return "call", forced[0]
            function = synth.named_function(text, functions)
            if function is None and choice == "required":
                function = functions[0]
            if function is not None:
                return "call", function
        if not text and (last is None or last.get("role") != "user"):
            return "say", "How can I help you?"
        return "say", replies.answer(self._conversation())

    def _start_response(self, params: dict[str, Any]) -> ResponseRun:
        modalities = params.get("output_modalities") or self.session["output_modalities"]
        run = ResponseRun(id=self.new_id("resp"), events=iter(()), modalities=list(modalities))
        action, what = self._plan(params)
        if action == "call":
            run.events = self._function_call_events(run, what, self._last_user_text())
        else:
            run.events = self._message_events(run, what, audio="audio" in modalities)
            if "audio" in modalities:
                run.speech = (what, RATE)
        self.active = run
        self.new_runs.append(run)
        return run

    def _finish(self, run: ResponseRun, usage: dict[str, Any]) -> str:
        run.finished = True
        if self.active is run:
            self.active = None
        return self.event("response.done", response=self._response(run, "completed", usage=usage))

    def _usage(self, out_text: str, audio_ms: float) -> dict[str, Any]:
        input_text = sum(len(str(i.get("content", i.get("output", "")))) // 4 + 1 for i in self.items)
        text_out = len(out_text) // 4 + 1
        audio_out = int(audio_ms // 50)
        return {
            "total_tokens": input_text + text_out + audio_out,
            "input_tokens": input_text,
            "output_tokens": text_out + audio_out,
            "input_token_details": {
                "text_tokens": input_text,
                "audio_tokens": 0,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }

    def _open_item(self, run: ResponseRun, item: dict[str, Any]) -> list[str]:
        previous = self.items[-1]["id"] if self.items else None
        run.item = item
        run.output.append(item)
        self.items.append(item)
        return [
            self.event("response.output_item.added", response_id=run.id, output_index=0, item=item),
            self.event("conversation.item.added", previous_item_id=previous, item=item),
        ]

    def _function_call_events(
        self, run: ResponseRun, function: dict[str, Any], user_text: str
    ) -> Iterator[tuple[float, str]]:
        yield 0.0, self.event("response.created", response=self._response(run, "in_progress"))
        call_id = self.new_id("call")
        item_id = self.new_id("item")
        arguments = synth.arguments_for(function, user_text)
        item: dict[str, Any] = {
            "id": item_id,
            "type": "function_call",
            "object": "realtime.item",
            "status": "in_progress",
            "name": function["name"],
            "call_id": call_id,
            "arguments": "",
        }
        for frame in self._open_item(run, item):
            yield 0.0, frame
        ids = {"response_id": run.id, "item_id": item_id, "output_index": 0, "call_id": call_id}
        for delta in synth.split_text(arguments, 16):
            yield 0.0, self.event("response.function_call_arguments.delta", **ids, delta=delta)
        yield (
            0.0,
            self.event("response.function_call_arguments.done", **ids, name=function["name"], arguments=arguments),
        )
        item["status"] = "completed"
        item["arguments"] = arguments
        yield 0.0, self.event("response.output_item.done", response_id=run.id, output_index=0, item=item)
        yield 0.0, self.event("conversation.item.done", item=item)
        yield 0.0, self._finish(run, self._usage(arguments, 0))

    def _message_events(self, run: ResponseRun, text: str, *, audio: bool) -> Iterator[tuple[float, str]]:
        yield 0.0, self.event("response.created", response=self._response(run, "in_progress"))
        item_id = self.new_id("item")
        item: dict[str, Any] = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        for frame in self._open_item(run, item):
            yield 0.0, frame
        ids = {"response_id": run.id, "item_id": item_id, "output_index": 0, "content_index": 0}
        deltas = synth.split_text(text)
        audio_ms = 0.0
        if audio:
            yield 0.0, self.event("response.content_part.added", **ids, part={"type": "audio", "transcript": ""})
            pcm = run.pcm if run.pcm is not None else synth.speak(text, RATE)
            audio_ms = synth.duration_ms(len(pcm), RATE)
            pieces = synth.chunks(pcm, RATE, CHUNK_MS)
            sent = 0
            for i, piece in enumerate(pieces):
                offset = i * CHUNK_MS / 1000
                # Spread the transcript over the audio, ahead of the speech as the real API does.
                due = min(len(deltas), (i + 1) * len(deltas) // len(pieces) + 1)
                while sent < due:
                    yield offset, self.event("response.output_audio_transcript.delta", **ids, delta=deltas[sent])
                    sent += 1
                frame = oa.encode(
                    oa.ResponseOutputAudioDelta(
                        event_id=self.new_id("event"),
                        response_id=run.id,
                        item_id=item_id,
                        output_index=0,
                        content_index=0,
                        delta=piece,
                    )
                )
                yield offset, frame
            end = audio_ms / 1000
            yield end, self.event("response.output_audio.done", **ids)
            yield end, self.event("response.output_audio_transcript.done", **ids, transcript=text)
            part = {"type": "audio", "transcript": text}
            yield end, self.event("response.content_part.done", **ids, part=part)
            item["content"] = [{"type": "output_audio", "transcript": text}]
        else:
            yield 0.0, self.event("response.content_part.added", **ids, part={"type": "text", "text": ""})
            for delta in deltas:
                yield 0.0, self.event("response.output_text.delta", **ids, delta=delta)
            yield 0.0, self.event("response.output_text.done", **ids, text=text)
            yield 0.0, self.event("response.content_part.done", **ids, part={"type": "text", "text": text})
            item["content"] = [{"type": "output_text", "text": text}]
        end = audio_ms / 1000
        item["status"] = "completed"
        yield end, self.event("response.output_item.done", response_id=run.id, output_index=0, item=item)
        yield end, self.event("conversation.item.done", item=item)
        yield end, self._finish(run, self._usage(text, audio_ms))
