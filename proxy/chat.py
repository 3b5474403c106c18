"""``python -m proxy chat``: talk to a running proxy the way the voice-agent component does, from a terminal.

It connects to ``--url`` (``/openai`` or ``/deepgram-proxy``: both speak the component protocol), sends
``Settings``, and once ``SettingsApplied`` arrives sends the message (``--text`` or standard input) as an
``InjectUserMessage`` and/or streams a WAV file as microphone audio (``--audio``, converted to 16 kHz mono and sent
in real time in 85 ms frames). The agent's replies (assistant ``ConversationText``) go to standard output; its
speech can be saved with ``--save-audio out.wav``. A reply is complete when its text and the end of its audio have
both arrived. On a terminal with neither ``--text`` nor ``--audio`` it prompts for one message after another.

On the transcription route (``/deepgram-proxy?service=transcription``) it streams ``--audio`` and prints each
final transcript as it arrives.

Every failure is one sentence on standard error and an exit status of its own (:data:`EXIT_STATUSES`): the
sentence names what went wrong from the user's side (nothing listening, a host name that does not resolve, a TLS
problem, the HTTP status that refused the upgrade) and what to try. The client token never appears in it: URLs
are shown without their query string.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit

import h11
import numpy as np
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from . import chat_functions

MIC_RATE: Final = 16_000
AGENT_RATE: Final = 24_000
FRAME_MS: Final = 85
TRAILING_SILENCE_MS: Final = 1500  # lets a server VAD see the end of the utterance
DEFAULT_PROMPT: Final = "You are a helpful voice assistant."
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
PROMPT: Final = "you> "

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # connected, but the exchange failed: an Error from the agent, a timeout, an early close
EXIT_USAGE: Final = 2  # a wrong flag, nothing to send, an unreadable WAV file
EXIT_UNREACHABLE: Final = 3  # no connection: refused, unknown host, TLS failure, no answer
EXIT_REFUSED: Final = 4  # the server answered the WebSocket upgrade with an HTTP error status
EXIT_STATUSES: Final = {
    EXIT_OK: "the reply (or the transcription) arrived",
    EXIT_FAILED: "the agent answered with an Error, no reply came in time, or the connection closed early",
    EXIT_USAGE: "a wrong option, nothing to send, or an unreadable WAV file",
    EXIT_UNREACHABLE: "no connection: nothing listening, a host name that does not resolve, or a TLS failure",
    EXIT_REFUSED: "the server refused the WebSocket upgrade with an HTTP status (404, 401, 403, 503, ...)",
}


@dataclass(frozen=True)
class ChatOptions:
    url: str = "ws://127.0.0.1:8080/openai"
    text: str | None = None
    audio: str | None = None
    save_audio: str | None = None
    text_only: bool = False
    timeout: float = 20.0
    prompt: str = DEFAULT_PROMPT
    token: str | None = field(default=None, repr=False)
    origin: str | None = None
    ssl_context: ssl.SSLContext | None = None  # None: the system's trusted certificates


class ChatError(Exception):
    """Ends the chat with ``status`` and this message (one sentence) on standard error."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Target:
    """Where ``--url`` points, split the way the connection needs it."""

    secure: bool
    host: str
    port: int
    resource: str  # path and query, as sent in the request line
    path: str

    @property
    def shown(self) -> str:
        """The URL without its query string (which may carry a token)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.secure else 'ws'}://{host}:{self.port}{self.path}"

    @property
    def transcription(self) -> bool:
        query = urlsplit(self.resource).query
        services = [value for name, value in parse_qsl(query) if name == "service"]
        return self.path.rstrip("/").endswith("/v1/listen") or services[:1] == ["transcription"]


def parse_target(url: str) -> Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ChatError(f"--url {url!r} is not a valid URL", EXIT_USAGE) from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ChatError("--url must be a ws:// or wss:// URL with a host, like ws://127.0.0.1:8080/openai", EXIT_USAGE)
    secure = parts.scheme == "wss"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(secure, parts.hostname, port or (443 if secure else 80), resource, parts.path or "/")


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
    agent["think"]["functions"] = chat_functions.DECLARED
    return {"type": "Settings", "audio": audio, "agent": agent}


def read_wav_16k(path: str) -> bytes:
    """A PCM16 WAV file (any rate, any channel count) as 16 kHz mono PCM16 little-endian."""
    try:
        with wave.open(path, "rb") as wav:
            if wav.getsampwidth() != 2:
                raise ChatError(f"{path}: only 16-bit PCM WAV files are supported", EXIT_USAGE)
            rate, channels = wav.getframerate(), wav.getnchannels()
            raw = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ChatError(f"cannot read {path}: {exc}", EXIT_USAGE) from None
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


# ---- explaining failures (pure: an exception or an HTTP answer in, one sentence and a status out) ----


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the members of exception groups, depth first, each once."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(reversed(current.exceptions))
        stack.extend(linked for linked in (current.__context__, current.__cause__) if linked is not None)


def explain_connect_failure(exc: BaseException, target: Target, timeout: float) -> ChatError:
    """Why no connection (TCP or TLS) could be opened to ``target``."""
    where = f"Cannot connect to {target.shown}:"
    causes = list(_causes(exc))

    def first(kind: type[BaseException]) -> BaseException | None:
        return next((cause for cause in causes if isinstance(cause, kind)), None)

    if first(socket.gaierror) is not None:
        sentence = (
            f"{where} the host name {target.host!r} does not resolve; check the host in --url "
            "(and the network or DNS settings)."
        )
    elif (verify := first(ssl.SSLCertVerificationError)) is not None:
        detail = getattr(verify, "verify_message", None) or "verification failed"
        sentence = f"{where} the server's TLS certificate is not trusted ({detail})."
    elif (tls := first(ssl.SSLError)) is not None:
        detail = getattr(tls, "reason", None) or str(tls)
        sentence = (
            f"{where} the TLS handshake failed ({detail}); if the server speaks plain WebSocket, use a ws:// URL."
        )
    elif first(ConnectionRefusedError) is not None:
        sentence = (
            f"{where} nothing is listening on {target.host}:{target.port} (connection refused); "
            "start the proxy with 'python -m proxy' or check the port."
        )
    elif first(trio.TooSlowError) is not None:
        sentence = f"{where} no answer within {timeout:g} s."
    elif target.secure and first(trio.BrokenResourceError) is not None:
        sentence = f"{where} the server closed the connection during the TLS handshake; is it a wss:// server?"
    elif (error := first(OSError)) is not None:
        detail = getattr(error, "strerror", None) or str(error) or type(error).__name__
        sentence = f"{where} {detail}."
    else:
        sentence = f"{where} {type(exc).__name__}."
    return ChatError(sentence, EXIT_UNREACHABLE)


def _body_text(body: bytes | None) -> str:
    text = (body or b"").decode("utf-8", "replace").strip()
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text[:120]


def explain_rejection(
    status: int, headers: tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]], body: bytes | None,
    target: Target, options: ChatOptions,
) -> ChatError:  # fmt: skip
    """Why the server answered the WebSocket upgrade with an HTTP status instead of accepting it."""
    said = _body_text(body)
    answer = f"HTTP {status}: {said}" if said else f"HTTP {status}"
    if status == 401:
        advice = (
            "the token given with --token was not accepted"
            if options.token
            else "it needs a client token; pass it with --token"
        )
        sentence = f"The proxy at {target.shown} refused the connection ({answer}): {advice}."
    elif status == 403:
        advice = (
            f"the origin {options.origin!r} is not allowed"
            if options.origin
            else "it only admits allowed origins; pass one with --origin"
        )
        sentence = f"The proxy at {target.shown} refused the connection ({answer}): {advice}."
    elif status == 404:
        sentence = (
            f"The server at {target.host}:{target.port} has no WebSocket route {target.path!r} ({answer}); "
            "the proxy's routes are /openai and /deepgram-proxy."
        )
    elif status == 503:
        retry = next((value for name, value in headers if name.lower() == b"retry-after"), None)
        later = f"try again in {_body_text(retry)} s" if retry else "try again later"
        sentence = f"The proxy at {target.shown} is not taking new sessions now ({answer}); {later}."
    else:
        sentence = f"The server at {target.shown} refused the WebSocket upgrade ({answer})."
    return ChatError(sentence, EXIT_REFUSED)


def _closed_sentence(closed: ConnectionClosed, what: str) -> str:
    reason = closed.reason
    code = getattr(reason, "code", None)
    text = _body_text(str(getattr(reason, "reason", "") or "").encode())
    detail = f" (close code {code}{': ' + text if text else ''})" if code is not None else ""
    return f"Connection closed before {what}{detail}."


# ---- the connection ----


async def _open_stream(target: Target, options: ChatOptions) -> trio.abc.Stream:
    if not target.secure:
        return await trio.open_tcp_stream(target.host, target.port)
    context = options.ssl_context or ssl.create_default_context()
    stream = await trio.open_ssl_over_tcp_stream(target.host, target.port, ssl_context=context, https_compatible=True)
    try:
        # The WebSocket library would only notice a TLS failure as a handshake timeout; handshake here first.
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


class _EndWatch(trio.abc.Stream):
    """A stream that notes its end of input: the WebSocket library waits forever for an upgrade answer that a
    server hanging up will never send, so the upgrade is raced against this."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ended = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, OSError):
            self.ended.set()
            raise
        if not data:
            self.ended.set()
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()


