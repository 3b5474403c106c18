"""``python -m proxy chat`` against a fake component-protocol server and against the Deepgram agent simulator."""

from __future__ import annotations

import io
import json
import sys
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from proxy.chat import ChatOptions, chat, main, read_wav_16k
from proxy.sim.server import SimOptions, serve_simulators
from tests.sim.helpers import rms, silence, tone


class FakeProxy:
    """Speaks the component protocol: SettingsApplied for Settings; ``script`` answers InjectUserMessage."""

    def __init__(self, script: str = "ok") -> None:
        self.script = script
        self.received: list[object] = []

    async def handle(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                frame = await ws.get_message()
                message = json.loads(frame) if isinstance(frame, str) else frame
                self.received.append(message)
                if not isinstance(message, dict):
                    continue
                if message.get("type") == "Settings":
                    await ws.send_message('{"type":"SettingsApplied"}')
                elif message.get("type") == "InjectUserMessage":
                    await self.answer(ws, message["content"])
        except ConnectionClosed:
            pass

    async def answer(self, ws, content: str) -> None:  # type: ignore[no-untyped-def]
        send = ws.send_message
        if self.script == "ok":
            await send(json.dumps({"type": "ConversationText", "role": "user", "content": content}))
            await send(json.dumps({"type": "ConversationText", "role": "assistant", "content": "OK"}))
            await send(b"\x01\x02" * 100)
            await send('{"type":"AgentDone"}')
            await send('{"type":"AgentAudioDone"}')
        elif self.script == "audio-first":  # the translator's order for real audio replies (reference trace B)
            await send(b"\x01\x02" * 100)
            await send('{"type":"AgentAudioDone"}')
            await send(json.dumps({"type": "ConversationText", "role": "assistant", "content": "Heard you."}))
        elif self.script == "legacy":  # the reference CLI test's raw OpenAI events
            await send('{"type":"response.output_audio.delta","delta":"AAAA"}')
            await send('{"type":"response.output_audio.done"}')
            await send(json.dumps({"type": "ConversationText", "role": "assistant", "content": "Heard you."}))
        elif self.script == "error":
            await send('{"type":"Error","description":"The upstream refused","code":"upstream_auth_failed"}')
        elif self.script == "close":
            await ws.aclose(1011, "gone")
        # "silent": never answers


@asynccontextmanager
async def fake_proxy(script: str = "ok") -> AsyncIterator[tuple[str, FakeProxy]]:
    fake = FakeProxy(script)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, fake.handle, "127.0.0.1", 0, None))
        yield f"ws://127.0.0.1:{server.port}/openai", fake
        nursery.cancel_scope.cancel()


async def run_chat(**kwargs: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = await chat(ChatOptions(**kwargs), out, err)  # type: ignore[arg-type]
    return status, out.getvalue(), err.getvalue()


async def test_text_gets_the_reply_printed() -> None:
    async with fake_proxy() as (url, fake):
        status, out, err = await run_chat(url=url, text="hello", text_only=True)
    assert (status, out, err) == (0, "OK\n", "")
    settings, inject = fake.received[0], fake.received[1]
    assert isinstance(settings, dict)
    assert settings["type"] == "Settings"
    assert settings["agent"]["think"]["prompt"]
    assert settings["audio"]["input"] == {"encoding": "linear16", "sample_rate": 16000}
    assert inject == {"type": "InjectUserMessage", "content": "hello"}


@pytest.mark.parametrize("script", ["audio-first", "legacy"])
async def test_reply_text_after_the_audio_end_is_still_printed(script: str) -> None:
    async with fake_proxy(script) as (url, _):
        status, out, _ = await run_chat(url=url, text="hello")
    assert (status, out) == (0, "Heard you.\n")


async def test_error_exits_1_with_description_and_code() -> None:
    async with fake_proxy("error") as (url, _):
        status, out, err = await run_chat(url=url, text="hello")
    assert status == 1
    assert out == ""
    assert "The upstream refused" in err
    assert "upstream_auth_failed" in err


async def test_early_close_exits_1() -> None:
    async with fake_proxy("close") as (url, _):
        status, _, err = await run_chat(url=url, text="hello")
    assert status == 1
    assert "Connection closed before response" in err


async def test_timeout_exits_1() -> None:
    async with fake_proxy("silent") as (url, _):
        status, _, err = await run_chat(url=url, text="hello", timeout=0.3)
    assert status == 1
    assert "Timeout waiting for response" in err


async def test_nothing_listening_exits_1() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status, _, err = await run_chat(url=f"ws://127.0.0.1:{port}/openai", text="hello")
    assert status == 1
    assert "Cannot connect" in err


def test_help_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "usage" in text
    assert "--url" in text
    assert "--text" in text


def test_empty_stdin_is_an_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("  \n"))
    assert main(["--url", "ws://127.0.0.1:1/openai"]) == 1
    assert "Nothing to send" in capsys.readouterr().err


@pytest.mark.e2e
async def test_message_from_stdin_in_a_real_process() -> None:
    async with fake_proxy() as (url, fake):
        with trio.fail_after(30):
            result = await trio.run_process(
                [sys.executable, "-m", "proxy", "chat", "--url", url, "--text-only"],
                stdin=b"hi from stdin\n",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"OK\n"
    assert {"type": "InjectUserMessage", "content": "hi from stdin"} in fake.received


@asynccontextmanager
async def agent_simulator() -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_simulators, "127.0.0.1", 0, SimOptions(speed=0, faults=""))
        yield f"ws://127.0.0.1:{port}/v1/agent/converse"
        nursery.cancel_scope.cancel()


async def test_against_the_agent_simulator_saves_speech(tmp_path: Path) -> None:
    target = tmp_path / "reply.wav"
    async with agent_simulator() as url:
        status, out, err = await run_chat(url=url, text="good morning", save_audio=str(target))
    assert (status, out, err) == (0, "You said: good morning.\n", "")
    with wave.open(str(target)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24000, 1, 2)
        pcm = wav.readframes(wav.getnframes())
    assert len(pcm) > 24000
    assert rms(pcm) > 1000


def write_wav(path: Path, pcm: bytes, rate: int, channels: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def test_wav_input_is_resampled_to_16k_mono(tmp_path: Path) -> None:
    mono = np.frombuffer(tone(1000, 44100), dtype="<i2")
    stereo = np.repeat(mono, 2).astype("<i2").tobytes()
    path = tmp_path / "in.wav"
    write_wav(path, stereo, 44100, 2)
    pcm = read_wav_16k(str(path))
    assert len(pcm) == 32000  # one second at 16 kHz, 2 bytes a sample
    assert rms(pcm) == pytest.approx(rms(mono.tobytes()), rel=0.02)


async def test_audio_file_is_streamed_as_a_spoken_turn(tmp_path: Path) -> None:
    path = tmp_path / "question.wav"
    write_wav(path, silence(200, 48000) + tone(900, 48000) + silence(200, 48000), 48000, 1)
    async with agent_simulator() as url:
        status, out, err = await run_chat(url=url, audio=str(path), text_only=True)
    assert (status, err) == (0, "")
    assert out == "You said: Hello this.\n"
