"""The message flows of docs/protocol.md and docs/deepgram.md, produced by the real protocol cores.

Each flow is a script: what the component sends, what the upstream answers (scripted events), how much virtual
time passes and how the connection ends. The script drives the sans-IO core of the route (the OpenAI translator or
the Deepgram pass-through) and records every frame it produces on either leg, in order. Each flow renders as a
Mermaid sequence diagram and, beside it, the exact JSON of every frame, numbered as the diagram's arrows are. The
docs hold the rendered text between marker comments; ``tests/docs/test_flows_drift.py`` fails when it is stale.

Everything is deterministic: the scripts are fixed, the translator numbers its own item ids, time is virtual and
no frame carries a clock. Binary frames (audio) are shown by their length only, and so is base64 audio longer
than 128 characters (``"audio":"<base64 of 19200 bytes>"``); every other character is the wire's.

    python -m tests.docs.flows            # exit 1 and name the stale blocks
    python -m tests.docs.flows --write    # rewrite the blocks in the docs
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy import server
from proxy.core import GOING_AWAY, Close, FailureKind, Frame, SessionCore, UpstreamFailure
from proxy.deepgram.passthrough import Passthrough
from proxy.deepgram.policy import Service
from proxy.openai.translator import Translator, TranslatorOptions

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "python -m tests.docs.flows --write"
#: The close reason of every session when the server drains (the server's, not a core's).
SHUTTING_DOWN: str = server._SHUTTING_DOWN

#: Base64 audio longer than this is shown by its decoded length.
MAX_AUDIO_CHARS = 128

C, P, U = "C", "P", "U"
_NAMES = {C: "component", P: "proxy", U: "upstream"}


@dataclass(frozen=True, slots=True)
class Arrow:
    """One frame or close from ``sender`` to ``receiver`` (``frame`` None for a close)."""

    sender: str
    receiver: str
    frame: Frame | None = None
    close: Close | None = None


@dataclass(frozen=True, slots=True)
class Note:
    text: str


Line = Arrow | Note


@dataclass
class Recorder:
    """Drives one core through a script and records what crosses each leg."""

    core: SessionCore
    now: float = 0.0
    lines: list[Line] = field(default_factory=list)

    def _take(self) -> None:
        # The shell writes client-bound frames first, then upstream-bound ones (the order across the two legs).
        for frame in self.core.to_client:
            self.lines.append(Arrow(P, C, frame))
        for frame in self.core.to_upstream:
            self.lines.append(Arrow(P, U, frame))
        self.core.to_client, self.core.to_upstream = [], []

    def note(self, text: str) -> None:
        self.lines.append(Note(text))

    def opened(self) -> None:
        self.core.upstream_opened(self.now)
        self._take()

    def client(self, message: dict[str, Any] | bytes) -> None:
        frame: Frame = message if isinstance(message, bytes) else compact(message)
        self.lines.append(Arrow(C, P, frame))
        self.core.client_message(frame, self.now)
        self._take()

    def upstream(self, event: dict[str, Any] | bytes) -> None:
        frame: Frame = event if isinstance(event, bytes) else compact(event)
        self.lines.append(Arrow(U, P, frame))
        self.core.upstream_message(frame, self.now)
        self._take()

    def advance(self, seconds: float, why: str) -> None:
        """Let ``seconds`` pass, firing every deadline on the way at its exact time."""
        self.note(f"{seconds:g} s later: {why}")
        until = self.now + seconds
        while (deadline := self.core.next_deadline()) is not None and deadline <= until:
            self.now = deadline
            self.core.timer_fired(deadline)
            self._take()
        self.now = until

    def client_closed(self, code: int | None, reason: str) -> None:
        self.lines.append(Arrow(C, P, close=Close(code or 0, reason)))
        close = self.core.client_closed(code, reason, self.now)
        self._take()
        self.lines.append(Arrow(P, U, close=close))

    def upstream_closed(self, code: int | None, reason: str) -> None:
        self.lines.append(Arrow(U, P, close=Close(code or 0, reason)))
        close = self.core.upstream_closed(code, reason, self.now)
        self._take()
        self.lines.append(Arrow(P, C, close=close))

    def upstream_failed(self, failure: UpstreamFailure, what: str) -> None:
        self.note(what)
        close = self.core.upstream_failed(failure, self.now)
        self._take()
        self.lines.append(Arrow(P, C, close=close))

    def drain(self) -> None:
        """The server drains: the shell closes both legs of every session with 1001."""
        self.note("the server drains (SIGTERM) and the drain deadline passes")
        close = Close(GOING_AWAY, SHUTTING_DOWN)
        self.lines.append(Arrow(P, C, close=close))
        self.lines.append(Arrow(P, U, close=close))


def compact(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


# =============================================================================================================
# Scripts: /openai

PROMPT = "You are a helpful assistant."
SETTINGS: dict[str, Any] = {
    "type": "Settings",
    "audio": {"input": {"encoding": "linear16", "sample_rate": 16000}},
    "agent": {"think": {"provider": {"type": "open_ai", "model": "gpt-realtime"}, "prompt": PROMPT}},
}
MANUAL_SETTINGS: dict[str, Any] = {
    "type": "Settings",
    "agent": {"useOpenAIManualAudioCommit": True, "think": {"prompt": PROMPT}},
}
WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOL_SETTINGS: dict[str, Any] = {
    "type": "Settings",
    "agent": {"think": {"prompt": PROMPT, "functions": [WEATHER_TOOL]}},
}
#: 2 ms of 16 kHz microphone audio (the component's frames are longer; the size does not change the flow).
MIC = bytes(64)
#: 1 ms of 24 kHz TTS audio, as the upstream sends it (base64 in JSON).
TTS = bytes(48)
#: The translator logs through this logger; a flow's expected warnings and errors stay out of the generator's output.
_QUIET = logging.getLogger("tests.docs.flows")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def _oai(core_options: TranslatorOptions | None = None) -> Recorder:
    options = core_options if core_options is not None else TranslatorOptions(resampler="linear")
    return Recorder(Translator(options, log=logging.LoggerAdapter(_QUIET, {})))


def _session_updated() -> dict[str, Any]:
    return {"type": "session.updated", "event_id": "event_2", "session": {"type": "realtime", "model": "gpt-realtime"}}


def _ready(r: Recorder, settings: dict[str, Any] = SETTINGS) -> None:
    r.opened()
    r.client(settings)
    r.upstream(_session_updated())


def _user_item(kind: str, item_id: str, text: str) -> dict[str, Any]:
    return {
        "type": f"conversation.item.{kind}",
        "previous_item_id": None,
        "item": {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        },
    }


def _audio_reply(r: Recorder, response: str, text: str) -> None:
    """The upstream's audio response: created, one audio chunk, audio done, transcript done, done."""
    r.upstream({"type": "response.created", "response": {"id": response, "status": "in_progress"}})
    r.upstream(
        {
            "type": "response.output_audio.delta",
            "response_id": response,
            "item_id": "item_a1",
            "delta": base64.b64encode(TTS).decode(),
        }
    )
    r.upstream({"type": "response.output_audio.done", "response_id": response, "item_id": "item_a1"})
    r.upstream(
        {
            "type": "response.output_audio_transcript.done",
            "response_id": response,
            "item_id": "item_a1",
            "transcript": text,
        }
    )
    r.upstream({"type": "response.done", "response": {"id": response, "status": "completed"}})


