"""Simulated VAD follows the session's ``turn_detection``: a quiet patch shorter than ``silence_duration_ms`` does
not split an utterance, ``threshold`` sets the loudness that counts as speech, and ``audio_start_ms`` includes
``prefix_padding_ms`` as the API documents."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import trio.testing

from .helpers import AgentClient, memory_connection, silence, tone
from .test_agent_sim import PATH as AGENT_PATH
from .test_agent_sim import ready
from .test_openai_sim import PATH, open_session

RATE = 24_000


async def vad_events(pcm: bytes, **turn_detection: Any) -> list[dict[str, Any]]:
    """The speech_started / speech_stopped events the simulator sends for ``pcm`` (appended in 100 ms pieces)."""
    turn = {"type": "server_vad", "create_response": False, **turn_detection}
    async with memory_connection(PATH) as ws:
        client = await open_session(ws, audio={"input": {"turn_detection": turn}})
        for i in range(0, len(pcm), RATE // 5):
            await client.send(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i : i + RATE // 5]).decode()}
            )
        await client.send({"type": "input_audio_buffer.clear"})
        events = await client.until("input_audio_buffer.cleared")
    wanted = ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped")
    return [
        {k: v for k, v in e.items() if k in ("type", "audio_start_ms", "audio_end_ms")}
        for e in events
        if e["type"] in wanted
    ]


SPEECH_WITH_A_PAUSE = silence(400, RATE) + tone(600, RATE) + silence(300, RATE) + tone(600, RATE) + silence(800, RATE)


async def test_a_pause_shorter_than_the_silence_duration_keeps_one_turn(autojump_clock: trio.testing.MockClock) -> None:
    events = await vad_events(SPEECH_WITH_A_PAUSE, silence_duration_ms=500, prefix_padding_ms=300)
    assert events == [
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 400 - 300},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 400 + 600 + 300 + 600 + 500},
    ]


async def test_a_pause_longer_than_the_silence_duration_splits_the_turn(autojump_clock: trio.testing.MockClock) -> None:
    events = await vad_events(SPEECH_WITH_A_PAUSE, silence_duration_ms=200, prefix_padding_ms=100)
    assert events == [
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 400 - 100},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 400 + 600 + 200},
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 400 + 600 + 300 - 100},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 400 + 600 + 300 + 600 + 200},
    ]


@pytest.mark.parametrize(("threshold", "heard"), [(0.5, False), (0.2, True)])
async def test_the_threshold_decides_what_counts_as_speech(
    threshold: float, heard: bool, autojump_clock: trio.testing.MockClock
) -> None:
    quiet = silence(200, RATE) + tone(600, RATE, amplitude=0.015) + silence(500, RATE)  # about -39 dBFS
    events = await vad_events(quiet, threshold=threshold, silence_duration_ms=200, prefix_padding_ms=0)
    assert [e["type"] for e in events] == (
        ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"] if heard else []
    )


async def test_the_voice_agent_keeps_an_utterance_with_short_pauses_as_one_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pcm = tone(500, 16000) + silence(400, 16000) + tone(500, 16000) + silence(900, 16000)
    async with memory_connection(AGENT_PATH) as ws:
        client: AgentClient = await ready(ws)
        for i in range(0, len(pcm), 3200):
            await client.ws.send_message(pcm[i : i + 3200])
        await client.send({"type": "KeepAlive"})
        got = await client.until("AgentAudioDone")
    kinds = [m["type"] for m in got]
    assert kinds.count("UserStartedSpeaking") == 1
    assert kinds.count("ConversationText") == 2  # one user turn, one reply
