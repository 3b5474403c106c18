"""Speech-like synthetic audio for the benchmark's microphone frames and TTS chunks (deterministic).

Constant or silent test audio flatters some implementations (a constant frame's bytes can even parse as JSON) and
lets a resampler's cost depend on nothing. This signal has what matters to a relay: syllables of voiced sound
(a fundamental between 90 and 260 Hz gliding within the syllable, its harmonics shaped by three formant-like
peaks), unvoiced bands of noise (fricatives, 2.5-7 kHz), and pauses with a faint noise floor. It is generated once
per process from a fixed seed, cut into frames, and every frame is encoded once: sending costs the generator a
table look-up, not a synthesis.
"""

from __future__ import annotations

import base64
from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt

from .wire import MIC_FRAME_SAMPLES, MIC_FRAME_SAMPLES_24K, MIC_RATE, TTS_CHUNK_SAMPLES, TTS_RATE

SEED: Final = 20_240_917
CLIP_S: Final = 12.0  # long enough that neighbouring sessions do not send the same frames at the same time


def speech_like(rate: int, seconds: float = CLIP_S, seed: int = SEED) -> npt.NDArray[np.int16]:
    """``seconds`` of speech-like PCM16 mono at ``rate`` Hz; the same seed gives the same samples."""
    rng = np.random.default_rng(seed)
    total = int(rate * seconds)
    out = np.zeros(total, dtype=np.float64)
    at = 0
    while at < total:
        kind = rng.choice(3, p=(0.55, 0.2, 0.25))  # voiced syllable, fricative, pause
        length = min(total - at, int(rate * rng.uniform(*((0.12, 0.35), (0.06, 0.16), (0.05, 0.3))[kind])))
        if kind == 0:
            out[at : at + length] = _voiced(rng, rate, length)
        elif kind == 1:
            out[at : at + length] = _band_noise(rng, rate, length, rng.uniform(2_500, 4_000), rng.uniform(5_000, 7_000))
            out[at : at + length] *= rng.uniform(1_500, 4_000) * _envelope(length)
        else:
            out[at : at + length] = rng.standard_normal(length) * 30.0
        at += length
    return np.clip(np.round(out), -32_768, 32_767).astype(np.int16)


def _envelope(length: int) -> npt.NDArray[np.float64]:
    """A syllable's rise and fall (no clicks at its edges)."""
    return np.sin(np.linspace(0.0, np.pi, length)) ** 0.6


def _voiced(rng: np.random.Generator, rate: int, length: int) -> npt.NDArray[np.float64]:
    f0 = np.linspace(rng.uniform(90, 260), rng.uniform(90, 260), length)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    formants = (rng.uniform(300, 900), rng.uniform(900, 2_300), rng.uniform(2_300, 3_400))
    signal = np.zeros(length)
    nyquist = rate / 2
    for harmonic in range(1, 40):
        frequency = harmonic * float(f0.mean())
        if frequency >= nyquist * 0.95:
            break
        gain = sum(np.exp(-(((frequency - f) / 180.0) ** 2)) for f in formants) + 0.05
        signal += gain * np.sin(harmonic * phase) / harmonic**0.5
    peak = float(np.abs(signal).max()) or 1.0
    return signal / peak * rng.uniform(4_000, 12_000) * _envelope(length)


def _band_noise(rng: np.random.Generator, rate: int, length: int, low: float, high: float) -> npt.NDArray[np.float64]:
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length, 1 / rate)
    spectrum[(freqs < low) | (freqs > min(high, rate / 2 * 0.95))] = 0
    noise = np.fft.irfft(spectrum, length)
    return noise / (float(np.abs(noise).max()) or 1.0)


def _frames(samples: npt.NDArray[np.int16], size: int) -> tuple[bytes, ...]:
    count = samples.size // size
    return tuple(samples[i * size : (i + 1) * size].astype("<i2").tobytes() for i in range(count))


@cache
def mic_frames() -> tuple[bytes, ...]:
    """85 ms microphone frames at 16 kHz (what the component sends as binary)."""
    return _frames(speech_like(MIC_RATE), MIC_FRAME_SAMPLES)


@cache
def mic_appends() -> tuple[str, ...]:
    """``input_audio_buffer.append`` of 85 ms at 24 kHz (what a client of the Realtime API itself sends)."""
    return tuple(
        '{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(frame).decode() + '"}'
        for frame in _frames(speech_like(TTS_RATE, seed=SEED + 1), MIC_FRAME_SAMPLES_24K)
    )


@cache
def tts_chunks() -> tuple[bytes, ...]:
    """100 ms TTS chunks at 24 kHz, as the client receives them (binary) or decodes them (JSON deltas)."""
    return _frames(speech_like(TTS_RATE, seed=SEED + 2), TTS_CHUNK_SAMPLES)


@cache
def tts_chunks_base64() -> tuple[str, ...]:
    return tuple(base64.b64encode(chunk).decode() for chunk in tts_chunks())