def openai_connect() -> Recorder:
    r = _oai()
    r.note("the component connects, and the proxy opens the upstream at once")
    _ready(r)
    return r


def openai_inject() -> Recorder:
    r = _oai()
    _ready(r)
    r.client({"type": "InjectUserMessage", "content": "What can you do?"})
    r.upstream(_user_item("added", "item_inject_1", "What can you do?"))
    _audio_reply(r, "resp_1", "I can answer questions.")
    return r


def openai_voice() -> Recorder:
    r = _oai()
    _ready(r)
    r.client(MIC)
    r.upstream({"type": "input_audio_buffer.speech_started", "audio_start_ms": 120, "item_id": "item_u1"})
    r.client(MIC)
    r.upstream({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1460, "item_id": "item_u1"})
    r.upstream({"type": "input_audio_buffer.committed", "item_id": "item_u1"})
    r.upstream(
        {
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": "item_u1",
            "content_index": 0,
            "delta": "Hello",
        }
    )
    r.upstream(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_u1",
            "content_index": 0,
            "transcript": "Hello there.",
        }
    )
    _audio_reply(r, "resp_1", "Hi! How can I help?")
    return r


def openai_manual_commit() -> Recorder:
    r = _oai()
    _ready(r, MANUAL_SETTINGS)
    r.note("1.2 s of microphone audio in three frames (the first commit needs 1 s)")
    r.client(bytes(12_800))
    r.client(bytes(12_800))
    r.client(bytes(12_800))
    r.advance(0.4, "no more audio: the debounce deadline fires")
    _audio_reply(r, "resp_1", "I heard you.")
    return r