async def _first_of(
    upgrade: Callable[[], Awaitable[WebSocketConnection]], ended: Callable[[], Awaitable[object]]
) -> WebSocketConnection | None:
    """The upgraded connection, or None when ``ended`` returns first."""
    result: WebSocketConnection | None = None

    async def run_upgrade() -> None:
        nonlocal result
        result = await upgrade()
        race.cancel_scope.cancel()

    async def run_ended() -> None:
        await ended()
        race.cancel_scope.cancel()

    async with trio.open_nursery() as race:
        race.start_soon(run_upgrade)
        race.start_soon(run_ended)
    return result


@asynccontextmanager
async def connect(target: Target, options: ChatOptions) -> AsyncIterator[WebSocketConnection]:
    """An open WebSocket to ``target``; every way of not getting one is a :class:`ChatError`."""
    try:
        with trio.fail_after(options.timeout):
            stream = await _open_stream(target, options)
    except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
        raise explain_connect_failure(exc, target, options.timeout) from None
    host = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    headers = [(b"Origin", options.origin.encode())] if options.origin else []
    # The form Deepgram's own clients use; it keeps the token out of the URL (and out of access logs).
    subprotocols = ["token", options.token] if options.token else None
    opened = False
    watched = _EndWatch(stream)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(options.timeout):
                ws = await _first_of(
                    partial(
                        wrap_client_stream,
                        nursery,
                        watched,  # type: ignore[arg-type]
                        host,
                        target.resource,
                        subprotocols=subprotocols,
                        extra_headers=headers,
                        max_message_size=MAX_MESSAGE_BYTES,
                    ),
                    watched.ended.wait,
                )
            if ws is None:
                raise trio.BrokenResourceError("the server closed the connection during the upgrade")
            opened = True
            try:
                yield ws
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseException as exc:
        if opened:
            raise
        await trio.aclose_forcefully(stream)
        raise explain_upgrade_failure(exc, target, options) from None


