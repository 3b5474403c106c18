"""The Deepgram Listen simulator: options honoured, messages valid against the deepgram-sdk listen v1 models."""

from __future__ import annotations

import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from .helpers import LISTEN_MODELS, AgentClient, connect, silence, simulator, tone

ALL = "encoding=linear16&sample_rate=16000&interim_results=true&utterance_end_ms=1000&vad_events=true"


async def stream(ws, pcm: bytes, frame: int = 2730) -> None:  # type: ignore[no-untyped-def]
    for i in range(0, len(pcm), frame):
        await ws.send_message(pcm[i : i + frame])


async def close_stream(client: AgentClient) -> list[dict[str, object]]:
    await client.send({"type": "CloseStream"})
    messages = await client.until("Metadata")
    with pytest.raises(ConnectionClosed):
        await client.ws.get_message()
    assert client.ws.closed is not None
    assert client.ws.closed.code == 1000
    return messages


async def test_results_utterance_end_and_metadata() -> None:
    async with simulator() as port, connect(port, f"/v1/listen?{ALL}") as ws:
        client = AgentClient(ws, LISTEN_MODELS)
        await stream(ws, silence(300, 16000) + tone(2500, 16000) + silence(1500, 16000))
        messages = await client.until("UtteranceEnd")
        assert messages[0] == {"type": "SpeechStarted", "channel": [0], "timestamp": 0.3}
        interim = [m for m in messages if m["type"] == "Results" and not m["is_final"]]
        assert interim
        assert all(not m["speech_final"] for m in interim)
        final = next(m for m in messages if m["type"] == "Results" and m["is_final"])
        assert final["speech_final"] is True
        assert final["start"] == 0.3
        assert final["duration"] == 2.5
        assert final["channel"]["alternatives"][0]["transcript"] == "Hello this is a test of."
        assert messages[-1]["last_word_end"] == 2.8
        metadata = (await close_stream(client))[-1]
        assert metadata["duration"] == 4.3
        assert metadata["channels"] == 1


async def test_options_off_means_finals_only() -> None:
    async with simulator() as port, connect(port, "/v1/listen?encoding=linear16&sample_rate=16000") as ws:
        client = AgentClient(ws, LISTEN_MODELS)
        await stream(ws, tone(2500, 16000) + silence(1500, 16000))
        messages = await close_stream(client)
        assert [m["type"] for m in messages] == ["Results", "Metadata"]
        assert messages[0]["is_final"] is True


async def test_finalize_flushes_speech_in_progress_and_keepalive_is_silent() -> None:
    async with simulator() as port, connect(port, "/v1/listen?sample_rate=16000") as ws:
        client = AgentClient(ws, LISTEN_MODELS)
        await stream(ws, tone(900, 16000))
        await client.send({"type": "KeepAlive"})
        await client.send({"type": "Finalize"})
        result = await client.next()
        assert result["type"] == "Results"
        assert result["from_finalize"] is True
        assert result["is_final"] is True
        assert result["speech_final"] is False
        assert result["duration"] == 0.9


async def test_sample_rate_and_channels_are_honoured() -> None:
    mono = tone(2000, 8000) + silence(1000, 8000)
    stereo = np.repeat(np.frombuffer(mono, dtype="<i2"), 2).astype("<i2").tobytes()
    async with simulator() as port, connect(port, "/v1/listen?sample_rate=8000&channels=2") as ws:
        client = AgentClient(ws, LISTEN_MODELS)
        await stream(ws, stereo)
        messages = await close_stream(client)
        final = messages[0]
        assert final["channel_index"] == [0, 2]
        assert final["duration"] == 2.0
        assert messages[-1]["duration"] == 3.0
        assert messages[-1]["channels"] == 2


@pytest.mark.parametrize("query", ["encoding=opus", "sample_rate=abc", "interim_results=maybe", "utterance_end_ms=200"])
async def test_bad_options_are_refused_at_the_handshake(query: str) -> None:
    async with simulator() as port:
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(port, f"/v1/listen?{query}"):
                pass
        assert rejected.value.status_code == 400


async def test_idle_stream_is_closed_with_1011(autojump_clock: trio.testing.MockClock) -> None:
    from proxy.sim.server import SimOptions

    from .helpers import memory_connection

    async with memory_connection("/v1/listen", SimOptions(speed=0, client_message_timeout_s=10, faults="")) as ws:
        start = trio.current_time()
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        assert trio.current_time() - start == pytest.approx(10)
        assert ws.closed is not None
        assert ws.closed.code == 1011
