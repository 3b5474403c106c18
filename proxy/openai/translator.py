"""The OpenAI Realtime translator: a sans-IO :class:`~proxy.core.SessionCore` for the ``/openai`` route.

The component speaks the Deepgram Voice Agent protocol; the upstream is the OpenAI Realtime GA API. The translator
is fed client frames, upstream frames, closes and the time, and appends what to send to ``to_client`` /
``to_upstream``. Its behaviour is the reference translator's, message for message, except where the reference is
broken; those fixes are marked "Fix:" below. Timers are deadlines (``next_deadline``/``timer_fired``), never sleeps.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import msgspec

from ..audio import DEFAULT_RESAMPLER, ResamplerKind, new_resampler
from ..core import (
    POLICY_VIOLATION,
    SESSION_EXPIRED_CLOSES,
    SESSION_EXPIRED_ERROR,
    Close,
    FailureKind,
    Frame,
    UpstreamFailure,
    relay_close,
    strict,
)
from ..protocol import component, openai
from ..protocol.json_depth import MAX_JSON_DEPTH, too_deep
from ..ratelimit import WarningLimiter
from ..redact import SHAPES_ONLY, Redactor
from . import error_codes, javascript, session_update, upstream_text
from .state import (
    CONFIGURED,
    FLOWING,
    MIN_AUDIO_BYTES_FOR_COMMIT,
    RESPONSE_TRANSITIONS,
    SETUP_TRANSITIONS,
    TOOL_RESULT_TRANSITIONS,
    ClientLeg,
    InjectAcknowledgement,
    ManualCommit,
    Response,
    ResponseEvent,
    Setup,
    SetupEvent,
    Snapshot,
    ToolResult,
    ToolResultEvent,
    TranslatorMisuse,
    Turn,
    TurnDetection,
    UpstreamLeg,
    advance,
)

LOGGER_NAME: Final = "proxy.openai"

MAX_AUDIO_BYTES_PER_APPEND: Final = 15 * 1024 * 1024

# Bounds on per-connection memory that the reference leaves unbounded.
MAX_TRANSCRIPT_ITEMS: Final = 64
MAX_ACCUMULATED_CHARS: Final = 256 * 1024
MAX_AWAITING_ACK: Final = 256
MAX_REMEMBERED_ITEM_IDS: Final = 1024
_LOG_PAYLOAD_CHARS: Final = 512
_AUDIO_FIELD: Final = re.compile(r'"(?:audio|delta)"\s*:\s*"')

_ITEM_STAGE: Final = {"conversation.item.created": 0, "conversation.item.added": 1, "conversation.item.done": 2}

Adapter: TypeAlias = "logging.LoggerAdapter[logging.Logger]"


@dataclass(frozen=True, slots=True)
class TranslatorOptions:
    """Per-route settings of the translator. Times are in seconds, sizes in bytes."""

    #: Forward unknown client JSON upstream verbatim instead of answering an Error (legacy debugging only).
    allow_client_json_passthrough: bool = False
    #: How long to wait for the upstream to complete a tool result before sending ``response.create`` anyway.
    deferred_response_create_timeout: float = 20.0
    #: Manual-commit mode: quiet time after the last append before committing.
    commit_debounce: float = 0.4
    #: Manual-commit mode: the longest a committable buffer waits while appends keep arriving.
    commit_max_coalesce: float = 0.6
    #: Client frames held until the upstream is open.
    max_preopen_frames: int = 256
    max_preopen_bytes: int = 4 * 1024 * 1024
    #: InjectUserMessage/FunctionCallResponse frames and audio frames (each) held until the session is ready.
    max_pending_frames: int = 256
    max_pending_bytes: int = 4 * 1024 * 1024
    #: Prefix of the item ids chosen for injected user messages (the API allows at most 32 characters).
    inject_item_id_prefix: str = "item_inject_"
    #: Microphone 16 -> 24 kHz conversion: "soxr" (anti-aliased) or "linear" (the reference's, bit for bit).
    resampler: ResamplerKind = DEFAULT_RESAMPLER

    def __post_init__(self) -> None:
        if len(self.inject_item_id_prefix) > 20:  # leaves room for a counter within the API's 32 characters
            raise ValueError("inject_item_id_prefix must be at most 20 characters")


class Translator:
    """Translate one component connection to one OpenAI Realtime GA connection (see :class:`proxy.core.SessionCore`).

    Public counters (``dropped_audio_frames``, ``dropped_audio_bytes``) report audio discarded because the session
    did not become ready in time. ``redactor`` masks secrets in every ``Error`` and close reason sent to the client;
    warnings about either peer's faults are rate-limited per session.
    """

    def __init__(
        self, options: TranslatorOptions | None = None, *, log: Adapter | None = None, redactor: Redactor = SHAPES_ONLY
    ) -> None:
        self.options = options if options is not None else TranslatorOptions()
        self.log: Adapter = log if log is not None else logging.LoggerAdapter(logging.getLogger(LOGGER_NAME), {})
        self._redact = redactor
        self._warnings = WarningLimiter()
        self.to_client: list[Frame] = []
        self.to_upstream: list[Frame] = []
        self.dropped_audio_frames = 0
        self.dropped_audio_bytes = 0

        self._now = 0.0
        self._fatal: Close | None = None
        # Legs.
        self._upstream = UpstreamLeg.CONNECTING
        self._client = ClientLeg.CONNECTED
        self._preopen: deque[Frame] = deque()
        self._preopen_bytes = 0
        # Session (the machines are described in proxy/openai/state.py).
        self._setup = Setup.WAITING
        self._greeting: str | None = None
        self._had_context = False
        self._detection = TurnDetection.MANUAL
        self._pending_messages: deque[tuple[component.InjectUserMessage | component.FunctionCallResponse, int]] = (
            deque()
        )
        self._pending_messages_bytes = 0
        self._pending_audio: deque[bytes] = deque()
        self._pending_audio_bytes = 0
        # Microphone audio (manual-commit bookkeeping in 24 kHz bytes).
        self._resampler = new_resampler(self.options.resampler)
        self._commit = ManualCommit()
        # Responses.
        self._response = Response.IDLE
        self._tool_result = ToolResult.NONE
        self._watchdog_at: float | None = None
        self._turn = Turn()
        self._idle_error: str | None = None
        # Injected messages and the replies they are owed.
        self._inject_seq = 0
        self._acknowledgement = InjectAcknowledgement(
            max_awaiting=MAX_AWAITING_ACK, max_remembered=MAX_REMEMBERED_ITEM_IDS
        )
        self._assistant_text_item_ids: OrderedDict[str, None] = OrderedDict()
        self._transcripts: OrderedDict[str, str] = OrderedDict()

        self._client_handlers: dict[type[Any], Callable[[Any, str], None]] = {
            component.Settings: self._on_settings,
            component.InjectUserMessage: self._on_inject_frame,
            component.FunctionCallResponse: self._on_function_call_response_frame,
            component.KeepAlive: self._on_keepalive,
        }
        self._upstream_handlers: dict[type[Any], Callable[[Any, Frame], None]] = {
            openai.ResponseOutputAudioDelta: self._on_audio_delta,
            openai.SessionCreated: self._log_only,
            openai.SessionUpdated: self._on_session_updated,
            openai.ConversationCreated: self._log_only,
            openai.ConversationItemCreated: self._on_item,
            openai.ConversationItemAdded: self._on_item,
            openai.ConversationItemDone: self._on_item,
            openai.ConversationItemRetrieved: self._log_only,
            openai.ConversationItemDeleted: self._log_only,
            openai.ConversationItemTruncated: self._log_only,
            openai.InputAudioTranscriptionCompleted: self._on_transcription_completed,
            openai.InputAudioTranscriptionDelta: self._on_transcription_delta,
            openai.InputAudioTranscriptionFailed: self._on_transcription_failed,
            openai.InputAudioTranscriptionSegment: self._log_only,
            openai.ErrorEvent: self._on_error,
            openai.InputAudioBufferCleared: self._log_only,
            openai.InputAudioBufferCommitted: self._log_only,
            openai.InputAudioBufferDtmfEventReceived: self._log_only,
            openai.InputAudioBufferSpeechStarted: self._on_speech_started,
            openai.InputAudioBufferSpeechStopped: self._on_speech_stopped,
            openai.InputAudioBufferTimeoutTriggered: self._log_only,
            openai.McpListToolsInProgress: self._log_only,
            openai.McpListToolsCompleted: self._log_only,
            openai.McpListToolsFailed: self._log_only,
            openai.RateLimitsUpdated: self._log_only,
            openai.ResponseContentPartAdded: self._log_only,
            openai.ResponseContentPartDone: self._log_only,
            openai.ResponseCreated: self._on_response_created,
            openai.ResponseDone: self._on_response_done,
            openai.ResponseFunctionCallArgumentsDelta: self._log_only,
            openai.ResponseFunctionCallArgumentsDone: self._on_function_call_arguments_done,
            openai.ResponseOutputAudioDone: self._on_audio_done,
            openai.ResponseOutputAudioTranscriptDelta: self._log_only,
            openai.ResponseOutputAudioTranscriptDone: self._on_transcript_done,
            openai.ResponseOutputItemAdded: self._log_only,
            openai.ResponseOutputItemDone: self._log_only,
            openai.ResponseOutputTextAdded: self._log_only,
            openai.ResponseOutputTextDelta: self._on_text_delta,
            openai.ResponseOutputTextDone: self._on_text_done,
            openai.OutputAudioBufferStarted: self._log_only,
            openai.OutputAudioBufferStopped: self._log_only,
            openai.OutputAudioBufferCleared: self._log_only,
            openai.ResponseMcpCallArgumentsDelta: self._log_only,
            openai.ResponseMcpCallArgumentsDone: self._log_only,
            openai.ResponseMcpCallInProgress: self._log_only,
            openai.ResponseMcpCallCompleted: self._log_only,
            openai.ResponseMcpCallFailed: self._log_only,
        }

    # ===========================================================================================================
    # SessionCore

    def upstream_opened(self, now: float) -> None:
        if self._upstream is UpstreamLeg.OPEN:
            raise TranslatorMisuse("upstream_opened called twice")
        self._set_clock(now)
        if self._upstream is UpstreamLeg.GONE or self._client is ClientLeg.GONE:
            return
        self._upstream = UpstreamLeg.OPEN
        self.log.info("upstream open; replaying %d queued client frame(s)", len(self._preopen))
        queued, self._preopen = self._preopen, deque()
        self._preopen_bytes = 0
        for frame in queued:
            if self._fatal is not None:
                break
            self._handle_client_frame(frame)

    def client_message(self, message: Frame, now: float) -> None:
        if self._client is ClientLeg.GONE:
            raise TranslatorMisuse("client_message after client_closed")
        self._set_clock(now)
        if self._upstream is UpstreamLeg.GONE or self._fatal is not None or not message:
            return
        if self._upstream is UpstreamLeg.CONNECTING:
            # Fix: bounded. The reference queues without limit until the upstream opens.
            if (
                len(self._preopen) >= self.options.max_preopen_frames
                or self._preopen_bytes + len(message) > self.options.max_preopen_bytes
            ):
                self._overflow("before the upstream connection opened")
                return
            self._preopen.append(message)
            self._preopen_bytes += len(message)
            return
        self._handle_client_frame(message)

    def upstream_message(self, message: Frame, now: float) -> None:
        self._set_clock(now)
        if self._client is ClientLeg.GONE or self._upstream is UpstreamLeg.GONE:
            return  # the reference ignores upstream frames once the client is gone; nothing is sent anywhere
        if self._upstream is UpstreamLeg.CONNECTING:
            raise TranslatorMisuse("upstream_message before upstream_opened")
        try:
            event = openai.decode_server_event(message)
        except (openai.MalformedEvent, RecursionError) as exc:
            self._peer_warning("malformed upstream frame (%d chars): %s", len(message), exc)
            self._send_error(error_codes.UNMAPPED_UPSTREAM_CODE, error_codes.UNMAPPED_UPSTREAM_DESCRIPTION)
            return
        # Every event but the audio hot path has untyped fields that handlers and log lines walk recursively.
        if type(event) is not openai.ResponseOutputAudioDelta and too_deep(message):
            self._peer_warning("upstream frame nested more than %d levels (%d chars)", MAX_JSON_DEPTH, len(message))
            self._send_error(error_codes.UNMAPPED_UPSTREAM_CODE, error_codes.UNMAPPED_UPSTREAM_DESCRIPTION)
            return
        handler = self._upstream_handlers.get(type(event), self._on_unknown_event)
        try:
            handler(event, message)
        except Exception:
            if strict():
                raise
            # The reference answers any failure while handling an event with this Error; never fatal.
            self.log.exception("failed to handle upstream event %s", type(event).__name__)
            self._send_error(error_codes.UNMAPPED_UPSTREAM_CODE, error_codes.UNMAPPED_UPSTREAM_DESCRIPTION)

    def timer_fired(self, now: float) -> None:
        self._set_clock(now)
        # Fire every due deadline, earliest first; ties in a fixed order. Firing can cancel the others, never re-arm
        # one that is already due (a new deadline is always later than now), so three deadlines need at most three
        # rounds; 8 is a safety margin that keeps a future bug from looping forever.
        for _ in range(8):
            due = [
                (at, rank, fire)
                for rank, (at, fire) in enumerate(
                    (
                        (self._commit.debounce_at, self._fire_debounce),
                        (self._commit.coalesce_at, self._fire_coalesce),
                        (self._watchdog_at, self._fire_watchdog),
                    )
                )
                if at is not None and at <= now
            ]
            if not due:
                return
            min(due, key=lambda entry: (entry[0], entry[1]))[2]()

    def next_deadline(self) -> float | None:
        commit = self._commit
        deadlines = [at for at in (commit.debounce_at, commit.coalesce_at, self._watchdog_at) if at is not None]
        return min(deadlines) if deadlines else None

    def upstream_failed(self, failure: UpstreamFailure, now: float) -> Close:
        self._set_clock(now)
        self._upstream = UpstreamLeg.GONE
        self._clear_timers()
        code, description = failure.error()
        if failure.kind is not FailureKind.PROTOCOL:  # a protocol fault was logged by the shell, once
            self.log.error("upstream unavailable: %s", code)
        self._report_suppressed()
        if self._client is ClientLeg.CONNECTED:
            self._send_error(code, description)
        return failure.close()

    def upstream_closed(self, code: int | None, reason: str | None, now: float) -> Close:
        self._set_clock(now)
        self.log.info("upstream closed (code %s, reason %r)", code, error_codes.sanitize_reason(reason))
        self._upstream = UpstreamLeg.GONE
        self._clear_timers()
        self._report_suppressed()
        if self._client is ClientLeg.CONNECTED:
            self._flush_idle_error()
            if self._setup not in FLOWING:
                self.log.warning("upstream closed before the session was ready (code %s)", code)
                self._send_error(
                    error_codes.CLOSED_BEFORE_READY_CODE,
                    error_codes.closed_before_ready_description(code, reason),
                )
        return relay_close(code, reason, self._redact)

    def client_closed(self, code: int | None, reason: str | None, now: float) -> Close:
        self._set_clock(now)
        self.log.info("client closed (code %s, reason %r)", code, error_codes.sanitize_reason(reason))
        if self._client is ClientLeg.CONNECTED and self._upstream_usable():
            self._flush_commit_on_close()
        self._client = ClientLeg.GONE
        self._clear_timers()
        self._report_suppressed()
        return relay_close(code, reason, self._redact)

    def session_expired(self, now: float) -> tuple[Close, Close]:
        self._set_clock(now)
        self.log.info("maximum session duration reached")
        self._clear_timers()
        self._report_suppressed()
        self._send_error(*SESSION_EXPIRED_ERROR)
        return SESSION_EXPIRED_CLOSES

    def fatal(self) -> Close | None:
        return self._fatal

    def snapshot(self) -> Snapshot:
        """The machines and counts now (see :func:`proxy.openai.state.illegal_combinations`)."""
        return Snapshot(
            upstream=self._upstream,
            client=self._client,
            detection=self._detection,
            setup=self._setup,
            response=self._response,
            tool_result=self._tool_result,
            preopen_frames=len(self._preopen),
            held_messages=len(self._pending_messages),
            held_audio=len(self._pending_audio),
            uncommitted_bytes=self._commit.uncommitted_bytes,
            replies_owed=self._acknowledgement.replies_owed,
            debounce_at=self._commit.debounce_at,
            coalesce_at=self._commit.coalesce_at,
            watchdog_at=self._watchdog_at,
            commit=self._commit.phase,
            acknowledgement=self._acknowledgement.phase,
            awaiting_acknowledgement=len(self._acknowledgement.awaiting),
        )

    def _set_clock(self, now: float) -> None:
        # Deadlines are compared with this clock; a caller whose time runs backwards would fire them out of order.
        if now < self._now:
            raise TranslatorMisuse(f"time went backwards: {now!r} after {self._now!r}")
        self._now = now

    # ===========================================================================================================
    # Client frames

    def _handle_client_frame(self, frame: Frame) -> None:
        # Fix: routed by opcode. The reference tries JSON first and treats anything that fails as audio.
        if isinstance(frame, bytes):
            self._on_audio(frame)
            return
        # Before decoding: every client message type has untyped fields that the mapping walks recursively.
        if too_deep(frame):
            self._peer_warning("client JSON nested more than %d levels (%d chars)", MAX_JSON_DEPTH, len(frame))
            self._send_error(error_codes.TOO_DEEP_CLIENT_CODE, error_codes.too_deep_client_description(MAX_JSON_DEPTH))
            return
        try:
            message = component.client_message_decoder.decode(frame)
        except msgspec.ValidationError:  # JSON, but not one of ours (ValidationError subclasses DecodeError)
            self._on_other_json(frame)
            return
        except (msgspec.DecodeError, RecursionError):  # msgspec raises RecursionError for absurd nesting
            self._reject_unparsable(frame)
            return
        try:
            self._client_handlers[type(message)](message, frame)
        except Exception:
            if strict():
                raise
            # Never let one message take the connection (or the process) down, as the reference can.
            self.log.exception("failed to handle client %s", type(message).__name__)
            self._send_error(error_codes.CLIENT_MESSAGE_FAILED_CODE, error_codes.CLIENT_MESSAGE_FAILED_DESCRIPTION)

    def _reject_unparsable(self, frame: str) -> None:
        self._peer_warning("client text frame is not a JSON object (%d chars)", len(frame))
        self._send_error(error_codes.UNPARSABLE_CLIENT_CODE, error_codes.UNPARSABLE_CLIENT_DESCRIPTION)

    def _on_other_json(self, frame: str) -> None:
        """A JSON object or array whose ``type`` is missing, not a string or not one we accept (§5.5)."""
        try:
            value = msgspec.json.decode(frame)
        except (msgspec.MsgspecError, RecursionError):
            self._reject_unparsable(frame)
            return
        if isinstance(value, dict):
            type_value = value.get("type")
        elif isinstance(value, list):
            type_value = None
        else:
            self._reject_unparsable(frame)
            return
        if type_value == "KeepAlive":  # a KeepAlive is never forwarded, whatever else it carries
            return
        if self.options.allow_client_json_passthrough:
            self.log.info("forwarding client JSON of type %r upstream (passthrough)", type_value)
            self.to_upstream.append(frame)
            return
        type_name = error_codes.describe_client_type(type_value)
        self._peer_warning("disallowed client message type %r", type_name[:100])
        self._send_error(error_codes.DISALLOWED_CODE, error_codes.disallowed_description(type_name))

    def _on_keepalive(self, message: component.KeepAlive, frame: str) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("client KeepAlive (ignored)")

    def _on_settings(self, message: component.Settings, frame: str) -> None:
        if self._setup in CONFIGURED:
            self.log.info("duplicate Settings: answered SettingsApplied, not forwarded")
            self.to_client.append(component.SETTINGS_APPLIED)
            return
        if self._response is Response.ACTIVE or self._tool_result is ToolResult.AWAITING:
            # Reference behaviour, kept on purpose: acknowledge and drop (its greeting and context are lost).
            self._peer_warning(
                "Settings arrived while a response is active or a tool result awaits one: "
                "answered SettingsApplied, dropped"
            )
            self.to_client.append(component.SETTINGS_APPLIED)
            return
        update = session_update.session_update_event(message)
        self._setup = advance(SETUP_TRANSITIONS, self._setup, SetupEvent.SETTINGS_FORWARDED)
        vad = session_update.uses_server_vad(update.session)
        self._detection = TurnDetection.SERVER_VAD if vad else TurnDetection.MANUAL
        self._had_context = session_update.has_context(message)
        self._greeting = session_update.greeting(message)
        self.to_upstream.append(openai.encode(update))
        self.log.info("session.update sent (tools: %d, server VAD: %s)", len(update.session.get("tools", ())), vad)

    def _on_inject_frame(self, message: component.InjectUserMessage, frame: str) -> None:
        if self._setup not in FLOWING:
            self._hold_until_ready(message, len(frame))
            return
        self._inject(message)

    def _on_function_call_response_frame(self, message: component.FunctionCallResponse, frame: str) -> None:
        # Fix: gated on session readiness like everything else (the reference sends it at once).
        if self._setup not in FLOWING:
            self._hold_until_ready(message, len(frame))
            return
        self._function_call_response(message)

    def _hold_until_ready(
        self, message: component.InjectUserMessage | component.FunctionCallResponse, size: int
    ) -> None:
        if (
            len(self._pending_messages) >= self.options.max_pending_frames
            or self._pending_messages_bytes + size > self.options.max_pending_bytes
        ):
            self._overflow("before the session was ready")
            return
        self._pending_messages.append((message, size))
        self._pending_messages_bytes += size

    def _inject(self, message: component.InjectUserMessage) -> None:
        text = session_update.inject_text(message)
        # Fix: each inject carries its own id, and its response.create waits for that item's acknowledgement.
        self._inject_seq += 1
        item_id = f"{self.options.inject_item_id_prefix}{self._inject_seq}"
        self.to_upstream.append(
            openai.encode(openai.ConversationItemCreate(item=session_update.user_message_item(text, item_id)))
        )
        dropped = self._acknowledgement.sent(item_id)
        if dropped is not None:
            self._peer_warning("upstream never acknowledged injected item %s; no longer waiting for it", dropped)
        self.to_client.append(component.encode(component.ConversationText(role="user", content=text)))
        self.log.info("injected user message sent as item %s", item_id)

    def _function_call_response(self, message: component.FunctionCallResponse) -> None:
        item = session_update.function_call_output_item(message)
        self.to_upstream.append(openai.encode(openai.ConversationItemCreate(item=item)))
        self._tool_result = advance(TOOL_RESULT_TRANSITIONS, self._tool_result, ToolResultEvent.OUTPUT_SENT)
        self._watchdog_at = self._now + self.options.deferred_response_create_timeout
        self.log.info("function_call_output sent for call %r; response.create deferred", item.get("call_id"))
        self.to_client.append(component.AGENT_THINKING)

    # -- microphone audio ---------------------------------------------------------------------------------------

    def _on_audio(self, data: bytes) -> None:
        if self._setup not in FLOWING:
            # Fix: bounded. Audio beyond the bound is dropped (counted, logged) rather than held without limit.
            if (
                len(self._pending_audio) >= self.options.max_pending_frames
                or self._pending_audio_bytes + len(data) > self.options.max_pending_bytes
            ):
                if not self.dropped_audio_frames:
                    self.log.warning("session not ready: audio queue full, dropping microphone audio")
                self.dropped_audio_frames += 1
                self.dropped_audio_bytes += len(data)
                return
            self._pending_audio.append(data)
            self._pending_audio_bytes += len(data)
            return
        if self._append_audio(data) and self._detection is TurnDetection.MANUAL:
            self._schedule_commit()

    def _append_audio(self, data: bytes) -> bool:
        """Resample and append; returns whether anything was appended. Counts bytes in manual-commit mode."""
        out = self._resampler.push(data)
        if not out:
            return False
        if len(out) <= MAX_AUDIO_BYTES_PER_APPEND:
            self.to_upstream.append(openai.encode(openai.InputAudioBufferAppend(audio=out)))
        else:
            # Fix: split instead of raising (the reference throws, outside any handler).
            for start in range(0, len(out), MAX_AUDIO_BYTES_PER_APPEND):
                chunk = out[start : start + MAX_AUDIO_BYTES_PER_APPEND]
                self.to_upstream.append(openai.encode(openai.InputAudioBufferAppend(audio=chunk)))
        if self._detection is TurnDetection.MANUAL:
            self._commit.appended(len(out))
        return True

    def _schedule_commit(self) -> None:
        commit = self._commit
        commit.arm_debounce(self._now + self.options.commit_debounce)
        # Not reset by later appends, so a steady stream of chunks still commits.
        if (
            commit.coalesce_at is None
            and commit.uncommitted_bytes > 0
            and commit.uncommitted_bytes >= commit.threshold_bytes
            and self._response is Response.IDLE
            and self._upstream_usable()
        ):
            commit.arm_coalesce(self._now + self.options.commit_max_coalesce)

    def _commit_if_eligible(self) -> bool:
        commit = self._commit
        if (
            self._detection is TurnDetection.SERVER_VAD
            or commit.uncommitted_bytes <= 0
            or commit.uncommitted_bytes < commit.threshold_bytes
            or self._response is Response.ACTIVE
            or not self._upstream_usable()
        ):
            return False
        self.log.info("committing %d bytes of input audio", commit.uncommitted_bytes)
        self.to_upstream.append(openai.INPUT_AUDIO_BUFFER_COMMIT)
        self._send_response_create()
        commit.committed()
        return True

    def _fire_debounce(self) -> None:
        self._commit.debounce_fired()
        self._commit_if_eligible()  # an ineligible commit is not re-armed (reference behaviour)

    def _fire_coalesce(self) -> None:
        self._commit.coalesce_fired()
        self._commit_if_eligible()

    def _pad_audio(self, size: int) -> None:
        self.log.info("padding input audio with %d bytes of silence", size)
        self.to_upstream.append(openai.encode(openai.InputAudioBufferAppend(audio=bytes(size))))
        self._commit.appended(size)

    def _rearm_commit_after_response(self) -> None:
        uncommitted = self._commit.uncommitted_bytes
        if self._detection is TurnDetection.SERVER_VAD or uncommitted <= 0 or not self._upstream_usable():
            return
        if uncommitted < MIN_AUDIO_BYTES_FOR_COMMIT:
            self._pad_audio(MIN_AUDIO_BYTES_FOR_COMMIT - uncommitted)
        self._schedule_commit()

    def _flush_commit_on_close(self) -> None:
        commit = self._commit
        if (
            self._detection is TurnDetection.SERVER_VAD
            or commit.uncommitted_bytes <= 0
            or self._response is Response.ACTIVE
        ):
            return
        commit.disarm()
        if commit.uncommitted_bytes < commit.threshold_bytes:
            self._pad_audio(commit.threshold_bytes - commit.uncommitted_bytes)
        self._commit_if_eligible()

    # ===========================================================================================================
    # Responses

    def _start_response(self) -> None:
        self._response = advance(RESPONSE_TRANSITIONS, self._response, ResponseEvent.START)
        self._turn = Turn()
        # Each response that starts answers one acknowledged inject, whoever asked for it (a tool result's
        # follow-up or a VAD turn sees the injected message too).
        self._acknowledgement.response_started()

    def _end_response(self) -> None:
        # Fix: the started/done flags stay with the response that ended (the reference clears them here, which
        # sends a second AgentDone when output_text.done and response.done both end one response).
        self._response = advance(RESPONSE_TRANSITIONS, self._response, ResponseEvent.END)
        self._rearm_commit_after_response()

    def _send_response_create(self) -> None:
        self.to_upstream.append(openai.RESPONSE_CREATE)
        self._start_response()

    def _send_deferred_create(self) -> None:
        """The tool result's response.create, unless a response is still active (then it waits for its end)."""
        if self._tool_result is ToolResult.NONE or self._response is Response.ACTIVE or not self._upstream_usable():
            return
        self._tool_result = advance(TOOL_RESULT_TRANSITIONS, self._tool_result, ToolResultEvent.CREATE_SENT)
        self._watchdog_at = None
        self._send_response_create()

    def _answer_injects(self) -> None:
        """The response.create owed to acknowledged injects: one per inject, one at a time, and only once every
        injected item sent so far is in the conversation (never while a response or a tool result is pending)."""
        if (
            self._acknowledgement.reply_due
            and self._response is Response.IDLE
            and self._tool_result is ToolResult.NONE
            and self._upstream_usable()
        ):
            self._send_response_create()

    def _after_response_end(self) -> None:
        self._send_deferred_create()
        self._answer_injects()

    def _fire_watchdog(self) -> None:
        self._watchdog_at = None
        if self._tool_result is ToolResult.NONE or not self._upstream_usable():
            return
        self.log.error(
            "Required upstream contract violated: no completion within %.3f s after function_call_output; "
            "sending response.create%s",
            self.options.deferred_response_create_timeout,
            " when the active response ends" if self._response is Response.ACTIVE else "",
        )
        self._send_deferred_create()

    def _agent_started_speaking(self) -> None:
        if not self._turn.started_speaking:
            self._turn.started_speaking = True
            self.to_client.append(component.AGENT_STARTED_SPEAKING)

    def _agent_done_once(self) -> None:
        if not self._turn.agent_done:
            self._turn.agent_done = True
            self.to_client.append(component.AGENT_DONE)
            self.to_client.append(component.AGENT_AUDIO_DONE)

    def _finish_agent_turn(self) -> None:
        """AgentDone + AgentAudioDone for the response that just finished, unless a tool result is waiting for its
        follow-up response: the agent's turn goes on, and the follow-up response sends them after its audio."""
        if self._tool_result is ToolResult.AWAITING:
            self._turn.agent_done = True  # this response's signal is settled: nothing more for it
        else:
            self._agent_done_once()

    def _emit_fallback_text(self, text: str | None, content: str | None = None) -> None:
        """Assistant text from output_text.done / transcript.done / response.done: at most one per response."""
        if text and not self._turn.text_emitted:
            self._agent_started_speaking()
            self.to_client.append(
                component.encode(component.ConversationText(role="assistant", content=content or text))
            )
            self._turn.text_emitted = True
            self._turn.last_text = text

    def _flush_idle_error(self) -> None:
        if self._idle_error is not None:
            self.to_client.append(self._idle_error)
            self._idle_error = None

    # ===========================================================================================================
    # Upstream events

    def _on_audio_delta(self, event: openai.ResponseOutputAudioDelta, frame: Frame) -> None:
        delta = event.delta
        if delta:
            self._turn.audio_seen = True
            if not self._turn.started_speaking:
                self._agent_started_speaking()
            self.to_client.append(delta)

    def _on_audio_done(self, event: openai.ResponseOutputAudioDone, frame: Frame) -> None:
        # Does not end the response: the API may send audio.done before output_text.done.
        self._agent_done_once()

    def _on_session_updated(self, event: openai.SessionUpdated, frame: Frame) -> None:
        self._setup = advance(SETUP_TRANSITIONS, self._setup, SetupEvent.SESSION_UPDATED)
        self.to_client.append(component.SETTINGS_APPLIED)
        if self._greeting is not None and not self._had_context:
            # The greeting is client-side text with its own AgentDone; nothing goes upstream.
            self.to_client.append(
                component.encode(component.ConversationText(role="assistant", content=self._greeting))
            )
            self.to_client.append(component.AGENT_DONE)
            self.to_client.append(component.AGENT_AUDIO_DONE)
        elif self._greeting is not None:
            self.log.info("greeting not shown: the Settings carried conversation context")
        self._greeting = None
        self._had_context = False
        # Held messages first (in arrival order), then audio.
        messages, self._pending_messages = self._pending_messages, deque()
        self._pending_messages_bytes = 0
        for message, _ in messages:
            if isinstance(message, component.InjectUserMessage):
                self._inject(message)
            else:
                self._function_call_response(message)
        if self._pending_audio:
            chunks, self._pending_audio = self._pending_audio, deque()
            self.log.info("session ready: flushing %d queued audio chunk(s)", len(chunks))
            self._pending_audio_bytes = 0
            appended = False
            for chunk in chunks:
                appended = self._append_audio(chunk) or appended
            if self.dropped_audio_frames:
                self.log.warning(
                    "%d audio frame(s) (%d bytes) were dropped before the session was ready",
                    self.dropped_audio_frames,
                    self.dropped_audio_bytes,
                )
            if self._detection is TurnDetection.MANUAL and self._commit.uncommitted_bytes > 0:
                self._schedule_commit()

    def _on_text_delta(self, event: openai.ResponseOutputTextDelta, frame: Frame) -> None:
        text = upstream_text.output_text_delta(event.delta)
        turn = self._turn
        if text and turn.text_chars + len(text) <= MAX_ACCUMULATED_CHARS:
            turn.text_parts.append(text)
            turn.text_chars += len(text)

    def _on_text_done(self, event: openai.ResponseOutputTextDone, frame: Frame) -> None:
        self._agent_started_speaking()
        text = upstream_text.output_text_done_text(event, self._turn.take_text())
        self._emit_fallback_text(text)
        self._end_response()
        # Fix: decided for the finishing response, before any follow-up response.create (the reference decides
        # after it, for the new response, and so sends AgentDone ahead of the follow-up's audio).
        if not self._turn.audio_seen:
            self._finish_agent_turn()
        self._after_response_end()
        self._flush_idle_error()

    def _on_response_done(self, event: openai.ResponseDone, frame: Frame) -> None:
        text = upstream_text.response_done_text(event, self._turn.take_text())
        self._emit_fallback_text(text)
        status = event.response.get("status") if isinstance(event.response, dict) else None
        self.log.info("response done (status %r)", status)
        self._finish_agent_turn()
        self._end_response()
        self._after_response_end()
        self._flush_idle_error()  # Fix: the reference flushes a buffered idle_timeout only on output_text.done

    def _on_response_created(self, event: openai.ResponseCreated, frame: Frame) -> None:
        if self._detection is TurnDetection.SERVER_VAD and self._response is Response.IDLE:
            self._start_response()  # the upstream created it (VAD turn)

    def _on_transcript_done(self, event: openai.ResponseOutputAudioTranscriptDone, frame: Frame) -> None:
        transcript = upstream_text.transcript_done_text(event)
        self._emit_fallback_text(javascript.js_trim(transcript), transcript)

    def _on_function_call_arguments_done(self, event: openai.ResponseFunctionCallArgumentsDone, frame: Frame) -> None:
        self._agent_started_speaking()
        self.to_client.append(component.encode(upstream_text.function_call_request(event)))

    def _on_speech_started(self, event: openai.InputAudioBufferSpeechStarted, frame: Frame) -> None:
        self.to_client.append(component.USER_STARTED_SPEAKING)

    def _on_speech_stopped(self, event: openai.InputAudioBufferSpeechStopped, frame: Frame) -> None:
        self.to_client.append(component.encode(upstream_text.utterance_end(event)))

    def _on_transcription_delta(self, event: openai.InputAudioTranscriptionDelta, frame: Frame) -> None:
        key = event.item_id if isinstance(event.item_id, str) else ""
        delta = event.delta if isinstance(event.delta, str) else ""
        text = (self._transcripts.pop(key, "") + delta)[-MAX_ACCUMULATED_CHARS:]
        self._transcripts[key] = text
        if len(self._transcripts) > MAX_TRANSCRIPT_ITEMS:
            self._transcripts.popitem(last=False)
        self.to_client.append(component.encode(upstream_text.transcript_message(event, text, final=False)))

    def _on_transcription_completed(self, event: openai.InputAudioTranscriptionCompleted, frame: Frame) -> None:
        if event.item_id and isinstance(event.item_id, str):
            self._transcripts.pop(event.item_id, None)
        text = event.transcript if isinstance(event.transcript, str) else ""
        self.to_client.append(component.encode(upstream_text.transcript_message(event, text, final=True)))

    def _on_transcription_failed(self, event: openai.InputAudioTranscriptionFailed, frame: Frame) -> None:
        self.log.info("input audio transcription failed for item %s", event.item_id)

    def _on_error(self, event: openai.ErrorEvent, frame: Frame) -> None:
        error = error_codes.error_from_upstream(event.error)
        code = error.code
        if code == "conversation_already_has_active_response":
            self.log.info("upstream error %s (not forwarded)", code)
            return
        if code in ("idle_timeout", "session_max_duration"):
            self.log.info("upstream closing the session: %s", code)
        else:
            self._peer_warning(
                "upstream error %s: %s", code, error.description[:_LOG_PAYLOAD_CHARS], level=logging.ERROR
            )
        encoded = self._error_frame(error.code, error.description)
        if code == "idle_timeout" and self._response is Response.ACTIVE:
            self._idle_error = encoded  # sent after the active response's text
            return
        self.to_client.append(encoded)

    def _on_item(
        self,
        event: openai.ConversationItemCreated | openai.ConversationItemAdded | openai.ConversationItemDone,
        frame: Frame,
    ) -> None:
        item = event.item
        kind = str(event.__struct_config__.tag)
        item_type = item.type if item is not None else None
        item_id = item.id if item is not None and isinstance(item.id, str) else None
        self.log.info("%s (item %s, type %r, role %r)", kind, item_id, item_type, item.role if item else None)
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("%s payload: %s", kind, _loggable(frame, 2000))
        if kind == "conversation.item.done" and item_type == "function_call_output":
            self._send_deferred_create()
        if item is not None and self._acknowledgement.acknowledges(
            item_id, item.type == "message" and item.role == "user" and not _audio_only(item.content), _ITEM_STAGE[kind]
        ):
            self._answer_injects()
        self._assistant_item_text(item, item_id)

    def _assistant_item_text(self, item: openai.Item | None, item_id: str | None) -> None:
        text = upstream_text.assistant_item_text(item)
        if text is None:
            return
        if item_id is not None and item_id in self._assistant_text_item_ids:
            return
        if item_id is not None:
            self._assistant_text_item_ids[item_id] = None
            if len(self._assistant_text_item_ids) > MAX_REMEMBERED_ITEM_IDS:
                self._assistant_text_item_ids.popitem(last=False)
        if javascript.js_trim(text) == self._turn.last_text:
            return  # the same text already went out as a fallback
        self.to_client.append(component.encode(component.ConversationText(role="assistant", content=text)))
        self._turn.text_emitted = True
        self._turn.last_text = javascript.js_trim(text)

    def _log_only(self, event: Any, frame: Frame) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("upstream %s (no client message)", event.__struct_config__.tag)

    def _on_unknown_event(self, event: Any, frame: Frame) -> None:
        self._peer_warning(
            "unmapped upstream event type %r (%d chars): %s",
            str(getattr(event, "type", type(event).__name__))[:100],
            len(frame),
            _loggable(frame, _LOG_PAYLOAD_CHARS),
        )

    # ===========================================================================================================
    # Helpers

    def _upstream_usable(self) -> bool:
        return self._upstream is UpstreamLeg.OPEN

    def _clear_timers(self) -> None:
        self._commit.disarm()
        self._watchdog_at = None

    def _error_frame(self, code: str, description: str) -> str:
        """An ``Error`` for the client; both fields may carry peer text (an upstream error quoting the key)."""
        return component.encode(component.Error(description=self._redact(description), code=self._redact(code)))

    def _send_error(self, code: str, description: str) -> None:
        if self._client is ClientLeg.CONNECTED:
            self.to_client.append(self._error_frame(code, description))

    def _peer_warning(self, message: str, *args: object, level: int = logging.WARNING) -> None:
        """One log line about a peer's fault, within the session's budget (a hostile peer cannot flood the log)."""
        logged, suppressed = self._warnings.admit(self._now)
        if suppressed:
            self.log.warning("%d more warning(s) about peer faults suppressed", suppressed)
        if logged:
            self.log.log(level, message, *args)

    def _report_suppressed(self) -> None:
        suppressed = self._warnings.drain()
        if suppressed:
            self.log.warning("%d more warning(s) about peer faults suppressed", suppressed)

    def _overflow(self, when: str) -> None:
        self._peer_warning("client queue overflow %s; closing", when)
        self._send_error(
            error_codes.QUEUE_OVERFLOW_CODE,
            f"Too many client messages arrived {when}; the proxy closed the connection.",
        )
        self._fatal = Close(POLICY_VIOLATION, "client queue overflow")


def _loggable(raw: Frame, limit: int) -> str:
    """A raw upstream payload for a log line: truncated, and withheld when it may carry audio."""
    text = raw if isinstance(raw, str) else raw[:limit].decode(errors="replace")
    if _AUDIO_FIELD.search(text):
        return "<payload withheld: may carry audio>"
    return text[:limit]


def _audio_only(content: Any) -> bool:
    """True for a user item whose parts are all audio (a voice turn, never an injected text)."""
    parts = content if isinstance(content, list) else [content]
    kinds = [part.get("type") for part in parts if isinstance(part, dict)]
    return bool(kinds) and all(kind == "input_audio" for kind in kinds)
