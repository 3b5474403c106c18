"""A simulated Deepgram Voice Agent (v1) server: one :class:`AgentSimulator` per WebSocket connection.

Like the Realtime simulator it is a plain state machine: it is fed client frames and returns frames to send; an
agent turn is a :class:`TurnRun` of (offset seconds, frame) pairs that the caller paces and may cut short.

A turn: ``ConversationText`` (user), ``AgentThinking``, then either a ``FunctionCallRequest`` (when the user names
a client-side function of the Settings) or ``ConversationText`` (assistant), ``AgentStartedSpeaking``, binary
PCM16 frames at the Settings' output rate, ``AgentAudioDone``. Turns start from ``InjectUserMessage`` or from
an utterance found by an energy VAD in the microphone audio (which also sends ``UserStartedSpeaking`` and cuts
off the agent's speech, as a barge-in does).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from ..protocol import component as cp
from ..protocol import deepgram as dg
from . import replies, synth

Frame = str | bytes
CHUNK_MS: Final = 100  # audio per binary frame
END_OF_UTTERANCE_MS: Final = 600
_connection_ids = itertools.count(1)
_decoder: Final = msgspec.json.Decoder()


@dataclass
class TurnRun:
    """One agent turn being produced. ``events`` yields (offset seconds from the start, frame)."""

    events: Iterator[tuple[float, Frame]]
    cancelled: bool = False
    #: (text, rate) of the turn's audio: the shell renders it (:mod:`proxy.sim.speech`) into :attr:`pcm` before
    #: streaming; left None, the events use the tones of :func:`proxy.sim.synth.speak`.
    speech: tuple[str, int] | None = None
    pcm: bytes | None = None


def _error(code: str, description: str) -> str:
    return cp.encode(cp.Error(description=description, code=code))


def _get(obj: object, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


class AgentSimulator:
    """The state of one simulated Voice Agent connection (see the module docstring)."""

    def __init__(self) -> None:
        conn = next(_connection_ids)
        self.request_id = f"00000000-0000-4000-8000-{conn:012d}"
        self._calls = itertools.count(1)
        self.settings: dict[str, Any] | None = None
        self.input_rate = 16_000
        self.output_rate = 24_000
        self.functions: list[dict[str, Any]] = []
        self.vad: synth.EnergyVad | None = None
        self.active: TurnRun | None = None
        self.pending_calls: dict[str, str] = {}  # call id -> function name
        self.conversation: list[replies.UserTurn] = []  # what the user said, for replies that follow it
        self.new_runs: list[TurnRun] = []

    def start(self) -> list[Frame]:
        return [cp.encode(cp.Welcome(request_id=self.request_id))]

    def client_message_timeout(self) -> str:
        return _error(
            "CLIENT_MESSAGE_TIMEOUT",
            "We did not receive audio within our timeout. Please make sure you are sending binary messages "
            "containing user speech.",
        )

    # -- inputs ----------------------------------------------------------------------------------------------

    def handle_text(self, text: str) -> list[Frame]:
        try:
            message = _decoder.decode(text)
        except msgspec.DecodeError:
            return [_error("UNPARSABLE_CLIENT_MESSAGE", "We could not parse a message you sent: it is not JSON.")]
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "KeepAlive":
            return []
        if kind == "Settings":
            return self._settings(message)
        if self.settings is None and kind in (
            "InjectUserMessage",
            "InjectAgentMessage",
            "FunctionCallResponse",
            "UpdatePrompt",
            "UpdateSpeak",
        ):
            return [_error("SETTINGS_NOT_APPLIED", f"Send Settings before {kind}.")]
        match kind:
            case "InjectUserMessage":
                content = message.get("content")
                if not isinstance(content, str) or not content.strip():
                    return [_error("INVALID_INJECT_USER_MESSAGE", "InjectUserMessage needs a non-empty content.")]
                return self._user_turn(content)
            case "InjectAgentMessage":
                content = message.get("message", message.get("content"))
                if not isinstance(content, str) or not content.strip():
                    return [_error("INVALID_INJECT_AGENT_MESSAGE", "InjectAgentMessage needs a non-empty message.")]
                if self.vad is not None and self.vad.speaking:
                    return [cp.encode(dg.InjectionRefused(message="The user is speaking."))]
                return self._agent_says(content, think=False)
            case "FunctionCallResponse":
                return self._function_result(message)
            case "UpdatePrompt":
                return [cp.encode(cp.PromptUpdated())]
            case "UpdateSpeak":
                return [cp.encode(dg.SpeakUpdated())]
            case "UpdateThink":
                return ['{"type":"ThinkUpdated"}']
            case "UpdateListen":
                return ['{"type":"ListenUpdated"}']
            case _:
                return [
                    _error(
                        "UNPARSABLE_CLIENT_MESSAGE",
                        f"We could not parse a message you sent: unknown message type {str(kind)[:64]!r}.",
                    )
                ]

    def handle_binary(self, data: bytes) -> list[Frame]:
        if self.vad is None:
            return []  # audio before Settings is ignored
        out: list[Frame] = []
        for event in self.vad.feed(data):
            if event.kind == "start":
                out.append(cp.USER_STARTED_SPEAKING)
                self._cut_off()
            else:
                speech_ms = event.ms - END_OF_UTTERANCE_MS - self.vad.speech_start_ms
                out += self._user_turn(synth.transcript_for(speech_ms), speech_ms=speech_ms)
        return out

    # -- behaviour -------------------------------------------------------------------------------------------

    def _settings(self, message: dict[str, Any]) -> list[Frame]:
        if self.settings is not None:
            return [_error("SETTINGS_ALREADY_APPLIED", "Settings have already been applied to this connection.")]
        agent = message.get("agent")
        if not isinstance(agent, dict):
            return [_error("INVALID_SETTINGS", "Settings must contain an 'agent' object.")]
        in_rate = _get(message, "audio", "input", "sample_rate")
        out_rate = _get(message, "audio", "output", "sample_rate")
        for rate in (in_rate, out_rate):
            if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000):
                return [_error("INVALID_SETTINGS", "audio sample_rate must be an integer between 8000 and 48000.")]
        self.settings = message
        self.input_rate = in_rate or 16_000
        self.output_rate = out_rate or 24_000
        functions = _get(agent, "think", "functions")
        if isinstance(functions, list):
            # Functions with an endpoint run server-side at Deepgram; the simulator only calls client-side ones.
            self.functions = [f for f in functions if isinstance(f, dict) and not f.get("endpoint")]
        self.vad = synth.EnergyVad(self.input_rate, silence_ms=END_OF_UTTERANCE_MS)
        return [cp.SETTINGS_APPLIED]

    def _cut_off(self) -> None:
        if self.active is not None:
            self.active.cancelled = True
            self.active = None

    def _user_turn(self, text: str, *, speech_ms: float | None = None) -> list[Frame]:
        """``text``: typed, or the invented transcript of ``speech_ms`` of speech."""
        self._cut_off()
        self.conversation.append(replies.UserTurn(text=None if speech_ms is not None else text, speech_ms=speech_ms))
        out: list[Frame] = [cp.encode(cp.ConversationText(role="user", content=text))]
        function = None if speech_ms is not None else synth.named_function(text, self.functions)
        if function is not None:
            call_id = f"call_sim{self.request_id[-6:]}x{next(self._calls):04d}"
            self.pending_calls[call_id] = str(function["name"])
            call = cp.FunctionCall(
                id=call_id, name=str(function["name"]), arguments=synth.arguments_for(function, text), client_side=True
            )
            out.append(cp.AGENT_THINKING)
            out.append(cp.encode(cp.FunctionCallRequest(functions=[call])))
            return out
        return out + self._agent_says(replies.answer(self.conversation), think=True)

    def _function_result(self, message: dict[str, Any]) -> list[Frame]:
        call_id = message.get("id")
        if not self.pending_calls:
            return []
        self.pending_calls.pop(call_id if isinstance(call_id, str) else "", None)
        content = message.get("content")
        text = content if isinstance(content, str) else msgspec.json.encode(content).decode()
        return self._agent_says(synth.reply_to_tool(text), think=False)

    def _agent_says(self, text: str, *, think: bool) -> list[Frame]:
        self._cut_off()
        run = TurnRun(events=iter(()), speech=(text, self.output_rate))
        run.events = self._speech(run, text, think=think)
        self.active = run
        self.new_runs.append(run)
        return []

    def _speech(self, run: TurnRun, text: str, *, think: bool) -> Iterator[tuple[float, Frame]]:
        if think:
            yield 0.0, cp.AGENT_THINKING
        yield 0.0, cp.encode(cp.ConversationText(role="assistant", content=text))
        yield 0.0, cp.encode(cp.AgentStartedSpeaking(total_latency=0.25, tts_latency=0.1, ttt_latency=0.15))
        pcm = run.pcm if run.pcm is not None else synth.speak(text, self.output_rate)
        pieces = synth.chunks(pcm, self.output_rate, CHUNK_MS)
        for i, piece in enumerate(pieces):
            yield i * CHUNK_MS / 1000, piece
        if self.active is run:
            self.active = None
        yield synth.duration_ms(len(pcm), self.output_rate) / 1000, cp.AGENT_AUDIO_DONE
