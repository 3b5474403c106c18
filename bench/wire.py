"""Messages of the benchmark workload: sizes, session tokens, encoders and lenient decoders.

The audio itself is speech-like and pre-encoded (``bench/speech.py``); frames are accounted by volume and, where
the bytes survive, by content (``bench/streams.py``).
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

MIC_RATE: Final = 16_000
TTS_RATE: Final = 24_000
MIC_FRAME_S: Final = 0.085  # the component's AudioWorklet frame: 4096 samples at 48 kHz, sent at 16 kHz
MIC_FRAME_SAMPLES: Final = 1_360  # 85 ms at 16 kHz = 2 720 bytes
MIC_FRAME_SAMPLES_24K: Final = 2_040  # the same 85 ms at 24 kHz (what the proxy appends upstream)
TTS_CHUNK_S: Final = 0.1
TTS_CHUNK_SAMPLES: Final = 2_400  # 100 ms at 24 kHz = 4 800 bytes

#: Marks a session in its Settings prompt / session.update instructions; the upstream finds it with a regex,
#: because neither the proxy nor a relay forwards anything else that identifies the client.
SESSION_TOKEN_RE: Final = re.compile(r"bench-session-(\d+)-(\d+)")
SESSION_TOKEN_BYTES_RE: Final = re.compile(rb"bench-session-(\d+)-(\d+)")


def session_token(run: int, sid: int) -> str:
    return f"bench-session-{run}-{sid}"


def session_offset(sid: int) -> int:
    """Where a session starts in the tables of audio frames (a prime stride, so neighbours differ)."""
    return sid * 7


# ---------------------------------------------------------------------------------------------------------------
# Messages (text frames). Pre-encoded where they never change.


def audio_delta_json(audio_base64: str, response_id: str, item_id: str) -> str:
    """``response.output_audio.delta`` of one 100 ms chunk at 24 kHz."""
    return (
        '{"type":"response.output_audio.delta","response_id":"'
        + response_id
        + '","item_id":"'
        + item_id
        + '","output_index":0,"content_index":0,"delta":"'
        + audio_base64
        + '"}'
    )


_encoder: Final = msgspec.json.Encoder()


def to_text(value: object) -> str:
    return _encoder.encode(value).decode()


def component_settings(token: str) -> str:
    """The component's Settings for the OpenAI route (server VAD, the product default), prompt carrying ``token``."""
    return to_text(
        {
            "type": "Settings",
            "audio": {
                "input": {"encoding": "linear16", "sample_rate": MIC_RATE},
                "output": {"encoding": "linear16", "sample_rate": TTS_RATE, "container": "none"},
            },
            "agent": {
                "language": "en",
                "listen": {"provider": {"type": "deepgram", "model": "nova-3"}},
                "think": {
                    "provider": {"type": "open_ai", "model": "gpt-realtime"},
                    "prompt": f"You are a concise voice assistant. ({token})",
                },
                "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
                "idleTimeoutMs": 10_000,
            },
        }
    )


def session_update(token: str) -> str:
    """What a client speaking the Realtime API itself sends first (24 kHz PCM both ways, server VAD)."""
    return to_text(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "model": "gpt-realtime",
                "instructions": f"You are a concise voice assistant. ({token})",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": TTS_RATE},
                        "turn_detection": {"type": "server_vad", "create_response": True, "interrupt_response": True},
                    },
                    "output": {"format": {"type": "audio/pcm", "rate": TTS_RATE}, "voice": "marin"},
                },
            },
        }
    )


def inject_user_message(text: str) -> str:
    return to_text({"type": "InjectUserMessage", "content": text})


def user_item_create(item_id: str, text: str) -> str:
    return to_text(
        {
            "type": "conversation.item.create",
            "item": {
                "id": item_id,
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            },
        }
    )


RESPONSE_CREATE: Final = '{"type":"response.create"}'
KEEPALIVE: Final = '{"type":"KeepAlive"}'


# ---------------------------------------------------------------------------------------------------------------
# Decoders: one lenient struct per peer, decoding only the fields the benchmark reads.


class Item(msgspec.Struct):
    id: str | None = None


class RealtimeEvent(msgspec.Struct):
    """Any Realtime API event, client or server side (``audio``/``delta`` are base64 audio in the events we read)."""

    type: str = ""
    audio: bytes = b""
    delta: bytes | None = None
    item: Item | None = None


class Typed(msgspec.Struct):
    """Any component/Deepgram message: just its type."""

    type: str = ""


realtime_decoder: Final = msgspec.json.Decoder(RealtimeEvent)
typed_decoder: Final = msgspec.json.Decoder(Typed)
