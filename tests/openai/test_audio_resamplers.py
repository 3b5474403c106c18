"""The default anti-aliased resampler (soxr) and the choice between it and the reference's interpolator.

Audio quality is measured, not assumed: a 7 kHz tone goes through each resampler and the spectrum of the 24 kHz
output (numpy FFT) shows how far the tone's image at 16 - 7 = 9 kHz lies below the tone.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.audio import (
    DEFAULT_RESAMPLER,
    Resampler,
    Resampler16kTo24k,
    SoxrResampler,
    new_resampler,
)
from proxy.config import ConfigError, from_env
from proxy.openai.translator import TranslatorOptions
from tests.openai.harness import Harness, parsed

FRAME_BYTES = 2_720  # 85 ms of 16 kHz PCM16: the component's microphone frame


def tone(hz: float, seconds: float, amplitude: float = 16_000.0) -> bytes:
    t = np.arange(int(16_000 * seconds)) / 16_000
    return (np.sin(2 * np.pi * hz * t) * amplitude).round().astype("<i2").tobytes()


def stream(resampler: Resampler, data: bytes, size: int = FRAME_BYTES) -> bytes:
    return b"".join(resampler.push(data[i : i + size]) for i in range(0, len(data), size))


def same_samples(a: bytes, b: bytes) -> bool:
    """Equal over the shorter of the two, up to rounding (libsoxr's float pipeline may round a sample differently
    when the input is cut elsewhere; a click at a cut would be thousands of steps off)."""
    n = min(len(a), len(b)) // 2
    x = np.frombuffer(a, dtype="<i2")[:n].astype(np.int32)
    y = np.frombuffer(b, dtype="<i2")[:n].astype(np.int32)
    return bool(np.abs(x - y).max(initial=0) <= 2)


def image_db(out: bytes, hz: float) -> float:
    """Level of the image at 16000 - hz relative to the tone at hz, in dB, in a 24 kHz signal."""
    y = np.frombuffer(out, dtype="<i2").astype(np.float64)
    y = y[2_400:-2_400]  # leave out the start-up and the withheld tail
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    freqs = np.fft.rfftfreq(y.size, 1 / 24_000)

    def peak(at: float) -> float:
        return float(spectrum[np.abs(freqs - at) < 50].max())

    return 20 * np.log10(peak(16_000 - hz) / peak(hz))


def test_soxr_is_the_default_everywhere() -> None:
    assert DEFAULT_RESAMPLER == "soxr"
    assert TranslatorOptions().resampler == "soxr"
    assert from_env({}).resampler == "soxr"
    assert isinstance(new_resampler(), SoxrResampler)
    assert isinstance(new_resampler("linear"), Resampler16kTo24k)


def test_the_image_of_a_7_khz_tone_is_at_least_60_db_down_with_the_default() -> None:
    assert image_db(stream(new_resampler(), tone(7_000, 1.0)), 7_000) <= -60


def test_the_linear_interpolator_leaves_a_loud_image_which_is_why_it_is_not_the_default() -> None:
    # The measurement above can fail: interpolation puts the 9 kHz image only a few dB under the tone.
    assert image_db(stream(new_resampler("linear"), tone(7_000, 1.0)), 7_000) > -10


@pytest.mark.parametrize("hz", [1_000, 3_000, 5_000])
def test_frame_edges_make_no_clicks(hz: int) -> None:
    """Streamed in 85 ms frames, the output is a clean tone: nothing but the tone above the noise floor."""
    out = np.frombuffer(stream(new_resampler(), tone(hz, 1.0)), dtype="<i2").astype(np.float64)
    y = out[2_400:-2_400]
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    freqs = np.fft.rfftfreq(y.size, 1 / 24_000)
    rest = spectrum[np.abs(freqs - hz) > 100].max()
    assert 20 * np.log10(rest / spectrum.max()) < -60


def test_the_stream_is_continuous_across_pushes() -> None:
    """Output per push is a continuation: splitting the input changes where output appears, not the samples."""
    data = tone(440, 0.5) + tone(2_500, 0.5)
    whole = new_resampler().push(data)
    parts = stream(new_resampler(), data, size=FRAME_BYTES)
    shortest = min(len(whole), len(parts))
    assert shortest > len(data) * 3 // 2 - 2 * 1_300  # at most ~650 samples withheld
    assert same_samples(whole, parts)


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=9_000), max_size=12))
def test_any_split_of_the_byte_stream_gives_the_same_samples(cuts: Iterable[int]) -> None:
    data = tone(1_234, 0.5)[:8_001]  # odd length: the last byte stays carried
    whole = new_resampler().push(data)
    resampler, parts, start = new_resampler(), [], 0
    for cut in sorted(cuts):
        parts.append(resampler.push(data[start:cut]))
        start = max(start, cut)
    parts.append(resampler.push(data[start:]))
    joined = b"".join(parts)
    assert same_samples(whole, joined)
    assert resampler.carried_byte


def test_an_odd_byte_is_carried_into_the_next_push() -> None:
    resampler = SoxrResampler()
    assert resampler.push(b"\x01") == b""
    assert resampler.carried_byte
    resampler.push(b"\x00" + tone(300, 0.2))
    assert not resampler.carried_byte


def test_an_idle_soxr_resampler_holds_no_filter_state() -> None:
    resampler = SoxrResampler()
    assert resampler._stream is None
    resampler.push(b"\x00")  # half a sample: still nothing to filter
    assert resampler._stream is None


def test_the_translator_uses_the_resampler_it_is_given() -> None:
    data = tone(7_000, 1.0)
    appended = {}
    for kind in ("soxr", "linear"):
        h = Harness(resampler=kind)  # type: ignore[arg-type]
        h.ready()
        audio = b""
        for i in range(0, len(data), FRAME_BYTES):
            for event in parsed(h.send(data[i : i + FRAME_BYTES]).upstream):
                assert event["type"] == "input_audio_buffer.append"
                audio += base64.b64decode(event["audio"])
        appended[kind] = audio
    assert appended["linear"] == stream(Resampler16kTo24k(), data)
    assert image_db(appended["soxr"], 7_000) <= -60


def test_the_variable_and_the_flag_choose_the_resampler() -> None:
    assert from_env({"OPENAI_PROXY_RESAMPLER": "linear"}).resampler == "linear"
    assert from_env({"OPENAI_PROXY_RESAMPLER": " SOXR "}).resampler == "soxr"
    assert from_env({"OPENAI_PROXY_RESAMPLER": "linear"}, resampler="soxr").resampler == "soxr"
    with pytest.raises(ConfigError, match="OPENAI_PROXY_RESAMPLER"):
        from_env({"OPENAI_PROXY_RESAMPLER": "cubic"})


def test_a_wrong_resampler_flag_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--resampler", "cubic", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--resampler" in result.stderr
