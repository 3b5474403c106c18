"""OpenAI Realtime GA events as msgspec structs.

Server events (upstream -> proxy) are decoded leniently: every field has a default, because real upstreams and
test upstreams omit ids such as ``event_id``; fields the translator type-checks itself are ``Any``. A frame whose
``type`` is not in the union decodes to :class:`UnknownEvent` instead of failing, so schema drift upstream never
kills a session. The same structs encode events in the simulator (``omit_defaults`` drops unset ids).

Client events (proxy -> upstream) are encoded strictly; the tests validate each kind against the official
``openai.types.realtime.RealtimeClientEvent`` schema.
"""

from __future__ import annotations

import typing
from typing import Any, Final

import msgspec

# ---------------------------------------------------------------------------------------------------------------
# Shared pieces


class ContentPart(msgspec.Struct, omit_defaults=True):
    type: str
    text: str | None = None
    transcript: str | None = None
    audio: str | None = None


class Item(msgspec.Struct, omit_defaults=True):
    """A conversation item as the server reports it. ``content`` stays ``Any``: the reference accepts a single
    part object as well as a list, and skips parts it cannot read."""

    id: Any = None
    type: Any = None
    object: str | None = None
    status: str | None = None
    role: Any = None
    content: Any = None
    call_id: Any = None
    name: Any = None
    arguments: Any = None
    output: Any = None


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    type: Any = None
    code: Any = None
    message: Any = None
    param: Any = None
    event_id: Any = None


class _Event(msgspec.Struct, tag_field="type", omit_defaults=True):
    event_id: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# Server events


class SessionCreated(_Event, tag="session.created"):
    session: Any = None


class SessionUpdated(_Event, tag="session.updated"):
    session: Any = None


class ConversationCreated(_Event, tag="conversation.created"):
    conversation: Any = None


class _ItemEvent(_Event):
    previous_item_id: str | None = None
    item: Item | None = None


class ConversationItemCreated(_ItemEvent, tag="conversation.item.created"):
    pass


class ConversationItemAdded(_ItemEvent, tag="conversation.item.added"):
    pass


class ConversationItemDone(_ItemEvent, tag="conversation.item.done"):
    pass


class ConversationItemRetrieved(_Event, tag="conversation.item.retrieved"):
    item: Item | None = None


class ConversationItemDeleted(_Event, tag="conversation.item.deleted"):
    item_id: str | None = None


class ConversationItemTruncated(_Event, tag="conversation.item.truncated"):
    item_id: str | None = None
    content_index: int | None = None
    audio_end_ms: int | None = None


class InputAudioTranscriptionCompleted(_Event, tag="conversation.item.input_audio_transcription.completed"):
    item_id: Any = None
    content_index: int | None = None
    transcript: Any = None
    alternatives: Any = None
    channel: Any = None
    channel_index: Any = None
    start: Any = None
    duration: Any = None
    usage: Any = None
    logprobs: Any = None


class InputAudioTranscriptionDelta(_Event, tag="conversation.item.input_audio_transcription.delta"):
    item_id: Any = None
    content_index: int | None = None
    delta: Any = None
    channel: Any = None
    channel_index: Any = None
    start: Any = None
    duration: Any = None
    logprobs: Any = None


class InputAudioTranscriptionFailed(_Event, tag="conversation.item.input_audio_transcription.failed"):
    item_id: str | None = None
    content_index: int | None = None
    error: Any = None


class InputAudioTranscriptionSegment(_Event, tag="conversation.item.input_audio_transcription.segment"):
    item_id: str | None = None
    content_index: int | None = None
    id: str | None = None
    text: str | None = None
    speaker: str | None = None
    start: float | None = None
    end: float | None = None


class ErrorEvent(_Event, tag="error"):
    error: ErrorDetail | None = None


class InputAudioBufferCleared(_Event, tag="input_audio_buffer.cleared"):
    pass


class InputAudioBufferCommitted(_Event, tag="input_audio_buffer.committed"):
    previous_item_id: str | None = None
    item_id: str | None = None


class InputAudioBufferDtmfEventReceived(_Event, tag="input_audio_buffer.dtmf_event_received"):
    event: str | None = None
    received_at: int | None = None


class InputAudioBufferSpeechStarted(_Event, tag="input_audio_buffer.speech_started"):
    audio_start_ms: Any = None
    item_id: str | None = None


class InputAudioBufferSpeechStopped(_Event, tag="input_audio_buffer.speech_stopped"):
    audio_end_ms: Any = None
    item_id: str | None = None
    # Not sent by the real API; the reference's test upstream sends them and the reference maps them.
    channel: Any = None
    last_word_end: Any = None


