"""Logs: the text and JSON formats, the session fields every line about a session carries, and trace ids.

Session fields (``session_id``, ``route``, ``client``, ``trace_id``) live in a context variable. The server binds
them in the task that serves a connection as soon as they are known; every task that connection starts (the
session's pumps, timers, the upstream leg) inherits a copy of that context, so every record logged on its behalf
carries them without passing a logger around. A record made outside any session carries none.

The trace id of a session comes from its upgrade request: the trace-id field of a W3C ``traceparent`` header, else
``X-Trace-Id``, else ``X-Request-Id``, else the reference's ``?traceId=`` query parameter; each is validated (a
short run of safe characters, so it can neither forge a log line nor carry a payload) and the first valid one wins.
Without one, a random W3C-shaped id is made. The server echoes it in the ``X-Trace-Id`` response header.

Formats (``--log-format``): ``text`` is one readable line per record, the session fields appended as
``key=value``; ``json`` is one object per line with ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``, the
session fields, and ``exc`` for a traceback. Redaction (proxy/redact.py) runs on every record before either
formatter sees it. No Trio import: this module is used by the Trio shell, never the other way round.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Final

from . import redact

#: The fields every record about a session carries, in the order the formats show them.
SESSION_FIELDS: Final = ("session_id", "route", "client", "trace_id")

_session: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("proxy_session", default=None)

#: A trace id taken from a request: letters, digits and ``._:-``, at most 128 characters.
_TRACE_ID: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
#: W3C Trace Context: version-traceid-parentid-flags (version ff is invalid, all-zero ids are invalid).
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
#: Header values longer than this are not looked at (a traceparent is 55 characters).
_MAX_HEADER_CHARS: Final = 256
#: The response header that carries the session's trace id back to the client.
TRACE_HEADER: Final = b"X-Trace-Id"


def bind_session(
    session_id: str, route: str, client: str, trace_id: str
) -> contextvars.Token[Mapping[str, str] | None]:
    """Make the session fields current for this task and every task it starts from now on."""
    return _session.set({"session_id": session_id, "route": route, "client": client, "trace_id": trace_id})


def unbind_session(token: contextvars.Token[Mapping[str, str] | None]) -> None:
    _session.reset(token)


def current_session() -> Mapping[str, str] | None:
    """The session fields bound in this context, if any."""
    return _session.get()


def new_trace_id() -> str:
    """A random 32-hex-digit id, the shape of a W3C trace id (so a tracing backend accepts it as is)."""
    return secrets.token_hex(16)


def traceparent_trace_id(value: str) -> str | None:
    """The trace-id field of a ``traceparent`` header value, or None if the value is not a valid one."""
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    return trace_id


def trace_id_from(headers: Iterable[tuple[bytes, bytes]], query_trace_ids: Iterable[str] = ()) -> str | None:
    """The first valid trace id of an upgrade request (see the module docstring for the order), or None."""
    found: dict[bytes, str] = {}
    for name, raw in headers:
        name = name.lower()
        known = name in (b"traceparent", b"x-trace-id", b"x-request-id")
        if known and name not in found and len(raw) <= _MAX_HEADER_CHARS:
            found[name] = raw.decode("latin-1")
    parent = found.get(b"traceparent")
    if parent is not None and (trace_id := traceparent_trace_id(parent)) is not None:
        return trace_id
    for candidate in (found.get(b"x-trace-id"), found.get(b"x-request-id"), *query_trace_ids):
        if candidate is not None and _TRACE_ID.fullmatch(candidate.strip()):
            return candidate.strip()
    return None


class SessionFilter(logging.Filter):
    """Puts the current session's fields on each record (never drops one).

    A record logged through a ``LoggerAdapter`` that carries ``connection_id`` gets it as ``session_id`` when no
    session is bound (the sans-IO cores log that way in tests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _session.get()
        if fields is not None:
            for key, value in fields.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        elif not hasattr(record, "session_id") and hasattr(record, "connection_id"):
            record.session_id = record.connection_id
        return True


def _session_items(record: logging.LogRecord) -> list[tuple[str, str]]:
    return [(key, str(value)) for key in SESSION_FIELDS if (value := getattr(record, key, None)) is not None]


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER MESSAGE [key=value ...]``: the session fields appended when there are any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        items = _session_items(record)
        if not items:
            return line
        fields = " ".join(f"{key}={value}" for key, value in items)
        head, newline, rest = line.partition("\n")  # a traceback stays below the line it belongs to
        return f"{head} [{fields}]{newline}{rest}"


def rfc3339(created: float) -> str:
    """A record's time as RFC 3339 in UTC with milliseconds: ``2026-01-31T12:00:00.123Z``."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in the message are escaped, so lines cannot be forged)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "ts": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_session_items(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


FORMATTERS: Final[dict[str, type[logging.Formatter]]] = {"text": TextFormatter, "json": JsonFormatter}


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs (marked so that a second call replaces it, not adds one)."""


def configure(level: str, log_format: str = "text", secrets: Iterable[str] = ()) -> None:
    """Log records at ``level`` and above to stderr in ``log_format``, redacted, with the session fields."""
    redactor = redact.Redactor(secrets)
    redact.install_log_redaction(redactor)
    root = logging.getLogger()
    unconfigure()
    handler = _Handler(sys.stderr)
    handler.setFormatter(FORMATTERS[log_format]())
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    # Handlers someone else put on the root logger (a test's capture) get the same filters.
    for each in root.handlers:
        if not any(isinstance(existing, redact.RedactingFilter) for existing in each.filters):
            each.addFilter(redact.RedactingFilter(redactor))
        if not any(isinstance(existing, SessionFilter) for existing in each.filters):
            each.addFilter(SessionFilter())


def unconfigure() -> None:
    """Remove the handler :func:`configure` installed (tests; a second configure replaces it anyway)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
