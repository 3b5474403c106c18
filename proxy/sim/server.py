"""Serving the simulated upstreams: ``python -m proxy simulate`` and the embedded simulators of ``serve``.

One listener serves the three services on their real paths -- ``/v1/realtime`` (OpenAI Realtime GA),
``/v1/agent/converse`` (Deepgram Voice Agent v1) and ``/v1/listen`` (Deepgram Listen) -- and refuses any other
path with HTTP 404. Each connection runs a small Trio shell around the service's state machine: a reader, a
writer (where the fault script is applied), one task per response being streamed (paced by the speed factor),
and a watchdog for the session limits.

Faults come from the ``sim_faults`` query parameter of the connection (see :mod:`proxy.sim.faults`), else from
:attr:`SimOptions.faults` (whose default is the ``PROXY_SIM_FAULTS`` environment variable).
"""

from __future__ import annotations

import argparse
import datetime
import hmac
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, NoReturn
from urllib.parse import parse_qsl

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from ..core import Close
from ..protocol import component as cp
from . import pacing, speech
from .agent import AgentSimulator, TurnRun
from .faults import FaultScript, FaultScriptError, parse_faults
from .listen import ListenOptionError, ListenSimulator
from .openai import RealtimeSimulator, ResponseRun

log = logging.getLogger("proxy.sim")

Frame = str | bytes
PATHS: Final = {"/v1/realtime": "openai", "/v1/agent/converse": "agent", "/v1/listen": "listen"}
GARBAGE_FRAME: Final = "\x00}{ this is not JSON"
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
OUT_QUEUE: Final = 1024
CLOSE_TIMEOUT_S: Final = 5.0


def _env_faults() -> str:
    return os.environ.get("PROXY_SIM_FAULTS", "")