class InputAudioBufferTimeoutTriggered(_Event, tag="input_audio_buffer.timeout_triggered"):
    audio_start_ms: int | None = None
    audio_end_ms: int | None = None
    item_id: str | None = None


class McpListToolsInProgress(_Event, tag="mcp_list_tools.in_progress"):
    item_id: str | None = None


class McpListToolsCompleted(_Event, tag="mcp_list_tools.completed"):
    item_id: str | None = None


class McpListToolsFailed(_Event, tag="mcp_list_tools.failed"):
    item_id: str | None = None


class RateLimitsUpdated(_Event, tag="rate_limits.updated"):
    rate_limits: Any = None


class _ResponsePartEvent(_Event):
    response_id: str | None = None
    item_id: str | None = None
    output_index: int | None = None
    content_index: int | None = None


class ResponseContentPartAdded(_ResponsePartEvent, tag="response.content_part.added"):
    part: Any = None


class ResponseContentPartDone(_ResponsePartEvent, tag="response.content_part.done"):
    part: Any = None


class ResponseCreated(_Event, tag="response.created"):
    response: Any = None


class ResponseDone(_Event, tag="response.done"):
    response: Any = None


class ResponseFunctionCallArgumentsDelta(_Event, tag="response.function_call_arguments.delta"):
    response_id: str | None = None
    item_id: str | None = None
    output_index: int | None = None
    call_id: Any = None
    delta: Any = None


class ResponseFunctionCallArgumentsDone(_Event, tag="response.function_call_arguments.done"):
    response_id: str | None = None
    item_id: str | None = None
    output_index: int | None = None
    call_id: Any = None
    name: Any = None
    arguments: Any = None


class ResponseOutputAudioDelta(_ResponsePartEvent, tag="response.output_audio.delta"):
    # ``bytes``: msgspec decodes (and encodes) base64 in C, the hot path of every TTS chunk.
    delta: bytes = b""


class ResponseOutputAudioDone(_ResponsePartEvent, tag="response.output_audio.done"):
    pass


class ResponseOutputAudioTranscriptDelta(_ResponsePartEvent, tag="response.output_audio_transcript.delta"):
    delta: Any = None


class ResponseOutputAudioTranscriptDone(_ResponsePartEvent, tag="response.output_audio_transcript.done"):
    transcript: Any = None


class ResponseOutputItemAdded(_Event, tag="response.output_item.added"):
    response_id: str | None = None
    output_index: int | None = None
    item: Item | None = None


class ResponseOutputItemDone(_Event, tag="response.output_item.done"):
    response_id: str | None = None
    output_index: int | None = None
    item: Item | None = None


class ResponseOutputTextAdded(_ResponsePartEvent, tag="response.output_text.added"):
    pass


class ResponseOutputTextDelta(_ResponsePartEvent, tag="response.output_text.delta"):
    delta: Any = None


class ResponseOutputTextDone(_ResponsePartEvent, tag="response.output_text.done"):
    text: Any = None
    part: Any = None


class OutputAudioBufferStarted(_Event, tag="output_audio_buffer.started"):
    response_id: str | None = None


class OutputAudioBufferStopped(_Event, tag="output_audio_buffer.stopped"):
    response_id: str | None = None


class OutputAudioBufferCleared(_Event, tag="output_audio_buffer.cleared"):
    response_id: str | None = None


class ResponseMcpCallArgumentsDelta(_Event, tag="response.mcp_call_arguments.delta"):
    response_id: str | None = None
    item_id: str | None = None
    output_index: int | None = None
    delta: str | None = None


class ResponseMcpCallArgumentsDone(_Event, tag="response.mcp_call_arguments.done"):
    response_id: str | None = None
    item_id: str | None = None
    output_index: int | None = None
    arguments: str | None = None


class ResponseMcpCallInProgress(_Event, tag="response.mcp_call.in_progress"):
    item_id: str | None = None
    output_index: int | None = None


class ResponseMcpCallCompleted(_Event, tag="response.mcp_call.completed"):
    item_id: str | None = None
    output_index: int | None = None


