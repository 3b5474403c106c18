"""The 16 kHz -> 24 kHz stream resampler (reference §7.2): exact vectors, a scalar golden model, chunking."""

from __future__ import annotations

import itertools
import math
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.audio import Resampler16kTo24k


class ScalarReference:
    """The reference algorithm written out sample by sample (double arithmetic, JS Math.round, look-ahead)."""

    def __init__(self) -> None:
        self.buf: list[int] = []
        self.pos = 0.0

    def push(self, data: bytes) -> bytes:
        if not data:
            return b""
        assert len(data) % 2 == 0
        self.buf += struct.unpack(f"<{len(data) // 2}h", data)
        out = []
        while True:
            i0 = math.floor(self.pos)
            i1 = i0 + 1
            if i1 >= len(self.buf):
                break
            f = self.pos - i0
            value = math.floor(self.buf[i0] * (1 - f) + self.buf[i1] * f + 0.5)
            out.append(max(-32768, min(32767, value)))
            self.pos += 16000 / 24000
        discard = math.floor(self.pos)
        if 0 < discard <= len(self.buf):
            self.buf = self.buf[discard:]
            self.pos -= discard
        return struct.pack(f"<{len(out)}h", *out)


def constant(samples: int, value: int = 100) -> bytes:
    return struct.pack("<h", value) * samples


def samples_of(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 2}h", data))


def test_empty_input_gives_empty_output() -> None:
    assert Resampler16kTo24k().push(b"") == b""


@pytest.mark.parametrize(
    ("samples", "expected"), [(250, 374), (2400, 3599), (16000, 23999), (20000, 29999)], ids=lambda v: str(v)
)
def test_fresh_resampler_output_counts_hold_back_one_lookahead_sample(samples: int, expected: int) -> None:
    out = Resampler16kTo24k().push(constant(samples))
    assert len(out) == expected * 2


def test_250_samples_give_748_bytes() -> None:
    assert len(Resampler16kTo24k().push(constant(250))) == 748


def test_two_4096_sample_chunks_give_12287_samples_all_equal_to_a_constant_input() -> None:
    resampler = Resampler16kTo24k()
    out = resampler.push(constant(4096)) + resampler.push(constant(4096))
    assert len(out) == 12287 * 2
    assert set(samples_of(out)) == {100}


def test_rounding_is_floor_of_value_plus_half_not_truncation() -> None:
    # positions 0, 2/3, 4/3, 2, 8/3: -2*(1/3) + -3*(2/3) = -2.67 -> -3; -3*(2/3) + 7*(1/3) = 0.33 -> 0;
    # 7; 7*(1/3) + 8*(2/3) = 7.67 -> 8. Truncation would give -2 and 7.
    out = samples_of(Resampler16kTo24k().push(struct.pack("<4h", -2, -3, 7, 8)))
    assert out == [-2, -3, 0, 7, 8]


def test_extremes_stay_within_int16() -> None:
    data = struct.pack("<6h", 32767, -32768, 32767, -32768, 32767, -32768)
    out = Resampler16kTo24k().push(data)
    assert out == ScalarReference().push(data)
    assert min(samples_of(out)) >= -32768
    assert max(samples_of(out)) <= 32767


def test_matches_the_scalar_reference_byte_for_byte_on_random_chunk_sequences() -> None:
    rng = random.Random(20260410)
    for _ in range(60):
        ours, reference = Resampler16kTo24k(), ScalarReference()
        for _ in range(rng.randint(1, 6)):
            samples = rng.choice([0, 1, 2, 3, 250, 4096, rng.randint(0, 3000)])
            data = rng.randbytes(samples * 2)
            assert ours.push(data) == reference.push(data)


def test_chunked_800_to_1200_byte_parts_including_odd_sizes_equal_a_single_push() -> None:
    rng = random.Random(7)
    data = rng.randbytes(16000 * 2)  # an even number of samples, as the component sends
    whole = Resampler16kTo24k().push(data)
    resampler, parts, offset = Resampler16kTo24k(), [], 0
    while offset < len(data):
        size = rng.randint(800, 1200)  # odd sizes too: the odd byte is carried
        parts.append(resampler.push(data[offset : offset + size]))
        offset += size
    assert b"".join(parts) == whole


def test_odd_length_input_never_raises_and_the_odd_byte_is_carried_into_the_next_push() -> None:
    resampler = Resampler16kTo24k()
    first = resampler.push(bytes([1, 0, 2, 0, 3]))  # 2.5 samples
    carried_after_first = resampler.carried_byte
    second = resampler.push(bytes([0, 4, 0]))  # completes sample 3, then 4
    assert (carried_after_first, resampler.carried_byte) == (True, False)
    assert first + second == Resampler16kTo24k().push(struct.pack("<4h", 1, 2, 3, 4))


def test_a_single_odd_byte_produces_nothing_and_is_kept() -> None:
    resampler = Resampler16kTo24k()
    assert resampler.push(b"\x01") == b""
    assert resampler.push(b"\x00") == b""  # one sample: held back as look-ahead
    assert resampler.push(struct.pack("<h", 1)) == ScalarReference().push(struct.pack("<2h", 1, 1))


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=6000),
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=12),
)
def test_property_any_chunking_gives_the_same_stream(data: bytes, cuts: list[int]) -> None:
    """Splitting the byte stream anywhere (odd offsets included) yields the same samples as one push.

    The reference accumulates the read position in doubles, so where a stream ends exactly on a sample boundary
    (an odd total sample count) chunked and whole pushes may differ by the one sample still held as look-ahead;
    the samples both produced are always identical, and an even sample count gives identical bytes.
    """
    whole = Resampler16kTo24k().push(data)
    resampler = Resampler16kTo24k()
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunked = b"".join(resampler.push(data[a:b]) for a, b in itertools.pairwise(bounds))
    shorter = min(len(whole), len(chunked))
    assert whole[:shorter] == chunked[:shorter]
    assert abs(len(whole) - len(chunked)) <= 2
    if (len(data) // 2) % 2 == 0:
        assert whole == chunked
