"""``POST /function-call``, sans-IO: the handler registry, the request's validation, the answers, CORS.

A component app answers a ``FunctionCallRequest`` by posting ``{"id", "name", "arguments"}`` (``arguments`` a JSON
string) here and relaying the answer, ``{"content": "<string>"}`` or ``{"error": "<string>"}``. Handlers are Python
callables taking the decoded arguments (a dict) and returning a string (anything else is sent as its JSON); they
are registered through the entry-point group ``voice_agent_proxy.functions`` or ``--function module:callable``,
and the built-in ``get_current_time`` is always there. A handler raises :class:`FunctionError` to answer
``{"error"}``. The Trio shell (proxy/function_endpoint.py) reads the body and runs the handler.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .config import ConfigError

PATH = "/function-call"
ENTRY_POINT_GROUP = "voice_agent_proxy.functions"
#: The request body cap; a larger declared body is refused with 413 before it is read.
MAX_BODY_BYTES = 64 * 1024
JSON_TYPE = b"application/json"

Handler = Callable[[dict[str, Any]], "str | object | Awaitable[str | object]"]


class FunctionError(Exception):
    """Raised by a handler: its message is the ``error`` the caller receives."""


def get_current_time(arguments: dict[str, Any]) -> str:
    """The current time, ISO 8601, in the IANA zone ``timezone`` (default UTC)."""
    name = arguments.get("timezone")
    if name is None:
        return datetime.now(UTC).isoformat(timespec="seconds")
    if not isinstance(name, str) or not name:
        raise FunctionError("timezone must be an IANA time zone name")
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FunctionError(f"Unknown time zone: {name[:64]}") from None
    return datetime.now(zone).isoformat(timespec="seconds")


BUILT_IN: Mapping[str, Handler] = {"get_current_time": get_current_time}


def load_spec(spec: str) -> tuple[str, Handler]:
    """``module:callable`` (the callable may be dotted) -> (its last name, the callable); ConfigError if not."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"--function must be module:callable, got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except ImportError as exc:
        raise ConfigError(f"--function {spec!r}: cannot import {module_name!r} ({exc.msg})") from None
    except AttributeError:
        raise ConfigError(f"--function {spec!r}: {module_name!r} has no {attribute!r}") from None
    if not callable(target):
        raise ConfigError(f"--function {spec!r} is not callable")
    return attribute.rsplit(".", 1)[-1], target


def registry(specs: tuple[str, ...] = (), *, use_entry_points: bool = True) -> dict[str, Handler]:
    """Built-ins, then the entry points, then ``specs``; a later registration of a name wins."""
    handlers: dict[str, Handler] = dict(BUILT_IN)
    if use_entry_points:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                handler = point.load()
            except Exception as exc:
                raise ConfigError(f"function entry point {point.name!r} does not load ({type(exc).__name__})") from None
            if not callable(handler):
                raise ConfigError(f"function entry point {point.name!r} is not callable")
            handlers[point.name] = handler
    for spec in specs:
        name, handler = load_spec(spec)
        handlers[name] = handler
    return handlers


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes

    @classmethod
    def error(cls, status: int, message: str) -> Answer:
        return cls(status, _json({"error": message}))


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def check_head(method: bytes, content_type: bytes | None, content_length: int | None) -> Answer | None:
    """What can be refused before the body is read (None: read ``content_length`` bytes)."""
    if method != b"POST":
        return Answer.error(405, "Use POST")
    if content_type is None or content_type.split(b";")[0].strip().lower() != JSON_TYPE:
        return Answer.error(415, "Content-Type must be application/json")
    if content_length is None:
        return Answer.error(411, "Content-Length is required")
    if content_length > MAX_BODY_BYTES:
        return Answer.error(413, f"Body larger than {MAX_BODY_BYTES} bytes")
    return None


def parse_call(body: bytes, handlers: Mapping[str, Handler]) -> Call | Answer:
    """The body -> a call of a known function, or the 400/404 answer."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return Answer.error(400, "Body is not JSON")
    if not isinstance(request, dict):
        return Answer.error(400, "Body must be a JSON object")
    call_id, name, arguments = request.get("id"), request.get("name"), request.get("arguments")
    if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(arguments, str):
        return Answer.error(400, "id, name and arguments (a JSON string) are required")
    try:
        decoded = json.loads(arguments) if arguments.strip() else {}
    except (ValueError, RecursionError):
        return Answer.error(400, "arguments is not a JSON string")
    if not isinstance(decoded, dict):
        return Answer.error(400, "arguments must encode a JSON object")
    if name not in handlers:
        return Answer.error(404, f"Unknown function: {name[:128]}")
    return Call(call_id, name, decoded)


def result_answer(result: object) -> Answer:
    """A handler's return value -> ``200 {"content"}`` (a non-string result is sent as its JSON)."""
    content = result if isinstance(result, str) else json.dumps(result, separators=(",", ":"), default=str)
    return Answer(200, _json({"content": content}))


def cors_headers(origin: bytes | None, allowed_origins: tuple[str, ...]) -> tuple[tuple[bytes, bytes], ...]:
    """CORS for a browser caller whose Origin is allowed (any Origin when none are configured)."""
    if origin is None:
        return ()
    if allowed_origins and origin.decode("latin-1") not in allowed_origins:
        return ()
    return ((b"Access-Control-Allow-Origin", origin), (b"Vary", b"Origin"))


def preflight_headers(origin: bytes | None, allowed_origins: tuple[str, ...]) -> tuple[tuple[bytes, bytes], ...]:
    """The answer to ``OPTIONS``: what a browser may send (none of it when the Origin is not allowed)."""
    allowed = cors_headers(origin, allowed_origins)
    if not allowed:
        return ()
    return (
        *allowed,
        (b"Access-Control-Allow-Methods", b"POST, OPTIONS"),
        (b"Access-Control-Allow-Headers", b"Content-Type, Authorization"),
        (b"Access-Control-Max-Age", b"600"),
    )
