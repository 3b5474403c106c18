"""The listener: one port for the WebSocket routes and the small HTTP endpoints.

Each TCP connection gets its request head read with h11 (bounded in size and time). Plain HTTP requests are
answered here (``/health``, ``/ready``, ``/metrics``, 404 otherwise); WebSocket upgrades to a known route are handed,
to the proxy's WebSocket layer (:mod:`proxy.ws`) with any bytes read past the head, and become a
:class:`~proxy.session.Session`. Unknown upgrade paths,
bad origins or tokens, and connections over capacity are refused with an HTTP status before any WebSocket exists.

One session's failure is logged and contained: it never reaches another session or the accept loop.
"""

from __future__ import annotations

import hmac
import http
import itertools
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import h11
import trio

from .config import Config
from .core import GOING_AWAY, Close
from .routes import Reject, Route, RouteDecision, RouteRequest, openai_route
from .session import Session, SessionStats
from .transport import SocketTransport
from .ws import Refusal, WebSocket, accept_response, parse_upgrade

log = logging.getLogger("proxy.server")

MAX_REQUEST_HEAD_BYTES = 16 * 1024
_TEXT = b"text/plain; charset=utf-8"
_TRACE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
#: Sent on every 101 as on every HTTP answer (the reference set them on HTTP answers only).
_UPGRADE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Cache-Control", b"no-store"),
)


@dataclass(slots=True)
class Metrics:
    """Process-wide counters, rendered in the Prometheus text format at ``/metrics``."""

    sessions_active: dict[str, int] = field(default_factory=dict)
    sessions_total: dict[str, int] = field(default_factory=dict)
    rejected_total: dict[str, int] = field(default_factory=dict)
    client_frames_total: int = 0
    upstream_frames_total: int = 0
    upstream_failures_total: dict[str, int] = field(default_factory=dict)
    client_close_codes: dict[int, int] = field(default_factory=dict)
    session_errors_total: int = 0

    def render(self, live: list[SessionStats]) -> str:
        client = self.client_frames_total + sum(s.client_frames for s in live)
        upstream = self.upstream_frames_total + sum(s.upstream_frames for s in live)
        lines = [
            "# HELP proxy_sessions_active Open WebSocket sessions.",
            "# TYPE proxy_sessions_active gauge",
            *(f'proxy_sessions_active{{route="{r}"}} {n}' for r, n in sorted(self.sessions_active.items())),
            "# HELP proxy_sessions_total Sessions started.",
            "# TYPE proxy_sessions_total counter",
            *(f'proxy_sessions_total{{route="{r}"}} {n}' for r, n in sorted(self.sessions_total.items())),
            "# HELP proxy_rejected_total Upgrade requests refused, by reason.",
            "# TYPE proxy_rejected_total counter",
            *(f'proxy_rejected_total{{reason="{r}"}} {n}' for r, n in sorted(self.rejected_total.items())),
            "# HELP proxy_frames_total Frames received, by leg.",
            "# TYPE proxy_frames_total counter",
            f'proxy_frames_total{{leg="client"}} {client}',
            f'proxy_frames_total{{leg="upstream"}} {upstream}',
            "# HELP proxy_upstream_failures_total Upstream connections that failed, by error code.",
            "# TYPE proxy_upstream_failures_total counter",
            *(
                f'proxy_upstream_failures_total{{code="{c}"}} {n}'
                for c, n in sorted(self.upstream_failures_total.items())
            ),
            "# HELP proxy_client_close_total Client closes sent by the proxy, by code.",
            "# TYPE proxy_client_close_total counter",
            *(f'proxy_client_close_total{{code="{c}"}} {n}' for c, n in sorted(self.client_close_codes.items())),
            "# HELP proxy_session_errors_total Sessions that ended with an internal error.",
            "# TYPE proxy_session_errors_total counter",
            f"proxy_session_errors_total {self.session_errors_total}",
        ]
        return "\n".join(lines) + "\n"


def default_routes() -> dict[str, tuple[str, Route]]:
    """Path -> (route name for metrics, route). Query strings never affect routing."""
    from .deepgram.route import deepgram_route

    def agent_alias(config: Config, request: RouteRequest) -> RouteDecision | Reject:
        return deepgram_route(config, request, service="agent")

    def listen_alias(config: Config, request: RouteRequest) -> RouteDecision | Reject:
        return deepgram_route(config, request, service="transcription")

    return {
        "/openai": ("openai", openai_route),
        "/deepgram-proxy": ("deepgram", lambda c, r: deepgram_route(c, r, service=None)),
        "/v1/agent/converse": ("deepgram", agent_alias),
        "/v1/listen": ("deepgram", listen_alias),
    }


