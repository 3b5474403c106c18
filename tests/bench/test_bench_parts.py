"""The benchmark's measuring instruments: sequence numbers in audio, arrival accounting, the lean WebSocket."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import trio
from trio_websocket import WebSocketRequest, open_websocket_url, serve_websocket

from bench.cli import _judge
from bench.report import Accounting, Latency, TargetResult, markdown_table, repeat_table
from bench.speech import mic_appends, mic_frames, speech_like, tts_chunks
from bench.streams import SessionRecord
from bench.wire import MIC_FRAME_SAMPLES, TTS_CHUNK_SAMPLES
from bench.ws import Closed, accept, connect
from proxy.audio import new_resampler


def _parses_as_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def test_speech_like_audio_is_deterministic_varied_and_never_json() -> None:
    first, again = speech_like(16_000, 3.0), speech_like(16_000, 3.0)
    assert (first == again).all()
    spectrum = np.abs(np.fft.rfft(first.astype(np.float64)))
    freqs = np.fft.rfftfreq(first.size, 1 / 16_000)
    voiced = spectrum[(freqs > 80) & (freqs < 1_000)].sum()
    fricative = spectrum[(freqs > 2_500) & (freqs < 7_000)].sum()
    assert voiced > 0
    assert fricative > 0.05 * voiced
    frame_levels = [np.abs(np.frombuffer(f, dtype="<i2")).mean() for f in mic_frames()]
    assert min(frame_levels) < 100 < 1_000 < max(frame_levels)  # pauses and speech
    assert len(set(mic_frames())) == len(mic_frames())
    assert not any(_parses_as_json(frame) for frame in mic_frames())
    assert all(len(frame) == MIC_FRAME_SAMPLES * 2 for frame in mic_frames())
    assert all(len(chunk) == TTS_CHUNK_SAMPLES * 2 for chunk in tts_chunks())
    assert all(append.startswith('{"type":"input_audio_buffer.append"') for append in mic_appends())


@pytest.mark.parametrize("resampler", ["soxr", "linear"])
def test_mic_frames_through_either_resampler_are_accounted_exactly_and_on_time(resampler: str) -> None:
    """Volume accounting: each frame is complete with the output of its own push, never an earlier one."""
    record = SessionRecord(3, "t", "openai")
    stream, convert = record.mic, new_resampler(resampler)  # type: ignore[arg-type]
    frames = mic_frames()
    for k in range(200):
        stream.mark_sent(float(k))
        latencies = stream.arrived(convert.push(frames[(stream.offset + k) % len(frames)]), k + 0.25)
        assert latencies == [0.25]
    assert (stream.sent, stream.received, stream.lost, stream.reordered, stream.duplicates) == (200, 200, 0, 0, 0)


def test_stream_accounting_counts_lost_reordered_and_duplicate_frames() -> None:
    record = SessionRecord(1, "t", "deepgram")
    stream, chunks = record.tts, tts_chunks()
    for i in range(6):
        stream.mark_sent(float(i))

    def chunk(seq: int) -> bytes:
        return chunks[(stream.offset + seq) % len(chunks)]

    for seq in (0, 2, 1):  # 1 and 2 swapped: both arrive (by volume), two out of place
        stream.arrived(chunk(seq), 10.0)
    assert (stream.received, stream.lost, stream.reordered) == (3, 3, 2)
    stream.arrived(chunk(3), 10.0)
    assert (stream.received, stream.lost, stream.reordered, stream.duplicates) == (4, 2, 2, 0)
    for _ in range(3):
        stream.arrived(chunk(4), 10.0)  # right; in the place of 5; beyond everything sent
    assert (stream.sent, stream.received, stream.lost, stream.reordered, stream.duplicates) == (6, 6, 0, 4, 1)


def test_a_frame_short_of_half_its_volume_has_not_arrived() -> None:
    stream = SessionRecord(0, "t", "deepgram").mic
    stream.mark_sent(1.25)
    assert stream.arrived(b"\0" * (MIC_FRAME_SAMPLES - 2), 1.5) == []
    assert stream.arrived(b"\0" * 2, 1.75) == [pytest.approx(0.5)]
    assert stream.lost == 0


async def test_lean_client_interoperates_with_trio_websocket() -> None:
    async def echo(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.ping(b"p")  # answered by the lean client while it waits for a message
        while True:
            await ws.send_message(await ws.get_message())

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, echo, "127.0.0.1", 0, None)
        with trio.fail_after(10):  # an unanswered ping would stall the echo forever
            ws = await connect(f"ws://127.0.0.1:{server.port}/x?y=1")
            big = bytes(range(256)) * 300  # > 64 KiB: the 8-byte length form
            for message in ("hello", b"\x00\x01", "é" * 70, big):
                await ws.send(message)
                is_text, payload = await ws.receive()
                assert is_text == isinstance(message, str)
                assert payload == (message.encode() if isinstance(message, str) else message)
            await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_lean_server_unmasks_trio_websocket_client_frames_and_closes_cleanly() -> None:
    received: list[tuple[bool, bytes]] = []
    close_codes: list[int] = []
    handled = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        accepted = await accept(stream, ("/v1/realtime",))
        assert accepted is not None
        _path, ws = accepted
        try:
            while True:
                message = await ws.receive()
                received.append(message)
                await ws.send(message[1] if not message[0] else message[1].decode())
        except Closed as closed:
            close_codes.append(closed.code)
            handled.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with open_websocket_url(f"ws://127.0.0.1:{port}/v1/realtime") as client:
            await client.send_message('{"type":"x"}')
            assert await client.get_message() == '{"type":"x"}'
            await client.send_message(b"\xff" * 5000)
            assert await client.get_message() == b"\xff" * 5000
        with trio.fail_after(5):
            await handled.wait()
        nursery.cancel_scope.cancel()
    assert received == [(True, b'{"type":"x"}'), (False, b"\xff" * 5000)]
    assert close_codes == [1000]


async def test_lean_server_refuses_unknown_paths() -> None:
    async def handle(stream: trio.SocketStream) -> None:
        assert await accept(stream, ("/v1/realtime",)) is None
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        with pytest.raises(Exception, match="404"):
            await connect(f"ws://127.0.0.1:{port}/elsewhere")
        nursery.cancel_scope.cancel()


def _result(target: str, p99_ms: float, *, lost: int = 0) -> TargetResult:
    latency = Latency(count=100, p50=p99_ms / 3, p90=p99_ms / 2, p99=p99_ms, max=p99_ms * 2)
    return TargetResult(
        target=target,
        description=target,
        route="openai",
        sessions=10,
        sessions_ready=10,
        duration_s=10.0,
        window_s=8.0,
        mic=latency,
        tts=latency,
        ready=latency,
        first_audio=latency,
        mic_frames=Accounting(sent=100, received=100 - lost, lost=lost),
        tts_frames=Accounting(sent=50, received=50),
        turns=2,
        errors=0,
        first_error="",
        messages=150,
        audio_messages=150,
        messages_per_s=15.0,
        cpu_s=None,
        cpu_us_per_message=None,
        cpu_us_per_audio_message=None,
        rss_base_kib=None,
        rss_idle_kib=None,
        rss_per_session_kib=None,
        rss_peak_kib=None,
        generator_cpu_percent=10.0,
        late_sends=0,
        send_lag_max_ms=0.0,
        unmatched_upstream=0,
    )


@pytest.mark.parametrize(
    ("floor_p99", "proxy_p99", "lost", "passed", "reason"),
    [
        (1.0, 5.0, 0, True, ""),
        (1.0, 12.0, 0, False, "added p99 11.0 ms"),
        (1.0, 2.0, 3, False, "frames lost"),
        # A saturated generator makes the floor itself slow: the step is not a pass even though the difference
        # (here negative) is within the budget.
        (40.0, 8.0, 0, False, "generator saturated"),
    ],
)
def test_a_ramp_step_passes_only_within_budget_with_exact_frames_and_a_sound_floor(
    floor_p99: float, proxy_p99: float, lost: int, passed: bool, reason: str
) -> None:
    extra, ok, why = _judge([_result("direct", floor_p99), _result("proxy", proxy_p99, lost=lost)], budget_ms=10.0)
    assert extra["mic"] == pytest.approx(proxy_p99 - floor_p99)
    assert ok is passed
    assert reason in why


def test_added_latency_is_shown_only_when_the_floor_is_within_budget() -> None:
    sound = markdown_table([_result("direct", 1.0), _result("proxy", 3.0)], budget_ms=10.0)
    assert "| added p99 vs direct, mic / tts (ms) | 0.00 / 0.00 | 2.00 / 2.00 |" in sound
    flooded = markdown_table([_result("direct", 40.0), _result("proxy", 45.0)], budget_ms=10.0)
    assert "generator saturated (floor p99 40.00)" in flooded
    assert "5.00 / 5.00" not in flooded


def test_repeats_are_summarised_as_medians_with_their_range_and_same_run_ratios() -> None:
    runs = []
    for naive_cpu, proxy_cpu in ((200.0, 100.0), (300.0, 120.0), (250.0, 50.0)):
        naive, proxy = _result("naive", 2.0), _result("proxy", 3.0)
        naive.cpu_us_per_audio_message, proxy.cpu_us_per_audio_message = naive_cpu, proxy_cpu
        naive.cpu_s = proxy.cpu_s = 1.0
        runs.append([_result("direct", 1.0), naive, proxy])
    table = repeat_table(runs, budget_ms=10.0)
    assert table.splitlines()[0] == "| 3 runs: median (min-max) | **direct** | **naive** | **proxy** |"
    assert "| CPU µs per audio message | - | 250 (200-300) | 100 (50-120) |" in table
    # Ratios come from one run each (0.5, 0.4, 0.2), never from medians of different runs.
    assert "| CPU per audio message / naive's, same run | - | - | 0.40 (0.20-0.50) |" in table
    assert "| added p99 mic (ms) | - | 1.00 (1.00-1.00) | 2.00 (2.00-2.00) |" in table
    assert "| frames lost + reordered + duplicated | 0 (0-0) | 0 (0-0) | 0 (0-0) |" in table