def explain_upgrade_failure(exc: BaseException, target: Target, options: ChatOptions) -> BaseException:
    """Why the WebSocket upgrade failed after the connection opened (anything unexplained is returned as is)."""
    causes = list(_causes(exc))
    rejected = next((cause for cause in causes if isinstance(cause, ConnectionRejected)), None)
    if rejected is not None:
        return explain_rejection(rejected.status_code, rejected.headers, rejected.body, target, options)
    if any(isinstance(cause, trio.TooSlowError) for cause in causes):
        return ChatError(
            f"Cannot connect to {target.shown}: no answer to the WebSocket upgrade within {options.timeout:g} s.",
            EXIT_UNREACHABLE,
        )
    if any(
        isinstance(cause, HandshakeError | ConnectionClosed | trio.BrokenResourceError | OSError) for cause in causes
    ):
        return ChatError(
            f"Cannot connect to {target.shown}: the server closed the connection during the WebSocket upgrade "
            "(is it the proxy?).",
            EXIT_UNREACHABLE,
        )
    return exc


# ---- the agent route ----


@dataclass(slots=True)
class Turn:
    """One reply: complete when its text and the end of its audio have both arrived (in either order)."""

    replied: bool = False
    audio_done: bool = False
    complete: trio.Event = field(default_factory=trio.Event)


