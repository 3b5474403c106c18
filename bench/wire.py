"""Frames of the benchmark workload and how sequence numbers ride in them.

Audio content does not survive a translating proxy byte for byte (it is resampled and re-encoded), so a frame's
sequence number is carried as a *constant sample value*: every sample of frame ``seq`` of a stream holds
``(offset + seq) % SEQ_MODULUS + 1``. Linear interpolation maps a constant to the same constant (only the first
output sample of a chunk may blend with the previous chunk), so the receiver reads the value back as the frame's
most common sample. ``offset`` differs per session, so a frame delivered to the wrong session shows up as lost.

Frames are built with bytes/str multiplication (C speed): the load generator shares the CPUs with the proxy.
"""

from __future__ import annotations

import base64
import re
from typing import Final

import msgspec
import numpy as np

SEQ_MODULUS: Final = 30_000  # values 1..30000 fit in int16 and are never 0 (silence, padding)

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
    """A per-session start of the value sequence (a prime stride, so neighbours do not overlap early)."""
    return (sid * 7_919) % SEQ_MODULUS


def seq_value(offset: int, seq: int) -> int:
    return (offset + seq) % SEQ_MODULUS + 1


def unwrap(value: int, offset: int, expected: int) -> int:
    """The sequence number whose value is ``value`` that lies closest to ``expected``."""
    residue = (value - 1 - offset) % SEQ_MODULUS
    delta = (residue - expected) % SEQ_MODULUS
    if delta >= SEQ_MODULUS // 2:
        delta -= SEQ_MODULUS
    return expected + delta


def _sample(value: int) -> bytes:
    return value.to_bytes(2, "little", signed=True)


def pcm(value: int, samples: int) -> bytes:
    """Constant PCM16 little-endian audio."""
    return _sample(value) * samples


def pcm_base64(value: int, samples: int) -> str:
    """Base64 of :func:`pcm` without encoding it all: 3 samples (6 bytes) are exactly 8 base64 characters."""
    if samples % 3:
        return base64.b64encode(pcm(value, samples)).decode()
    return base64.b64encode(_sample(value) * 3).decode() * (samples // 3)


def constant_value(data: bytes) -> int | None:
    """The most common sample value of PCM16 audio (None for less than one sample).

    Fast path: in a frame built by :func:`pcm` and resampled, at most the first sample differs, so the middle
    and the last sample agree and are the answer. Anything else is counted in full.
    """
    n = len(data) // 2
    if n == 0:
        return None
    mid = (n // 2) * 2
    last = (n - 1) * 2
    if data[mid : mid + 2] == data[last : last + 2]:
        return int.from_bytes(data[mid : mid + 2], "little", signed=True)
    values, counts = np.unique(np.frombuffer(data[: n * 2], dtype="<i2"), return_counts=True)
    return int(values[int(np.argmax(counts))])


# ---------------------------------------------------------------------------------------------------------------
# Messages (text frames). Pre-encoded where they never change.


def mic_append_json(value: int) -> str:
    """``input_audio_buffer.append`` of one 85 ms frame at 24 kHz (what a direct client sends)."""
    return '{"type":"input_audio_buffer.append","audio":"' + pcm_base64(value, MIC_FRAME_SAMPLES_24K) + '"}'


def audio_delta_json(value: int, response_id: str, item_id: str) -> str:
    """``response.output_audio.delta`` of one 100 ms chunk at 24 kHz."""
    return (
        '{"type":"response.output_audio.delta","response_id":"'
        + response_id
        + '","item_id":"'
        + item_id
        + '","output_index":0,"content_index":0,"delta":"'
        + pcm_base64(value, TTS_CHUNK_SAMPLES)
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
