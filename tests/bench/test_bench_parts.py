"""The benchmark's measuring instruments: sequence numbers in audio, arrival accounting, the lean WebSocket."""

from __future__ import annotations

import base64
from functools import partial

import pytest
import trio
from trio_websocket import WebSocketRequest, open_websocket_url, serve_websocket

from bench.cli import _judge
from bench.report import Accounting, Latency, TargetResult
from bench.streams import Stream
from bench.wire import (
    MIC_FRAME_SAMPLES,
    SEQ_MODULUS,
    TTS_CHUNK_SAMPLES,
    constant_value,
    pcm,
    pcm_base64,
    seq_value,
    unwrap,
)
from bench.ws import Closed, accept, connect
from proxy.audio import Resampler16kTo24k


def test_sequence_values_survive_the_proxy_resampler() -> None:
    resampler = Resampler16kTo24k()
    values = [seq_value(1234, seq) for seq in range(50)]
    decoded = [constant_value(resampler.push(pcm(value, MIC_FRAME_SAMPLES))) for value in values]
    assert decoded == values


def test_constant_value_is_the_most_common_sample_when_head_and_tail_differ() -> None:
    data = pcm(7, 3) + pcm(9, 10) + pcm(5, 1)
    assert constant_value(data) == 9
    assert constant_value(b"\x01") is None


@pytest.mark.parametrize("samples", [TTS_CHUNK_SAMPLES, 2_040, 7])
def test_pcm_base64_is_the_base64_of_the_pcm(samples: int) -> None:
    assert pcm_base64(-3, samples) == base64.b64encode(pcm(-3, samples)).decode()


@pytest.mark.parametrize("seq", [0, 1, SEQ_MODULUS - 1, SEQ_MODULUS, 3 * SEQ_MODULUS + 17])
def test_unwrap_recovers_the_sequence_number_across_the_modulus(seq: int) -> None:
    offset = 29_990
    assert unwrap(seq_value(offset, seq), offset, max(seq - 3, 0)) == seq
    assert unwrap(seq_value(offset, seq), offset, seq + 5) == seq


def test_stream_accounting_counts_lost_reordered_and_duplicate_frames() -> None:
    stream = Stream(offset=100)
    values = []
    for i in range(6):
        values.append(stream.next_value())
        stream.mark_sent(float(i))
    for seq in (0, 2, 1, 4, 4):  # 1 late, 4 twice, 3 and 5 never
        stream.arrived(values[seq], 10.0)
    assert (stream.sent, stream.received, stream.lost, stream.reordered, stream.duplicates) == (6, 4, 2, 1, 1)


def test_stream_latency_is_receive_minus_send_time() -> None:
    stream = Stream(offset=0)
    value = stream.next_value()
    stream.mark_sent(1.25)
    assert stream.arrived(value, 1.5) == pytest.approx(0.25)


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
