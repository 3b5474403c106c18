"""A scripted fake of the OpenAI Realtime upstream, for black-box tests of the running proxy.

It reproduces the behaviours of the reference's integration mock (session.created / session.updated on connect,
session.update replies, one-shot scripts, item and response replies with their completion variants) and checks
the proxy's side of the protocol as it goes. Unlike the reference mock, every connection keeps its own record;
nothing is shared between connections or tests.

Scripts are lists of *steps*: a dict is an event to send, a number is a pause in seconds, a :class:`CloseStep`
closes (or drops) the connection, and a callable updates the fake's own bookkeeping at that point of the script.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic
import trio
from openai.types.realtime import RealtimeClientEvent
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer
from wsproto.frame_protocol import CloseReason

_client_event_schema: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeClientEvent)

#: Bytes of 24 kHz PCM16 the real API needs in the input buffer before a commit (100 ms).
API_MIN_COMMIT_BYTES = 4800


@dataclass(frozen=True)
class CloseStep:
    """Close the connection with ``code``/``reason``; ``code=None`` drops TCP without a close frame."""

    code: int | None = 1000
    reason: str = ""


Step = dict[str, Any] | float | CloseStep | Callable[[], None]


# ---------------------------------------------------------------------------------------------------------------
# Upstream events (shapes of the reference mock)


def session_created() -> dict[str, Any]:
    return {
        "type": "session.created",
        "session": {"id": "sess_mock", "model": "gpt-realtime", "modalities": ["text", "audio"]},
    }


def session_updated() -> dict[str, Any]:
    return {"type": "session.updated", "session": {"type": "realtime"}}


def text_done(text: str = "Hello from mock") -> dict[str, Any]:
    return {
        "type": "response.output_text.done",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
        "text": text,
    }


def assistant_item(kind: str, item_id: str, text: str, part_type: str = "output_text") -> dict[str, Any]:
    """``conversation.item.<kind>`` for a completed assistant message with one text part."""
    key = "transcript" if part_type == "output_audio" else "text"
    return {
        "type": f"conversation.item.{kind}",
        "item": {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": part_type, key: text}],
        },
    }


def audio_delta(n_bytes: int = 320) -> dict[str, Any]:
    return {
        "type": "response.output_audio.delta",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(bytes(n_bytes)).decode(),
    }


def audio_done() -> dict[str, Any]:
    return {
        "type": "response.output_audio.done",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
    }


def transcript_done(transcript: str) -> dict[str, Any]:
    return {
        "type": "response.output_audio_transcript.done",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
        "transcript": transcript,
    }


def response_created() -> dict[str, Any]:
    return {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "output": []}}


def response_done(output: list[Any] | None = None) -> dict[str, Any]:
    return {"type": "response.done", "response": {"id": "resp_1", "status": "completed", "output": output or []}}


def function_call_done(call_id: str, name: str, arguments: str = "{}") -> dict[str, Any]:
    return {
        "type": "response.function_call_arguments.done",
        "response_id": "resp_1",
        "item_id": "item_fc_1",
        "output_index": 0,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def error(code: str | None, message: str = "Upstream error", *, omit_code: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "invalid_request_error", "message": message}
    if not omit_code:
        body["code"] = code
    return {"type": "error", "error": body}


# The reference mock's one-shot scripts, sent right after its session.updated reply.
SCRIPT_TRANSCRIPT_AND_FUNCTION_CALL: list[Step] = [
    transcript_done("Let me check the time."),
    function_call_done("call_mock_1", "get_current_time", "{}"),
]
SCRIPT_TRANSCRIPT_ONLY: list[Step] = [transcript_done("Let me check the time.")]
SCRIPT_TEXT_DONE_FUNCTION_CALL_TEXT: list[Step] = [text_done("Function call: get_current_datetime({ })")]
SCRIPT_TRANSCRIPTION_DELTAS: list[Step] = [
    {"type": "conversation.item.input_audio_transcription.delta", "item_id": "item_accum_497", "delta": d}
    for d in ("Hel", "lo ", "world")
]
SCRIPT_TRANSCRIPTION_COMPLETED: list[Step] = [
    {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_496",
        "content_index": 0,
        "transcript": "Hello world",
        "start": 1.5,
        "duration": 2.25,
        "channel": 1,
        "channel_index": [1],
    }
]
SCRIPT_FUNCTION_CALL_PART_ITEM: list[Step] = [
    {
        "type": "conversation.item.added",
        "item": {
            "id": "item_fc_499",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "function_call", "name": "get_current_time", "arguments": "{}"}],
        },
    }
]
SCRIPT_FUNCTION_CALL_ONLY: list[Step] = [function_call_done("call_mock_1", "get_current_time", "{}")]


# ---------------------------------------------------------------------------------------------------------------
# Scenario


@dataclass
class Scenario:
    """How the fake upstream behaves for the connections of one test (the reference mock's flags)."""

    #: Refuse the WebSocket handshake with this HTTP status.
    reject_status: int | None = None
    #: Hold the handshake answer this long (seconds) after the upgrade request arrives.
    accept_delay: float = 0.0
    session_created_on_connect: bool = False
    #: session.created then session.updated on connect, without waiting for a session.update.
    session_updated_on_connect: bool = False
    #: Reply to session.update after 50 ms, and treat an item received before session.updated as an error.
    enforce_session_before_context: bool = False
    conversation_created_after_update: bool = False
    #: Sent once, right after the reply to the first session.update.
    after_session_updated: Sequence[Step] = ()
    #: function_call_output completion: "text_done" (default), "withhold", "items", "response_done_then_text_done",
    #: "audio_done_then_response_done", "response_done".
    function_output_completion: str = "text_done"
    #: 80 ms after the default completion, an assistant item with a time in it.
    function_output_followup_item: bool = False
    #: User items: acknowledge with the reference's fixed id ("item_mock_1") or echo the id the proxy sent.
    user_item_ids: str = "fixed"
    fixed_user_item_id: str = "item_mock_1"
    user_item_delay: float = 0.0
    user_item_done_too: bool = False
    #: Acknowledge an assistant message item with conversation.item.<kind> ("added" or "created").
    assistant_item_reply: str | None = None
    #: Answer response.create with a server_error when the last item was an assistant item.
    server_error_on_assistant_item: bool = False
    #: Answer the first response.create with a function call (call_echo_532 / example_echo).
    echo_function_call_on_first_response: bool = False
    #: Default reply: optional audio delta (320 zero bytes) + audio.done, then text.done + assistant item.done.
    response_audio: bool = False
    #: "default", "idle_timeout" (error idle_timeout after the reply) or "audio_first".
    response_mode: str = "default"
    #: audio_first: pause between audio.done and text.done.
    audio_first_delay: float = 0.3
    #: Pause before the whole reply to a response.create.
    response_delay: float = 0.0
    #: Explicit replies: the n-th response.create is answered with ``responses[n]`` when present.
    responses: Sequence[Sequence[Step]] = ()


# ---------------------------------------------------------------------------------------------------------------
# Per-connection record


@dataclass
class Received:
    """One message the proxy sent upstream."""

    type: str | None
    at: float
    payload: Any
    raw: str | bytes


@dataclass
class Sent:
    """One event the fake upstream sent to the proxy."""

    type: str | None
    at: float
    payload: Any


@dataclass
class Conn:
    """One upstream connection opened by the proxy, and everything seen on it."""

    index: int
    target: str
    headers: dict[str, str]
    scenario: Scenario
    opened_at: float
    received: list[Received] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    #: Violations of the upstream protocol as the reference mock defines them (plus API-level commit rules).
    protocol_errors: list[str] = field(default_factory=list)
    #: Events that do not validate against the official client-event models.
    schema_errors: list[str] = field(default_factory=list)
    session_updated: bool = False
    #: The proxy gave up on the connection before the handshake answer could be sent.
    handshake_aborted: bool = False
    handshake_done: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)
    close_code: int | None = None
    close_reason: str | None = None
    ws: WebSocketConnection | None = None
    nursery: trio.Nursery | None = None
    _lot: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    _session_updates: int = 0
    _responses: int = 0
    _response_active: bool = False
    _unacked_user_items: int = 0
    _acks_since_response_create: int = 0
    _uncommitted_bytes: int = 0
    _last_item_role: str | None = None

    # -- queries ------------------------------------------------------------------------------------------------

    def of_type(self, type_: str) -> list[Received]:
        return [r for r in self.received if r.type == type_]

    def count(self, type_: str) -> int:
        return len(self.of_type(type_))

    def types(self) -> list[str | None]:
        return [r.type for r in self.received]

    def sent_of_type(self, type_: str) -> list[Sent]:
        return [s for s in self.sent if s.type == type_]

    def appended_bytes(self) -> list[int]:
        """Decoded sizes of every input_audio_buffer.append, in order."""
        return [len(base64.b64decode(r.payload.get("audio", ""))) for r in self.of_type("input_audio_buffer.append")]

    def items_created(self) -> list[dict[str, Any]]:
        return [r.payload.get("item") or {} for r in self.of_type("conversation.item.create")]

    def summary(self) -> str:
        return f"upstream #{self.index} received {self.types()}; protocol errors {self.protocol_errors}"

    async def wait_for(self, predicate: Callable[[Conn], bool], timeout: float = 5.0, what: str = "") -> None:
        with trio.move_on_after(timeout):
            while not predicate(self):
                await self._lot.park()
            return
        raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}: {self.summary()}")

    async def wait_type(self, type_: str, count: int = 1, timeout: float = 5.0) -> Received:
        await self.wait_for(lambda c: c.count(type_) >= count, timeout, f"{count} x {type_}")
        return self.of_type(type_)[count - 1]

    async def wait_closed(self, timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            await self.closed.wait()

    # -- sending ------------------------------------------------------------------------------------------------

    async def send(self, event: dict[str, Any]) -> None:
        """Send one event to the proxy (recorded; response activity is tracked like the real API does)."""
        assert self.ws is not None
        type_ = event.get("type")
        if type_ == "session.updated":
            self.session_updated = True
        elif type_ == "response.created":
            self._response_active = True
        elif type_ == "response.done":
            self._response_active = False
        self.sent.append(Sent(type_, trio.current_time(), event))
        self._lot.unpark_all()
        await self.ws.send_message(json.dumps(event))

    async def send_raw(self, message: str | bytes) -> None:
        assert self.ws is not None
        self.sent.append(Sent(None, trio.current_time(), message))
        await self.ws.send_message(message)

    async def close(self, code: int | None = 1000, reason: str = "") -> None:
        assert self.ws is not None
        if code is None:
            # No close frame: drop the TCP connection (trio-websocket has no public abort).
            await trio.aclose_forcefully(self.ws._stream)
        elif code == 1005:
            # A close frame without a status code (wsproto sends an empty payload only for this enum member).
            await self.ws.aclose(CloseReason.NO_STATUS_RCVD, None)
        else:
            await self.ws.aclose(code, reason)

    async def play(self, steps: Sequence[Step], before_last: Callable[[], None] | None = None) -> None:
        """Send a script; stops quietly if the connection closes meanwhile.

        ``before_last`` runs just before the last event goes out (or at the end when there is none), so that state
        it changes is in place before the proxy can react to that event.
        """
        last = max((i for i, step in enumerate(steps) if isinstance(step, dict)), default=-1)
        try:
            for i, step in enumerate(steps):
                if i == last and before_last is not None:
                    before_last()
                    before_last = None
                if isinstance(step, CloseStep):
                    await self.close(step.code, step.reason)
                    return
                if callable(step):
                    step()
                elif isinstance(step, int | float):
                    await trio.sleep(step)
                else:
                    await self.send(step)
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if before_last is not None:
                before_last()

    def play_soon(self, steps: Sequence[Step], before_last: Callable[[], None] | None = None) -> None:
        assert self.nursery is not None
        self.nursery.start_soon(self.play, steps, before_last)

    # -- receiving ----------------------------------------------------------------------------------------------

    def _on_message(self, message: str | bytes) -> None:
        now = trio.current_time()
        if isinstance(message, bytes):
            self.protocol_errors.append(f"binary frame of {len(message)} bytes (upstream expects JSON text)")
            self.received.append(Received(None, now, None, message))
            return
        try:
            payload = json.loads(message)
        except ValueError:
            self.protocol_errors.append(f"non-JSON text frame {message[:80]!r}")
            self.received.append(Received(None, now, None, message))
            return
        type_ = payload.get("type") if isinstance(payload, dict) else None
        self.received.append(Received(type_, now, payload, message))
        if isinstance(type_, str) and "." in type_:  # an OpenAI client event (not a raw passthrough probe)
            try:
                _client_event_schema.validate_python(payload)
            except pydantic.ValidationError as exc:
                self.schema_errors.append(f"{type_}: {exc.errors()[:3]}")
        handler = _HANDLERS.get(type_) if isinstance(type_, str) else None
        if handler is not None:
            handler(self, payload)

    def _on_session_update(self, payload: dict[str, Any]) -> None:
        self._session_updates += 1
        first = self._session_updates == 1
        steps: list[Step] = []
        if self.scenario.enforce_session_before_context:
            steps.append(0.05)
        steps.append(session_updated())
        if self.scenario.conversation_created_after_update:
            steps.append({"type": "conversation.created", "conversation": {"id": "conv_mock"}})
        if first:
            steps.extend(self.scenario.after_session_updated)
        self.play_soon(steps)

    def _on_append(self, payload: dict[str, Any]) -> None:
        if not self.session_updated:
            self.protocol_errors.append("input_audio_buffer.append before session.updated")
        try:
            self._uncommitted_bytes += len(base64.b64decode(payload.get("audio", ""), validate=True))
        except ValueError:
            self.protocol_errors.append("input_audio_buffer.append with invalid base64")

    def _on_commit(self, payload: dict[str, Any]) -> None:
        if self._uncommitted_bytes < API_MIN_COMMIT_BYTES:
            # The real API answers input_audio_buffer_commit_empty.
            self.protocol_errors.append(f"commit with only {self._uncommitted_bytes} bytes of audio (< 100 ms)")
        self._uncommitted_bytes = 0
        self.play_soon(
            [
                {
                    "type": "input_audio_buffer.committed",
                    "item_id": f"item_audio_{self.count('input_audio_buffer.commit')}",
                }
            ]
        )

    def _on_item_create(self, payload: dict[str, Any]) -> None:
        sc = self.scenario
        item = payload.get("item") or {}
        if sc.enforce_session_before_context and not self.session_updated:
            self.protocol_errors.append(f"conversation.item.create ({item.get('type')}) before session.updated")
        role = item.get("role")
        content = item.get("content") or []
        if role == "assistant" and any(isinstance(p, dict) and p.get("type") == "input_text" for p in content):
            self.protocol_errors.append("assistant item with input_text content")
        self._last_item_role = role if item.get("type") == "message" else item.get("type")
        if item.get("type") == "function_call_output":
            self._reply_function_output(item)
        elif item.get("type") == "message" and role == "user":
            self._unacked_user_items += 1
            item_id = item.get("id") if sc.user_item_ids == "echo" and item.get("id") else sc.fixed_user_item_id
            ack = {
                "type": "conversation.item.added",
                "item": {"id": item_id, "type": "message", "status": "completed", "role": "user", "content": content},
            }
            steps: list[Step] = [sc.user_item_delay] if sc.user_item_delay else []

            def acked() -> None:
                self._unacked_user_items -= 1
                self._acks_since_response_create += 1

            steps += [acked, ack]
            if sc.user_item_done_too:
                steps.append({**ack, "type": "conversation.item.done"})
            self.play_soon(steps)
        elif item.get("type") == "message" and role == "assistant" and sc.assistant_item_reply:
            self.play_soon([assistant_item(sc.assistant_item_reply, "item_mock_greeting", "greeting")])

    def _reply_function_output(self, item: dict[str, Any]) -> None:
        variant = self.scenario.function_output_completion
        steps: list[Step]
        if variant == "text_done":
            steps = [text_done()]
            if self.scenario.function_output_followup_item:
                steps += [0.08, assistant_item("added", "item_mock_time_1", "The current time is 2:56 AM UTC.")]
        elif variant == "withhold":
            steps = []
        elif variant == "items":
            fco = {
                "id": "item_fcr_mock",
                "type": "function_call_output",
                "call_id": item.get("call_id"),
                "output": item.get("output"),
            }
            steps = [
                {"type": "conversation.item.added", "item": fco},
                {"type": "conversation.item.done", "item": fco},
            ]
        elif variant == "response_done_then_text_done":
            steps = [response_done(), 0.05, text_done()]
        elif variant == "audio_done_then_response_done":
            steps = [audio_done(), response_done()]
        elif variant == "response_done":
            steps = [response_done()]
        else:
            raise ValueError(variant)
        self.play_soon(steps)

    def _on_response_create(self, payload: dict[str, Any]) -> None:
        sc = self.scenario
        if self._response_active:
            self.protocol_errors.append("response.create while a response is active")
            self.play_soon(
                [error("conversation_already_has_active_response", "Conversation already has an active response")]
            )
            return
        if self._unacked_user_items > 0 and self._acks_since_response_create == 0:
            # Every response.create that answers an inject follows at least one new acknowledgement.
            self.protocol_errors.append("response.create before the user item was acknowledged")
        self._acks_since_response_create = 0
        n = self._responses
        self._responses += 1
        if sc.server_error_on_assistant_item and self._last_item_role == "assistant":
            self.play_soon([error("server_error", "The server had an error while processing your request.")])
            return
        steps: list[Step] = [sc.response_delay] if sc.response_delay else []
        if n < len(sc.responses):
            steps += list(sc.responses[n])
        elif sc.echo_function_call_on_first_response and n == 0:
            steps += [function_call_done("call_echo_532", "example_echo", '{"message":"hello"}')]
        else:
            steps += self._default_reply()
        self._response_active = True

        def ended() -> None:
            self._response_active = False

        self.play_soon(steps, before_last=ended)

    def _default_reply(self) -> list[Step]:
        sc = self.scenario
        final: list[Step] = [text_done(), assistant_item("done", "item_mock_response_1", "Hello from mock")]
        if sc.response_mode == "audio_first":
            return [audio_delta(), audio_done(), sc.audio_first_delay, *final]
        steps: list[Step] = [audio_delta(), audio_done()] if sc.response_audio else []
        steps += final
        if sc.response_mode == "idle_timeout":
            steps.append(error("idle_timeout", "Session idle timeout."))
        return steps


_HANDLERS: dict[str, Callable[[Conn, dict[str, Any]], None]] = {
    "session.update": Conn._on_session_update,
    "input_audio_buffer.append": Conn._on_append,
    "input_audio_buffer.commit": Conn._on_commit,
    "conversation.item.create": Conn._on_item_create,
    "response.create": Conn._on_response_create,
}


# ---------------------------------------------------------------------------------------------------------------
# Server


def listening_socket() -> socket.socket:
    """A loopback listening socket that lives for the whole test run, so proxies can be configured up front."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class FakeUpstream:
    """Serves the fake upstream on (a duplicate of) a long-lived listening socket for the duration of one test."""

    def __init__(self, scenario: Scenario | None = None) -> None:
        self.scenario = scenario or Scenario()
        #: Scenario overrides for particular connection indexes.
        self.scenario_for: dict[int, Scenario] = {}
        self.connections: list[Conn] = []
        self.rejected: list[Conn] = []
        self._attempts = 0
        self._lot = trio.lowlevel.ParkingLot()

    async def serve(
        self, sock: socket.socket, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock.dup()))
        async with trio.open_nursery() as nursery:
            server = WebSocketServer(
                self._handle,
                [listener],
                handler_nursery=nursery,
                max_message_size=32 << 20,
                message_queue_size=64,
                connect_timeout=5,
                disconnect_timeout=2,
            )
            await nursery.start(server.run)
            task_status.started()

    async def connection(self, index: int = 0, timeout: float = 5.0, *, accepted: bool = True) -> Conn:
        """The ``index``-th connection, once its handshake was answered (``accepted=False``: once requested)."""
        with trio.move_on_after(timeout):
            while len(self.connections) <= index:
                await self._lot.park()
            conn = self.connections[index]
            if accepted:
                await conn.handshake_done.wait()
            return conn
        raise AssertionError(f"the proxy opened {len(self.connections)} upstream connection(s), expected #{index}")

    async def wait_all_closed(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            for conn in list(self.connections):
                await conn.closed.wait()

    async def _handle(self, request: WebSocketRequest) -> None:
        index = self._attempts
        self._attempts += 1
        scenario = self.scenario_for.get(index, self.scenario)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        conn = Conn(index, request.path, headers, scenario, trio.current_time())
        if scenario.reject_status is not None:
            self.rejected.append(conn)
            await request.reject(scenario.reject_status, body=b'{"error":{"message":"Incorrect API key provided"}}')
            conn.closed.set()
            return
        self.connections.append(conn)
        self._lot.unpark_all()
        if scenario.accept_delay:
            await trio.sleep(scenario.accept_delay)
        try:
            ws = await request.accept()
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            conn.handshake_aborted = True
            conn.closed.set()
            conn.handshake_done.set()
            conn._lot.unpark_all()
            return
        conn.ws = ws
        conn.handshake_done.set()
        try:
            async with trio.open_nursery() as nursery:
                conn.nursery = nursery
                try:
                    if scenario.session_created_on_connect or scenario.session_updated_on_connect:
                        await conn.send(session_created())
                    if scenario.session_updated_on_connect:
                        await conn.send(session_updated())
                    while True:
                        message = await ws.get_message()
                        conn._on_message(message)
                        conn._lot.unpark_all()
                except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()
        finally:
            if ws.closed is not None:
                conn.close_code, conn.close_reason = ws.closed.code, ws.closed.reason
            conn.closed.set()
            conn._lot.unpark_all()
