"""What each WebSocket route needs to start a session: a core, an upstream target, a subprotocol to echo.

The server parses the upgrade request into a :class:`RouteRequest`; a route turns it into a
:class:`RouteDecision`. Routes are plain functions of configuration and request (no I/O), so their policies
(query filtering, credentials, upstream choice) are tested without sockets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from . import redact
from .config import Config, Upstream, UpstreamSource
from .core import FailureKind, SessionCore, UpstreamFailure
from .session import UpstreamTarget


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """The parts of a WebSocket upgrade request a route may look at."""

    path: str
    query: str = ""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    subprotocols: tuple[str, ...] = ()
    connection_id: str = "c0"
    trace_id: str = "c0"

    def params(self) -> list[tuple[str, str]]:
        """Query parameters in order, repeats kept; never raises on odd input."""
        return parse_qsl(self.query, keep_blank_values=True)


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the upgrade with an HTTP status (before any WebSocket exists)."""

    status: int
    message: str


@dataclass(slots=True)
class RouteDecision:
    core: SessionCore
    target: UpstreamTarget | UpstreamFailure
    subprotocol: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


Route = Callable[[Config, RouteRequest], RouteDecision | Reject]


def unavailable(upstream: Upstream) -> UpstreamFailure | None:
    """A route whose upstream cannot be reached as configured answers a configuration error."""
    if upstream.source is UpstreamSource.MISCONFIGURED:
        return UpstreamFailure(FailureKind.CONFIG)
    return None


def session_logger(name: str, request: RouteRequest) -> logging.LoggerAdapter[logging.Logger]:
    return logging.LoggerAdapter(
        logging.getLogger(name),
        {"connection_id": request.connection_id, "trace_id": request.trace_id},
    )


def openai_route(config: Config, request: RouteRequest) -> RouteDecision | Reject:
    """``/openai``: the Realtime translator; the key goes upstream as ``Authorization: Bearer``."""
    from .openai.translator import Translator, TranslatorOptions

    options = TranslatorOptions(
        allow_client_json_passthrough=config.client_json_passthrough,
        deferred_response_create_timeout=config.deferred_response_create_timeout_s,
        resampler=config.resampler,
    )
    core = Translator(options, log=session_logger("proxy.openai", request), redactor=redact.for_config(config))
    upstream = config.openai
    failure = unavailable(upstream)
    if failure is not None:
        return RouteDecision(core, failure)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if upstream.key:
        headers = ((b"Authorization", b"Bearer " + upstream.key.encode()),)
    return RouteDecision(core, UpstreamTarget(upstream.url, headers))
