"""``python -m proxy chat``: talk to a running proxy the way the voice-agent component does, from a terminal.

It connects to ``--url`` (``/openai`` or ``/deepgram-proxy``: both speak the component protocol), sends
``Settings``, and once ``SettingsApplied`` arrives sends the message (``--text`` or standard input) as an
``InjectUserMessage`` and/or streams a WAV file as microphone audio (``--audio``, resampled to 16 kHz mono and sent
in real time in 85 ms frames). The agent's replies (assistant ``ConversationText``) go to standard output; its
speech can be saved with ``--save-audio out.wav``. It finishes when the reply is complete (an assistant text and
the end of its audio) and exits non-zero with a message on standard error on an ``Error``, a timeout, or an
early close.
"""

from __future__ import annotations

import argparse
import json
import sys
import wave
from dataclasses import dataclass
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

import numpy as np
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

MIC_RATE: Final = 16_000
AGENT_RATE: Final = 24_000
FRAME_MS: Final = 85
TRAILING_SILENCE_MS: Final = 1500  # lets a server VAD see the end of the utterance
DEFAULT_PROMPT: Final = "You are a helpful voice assistant."


@dataclass(frozen=True)
class ChatOptions:
    url: str = "ws://127.0.0.1:8080/openai"
    text: str | None = None
    audio: str | None = None
    save_audio: str | None = None
    text_only: bool = False
    timeout: float = 20.0
    prompt: str = DEFAULT_PROMPT


class ChatError(Exception):
    """Ends the chat with exit status 1 and this message on standard error."""


def settings_message(url: str, *, prompt: str = DEFAULT_PROMPT, listen: bool = False) -> dict[str, Any]:
    """The Settings the component would send on this URL (the OpenAI translator or the Deepgram route)."""
    audio = {
        "input": {"encoding": "linear16", "sample_rate": MIC_RATE},
        "output": {"encoding": "linear16", "sample_rate": AGENT_RATE},
    }
    if "/openai" in urlsplit(url).path:
        agent: dict[str, Any] = {
            "language": "en",
            "think": {"provider": {"type": "open_ai", "model": "gpt-realtime"}, "prompt": prompt},
            "speak": {"provider": {"type": "deepgram", "model": "aura-asteria-en"}},
            "idleTimeoutMs": 10000,
        }
    else:
        agent = {
            "language": "en",
            "think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}, "prompt": prompt},
            "speak": {"provider": {"type": "deepgram", "model": "aura-asteria-en"}},
        }
        if listen:
            agent["listen"] = {"provider": {"type": "deepgram", "model": "nova-3"}}
    return {"type": "Settings", "audio": audio, "agent": agent}


def read_wav_16k(path: str) -> bytes:
    """A PCM16 WAV file (any rate, any channel count) as 16 kHz mono PCM16 little-endian."""
    try:
        with wave.open(path, "rb") as wav:
            if wav.getsampwidth() != 2:
                raise ChatError(f"{path}: only 16-bit PCM WAV files are supported")
            rate, channels = wav.getframerate(), wav.getnchannels()
            raw = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ChatError(f"cannot read {path}: {exc}") from None
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if channels > 1:
        samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels).mean(axis=1)
    if rate != MIC_RATE and len(samples):
        n = round(len(samples) * MIC_RATE / rate)
        samples = np.interp(np.arange(n) * rate / MIC_RATE, np.arange(len(samples)), samples)
    return bytes(np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes())


def write_wav(path: str, pcm: bytes, rate: int = AGENT_RATE) -> None:
    with wave.open(path, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm[: len(pcm) - len(pcm) % 2])


