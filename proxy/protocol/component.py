"""The voice-agent component's protocol (Deepgram Voice Agent v1 as the component speaks it).

Client -> proxy messages are decoded leniently: the reference reads fields with JavaScript truthiness and
type checks, so fields whose type is not guaranteed are typed ``Any`` and checked where they are used.
Proxy -> client messages are encoded strictly, with the tag (``type``) first and keys in the reference's order.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

# ---------------------------------------------------------------------------------------------------------------
# Client -> proxy


class Settings(msgspec.Struct, tag="Settings", tag_field="type"):
    audio: Any = None
    agent: Any = None


class InjectUserMessage(msgspec.Struct, tag="InjectUserMessage", tag_field="type"):
    content: Any = None


class FunctionCallResponse(msgspec.Struct, tag="FunctionCallResponse", tag_field="type"):
    # ``content`` is the component's shape; ``result``/``error`` the alternative one. UNSET tells "missing"
    # apart from JSON null where the reference cares (a missing ``id`` drops ``call_id`` altogether).
    id: Any = msgspec.UNSET
    name: Any = None
    content: Any = None
    result: Any = None
    error: Any = None


class KeepAlive(msgspec.Struct, tag="KeepAlive", tag_field="type"):
    pass


ClientMessage = Settings | InjectUserMessage | FunctionCallResponse | KeepAlive

#: The client JSON types the OpenAI translator accepts, in the reference's order.
LEGAL_CLIENT_TYPES: Final = ("Settings", "InjectUserMessage", "FunctionCallResponse", "KeepAlive")
TRANSLATED_CLIENT_TYPES: Final = LEGAL_CLIENT_TYPES[:3]


class Envelope(msgspec.Struct):
    """Just enough of any JSON object to read its ``type`` (which may be absent or not a string)."""

    type: Any = None


# ---------------------------------------------------------------------------------------------------------------
# Proxy -> client (and Deepgram agent -> client, for the simulators)


class Welcome(msgspec.Struct, tag="Welcome", tag_field="type"):
    request_id: str


class SettingsApplied(msgspec.Struct, tag="SettingsApplied", tag_field="type"):
    pass


class ConversationText(msgspec.Struct, tag="ConversationText", tag_field="type"):
    role: str
    content: str


class AgentThinking(msgspec.Struct, tag="AgentThinking", tag_field="type"):
    content: str = ""


class AgentStartedSpeaking(msgspec.Struct, tag="AgentStartedSpeaking", tag_field="type", omit_defaults=True):
    total_latency: float | None = None
    tts_latency: float | None = None
    ttt_latency: float | None = None


class AgentDone(msgspec.Struct, tag="AgentDone", tag_field="type"):
    pass


class AgentAudioDone(msgspec.Struct, tag="AgentAudioDone", tag_field="type"):
    pass


class FunctionCall(msgspec.Struct):
    id: str
    name: str
    arguments: str
    client_side: bool = True


class FunctionCallRequest(msgspec.Struct, tag="FunctionCallRequest", tag_field="type"):
    functions: list[FunctionCall]


class UserStartedSpeaking(msgspec.Struct, tag="UserStartedSpeaking", tag_field="type"):
    pass


class UtteranceEnd(msgspec.Struct, tag="UtteranceEnd", tag_field="type"):
    channel: list[Any]
    last_word_end: float


class TranscriptAlternative(msgspec.Struct):
    transcript: str
    confidence: float = 1
    words: list[Any] = msgspec.field(default_factory=list)


class Transcript(msgspec.Struct, tag="Transcript", tag_field="type"):
    transcript: str
    is_final: bool
    speech_final: bool
    channel: Any
    channel_index: list[Any]
    start: float
    duration: float
    alternatives: list[TranscriptAlternative]


class Error(msgspec.Struct, tag="Error", tag_field="type"):
    description: str
    code: str


class Warning(msgspec.Struct, tag="Warning", tag_field="type"):
    description: str
    code: str


class PromptUpdated(msgspec.Struct, tag="PromptUpdated", tag_field="type"):
    pass


ServerMessage = (
    Welcome
    | SettingsApplied
    | ConversationText
    | AgentThinking
    | AgentStartedSpeaking
    | AgentDone
    | AgentAudioDone
    | FunctionCallRequest
    | UserStartedSpeaking
    | UtteranceEnd
    | Transcript
    | Error
    | Warning
    | PromptUpdated
)

# ---------------------------------------------------------------------------------------------------------------
# Codecs: one reusable encoder/decoder each (msgspec's advice; they hold no per-message state).

_encoder: Final = msgspec.json.Encoder()
client_message_decoder: Final = msgspec.json.Decoder(ClientMessage)
envelope_decoder: Final = msgspec.json.Decoder(Envelope)
server_message_decoder: Final = msgspec.json.Decoder(ServerMessage)


def encode(message: msgspec.Struct) -> str:
    """Compact JSON text for one message, as sent in a WebSocket text frame."""
    return _encoder.encode(message).decode()


# Messages without fields never change: encode them once.
SETTINGS_APPLIED: Final = encode(SettingsApplied())
AGENT_STARTED_SPEAKING: Final = encode(AgentStartedSpeaking())
AGENT_DONE: Final = encode(AgentDone())
AGENT_AUDIO_DONE: Final = encode(AgentAudioDone())
AGENT_THINKING: Final = encode(AgentThinking(content=""))
USER_STARTED_SPEAKING: Final = encode(UserStartedSpeaking())
