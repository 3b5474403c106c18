"""The translator's state: small named machines, each holding one value, and the rules that tie them together.

Theory of operation. The translator (proxy/openai/translator.py) is fed events by the shell and keeps its state in
the machines below instead of loose flags. Each machine changes only through :func:`advance` with a pair listed
in its table; a pair that is not listed is a bug in the translator (:class:`IllegalTransition`), never a peer's
fault: whatever a peer sends is decided before a transition is asked for (a duplicate Settings, for example, is
answered without one). Everything that belongs to one response lives in a :class:`Turn`, replaced when the next
response starts, so no field can be forgotten by a reset. A caller that breaks the core's contract gets
:class:`TranslatorMisuse`: opening the upstream twice, a client message after ``client_closed``, an upstream
message before ``upstream_opened`` (once the client is gone, upstream messages are ignored whatever the leg's
state, as the reference does), or a ``now`` earlier than the last one.

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

``Commit`` (manual commit, one :class:`ManualCommit` object): EMPTY (nothing uncommitted), HELD (audio uncommitted,
no deadline), DEBOUNCE, DEBOUNCE_AND_COALESCE, COALESCE (which of the two commit deadlines is armed). The object
also holds the byte count and the first-commit flag (the first commit needs 1 s of audio, later ones 100 ms):

  ================ ======================================== ========================
  event            from                                     to
  ================ ======================================== ========================
  APPENDED         EMPTY                                    HELD
  APPENDED         any other                                itself
  ARM_DEBOUNCE     HELD, DEBOUNCE                           DEBOUNCE
  ARM_DEBOUNCE     COALESCE, DEBOUNCE_AND_COALESCE          DEBOUNCE_AND_COALESCE
  ARM_COALESCE     DEBOUNCE                                 DEBOUNCE_AND_COALESCE
  DEBOUNCE_FIRED   DEBOUNCE                                 HELD
  DEBOUNCE_FIRED   DEBOUNCE_AND_COALESCE                    COALESCE
  COALESCE_FIRED   DEBOUNCE_AND_COALESCE                    DEBOUNCE
  COALESCE_FIRED   COALESCE                                 HELD
  COMMITTED        HELD, DEBOUNCE, DEBOUNCE_AND_COALESCE,   EMPTY
                   COALESCE
  DISARMED         EMPTY                                    EMPTY
  DISARMED         any other                                HELD
  ================ ======================================== ========================

``Acknowledgement`` (injected messages, one :class:`InjectAcknowledgement` object): IDLE (nothing awaited, no reply
owed), AWAITING (injected items the upstream has not acknowledged yet; replies may be owed too), OWED (every inject
acknowledged, replies owed: a response.create may go out). SENT: any -> AWAITING; ACKNOWLEDGED: AWAITING -> AWAITING;
ACKNOWLEDGED_LAST: AWAITING -> OWED; ANSWERED (a response started): AWAITING -> AWAITING, OWED -> OWED;
ANSWERED_LAST: OWED -> IDLE. A response that starts while nothing is owed is no event.

The legal combinations of all machines are :func:`illegal_combinations`.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar


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


class Commit(enum.Enum):
    EMPTY = enum.auto()  # nothing uncommitted, no deadline
    HELD = enum.auto()  # audio uncommitted, no deadline (the next append, a response end or the close commits it)
    DEBOUNCE = enum.auto()  # quiet-time deadline armed
    DEBOUNCE_AND_COALESCE = enum.auto()  # both deadlines armed
    COALESCE = enum.auto()  # the debounce fired while a response was active; the coalesce deadline is still armed


class CommitEvent(enum.Enum):
    APPENDED = enum.auto()  # microphone audio or silence padding counted
    ARM_DEBOUNCE = enum.auto()
    ARM_COALESCE = enum.auto()
    DEBOUNCE_FIRED = enum.auto()
    COALESCE_FIRED = enum.auto()
    COMMITTED = enum.auto()
    DISARMED = enum.auto()  # a leg went away, or the client's close flushes the buffer


class Acknowledgement(enum.Enum):
    IDLE = enum.auto()
    AWAITING = enum.auto()  # injected items not yet acknowledged by the upstream (replies may be owed as well)
    OWED = enum.auto()  # every inject acknowledged; at least one reply owed


class AcknowledgementEvent(enum.Enum):
    SENT = enum.auto()
    ACKNOWLEDGED = enum.auto()  # one inject acknowledged, others still awaited
    ACKNOWLEDGED_LAST = enum.auto()
    ANSWERED = enum.auto()  # a response started for one owed reply, more are owed or awaited
    ANSWERED_LAST = enum.auto()


_ARMED = (Commit.DEBOUNCE, Commit.DEBOUNCE_AND_COALESCE, Commit.COALESCE)
COMMIT_TRANSITIONS: Mapping[tuple[Commit, CommitEvent], Commit] = {
    (Commit.EMPTY, CommitEvent.APPENDED): Commit.HELD,
    **{(state, CommitEvent.APPENDED): state for state in (Commit.HELD, *_ARMED)},
    (Commit.HELD, CommitEvent.ARM_DEBOUNCE): Commit.DEBOUNCE,
    (Commit.DEBOUNCE, CommitEvent.ARM_DEBOUNCE): Commit.DEBOUNCE,
    (Commit.COALESCE, CommitEvent.ARM_DEBOUNCE): Commit.DEBOUNCE_AND_COALESCE,
    (Commit.DEBOUNCE_AND_COALESCE, CommitEvent.ARM_DEBOUNCE): Commit.DEBOUNCE_AND_COALESCE,
    (Commit.DEBOUNCE, CommitEvent.ARM_COALESCE): Commit.DEBOUNCE_AND_COALESCE,
    (Commit.DEBOUNCE, CommitEvent.DEBOUNCE_FIRED): Commit.HELD,
    (Commit.DEBOUNCE_AND_COALESCE, CommitEvent.DEBOUNCE_FIRED): Commit.COALESCE,
    (Commit.DEBOUNCE_AND_COALESCE, CommitEvent.COALESCE_FIRED): Commit.DEBOUNCE,
    (Commit.COALESCE, CommitEvent.COALESCE_FIRED): Commit.HELD,
    **{(state, CommitEvent.COMMITTED): Commit.EMPTY for state in (Commit.HELD, *_ARMED)},
    (Commit.EMPTY, CommitEvent.DISARMED): Commit.EMPTY,
    **{(state, CommitEvent.DISARMED): Commit.HELD for state in (Commit.HELD, *_ARMED)},
}
ACKNOWLEDGEMENT_TRANSITIONS: Mapping[tuple[Acknowledgement, AcknowledgementEvent], Acknowledgement] = {
    **{(state, AcknowledgementEvent.SENT): Acknowledgement.AWAITING for state in Acknowledgement},
    (Acknowledgement.AWAITING, AcknowledgementEvent.ACKNOWLEDGED): Acknowledgement.AWAITING,
    (Acknowledgement.AWAITING, AcknowledgementEvent.ACKNOWLEDGED_LAST): Acknowledgement.OWED,
    (Acknowledgement.AWAITING, AcknowledgementEvent.ANSWERED): Acknowledgement.AWAITING,
    (Acknowledgement.OWED, AcknowledgementEvent.ANSWERED): Acknowledgement.OWED,
    (Acknowledgement.OWED, AcknowledgementEvent.ANSWERED_LAST): Acknowledgement.IDLE,
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


# Manual-commit audio thresholds, in 24 kHz bytes (reference constants).
MIN_AUDIO_BYTES_FOR_COMMIT: Final = 4_800  # 100 ms
MIN_AUDIO_BYTES_FOR_FIRST_COMMIT: Final = 48_000  # 1 s


@dataclass(slots=True)
class ManualCommit:
    """The manual-commit machine: its phase, the uncommitted byte count, the first-commit flag and the deadlines.

    Every change goes through a method that asks the table for the next phase, so the deadlines and the count can
    never disagree with the phase. The translator decides *whether* to arm or commit; this object records it.
    """

    phase: Commit = Commit.EMPTY
    uncommitted_bytes: int = 0
    first_done: bool = False
    debounce_at: float | None = None
    coalesce_at: float | None = None

    def _step(self, event: CommitEvent) -> None:
        self.phase = advance(COMMIT_TRANSITIONS, self.phase, event)

    @property
    def threshold_bytes(self) -> int:
        return MIN_AUDIO_BYTES_FOR_COMMIT if self.first_done else MIN_AUDIO_BYTES_FOR_FIRST_COMMIT

    def appended(self, size: int) -> None:
        if size <= 0:
            raise IllegalTransition(f"APPENDED of {size} bytes")
        self._step(CommitEvent.APPENDED)
        self.uncommitted_bytes += size

    def arm_debounce(self, at: float) -> None:
        self._step(CommitEvent.ARM_DEBOUNCE)
        self.debounce_at = at

    def arm_coalesce(self, at: float) -> None:
        self._step(CommitEvent.ARM_COALESCE)
        self.coalesce_at = at

    def debounce_fired(self) -> None:
        self._step(CommitEvent.DEBOUNCE_FIRED)
        self.debounce_at = None

    def coalesce_fired(self) -> None:
        self._step(CommitEvent.COALESCE_FIRED)
        self.coalesce_at = None

    def committed(self) -> None:
        self._step(CommitEvent.COMMITTED)
        self.first_done = True
        self.uncommitted_bytes = 0
        self.debounce_at = self.coalesce_at = None

    def disarm(self) -> None:
        self._step(CommitEvent.DISARMED)
        self.debounce_at = self.coalesce_at = None


@dataclass(slots=True)
class InjectAcknowledgement:
    """The inject-acknowledgement machine: ids of injected items awaiting the upstream's acknowledgement (oldest
    first), ids already counted with their lifecycle stage (created 0, added 1, done 2), and replies owed."""

    max_awaiting: int
    max_remembered: int
    phase: Acknowledgement = Acknowledgement.IDLE
    awaiting: OrderedDict[str, None] = field(default_factory=OrderedDict)
    counted: OrderedDict[str, int] = field(default_factory=OrderedDict)
    replies_owed: int = 0  # acknowledged injects not yet answered by a response

    def _step(self, event: AcknowledgementEvent) -> None:
        self.phase = advance(ACKNOWLEDGEMENT_TRANSITIONS, self.phase, event)

    def sent(self, item_id: str) -> str | None:
        """Record an injected item; returns the oldest awaited id if it had to be given up (the bound)."""
        dropped = None
        if len(self.awaiting) >= self.max_awaiting:
            dropped, _ = self.awaiting.popitem(last=False)
        self.awaiting[item_id] = None
        self._step(AcknowledgementEvent.SENT)
        return dropped

    def acknowledges(self, item_id: str | None, user_text: bool, stage: int) -> bool:
        """Whether this item event acknowledges an injected message not yet acknowledged (and records it).

        An id matching an inject acknowledges it. Otherwise (an upstream that does not echo client ids) the next
        user text message acknowledges the oldest waiting inject. One item's created/added/done count once; an id
        seen again at the same or an earlier stage is a new item reusing the id, and counts again.
        """
        if item_id is not None:
            last_stage = self.counted.get(item_id)
            if last_stage is not None and stage > last_stage:
                self.counted[item_id] = stage  # the same item progressing
                return False
        if not self.awaiting:
            return False
        if item_id is not None and item_id in self.awaiting:
            del self.awaiting[item_id]
        elif user_text:
            self.awaiting.popitem(last=False)
        else:
            return False
        if item_id is not None:
            self.counted.pop(item_id, None)
            self.counted[item_id] = stage
            if len(self.counted) > self.max_remembered:
                self.counted.popitem(last=False)
        self.replies_owed += 1
        self._step(AcknowledgementEvent.ACKNOWLEDGED if self.awaiting else AcknowledgementEvent.ACKNOWLEDGED_LAST)
        return True

    @property
    def reply_due(self) -> bool:
        """A reply is owed and every injected item sent so far is in the conversation."""
        return self.phase is Acknowledgement.OWED

    def response_started(self) -> None:
        """Each response that starts answers one owed reply, whoever asked for it."""
        if not self.replies_owed:
            return
        self.replies_owed -= 1
        last = not self.replies_owed and not self.awaiting
        self._step(AcknowledgementEvent.ANSWERED_LAST if last else AcknowledgementEvent.ANSWERED)


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
    commit: Commit = Commit.EMPTY
    acknowledgement: Acknowledgement = Acknowledgement.IDLE
    awaiting_acknowledgement: int = 0


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
    expected_commit = _commit_phase(state.uncommitted_bytes, state.debounce_at, state.coalesce_at)
    if state.commit is not expected_commit:
        broken.append(f"manual commit in {state.commit.name} but its count and deadlines say {expected_commit.name}")
    expected_ack = (
        Acknowledgement.AWAITING
        if state.awaiting_acknowledgement
        else Acknowledgement.OWED
        if state.replies_owed
        else Acknowledgement.IDLE
    )
    if state.acknowledgement is not expected_ack:
        broken.append(f"inject acknowledgement in {state.acknowledgement.name} but its counts say {expected_ack.name}")
    return broken


def _commit_phase(uncommitted: int, debounce_at: float | None, coalesce_at: float | None) -> Commit:
    if uncommitted <= 0:
        return Commit.EMPTY  # a deadline armed with nothing counted disagrees with every armed phase
    if debounce_at is not None:
        return Commit.DEBOUNCE if coalesce_at is None else Commit.DEBOUNCE_AND_COALESCE
    if coalesce_at is not None:
        return Commit.COALESCE
    return Commit.HELD if uncommitted > 0 else Commit.EMPTY
