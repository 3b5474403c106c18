"""The Trio shell of ``POST /function-call`` (rules in proxy/functions.py): read the body, admit the client as an
upgrade would be, run the handler off the event loop under a timeout, answer once and close.

Sync handlers run in worker threads under one limiter, so a slow or blocking handler never stalls sessions; a
handler that overruns the timeout is abandoned (its thread finishes in the background). Results and arguments are
never logged: only the function's name and the outcome.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import trio

from . import functions
from .auth import ClientGate, ClientRequest, Refused
from .functions import Answer, Handler
from .http import RequestHead, encode_answer
from .transport import linger

log = logging.getLogger("proxy.functions")

#: Sync handlers running at once; more calls wait for a thread.
MAX_THREADS = 8
_READ_BYTES = 16 * 1024
_LINGER_S = 1.0
_LINGER_BYTES = 4 * functions.MAX_BODY_BYTES


class FunctionEndpoint:
    def __init__(
        self,
        handlers: Mapping[str, Handler],
        gate: ClientGate,
        allowed_origins: tuple[str, ...],
        timeout_s: float,
        warn: Callable[..., None],
    ) -> None:
        """``warn(kind, message, *args)`` logs a peer's fault, paced per kind (the listener's pacer): a client
        guessing tokens must not flood the log."""
        self.handlers = handlers
        self._warn = warn
        self._gate = gate
        self._origins = allowed_origins
        self._timeout_s = timeout_s
        self._limiter = trio.CapacityLimiter(MAX_THREADS)

    async def serve(self, stream: trio.abc.Stream, head: RequestHead, query: str, deadline: float) -> None:
        request = head.request
        headers = {name.lower(): value for name, value in request.headers}
        origin = headers.get(b"origin")
        if request.method == b"OPTIONS":
            extra = functions.preflight_headers(origin, self._origins)
            await _send(stream, encode_answer(204 if extra else 403, b"", extra=extra), deadline)
            return
        cors = functions.cors_headers(origin, self._origins)
        verdict = self._gate.check(ClientRequest(tuple(request.headers), query, "function-call"), now=time.time())
        if isinstance(verdict, Refused):
            self._warn("function_call_refused", "function call refused: %s", verdict.reason)
            await self._answer(stream, Answer.error(verdict.status, verdict.message), cors, deadline)
            return
        length_text = headers.get(b"content-length")
        length = int(length_text) if length_text is not None and length_text.isdigit() else None
        refused = functions.check_head(request.method, headers.get(b"content-type"), length)
        if refused is not None or length is None:
            await self._answer(stream, refused or Answer.error(411, "Content-Length is required"), cors, deadline)
            await _linger(stream, deadline)
            return
        body = await _read_body(stream, head.buffered, length, deadline)
        if body is None:
            return  # the client went away or was too slow: nothing to answer
        call = functions.parse_call(body, self.handlers)
        answer = call if isinstance(call, Answer) else await self._run(call)
        await self._answer(stream, answer, cors, deadline=trio.current_time() + 5.0)

    async def _run(self, call: functions.Call) -> Answer:
        handler = self.handlers[call.name]
        with trio.move_on_after(self._timeout_s):
            try:
                if inspect.iscoroutinefunction(handler):
                    result: Any = await handler(call.arguments)
                else:
                    result = await trio.to_thread.run_sync(
                        handler, call.arguments, limiter=self._limiter, abandon_on_cancel=True
                    )
            except functions.FunctionError as exc:
                log.info("function %s answered an error", call.name)
                return Answer.error(200, str(exc))
            except Exception as exc:
                # The integrator's code failed: a warning naming the type, never its message (it may hold data).
                log.warning("function %s raised %s", call.name, type(exc).__name__)
                return Answer.error(500, "Function failed")
            log.info("function %s answered", call.name)
            return functions.result_answer(result)
        log.warning("function %s timed out after %.1f s", call.name, self._timeout_s)
        return Answer.error(504, "Function timed out")

    async def _answer(
        self, stream: trio.abc.Stream, answer: Answer, cors: tuple[tuple[bytes, bytes], ...], deadline: float
    ) -> None:
        await _send(stream, encode_answer(answer.status, answer.body, functions.JSON_TYPE, extra=cors), deadline)


async def _read_body(stream: trio.abc.ReceiveStream, buffered: bytes, length: int, deadline: float) -> bytes | None:
    body = bytearray(buffered[:length])
    with trio.move_on_at(deadline):
        while len(body) < length:
            data = await stream.receive_some(_READ_BYTES)
            if not data:
                return None
            body += data[: length - len(body)]
        return bytes(body)
    return None


async def _linger(stream: trio.abc.Stream, deadline: float) -> None:
    """After refusing an unread body: half-close and drop what the client still sends (bounded), so closing with
    unread bytes does not reset the connection before the client has read the answer."""
    await linger(stream, min(deadline, trio.current_time() + _LINGER_S), _LINGER_BYTES, _READ_BYTES)


async def _send(stream: trio.abc.SendStream, data: bytes, deadline: float) -> None:
    with trio.move_on_at(deadline):
        await stream.send_all(data)
