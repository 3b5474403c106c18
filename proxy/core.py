"""The contract between a session's Trio shell and its sans-IO protocol core.

A core is a plain object (no I/O, no Trio): the shell feeds it what happened and when, the core appends what to
send to ``to_client`` / ``to_upstream``, and tells the shell its next deadline. Every ordering rule lives in the
core; the shell only moves frames. Two cores implement this: the OpenAI translator and the Deepgram pass-through.

Frames are ``str`` (a WebSocket text frame) or ``bytes`` (a binary frame); the opcode is never changed by the
shell.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from .redact import SHAPES_ONLY, Redactor

Frame = str | bytes

# RFC 6455 §7.4: codes that must never appear in a Close frame on the wire.
_UNSENDABLE: frozenset[int] = frozenset({1004, 1005, 1006, 1015})
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
MAX_REASON_BYTES = 123

# Blame: codes that say "the peer of THIS connection broke the WebSocket protocol or a limit" (RFC 6455 §7.4.1:
# protocol error, invalid data, message too big, missing extension). proxy/ws sends them to the peer at fault; they
# never cross the proxy, where they would blame the innocent peer on the other leg.
_LEG_ONLY: frozenset[int] = frozenset({PROTOCOL_ERROR, INVALID_DATA, MESSAGE_TOO_BIG, 1010})


#: The environment variable of the strict switch (see :func:`strict`).
STRICT_VARIABLE = "PROXY_STRICT"


def strict() -> bool:
    """Whether a core's containment boundary re-raises (``PROXY_STRICT=1``) instead of answering an ``Error``.

    In production a bug in one handler costs the client one ``Error`` and the session goes on (as the reference
    behaves). The test suite turns this on so that the same bug fails the test that met it: an ``Error`` frame is
    a legal outcome for many tests, a raised exception never is. Read when a handler fails, never on the hot path.
    """
    return os.environ.get(STRICT_VARIABLE, "") == "1"


class Close(NamedTuple):
    """A close frame to send: a sendable code and a reason of at most 123 UTF-8 bytes."""

    code: int
    reason: str = ""


def truncate_reason(reason: str | None) -> str:
    """Cut a close reason to 123 UTF-8 bytes without splitting a character."""
    if not reason:
        return ""
    data = reason.encode()
    if len(data) <= MAX_REASON_BYTES:
        return reason
    return data[:MAX_REASON_BYTES].decode(errors="ignore")


def relay_close(code: int | None, reason: str | None, redact: Redactor = SHAPES_ONLY) -> Close:
    """Map a close seen on one leg to a close that can be sent on the other (the blame policy, both directions).

    1005 (a close frame without a status) is a normal end and becomes 1000; None or 1006 (the connection dropped
    without a close frame), 1015 (TLS failure), anything outside the ranges a peer may send, and the leg-only codes
    1002/1007/1009/1010 become 1011 without a reason. Other codes, application codes 4000-4999 included, pass through
    with their reason, redacted (it is text a peer wrote) and cut to fit.

    Upstream faults that the proxy detected itself never come here: see :func:`upstream_fault`.
    """
    if code == 1005:
        return Close(NORMAL, truncate_reason(redact(reason or "")))
    if code is None or code in _LEG_ONLY:
        return Close(INTERNAL_ERROR, "")
    if code in _UNSENDABLE or not (1000 <= code <= 4999) or 1016 <= code <= 2999:
        return Close(INTERNAL_ERROR, "")
    return Close(code, truncate_reason(redact(reason or "")))


def upstream_fault(code: int | None, by_peer: bool) -> UpstreamFailure | None:
    """The failure to report when the upstream leg closed because the upstream broke the protocol or a limit.

    ``by_peer`` False with a leg-only code means proxy/ws closed the upstream for a violation (bad framing, invalid
    UTF-8, a message over the size limit): the client then gets an ``Error`` where its protocol has one and close
    1011, never the 1002/1007/1009 that would tell it that it broke the protocol itself.
    """
    if by_peer or code not in _LEG_ONLY:
        return None
    return UpstreamFailure(FailureKind.PROTOCOL, close_code=code)


def upstream_ended(
    core: SessionCore, code: int | None, reason: str | None, by_peer: bool, now: float
) -> tuple[Close, UpstreamFailure | None]:
    """Tell ``core`` how its open upstream leg ended, with the blame policy applied; returns the client's close and
    the failure, if the upstream was cut off for breaking the protocol or a limit.

    An upstream that sent a message over the size limit was closed by proxy/ws with 1009; that code, and the other
    leg-only ones, is the upstream's fault: the core reports an upstream failure (an ``Error`` where the client's
    protocol has one, then 1011), never a close that would blame the client. Any other end is relayed.
    """
    fault = upstream_fault(code, by_peer)
    if fault is not None:
        return core.upstream_failed(fault, now), fault
    return core.upstream_closed(code, reason, now), None


def client_fault(code: int | None, by_peer: bool) -> bool:
    """Whether the client leg closed because the client broke the protocol or a limit (proxy/ws closed it)."""
    return not by_peer and code in _LEG_ONLY


class FailureKind(enum.Enum):
    CONNECT = "connect"  # refused, unreachable, DNS or TLS failure
    TIMEOUT = "timeout"  # no answer to the connect or the handshake in time
    AUTH = "auth"  # the upstream answered the handshake with HTTP 401 or 403
    HANDSHAKE = "handshake"  # any other non-101 answer
    CONFIG = "config"  # the route cannot be served as configured (for example no key)
    PROTOCOL = "protocol"  # the open upstream broke the WebSocket protocol or a limit; we closed it


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    """Why the upstream leg could not be opened, or was cut off for breaking the protocol (``close_code``: the
    code proxy/ws sent it). Never carries secrets or addresses: it goes to clients."""

    kind: FailureKind
    status: int | None = None
    close_code: int | None = None

    def error(self) -> tuple[str, str]:
        """The component ``Error`` code and description for this failure (sanitised, client-safe)."""
        match self.kind:
            case FailureKind.AUTH:
                return "upstream_auth_failed", "The upstream service rejected the proxy's credentials."
            case FailureKind.TIMEOUT:
                return "upstream_timeout", "The upstream service did not answer in time."
            case FailureKind.HANDSHAKE:
                status = f" (HTTP {self.status})" if self.status else ""
                return "upstream_handshake_failed", f"The upstream service refused the connection{status}."
            case FailureKind.CONFIG:
                return "proxy_configuration_error", "This route is not configured on the proxy."
            case FailureKind.PROTOCOL:
                return "upstream_protocol_error", "The upstream service sent data the proxy could not accept."
            case _:
                return "upstream_connect_failed", "Could not connect to the upstream service."

    def close(self) -> Close:
        # Not 1014 (bad gateway) for a protocol fault: Chromium and wsproto refuse it as a reserved code and fail
        # the connection with 1002, the very blame this avoids.
        if self.kind is FailureKind.PROTOCOL:
            return Close(INTERNAL_ERROR, "Upstream protocol error")
        return Close(INTERNAL_ERROR, "Upstream unavailable")


#: The component ``Error`` (code, description) for a session that reached the proxy's maximum duration: the
#: component treats this code as an expected end. Only routes whose protocol has an ``Error`` message send it.
SESSION_EXPIRED_ERROR: tuple[str, str] = ("session_max_duration", "The session reached the proxy's maximum duration.")
#: How both legs close when the maximum duration is reached: (client close, upstream close).
SESSION_EXPIRED_CLOSES: tuple[Close, Close] = (Close(NORMAL, "Maximum session duration"), Close(NORMAL))


class SessionCore(Protocol):
    """What the Trio shell needs from a protocol core. All methods are synchronous and never block."""

    #: Frames to send to the client, in order. The shell takes and clears this list after every call.
    to_client: list[Frame]
    #: Frames to send upstream, in order. The shell takes and clears this list after every call.
    to_upstream: list[Frame]

    def upstream_opened(self, now: float) -> None:
        """The upstream handshake completed; frames queued before it may now go out."""

    def client_message(self, message: Frame, now: float) -> None:
        """One complete message from the client."""

    def upstream_message(self, message: Frame, now: float) -> None:
        """One complete message from the upstream."""

    def timer_fired(self, now: float) -> None:
        """Called at or after :meth:`next_deadline`; the core handles every deadline that is due."""

    def next_deadline(self) -> float | None:
        """The earliest time (same clock as ``now``) at which :meth:`timer_fired` must run, or None."""

    def upstream_failed(self, failure: UpstreamFailure, now: float) -> Close:
        """The upstream could not be opened, or broke the protocol (``FailureKind.PROTOCOL``, see
        :func:`upstream_fault`). Returns how to close the client (after sending ``to_client``)."""

    def upstream_closed(self, code: int | None, reason: str | None, now: float) -> Close:
        """The upstream closed (``code`` None: the connection dropped). Returns how to close the client."""

    def client_closed(self, code: int | None, reason: str | None, now: float) -> Close:
        """The client closed (``code`` None: the connection dropped). Returns how to close the upstream."""

    def session_expired(self, now: float) -> tuple[Close, Close]:
        """The session reached its maximum duration (the shell keeps the time). Queues what the client's protocol
        says about it and returns the closes for (client, upstream)."""

    def fatal(self) -> Close | None:
        """A close the core asks for on both legs (for example after a protocol violation), else None."""