async def chat(options: ChatOptions, out: TextIO, err: TextIO) -> int:
    """Run one exchange; returns the exit status."""
    speech = bytearray()
    try:
        mic = read_wav_16k(options.audio) if options.audio else b""
        mic += bytes(MIC_RATE * TRAILING_SILENCE_MS // 1000 * 2) if mic else b""
        with trio.fail_after(options.timeout + len(mic) / 2 / MIC_RATE):
            await _exchange(options, mic, out, speech)
    except BaseException as exc:  # classified below; anything else is re-raised
        problem = _leaf(exc)
        if isinstance(problem, trio.TooSlowError):
            message = "Timeout waiting for response"
        elif isinstance(problem, ConnectionClosed):
            message = "Connection closed before response"
        elif isinstance(problem, HandshakeError | OSError):
            detail = problem.strerror if isinstance(problem, OSError) and problem.strerror else problem
            message = f"Cannot connect to {options.url}: {detail}"
        elif isinstance(problem, ChatError):
            message = str(problem)
        else:
            raise
        print(message, file=err, flush=True)
        return 1
    finally:
        if options.save_audio and not options.text_only:
            write_wav(options.save_audio, bytes(speech))
    return 0


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _exchange(options: ChatOptions, mic: bytes, out: TextIO, speech: bytearray) -> None:
    frame_bytes = MIC_RATE * FRAME_MS // 1000 * 2
    async with open_websocket_url(options.url, max_message_size=16 * 1024 * 1024) as ws:
        settings = settings_message(options.url, prompt=options.prompt, listen=bool(mic))
        await ws.send_message(json.dumps(settings))
        async with trio.open_nursery() as nursery:
            applied = replied = audio_done = False
            while not (replied and audio_done):
                message = await ws.get_message()
                # Deepgram sometimes sends JSON in binary frames; the component sniffs them too.
                if isinstance(message, bytes) and message[:1] != b"{":
                    speech += message
                    continue
                try:
                    event = json.loads(message)
                except ValueError:
                    continue
                kind = event.get("type") if isinstance(event, dict) else None
                if kind == "SettingsApplied" and not applied:
                    applied = True
                    if options.text:
                        await ws.send_message(json.dumps({"type": "InjectUserMessage", "content": options.text}))
                    if mic:
                        nursery.start_soon(_stream_mic, ws, mic, frame_bytes)
                elif kind == "ConversationText" and event.get("role") == "assistant":
                    print(event.get("content", ""), file=out, flush=True)
                    replied = True
                elif kind in ("AgentAudioDone", "response.output_audio.done") and applied:
                    audio_done = True
                elif kind == "Error":
                    description, code = event.get("description", ""), event.get("code", "")
                    raise ChatError(f"Error from agent: {description} (code {code})")
            nursery.cancel_scope.cancel()


async def _stream_mic(ws: Any, pcm: bytes, frame_bytes: int) -> None:
    start = trio.current_time()
    for i, offset in enumerate(range(0, len(pcm), frame_bytes)):
        await trio.sleep_until(start + i * FRAME_MS / 1000)
        await ws.send_message(pcm[offset : offset + frame_bytes])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m proxy chat",
        description="Talk to a running proxy as the voice-agent component does and print the agent's reply.",
        epilog="usage example: python -m proxy chat --url ws://127.0.0.1:8080/openai --text 'Hello'",
    )
    p.add_argument("--url", default=ChatOptions.url, help=f"proxy WebSocket URL (default {ChatOptions.url})")
    p.add_argument("--text", help="the message to send (default: read standard input)")
    p.add_argument("--audio", metavar="IN.wav", help="stream a PCM16 WAV file as microphone audio")
    p.add_argument("--save-audio", metavar="OUT.wav", help="write the agent's speech to a WAV file")
    p.add_argument("--text-only", action="store_true", help="do not save audio")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for the reply (default 20)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="the agent's instructions")
    return p


def main(argv: list[str]) -> int:
    """``python -m proxy chat [...]``; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 1
    text = args.text
    if text is None and args.audio is None:
        text = sys.stdin.read()
    text = text.strip() if text is not None else None
    if not text and args.audio is None:
        print("Nothing to send: give --text, --audio or a message on standard input", file=sys.stderr)
        return 1
    if args.timeout <= 0:
        print("--timeout must be positive", file=sys.stderr)
        return 1
    options = ChatOptions(
        url=args.url,
        text=text or None,
        audio=args.audio,
        save_audio=args.save_audio,
        text_only=args.text_only,
        timeout=args.timeout,
        prompt=args.prompt,
    )
    try:
        return trio.run(chat, options, sys.stdout, sys.stderr)
    except ChatError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
