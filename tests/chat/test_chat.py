"""``python -m proxy chat`` against a fake component-protocol server and against the Deepgram agent simulator."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from proxy.chat import (
    AgentListener,
    ChatOptions,
    chat,
    main,
    parse_target,
    read_wav_16k,
    stream_audio,
    transcription_resource,
)
from proxy.config import Config, Limits, Upstream, UpstreamSource
from proxy.server import ProxyServer
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


def test_help_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "usage" in text
    assert "--url" in text
    assert "--text" in text


def test_empty_stdin_is_an_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("  \n"))
    assert main(["--url", "ws://127.0.0.1:1/openai"]) == 2
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
    assert out == "I heard about 1 second of speech.\n"


# -- a conversation on a terminal -------------------------------------------------------------------------------


def typed(*lines: str) -> Callable[[], Awaitable[str | None]]:
    """A line source that yields these lines, then the end of input."""
    pending = list(lines)

    async def next_line() -> str | None:
        return pending.pop(0) if pending else None

    return next_line


async def test_typed_lines_make_a_multi_turn_conversation() -> None:
    out, err = io.StringIO(), io.StringIO()
    lines = typed("first\n", "\n", "second\n", "What did I say?\n")
    async with agent_simulator() as url:
        status = await chat(ChatOptions(url=url, text_only=True), out, err, lines)
    assert (status, err.getvalue()) == (0, "")
    assert out.getvalue().splitlines() == [
        "You said: first.",
        "I heard you say: second.",
        'Before this you said "second"; you started with "first" (2 turns so far).',
    ]


async def test_each_typed_line_is_one_injected_message_after_the_reply_to_the_last() -> None:
    out, err = io.StringIO(), io.StringIO()
    async with fake_proxy() as (url, fake):
        status = await chat(ChatOptions(url=url, text_only=True), out, err, typed("one\n", "two\n"))
    assert status == 0
    assert out.getvalue() == "OK\nOK\n"
    injected = [m for m in fake.received if isinstance(m, dict) and m.get("type") == "InjectUserMessage"]
    assert injected == [
        {"type": "InjectUserMessage", "content": "one"},
        {"type": "InjectUserMessage", "content": "two"},
    ]


@pytest.mark.e2e
def test_on_a_terminal_it_prompts_and_keeps_the_conversation_going() -> None:
    """Real processes: the simulators, and the client on a pseudo-terminal (a prompt per turn, a reply per line,
    Ctrl-D ends with status 0)."""
    simulators = subprocess.Popen(
        [sys.executable, "-m", "proxy", "simulate", "--port", "0", "--speed", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    controller, terminal = pty.openpty()
    client: subprocess.Popen[bytes] | None = None
    seen = b""

    def read_until(marker: bytes, count: int) -> None:
        nonlocal seen
        while seen.count(marker) < count:
            chunk = os.read(controller, 4096)
            assert chunk, seen
            seen += chunk

    try:
        assert simulators.stdout is not None
        address = simulators.stdout.readline().decode().split()[-1]  # "... ws://HOST:PORT"
        client = subprocess.Popen(
            [sys.executable, "-m", "proxy", "chat", "--url", f"{address}/v1/agent/converse", "--text-only"],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
        )
        os.close(terminal)
        terminal = -1
        read_until(b"you> ", 1)
        os.write(controller, b"good morning\n")
        read_until(b"you> ", 2)
        os.write(controller, b"what did I say before?\n")
        read_until(b"you> ", 3)
        os.write(controller, b"\x04")
        assert client.wait(timeout=20) == 0
    finally:
        for process in (client, simulators):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    text = seen.decode().replace("\r\n", "\n")
    assert "type a message and press Enter" in text
    assert "You said: good morning.\n" in text
    assert 'Before this you said "good morning".\n' in text


# -- the saved reply ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["error", "close"])
async def test_save_audio_writes_nothing_when_no_reply_arrived(script: str, tmp_path: Path) -> None:
    target = tmp_path / "reply.wav"
    async with fake_proxy(script) as (url, _):
        status, _, _ = await run_chat(url=url, text="hello", save_audio=str(target))
    assert status == 1
    assert not target.exists()


async def test_save_audio_keeps_an_earlier_file_when_the_run_fails(tmp_path: Path) -> None:
    target = tmp_path / "reply.wav"
    target.write_bytes(b"earlier")
    async with fake_proxy("silent") as (url, _):
        status, _, _ = await run_chat(url=url, text="hello", save_audio=str(target), timeout=0.2)
    assert status == 1
    assert target.read_bytes() == b"earlier"


# -- microphone audio ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (24000, 1), (48000, 1), (16000, 2), (24000, 2), (48000, 2)])
def test_16_24_and_48_khz_mono_or_stereo_become_16_khz_mono(rate: int, channels: int, tmp_path: Path) -> None:
    mono = np.frombuffer(tone(500, rate), dtype="<i2")
    path = tmp_path / "in.wav"
    write_wav(path, np.repeat(mono, channels).astype("<i2").tobytes(), rate, channels)
    pcm = read_wav_16k(str(path))
    assert len(pcm) == 16000  # half a second at 16 kHz, 2 bytes a sample
    assert rms(pcm) == pytest.approx(rms(mono.tobytes()), rel=0.02)
    if rate == 16000:
        assert pcm == mono.tobytes()


async def test_audio_is_sent_in_85_ms_frames_at_real_time_pace(autojump_clock: trio.testing.MockClock) -> None:
    sent: list[tuple[float, int]] = []
    start = trio.current_time()

    async def send(frame: bytes) -> None:
        sent.append((round(trio.current_time() - start, 9), len(frame)))

    await stream_audio(send, bytes(2 * 16000))  # one second
    assert sent == [(round(i * 0.085, 9), 2720) for i in range(11)] + [(0.935, 2080)]


# -- the transcription route ------------------------------------------------------------------------------------


async def test_transcription_route_prints_final_transcripts_from_the_listen_simulator(tmp_path: Path) -> None:
    path = tmp_path / "speech.wav"
    write_wav(path, silence(200, 24000) + tone(900, 24000) + silence(700, 24000), 24000, 2)
    async with agent_simulator() as agent_url:
        url = agent_url.replace("/v1/agent/converse", "/v1/listen")
        status, out, err = await run_chat(url=url, audio=str(path))
    assert (status, err) == (0, "")
    assert out == "Hello.\n"


async def test_transcription_through_the_proxy_route(tmp_path: Path) -> None:
    path = tmp_path / "speech.wav"
    write_wav(path, tone(900, 16000) + silence(700, 16000), 16000, 1)
    async with trio.open_nursery() as nursery:
        sim_port = await nursery.start(serve_simulators, "127.0.0.1", 0, SimOptions(speed=0, faults=""))
        config = Config(
            port=0,
            deepgram_listen=Upstream(f"ws://127.0.0.1:{sim_port}/v1/listen", None, UpstreamSource.URL),
            limits=Limits(ping_interval_s=0),
        )
        port = await nursery.start(ProxyServer(config).serve)
        url = f"ws://127.0.0.1:{port}/deepgram-proxy?service=transcription&interim_results=true"
        status, out, err = await run_chat(url=url, audio=str(path))
        nursery.cancel_scope.cancel()
    assert (status, err) == (0, "")
    assert out == "Hello this.\n"  # interim results are not printed, only finals


async def test_transcription_needs_audio() -> None:
    status, _, err = await run_chat(url="ws://127.0.0.1:9/deepgram-proxy?service=transcription", text="hi")
    assert status == 2
    assert "needs --audio" in err


def test_the_transcription_url_gets_the_audio_format_unless_it_names_one() -> None:
    target = transcription_resource(parse_target("ws://h:1/deepgram-proxy?service=transcription"))
    assert target.resource == "/deepgram-proxy?service=transcription&encoding=linear16&sample_rate=16000"
    given = parse_target("ws://h:1/deepgram-proxy?service=transcription&encoding=linear16&sample_rate=16000")
    assert transcription_resource(given) == given


def test_a_binary_audio_frame_that_starts_with_a_brace_is_kept_as_speech() -> None:
    speech = bytearray()
    listener = AgentListener(io.StringIO(), speech)
    frame = b"{\x00" + b"\x01\x02" * 100  # a first sample of 123: its low byte is "{"
    listener.on_message(frame)
    listener.on_message(b'{"type":"SettingsApplied"}')  # JSON in a binary frame is still a message
    assert bytes(speech) == frame
    assert listener.applied.is_set()