class ResponseMcpCallFailed(_Event, tag="response.mcp_call.failed"):
    item_id: str | None = None
    output_index: int | None = None


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | ConversationCreated
    | ConversationItemCreated
    | ConversationItemAdded
    | ConversationItemDone
    | ConversationItemRetrieved
    | ConversationItemDeleted
    | ConversationItemTruncated
    | InputAudioTranscriptionCompleted
    | InputAudioTranscriptionDelta
    | InputAudioTranscriptionFailed
    | InputAudioTranscriptionSegment
    | ErrorEvent
    | InputAudioBufferCleared
    | InputAudioBufferCommitted
    | InputAudioBufferDtmfEventReceived
    | InputAudioBufferSpeechStarted
    | InputAudioBufferSpeechStopped
    | InputAudioBufferTimeoutTriggered
    | McpListToolsInProgress
    | McpListToolsCompleted
    | McpListToolsFailed
    | RateLimitsUpdated
    | ResponseContentPartAdded
    | ResponseContentPartDone
    | ResponseCreated
    | ResponseDone
    | ResponseFunctionCallArgumentsDelta
    | ResponseFunctionCallArgumentsDone
    | ResponseOutputAudioDelta
    | ResponseOutputAudioDone
    | ResponseOutputAudioTranscriptDelta
    | ResponseOutputAudioTranscriptDone
    | ResponseOutputItemAdded
    | ResponseOutputItemDone
    | ResponseOutputTextAdded
    | ResponseOutputTextDelta
    | ResponseOutputTextDone
    | OutputAudioBufferStarted
    | OutputAudioBufferStopped
    | OutputAudioBufferCleared
    | ResponseMcpCallArgumentsDelta
    | ResponseMcpCallArgumentsDone
    | ResponseMcpCallInProgress
    | ResponseMcpCallCompleted
    | ResponseMcpCallFailed
)

SERVER_EVENT_TYPES: Final[frozenset[str]] = frozenset(
    str(cls.__struct_config__.tag) for cls in typing.get_args(ServerEvent)
)


class UnknownEvent(msgspec.Struct):
    """An upstream event whose ``type`` we do not know (or that has none). Logged, never fatal."""

    type: Any = None


class MalformedEvent(Exception):
    """A frame that is not JSON, or a known event whose fields have the wrong types."""


_server_decoder: Final = msgspec.json.Decoder(ServerEvent)
_unknown_decoder: Final = msgspec.json.Decoder(UnknownEvent)


def decode_server_event(data: str | bytes) -> ServerEvent | UnknownEvent:
    """Decode one upstream frame. Raises :class:`MalformedEvent` for non-JSON or mistyped known events."""
    try:
        event: ServerEvent = _server_decoder.decode(data)
    except msgspec.ValidationError as exc:
        try:
            unknown = _unknown_decoder.decode(data)
        except msgspec.MsgspecError:
            raise MalformedEvent("upstream frame is not a JSON object") from exc
        if isinstance(unknown.type, str) and unknown.type in SERVER_EVENT_TYPES:
            raise MalformedEvent(f"malformed {unknown.type} event: {exc}") from exc
        return unknown
    except msgspec.DecodeError as exc:
        raise MalformedEvent("upstream frame is not valid JSON") from exc
    except RecursionError as exc:  # msgspec's answer to absurdly deep nesting
        raise MalformedEvent("upstream frame is nested too deeply") from exc
    return event


# ---------------------------------------------------------------------------------------------------------------
# Client events (proxy -> upstream)


class SessionUpdate(_Event, tag="session.update"):
    # The session object is built by the Settings mapping as plain JSON values (its keys are conditional).
    session: dict[str, Any] = msgspec.field(default_factory=dict)


class InputAudioBufferAppend(_Event, tag="input_audio_buffer.append"):
    audio: bytes = b""  # base64-encoded by msgspec, in C


class InputAudioBufferCommit(_Event, tag="input_audio_buffer.commit"):
    pass


class InputAudioBufferClear(_Event, tag="input_audio_buffer.clear"):
    pass


class ConversationItemCreate(_Event, tag="conversation.item.create"):
    item: dict[str, Any] = msgspec.field(default_factory=dict)
    previous_item_id: str | None = None


class ResponseCreate(_Event, tag="response.create"):
    response: dict[str, Any] | None = None


class ResponseCancel(_Event, tag="response.cancel"):
    response_id: str | None = None


class ConversationItemTruncate(_Event, tag="conversation.item.truncate"):
    item_id: str = ""
    content_index: int = 0
    audio_end_ms: int = 0


class ConversationItemDelete(_Event, tag="conversation.item.delete"):
    item_id: str = ""


class ConversationItemRetrieve(_Event, tag="conversation.item.retrieve"):
    item_id: str = ""


class OutputAudioBufferClear(_Event, tag="output_audio_buffer.clear"):
    pass


ClientEvent = (
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | ConversationItemCreate
    | ResponseCreate
    | ResponseCancel
    | ConversationItemTruncate
    | ConversationItemDelete
    | ConversationItemRetrieve
    | OutputAudioBufferClear
)

client_event_decoder: Final = msgspec.json.Decoder(ClientEvent)
_encoder: Final = msgspec.json.Encoder()


def encode(event: msgspec.Struct) -> str:
    """Compact JSON text for one event (WebSocket text frame)."""
    return _encoder.encode(event).decode()


RESPONSE_CREATE: Final = encode(ResponseCreate())
INPUT_AUDIO_BUFFER_COMMIT: Final = encode(InputAudioBufferCommit())