@dataclass(frozen=True)
class SimOptions:
    """How the simulators behave (one value for the whole server).

    * ``speed``: pacing of agent audio after the head start; 1.0 is real time, 2.0 twice as fast, 0 sends as fast
      as possible (default: ``$PROXY_SIM_SPEED``, else 2).
    * ``head_start_s``: this much of each reply's audio is sent at once, before the paced rest (default:
      ``$PROXY_SIM_HEAD_START_MS``, else 1 s). ``speed=1, head_start_s=0`` is strict real time. See
      :mod:`proxy.sim.pacing`.
    * ``openai_key`` / ``deepgram_key``: when set, connections must present it (OpenAI: ``Authorization: Bearer``;
      Deepgram: ``Authorization: Token`` or the ``token`` subprotocol), else the handshake gets HTTP 401.
    * ``session_max_s``: OpenAI session lifetime (the real limit is 60 minutes); then ``session_expired`` and a
      close. None: unlimited.
    * ``client_message_timeout_s``: Deepgram agent and Listen close a connection that sent nothing for this long
      (agent: ``CLIENT_MESSAGE_TIMEOUT`` Error; Listen: close 1011 ``NET-0001``). None: never.
    * ``faults``: the default fault script for every connection (default: ``$PROXY_SIM_FAULTS``); validated here.
    """

    speed: float = field(default_factory=pacing.speed_from)
    head_start_s: float = field(default_factory=pacing.head_start_from)
    openai_key: str | None = field(default=None, repr=False)
    deepgram_key: str | None = field(default=None, repr=False)
    session_max_s: float | None = 3600.0
    client_message_timeout_s: float | None = 10.0
    faults: str = field(default_factory=_env_faults)
    #: ``speed`` and ``head_start_s`` together (set by the constructor).
    reply_pacing: pacing.Pacing = field(init=False, repr=False, compare=False, default=pacing.REAL_TIME)
    #: ``faults``, parsed (set by the constructor).
    fault_script: FaultScript = field(init=False, repr=False, compare=False, default=FaultScript())

    def __post_init__(self) -> None:
        object.__setattr__(self, "reply_pacing", pacing.Pacing(self.speed, self.head_start_s))
        for name in ("session_max_s", "client_message_timeout_s"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ValueError(f"{name} must be a positive number of seconds or None")
        object.__setattr__(self, "fault_script", parse_faults(self.faults))


def _message_type(frame: Frame) -> str | None:
    if isinstance(frame, bytes):
        return "binary"
    try:
        envelope = cp.envelope_decoder.decode(frame)
    except msgspec.MsgspecError:
        return None
    return envelope.type if isinstance(envelope.type, str) else None


class _Abort(Exception):
    """Raised inside a connection to end it at once."""


class _Link:
    """The Trio shell of one simulated connection."""

    def __init__(self, ws: WebSocketConnection, faults: FaultScript, options: SimOptions) -> None:
        self.ws = ws
        self.faults = faults
        self.options = options
        self.send_out, self.receive_out = trio.open_memory_channel[Frame | Close](OUT_QUEUE)
        self.sent = 0
        self.last_client = trio.current_time()
        self.nursery: trio.Nursery | None = None

    # -- writer: every outgoing frame passes the fault script here ---------------------------------------------

    async def _after_send(self) -> None:
        faults = self.faults
        if faults.garbage_after == self.sent:
            await self.ws.send_message(GARBAGE_FRAME)
        if faults.close_after is not None and faults.close_after.count == self.sent:
            await self._close(Close(faults.close_after.code, faults.close_after.reason))
        if faults.abort_after == self.sent:
            await self._abort()

    async def writer(self) -> None:
        await self._after_send()  # the *_after:0 faults act before anything is sent
        filtering = bool(self.faults.delays or self.faults.drops)
        async for item in self.receive_out:
            if isinstance(item, Close):
                await self._close(item)
            kind = _message_type(item) if filtering else None
            if self.faults.drops_type(kind):
                continue
            delay = self.faults.delay_for(kind)
            if delay:
                await trio.sleep(delay)
            await self.ws.send_message(item)
            self.sent += 1
            await self._after_send()

    async def _close(self, close: Close) -> NoReturn:
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await self.ws.aclose(close.code, close.reason)
        raise _Abort

    async def _abort(self) -> NoReturn:
        stream = getattr(self.ws, "_stream", None)
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise _Abort

    async def emit(self, frames: Iterable[Frame | Close]) -> None:
        for frame in frames:
            await self.send_out.send(frame)

    # -- reader ----------------------------------------------------------------------------------------------

    async def reader(self, handle: Callable[[Frame], list[Frame]], after: Callable[[], None]) -> None:
        while True:
            message = await self.ws.get_message()
            self.last_client = trio.current_time()
            if self.faults.slow_read:
                await trio.sleep(self.faults.slow_read)
            if self.faults.delays or self.faults.drops:
                kind = _message_type(message)
                if self.faults.drops_type(kind):
                    continue
                delay = self.faults.delay_for(kind)
                if delay:
                    await trio.sleep(delay)
            await self.emit(handle(message))
            after()

    # -- paced streaming of one response ---------------------------------------------------------------------

    async def stream(self, run: ResponseRun | TurnRun) -> None:
        if run.speech is not None and run.pcm is None:
            run.pcm = await speech.render(*run.speech)  # off the event loop; the reply starts once it is spoken
        due = self.options.reply_pacing.due
        start = trio.current_time()
        for offset, frame in run.events:
            if due(offset) > 0 and not run.cancelled:
                await trio.sleep_until(start + due(offset))
            if run.cancelled:  # cut short (barge-in, response.cancel) while this frame was due
                return
            await self.send_out.send(frame)

    async def run(self, body: Callable[[trio.Nursery], Any]) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self.writer)
                await body(nursery)
        except* (_Abort, ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


# ---------------------------------------------------------------------------------------------------------------
# Per-service bodies


async def _run_openai(link: _Link, options: SimOptions) -> None:
    sim = RealtimeSimulator(expires_at=int(time.time() + (options.session_max_s or 3600)))

    def spawn() -> None:
        assert link.nursery is not None
        for run in sim.new_runs:
            link.nursery.start_soon(link.stream, run)
        sim.new_runs.clear()

    def handle(message: Frame) -> list[Frame]:
        return list(sim.handle_text(message) if isinstance(message, str) else sim.handle_binary(message))

    async def expire() -> None:
        assert options.session_max_s is not None
        await trio.sleep(options.session_max_s)
        await link.emit([sim.expired(options.session_max_s), Close(1000, "session expired")])

    async def body(nursery: trio.Nursery) -> None:
        await link.emit(sim.start())
        if options.session_max_s is not None:
            nursery.start_soon(expire)
        await link.reader(handle, spawn)

    await link.run(body)


async def _idle_watchdog(link: _Link, limit: float, frames: Callable[[], list[Frame | Close]]) -> None:
    while True:
        deadline = link.last_client + limit
        if trio.current_time() >= deadline:
            await link.emit(frames())
            return
        await trio.sleep_until(deadline)


async def _run_agent(link: _Link, options: SimOptions) -> None:
    sim = AgentSimulator()

    def spawn() -> None:
        assert link.nursery is not None
        for run in sim.new_runs:
            link.nursery.start_soon(link.stream, run)
        sim.new_runs.clear()

    def handle(message: Frame) -> list[Frame]:
        return sim.handle_text(message) if isinstance(message, str) else sim.handle_binary(message)

    async def body(nursery: trio.Nursery) -> None:
        await link.emit(sim.start())
        timeout = options.client_message_timeout_s
        if timeout is not None:

            def timed_out() -> list[Frame | Close]:
                return [sim.client_message_timeout(), Close(1000, "timeout")]

            nursery.start_soon(_idle_watchdog, link, timeout, timed_out)
        await link.reader(handle, spawn)

    await link.run(body)


async def _run_listen(link: _Link, options: SimOptions, sim: ListenSimulator) -> None:
    def handle(message: Frame) -> list[Frame]:
        frames: list[Frame] = sim.handle_text(message) if isinstance(message, str) else sim.handle_binary(message)
        if sim.closed:
            return [*frames, Close(1000, "")]  # type: ignore[list-item]
        return frames

    async def body(nursery: trio.Nursery) -> None:
        timeout = options.client_message_timeout_s
        if timeout is not None:

            def timed_out() -> list[Frame | Close]:
                return [Close(1011, "Deepgram did not receive audio data or a text message within the timeout window")]

            nursery.start_soon(_idle_watchdog, link, timeout, timed_out)
        await link.reader(handle, lambda: None)

    await link.run(body)


# ---------------------------------------------------------------------------------------------------------------
# Handshake: routing, faults, authentication


def _header(request: WebSocketRequest, name: bytes) -> str:
    for key, value in request.headers:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _same(offered: str, expected: str) -> bool:
    return hmac.compare_digest(offered.encode(), expected.encode())


async def _hang(request: WebSocketRequest, seconds: float) -> None:
    connection = getattr(request, "_connection", None)
    with trio.move_on_after(seconds):
        # trio-websocket offers no event for "the peer left during the handshake"; poll its state.
        while connection is None or connection.closed is None:  # noqa: ASYNC110
            await trio.sleep(0.05)


async def handle_request(request: WebSocketRequest, options: SimOptions) -> None:
    """Serve one WebSocket handshake request (routing, faults, auth) and then the connection."""
    path, _, query = request.path.partition("?")
    service = PATHS.get(path)
    if service is None:
        await request.reject(404, body=b"Not Found")
        return
    params = dict(parse_qsl(query, keep_blank_values=True))
    faults = options.fault_script
    if "sim_faults" in params:
        try:
            faults = parse_faults(params.pop("sim_faults"))
        except FaultScriptError as exc:
            await request.reject(400, body=f"invalid sim_faults: {exc}".encode())
            return
    if faults.hang_handshake is not None:
        await _hang(request, faults.hang_handshake)
        return
    if faults.reject is not None:
        await request.reject(faults.reject, body=b"Rejected by the fault script")
        return
    subprotocol: str | None = None
    if service == "openai":
        if options.openai_key is not None:
            scheme, _, offered = _header(request, b"authorization").partition(" ")
            if scheme.lower() != "bearer" or not _same(offered.strip(), options.openai_key):
                body = (
                    b'{"type":"error","error":{"type":"invalid_request_error","code":"invalid_api_key",'
                    b'"message":"Incorrect API key provided.","param":null,"event_id":null}}'
                )
                await request.reject(401, extra_headers=[(b"content-type", b"application/json")], body=body)
                return
    else:
        proposed = request.proposed_subprotocols
        if len(proposed) >= 2 and proposed[0].lower() == "token":
            subprotocol = proposed[0]
        if options.deepgram_key is not None:
            scheme, _, offered = _header(request, b"authorization").partition(" ")
            by_header = scheme.lower() in ("token", "bearer") and _same(offered.strip(), options.deepgram_key)
            by_protocol = subprotocol is not None and _same(proposed[1], options.deepgram_key)
            if not (by_header or by_protocol):
                body = b'{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials."}'
                await request.reject(401, extra_headers=[(b"content-type", b"application/json")], body=body)
                return
    listen: ListenSimulator | None = None
    if service == "listen":
        try:
            listen = ListenSimulator(
                params,
                request_id=f"00000000-0000-4000-9000-{int(time.time() * 1000) % 10**12:012d}",
                created=datetime.datetime.now(datetime.UTC),
            )
        except ListenOptionError as exc:
            await request.reject(400, body=f'{{"err_code":"Bad Request","err_msg":"{exc}"}}'.encode())
            return
    ws = await request.accept(subprotocol=subprotocol)
    link = _Link(ws, faults, options)
    if service == "openai":
        await _run_openai(link, options)
    elif service == "agent":
        await _run_agent(link, options)
    else:
        assert listen is not None
        await _run_listen(link, options, listen)


async def serve_simulators(
    host: str, port: int, options: SimOptions, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the three simulated services on ``host:port`` (0: any free port) until cancelled.

    Reports the bound port through ``task_status`` (``port = await nursery.start(serve_simulators, ...)``).
    """

    async def handler(request: WebSocketRequest) -> None:
        try:
            await handle_request(request, options)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("simulator: internal error on %s", request.path.partition("?")[0])

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                serve_websocket,
                handler,
                host,
                port,
                None,
                max_message_size=MAX_MESSAGE_BYTES,
                message_queue_size=4,
            )
        )
        task_status.started(server.port)


# ---------------------------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m proxy simulate",
        description=(
            "Serve simulated upstreams for the proxy: OpenAI Realtime at /v1/realtime, Deepgram Voice Agent at "
            "/v1/agent/converse and Deepgram Listen at /v1/listen. Nothing calls a real model."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9000, help="listen port; 0 picks a free one (default 9000)")
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="reply audio after the head start: 1 real time, 2 twice as fast, 0 no pacing "
        f"(env {pacing.SPEED_VARIABLE}; default {pacing.DEFAULT_SPEED:g})",
    )
    p.add_argument(
        "--head-start-ms",
        type=float,
        default=None,
        help="milliseconds of each reply's audio sent at once before the paced rest "
        f"(env {pacing.HEAD_START_VARIABLE}; default {pacing.DEFAULT_HEAD_START_MS}); --speed 1 --head-start-ms 0 "
        "is strict real time",
    )
    p.add_argument(
        "--faults",
        default=None,
        help="default fault script for every connection (env PROXY_SIM_FAULTS), e.g. "
        "'delay:session.updated:2.5;close_after:3:4001:bye'; a connection's ?sim_faults= replaces it",
    )
    p.add_argument("--require-openai-key", metavar="KEY", help="require 'Authorization: Bearer KEY' on /v1/realtime")
    p.add_argument("--require-deepgram-key", metavar="KEY", help="require the Deepgram key KEY on the Deepgram paths")
    p.add_argument(
        "--session-max-seconds", type=float, default=3600.0, help="OpenAI session limit (default 3600; 0: none)"
    )
    p.add_argument(
        "--client-timeout-seconds",
        type=float,
        default=10.0,
        help="Deepgram idle limit without client messages (default 10; 0: none)",
    )
    return p


def main(argv: list[str]) -> int:
    """``python -m proxy simulate [...]``: serve until interrupted; prints ``listening on ws://HOST:PORT``."""
    args = _parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        print("configuration error: --port must be between 0 and 65535", file=sys.stderr)
        return 2
    try:
        options = SimOptions(
            speed=pacing.speed_from() if args.speed is None else args.speed,
            head_start_s=pacing.head_start_from() if args.head_start_ms is None else args.head_start_ms / 1000,
            openai_key=args.require_openai_key,
            deepgram_key=args.require_deepgram_key,
            session_max_s=args.session_max_seconds or None,
            client_message_timeout_s=args.client_timeout_seconds or None,
            faults=_env_faults() if args.faults is None else args.faults,
        )
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_simulators, args.host, args.port, options)
            print(f"listening on ws://{args.host}:{port}", flush=True)

    failed: list[OSError] = []
    try:
        trio.run(run)
    except* KeyboardInterrupt:
        pass
    except* OSError as group:
        failed += [e for e in _leaves(group) if isinstance(e, OSError)]
    if failed:
        print(f"cannot listen on {args.host}:{args.port}: {failed[0].strerror or failed[0]}", file=sys.stderr)
        return 1
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