class AgentListener:
    """Reads the agent's messages: prints replies, keeps the speech, and marks the current turn's progress."""

    def __init__(
        self, out: TextIO, speech: bytearray, call: Callable[[dict[str, Any]], Awaitable[str]] | None = None
    ) -> None:
        self.out = out
        self.speech = speech
        self.applied = trio.Event()
        self.turn = Turn()
        #: Answers one client-side function call (through the proxy's POST /function-call); None: not answered.
        self.call = call

    def new_turn(self) -> Turn:
        self.turn = Turn()
        return self.turn

    async def run(self, ws: WebSocketConnection) -> None:
        while True:
            message = await ws.get_message()
            self.on_message(message)
            if self.call is not None and isinstance(message, str) and '"FunctionCallRequest"' in message:
                event = json.loads(message)
                for call in chat_functions.client_side_calls(event):
                    print(f"(calling {call.get('name')})", file=self.out, flush=True)
                    content = await self.call(call)
                    await ws.send_message(chat_functions.response_message(call, content))

    def on_message(self, message: str | bytes) -> None:
        # Deepgram sometimes sends JSON in binary frames; the component sniffs them too.
        if isinstance(message, bytes) and message[:1] != b"{":
            self.speech += message
            return
        try:
            event = json.loads(message)
        except ValueError:
            if isinstance(message, bytes):
                self.speech += message  # audio whose first sample's low byte is "{", common in speech
            return
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "SettingsApplied":
            self.applied.set()
        elif kind == "ConversationText" and event.get("role") == "assistant":
            print(event.get("content", ""), file=self.out, flush=True)
            self.turn.replied = True
        elif kind in ("AgentAudioDone", "response.output_audio.done") and self.applied.is_set():
            self.turn.audio_done = True
        elif kind == "Error":
            description, code = event.get("description", ""), event.get("code", "")
            raise ChatError(f"Error from agent: {description} (code {code})")
        if self.turn.replied and self.turn.audio_done:
            self.turn.complete.set()


LineSource = Callable[[], Awaitable[str | None]]


async def _wait_reply(turn: Turn, seconds: float) -> None:
    try:
        with trio.fail_after(seconds):
            await turn.complete.wait()
    except trio.TooSlowError:
        raise ChatError(f"Timeout waiting for response (no complete reply within {seconds:g} s).") from None


