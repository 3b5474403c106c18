"""The listener: one port for the WebSocket routes and the small HTTP endpoints.

A connection is admitted against the caps of :mod:`proxy.admission` as it is accepted; over a cap it is closed at
once, never queued, so idle sockets cannot make probes or honest clients wait. An admitted connection has one
deadline, ``handshake_timeout_s`` after accept, for its whole request head and the answer to it (a peer trickling
bytes does not extend it), and for the TLS handshake before them when the port serves TLS (:mod:`proxy.tls`);
the head is read by :class:`proxy.http.HeadReader`. Plain HTTP requests are answered here (``/health``,
``/ready``, ``/metrics``, the demo page of :mod:`proxy.demo`, 404 otherwise). A WebSocket upgrade is checked in
this order: known route (404), client (Origin, tokens: 403/401), draining, the client address's connection cap and
the session cap (503 with ``Retry-After``), so an unauthenticated client never learns about capacity. It is then
handed to the proxy's WebSocket layer (:mod:`proxy.ws`) with any bytes read past the head, and becomes a
:class:`~proxy.session.Session`.

Draining (:meth:`ProxyServer.shutdown`): the listener stays open, ``/ready`` answers 503, new upgrades are refused
with 503, and open sessions go on until they end or the drain deadline passes; then the listener closes and the
sessions still open get 1001 and the shutdown grace.

One connection's failure is logged and contained: it never reaches another connection or the accept loop. The accept
loop itself rides out running out of file descriptors or memory: it pauses, logs once per interval, and goes on.
"""

from __future__ import annotations

import errno
import http
import itertools
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl

import trio

from . import demo, functions, logs, redact
from .admission import PENDING_EVICTED, Admission, Ticket
from .auth import Admitted, ClientGate, ClientRequest, Refused
from .config import Config
from .core import GOING_AWAY, Close
from .function_endpoint import FunctionEndpoint
from .http import TEXT, BadHead, HeadReader, RequestHead, encode_answer
from .metrics import CONTENT_TYPE, Metrics
from .ratelimit import LogThrottle
from .routes import Reject, Route, RouteDecision, RouteRequest, openai_route
from .session import Session, SessionStats
from .tls import ServerTLS, accept_tls
from .transport import SocketTransport, linger
from .ws import Refusal, Upgrade, WebSocket, accept_response, parse_upgrade

__all__ = ["Metrics", "ProxyServer", "default_routes", "receive_request_head"]

log = logging.getLogger("proxy.server")

#: Sent on every 101 as on every HTTP answer (the reference set them on HTTP answers only).
_UPGRADE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Cache-Control", b"no-store"),
)
#: On every 503: capacity and draining are short-lived, and a load balancer retries elsewhere.
_RETRY_AFTER: tuple[tuple[bytes, bytes], ...] = ((b"Retry-After", b"1"),)
#: accept(2) errors that mean "out of descriptors or memory for now", not a broken listener.
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept(2) errors that concern only the connection being accepted (it went away first): accept the next one.
_ACCEPT_IGNORABLE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        *("EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH"),
        *("EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT", "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET"),
    )
    if hasattr(errno, name)
)
#: Connections accepted per wake-up before other tasks get a turn.
_ACCEPT_BATCH = 64
_ACCEPT_PAUSE_FIRST_S = 0.1
_ACCEPT_PAUSE_MAX_S = 1.0
#: Complaints that can come once per connection (refusals, failed accepts) are logged at most this often per kind.
LOG_INTERVAL_S = 10.0
_READ_BYTES = 4096
#: After an error answer, input the peer is still sending is read and dropped for at most this long (bounded also
#: by the handshake deadline), so closing does not reset the connection before the peer reads the answer.
_LINGER_S = 1.0
_SHUTTING_DOWN = "Server shutting down"
_LINGER_BYTES = 64 * 1024


