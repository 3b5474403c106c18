"""The Deepgram pass-through core: frames relayed unchanged, in order, both ways (sans-IO).

Text stays text and binary stays binary; no frame is parsed on the hot path. Client frames that arrive before
the upstream handshake completes are held in a bounded FIFO and flushed, in order, when it does. The only frame
the core ever adds is the reference's optional one-shot synthetic ``AgentAudioDone``, and an ``Error`` when the
upstream cannot be reached or the session reaches its maximum duration (Voice Agent only: the Listen protocol has
no Error message, so a Listen client learns why from the close code and reason alone).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import msgspec

from ..core import (
    POLICY_VIOLATION,
    SESSION_EXPIRED_CLOSES,
    SESSION_EXPIRED_ERROR,
    Close,
    Frame,
    UpstreamFailure,
    relay_close,
)
from ..protocol import component
from ..redact import SHAPES_ONLY, Redactor
from .policy import Service

_ASSISTANT_TEXT_MARKER = "ConversationText"


class _TypeAndRole(msgspec.Struct):
    """Just the two fields the synthetic AgentAudioDone rule looks at (any JSON types: checked on use)."""

    type: Any = None
    role: Any = None


_type_and_role = msgspec.json.Decoder(_TypeAndRole)


def is_assistant_text(frame: str) -> bool:
    """Whether a text frame is a JSON object with ``type`` ConversationText and ``role`` assistant."""
    if _ASSISTANT_TEXT_MARKER not in frame:  # cheap pre-check: most frames are not ConversationText
        return False
    try:
        message = _type_and_role.decode(frame)
    except (msgspec.DecodeError, RecursionError):  # not JSON, not an object, absurdly deep: ignored
        return False
    return bool(message.type == _ASSISTANT_TEXT_MARKER and message.role == "assistant")


class Passthrough:
    """A :class:`~proxy.core.SessionCore` that relays frames unchanged between the client and Deepgram.

    ``max_pending_frames`` / ``max_pending_bytes`` bound what a client may send before the upstream is open;
    more than that is a protocol violation (``Error`` on the agent service, then close 1008 on both legs).
    ``synthetic_audio_done`` enables the reference's one-shot ``AgentAudioDone`` (see :meth:`upstream_message`).
    ``redactor`` masks secrets in every relayed upstream text frame and close reason (binary frames are audio).
    """

    __slots__ = (
        "_audio_done_settled",
        "_fatal",
        "_log",
        "_max_pending_bytes",
        "_max_pending_frames",
        "_open",
        "_pending",
        "_pending_bytes",
        "_redact",
        "_relayed_binary",
        "_service",
        "_synthetic_audio_done",
        "to_client",
        "to_upstream",
    )

    def __init__(
        self,
        service: Service,
        *,
        max_pending_frames: int,
        max_pending_bytes: int,
        synthetic_audio_done: bool = False,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        redactor: Redactor = SHAPES_ONLY,
    ) -> None:
        self.to_client: list[Frame] = []
        self.to_upstream: list[Frame] = []
        self._service = service
        self._max_pending_frames = max_pending_frames
        self._max_pending_bytes = max_pending_bytes
        self._synthetic_audio_done = synthetic_audio_done
        self._log = log if log is not None else logging.getLogger("proxy.deepgram")
        self._redact = redactor
        self._open = False
        self._pending: deque[Frame] = deque()
        self._pending_bytes = 0
        self._fatal: Close | None = None
        # Synthetic AgentAudioDone state (reference semantics): settled after the first assistant text.
        self._audio_done_settled = not synthetic_audio_done
        self._relayed_binary = False

    # -- client -> upstream -------------------------------------------------------------------------------------

    def upstream_opened(self, now: float) -> None:
        self._open = True
        if self._pending:
            self.to_upstream.extend(self._pending)
            self._pending.clear()
            self._pending_bytes = 0

    def client_message(self, message: Frame, now: float) -> None:
        if self._open:
            self.to_upstream.append(message)
            return
        if self._fatal is not None:
            return
        size = len(message)
        if len(self._pending) >= self._max_pending_frames or self._pending_bytes + size > self._max_pending_bytes:
            self._overflow()
            return
        self._pending.append(message)
        self._pending_bytes += size

    def _overflow(self) -> None:
        self._log.warning(
            "client sent more than %d frames / %d bytes before the upstream opened; closing",
            self._max_pending_frames,
            self._max_pending_bytes,
        )
        self._pending.clear()
        self._pending_bytes = 0
        if self._service is Service.AGENT:
            self.to_client.append(
                component.encode(
                    component.Error(
                        description="Too many messages were sent before the upstream connection opened.",
                        code="client_queue_overflow",
                    )
                )
            )
        self._fatal = Close(POLICY_VIOLATION, "Too many messages before upstream opened")

    # -- upstream -> client -------------------------------------------------------------------------------------

    def upstream_message(self, message: Frame, now: float) -> None:
        """Relay one upstream frame; with the synthetic flag, maybe add one ``AgentAudioDone`` after it.

        Reference semantics, deliberately narrow: until the first assistant ``ConversationText`` of the connection,
        text frames are inspected; that frame settles the rule for good, and if a binary frame was relayed before
        it, one ``{"type":"AgentAudioDone"}`` follows it. Binary frames are never inspected.

        Text frames pass the redactor: Deepgram's error messages may quote the key.
        """
        if isinstance(message, str):
            message = self._redact(message)
        self.to_client.append(message)
        if self._audio_done_settled:
            return
        if isinstance(message, bytes):
            self._relayed_binary = True
        elif is_assistant_text(message):
            self._audio_done_settled = True
            if self._relayed_binary:
                self.to_client.append(component.AGENT_AUDIO_DONE)

    # -- timers (none) ------------------------------------------------------------------------------------------

    def timer_fired(self, now: float) -> None:
        return None

    def next_deadline(self) -> float | None:
        return None

    # -- ends ---------------------------------------------------------------------------------------------------

    def upstream_failed(self, failure: UpstreamFailure, now: float) -> Close:
        if self._service is Service.AGENT:
            code, description = failure.error()
            self.to_client.append(component.encode(component.Error(description=description, code=code)))
        self._pending.clear()
        self._pending_bytes = 0
        return failure.close()

    def upstream_closed(self, code: int | None, reason: str | None, now: float) -> Close:
        return relay_close(code, reason, self._redact)

    def client_closed(self, code: int | None, reason: str | None, now: float) -> Close:
        self._pending.clear()  # never flushed: an upstream that opens after this gets nothing
        self._pending_bytes = 0
        return relay_close(code, reason, self._redact)

    def session_expired(self, now: float) -> tuple[Close, Close]:
        self._log.info("maximum session duration reached")
        if self._service is Service.AGENT:  # Listen has no Error message: its client gets the close alone
            code, description = SESSION_EXPIRED_ERROR
            self.to_client.append(component.encode(component.Error(description=description, code=code)))
        return SESSION_EXPIRED_CLOSES

    def fatal(self) -> Close | None:
        return self._fatal