async def _agent(
    ws: WebSocketConnection, options: ChatOptions, mic: bytes, out: TextIO, speech: bytearray, lines: LineSource | None
) -> None:
    target = parse_target(options.url)
    host = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"

    async def call(function: dict[str, Any]) -> str:
        with trio.move_on_after(options.timeout):
            try:
                return await chat_functions.post_call(
                    partial(_open_stream, target, options), host, function, token=options.token, origin=options.origin
                )
            except (OSError, trio.BrokenResourceError, h11.ProtocolError):
                return "Error: the function endpoint could not be reached"
        return "Error: the function endpoint did not answer in time"

    listener = AgentListener(out, speech, call)
    await ws.send_message(json.dumps(settings_message(options.url, prompt=options.prompt, listen=bool(mic))))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.run, ws)
        try:
            with trio.fail_after(options.timeout):
                await listener.applied.wait()
        except trio.TooSlowError:
            raise ChatError(
                f"Timeout waiting for response (no SettingsApplied within {options.timeout:g} s)."
            ) from None
        if lines is not None:
            while (line := await lines()) is not None:
                if line.strip():
                    turn = listener.new_turn()
                    await ws.send_message(json.dumps({"type": "InjectUserMessage", "content": line.strip()}))
                    await _wait_reply(turn, options.timeout)
        else:
            turn = listener.turn
            if options.text:
                await ws.send_message(json.dumps({"type": "InjectUserMessage", "content": options.text}))
            if mic:
                nursery.start_soon(stream_audio, ws.send_message, mic)
            await _wait_reply(turn, options.timeout + len(mic) / 2 / MIC_RATE)
        nursery.cancel_scope.cancel()


async def stream_audio(send: Callable[[bytes], Awaitable[None]], pcm: bytes) -> None:
    """Send 16 kHz PCM16 in 85 ms frames at real-time pace: frame ``i`` leaves at ``start + i * 85 ms``."""
    frame_bytes = MIC_RATE * FRAME_MS // 1000 * 2
    start = trio.current_time()
    for i, offset in enumerate(range(0, len(pcm), frame_bytes)):
        await trio.sleep_until(start + i * FRAME_MS / 1000)
        await send(pcm[offset : offset + frame_bytes])


# ---- the transcription route ----


def transcription_resource(target: Target) -> Target:
    """Add the audio format the client sends, unless the URL already says it."""
    path, _, query = target.resource.partition("?")
    params = parse_qsl(query, keep_blank_values=True)
    names = {name for name, _ in params}
    extra = [
        (name, value) for name, value in (("encoding", "linear16"), ("sample_rate", str(MIC_RATE))) if name not in names
    ]
    if not extra:
        return target
    resource = f"{path}?{urlencode(params + extra)}"
    return Target(target.secure, target.host, target.port, resource, target.path)


def transcript_of(message: str | bytes) -> str | None:
    """The text of a final ``Results`` message (None for anything else or an empty transcript)."""
    try:
        event = json.loads(message)
        if not isinstance(event, dict) or event.get("type") != "Results" or not event.get("is_final"):
            return None
        text = event["channel"]["alternatives"][0]["transcript"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) and text.strip() else None


