"""The load generator's sessions: open-loop senders with exact arrival accounting.

Two flavours speak to a target:

* ``component`` — what the browser component sends: Settings, binary 16 kHz mic frames, InjectUserMessage; it reads
  binary 24 kHz audio. Used against the proxy, and against every target on the Deepgram route.
* ``realtime`` — a client of the OpenAI Realtime API itself: session.update, JSON appends of 24 kHz audio,
  conversation.item.create then response.create once the item is acknowledged; it reads JSON audio deltas. Used
  for the direct and naive-relay targets of the OpenAI route (the floor the proxy is compared with).

Senders are open-loop: every frame is due at a fixed time on the session's own schedule (a random phase, so
sessions do not send in lockstep), whatever happened to earlier frames.

Sessions connect from :data:`HONEST_ADDRESSES` in turn, as real users come from many addresses: the proxy under
test keeps its default per-address connection cap, and the hostile clients' own address stands apart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec
import trio

from .speech import mic_appends, mic_frames
from .streams import Phase, SessionRecord
from .wire import (
    MIC_FRAME_S,
    RESPONSE_CREATE,
    component_settings,
    inject_user_message,
    realtime_decoder,
    session_update,
    typed_decoder,
    user_item_create,
)
from .ws import Closed, HandshakeFailed, WebSocket, connect

Flavour = Literal["component", "realtime"]
TURN_TEXT: Final = "Tell me something short."
#: Loopback source addresses of the honest sessions (all of 127.0.0.0/8 is loopback on Linux): 64 of them, so even
#: 4,000 sessions stay within the proxy's default 64 connections per address.
HONEST_ADDRESSES: Final = tuple(f"127.0.1.{n}" for n in range(1, 65))


def honest_address(sid: int) -> str:
    """Session ``sid``'s source address."""
    return HONEST_ADDRESSES[sid % len(HONEST_ADDRESSES)]


_FAILURES: Final = (OSError, HandshakeFailed, Closed, trio.TooSlowError, trio.BrokenResourceError)


@dataclass(eq=False)
class Gates:
    """Shared schedule of one measurement: connect, all start together, stop sending, close."""

    sessions: int
    connect_slots: trio.Semaphore
    settled_count: int = 0  # sessions ready or failed
    all_settled: trio.Event = field(default_factory=trio.Event)
    start: trio.Event = field(default_factory=trio.Event)
    start_at: float = 0.0
    stop_at: float = 0.0
    close: trio.Event = field(default_factory=trio.Event)

    def settle(self) -> None:
        self.settled_count += 1
        if self.settled_count >= self.sessions:
            self.all_settled.set()


@dataclass(frozen=True)
class Schedule:
    turn_interval: float
    connect_timeout: float
    seed: int


async def run_session(
    phase: Phase,
    record: SessionRecord,
    url: str,
    flavour: Flavour,
    gates: Gates,
    schedule: Schedule,
) -> None:
    """One session from connect to close; failures are recorded on ``record``, never raised."""
    client = _Client(phase, record, flavour, schedule)
    settled = False
    await gates.connect_slots.acquire()
    try:
        client.connect_started = trio.current_time()
        with trio.fail_after(schedule.connect_timeout):
            ws = await connect(url, local_address=honest_address(record.sid))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.read, ws)
                await ws.send(client.settings())
                with trio.fail_after(schedule.connect_timeout):
                    await client.ready.wait()
                gates.connect_slots.release()
                settled = True
                gates.settle()
                await gates.start.wait()
                await client.send(ws, gates.start_at, gates.stop_at)
                await gates.close.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await ws.aclose()
    except* _FAILURES as group:
        first = group.exceptions[0]
        record.errors += 1
        record.first_error = record.first_error or f"{type(first).__name__}: {first}"[:200]
    finally:
        if not settled:
            gates.connect_slots.release()
            gates.settle()


async def open_probe(phase: Phase, record: SessionRecord, url: str, flavour: Flavour, timeout_s: float) -> float | str:
    """Open one fresh session, wait until it is ready, close it: seconds to ready, or why it failed."""
    # Its own phase for the client's statistics: a probe's latency must not mix with the measured sessions'. The
    # upstream still finds ``record`` in the measured phase by its token.
    client = _Client(Phase(phase.run, phase.target, phase.route), record, flavour, Schedule(1.0, timeout_s, 0))
    failure = ""
    try:
        with trio.fail_after(timeout_s):
            client.connect_started = trio.current_time()
            ws = await connect(url, local_address=honest_address(record.sid))
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.read, ws)
                    await ws.send(client.settings())
                    await client.ready.wait()
                    nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    await ws.aclose()
    except* _FAILURES as group:
        first = group.exceptions[0]
        status = first.status if isinstance(first, HandshakeFailed) else None
        failure = f"{type(first).__name__}{f' {status}' if status else ''}"
    if failure or record.ready_latency is None:
        return failure or "not ready"
    return record.ready_latency