class ProxyServer:
    """Serves every route of one :class:`~proxy.config.Config` on one listening socket."""

    def __init__(self, config: Config, routes: dict[str, tuple[str, Route]] | None = None) -> None:
        self.config = config
        self.routes = routes if routes is not None else default_routes()
        self.metrics = Metrics()
        self._ids = itertools.count(1)
        self._handshakes = trio.CapacityLimiter(config.limits.max_pending_handshakes)
        self._sessions: dict[Session, str] = {}
        self._draining = False
        self._handlers: trio.Nursery | None = None
        self._accepting: trio.CancelScope | None = None

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @property
    def draining(self) -> bool:
        """True once :meth:`shutdown` was called."""
        return self._draining

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled or :meth:`shutdown`; reports the bound port through ``task_status``."""
        config = self.config
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as handlers:
            self._handlers = handlers
            with trio.CancelScope() as accepting:
                self._accepting = accepting
                task_status.started(port)
                await trio.serve_listeners(self._handle_connection, listeners, handler_nursery=handlers)

    def shutdown(self) -> None:
        """Stop accepting, ask every session to close with 1001, and bound the wait by the shutdown grace."""
        if self._draining:
            return
        self._draining = True
        log.info("shutting down: closing %d sessions", len(self._sessions))
        if self._accepting is not None:
            self._accepting.cancel()
        for session in list(self._sessions):
            session.request_close(Close(GOING_AWAY, "Server shutting down"))
        if self._handlers is not None:
            self._handlers.cancel_scope.deadline = trio.current_time() + self.config.limits.shutdown_grace_s

    # -- per connection -----------------------------------------------------------------------------------------

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        try:
            async with self._handshakes:
                with trio.move_on_after(self.config.limits.handshake_timeout_s):
                    head = await _read_request_head(stream)
            if head is None:
                return  # garbage, too large, or too slow: just drop the connection
            request, buffered = head
            await self._dispatch(stream, request, buffered)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            self.metrics.session_errors_total += 1
            log.exception("internal error while serving a connection")
        finally:
            await trio.aclose_forcefully(stream)

    async def _dispatch(self, stream: trio.SocketStream, request: h11.Request, buffered: bytes) -> None:
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        headers = {name.lower(): value for name, value in request.headers}
        upgrade = headers.get(b"upgrade", b"").lower() == b"websocket"
        if not upgrade:
            await self._answer_http(stream, request.method, path)
            return
        route = self.routes.get(path)
        if route is None:
            await self._refuse(stream, 404, "Not Found", "unknown_path")
            return
        if self._draining:
            await self._refuse(stream, 503, "Server shutting down", "draining")
            return
        if len(self._sessions) >= self.config.limits.max_sessions:
            await self._refuse(stream, 503, "Too many sessions", "capacity")
            return
        refusal = self._check_client(headers, query)
        if refusal is not None:
            await self._refuse(stream, refusal.status, refusal.message, "unauthorized")
            return
        await self._run_websocket(stream, buffered, route, request, path, query)

    def _check_client(self, headers: dict[bytes, bytes], query: str) -> Reject | None:
        config = self.config
        if config.allowed_origins:
            origin = headers.get(b"origin", b"").decode("latin-1")
            if origin not in config.allowed_origins:
                return Reject(403, "Origin not allowed")
        if config.client_tokens:
            tokens = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "token"]
            offered = tokens[0] if len(tokens) == 1 else ""
            if not any(hmac.compare_digest(offered.encode(), t.encode()) for t in config.client_tokens):
                return Reject(401, "Unauthorized")
        return None

    async def _run_websocket(
        self,
        stream: trio.SocketStream,
        buffered: bytes,
        route: tuple[str, Route],
        request: h11.Request,
        path: str,
        query: str,
    ) -> None:
        route_name, make = route
        limits = self.config.limits
        connection_id = f"c{next(self._ids)}"
        trace = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "traceId"]
        trace_id = trace[0].strip() if trace and _TRACE_ID.fullmatch(trace[0].strip()) else connection_id
        upgrade = parse_upgrade(request)
        if isinstance(upgrade, Refusal):
            self._count(self.metrics.rejected_total, "handshake")
            await _send_http(stream, upgrade.status, upgrade.message.encode(), _TEXT, extra=upgrade.headers)
            return
        route_request = RouteRequest(
            path=path,
            query=query,
            headers=upgrade.headers,
            subprotocols=upgrade.subprotocols,
            connection_id=connection_id,
            trace_id=trace_id,
        )
        try:
            decision = make(self.config, route_request)
        except Exception:
            self.metrics.session_errors_total += 1
            log.exception("%s: internal error while setting up %s", connection_id, route_name)
            decision = Reject(500, "Internal Server Error")
        if isinstance(decision, Reject):
            await self._refuse(stream, decision.status, decision.message, "policy")
            return
        with trio.move_on_after(limits.handshake_timeout_s) as handshake:
            await stream.send_all(accept_response(upgrade.key, decision.subprotocol, _UPGRADE_HEADERS))
        if handshake.cancelled_caught:
            return
        transport = SocketTransport.take_over(stream)
        client = WebSocket(
            transport,
            client=False,
            max_message_size=limits.client_max_message_bytes,
            subprotocol=decision.subprotocol,
            buffered=buffered,
            max_fragments_per_message=limits.max_fragments_per_message,
            max_control_frames_per_s=limits.max_control_frames_per_s,
        )
        label = f"{route_name} {connection_id}"
        stats = SessionStats()
        session = Session(client, decision.core, decision.target, limits, label=label, stats=stats)
        self._sessions[session] = route_name
        self._count(self.metrics.sessions_total, route_name)
        self._count(self.metrics.sessions_active, route_name)
        log.info("%s: client connected (trace_id=%s)", label, trace_id)
        try:
            await session.run()
        finally:
            await trio.aclose_forcefully(transport)
            del self._sessions[session]
            self.metrics.sessions_active[route_name] -= 1
            self._fold_stats(session)
            client_close, upstream_close = session.closes
            log.info(
                "%s: closed (client=%s, upstream=%s)",
                label,
                client_close.code if client_close else "-",
                upstream_close.code if upstream_close else "-",
            )

    def _fold_stats(self, session: Session) -> None:
        stats, metrics = session.stats, self.metrics
        metrics.client_frames_total += stats.client_frames
        metrics.upstream_frames_total += stats.upstream_frames
        for code, n in stats.upstream_failures.items():
            metrics.upstream_failures_total[code] = metrics.upstream_failures_total.get(code, 0) + n
        client_close = session.closes[0]
        if client_close is not None:
            codes = metrics.client_close_codes
            codes[client_close.code] = codes.get(client_close.code, 0) + 1

    @staticmethod
    def _count(counter: dict[str, int], key: str) -> None:
        counter[key] = counter.get(key, 0) + 1

    async def _refuse(self, stream: trio.SocketStream, status: int, message: str, reason: str) -> None:
        self._count(self.metrics.rejected_total, reason)
        await _send_http(stream, status, message.encode(), _TEXT)

    async def _answer_http(self, stream: trio.SocketStream, method: bytes, path: str) -> None:
        pages: dict[str, Callable[[], tuple[int, bytes, bytes]]] = {
            "/health": lambda: (200, _json({"status": "ok"}), b"application/json"),
            "/ready": self._ready,
            "/metrics": lambda: (
                200,
                self.metrics.render([s.stats for s in self._sessions]).encode(),
                b"text/plain; version=0.0.4",
            ),
        }
        page = pages.get(path)
        if page is None:
            await _send_http(stream, 404, b"Not Found", b"text/plain; charset=utf-8")
        elif method != b"GET":
            await _send_http(stream, 405, b"Method Not Allowed", b"text/plain; charset=utf-8", allow=b"GET")
        else:
            status, body, content_type = page()
            await _send_http(stream, status, body, content_type)

    def _ready(self) -> tuple[int, bytes, bytes]:
        config = self.config
        body = {
            "status": "draining" if self._draining else "ready",
            "sessions": len(self._sessions),
            "max_sessions": config.limits.max_sessions,
            "upstreams": {
                "openai": config.openai.source.name.lower(),
                "deepgram_agent": config.deepgram_agent.source.name.lower(),
                "deepgram_listen": config.deepgram_listen.source.name.lower(),
            },
        }
        return (503 if self._draining else 200), _json(body), b"application/json"


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def _read_request_head(stream: trio.SocketStream) -> tuple[h11.Request, bytes] | None:
    """Read one HTTP request head; return it with the bytes received after it (early WebSocket frames)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES)
    received = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            await _send_http(stream, 400, b"Bad Request", _TEXT)
            return None
        if isinstance(event, h11.Request):
            return event, bytes(conn.trailing_data[0])
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            received += len(data)
            if not data or received > MAX_REQUEST_HEAD_BYTES + 4096:
                return None
            conn.receive_data(data)
        else:
            return None


async def _send_http(
    stream: trio.SocketStream,
    status: int,
    body: bytes,
    content_type: bytes,
    *,
    allow: bytes | None = None,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    headers = [
        (b"Content-Type", content_type),
        (b"Content-Length", str(len(body)).encode()),
        (b"Connection", b"close"),
        (b"Cache-Control", b"no-store"),
        (b"X-Content-Type-Options", b"nosniff"),
    ]
    if allow is not None:
        headers.append((b"Allow", allow))
    headers.extend(extra)
    conn = h11.Connection(h11.SERVER)
    # h11 needs to have seen a request before it will serialise a response; feed it a minimal one.
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    data = conn.send(h11.Response(status_code=status, headers=headers, reason=http.HTTPStatus(status).phrase))
    data += conn.send(h11.Data(data=body)) if body else b""
    data += conn.send(h11.EndOfMessage())
    with trio.move_on_after(5):
        await stream.send_all(data)
