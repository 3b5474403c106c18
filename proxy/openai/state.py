"""The translator's state: small named machines, each holding one value, and the rules that tie them together.

Theory of operation. The translator (proxy/openai/translator.py) is fed events by the shell and keeps its state in
the machines below instead of loose flags. Each machine changes only through :func:`advance` with a pair listed
in its table; a pair that is not listed is a bug in the translator (:class:`IllegalTransition`), never a peer's
fault: whatever a peer sends is decided before a transition is asked for (a duplicate Settings, for example, is
answered without one). Everything that belongs to one response lives in a :class:`Turn`, replaced when the next
response starts, so no field can be forgotten by a reset. A caller that breaks the core's contract (for example
opens the upstream twice) gets :class:`TranslatorMisuse`.

Machines, their states, and the legal transitions (event: from -> to); any other pair is a bug:

``Setup`` (session readiness): WAITING, UPDATE_SENT, READY, READY_UNCONFIGURED

  =================== ====================== ======================
  event               from                   to
  =================== ====================== ======================
  Settings forwarded  WAITING                UPDATE_SENT
  Settings forwarded  READY_UNCONFIGURED     READY
  session.updated     WAITING                READY_UNCONFIGURED
  session.updated     UPDATE_SENT            READY
  session.updated     READY                  READY
  session.updated     READY_UNCONFIGURED     READY_UNCONFIGURED
  =================== ====================== ======================

``Response`` (response lifecycle): IDLE, ACTIVE. START: IDLE -> ACTIVE (never while ACTIVE: every path that sends
response.create checks first); END: ACTIVE -> IDLE, IDLE -> IDLE (output_text.done and response.done may both end
one response).

``ToolResult`` (tool-call deferral): NONE, AWAITING. OUTPUT_SENT: NONE -> AWAITING, AWAITING -> AWAITING;
CREATE_SENT: AWAITING -> NONE (the upstream completed the output item, or the watchdog fired, and no response is
active).

``UpstreamLeg``: CONNECTING -> OPEN (upstream_opened) -> GONE, or CONNECTING -> GONE (failed); opening twice is
:class:`TranslatorMisuse`. ``ClientLeg``: CONNECTED -> GONE. ``TurnDetection`` (manual commit or server VAD) is
set once, by the Settings that is forwarded; MANUAL until then.

``Turn`` (text/audio turn bookkeeping): one object per response, replaced at every START; its flags stay with the
response that ended until the next one starts.

Manual commit keeps its byte count, its first-commit flag and two deadlines in the translator (see its
``_schedule_commit``); the legal combinations of all machines are :func:`illegal_combinations`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar


class TranslatorMisuse(RuntimeError):
    """The caller used the translator against the :class:`~proxy.core.SessionCore` contract (a local bug, never
    a peer's fault)."""


class IllegalTransition(RuntimeError):
    """A machine was asked for a transition its table does not list: a bug in the translator."""


class UpstreamLeg(enum.Enum):
    CONNECTING = enum.auto()  # client frames are queued (bounded) until the upstream opens
    OPEN = enum.auto()
    GONE = enum.auto()  # closed or failed (before or after opening): nothing more is sent or handled


class ClientLeg(enum.Enum):
    CONNECTED = enum.auto()
    GONE = enum.auto()


class TurnDetection(enum.Enum):
    MANUAL = enum.auto()  # the proxy commits the input audio buffer (debounce, coalesce, thresholds)
    SERVER_VAD = enum.auto()  # the upstream detects turns and creates responses


class Setup(enum.Enum):
    WAITING = enum.auto()  # no Settings yet, and the upstream has not declared the session ready
    UPDATE_SENT = enum.auto()  # session.update sent for the client's Settings, not acknowledged yet
    READY = enum.auto()  # session.updated after our session.update: messages and audio flow
    READY_UNCONFIGURED = enum.auto()  # session.updated before any Settings: flowing, a Settings is still forwarded


class SetupEvent(enum.Enum):
    SETTINGS_FORWARDED = enum.auto()
    SESSION_UPDATED = enum.auto()


class Response(enum.Enum):
    IDLE = enum.auto()
    ACTIVE = enum.auto()  # response.create sent, or the upstream created one (VAD), until its end


class ResponseEvent(enum.Enum):
    START = enum.auto()
    END = enum.auto()  # output_text.done or response.done (both may end one response)


class ToolResult(enum.Enum):
    NONE = enum.auto()
    AWAITING = enum.auto()  # function_call_output sent; its response.create waits for the upstream or the watchdog


class ToolResultEvent(enum.Enum):
    OUTPUT_SENT = enum.auto()
    CREATE_SENT = enum.auto()


SETUP_TRANSITIONS: Mapping[tuple[Setup, SetupEvent], Setup] = {
    (Setup.WAITING, SetupEvent.SETTINGS_FORWARDED): Setup.UPDATE_SENT,
    (Setup.READY_UNCONFIGURED, SetupEvent.SETTINGS_FORWARDED): Setup.READY,
    (Setup.WAITING, SetupEvent.SESSION_UPDATED): Setup.READY_UNCONFIGURED,
    (Setup.UPDATE_SENT, SetupEvent.SESSION_UPDATED): Setup.READY,
    (Setup.READY, SetupEvent.SESSION_UPDATED): Setup.READY,
    (Setup.READY_UNCONFIGURED, SetupEvent.SESSION_UPDATED): Setup.READY_UNCONFIGURED,
}
RESPONSE_TRANSITIONS: Mapping[tuple[Response, ResponseEvent], Response] = {
    (Response.IDLE, ResponseEvent.START): Response.ACTIVE,
    (Response.ACTIVE, ResponseEvent.END): Response.IDLE,
    (Response.IDLE, ResponseEvent.END): Response.IDLE,
}
TOOL_RESULT_TRANSITIONS: Mapping[tuple[ToolResult, ToolResultEvent], ToolResult] = {
    (ToolResult.NONE, ToolResultEvent.OUTPUT_SENT): ToolResult.AWAITING,
    (ToolResult.AWAITING, ToolResultEvent.OUTPUT_SENT): ToolResult.AWAITING,
    (ToolResult.AWAITING, ToolResultEvent.CREATE_SENT): ToolResult.NONE,
}

#: Setup states in which held messages and audio flow upstream.
FLOWING: frozenset[Setup] = frozenset({Setup.READY, Setup.READY_UNCONFIGURED})
#: Setup states in which a Settings has already been forwarded (another one is answered, not forwarded).
CONFIGURED: frozenset[Setup] = frozenset({Setup.UPDATE_SENT, Setup.READY})

State = TypeVar("State", bound=enum.Enum)
Event = TypeVar("Event", bound=enum.Enum)


def advance(table: Mapping[tuple[State, Event], State], state: State, event: Event) -> State:
    """The next state, or :class:`IllegalTransition` for a pair the table does not list."""
    try:
        return table[state, event]
    except KeyError:
        raise IllegalTransition(f"{event.name} in state {state.name}") from None


@dataclass(slots=True)
class Turn:
    """Everything about one response; a new one replaces it when the next response starts."""

    started_speaking: bool = False  # AgentStartedSpeaking sent
    agent_done: bool = False  # AgentDone + AgentAudioDone sent, or settled (a tool result continues the turn)
    audio_seen: bool = False  # TTS audio relayed
    text_emitted: bool = False  # assistant ConversationText sent
    last_text: str | None = None  # its trimmed text (an item repeating it is not sent again)
    text_parts: list[str] = field(default_factory=list)  # output_text deltas, bounded by text_chars
    text_chars: int = 0

    def take_text(self) -> str:
        """The accumulated deltas, emptied (output_text.done and response.done each consume them)."""
        text = "".join(self.text_parts)
        self.text_parts = []
        self.text_chars = 0
        return text


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The translator's machines and counts at one moment (for invariant checks and debugging)."""

    upstream: UpstreamLeg
    client: ClientLeg
    detection: TurnDetection
    setup: Setup
    response: Response
    tool_result: ToolResult
    preopen_frames: int
    held_messages: int
    held_audio: int
    uncommitted_bytes: int
    replies_owed: int
    debounce_at: float | None
    coalesce_at: float | None
    watchdog_at: float | None


def illegal_combinations(state: Snapshot) -> list[str]:
    """The rules that hold between the machines after every event; returns the ones broken (empty: legal)."""
    broken = []
    if state.preopen_frames and state.upstream is UpstreamLeg.OPEN:
        broken.append("client frames still queued for an upstream that is open")
    if (state.held_messages or state.held_audio) and state.setup in FLOWING:
        broken.append("messages or audio held although the session is ready")
    if state.watchdog_at is not None and state.tool_result is not ToolResult.AWAITING:
        broken.append("tool-result watchdog armed with no tool result awaiting its response")
    if state.tool_result is ToolResult.AWAITING and state.setup not in FLOWING:
        broken.append("a tool result was sent before the session was ready")
    if state.coalesce_at is not None and state.uncommitted_bytes <= 0:
        broken.append("commit deadline armed with nothing to commit")
    armed = (state.debounce_at, state.coalesce_at, state.watchdog_at)
    if any(at is not None for at in armed) and (
        state.client is ClientLeg.GONE or state.upstream is not UpstreamLeg.OPEN
    ):
        broken.append("a deadline armed while a leg is not open")
    if state.setup in CONFIGURED and state.upstream is UpstreamLeg.CONNECTING:
        broken.append("session.update sent before the upstream opened")
    if state.response is Response.ACTIVE and state.upstream is UpstreamLeg.CONNECTING:
        broken.append("a response active before the upstream opened")
    if state.replies_owed < 0:
        broken.append("negative replies owed")
    return broken