class _Client:
    """The per-session protocol logic of one flavour (reader side and sender side)."""

    def __init__(self, phase: Phase, record: SessionRecord, flavour: Flavour, schedule: Schedule) -> None:
        self.phase = phase
        self.record = record
        self.flavour = flavour
        self.schedule = schedule
        self.ready = trio.Event()
        self.connect_started = 0.0
        self.pending_item: str | None = None

    def settings(self) -> str:
        token = self.record.token
        return component_settings(token) if self.flavour == "component" else session_update(token)

    def _became_ready(self, now: float) -> None:
        if self.record.ready_latency is None:
            self.record.ready_latency = now - self.connect_started
            self.phase.ready_latencies.append(self.record.ready_latency)
            self.ready.set()

    def _error(self, text: str) -> None:
        self.record.errors += 1
        self.record.first_error = self.record.first_error or text[:200]

    async def read(self, ws: WebSocket) -> None:
        phase, record = self.phase, self.record
        component = self.flavour == "component"
        try:
            while True:
                is_text, message = await ws.receive()
                now = trio.current_time()
                phase.client_messages += 1
                if component:
                    if not is_text:
                        phase.tts_arrived(record, message, now)
                        continue
                    try:
                        kind = typed_decoder.decode(message).type
                    except msgspec.DecodeError:
                        self._error("undecodable message: " + message[:100].decode(errors="replace"))
                        continue
                    if kind == "SettingsApplied":
                        self._became_ready(now)
                    elif kind == "Error":
                        self._error(message.decode(errors="replace"))
                else:
                    if not is_text:
                        self._error("unexpected binary frame from a Realtime upstream")
                        continue
                    try:
                        event = realtime_decoder.decode(message)
                    except msgspec.DecodeError:
                        self._error("undecodable message: " + message[:100].decode(errors="replace"))
                        continue
                    kind = event.type
                    if kind == "response.output_audio.delta":
                        phase.tts_arrived(record, event.delta or b"", now)
                    elif kind == "conversation.item.added":
                        if event.item is not None and event.item.id == self.pending_item:
                            self.pending_item = None
                            await ws.send(RESPONSE_CREATE)
                    elif kind == "session.updated":
                        self._became_ready(now)
                    elif kind == "error":
                        self._error(message.decode(errors="replace"))
        except Closed as exc:
            if not self.ready.is_set():
                self._error(f"closed before ready: {exc}")
            raise

    async def send(self, ws: WebSocket, start_at: float, stop_at: float) -> None:
        """Mic frames every 85 ms and a user turn every ``turn_interval``, open-loop, due before ``stop_at``.

        Stopping is by schedule, never by cancellation: a send cut off mid-frame would corrupt the connection.
        """
        phase, record = self.phase, self.record
        mic = record.mic
        interval = self.schedule.turn_interval
        rng = random.Random(self.schedule.seed * 1_000_003 + record.sid)
        mic_due = start_at + rng.uniform(0.0, MIC_FRAME_S)
        turn_due = start_at + rng.uniform(0.25, interval)
        component = self.flavour == "component"
        frames: tuple[str, ...] | tuple[bytes, ...] = mic_frames() if component else mic_appends()
        turn = 0
        while min(mic_due, turn_due) < stop_at:
            if mic_due <= turn_due:
                await trio.sleep_until(mic_due)
                frame = frames[mic.next_index() % len(frames)]
                now = trio.current_time()
                phase.note_lag(now - mic_due)
                mic.mark_sent(now)
                await ws.send(frame)
                mic_due += MIC_FRAME_S
            else:
                await trio.sleep_until(turn_due)
                turn_due += interval
                if record.turn_sent_at is not None or record.responding:
                    continue  # the previous reply is still on its way: never stack turns
                turn += 1
                record.turns += 1
                if component:
                    message = inject_user_message(TURN_TEXT)
                else:
                    self.pending_item = f"bench_item_{record.sid}_{turn}"
                    message = user_item_create(self.pending_item, TURN_TEXT)
                record.turn_sent_at = trio.current_time()
                await ws.send(message)
