"""Deterministic stand-ins for the models behind the simulated services.

* :func:`speak` turns reply text into PCM16 speech-like audio (a vowel-ish tone per word, gaps between words), so
  its length follows the text and it is never silent.
* :class:`EnergyVad` finds utterances in PCM16 by frame energy, the way a simple server VAD does.
* :func:`transcript_for` invents a transcript from an utterance's duration (replies: :mod:`proxy.sim.replies`).
* :func:`named_function` / :func:`arguments_for` decide and fill a tool call from the user's words.

Everything here is pure and deterministic: the same input always gives the same output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

#: Speaking rate of the synthetic voice: each character of a word lasts this long.
MS_PER_CHAR: Final = 55
WORD_GAP_MS: Final = 60
MIN_WORD_MS: Final = 120
AMPLITUDE: Final = 0.3
_WORDS: Final = ("hello", "this", "is", "a", "test", "of", "the", "voice", "agent", "simulator")


def speak(text: str, rate: int = 24_000) -> bytes:
    """Synthesise ``text`` as mono PCM16 little-endian at ``rate`` Hz (never empty, never silent)."""
    words = text.split() or ["..."]
    pieces: list[np.ndarray[Any, np.dtype[np.float64]]] = []
    gap = np.zeros(rate * WORD_GAP_MS // 1000)
    for word in words:
        ms = max(MIN_WORD_MS, MS_PER_CHAR * len(word))
        n = rate * ms // 1000
        t = np.arange(n) / rate
        f0 = 110.0 + (sum(word.encode()) % 13) * 10.0  # a stable pitch per word
        wave = np.sin(2 * np.pi * f0 * t) + 0.5 * np.sin(2 * np.pi * 2 * f0 * t) + 0.25 * np.sin(2 * np.pi * 3 * f0 * t)
        ramp = min(n // 4, rate // 100)
        envelope = np.ones(n)
        envelope[:ramp] = np.linspace(0, 1, ramp, endpoint=False)
        envelope[n - ramp :] = np.linspace(1, 0, ramp)
        pieces += [wave / 1.75 * envelope * AMPLITUDE, gap]
    samples = np.concatenate(pieces[:-1])
    return bytes(np.round(samples * 32767).astype("<i2").tobytes())


def chunks(pcm: bytes, rate: int, chunk_ms: int) -> list[bytes]:
    """Split PCM16 mono into chunks of ``chunk_ms`` (the last one may be shorter)."""
    size = rate * chunk_ms // 1000 * 2
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def duration_ms(pcm_bytes: int, rate: int, channels: int = 1) -> float:
    return pcm_bytes / 2 / channels / rate * 1000


def transcript_for(duration_ms: float) -> str:
    """A deterministic transcript for an utterance: one word per 400 ms, at least one."""
    n = max(1, int(duration_ms // 400))
    words = [_WORDS[i % len(_WORDS)] for i in range(n)]
    return " ".join(words).capitalize() + "."


def reply_to_tool(output: str) -> str:
    """The assistant's answer after a tool result."""
    return f"The function returned: {' '.join(output.split())}"


def named_function(text: str, functions: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The first function whose name appears in ``text`` (case-insensitive; ``_`` may be written as a space)."""
    lowered = text.lower()
    for function in functions:
        name = function.get("name")
        if isinstance(name, str) and name and (name.lower() in lowered or name.lower().replace("_", " ") in lowered):
            return function
    return None


def arguments_for(function: Mapping[str, Any], user_text: str) -> str:
    """Deterministic JSON arguments: each required parameter gets a value of its declared type."""
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
    required = parameters.get("required") if isinstance(parameters, Mapping) else None
    args: dict[str, Any] = {}
    if isinstance(properties, Mapping) and isinstance(required, list):
        for name in required:
            spec = properties.get(name)
            kind = spec.get("type") if isinstance(spec, Mapping) else None
            enum = spec.get("enum") if isinstance(spec, Mapping) else None
            if isinstance(enum, list) and enum:
                args[str(name)] = enum[0]
            elif kind in ("number", "integer"):
                args[str(name)] = 1
            elif kind == "boolean":
                args[str(name)] = True
            elif kind == "array":
                args[str(name)] = []
            elif kind == "object":
                args[str(name)] = {}
            else:
                args[str(name)] = user_text
    return json.dumps(args, separators=(",", ":"))


def split_text(text: str, size: int = 12) -> list[str]:
    """Split text into streaming deltas of about ``size`` characters, word-aligned; they join back to ``text``."""
    out: list[str] = []
    current = ""
    for token in re.findall(r"\s*\S+|\s+$", text):
        if current and len(current) + len(token) > size:
            out.append(current)
            current = token
        else:
            current += token
    out.append(current)
    return out


@dataclass(frozen=True, slots=True)
class VadEvent:
    """``kind`` is "start" or "stop"; ``ms`` the stream position (ms since the first sample) it refers to."""

    kind: str
    ms: float


class EnergyVad:
    """Utterance detection on PCM16 mono by RMS energy in 10 ms frames.

    Speech starts after ``start_frames`` consecutive loud frames (reported at the first of them); it stops once
    ``silence_ms`` of quiet frames follow (reported at the end of that silence, like a server VAD's
    ``audio_end_ms``). ``threshold`` (0..1) scales the loudness needed, 0.5 being about -34 dBFS.
    """

    def __init__(self, rate: int, *, threshold: float = 0.5, silence_ms: float = 200, start_frames: int = 2) -> None:
        self.rate = rate
        self.frame = rate // 100
        self.level = 32767 * 0.02 * (max(0.01, min(threshold, 1.0)) / 0.5)
        self.silence_ms = silence_ms
        self.start_frames = start_frames
        self.position_ms = 0.0
        self.speaking = False
        self.speech_start_ms = 0.0
        self._pending = b""
        self._loud_run = 0
        self._quiet_ms = 0.0

    def feed(self, pcm: bytes) -> list[VadEvent]:
        data = self._pending + pcm
        step = self.frame * 2
        whole = len(data) - len(data) % step
        self._pending = data[whole:]
        events: list[VadEvent] = []
        if not whole:
            return events
        frames = np.frombuffer(data[:whole], dtype="<i2").astype(np.float64).reshape(-1, self.frame)
        rms = np.sqrt(np.mean(frames * frames, axis=1))
        for value in rms:
            self.position_ms += 10
            loud = value >= self.level
            if not self.speaking:
                self._loud_run = self._loud_run + 1 if loud else 0
                if self._loud_run >= self.start_frames:
                    self.speaking = True
                    self._quiet_ms = 0
                    self.speech_start_ms = self.position_ms - 10 * self.start_frames
                    events.append(VadEvent("start", self.speech_start_ms))
            else:
                self._quiet_ms = 0 if loud else self._quiet_ms + 10
                if self._quiet_ms >= self.silence_ms:
                    self.speaking = False
                    self._loud_run = 0
                    events.append(VadEvent("stop", self.position_ms))
        return events
