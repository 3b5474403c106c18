"""The codes and descriptions of the ``Error`` messages the translator sends the client, and the upstream
``error`` -> component ``Error`` mapping. Every peer text echoed here is bounded and stripped of key-shaped text."""

from __future__ import annotations

import re
from typing import Any, Final

from ..protocol import component, openai
from ..redact import SHAPES_ONLY
from .javascript import js_json

ALLOWED_CLIENT_TYPES_DESCRIPTION: Final = "Settings, InjectUserMessage, FunctionCallResponse. KeepAlive is ignored."
DISALLOWED_CODE: Final = "disallowed_client_message_type"
UNPARSABLE_CLIENT_CODE: Final = "unparsable_client_message"
UNPARSABLE_CLIENT_DESCRIPTION: Final = (
    "Client text frame is not a JSON object. Text frames must carry component JSON messages; "
    "microphone audio must be sent in binary frames."
)
CLIENT_MESSAGE_FAILED_CODE: Final = "client_message_failed"
CLIENT_MESSAGE_FAILED_DESCRIPTION: Final = "The proxy could not process a client message; it was not forwarded."
UNMAPPED_UPSTREAM_CODE: Final = "unmapped_upstream_event"
UNMAPPED_UPSTREAM_DESCRIPTION: Final = "Proxy received upstream message that could not be parsed as JSON."
CLOSED_BEFORE_READY_CODE: Final = "upstream_closed_before_session_ready"
QUEUE_OVERFLOW_CODE: Final = "client_queue_overflow"
TOO_DEEP_CLIENT_CODE: Final = "client_message_too_deep"
UNKNOWN_ERROR_CODE: Final = "unknown"
UNKNOWN_ERROR_DESCRIPTION: Final = "Unknown error"
_CLOSE_REASON_LIMIT: Final = 120
#: Bounds on peer text echoed in an ``Error``: real types and codes are short words, real messages a few sentences.
MAX_ECHOED_TYPE_CHARS: Final = 200
MAX_UPSTREAM_CODE_CHARS: Final = 200
MAX_UPSTREAM_MESSAGE_CHARS: Final = 2000
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]+")


def allowed_client_types_description() -> str:
    return ALLOWED_CLIENT_TYPES_DESCRIPTION


def describe_client_type(value: Any) -> str:
    """How a client JSON ``type`` appears in the disallowed-type description (bounded: a client may send a
    megabyte of it, and every Error is redacted and encoded)."""
    if value is None:
        return "(missing type)"
    return bounded_text(value if isinstance(value, str) else js_json(value), MAX_ECHOED_TYPE_CHARS)


def bounded_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def disallowed_description(type_name: str) -> str:
    return (
        f'Disallowed client message type "{type_name}" for OpenAI proxy (Issue #533). '
        f"Allowed: {ALLOWED_CLIENT_TYPES_DESCRIPTION} "
        "Enable OPENAI_PROXY_CLIENT_JSON_PASSTHROUGH=1 only for legacy debugging."
    )


def too_deep_client_description(max_depth: int) -> str:
    return f"Client message nests objects or arrays more than {max_depth} levels deep; it was not processed."


def redact(text: str) -> str:
    """Mask anything shaped like an API key or token (the shapes of :mod:`proxy.redact`; configured secrets are
    masked by the translator's redactor on the way out)."""
    return SHAPES_ONLY(text)


def sanitize_reason(reason: str | None, limit: int = _CLOSE_REASON_LIMIT) -> str:
    """A close reason fit for a client message: no control characters, no key-shaped text, bounded."""
    if not reason:
        return ""
    text = " ".join(redact(_CONTROL_CHARS.sub(" ", reason)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def closed_before_ready_description(code: int | None, reason: str | None) -> str:
    shown = 1006 if code is None else code
    cleaned = sanitize_reason(reason)
    suffix = f", reason: {cleaned}" if cleaned else ""
    return f"Upstream closed before session ready (code {shown}{suffix}). Session may not have been applied."


def error_from_upstream(detail: openai.ErrorDetail | None) -> component.Error:
    """Upstream ``error`` -> component ``Error``: a null, missing, empty or non-string code is ``unknown``; the
    message text is never used to guess a code."""
    code = detail.code if detail is not None else None
    message = detail.message if detail is not None else None
    return component.Error(
        description=(
            redact(bounded_text(message, MAX_UPSTREAM_MESSAGE_CHARS))
            if isinstance(message, str) and message
            else UNKNOWN_ERROR_DESCRIPTION
        ),
        code=bounded_text(code, MAX_UPSTREAM_CODE_CHARS) if isinstance(code, str) and code else UNKNOWN_ERROR_CODE,
    )
