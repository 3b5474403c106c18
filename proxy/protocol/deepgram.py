"""Deepgram messages beyond the component protocol: the rest of the Voice Agent v1 API and the Listen (speech to
text) streaming API.

The agent messages the component itself uses live in :mod:`proxy.protocol.component`; this module adds the ones it
does not (``UpdatePrompt``, ``InjectAgentMessage``, ...), the Listen control messages a client sends
(``KeepAlive``, ``Finalize``, ``CloseStream``) and the Listen results a server sends (``Results``, ``Metadata``,
``UtteranceEnd``, ``SpeechStarted``). Decoding is lenient (unknown fields are ignored, values the receiver checks
are ``Any``); encoding follows Deepgram's field names.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

# ---------------------------------------------------------------------------------------------------------------
# Voice Agent v1: client -> server messages not in the component protocol


class UpdatePrompt(msgspec.Struct, tag="UpdatePrompt", tag_field="type"):
    prompt: Any = None


class UpdateSpeak(msgspec.Struct, tag="UpdateSpeak", tag_field="type"):
    speak: Any = None


class InjectAgentMessage(msgspec.Struct, tag="InjectAgentMessage", tag_field="type"):
    # Deepgram v1 names the field ``message``; the component sends ``content`` (a known component bug).
    message: Any = None
    content: Any = None


# Voice Agent v1: server -> client messages not in the component protocol


class SpeakUpdated(msgspec.Struct, tag="SpeakUpdated", tag_field="type"):
    pass


class InjectionRefused(msgspec.Struct, tag="InjectionRefused", tag_field="type"):
    message: str


class UserStoppedSpeaking(msgspec.Struct, tag="UserStoppedSpeaking", tag_field="type"):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Listen (streaming speech to text): client -> server control messages


class ListenKeepAlive(msgspec.Struct, tag="KeepAlive", tag_field="type"):
    pass


class Finalize(msgspec.Struct, tag="Finalize", tag_field="type"):
    pass


class CloseStream(msgspec.Struct, tag="CloseStream", tag_field="type"):
    pass


ListenControl = ListenKeepAlive | Finalize | CloseStream
listen_control_decoder: Final = msgspec.json.Decoder(ListenControl)


# Listen: server -> client


class Word(msgspec.Struct):
    word: str
    start: float
    end: float
    confidence: float
    punctuated_word: str | None = None


class Alternative(msgspec.Struct):
    transcript: str
    confidence: float
    words: list[Word] = msgspec.field(default_factory=list)


class Channel(msgspec.Struct):
    alternatives: list[Alternative]


class ModelInfo(msgspec.Struct):
    name: str
    version: str
    arch: str


class ResultsMetadata(msgspec.Struct):
    request_id: str
    model_info: ModelInfo
    model_uuid: str


class Results(msgspec.Struct, tag="Results", tag_field="type"):
    channel_index: list[int]
    duration: float
    start: float
    is_final: bool
    speech_final: bool
    channel: Channel
    metadata: ResultsMetadata
    from_finalize: bool = False


class Metadata(msgspec.Struct, tag="Metadata", tag_field="type"):
    transaction_key: str
    request_id: str
    sha256: str
    created: str
    duration: float
    channels: int
    models: list[str]
    model_info: dict[str, ModelInfo]


class ListenUtteranceEnd(msgspec.Struct, tag="UtteranceEnd", tag_field="type"):
    channel: list[int]
    last_word_end: float


class SpeechStarted(msgspec.Struct, tag="SpeechStarted", tag_field="type"):
    channel: list[int]
    timestamp: float


ListenServerMessage = Results | Metadata | ListenUtteranceEnd | SpeechStarted
listen_server_decoder: Final = msgspec.json.Decoder(ListenServerMessage)
