"""A simulated Deepgram Listen (streaming speech-to-text) server: one :class:`ListenSimulator` per connection.

Query options honoured: ``encoding`` (``linear16`` only), ``sample_rate``, ``channels`` (mixed down for
detection), ``interim_results``, ``utterance_end_ms``, ``vad_events`` and ``endpointing``; others are accepted
and ignored, as Deepgram ignores options that do not apply. Speech is found by an energy VAD; transcripts are
invented from durations (one word per 400 ms). ``Metadata`` is sent when the stream closes, as Deepgram does.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping
from typing import Final

import msgspec
import numpy as np

from ..protocol import component as cp
from ..protocol import deepgram as dg
from . import synth

Frame = str | bytes
INTERIM_EVERY_MS: Final = 1000
DEFAULT_ENDPOINTING_MS: Final = 300
MODEL_UUID: Final = "00000000-0000-4000-8000-5157a7e00001"
MODEL_INFO: Final = dg.ModelInfo(name="general-nova-3", version="2025-01-01.0", arch="nova-3")


class ListenOptionError(ValueError):
    """A query option Deepgram would refuse at the handshake (answered with HTTP 400)."""


def _flag(params: Mapping[str, str], name: str) -> bool:
    value = params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise ListenOptionError(f"{name} must be true or false")
    return value == "true"


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ListenOptionError(f"{name} must be an integer between {low} and {high}")
    return int(text)


class ListenSimulator:
    """The state of one simulated Listen stream (see the module docstring)."""

    def __init__(self, params: Mapping[str, str], *, request_id: str, created: datetime.datetime) -> None:
        encoding = params.get("encoding", "linear16")
        if encoding != "linear16":
            raise ListenOptionError(f"encoding {encoding!r} is not supported (use linear16)")
        self.rate = _int(params, "sample_rate", 16_000, 8_000, 48_000)
        self.channels = _int(params, "channels", 1, 1, 8)
        self.interim = _flag(params, "interim_results")
        self.vad_events = _flag(params, "vad_events")
        self.utterance_end_ms = _int(params, "utterance_end_ms", 0, 0, 5000) if "utterance_end_ms" in params else None
        if self.utterance_end_ms is not None and self.utterance_end_ms < 1000:
            raise ListenOptionError("utterance_end_ms must be at least 1000")
        endpointing = params.get("endpointing")
        silence = DEFAULT_ENDPOINTING_MS
        if endpointing is not None and endpointing != "false":
            silence = max(100, _int(params, "endpointing", DEFAULT_ENDPOINTING_MS, 0, 10_000))
        self.request_id = request_id
        self.created = created
        self.vad = synth.EnergyVad(self.rate, silence_ms=silence)
        self._silence_ms = silence
        self._sha = hashlib.sha256()
        self._bytes = 0
        self._pending = b""
        self._segment_start_ms: float | None = None  # start of the not yet finalised speech
        self._next_interim_ms = 0.0
        self._last_word_end_ms: float | None = None  # set after a final, cleared by UtteranceEnd
        self.closed = False

    def _results(
        self, start_ms: float, end_ms: float, *, final: bool, speech_final: bool, from_finalize: bool = False
    ) -> str:
        duration = max(0.0, end_ms - start_ms)
        text = synth.transcript_for(duration) if duration >= 100 else ""
        words = []
        if text:
            tokens = text.split()
            step = duration / len(tokens)
            words = [
                dg.Word(
                    word=t.lower().strip("."),
                    start=round((start_ms + i * step) / 1000, 3),
                    end=round((start_ms + (i + 1) * step) / 1000, 3),
                    confidence=0.99,
                    punctuated_word=t,
                )
                for i, t in enumerate(tokens)
            ]
        return cp.encode(
            dg.Results(
                channel_index=[0, self.channels],
                duration=round(duration / 1000, 3),
                start=round(start_ms / 1000, 3),
                is_final=final,
                speech_final=speech_final,
                channel=dg.Channel(
                    alternatives=[dg.Alternative(transcript=text, confidence=0.99 if text else 0, words=words)]
                ),
                metadata=dg.ResultsMetadata(request_id=self.request_id, model_info=MODEL_INFO, model_uuid=MODEL_UUID),
                from_finalize=from_finalize,
            )
        )

    def handle_binary(self, data: bytes) -> list[Frame]:
        self._sha.update(data)
        self._bytes += len(data)
        data = self._pending + data
        frame = 2 * self.channels
        whole = len(data) - len(data) % frame
        self._pending = data[whole:]
        if self.channels > 1:
            samples = np.frombuffer(data[:whole], dtype="<i2").reshape(-1, self.channels).mean(axis=1)
            mono = samples.astype("<i2").tobytes()
        else:
            mono = data[:whole]
        out: list[Frame] = []
        for event in self.vad.feed(mono):
            if event.kind == "start":
                self._segment_start_ms = event.ms
                self._next_interim_ms = event.ms + INTERIM_EVERY_MS
                self._last_word_end_ms = None
                if self.vad_events:
                    out.append(cp.encode(dg.SpeechStarted(channel=[0], timestamp=round(event.ms / 1000, 3))))
            elif self._segment_start_ms is not None:
                end = event.ms - self._silence_ms
                out.append(self._results(self._segment_start_ms, end, final=True, speech_final=True))
                self._segment_start_ms = None
                self._last_word_end_ms = end
        now = self.vad.position_ms
        if self.interim and self._segment_start_ms is not None and now >= self._next_interim_ms:
            out.append(self._results(self._segment_start_ms, now, final=False, speech_final=False))
            self._next_interim_ms = now + INTERIM_EVERY_MS
        if (
            self.utterance_end_ms is not None
            and self._last_word_end_ms is not None
            and now - self._last_word_end_ms >= self.utterance_end_ms
        ):
            out.append(
                cp.encode(
                    dg.ListenUtteranceEnd(
                        channel=[0, self.channels], last_word_end=round(self._last_word_end_ms / 1000, 3)
                    )
                )
            )
            self._last_word_end_ms = None
        return out

    def handle_text(self, text: str) -> list[Frame]:
        try:
            control = dg.listen_control_decoder.decode(text)
        except msgspec.MsgspecError:
            return []  # Deepgram ignores text it does not understand
        if isinstance(control, dg.Finalize):
            return self._finalize()
        if isinstance(control, dg.CloseStream):
            out = self._finalize()
            out.append(self.metadata())
            self.closed = True
            return out
        return []

    def _finalize(self) -> list[Frame]:
        if self._segment_start_ms is None:
            return []
        now = self.vad.position_ms
        out: list[Frame] = [
            self._results(self._segment_start_ms, now, final=True, speech_final=False, from_finalize=True)
        ]
        self._segment_start_ms = now
        self._next_interim_ms = now + INTERIM_EVERY_MS
        return out

    def metadata(self) -> str:
        return cp.encode(
            dg.Metadata(
                transaction_key="deprecated",
                request_id=self.request_id,
                sha256=self._sha.hexdigest(),
                created=self.created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                duration=round(self._bytes / 2 / self.channels / self.rate, 3),
                channels=self.channels,
                models=[MODEL_UUID],
                model_info={MODEL_UUID: MODEL_INFO},
            )
        )