async def _transcribe(ws: WebSocketConnection, mic: bytes, out: TextIO) -> None:
    async def send_then_close() -> None:
        await stream_audio(ws.send_message, mic)
        await ws.send_message(json.dumps({"type": "CloseStream"}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_then_close)
        try:
            while True:
                text = transcript_of(await ws.get_message())
                if text is not None:
                    print(text, file=out, flush=True)
        except ConnectionClosed as closed:
            code = getattr(closed.reason, "code", None)
            if code not in (1000, None):
                raise ChatError(_closed_sentence(closed, "the transcription ended")) from None
        nursery.cancel_scope.cancel()


# ---- the run ----


async def chat(options: ChatOptions, out: TextIO, err: TextIO, lines: LineSource | None = None) -> int:
    """Run one exchange (or, with ``lines``, one turn per line until it returns None); returns the exit status."""
    speech = bytearray()
    try:
        target = parse_target(options.url)
        mic = read_wav_16k(options.audio) if options.audio else b""
        if target.transcription:
            if not mic:
                raise ChatError("The transcription route needs --audio IN.wav", EXIT_USAGE)
            target = transcription_resource(target)
            async with connect(target, options) as ws:
                with trio.fail_after(options.timeout + len(mic) / 2 / MIC_RATE):
                    await _transcribe(ws, mic, out)
            return EXIT_OK
        mic += bytes(MIC_RATE * TRAILING_SILENCE_MS // 1000 * 2) if mic else b""
        async with connect(target, options) as ws:
            await _agent(ws, options, mic, out, speech, lines)
    except BaseException as exc:  # classified below; anything else is re-raised
        problem = _leaf(exc)
        if isinstance(problem, ChatError):
            message, status = str(problem), problem.status
        elif isinstance(problem, trio.TooSlowError):
            message, status = "Timeout waiting for response.", EXIT_FAILED
        elif isinstance(problem, ConnectionClosed):
            message, status = _closed_sentence(problem, "response"), EXIT_FAILED
        else:
            raise
        print(message, file=err, flush=True)
        return status
    finally:
        # Only a reply's audio is worth a file: a failed run leaves an existing file alone.
        if options.save_audio and not options.text_only and speech:
            write_wav(options.save_audio, bytes(speech))
    return EXIT_OK


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, BaseExceptionGroup):  # several tasks failed at once: the first explained one wins
        for cause in _causes(exc):
            if isinstance(cause, ChatError | ConnectionClosed | trio.TooSlowError):
                return cause
    return exc


def terminal_lines(prompt_to: TextIO) -> LineSource:
    """Lines typed on standard input, each after a prompt; None at end of input (Ctrl-D)."""

    async def next_line() -> str | None:
        print(PROMPT, end="", file=prompt_to, flush=True)
        line: str = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line:
            print(file=prompt_to, flush=True)
            return None
        return line

    return next_line


def _epilog() -> str:
    codes = "\n".join(f"  {status}  {meaning}" for status, meaning in EXIT_STATUSES.items())
    return (
        "examples:\n"
        "  python -m proxy chat --text 'Hello'\n"
        "  python -m proxy chat --url ws://127.0.0.1:8080/deepgram-proxy --audio question.wav --save-audio reply.wav\n"
        "  python -m proxy chat --url 'ws://127.0.0.1:8080/deepgram-proxy?service=transcription' --audio speech.wav\n"
        f"exit status:\n{codes}"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m proxy chat",
        description="Talk to a running proxy as the voice-agent component does and print the agent's reply. "
        "On a terminal with no --text or --audio it keeps a conversation going, one line per turn.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", default=ChatOptions.url, help=f"proxy WebSocket URL (default {ChatOptions.url})")
    p.add_argument("--text", help="the message to send (default: read standard input)")
    p.add_argument("--audio", metavar="IN.wav", help="stream a 16-bit PCM WAV file (any rate, mono or stereo)")
    p.add_argument("--save-audio", metavar="OUT.wav", help="write the agent's speech to a WAV file")
    p.add_argument("--text-only", action="store_true", help="do not save audio")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for each reply (default 20)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="the agent's instructions")
    p.add_argument("--token", help="client token for a proxy that requires one (sent as a subprotocol)")
    p.add_argument("--origin", help="the Origin header to send (for a proxy with an Origin allow-list)")
    return p


def main(argv: list[str]) -> int:
    """``python -m proxy chat [...]``; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not args.timeout > 0:
        print("--timeout must be positive", file=sys.stderr)
        return EXIT_USAGE
    lines: LineSource | None = None
    text = args.text
    if text is None and args.audio is None:
        if sys.stdin.isatty():
            lines = terminal_lines(sys.stderr)
            print(f"Talking to {_shown(args.url)}; type a message and press Enter (Ctrl-D ends).", file=sys.stderr)
        else:
            text = sys.stdin.read()
    text = text.strip() if text is not None else None
    if lines is None and not text and args.audio is None:
        print("Nothing to send: give --text, --audio or a message on standard input", file=sys.stderr)
        return EXIT_USAGE
    options = ChatOptions(
        url=args.url,
        text=text or None,
        audio=args.audio,
        save_audio=args.save_audio,
        text_only=args.text_only,
        timeout=args.timeout,
        prompt=args.prompt,
        token=args.token,
        origin=args.origin,
    )
    try:
        return trio.run(chat, options, sys.stdout, sys.stderr, lines)
    except KeyboardInterrupt:
        return 130


def _shown(url: str) -> str:
    try:
        return parse_target(url).shown
    except ChatError:
        return url.split("?", 1)[0]