def openai_function_call() -> Recorder:
    r = _oai()
    _ready(r, TOOL_SETTINGS)
    r.client({"type": "InjectUserMessage", "content": "Weather in Paris?"})
    r.upstream(_user_item("added", "item_inject_1", "Weather in Paris?"))
    r.upstream({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    r.upstream(
        {
            "type": "response.function_call_arguments.done",
            "response_id": "resp_1",
            "item_id": "item_fc1",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        }
    )
    r.upstream({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    r.client({"type": "FunctionCallResponse", "id": "call_1", "name": "get_weather", "content": "18 C, sunny"})
    r.note("response.create waits for the upstream to complete the tool result")
    r.upstream(
        {
            "type": "conversation.item.done",
            "item": {"id": "item_out1", "type": "function_call_output", "call_id": "call_1", "output": "18 C, sunny"},
        }
    )
    _audio_reply(r, "resp_2", "It is 18 degrees and sunny in Paris.")
    return r


def openai_function_call_watchdog() -> Recorder:
    r = _oai()
    _ready(r, TOOL_SETTINGS)
    r.upstream({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    r.upstream(
        {
            "type": "response.function_call_arguments.done",
            "response_id": "resp_1",
            "item_id": "item_fc1",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        }
    )
    r.upstream({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    r.client({"type": "FunctionCallResponse", "id": "call_1", "name": "get_weather", "content": "18 C, sunny"})
    r.advance(20, "the upstream never completed the tool result: the watchdog fires (logged as an error)")
    return r


def openai_function_call_text_done() -> Recorder:
    """A tool result completed by the upstream's text: one event, frames for both legs (the client's first)."""
    r = _oai()
    _ready(r, TOOL_SETTINGS)
    r.upstream({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    r.upstream(
        {
            "type": "response.function_call_arguments.done",
            "response_id": "resp_1",
            "item_id": "item_fc1",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        }
    )
    r.upstream({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    r.client({"type": "FunctionCallResponse", "id": "call_1", "name": "get_weather", "content": "18 C, sunny"})
    r.upstream(
        {
            "type": "response.output_text.done",
            "response_id": "resp_1",
            "item_id": "item_t1",
            "text": "It is 18 degrees and sunny.",
        }
    )
    return r


def openai_barge_in() -> Recorder:
    r = _oai()
    _ready(r)
    r.upstream({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    r.upstream(
        {
            "type": "response.output_audio.delta",
            "response_id": "resp_1",
            "item_id": "item_a1",
            "delta": base64.b64encode(TTS).decode(),
        }
    )
    r.note("the user talks over the agent, and server VAD interrupts the response")
    r.client(MIC)
    r.upstream({"type": "input_audio_buffer.speech_started", "audio_start_ms": 2300, "item_id": "item_u2"})
    r.upstream({"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}})
    return r


def openai_upstream_failure() -> Recorder:
    r = _oai()
    r.client(SETTINGS)
    r.note("Settings is held until the upstream opens")
    r.upstream_failed(UpstreamFailure(FailureKind.AUTH, status=401), "the upstream refuses the handshake with 401")
    return r


def openai_upstream_closed() -> Recorder:
    r = _oai()
    _ready(r)
    r.upstream({"type": "error", "error": {"type": "invalid_request_error", "code": "idle_timeout", "message": "Idle"}})
    r.upstream_closed(1000, "")
    return r


def openai_client_close() -> Recorder:
    r = _oai()
    _ready(r)
    r.client_closed(1000, "Closed by client")
    return r


def openai_drain() -> Recorder:
    r = _oai()
    _ready(r)
    r.drain()
    return r


# =============================================================================================================
# Scripts: /deepgram-proxy (Deepgram's messages are scripted; the proxy relays them unchanged)

DG_SETTINGS: dict[str, Any] = {
    "type": "Settings",
    "audio": {"input": {"encoding": "linear16", "sample_rate": 16000}, "output": {"encoding": "linear16"}},
    "agent": {
        "listen": {"provider": {"type": "deepgram", "model": "nova-3"}},
        "think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}, "prompt": PROMPT},
        "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
    },
}
WELCOME: dict[str, Any] = {"type": "Welcome", "request_id": "00000000-0000-0000-0000-000000000001"}


def _dg(*, synthetic_audio_done: bool = False, service: Service = Service.AGENT) -> Recorder:
    return Recorder(
        Passthrough(
            service,
            max_pending_frames=256,
            max_pending_bytes=4 * 1024 * 1024,
            synthetic_audio_done=synthetic_audio_done,
            log=_QUIET,
        )
    )


def _dg_ready(r: Recorder) -> None:
    r.opened()
    r.upstream(WELCOME)
    r.client(DG_SETTINGS)
    r.upstream({"type": "SettingsApplied"})


def _dg_reply(r: Recorder, text: str) -> None:
    """Deepgram's reply (no AgentStartedSpeaking: Deepgram sends it only to sessions with ``experimental`` set)."""
    r.upstream({"type": "AgentThinking", "content": ""})
    r.upstream({"type": "ConversationText", "role": "assistant", "content": text})
    r.upstream(TTS)
    r.upstream({"type": "AgentAudioDone"})


def deepgram_connect() -> Recorder:
    r = _dg()
    r.note("the component connects, and the proxy opens the upstream at once with the server's key")
    r.client(DG_SETTINGS)
    r.note("frames sent before the upstream opens are held, then flushed in order")
    r.opened()
    r.upstream(WELCOME)
    r.upstream({"type": "SettingsApplied"})
    return r


def deepgram_inject() -> Recorder:
    r = _dg()
    _dg_ready(r)
    r.client({"type": "InjectUserMessage", "content": "What can you do?"})
    r.upstream({"type": "ConversationText", "role": "user", "content": "What can you do?"})
    _dg_reply(r, "I can answer questions.")
    return r


def deepgram_voice() -> Recorder:
    r = _dg()
    _dg_ready(r)
    r.client(MIC)
    r.upstream({"type": "UserStartedSpeaking"})
    r.client(MIC)
    r.upstream({"type": "ConversationText", "role": "user", "content": "Hello there."})
    _dg_reply(r, "Hi! How can I help?")
    return r


def deepgram_function_call() -> Recorder:
    r = _dg()
    _dg_ready(r)
    r.client({"type": "InjectUserMessage", "content": "Weather in Paris?"})
    r.upstream({"type": "ConversationText", "role": "user", "content": "Weather in Paris?"})
    r.upstream(
        {
            "type": "FunctionCallRequest",
            "functions": [
                {"id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}', "client_side": True}
            ],
        }
    )
    r.client({"type": "FunctionCallResponse", "id": "call_1", "name": "get_weather", "content": "18 C, sunny"})
    _dg_reply(r, "It is 18 degrees and sunny in Paris.")
    return r


def deepgram_barge_in() -> Recorder:
    r = _dg()
    _dg_ready(r)
    r.upstream(TTS)
    r.note("the user talks over the agent, and Deepgram stops the agent and tells the component")
    r.client(MIC)
    r.upstream({"type": "UserStartedSpeaking"})
    return r


def deepgram_upstream_failure() -> Recorder:
    r = _dg()
    r.client(DG_SETTINGS)
    r.upstream_failed(UpstreamFailure(FailureKind.AUTH, status=401), "Deepgram refuses the handshake with 401")
    return r


def deepgram_listen_failure() -> Recorder:
    r = _dg(service=Service.TRANSCRIPTION)
    r.client(MIC)
    r.upstream_failed(UpstreamFailure(FailureKind.AUTH, status=401), "Deepgram refuses the Listen handshake with 401")
    return r


def deepgram_upstream_closed() -> Recorder:
    r = _dg()
    _dg_ready(r)
    r.upstream({"type": "Error", "description": "Session timed out.", "code": "CLIENT_MESSAGE_TIMEOUT"})
    r.upstream_closed(1000, "")
    return r


def deepgram_client_close() -> Recorder:
    r = _dg()
    _dg_ready(r)
    r.client_closed(1000, "Closed by client")
    return r


def deepgram_drain() -> Recorder:
    r = _dg()
    _dg_ready(r)
    r.drain()
    return r


def deepgram_synthetic_audio_done() -> Recorder:
    r = _dg(synthetic_audio_done=True)
    _dg_ready(r)
    r.note("the synthetic AgentAudioDone is on, and audio was relayed before the first assistant text")
    r.upstream(TTS)
    r.upstream({"type": "ConversationText", "role": "assistant", "content": "Hello!"})
    return r


@dataclass(frozen=True, slots=True)
class Flow:
    key: str
    document: str
    upstream: str
    script: Callable[[], Recorder]


FLOWS: tuple[Flow, ...] = (
    Flow("openai-connect", "docs/protocol.md", "OpenAI Realtime", openai_connect),
    Flow("openai-inject", "docs/protocol.md", "OpenAI Realtime", openai_inject),
    Flow("openai-voice", "docs/protocol.md", "OpenAI Realtime", openai_voice),
    Flow("openai-manual-commit", "docs/protocol.md", "OpenAI Realtime", openai_manual_commit),
    Flow("openai-function-call", "docs/protocol.md", "OpenAI Realtime", openai_function_call),
    Flow("openai-function-call-watchdog", "docs/protocol.md", "OpenAI Realtime", openai_function_call_watchdog),
    Flow("openai-function-call-text-done", "docs/protocol.md", "OpenAI Realtime", openai_function_call_text_done),
    Flow("openai-barge-in", "docs/protocol.md", "OpenAI Realtime", openai_barge_in),
    Flow("openai-upstream-failure", "docs/protocol.md", "OpenAI Realtime", openai_upstream_failure),
    Flow("openai-upstream-closed", "docs/protocol.md", "OpenAI Realtime", openai_upstream_closed),
    Flow("openai-client-close", "docs/protocol.md", "OpenAI Realtime", openai_client_close),
    Flow("openai-drain", "docs/protocol.md", "OpenAI Realtime", openai_drain),
    Flow("deepgram-connect", "docs/deepgram.md", "Deepgram", deepgram_connect),
    Flow("deepgram-inject", "docs/deepgram.md", "Deepgram", deepgram_inject),
    Flow("deepgram-voice", "docs/deepgram.md", "Deepgram", deepgram_voice),
    Flow("deepgram-function-call", "docs/deepgram.md", "Deepgram", deepgram_function_call),
    Flow("deepgram-barge-in", "docs/deepgram.md", "Deepgram", deepgram_barge_in),
    Flow("deepgram-upstream-failure", "docs/deepgram.md", "Deepgram", deepgram_upstream_failure),
    Flow("deepgram-listen-failure", "docs/deepgram.md", "Deepgram", deepgram_listen_failure),
    Flow("deepgram-upstream-closed", "docs/deepgram.md", "Deepgram", deepgram_upstream_closed),
    Flow("deepgram-client-close", "docs/deepgram.md", "Deepgram", deepgram_client_close),
    Flow("deepgram-drain", "docs/deepgram.md", "Deepgram", deepgram_drain),
    Flow("deepgram-synthetic-audio-done", "docs/deepgram.md", "Deepgram", deepgram_synthetic_audio_done),
)


# =============================================================================================================
# Rendering


def _label(line: Arrow) -> str:
    """The arrow's label in the diagram: the message type, the audio length, or the close."""
    if line.close is not None:
        return f"close {line.close.code} {line.close.reason}".rstrip()
    if isinstance(line.frame, bytes):
        return f"binary audio ({len(line.frame)} bytes)"
    assert line.frame is not None
    try:
        value = json.loads(line.frame)
    except ValueError:
        return "text frame"
    kind = str(value.get("type", "?")) if isinstance(value, dict) else "JSON"
    if kind == "ConversationText" and isinstance(value, dict):
        kind += f" ({value.get('role')})"
    if kind == "Error" and isinstance(value, dict):
        kind += f" {value.get('code')}"
    return kind


def _wire(line: Arrow) -> str:
    if line.close is not None:
        reason = f" {json.dumps(line.close.reason)}" if line.close.reason else ""
        return f"<close {line.close.code}{reason}>"
    if isinstance(line.frame, bytes):
        return f"<binary frame, {len(line.frame)} bytes>"
    assert line.frame is not None
    return _shorten_audio(line.frame)


_LONG_AUDIO = re.compile(rf'"(audio|delta)":"([A-Za-z0-9+/=]{{{MAX_AUDIO_CHARS + 1},}})"')


def _shorten_audio(frame: str) -> str:
    """Replace a long base64 audio field by its decoded length (the only change made to a frame for the docs)."""

    def shorten(match: re.Match[str]) -> str:
        return f'"{match[1]}":"<base64 of {len(base64.b64decode(match[2]))} bytes>"'

    return _LONG_AUDIO.sub(shorten, frame)


def render(flow: Flow) -> str:
    """The generated text of one flow: a Mermaid diagram, then every frame, numbered like the arrows."""
    recorder = flow.script()
    diagram = [
        "```mermaid",
        "sequenceDiagram",
        "    autonumber",
        "    participant C as Component",
        "    participant P as Proxy",
        f"    participant U as {flow.upstream}",
    ]
    frames = ["```text"]
    number = 0
    for line in recorder.lines:
        if isinstance(line, Note):
            diagram.append(f"    Note over C,U: {line.text}")
            frames.append(f"   ({line.text})")
            continue
        number += 1
        arrow = "-)" if line.close is not None else "->>"
        diagram.append(f"    {line.sender}{arrow}{line.receiver}: {_label(line)}")
        frames.append(f"{number:>2} {_NAMES[line.sender]} → {_NAMES[line.receiver]}: {_wire(line)}")
    diagram.append("```")
    frames.append("```")
    return "\n".join([*diagram, "", *frames])


def _markers(key: str) -> tuple[str, str]:
    return (
        f"<!-- flow {key}: generated by `{REGENERATE}`, do not edit -->",
        f"<!-- end of flow {key} -->",
    )


def updated(text: str, flows: list[Flow]) -> tuple[str, list[str]]:
    """``text`` with every flow's block regenerated; the keys whose markers are missing."""
    missing = []
    for flow in flows:
        begin, end = _markers(flow.key)
        match = re.search(re.escape(begin) + r"\n.*?" + re.escape(end), text, re.DOTALL)
        if match is None:
            missing.append(flow.key)
            continue
        text = f"{text[: match.start()]}{begin}\n{render(flow)}\n{end}{text[match.end() :]}"
    return text, missing


def documents() -> dict[str, list[Flow]]:
    by_document: dict[str, list[Flow]] = {}
    for flow in FLOWS:
        by_document.setdefault(flow.document, []).append(flow)
    return by_document


def stale() -> list[str]:
    """What is out of date: documents whose blocks differ from the code, and flows with no markers."""
    problems = []
    for document, flows in documents().items():
        text = (ROOT / document).read_text()
        new, missing = updated(text, flows)
        problems += [f"{document}: no markers for flow {key}" for key in missing]
        if new != text:
            problems.append(f"{document}: generated flows are stale")
    return problems


def main(argv: list[str]) -> int:
    if "--write" in argv:
        for document, flows in documents().items():
            path = ROOT / document
            new, missing = updated(path.read_text(), flows)
            path.write_text(new)
            for key in missing:
                print(f"{document}: add the markers of flow {key}: {' ... '.join(_markers(key))}", file=sys.stderr)
        return 0
    problems = stale()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"regenerate with: {REGENERATE}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