def default_routes() -> dict[str, tuple[str, Route]]:
    """Path -> (route name for metrics, route). Query strings never affect routing."""
    from .deepgram.route import deepgram_route

    def agent_alias(config: Config, request: RouteRequest) -> RouteDecision | Reject:
        return deepgram_route(config, request, service="agent")

    def listen_alias(config: Config, request: RouteRequest) -> RouteDecision | Reject:
        return deepgram_route(config, request, service="transcription")

    # Deepgram SDKs append /v1/agent/converse or /v1/listen to their base URL, so a base URL of
    # ws://HOST:PORT, ws://HOST:PORT/deepgram-proxy or ws://HOST:PORT/openai reaches the matching route.
    return {
        "/openai": ("openai", openai_route),
        "/openai/v1/agent/converse": ("openai", openai_route),
        "/deepgram-proxy": ("deepgram", lambda c, r: deepgram_route(c, r, service=None)),
        "/v1/agent/converse": ("deepgram", agent_alias),
        "/v1/listen": ("deepgram", listen_alias),
        "/deepgram-proxy/v1/agent/converse": ("deepgram", agent_alias),
        "/deepgram-proxy/v1/listen": ("deepgram", listen_alias),
    }


class ProxyServer:
    """Serves every route of one :class:`~proxy.config.Config` on one listening socket."""

    def __init__(
        self, config: Config, routes: dict[str, tuple[str, Route]] | None = None, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self.routes = routes if routes is not None else default_routes()
        self.metrics = metrics if metrics is not None else Metrics()
        self.admission = Admission(config.limits, config.trusted_proxies)
        self._gate = ClientGate.from_config(config)
        self.function_endpoint: FunctionEndpoint | None = None
        if config.function_call:
            self.function_endpoint = FunctionEndpoint(
                functions.registry(config.functions),
                self._gate,
                config.allowed_origins,
                config.limits.function_call_timeout_s,
                self._warn,
            )
        #: None without TLS; else it wraps every accepted stream (and reloads on SIGHUP).
        self.tls = ServerTLS.from_config(config)
        self._ids = itertools.count(1)
        self._demo = demo.DemoPages() if config.demo else None
        self._sessions: dict[Session, str] = {}
        #: When each session's 101 went out (its duration is measured from there).
        self._opened_at: dict[Session, float] = {}
        self._draining = False
        self._upgrading = 0
        self._drain_deadline = math.inf
        self._sessions_closed = False
        #: Set when a drain starts or moves, or a session ends; replaced by each wait.
        self._changed = trio.Event()
        self._throttle = LogThrottle(LOG_INTERVAL_S)
        self._redactor = redact.for_config(config)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @property
    def draining(self) -> bool:
        """True once :meth:`shutdown` was called."""
        return self._draining

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until a drain ends (or cancelled); reports the bound port through ``task_status``."""
        config = self.config
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        await self.serve_listeners(listeners, listeners[0].socket.getsockname()[1], task_status=task_status)

    async def serve_listeners(
        self,
        listeners: Sequence[trio.abc.Listener[trio.SocketStream]],
        port: int,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on listeners that are already open (closed on return); reports ``port`` once accepting."""
        try:
            async with trio.open_nursery() as handlers:
                async with trio.open_nursery() as acceptors:
                    for listener in listeners:
                        acceptors.start_soon(self._accept_loop, listener, handlers)
                    task_status.started(port)
                    await self._wait_drained()
                    acceptors.cancel_scope.cancel()
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
                self._close_sessions()
                handlers.cancel_scope.deadline = trio.current_time() + self.config.limits.shutdown_grace_s
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    def shutdown(self, drain_timeout_s: float | None = None) -> None:
        """Start draining: keep answering, refuse new upgrades with 503, and end the sessions at the drain deadline.

        The deadline is ``drain_timeout_s`` from now (default: the configured drain timeout). Called again, it can
        only bring the deadline closer: ``shutdown(0)`` ends the drain now (sessions get 1001 and the grace).
        """
        timeout_s = self.config.limits.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        deadline = trio.current_time() + timeout_s
        if self._draining and deadline >= self._drain_deadline:
            return
        if not self._draining:
            log.info(
                "draining for at most %.0f s: %d sessions open; /ready answers 503, new upgrades are refused",
                timeout_s,
                len(self._sessions),
            )
        self._draining = True
        self._drain_deadline = deadline
        self._changed.set()

    async def _wait_drained(self) -> None:
        """Return once a drain started and every session ended or the drain deadline passed."""
        while not self._draining or (
            (self._sessions or self._upgrading) and trio.current_time() < self._drain_deadline
        ):
            changed = self._changed = trio.Event()
            with trio.move_on_at(self._drain_deadline):
                await changed.wait()

    def _close_sessions(self) -> None:
        self._sessions_closed = True  # an upgrade still on its way gets 1001 as soon as its 101 is out
        log.info("listener closed; closing %d sessions with 1001", len(self._sessions))
        for session in list(self._sessions):
            session.request_close(Close(GOING_AWAY, _SHUTTING_DOWN))

    # -- accepting ----------------------------------------------------------------------------------------------

    async def _accept_loop(self, listener: trio.abc.Listener[trio.SocketStream], handlers: trio.Nursery) -> None:
        if isinstance(listener, trio.SocketListener):
            await self._accept_socket(listener.socket, handlers)
            return
        pause_s = _ACCEPT_PAUSE_FIRST_S
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                pause_s = await self._accept_failed(exc, pause_s)
                continue
            pause_s = _ACCEPT_PAUSE_FIRST_S
            peer = _peer_address(stream)
            ticket = self._admit(peer)
            if ticket is None:
                await trio.aclose_forcefully(stream)
            else:
                handlers.start_soon(self._handle_connection, stream, ticket)

    async def _accept_socket(self, listening: trio.socket.SocketType, handlers: trio.Nursery) -> None:
        """Accept from a listening socket in batches, wrapping only admitted connections in a stream.

        A refused connection costs one accept(2) and one close(2): no stream object, no socket options, no trip
        through the scheduler. An attacker's reconnect storm is all refused connections, and each one the proxy pays
        for comes out of the honest sessions' CPU time.
        """
        raw = _raw_listening_socket(listening)
        pause_s = _ACCEPT_PAUSE_FIRST_S
        try:
            while True:
                await trio.lowlevel.wait_readable(raw)
                for _ in range(_ACCEPT_BATCH):
                    try:
                        connection, address = raw.accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno in _ACCEPT_IGNORABLE_ERRNOS:
                            continue
                        if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                            raise
                        pause_s = await self._accept_failed(exc, pause_s)
                        break
                    pause_s = _ACCEPT_PAUSE_FIRST_S
                    peer = str(address[0]) if isinstance(address, tuple) else str(address)
                    ticket = self._admit(peer)
                    if ticket is None:
                        connection.close()
                    else:
                        stream = trio.SocketStream(trio.socket.from_stdlib_socket(connection))
                        handlers.start_soon(self._handle_connection, stream, ticket)
        finally:
            trio.lowlevel.notify_closing(raw)
            raw.close()

    def _admit(self, peer: str | None) -> Ticket | None:
        """Admit a connection from ``peer`` (None: already gone), or count and log why not."""
        if peer is None:
            return None
        ticket = self.admission.admit(peer)
        if isinstance(ticket, Ticket):
            return ticket
        # Over a cap: nothing was read, so there is nothing to answer.
        self.metrics.count_rejected(ticket)
        self._warn(ticket, "refusing connections over %s (last from %s)", ticket, peer)
        return None

    async def _accept_failed(self, exc: OSError, pause_s: float) -> float:
        """Out of descriptors or memory: count, log (paced), pause; returns the next pause."""
        assert exc.errno is not None
        name = errno.errorcode[exc.errno]
        self.metrics.count_accept_error(name)
        self._warn("accept", "accept failed: %s (%s); pausing accepts", name, os.strerror(exc.errno))
        await trio.sleep(pause_s)
        return min(2 * pause_s, _ACCEPT_PAUSE_MAX_S)

    def _warn(self, kind: str, message: str, *args: object) -> None:
        """A peer's fault that can repeat per connection: one WARNING per kind and interval."""
        held = self._throttle.allow(kind, trio.current_time())
        if held:
            log.warning(message + " (and %d more since the last such line)", *args, held)
        elif held is not None:
            log.warning(message, *args)

    # -- per connection -----------------------------------------------------------------------------------------

    async def _handle_connection(self, accepted: trio.SocketStream, ticket: Ticket) -> None:
        deadline = trio.current_time() + self.config.limits.handshake_timeout_s
        stream: trio.abc.Stream = accepted if self.tls is None else self.tls.wrap(accepted)
        try:
            reader = HeadReader()
            head: RequestHead | BadHead | None = None
            with trio.move_on_at(deadline) as reading:
                # Another address may take this connection's pending slot (proxy/admission.py): stop reading then.
                ticket.on_evict = reading.cancel
                if ticket.evicted:  # evicted before this task first ran
                    reading.cancel()
                # TLS first, inside the same deadline and while the connection holds its pending-handshake slot.
                if isinstance(stream, trio.SSLStream) and not await accept_tls(stream):
                    ticket.on_evict = None
                    self.metrics.count_rejected("tls_handshake")
                    return
                head = await receive_request_head(stream, reader)
            ticket.on_evict = None
            self.admission.head_read(ticket)
            if ticket.evicted:
                self.metrics.count_rejected(PENDING_EVICTED)
                self._warn(
                    PENDING_EVICTED,
                    "pending handshakes full: evicted the oldest of %s's to admit another address",
                    ticket.peer,
                )
                return
            if reading.cancelled_caught:
                # A slow or idle peer is normal on the internet: counted, never an error.
                self.metrics.count_rejected("handshake_timeout")
                log.debug("%s: no complete request head within the handshake timeout", ticket.peer)
                return
            if head is None:
                return  # closed before sending anything
            if isinstance(head, BadHead):
                self.metrics.count_rejected(head.reason)
                self._warn(
                    head.reason, "request head refused with %d (%s) from %s", head.status, head.reason, ticket.peer
                )
                await _answer_and_close(stream, head.status, deadline)
                return
            await self._dispatch(stream, ticket, head, deadline)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            self.metrics.count_session_error()
            log.exception("internal error while serving a connection")
        finally:
            self.admission.release(ticket)
            await trio.aclose_forcefully(stream)

    async def _dispatch(self, stream: trio.abc.Stream, ticket: Ticket, head: RequestHead, deadline: float) -> None:
        request = head.request
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        headers = {name.lower(): value for name, value in request.headers}
        upgrade = headers.get(b"upgrade", b"").lower() == b"websocket"
        if not upgrade and path == functions.PATH and self.function_endpoint is not None:
            await self.function_endpoint.serve(stream, head, query, deadline)
            return
        if not upgrade:
            await self._answer_http(stream, request.method, path, deadline, headers.get(b"if-none-match"))
            return
        # The trace id is known before any refusal, so a refused client can quote it too (proxy/logs.py).
        trace_id = logs.trace_id_from(
            request.headers, [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "traceId"]
        )
        if trace_id is None or self._redactor(trace_id) != trace_id:  # never echo or log a credential
            trace_id = logs.new_trace_id()
        trace_header = ((logs.TRACE_HEADER, trace_id.encode()),)
        route = self.routes.get(path)
        if route is None:
            await self._refuse(stream, 404, "Not Found", "unknown_path", deadline, trace_header)
            return
        connection_id = f"c{next(self._ids)}"
        forwarded = [value for name, value in request.headers if name == b"x-forwarded-for"]
        client = self.admission.client_address(ticket.peer, forwarded)
        # Every record from here on, in this task and the session's tasks, carries the session's fields.
        logs.bind_session(connection_id, route[0], client, trace_id)
        upgrade_request = parse_upgrade(request)
        if isinstance(upgrade_request, Refusal):
            self.metrics.count_rejected("handshake")
            await _send(
                stream,
                encode_answer(
                    upgrade_request.status,
                    upgrade_request.message.encode(),
                    extra=(*upgrade_request.headers, *trace_header),
                ),
                deadline,
            )
            return
        # Who the client is comes before any word about capacity.
        admitted = self._check_client(route[0], query, upgrade_request, connection_id)
        if isinstance(admitted, Refused):
            await self._refuse(
                stream, admitted.status, admitted.message, admitted.metric_reason, deadline, trace_header
            )
            return
        if self._draining:
            await self._refuse(stream, 503, "Server shutting down", "draining", deadline, trace_header)
            return
        if not self.admission.claim(ticket, client):
            self._warn("max_connections_per_ip", "refusing upgrades over max_connections_per_ip (last from %s)", client)
            await self._refuse(stream, 503, "Too many connections", "max_connections_per_ip", deadline, trace_header)
            return
        if len(self._sessions) >= self.config.limits.max_sessions:
            await self._refuse(stream, 503, "Too many sessions", "capacity", deadline, trace_header)
            return
        # An upgrade under way counts for the drain like a session: its 101 may already be on the way.
        self._upgrading += 1
        try:
            opened = await self._open_session(
                stream, head.buffered, route, upgrade_request, admitted, path, query, connection_id, trace_id, deadline
            )
        finally:
            self._upgrading -= 1
            self._changed.set()
        if opened is not None:
            await self._run_session(*opened)

    def _check_client(self, route_name: str, query: str, upgrade: Upgrade, connection_id: str) -> Admitted | Refused:
        """Who may connect (proxy/auth.py); the refusal reason is logged as a word, never the credential."""
        request = ClientRequest(upgrade.headers, query, route_name, upgrade.subprotocols)
        verdict = self._gate.check(request, now=time.time())
        if isinstance(verdict, Refused):
            self._warn(verdict.metric_reason, "%s: %s upgrade refused: %s", connection_id, route_name, verdict.reason)
        elif verdict.principal != "anonymous":
            log.info("%s: client authenticated as %s", connection_id, verdict.principal)
        return verdict

    async def _open_session(
        self,
        stream: trio.abc.Stream,
        buffered: bytes,
        route: tuple[str, Route],
        upgrade: Upgrade,
        admitted: Admitted,
        path: str,
        query: str,
        connection_id: str,
        trace_id: str,
        deadline: float,
    ) -> tuple[Session, trio.abc.Stream, str] | None:
        """The WebSocket handshake and the session, registered; None if the upgrade was refused or timed out."""
        route_name, make = route
        limits = self.config.limits
        route_request = RouteRequest(
            path=path,
            query=query,
            headers=upgrade.headers,
            subprotocols=admitted.subprotocols,
            connection_id=connection_id,
            trace_id=trace_id,
        )
        try:
            decision = make(self.config, route_request)
        except Exception:
            self.metrics.count_session_error()
            log.exception("%s: internal error while setting up %s", connection_id, route_name)
            decision = Reject(500, "Internal Server Error")
        if isinstance(decision, Reject):
            await self._refuse(
                stream, decision.status, decision.message, "policy", deadline, ((logs.TRACE_HEADER, trace_id.encode()),)
            )
            return None
        # A browser that offered ["token", <jwt>] fails the connection unless one offered entry is echoed.
        subprotocol = decision.subprotocol if decision.subprotocol is not None else admitted.echo
        headers = (*_UPGRADE_HEADERS, (logs.TRACE_HEADER, trace_id.encode()))
        if not await _send(stream, accept_response(upgrade.key, subprotocol, headers), deadline):
            self.metrics.count_rejected("handshake_timeout")
            return None
        # A TLS stream already runs over a SocketTransport; a plain one is taken over now.
        transport = SocketTransport.take_over(stream) if isinstance(stream, trio.SocketStream) else stream
        client = WebSocket(
            transport,
            client=False,
            max_message_size=limits.client_max_message_bytes,
            subprotocol=subprotocol,
            buffered=buffered,
            max_fragments_per_message=limits.max_fragments_per_message,
            max_control_frames_per_s=limits.max_control_frames_per_s,
        )
        if self._sessions_closed:
            # The drain ended while this upgrade's 101 was on its way: it goes the way of every other session.
            with trio.move_on_after(limits.close_timeout_s):
                await client.aclose(GOING_AWAY, _SHUTTING_DOWN)
            self.metrics.count_client_close(GOING_AWAY)
            return None
        label = f"{route_name} {connection_id}"
        now = trio.current_time()
        milestones = self.metrics.clock(route_name, now, trio.current_time)
        session = Session(
            client, decision.core, decision.target, limits, label=label, stats=SessionStats(), milestones=milestones
        )
        self._sessions[session] = route_name
        self._opened_at[session] = now
        self.metrics.session_started(route_name)
        log.info("%s: client connected (trace_id=%s)", label, trace_id)
        return session, transport, label

    async def _run_session(self, session: Session, transport: trio.abc.Stream, label: str) -> None:
        route_name = self._sessions[session]
        try:
            await session.run()
        finally:
            await trio.aclose_forcefully(transport)
            del self._sessions[session]
            self._changed.set()
            client_close, upstream_close = session.closes
            duration_s = trio.current_time() - self._opened_at.pop(session)
            self.metrics.session_ended(
                route_name,
                session.stats,
                client_close.code if client_close else None,
                duration_s,
                upstream_close.code if upstream_close else None,
            )
            log.info(
                "%s: closed (client=%s, upstream=%s)",
                label,
                client_close.code if client_close else "-",
                upstream_close.code if upstream_close else "-",
            )

    async def _refuse(
        self,
        stream: trio.abc.Stream,
        status: int,
        message: str,
        reason: str,
        deadline: float,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self.metrics.count_rejected(reason)
        extra = (*headers, *_RETRY_AFTER) if status == 503 else tuple(headers)
        await _send(stream, encode_answer(status, message.encode(), extra=extra), deadline)

    async def _answer_http(
        self, stream: trio.abc.Stream, method: bytes, path: str, deadline: float, if_none_match: bytes | None = None
    ) -> None:
        if self._demo is not None and path in self._demo:
            if method != b"GET":
                answer = encode_answer(405, b"Method Not Allowed", extra=((b"Allow", b"GET"),))
            else:
                static = self._demo.answer(path, if_none_match)
                assert static is not None
                answer = encode_answer(
                    static.status,
                    static.body,
                    static.content_type,
                    extra=static.headers,
                    cache_control=demo.CACHE_CONTROL,
                )
            await _send(stream, answer, deadline)
            return
        pages: dict[str, Callable[[], tuple[int, bytes, bytes]]] = {
            "/health": lambda: (200, _json({"status": "ok"}), b"application/json"),
            "/ready": self._ready,
            "/metrics": lambda: (200, self.render_metrics(), CONTENT_TYPE),
        }
        page = pages.get(path)
        if page is None:
            answer = encode_answer(404, b"Not Found")
        elif method != b"GET":
            answer = encode_answer(405, b"Method Not Allowed", extra=((b"Allow", b"GET"),))
        else:
            status, body, content_type = page()
            answer = encode_answer(status, body, content_type)
        await _send(stream, answer, deadline)

    def refresh_metrics(self) -> None:
        """Fold what is counted outside the metric families (live sessions, admission) into them."""
        self.metrics.refresh(
            [s.stats for s in self._sessions],
            connections_open=self.admission.open,
            handshakes_pending=self.admission.pending,
        )

    def render_metrics(self) -> bytes:
        self.refresh_metrics()
        return self.metrics.render()

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


def _raw_listening_socket(listening: trio.socket.SocketType) -> socket.socket:
    """A non-blocking standard-library handle on the listener's socket (its own descriptor: closing it leaves the
    listener open)."""
    raw = socket.socket(fileno=os.dup(listening.fileno()))
    raw.setblocking(False)
    return raw


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _peer_address(stream: trio.SocketStream) -> str | None:
    """The TCP peer's address; None when the peer is already gone."""
    try:
        address = stream.socket.getpeername()
    except OSError:
        return None
    return str(address[0]) if isinstance(address, tuple) else str(address)


async def receive_request_head(
    stream: trio.abc.ReceiveStream, reader: HeadReader | None = None
) -> RequestHead | BadHead | None:
    """Read one request head (no deadline of its own); None if the peer closed before sending anything."""
    reader = reader or HeadReader()
    while True:
        data = await stream.receive_some(_READ_BYTES)
        if not data:
            return BadHead(400, "bad_request") if reader.started else None
        decided = reader.feed(data)
        if decided is not None:
            return decided


async def _send(stream: trio.abc.SendStream, data: bytes, deadline: float) -> bool:
    """Send before the handshake deadline; False if it passed first."""
    with trio.move_on_at(deadline):
        await stream.send_all(data)
        return True
    return False


async def _answer_and_close(stream: trio.abc.Stream, status: int, deadline: float) -> None:
    """Answer a head that cannot be served, then half-close and drop what the peer still sends (bounded)."""
    if not await _send(stream, encode_answer(status, http.HTTPStatus(status).phrase.encode(), TEXT), deadline):
        return
    await linger(stream, min(deadline, trio.current_time() + _LINGER_S), _LINGER_BYTES, _READ_BYTES)
